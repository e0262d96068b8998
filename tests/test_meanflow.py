"""Conditional MeanFlow ``meanflow`` (arXiv 2505.13447; DESIGN §5): the (r, t) sampler against order-statistic
closed forms, the JVP target against finite differences and against the exact average velocity of a Gaussian
flow, the loss against hand-computed values, the sampler against the closed-form flow map, and a tiny
train -> eval -> sample run through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.data import load_dataset, video_shape
from tempoflow.data.video_reader import read_video
from tempoflow.methods.meanflow import (
    MeanFlowConfig,
    adaptive_l2,
    average_velocity_target,
    mean_flow_sample,
    sample_times,
)
from tempoflow.methods.rollout import training_pairs
from tempoflow.runs import build_method, initial_frames

from .test_lifting import TINY_PHYSICS, count_calls, randomise


@pytest.fixture
def method(tmp_path):
    """A tiny meanflow on the SDE blob data, with random (non-zero) weights."""

    def make(*overrides: str):
        cfg = load_config(None, [*TINY_PHYSICS, "method=meanflow", "data.name=sde",
                                 f"data.physics.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'run'}",
                                 *overrides])
        m = build_method(cfg)
        randomise(m.net, seed=1)
        return m, cfg

    return make


# ------------------------------------------------------------------------------------------- (r, t) sampler


def test_sample_times_follow_the_order_statistics_of_two_logit_normals():
    """Reference: with F(a) = Φ((logit a − μ)/σ), t = max of two draws has CDF F², r = min has 1 − (1 − F)²
    (order statistics of two independent logit-normals); exactly round(0.75 n) pairs get r = t."""
    cfg = MeanFlowConfig(time_mu=-0.4, time_sigma=1.0, r_equals_t=0.75)
    n = 20_000
    r, t = sample_times(n, cfg, torch.Generator().manual_seed(0), torch.zeros(1, dtype=torch.float64))
    assert r.shape == t.shape == (n,) and bool((r <= t).all()) and 0 < float(r.min()) and float(t.max()) < 1
    equal = r == t
    assert int(equal.sum()) == 15_000

    def cdf(a):
        return stats.norm.cdf((torch.logit(torch.as_tensor(a)).numpy() - cfg.time_mu) / cfg.time_sigma)

    assert stats.kstest(t.numpy(), lambda a: cdf(a) ** 2).pvalue > 1e-3
    assert stats.kstest(r[~equal].numpy(), lambda a: 1 - (1 - cdf(a)) ** 2).pvalue > 1e-3
    again = sample_times(n, cfg, torch.Generator().manual_seed(0), torch.zeros(1, dtype=torch.float64))
    assert torch.equal(again[0], r) and torch.equal(again[1], t)


# ------------------------------------------------------------------- an exact average velocity: Gaussians


class GaussianFlow:
    """The exact fields of ``z_t = (1 − t) x + t ε`` with ``x ~ N(μ, s²)``, ``ε ~ N(0, 1)`` per pixel.

    ``z_t ~ N(m_t, σ_t²)`` with ``m_t = (1 − t) μ`` and ``σ_t² = (1 − t)² s² + t²``; the marginal velocity is
    affine in ``z``, so its flow maps quantiles to quantiles: ``z_r = m_r + (σ_r / σ_t)(z_t − m_t)``. Hence the
    average velocity ``u(z, r, t) = (z − z_r)/(t − r)`` (eq. 3) and ``v(z, t) = −μ + (σ'_t/σ_t)(z − m_t)``,
    ``σ'_t = (t − (1 − t) s²)/σ_t`` in closed form."""

    def __init__(self, mu: torch.Tensor, s: torch.Tensor):
        self.mu, self.s = mu, s  # (C, H, W) each

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return ((1 - t) ** 2 * self.s**2 + t**2).sqrt()

    def u(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r, t = r.view(-1, 1, 1, 1), t.view(-1, 1, 1, 1)
        z_r = (1 - r) * self.mu + self.sigma(r) / self.sigma(t) * (z - (1 - t) * self.mu)
        return (z - z_r) / (t - r)

    def v(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.view(-1, 1, 1, 1)
        d_sigma = (t - (1 - t) * self.s**2) / self.sigma(t)
        return -self.mu + d_sigma / self.sigma(t) * (z - (1 - t) * self.mu)


@pytest.fixture
def gaussian():
    g = torch.Generator().manual_seed(3)
    flow = GaussianFlow(torch.randn(1, 2, 3, generator=g, dtype=torch.float64),
                        0.2 + torch.rand(1, 2, 3, generator=g, dtype=torch.float64))
    return flow, g


def test_jvp_target_of_the_exact_field_is_the_field_itself(gaussian):
    """The MeanFlow identity (eq. 6) holds for the true average velocity: the target ``v − (t − r) d/dt u``
    built by :func:`average_velocity_target` (JVP along (v, 0, 1), eq. 8) from the closed-form ``u`` and the
    marginal ``v`` equals ``u``. A wrong tangent order, sign or factor (t − r) breaks it."""
    flow, g = gaussian
    n = 64
    z = 2 * torch.randn(n, 1, 2, 3, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    r = t * torch.rand(n, generator=g, dtype=torch.float64)
    u, u_tgt = average_velocity_target(flow.u, z, r, t, flow.v(z, t))
    torch.testing.assert_close(u, flow.u(z, r, t), rtol=0, atol=0)
    torch.testing.assert_close(u_tgt, flow.u(z, r, t), rtol=1e-10, atol=1e-10)
    _, wrong = average_velocity_target(flow.u, z, r, t, -flow.v(z, t))  # another direction of motion
    assert (wrong - flow.u(z, r, t)).abs().max() > 1e-2


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_sampler_with_the_exact_field_reproduces_the_data_law(gaussian, steps):
    """Algorithm 2 / eq. 12 with the exact ``u``: ``x = ε − u(ε, 0, 1) = μ + s ε`` in one step, and the same
    point in n steps (the exact jumps compose): the data law N(μ, s²), pushed forward exactly."""
    flow, g = gaussian
    noise = torch.randn(4096, 1, 2, 3, generator=g, dtype=torch.float64)
    x = mean_flow_sample(flow.u, noise, steps)
    torch.testing.assert_close(x, flow.mu + flow.s * noise, rtol=1e-10, atol=1e-10)
    assert (x.mean(0) - flow.mu).abs().max() < 5 * float(flow.s.max()) / math.sqrt(4096)
    assert ((x.std(0) / flow.s) - 1).abs().max() < 0.1


# --------------------------------------------------------------------------------- the network's target


def test_target_matches_finite_differences_through_the_unet(method):
    """Reference: ``v − (t − r) [u(z + εv, r, t + ε) − u(z − εv, r, t − ε)] / 2ε`` (central differences along
    the tangent (v, 0, 1), float64) for ``u_θ(z, r, t | w) = UNet([w, z]; t, t − r)``."""
    m, _ = method()
    m = m.double()
    g = torch.Generator().manual_seed(7)
    window = torch.randn(3, m.window, 8, 8, generator=g, dtype=torch.float64)
    z, v = (torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([0.9, 0.6, 0.35], dtype=torch.float64)
    r = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64)  # the middle pair has r = t: flow matching's target

    def u(z_, r_, t_):
        return m.average_velocity(window, z_, r_, t_)

    u_pred, u_tgt = average_velocity_target(u, z, r, t, v)
    eps = 1e-7
    du_dt = (u(z + eps * v, r, t + eps) - u(z - eps * v, r, t - eps)) / (2 * eps)
    torch.testing.assert_close(u_tgt, v - (t - r).view(-1, 1, 1, 1) * du_dt, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(u_pred, u(z, r, t), rtol=0, atol=0)
    torch.testing.assert_close(u_tgt[1], v[1])
    assert not u_tgt.requires_grad and u_pred.requires_grad


def test_gradient_stops_at_the_target(method):
    """The loss's gradient is that of ``sg(ω) ‖u_θ − sg(u_tgt)‖²`` with ``u_θ`` a plain forward pass (no
    gradient through the JVP): the paper's stop-gradient, so training needs no double backpropagation."""
    m, _ = method()
    g = torch.Generator().manual_seed(2)
    window = torch.randn(4, m.window, 8, 8, generator=g)
    x, noise = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    t, r = torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.2, 0.7, 0.1, 0.0])
    m.mean_flow_loss(window, x, noise, r, t)["loss"].backward()
    jvp_grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    tt = t.view(-1, 1, 1, 1)
    z = (1 - tt) * x + tt * noise
    _, u_tgt = average_velocity_target(lambda *a: m.average_velocity(window, *a), z, r, t, noise - x)
    adaptive_l2(m.average_velocity(window, z, r, t) - u_tgt, 1.0, 1e-3).backward()
    for a, b in zip(jvp_grads, (p.grad for p in m.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_loss_on_tiny_inputs_is_the_hand_computed_value(method):
    """Two one-pixel pairs with ``u(z, r, t) = t z`` (so ``d/dt u = t v + z``), worked by hand:

    pair 1: x = 0.5, ε = 1, t = r = 0.5 -> z = 0.75, v = 0.5, u = 0.375, u_tgt = v = 0.5, Δ = −0.125
    pair 2: x = −1, ε = 2, t = 0.8, r = 0.2 -> z = 1.4, v = 3, u = 1.12, d/dt u = 2.4 + 1.4 = 3.8,
            u_tgt = 3 − 0.6 · 3.8 = 0.72, Δ = 0.4
    loss (p = 1, c = 1e-3) = (0.015625 / 0.016625 + 0.16 / 0.161) / 2;  mse = (0.015625 + 0.16) / 2."""
    m, _ = method()
    m.average_velocity = lambda window, z, r, t: t.view(-1, 1, 1, 1) * z
    x, noise = torch.tensor([0.5, -1.0]).view(2, 1, 1, 1), torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
    t, r = torch.tensor([0.5, 0.8]), torch.tensor([0.5, 0.2])
    out = m.mean_flow_loss(torch.zeros(2, m.window, 1, 1), x.double(), noise.double(), r.double(), t.double())
    assert out["loss"].item() == pytest.approx((0.015625 / 0.016625 + 0.16 / 0.161) / 2, rel=1e-6)
    assert out["mse"].item() == pytest.approx((0.015625 + 0.16) / 2, rel=1e-6)


def test_adaptive_weighting_by_hand():
    """§4.3: ``mean_i ‖Δ_i‖² / (‖Δ_i‖² + c)^p`` with ‖Δ‖² = 1 and 4; its gradient ``2 ω_i Δ_i / N``."""
    delta = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    loss = adaptive_l2(delta, 1.0, 1e-3)
    assert loss.item() == pytest.approx((1 / 1.001 + 4 / 4.001) / 2, rel=1e-6)
    loss.backward()
    torch.testing.assert_close(delta.grad, torch.tensor([[1 / 1.001, 0.0], [0.0, 2 / 4.001]]))
    assert adaptive_l2(delta, 0.0, 1e-3).item() == pytest.approx(2.5)  # p = 0: squared L2
    assert adaptive_l2(delta, 0.5, 1e-3).item() == pytest.approx((1 / 1.001**0.5 + 4 / 4.001**0.5) / 2, rel=1e-6)


def test_loss_replays_its_draws(method):
    """``loss(batch, generator)`` is Algorithm 1 on the generator's draws in the documented order: target
    frames, ε, then (r, t)."""
    m, cfg = method()
    videos = load_dataset(cfg.data, "train").videos[:3]
    batch = {"video": videos, "index": torch.arange(3)}
    got = m.loss(batch, torch.Generator().manual_seed(9))
    replay = torch.Generator().manual_seed(9)
    pairs = training_pairs(videos, batch["index"], m.window, cfg.lifting.pairs_per_video, replay)
    noise = torch.randn(pairs.target.shape, generator=replay)
    r, t = sample_times(pairs.target.shape[0], m.cfg, replay, pairs.target)
    want = m.mean_flow_loss(pairs.window, pairs.target, noise, r, t)
    assert got["loss"].item() == pytest.approx(want["loss"].item(), rel=1e-6)
    assert got["mse"].item() == pytest.approx(want["mse"].item(), rel=1e-6)


# ----------------------------------------------------------------------------------- roll-out and the CLI


def test_network_calls_per_frame(method):
    """``meanflow.sample_steps`` calls per frame, batched over samples; ``sample(sample_steps=n)`` overrides."""
    m, cfg = method("meanflow.sample_steps=2")
    calls = count_calls(m.net)
    T, C, H, W = video_shape(cfg.data)
    out = m.sample(initial_frames(cfg, 3), generator=torch.Generator().manual_seed(0))
    assert out.video.shape == (3, T, C, H, W) and out.nfe == calls[0] == (T - 1) * 2
    assert out.settings["sample_steps"] == 2
    calls[0] = 0
    out = m.sample(initial_frames(cfg, 2), generator=torch.Generator().manual_seed(0), sample_steps=3)
    assert out.nfe == calls[0] == (T - 1) * 3
    window = torch.rand(1, m.window, H, W).expand(4, -1, -1, -1)  # four identical windows
    frame = m.next_frame(window, torch.Generator().manual_seed(0)).frame
    assert (frame[0] - frame[1]).abs().max() > 1e-3  # fresh noise per sample: different frames


def test_train_eval_sample_through_the_cli(tmp_path):
    run = tmp_path / "run"
    overrides = [*TINY_PHYSICS, "data.name=sde", f"data.physics.cache_dir={tmp_path / 'cache'}", f"out_dir={run}"]
    assert main(["train", "wave_meanflow", *overrides]) == 0
    ev = tmp_path / "eval"
    assert main(["eval", str(run), "meanflow.sample_steps=2", "--out", str(ev), "--device", "cpu",
                 "--config", "eval_trajectories"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    assert m["trajectories"] == 4 and m["frames"] == 7 and m["nfe_per_frame"] == 2 and m["sample_steps"] == 2
    assert math.isfinite(m["wct"]) and m["wim"] >= 0
    assert load_file(str(ev / "samples.safetensors"))["trajectories"].shape == (4, 7, 1, 8, 8)
    out = tmp_path / "s.gif"
    assert main(["sample", str(run), "--num", "3", "--frames", "9", "--out", str(out), "--scale", "1",
                 "--device", "cpu"]) == 0
    assert read_video(out).frames.shape[0] == 9
