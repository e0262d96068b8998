"""LPIPS v0.1 (AlexNet): oracle forward, metric identities, file layouts, strict loading, video chunking.

No weights can be downloaded here, so every test uses random state dicts in the published layouts
(torchvision ``alexnet`` and lpips ``weights/v0.1/alex.pth``); lin weights are drawn >= 0 as in the
released file. All images are 64x64 or smaller: the whole file runs in a few seconds on a CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tempoflow.errors import CheckpointError
from tempoflow.metrics.lpips import LPIPS, MIN_SIZE, load_lpips, lpips_distance, lpips_video

# torchvision alexnet().features: index -> (C_out, C_in, kernel); lpips taps 64, 192, 384, 256, 256.
CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
LIN_CHANNELS = (64, 192, 384, 256, 256)


def random_backbone(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ``alexnet`` state dict (He-scaled so activations keep their size), classifier included."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (c_out, c_in, k) in CONVS.items():
        sd[f"features.{i}.weight"] = (
            torch.randn(c_out, c_in, k, k, generator=gen) * (2 / (c_in * k * k)) ** 0.5
        )
        sd[f"features.{i}.bias"] = torch.randn(c_out, generator=gen) * 0.1
    sd["classifier.1.weight"] = torch.randn(8, 9216, generator=gen)  # ignored by load_lpips
    sd["classifier.1.bias"] = torch.randn(8, generator=gen)
    return sd


def random_lins(seed: int = 1) -> dict[str, torch.Tensor]:
    """lpips ``alex.pth`` layout with non-negative weights, like the released file."""
    gen = torch.Generator().manual_seed(seed)
    return {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for i, c in enumerate(LIN_CHANNELS)
    }


def reference_lpips(backbone: dict, lins: dict, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Brute-force oracle in float64, written from the paper's eq. (1) and torchvision's AlexNet with
    plain functional calls: ``(B, 3, H, W)`` in [-1, 1] x2 -> ``(B,)``."""
    sd = {k: v.double() for k, v in {**backbone, **lins}.items()}
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def taps(x):
        x = (x.double() - shift) / scale
        t0 = F.relu(F.conv2d(x, sd["features.0.weight"], sd["features.0.bias"], stride=4, padding=2))
        t1 = F.relu(
            F.conv2d(F.max_pool2d(t0, 3, 2), sd["features.3.weight"], sd["features.3.bias"], padding=2)
        )
        t2 = F.relu(
            F.conv2d(F.max_pool2d(t1, 3, 2), sd["features.6.weight"], sd["features.6.bias"], padding=1)
        )
        t3 = F.relu(F.conv2d(t2, sd["features.8.weight"], sd["features.8.bias"], padding=1))
        t4 = F.relu(F.conv2d(t3, sd["features.10.weight"], sd["features.10.bias"], padding=1))
        return [t / (t.norm(dim=1, keepdim=True) + 1e-10) for t in (t0, t1, t2, t3, t4)]

    total = torch.zeros(x0.shape[0], dtype=torch.float64)
    for i, (f0, f1) in enumerate(zip(taps(x0), taps(x1))):
        w = sd[f"lin{i}.model.1.weight"].view(1, -1, 1, 1)  # weighted channel sum instead of a 1x1 conv
        total += (w * (f0 - f1) ** 2).sum(1).mean((1, 2))
    return total


@pytest.fixture(scope="module")
def weights() -> tuple[dict, dict]:
    return random_backbone(), random_lins()


@pytest.fixture(scope="module")
def model(weights, tmp_path_factory) -> LPIPS:
    root = tmp_path_factory.mktemp("lpips")
    torch.save(weights[0], root / "alexnet.pth")
    torch.save(weights[1], root / "alex.pth")
    return load_lpips(root / "alexnet.pth", root / "alex.pth")


def images(shape=(4, 3, 64, 64), seed: int = 2) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_forward_matches_functional_oracle(model, weights):
    # Oracle: reference_lpips above, plain F.conv2d/max_pool2d from the same state dicts.
    a, b = images(seed=2), images(seed=3)
    x0, x1 = 2 * a - 1, 2 * b - 1
    expected = reference_lpips(*weights, x0, x1)
    torch.testing.assert_close(model(x0, x1).double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(lpips_distance(model, a, b).double(), expected, atol=1e-5, rtol=0)
    # A non-square size down at the minimum goes through the same arithmetic.
    a, b = images((2, 3, MIN_SIZE, 45), seed=4), images((2, 3, MIN_SIZE, 45), seed=5)
    expected = reference_lpips(*weights, 2 * a - 1, 2 * b - 1)
    torch.testing.assert_close(lpips_distance(model, a, b).double(), expected, atol=1e-5, rtol=0)


def test_metric_identities(model):
    # Identities of eq. (1): d(x, x) = 0, d(x, y) = d(y, x), d >= 0 for w >= 0.
    a, b = images(seed=6), images(seed=7)
    assert torch.equal(lpips_distance(model, a, a), torch.zeros(4))
    torch.testing.assert_close(lpips_distance(model, a, b), lpips_distance(model, b, a), atol=1e-6, rtol=0)
    assert (lpips_distance(model, a, b) > 0).all()


def test_distance_grows_with_noise(model):
    # Oracle: ordering of corruption strength; three noise levels on the same clean images and noise.
    a = images(seed=8)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(9))
    d = torch.stack(
        [lpips_distance(model, a, (a + s * noise).clamp(0, 1)) for s in (0.05, 0.2, 0.5)]
    )  # (3, B)
    assert (d[0] > 0).all() and (d[1] > d[0]).all() and (d[2] > d[1]).all()


def test_minimum_size_is_alexnets(model):
    # Oracle: PyTorch's own layers; one pixel less than MIN_SIZE leaves the second max pool no window.
    x = torch.zeros(1, 3, MIN_SIZE, MIN_SIZE)
    model.features(x)
    with pytest.raises(RuntimeError):
        model.features(torch.zeros(1, 3, MIN_SIZE - 1, MIN_SIZE - 1))
    with pytest.raises(ValueError, match=f"at least {MIN_SIZE}x{MIN_SIZE}"):
        lpips_distance(model, images((1, 3, MIN_SIZE - 1, 64)), images((1, 3, MIN_SIZE - 1, 64)))


def test_bad_inputs_raise(model):
    a = images()
    with pytest.raises(ValueError, match="shapes differ"):
        lpips_distance(model, a, a[:2])
    with pytest.raises(ValueError, match="C = 1 or 3"):
        lpips_distance(model, a[:, :2], a[:, :2])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        lpips_distance(model, a[0], a[0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        lpips_distance(model, a * 2 - 1, a)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        lpips_video(model, a, a)
    with pytest.raises(ValueError, match="shapes differ"):
        lpips_video(model, a[None], a[None, :2])


def test_loaded_model_is_frozen_eval(model):
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert not model.train().training  # the lin dropout can never switch on


def test_round_trip_pth_and_safetensors(model, weights, tmp_path):
    backbone, lins = weights
    save_file(backbone, tmp_path / "alexnet.safetensors")
    save_file(lins, tmp_path / "alex.safetensors")
    loaded = load_lpips(tmp_path / "alexnet.safetensors", tmp_path / "alex.safetensors")
    a, b = images(seed=10), images(seed=11)
    assert torch.equal(loaded(2 * a - 1, 2 * b - 1), model(2 * a - 1, 2 * b - 1))
    for key, value in {**backbone, **lins}.items():
        if not key.startswith("classifier."):
            assert torch.equal(loaded.state_dict()[key], value)


def test_whole_lpips_module_layout_loads(model, weights, tmp_path):
    # The state dict of lpips.LPIPS(net='alex'): net.slice{1..5}.<torchvision index>.*, lin* and the
    # duplicate lins.* entries, and the scaling-layer buffers; one file passed as both arguments.
    backbone, lins = weights
    slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    sd = {"scaling_layer.shift": torch.zeros(1, 3, 1, 1), "scaling_layer.scale": torch.ones(1, 3, 1, 1)}
    for i, s in slice_of.items():
        for p in ("weight", "bias"):
            sd[f"net.slice{s}.{i}.{p}"] = backbone[f"features.{i}.{p}"]
    for key, value in lins.items():
        sd[key] = value
        sd["lins." + key[3:]] = value  # lin2.model.1.weight -> lins.2.model.1.weight
    torch.save(sd, tmp_path / "lpips_alex.pth")
    loaded = load_lpips(tmp_path / "lpips_alex.pth", tmp_path / "lpips_alex.pth")
    a, b = images(seed=12), images(seed=13)
    assert torch.equal(lpips_distance(loaded, a, b), lpips_distance(model, a, b))


def test_bad_files_raise_checkpoint_error_naming_file(weights, tmp_path):
    backbone, lins = weights
    good_backbone, good_lins = tmp_path / "alexnet.pth", tmp_path / "alex.pth"
    torch.save(backbone, good_backbone)
    torch.save(lins, good_lins)
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_lpips(missing, good_lins)
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_lpips(good_backbone, missing)
    short_backbone = tmp_path / "short_backbone.pth"
    torch.save({k: v for k, v in backbone.items() if k != "features.10.bias"}, short_backbone)
    with pytest.raises(CheckpointError, match="short_backbone.pth.*features.10.bias"):
        load_lpips(short_backbone, good_lins)
    short_lins = tmp_path / "short_lins.safetensors"
    save_file({k: v for k, v in lins.items() if not k.startswith("lin4.")}, short_lins)
    with pytest.raises(CheckpointError, match="short_lins.safetensors.*lin4.model.1.weight"):
        load_lpips(good_backbone, short_lins)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save({**lins, "lin0.model.1.weight": torch.rand(1, 65, 1, 1)}, wrong_shape)
    with pytest.raises(CheckpointError, match="wrong_shape.pth"):
        load_lpips(good_backbone, wrong_shape)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_lpips(garbage, good_lins)
    swapped = tmp_path / "swapped.pth"  # the lin file given as backbone: no features.* keys
    torch.save(lins, swapped)
    with pytest.raises(CheckpointError, match="swapped.pth"):
        load_lpips(swapped, swapped)


def test_video_is_mean_of_frame_distances(model):
    # Oracle: lpips_distance frame by frame; batch_size 4 splits the 6 frame pairs unevenly.
    a, b = images((2, 3, 3, 64, 64), seed=14), images((2, 3, 3, 64, 64), seed=15)
    per_frame = torch.stack([lpips_distance(model, a[:, t], b[:, t]) for t in range(3)], dim=1)  # (2, 3)
    torch.testing.assert_close(lpips_video(model, a, b, batch_size=4), per_frame.mean(1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="batch_size"):
        lpips_video(model, a, b, batch_size=0)
