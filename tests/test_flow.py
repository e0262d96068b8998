"""The ``flow`` method and its DiT: shapes, conditioning, guidance, and a loss that learns."""

from __future__ import annotations

import pytest
import torch

from tempoflow.data import load_dataset
from tempoflow.flows.solvers import solve_ode
from tempoflow.methods.base import SamplingOptions
from tempoflow.methods.conditioning import encode_captions
from tempoflow.nets.dit import DiT, DiTConfig
from tempoflow.nets.unet import UNetConfig
from tempoflow.nets.video_unet import StackedFramesUNet
from tempoflow.runs import build_method

CAPTIONS = ["a red circle moves left", "a blue square moves up"]
TINY_UNET = ["flow.backbone=unet", "flow.unet.base_width=8", "flow.unet.groups=4", "flow.unet.cond_dim=16"]


def _perturb(module: torch.nn.Module) -> None:
    """Zero-initialised layers make every caption look alike; give all weights some noise."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("cross", [True, False])
def test_dit_shapes_zero_init_and_dropped_captions(cross):
    net = DiT(DiTConfig(dim=24, depth=2, heads=2, patch_t=2, patch_hw=4, cross_attention=cross), 3, 16)
    x, t = torch.randn(2, 4, 3, 8, 12), torch.rand(2)
    tok, mask, pooled = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), torch.randn(2, 16)
    out = net(x, t, tok, mask, pooled)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-zero and zero output layer: starts at v = 0
    _perturb(net)
    drop = torch.tensor([True, True])
    a = net(x, t, tok, mask, pooled, drop=drop)
    b = net(x, t, torch.randn_like(tok), mask, torch.randn_like(pooled), drop=drop)
    assert torch.allclose(a, b, atol=1e-6)  # a dropped caption carries no information
    c = net(x, t, torch.randn_like(tok), mask, torch.randn_like(pooled))
    assert not torch.allclose(a, c, atol=1e-4)
    # padding tokens (mask False) must not matter
    mask2 = mask.clone()
    mask2[:, 3:] = False
    tok2 = tok.clone()
    tok2[:, 3:] = 100.0
    if cross:
        assert torch.allclose(net(x, t, tok, mask2, pooled), net(x, t, tok2, mask2, pooled), atol=1e-5)


def test_dit_rejects_untileable_input():
    net = DiT(DiTConfig(dim=24, depth=1, heads=2, patch_t=2, patch_hw=4), 3, 16)
    with pytest.raises(ValueError, match="does not tile"):
        net(torch.randn(1, 3, 3, 8, 8), torch.rand(1))
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(1, 4, 8, 8), torch.rand(1))


def test_stacked_frames_unet_contract():
    """Same contract as the DiT: zero output at init, a dropped caption carries no information, and a
    clear error for a frame count it was not built for."""
    cfg = UNetConfig(base_width=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, cond_dim=16)
    net = StackedFramesUNet(cfg, num_frames=4, channels=3, text_dim=16)
    x, t, pooled = torch.randn(2, 4, 3, 8, 8), torch.rand(2), torch.randn(2, 16)
    assert net(x, t, pooled=pooled).shape == x.shape
    assert torch.count_nonzero(net(x, t, pooled=pooled)) == 0
    _perturb(net)
    drop = torch.tensor([True, False])
    a = net(x, t, pooled=pooled, drop=drop)
    b = net(x, t, pooled=torch.randn_like(pooled), drop=drop)
    assert torch.allclose(a[0], b[0], atol=1e-6) and not torch.allclose(a[1], b[1], atol=1e-4)
    assert torch.allclose(net(x, t, pooled=None)[:1], a[:1], atol=1e-6)  # None = the null caption
    assert torch.allclose(net(x, t[0], pooled=pooled)[0], net(x, t[0].expand(2), pooled=pooled)[0])
    with pytest.raises(ValueError, match="built for 4 frames"):
        net(torch.randn(1, 6, 3, 8, 8), torch.rand(1), pooled=pooled[:1])


def test_guidance_scale_one_is_the_conditional_model(tiny_cfg):
    """CFG at w = 1 must equal integrating the conditional velocity alone (same noise, same solver)."""
    method = build_method(tiny_cfg()).eval()
    _perturb(method.net)
    g1 = torch.Generator().manual_seed(3)
    out = method.sample(CAPTIONS, generator=g1, options=SamplingOptions(solver="euler", steps=3, guidance=1.0))
    assert out.nfe == 3  # no unconditional half at w = 1
    cond = encode_captions(method.text, CAPTIONS, torch.device("cpu"))
    x_init = torch.randn((2, method.num_frames, *method.latent_shape), generator=torch.Generator().manual_seed(3))
    ref = solve_ode(lambda x, t: method.net(x, t.expand(2), **cond), x_init, torch.tensor([0.0, 1.0]),
                    method="euler", steps=3)
    assert torch.allclose(out.latents, ref.xs[-1], atol=1e-6)
    guided = method.sample(CAPTIONS, generator=torch.Generator().manual_seed(3), options=SamplingOptions(solver="euler", steps=3, guidance=3.0))
    assert guided.nfe == 3 and not torch.allclose(guided.latents, out.latents)


@pytest.mark.parametrize("overrides", [[], TINY_UNET], ids=["dit", "unet"])
def test_sample_shapes_and_determinism(tiny_cfg, overrides):
    method = build_method(tiny_cfg(*overrides)).eval()
    _perturb(method.net)
    a = method.sample(CAPTIONS, generator=torch.Generator().manual_seed(0), options=SamplingOptions(solver="heun", steps=2))
    b = method.sample(CAPTIONS, generator=torch.Generator().manual_seed(0), options=SamplingOptions(solver="heun", steps=2))
    assert a.video.shape == (2, 4, 3, 16, 16) and a.video.min() >= 0 and a.video.max() <= 1
    assert torch.equal(a.video, b.video)
    assert a.nfe == 2 * 2 * 1  # heun: 2 evaluations per step, guided batch is one call
    c = method.sample(CAPTIONS, generator=torch.Generator().manual_seed(0), options=SamplingOptions(solver="dopri5"))
    assert c.nfe > 0 and c.video.shape == a.video.shape


@pytest.mark.parametrize("overrides", [[], TINY_UNET, ["flow.time_sampling=logit_normal", "flow.prediction=data"]],
                         ids=["dit", "unet", "dit-logit-normal-data"])
def test_flow_loss_learns(tiny_cfg, overrides):
    """A few dozen AdamW steps on one batch must cut the flow-matching loss well below its start."""
    cfg = tiny_cfg(*overrides)
    method = build_method(cfg)
    data = load_dataset(cfg.data, "train")
    batch = {"video": data.videos[:4], "caption": data.captions[:4]}
    opt = torch.optim.AdamW(method.parameters(), lr=3e-3)
    losses = []
    for i in range(40):
        loss = method.loss(batch, torch.Generator().manual_seed(i % 4))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.6 * sum(losses[:4]) / 4


def test_unet_backbone_refuses_frames_it_cannot_downsample(tiny_cfg):
    from tempoflow.errors import ConfigError

    with pytest.raises(ConfigError, match="do not fit a UNet with 3 levels"):
        build_method(tiny_cfg(*TINY_UNET, "data.shapes.resolution=18"))


def test_empty_caption_is_a_clear_error(tiny_cfg):
    from tempoflow.errors import DataError

    method = build_method(tiny_cfg())
    with pytest.raises(DataError, match="caption 1 is empty"):
        method.sample(["a red circle moves left", "  "])


def test_guidance_on_a_model_never_trained_unconditionally_warns(tiny_cfg, recwarn):
    """Field case 18: with caption_dropout=0 the unconditional velocity is untrained; guidance != 1 warns."""
    method = build_method(tiny_cfg("flow.caption_dropout=0.0")).eval()
    with pytest.warns(UserWarning, match=r"flow.caption_dropout=0"):
        method.sample(CAPTIONS[:1], generator=torch.Generator().manual_seed(0), options=SamplingOptions(steps=1, guidance=2.0))
    recwarn.clear()
    method.sample(CAPTIONS[:1], generator=torch.Generator().manual_seed(0), options=SamplingOptions(steps=1, guidance=1.0))
    assert not [w for w in recwarn if "caption_dropout" in str(w.message)]


def test_non_finite_samples_are_named_by_caption(tiny_cfg):
    """A diverged model (a NaN weight) gives one SolverError naming the samples, not a crash later."""
    from tempoflow.errors import SolverError

    method = build_method(tiny_cfg()).eval()
    with torch.no_grad():
        next(method.net.parameters()).fill_(float("nan"))
    with pytest.raises(SolverError, match=r"samples 0 \('a red circle moves left'\), 1 \('a blue square'\) of 2 "
                                          r"came out NaN or inf"):
        method.sample(["a red circle moves left", "a blue square"], options=SamplingOptions(steps=1))


def test_min_sigma_too_small_is_refused_with_the_reason(tiny_cfg):
    from tempoflow.errors import ConfigError

    for bad in ("1e-08", "2"):
        with pytest.raises(ConfigError, match=rf"flow.min_sigma must be in \[0.001, 1\] for data prediction, got {bad}"):
            tiny_cfg("flow.prediction=data", f"flow.min_sigma={bad}")
    assert tiny_cfg("flow.min_sigma=1e-8").flow.min_sigma == 1e-8  # velocity prediction never uses it


def test_a_video_the_dit_patches_cannot_tile_is_refused_when_built(tiny_cfg):
    from tempoflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"3 frames at 16x16 do not tile into the DiT's patches of 2x4x4"):
        build_method(tiny_cfg("data.shapes.num_frames=3"))
