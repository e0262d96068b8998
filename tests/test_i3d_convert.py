"""DeepMind TF I3D variables -> piergiaj layout: convert_tf_i3d and .npz loading.

No real TF checkpoint is available, so the TF-named dict is built from a random model by an
independent inverse written here (explicit name list, explicit transposes). BatchNorm scales are 1,
as TF's I3D has none. One forward at the smallest input the final 2x7x7 pool allows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tempoflow.errors import CheckpointError
from tempoflow.metrics.i3d import load_i3d
from tempoflow.metrics.i3d_convert import convert_tf_i3d, load_i3d_npz
from tempoflow.nets.i3d import InceptionI3d

SMALLEST = (1, 3, 9, 193, 193)  # (B, C, T, H, W)
SCOPE = "RGB/inception_i3d"
STEM = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
BLOCKS = [
    "Mixed_3b",
    "Mixed_3c",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "Mixed_5b",
    "Mixed_5c",
]
BRANCHES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
}


def tf_units(mixed_5b_quirk: bool = True) -> dict[str, str]:
    """piergiaj unit -> TF path (scope excluded), as in DeepMind's i3d.py."""
    units = {name: name for name in STEM}
    for block in BLOCKS:
        for branch, tf in BRANCHES.items():
            if mixed_5b_quirk and block == "Mixed_5b" and branch == "b2b":
                tf = "Branch_2/Conv3d_0a_3x3"
            units[f"{block}.{branch}"] = f"{block}/{tf}"
    return units


def to_tf(model: InceptionI3d, mixed_5b_quirk: bool = True, suffix: str = "") -> dict[str, np.ndarray]:
    """The inverse of the converter: a TF-named dict of numpy arrays."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {}
    for unit, tf in tf_units(mixed_5b_quirk).items():
        base = f"{SCOPE}/{tf}"
        out[f"{base}/conv_3d/w{suffix}"] = np.transpose(sd[f"{unit}.conv3d.weight"], (2, 3, 4, 1, 0))
        out[f"{base}/batch_norm/beta{suffix}"] = sd[f"{unit}.bn.bias"]
        out[f"{base}/batch_norm/moving_mean{suffix}"] = sd[f"{unit}.bn.running_mean"]
        out[f"{base}/batch_norm/moving_variance{suffix}"] = sd[f"{unit}.bn.running_var"]
    out[f"{SCOPE}/Logits/Conv3d_0c_1x1/conv_3d/w{suffix}"] = np.transpose(
        sd["logits.conv3d.weight"], (2, 3, 4, 1, 0)
    )
    out[f"{SCOPE}/Logits/Conv3d_0c_1x1/conv_3d/b{suffix}"] = sd["logits.conv3d.bias"]
    return out


def random_tf_like_i3d(seed: int = 0) -> InceptionI3d:
    """Random I3D whose BatchNorm scale is 1 (TF's I3D has none), other tensors random and non-default."""
    gen = torch.Generator().manual_seed(seed)
    model = InceptionI3d().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, nn.BatchNorm3d):
                n = module.num_features
                module.weight.fill_(1.0)
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model


@pytest.fixture(scope="module")
def model() -> InceptionI3d:
    return random_tf_like_i3d()


@pytest.fixture(scope="module")
def tf_arrays(model) -> dict[str, np.ndarray]:
    return to_tf(model)


def assert_same_state(converted: dict[str, torch.Tensor], model: InceptionI3d) -> None:
    original = model.state_dict()
    assert set(converted) == set(original)
    for key, value in original.items():
        assert converted[key].shape == value.shape, key
        if key.endswith("num_batches_tracked"):
            continue  # TF has no counter; the converter writes 0, as does a fresh model
        assert torch.equal(converted[key], value), key


def test_round_trip_tensors_and_output(model, tf_arrays):
    assert f"{SCOPE}/Mixed_5b/Branch_2/Conv3d_0a_3x3/conv_3d/w" in tf_arrays  # the quirk is exercised
    assert f"{SCOPE}/Mixed_5b/Branch_2/Conv3d_0b_3x3/conv_3d/w" not in tf_arrays
    converted = convert_tf_i3d(tf_arrays)
    assert_same_state(converted, model)
    assert converted["Mixed_3b.b1b.conv3d.weight"].shape == (128, 96, 3, 3, 3)
    restored = InceptionI3d().eval()
    restored.load_state_dict(converted, strict=True)
    x = torch.rand(SMALLEST, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))  # (1, 400) logits


def test_regular_mixed_5b_name_and_suffix_accepted(model):
    converted = convert_tf_i3d(to_tf(model, mixed_5b_quirk=False, suffix=":0"))
    assert_same_state(converted, model)


def test_torch_tensors_and_empty_scope(model, tf_arrays):
    arrays = {k.removeprefix(SCOPE + "/"): torch.from_numpy(v) for k, v in tf_arrays.items()}
    assert_same_state(convert_tf_i3d(arrays, scope=""), model)


def test_missing_variable_is_listed(tf_arrays):
    arrays = dict(tf_arrays)
    name = f"{SCOPE}/Mixed_4c/Branch_3/Conv3d_0b_1x1/batch_norm/moving_variance"
    del arrays[name]
    with pytest.raises(CheckpointError, match="Mixed_4c/Branch_3/Conv3d_0b_1x1/batch_norm/moving_variance"):
        convert_tf_i3d(arrays)
    with pytest.raises(CheckpointError, match="missing"):
        convert_tf_i3d(tf_arrays, scope="Flow/inception_i3d")


def test_wrong_shapes_rejected(model, tf_arrays):
    name = f"{SCOPE}/Mixed_3b/Branch_0/Conv3d_0a_1x1/conv_3d/w"
    arrays = dict(tf_arrays)
    arrays[name] = model.state_dict()["Mixed_3b.b0.conv3d.weight"].numpy()  # torch layout, not TF
    with pytest.raises(CheckpointError, match="Mixed_3b/Branch_0/Conv3d_0a_1x1/conv_3d/w"):
        convert_tf_i3d(arrays)
    arrays = dict(tf_arrays)
    arrays[f"{SCOPE}/Logits/Conv3d_0c_1x1/conv_3d/b"] = np.zeros(10, np.float32)
    with pytest.raises(CheckpointError, match="Logits"):
        convert_tf_i3d(arrays)


def test_npz_round_trip(model, tf_arrays, tmp_path):
    path = tmp_path / "i3d_tf.npz"
    np.savez(path, **{f"{k}:0": v for k, v in tf_arrays.items()}, global_step=np.array(5))
    loaded = load_i3d_npz(path)
    assert not loaded.training
    assert_same_state(loaded.state_dict(), model)
    assert_same_state(load_i3d(path).state_dict(), model)  # load_i3d dispatches on the suffix


def test_npz_errors_name_the_file(tf_arrays, tmp_path):
    path = tmp_path / "partial.npz"
    arrays = {k: v for k, v in tf_arrays.items() if "Logits" not in k}
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=r"partial\.npz.*Logits/Conv3d_0c_1x1"):
        load_i3d_npz(path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="bad.npz"):
        load_i3d_npz(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_i3d_npz(tmp_path / "absent.npz")
