"""WAE autoencoders: discriminator games in one loss, latent divergences, the frame WAE, the video WAE
and its codec (seed 002 appendix A).

References: autograd itself (which parameters a term's gradient reaches), separate plain forward
passes and ``F.binary_cross_entropy_with_logits`` for the fused discriminator terms, Python double
loops for MMD² and for the pairwise form of eq. (A.4), a functional ``F.conv2d`` oracle built from the
state dict for the VGG stack, and the trained model's own eval for the end-to-end runs.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.errors import CheckpointError, ConfigError
from tempoflow.nets.discriminator import (
    IMQ_SCALES,
    LatentDiscriminator,
    PatchDiscriminator,
    adversarial_terms,
    imq_mmd,
    latent_divergence,
)
from tempoflow.nets.video_autoencoder import VGG_LAYOUTS, load_vgg_features, temporal_strides
from tempoflow.runs import build_codec, build_method, train

from .conftest import TINY, overfit_l1
from .conftest import TINY_VIDEO_WAE as VW

AE = [
    "method=autoencoder",
    "autoencoder.width=8",
    "autoencoder.multipliers=[1, 2]",
    "autoencoder.z_channels=2",
]
WAE = [
    *AE,
    "autoencoder.regulariser=wae",
    "autoencoder.disc_weight=1.0",
    "autoencoder.disc_width=8",
    "autoencoder.disc_layers=2",
    "autoencoder.latent_disc_width=16",
]


def _grads(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d each tensor, zeros where the graph does not reach it (allow_unused)."""
    grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


@pytest.mark.parametrize(
    "disc, shape, paired",
    [
        (lambda: PatchDiscriminator(3, 8, 2, (16, 16)), (4, 3, 16, 16), True),
        (lambda: PatchDiscriminator(3, 8, 2, (4, 16, 16)), (4, 3, 4, 16, 16), True),
        (lambda: LatentDiscriminator(6, 16), (16, 6), False),
    ],
)
def test_game_terms_reach_disjoint_parameters(disc, shape, paired):
    """Reference: autograd. The generator term moves the reconstruction, never D; D's loss moves D,
    never the reconstruction. Both values also equal separate plain passes (F.bce_with_logits)."""
    torch.manual_seed(0)
    d = disc()
    real = torch.rand(shape) * 2 - 1
    fake = (torch.rand(shape) * 2 - 1).requires_grad_(True)  # stands for the decoder's output
    terms = adversarial_terms(d, real, fake, paired=paired)
    params = list(d.parameters())

    g_params = _grads(terms.generator_loss, params)
    assert all(torch.count_nonzero(g) == 0 for g in g_params)
    assert torch.count_nonzero(_grads(terms.generator_loss, [fake])[0]) > 0

    assert torch.count_nonzero(_grads(terms.disc_loss, [fake])[0]) == 0
    assert sum(torch.count_nonzero(g) for g in _grads(terms.disc_loss, params)) > 0

    with torch.no_grad():  # separate passes: real and fake never share a batch
        out_r, out_f = d(real), d(fake)
        bce = F.binary_cross_entropy_with_logits(
            out_r.logits, torch.ones_like(out_r.logits)
        ) + F.binary_cross_entropy_with_logits(out_f.logits, torch.zeros_like(out_f.logits))
        if paired:
            fm = torch.stack([(a - b).abs().mean() for a, b in zip(out_r.features, out_f.features)]).mean()
        else:
            fm = sum((a.mean(0) - b.mean(0)).square().sum() for a, b in zip(out_r.features, out_f.features))
    assert torch.allclose(terms.disc_loss, bce, rtol=1e-5)
    assert torch.allclose(terms.generator_loss, fm, rtol=1e-5)


def test_patch_discriminator_grids_and_temporal_strides():
    """Hand-computed sizes: 16x16 through 2 stride-2 layers -> 4x4 patches; 4 frames -> 2 -> 1."""
    assert temporal_strides(16, 4) == (2, 2, 2, 2) and temporal_strides(4, 3) == (2, 2, 1)
    assert temporal_strides(6, 3) == (2, 1, 1)
    out = PatchDiscriminator(3, 8, 2, (4, 16, 16))(torch.rand(2, 3, 4, 16, 16))
    assert out.logits.shape == (2, 1, 1, 4, 4)
    assert [f.shape[1:] for f in out.features] == [(8, 2, 8, 8), (16, 1, 4, 4)]


def _imq_mmd_loop(x: torch.Tensor, y: torch.Tensor) -> float:
    """Brute force: the unbiased MMD² U-statistic with the multi-scale IMQ kernel, one pair at a time."""
    d = x.shape[1]

    def k(a, b):
        r = float((a - b).square().sum())
        return sum(2 * d * s / (2 * d * s + r) for s in IMQ_SCALES)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_imq_mmd_matches_loop_and_separates_distributions():
    """Reference: a Python double loop; and MMD² ≈ 0 (unbiased) for two N(0, I) samples, ≫ for a shift."""
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(12, 5, generator=g, dtype=torch.float64),
        torch.randn(9, 5, generator=g, dtype=torch.float64),
    )
    assert float(imq_mmd(x, y)) == pytest.approx(_imq_mmd_loop(x, y), rel=1e-4, abs=1e-6)

    same = [
        float(imq_mmd(torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g))) for _ in range(5)
    ]
    shifted = float(imq_mmd(torch.randn(200, 8, generator=g) + 1.0, torch.randn(200, 8, generator=g)))
    assert max(abs(v) for v in same) < 0.05  # measured ≤ 0.022 over 20 seeds
    assert shifted > 0.5  # measured 0.98
    with pytest.raises(ValueError, match="imq_mmd needs"):
        imq_mmd(torch.randn(1, 3), torch.randn(4, 3))


def test_latent_feature_matching_zero_at_prior_and_pairwise_identity():
    """Eq. (A.4) with a fixed random D_z. Reference 1: ≈ 0 when q = p (4000 draws each), large for a
    shift. Reference 2 (double loop): the literal pairwise form mean_{i,j} ‖f(a_i) − f(b_j)‖² equals
    the batch-mean matching plus both (biased) feature variances."""
    torch.manual_seed(0)
    disc = LatentDiscriminator(8, 32)
    g = torch.Generator().manual_seed(1)
    prior = torch.randn(4000, 8, generator=g)
    same = latent_divergence(torch.randn(4000, 8, generator=g), prior, "feature_matching", disc)
    shifted = latent_divergence(torch.randn(4000, 8, generator=g) + 0.5, prior, "feature_matching", disc)
    assert float(same.generator_loss) < 0.02  # measured 0.003
    assert float(shifted.generator_loss) > 0.3  # measured 0.93
    assert float(shifted.generator_loss) > 20 * float(same.generator_loss)

    a, b = (
        torch.randn(7, 8, generator=g, dtype=torch.float64),
        torch.randn(5, 8, generator=g, dtype=torch.float64),
    )
    disc = disc.double()
    with torch.no_grad():
        fa, fb = disc(a).features, disc(b).features
        pairwise = sum(
            float((u[i] - v[j]).square().sum())
            for u, v in zip(fa, fb)
            for i in range(len(a))
            for j in range(len(b))
        ) / (len(a) * len(b))
        variances = sum(
            float(u.var(0, unbiased=False).sum() + v.var(0, unbiased=False).sum()) for u, v in zip(fa, fb)
        )
    matched = float(adversarial_terms(disc, a, b, paired=False).generator_loss)
    assert matched + variances == pytest.approx(pairwise, rel=1e-6)  # float32 feature means
    mmd = latent_divergence(a, b, "mmd", None)
    assert float(mmd.disc_loss) == 0 and float(mmd.generator_loss) == pytest.approx(
        _imq_mmd_loop(a, b), rel=1e-4
    )


def test_frame_wae_with_discriminator_trains(tmp_path):
    """regulariser=wae + disc_weight > 0 through the real trainer; the loss dict carries every term."""
    cfg = load_config(None, [*TINY, *WAE, f"out_dir={tmp_path / 'wae'}"])
    result = train(cfg)
    assert result.step == 4 and (tmp_path / "wae" / "checkpoints" / "latest").exists()
    ae = build_method(cfg)
    out = ae.loss({"video": torch.rand(2, 4, 3, 16, 16)}, torch.Generator().manual_seed(0))
    assert {"loss", "l1", "l2", "divergence", "latent_disc", "feature_matching", "disc"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    mmd = build_method(load_config(None, [*TINY, *WAE, "autoencoder.divergence=mmd"]))
    assert mmd.latent_disc is None and "divergence" in mmd.loss({"video": torch.rand(2, 4, 3, 16, 16)})


def test_kl_autoencoder_unchanged_by_default():
    """Defaults add no discriminator: same weights (no disc keys) and the same four loss entries."""
    ae = build_method(load_config(None, [*TINY, *AE]))
    assert not any("disc" in k for k in ae.state_dict())
    assert set(ae.loss({"video": torch.rand(2, 4, 3, 16, 16)})) == {"loss", "l1", "l2", "kl"}
    with pytest.raises(ConfigError, match="regulariser"):
        load_config(None, [*AE, "autoencoder.regulariser=vq"])
    with pytest.raises(ConfigError, match="smaller than the discriminator"):
        build_method(load_config(None, [*TINY, *WAE, "autoencoder.disc_layers=5"]))


def test_video_wae_shapes_and_bad_input():
    cfg = load_config(None, [*TINY, *VW])
    wae = build_method(cfg)
    video = torch.rand(3, 4, 3, 16, 16)
    assert wae.latent_shape == (16,) and wae.encode_videos(video).shape == (3, 16)
    assert wae.reconstruct(video).shape == video.shape
    assert wae.decode_videos(torch.randn(2, 16)).shape == (2, 4, 3, 16, 16)
    out = wae.loss({"video": video}, torch.Generator().manual_seed(0))
    assert {"loss", "l1", "feature_matching", "video_disc", "divergence", "latent_disc"} <= set(out)
    with pytest.raises(ValueError, match="video_wae takes clips"):
        wae.encode_videos(torch.rand(3, 8, 3, 16, 16))
    with pytest.raises(ValueError, match="decodes latents"):
        wae.decode_videos(torch.randn(2, 15))
    with pytest.raises(ConfigError, match="do not divide"):
        build_method(load_config(None, [*TINY, *VW, "video_wae.multipliers=[1, 1, 1, 1, 1]"]))


def test_video_wae_overfits_one_batch():
    """Reconstruction L1 must fall below half its start when overfitting two clips."""
    cfg = load_config(None, [*TINY, *VW])
    wae = build_method(cfg)
    from tempoflow.data import load_dataset

    first, last = overfit_l1(wae, {"video": load_dataset(cfg.data, "train").videos[:2]}, steps=30)
    assert last < 0.5 * first
    assert wae.latent_std.item() != 1.0


@pytest.fixture
def wae_run(tmp_path):
    cfg = load_config(None, [*TINY, *VW, f"out_dir={tmp_path / 'vw'}"])
    train(cfg)
    return tmp_path / "vw"


def test_video_wae_eval_and_codec(tmp_path, wae_run):
    """`tempoflow eval` on a video_wae run; the codec's shapes, chunking, scaling and frozen state."""
    assert main(["eval", str(wae_run), "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    record = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert record["metrics"]["test"]["psnr_db"] > 0 and record["latent_shape"] == [16]

    codec = build_codec("video_wae", str(wae_run))
    video = torch.rand(3, 4, 3, 16, 16)
    z = codec.encode(video)
    assert z.shape == (3, 1, 16) and codec.decode(z).shape == video.shape
    assert torch.allclose(z[:, 0], codec.wae.encode_videos(video) * codec.scaling, atol=1e-5)
    codec.chunk = 2  # chunks of 2 clips: same latents (per-sample normalisation)
    assert torch.allclose(codec.encode(video), z, atol=1e-5)
    long = torch.rand(2, 8, 3, 16, 16)  # two 4-frame chunks per video
    assert codec.encode(long).shape == (2, 2, 16) and codec.decode(codec.encode(long)).shape == long.shape
    assert torch.allclose(codec.encode(long)[:, 1], codec.encode(long[:, 4:])[:, 0], atol=1e-5)
    assert not any(p.requires_grad for p in codec.parameters())
    assert not codec.train().training
    with pytest.raises(ValueError, match="multiple of the codec's 4-frame chunks"):
        codec.encode(torch.rand(1, 6, 3, 16, 16))
    ae_run = tmp_path / "ae"
    train(load_config(None, [*TINY, *AE, f"out_dir={ae_run}", "train.steps=1"]))
    with pytest.raises(ConfigError, match="not a video_wae"):
        build_codec("video_wae", str(ae_run))


def _vgg_oracle(weights: dict[str, torch.Tensor], layout: tuple, x: torch.Tensor) -> list[torch.Tensor]:
    """VGG16 features by F.conv2d straight from the torchvision key names, tapped at relu4_3 / relu5_3."""
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    index, taps = 0, []
    for item in layout:
        if item == "M":
            x, index = F.max_pool2d(x, 2), index + 1
            continue
        x = F.relu(
            F.conv2d(x, weights[f"features.{index}.weight"], weights[f"features.{index}.bias"], padding=1)
        )
        if index in (21, 28):  # torchvision vgg16: conv4_3 and conv5_3
            taps.append(x)
        index += 2
    return taps


def test_vgg_loads_torchvision_layout_and_feeds_perceptual_term(tmp_path):
    """Reference: a functional conv oracle over the same state dict. The method's perceptual term is
    on only with a path, and the VGG never enters the method's weights."""
    g = torch.Generator().manual_seed(0)
    weights, c, i = {}, 3, 0
    for item in VGG_LAYOUTS["vgg16"]:
        if item == "M":
            i += 1
            continue
        weights[f"features.{i}.weight"] = torch.randn(item, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
        weights[f"features.{i}.bias"] = torch.zeros(item)
        c, i = item, i + 2
    weights["classifier.0.weight"] = torch.zeros(2, 2)  # ignored, as in torchvision's files
    path = tmp_path / "vgg16.safetensors"
    save_file(weights, str(path))
    vgg = load_vgg_features(path)
    x = torch.rand(2, 3, 16, 16, generator=g)
    for ours, ref in zip(vgg(x), _vgg_oracle(weights, VGG_LAYOUTS["vgg16"], x), strict=True):
        assert ours.shape == ref.shape and torch.allclose(ours, ref, rtol=1e-4, atol=1e-5)

    wae = build_method(load_config(None, [*TINY, *VW, f"video_wae.vgg_path={path}"]))
    out = wae.loss({"video": torch.rand(2, 4, 3, 16, 16)})
    assert out["perceptual"] > 0 and not any(
        k.startswith("_vgg") or "features.0" in k for k in wae.state_dict()
    )
    assert "perceptual" not in build_method(load_config(None, [*TINY, *VW])).loss(
        {"video": torch.rand(2, 4, 3, 16, 16)}
    )

    torch.save({k: v for k, v in weights.items() if k != "features.28.weight"}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="12 conv layers"):
        load_vgg_features(tmp_path / "bad.pth")
