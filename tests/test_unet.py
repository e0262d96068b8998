"""FiLM UNet of Stochastic Lifting (seed 001, appendix E): shapes, conditioning, gradients, a tiny overfit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tempoflow.errors import ConfigError
from tempoflow.nets.unet import UNET_PRESETS, ResBlock, UNet, UNetConfig, pixel_coordinates

TINY = UNET_PRESETS["tiny"]
CONFIGS = {
    "tiny": TINY,
    "attention-transpose": dataclasses.replace(TINY, attention=True, heads=2, upsample="transpose"),
    "three-levels": dataclasses.replace(TINY, base_width=8, channel_mults=(1, 2, 3), blocks_per_level=2),
    "one-level": dataclasses.replace(TINY, channel_mults=(2,)),
}


def _perturb(net: torch.nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Move every parameter off its initial value, so zero-initialised layers take part too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


def _inputs(batch: int, c_in: int, h: int, w: int, label_dim: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c_in, h, w, generator=g)
    label = torch.randn(batch, label_dim, generator=g) if label_dim else None
    return x, label


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("label_dim, time_input", [(8, False), (0, True), (4, True), (0, False)])
def test_output_shape(name, label_dim, time_input):
    cfg = CONFIGS[name]
    net = UNet(cfg, in_channels=6, out_channels=2, label_dim=label_dim, time_input=time_input)
    _perturb(net)
    h, w = 4 * cfg.downsampling, 3 * cfg.downsampling  # non-square, smallest multiples
    x, label = _inputs(3, 6, h, w, label_dim)
    t = torch.rand(3) if time_input else None
    out = net(x, label, t)
    assert out.shape == (3, 2, h, w)
    assert torch.isfinite(out).all()


def test_starts_at_zero_and_label_enters_only_through_film():
    # Zero-initialised output conv: F(x, ξ) = 0 at initialisation, whatever x and ξ.
    net = UNet(TINY, in_channels=3, out_channels=1, label_dim=8)
    x, label = _inputs(2, 3, 8, 8, 8)
    assert net(x, label).abs().max().item() == 0.0
    # With every other weight random but the FiLM projections zero, the label cannot change the output:
    # FiLM (scale 1, shift 0) is the identity and is the only path of the label into the network.
    _perturb(net)
    for m in net.modules():
        if isinstance(m, ResBlock):
            torch.nn.init.zeros_(m.film[-1].weight)
            torch.nn.init.zeros_(m.film[-1].bias)
    other = torch.randn(2, 8, generator=torch.Generator().manual_seed(5))
    out = net(x, label)
    assert out.abs().max().item() > 0
    torch.testing.assert_close(net(x, other), out, atol=0, rtol=0)
    # Non-zero FiLM projections: now the label matters.
    _perturb(net, seed=3)
    assert (net(x, other) - net(x, label)).abs().max().item() > 1e-3


def test_label_used_after_one_training_step():
    # From the zero initialisation, one Adam step on a label-dependent target is enough for the label to
    # change the output (the zero-init FiLM layers receive gradient once the output conv is non-zero).
    net = UNet(TINY, in_channels=2, out_channels=2, label_dim=4)
    x, label = _inputs(4, 2, 8, 8, 4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):
        loss = (net(x, label) - label[:, :2, None, None]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert (net(x, -label) - net(x, label)).abs().max().item() > 1e-4


def test_time_input_used_and_scalar_t_broadcasts():
    net = UNet(TINY, in_channels=1, out_channels=1, time_input=True)
    _perturb(net)
    x, _ = _inputs(3, 1, 8, 8, 0)
    t = torch.tensor([0.1, 0.5, 0.9])
    assert (net(x, t=t) - net(x, t=1 - t)).abs().max().item() > 1e-3
    # A scalar t means the same t for every sample (what an ODE solver passes).
    torch.testing.assert_close(net(x, t=torch.tensor(0.3)), net(x, t=torch.full((3,), 0.3)))


def test_interval_input_is_a_second_embedding_summed_in():
    """MeanFlow's ``net(·, t, t − r)``: the interval changes the output, a scalar broadcasts, and the
    conditioning vector is exactly time MLP + interval MLP (reference: the two embedders called by hand)."""
    net = UNet(TINY, in_channels=1, out_channels=1, time_input=True, interval_input=True)
    _perturb(net)
    x, _ = _inputs(3, 1, 8, 8, 0)
    t, h = torch.tensor([0.9, 0.6, 0.3]), torch.tensor([0.1, 0.5, 0.2])
    assert (net(x, t=t, interval=h) - net(x, t=t, interval=1 - h)).abs().max().item() > 1e-3
    torch.testing.assert_close(
        net(x, t=t, interval=torch.tensor(0.2)), net(x, t=t, interval=torch.full((3,), 0.2))
    )
    expected = net.time_embed(t) + net.interval_embed(h)  # (3, D)
    torch.testing.assert_close(net.conditioning(3, None, t, h), expected)


def test_interval_input_is_backward_compatible():
    """Off, a UNet is the one it was before the interval existed: same parameter names, and the same initial
    weights from the same seed (nothing extra is drawn); on, it adds only ``interval_embed.*`` and the
    weights of every shared parameter are unchanged — so a time-only checkpoint loads into its sub-network."""
    torch.manual_seed(3)
    plain = UNet(TINY, in_channels=2, out_channels=1, time_input=True)
    torch.manual_seed(3)
    off = UNet(TINY, in_channels=2, out_channels=1, time_input=True, interval_input=False)
    torch.manual_seed(3)
    on = UNet(TINY, in_channels=2, out_channels=1, time_input=True, interval_input=True)
    old, new = plain.state_dict(), on.state_dict()
    assert off.state_dict().keys() == old.keys() and all(torch.equal(off.state_dict()[k], old[k]) for k in old)
    assert not any(k.startswith("interval_embed") for k in old)
    assert set(new) - set(old) == {k for k in new if k.startswith("interval_embed.")} != set()
    missing, unexpected = on.load_state_dict(old, strict=False)
    assert not unexpected and all(k.startswith("interval_embed.") for k in missing)
    with pytest.raises(ConfigError, match="needs the time input"):
        UNet(TINY, in_channels=1, out_channels=1, interval_input=True)


def test_coordinate_channels_locate_the_walls():
    """``coordinates``: two input channels with each pixel centre's x, y in [-1, 1] (closed form
    ``(2j + 1) / W − 1``), so a convolution next to a wall differs from one in open space. Off, the net is
    the paper's (same parameter shapes); on, only ``conv_in`` widens by 2, by exactly those channels."""
    grid = pixel_coordinates(torch.zeros(2, 3, 4, 6, dtype=torch.float64))
    assert grid.shape == (2, 2, 4, 6) and grid.dtype == torch.float64
    assert torch.allclose(grid[1, 0, 2], torch.tensor([-5, -3, -1, 1, 3, 5], dtype=torch.float64) / 6)
    assert torch.allclose(grid[0, 1, :, 5], torch.tensor([-3, -1, 1, 3], dtype=torch.float64) / 4)
    plain = UNet(TINY, in_channels=6, out_channels=3, label_dim=4)
    coords = UNet(dataclasses.replace(TINY, coordinates=True), in_channels=6, out_channels=3, label_dim=4)
    a, b = plain.state_dict(), coords.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if a[k].shape != b[k].shape] == ["conv_in.weight"]
    assert b["conv_in.weight"].shape[1] == a["conv_in.weight"].shape[1] + 2
    with torch.no_grad():  # the extra channels are the coordinates: zero weights on them give the plain net
        coords.load_state_dict({**a, "conv_in.weight": torch.cat([a["conv_in.weight"], torch.zeros(16, 2, 3, 3)], 1)})
        _perturb(plain)
        coords.load_state_dict({**plain.state_dict(), "conv_in.weight": torch.cat(
            [plain.state_dict()["conv_in.weight"], torch.zeros(16, 2, 3, 3)], 1)})
        x, label = _inputs(2, 6, 16, 16, 4)
        assert torch.allclose(coords(x, label=label), plain(x, label=label), atol=1e-6)
        coords.conv_in.weight[:, 6:] = 1.0  # and they enter the output once weighted
        assert not torch.allclose(coords(x, label=label), plain(x, label=label), atol=1e-3)


def test_forward_mode_jvp_matches_finite_differences():
    """``torch.func.jvp`` runs through the whole UNet (GroupNorm, SiLU, FiLM, attention, nearest upsampling)
    and matches central finite differences along the same tangent, in float64 (what meanflow's target needs)."""
    cfg = dataclasses.replace(TINY, attention=True, heads=2)
    net = UNet(cfg, in_channels=2, out_channels=1, time_input=True, interval_input=True).double()
    _perturb(net)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64)
    t, h = torch.tensor([0.7, 0.4], dtype=torch.float64), torch.tensor([0.3, 0.1], dtype=torch.float64)
    dx = torch.randn(x.shape, generator=g, dtype=torch.float64)

    def f(x, t, h):
        return net(x, t=t, interval=h)

    tangent = (dx, torch.ones_like(t), torch.zeros_like(h))
    _, jvp = torch.func.jvp(f, (x, t, h), tangent)
    # The time enters through sin(1000 t ω): third derivatives ~1e9, so the step must be small (error ~ eps²).
    eps = 1e-7
    fd = (f(x + eps * dx, t + eps, h) - f(x - eps * dx, t - eps, h)) / (2 * eps)
    torch.testing.assert_close(jvp, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "attention-transpose"])
def test_gradient_reaches_every_parameter(name):
    net = UNet(CONFIGS[name], in_channels=3, out_channels=2, label_dim=5, time_input=True)
    _perturb(net)
    x, label = _inputs(2, 3, 8, 8, 5)
    net(x, label, torch.rand(2)).square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().max().item() == 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_overfit_one_to_many_pairs_by_label():
    # The lifting mechanism in miniature (seed 001, eq. 6): four pairs share one input frame x but have
    # different targets; only the labels tell them apart. A map of x alone can at best predict the mean
    # target, with loss = the targets' variance around their mean; the labelled map must beat that by far.
    torch.manual_seed(0)  # the network's initial weights
    g = torch.Generator().manual_seed(11)
    net = UNet(TINY, in_channels=2, out_channels=1, label_dim=16)
    x = torch.randn(1, 2, 8, 8, generator=g).expand(4, -1, -1, -1)
    labels = torch.randn(4, 16, generator=g)
    y = torch.randn(4, 1, 8, 8, generator=g)
    mean_collapse_loss = (y - y.mean(0, keepdim=True)).square().mean().item()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(100):
        loss = (net(x, labels) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = (net(x, labels) - y).square().mean().item()
    assert final < 0.01 * mean_collapse_loss, (final, mean_collapse_loss)  # measured: 1e-5 of it
    # Control: one shared label makes the pairs indistinguishable, and the loss stays at the mean collapse.
    for _ in range(30):
        loss = (net(x, labels[:1].expand(4, -1)) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() > 0.99 * mean_collapse_loss


def test_bad_inputs_raise():
    net = UNet(dataclasses.replace(TINY, channel_mults=(1, 2, 2)), in_channels=3, out_channels=1, label_dim=4)
    x, label = _inputs(2, 3, 8, 8, 4)
    with pytest.raises(ValueError, match=r"frames \(B, 3, H, W\)"):
        net(x[:, :2], label)
    with pytest.raises(ValueError, match=r"frames \(B, 3, H, W\)"):
        net(x[0], label)
    with pytest.raises(ValueError, match="not a multiple of 4"):
        net(torch.randn(2, 3, 8, 10), label)
    with pytest.raises(ValueError, match=r"label must have shape \(2, 4\), got None"):
        net(x)
    with pytest.raises(ValueError, match=r"label must have shape \(2, 4\)"):
        net(x, label[:, :3])
    with pytest.raises(ValueError, match="no time input"):
        net(x, label, torch.rand(2))
    unlabelled = UNet(TINY, in_channels=3, out_channels=1, time_input=True)
    with pytest.raises(ValueError, match="no label input"):
        unlabelled(x, label, torch.rand(2))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(2,\)"):
        unlabelled(x, t=torch.rand(3))
    with pytest.raises(ValueError, match="got None"):
        unlabelled(x)
    with pytest.raises(ValueError, match="no interval input"):
        unlabelled(x, t=torch.rand(2), interval=torch.rand(2))
    two_times = UNet(TINY, in_channels=3, out_channels=1, time_input=True, interval_input=True)
    with pytest.raises(ValueError, match=r"interval must be a scalar or have shape \(2,\), got None"):
        two_times(x, t=torch.rand(2))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"groups": 3}, "groups"),
        ({"channel_mults": ()}, "channel_mults"),
        ({"channel_mults": (1, 0)}, "channel_mults"),
        ({"upsample": "bilinear"}, "upsample"),
        ({"attention": True, "heads": 5}, "heads"),
        ({"base_width": 0}, "base_width"),
    ],
)
def test_bad_config_raises(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY, **changes)
    with pytest.raises(ConfigError, match="label_dim"):
        UNet(TINY, in_channels=1, out_channels=1, label_dim=-1)


def test_presets_follow_the_paper():
    # Seed 001 appendix E: medium depths [128, 256, 512], large [128, 256, 512, 1024]; label MLP width 512.
    assert UNET_PRESETS["medium"].widths == (128, 256, 512)
    assert UNET_PRESETS["large"].widths == (128, 256, 512, 1024)
    assert UNetConfig().cond_dim == 512
