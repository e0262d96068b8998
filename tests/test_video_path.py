"""The VLFM video latent path ψ_t = σ_t z + (1 − e^{−αt}) μ̄(t) (VLFM §3.2–3.3, DESIGN §4).

References: exact identities (ψ_0 = z, σ at frame times, the paper's Theorem 3.1 velocity), autograd
for σ', central finite differences for μ' and dψ/dt, and a known polynomial for the path centre.
"""

from __future__ import annotations

import math

import pytest
import torch

from tempoflow.flows.legendre import legs_projection, reconstruct
from tempoflow.flows.video_path import VideoLatentPath, VideoPathSample

F64 = torch.float64
SCHEDULES = ["renoise", "decay"]


def _coefficients(B: int = 3, d: int = 4, s: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, d, s, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_psi_0_is_the_noise(schedule):
    # Exact: σ_0 = 1 and μ_0 = (1 − e^0) μ̄(0) = 0, although μ̄(0) = H g(0) ≠ 0.
    path = VideoLatentPath(schedule)
    H = _coefficients()
    z = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    T = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    ps = path.sample(H, z, torch.zeros(3, dtype=F64), T, N=8)
    assert isinstance(ps, VideoPathSample)
    assert torch.equal(ps.psi_t, z)
    assert float(reconstruct(H, torch.zeros(1, dtype=F64), T).abs().max()) > 0.1


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_d_sigma_matches_autograd(schedule):
    # Reference: torch.autograd of σ_t with respect to t.
    path = VideoLatentPath(schedule, sigma_min=0.02, alpha=7.0)
    t = torch.linspace(0, 1.5, 41, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(path.sigma(t, 1.2, 9).sum(), t)
    torch.testing.assert_close(path.d_sigma(t.detach(), 1.2, 9), grad, atol=1e-12, rtol=1e-12)


def test_d_mean_matches_finite_differences():
    # Reference: central differences of mean(); O(eps²) accurate in float64.
    path = VideoLatentPath()
    H = _coefficients()
    T = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    t = torch.linspace(0.0, 2.5, 31, dtype=F64)
    eps = 1e-6
    fd = (path.mean(H, t + eps, T) - path.mean(H, t - eps, T)) / (2 * eps)
    got = path.d_mean(H, t, T)
    assert got.shape == (3, 31, 4)
    torch.testing.assert_close(got, fd, atol=1e-5, rtol=1e-7)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_target_is_time_derivative_of_psi(schedule):
    # Reference: central differences of ψ_t for fixed (H, z), per-video times and durations.
    path = VideoLatentPath(schedule)
    H = _coefficients(B=4)
    z = torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    T = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=F64)
    t = torch.tensor([0.03, 0.41, 1.77, 1.2], dtype=F64)
    eps = 1e-6
    fd = (path.sample(H, z, t + eps, T, 16).psi_t - path.sample(H, z, t - eps, T, 16).psi_t) / (2 * eps)
    torch.testing.assert_close(path.sample(H, z, t, T, 16).d_psi_t, fd, atol=1e-5, rtol=1e-7)


def test_paper_theorem_3_1_velocity():
    # Exact: the conditional velocity is σ'/σ (ψ − μ) + μ' (paper Thm 3.1, with ψ in place of z).
    path = VideoLatentPath()
    H = _coefficients()
    z = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(3))
    t, T, N = torch.tensor([0.1, 0.33, 0.9], dtype=F64), 1.0, 12
    ps = path.sample(H, z, t, T, N)
    mu = path.mean(H, t.unsqueeze(-1), T).squeeze(-2)
    d_mu = path.d_mean(H, t.unsqueeze(-1), T).squeeze(-2)
    ratio = (path.d_sigma(t, T, N) / path.sigma(t, T, N)).unsqueeze(-1)
    torch.testing.assert_close(ps.d_psi_t, ratio * (ps.psi_t - mu) + d_mu, atol=1e-12, rtol=1e-12)


def test_renoise_at_frame_times_and_between():
    # Exact: sin²(π N t / T) = 0 at t_k = k T / N and 1 half-way between frames.
    sigma_min, alpha, T, N = 0.01, 10.0, 2.0, 16
    renoise, decay = VideoLatentPath("renoise"), VideoLatentPath("decay")
    t_k = torch.arange(0, N + 1, dtype=F64) * T / N
    expected = (1 - sigma_min) * torch.exp(-alpha * t_k) + sigma_min
    torch.testing.assert_close(renoise.sigma(t_k, T, N), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(decay.sigma(t_k, T, N), expected, atol=1e-15, rtol=0)
    # σ only reaches σ_min at the frames up to e^{−αt}: 0.99 e^{−1.25} ≈ 0.28 more at frame 1.
    assert float(renoise.sigma(t_k[1:2], T, N)) == pytest.approx(sigma_min + 0.99 * math.exp(-1.25))
    t_mid = t_k[:-1] + 0.5 * T / N
    torch.testing.assert_close(
        renoise.sigma(t_mid, T, N), decay.sigma(t_mid, T, N) + (1 - sigma_min), atol=1e-12, rtol=0
    )


def test_mean_tends_to_polynomial_signal():
    # Reference: the polynomial whose frames gave H (lstsq reproduces it exactly), so the centre is
    # exactly (1 − e^{−αt}) p(t), within e^{−αt}|p| ≤ 1e-7 of p for t ≥ 0.6 s with α = 30.
    T, N, s = 1.5, 20, 5
    coeffs = torch.randn(s, 3, dtype=F64, generator=torch.Generator().manual_seed(4))

    def poly(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([(t / T) ** j for j in range(s)], dim=-1) @ coeffs

    H = legs_projection(poly(torch.arange(1, N + 1, dtype=F64) * T / N), s, "lstsq").unsqueeze(0)  # (1, 3, s)
    path = VideoLatentPath(alpha=30.0)
    t = torch.linspace(0, 2 * T, 61, dtype=F64)
    mean = path.mean(H, t, T)[0]  # (61, 3)
    torch.testing.assert_close(mean, (1 - torch.exp(-30.0 * t)).unsqueeze(-1) * poly(t), atol=1e-9, rtol=0)
    late = t >= 0.6
    assert float((mean[late] - poly(t[late])).abs().max()) < 1e-6 * float(poly(t).abs().max())


def test_scalar_and_per_video_durations_agree():
    path = VideoLatentPath()
    H = _coefficients()
    z = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.2, 0.5, 0.8], dtype=F64)
    a = path.sample(H, z, t, 1.25, 10)
    b = path.sample(H, z, t, torch.full((3,), 1.25, dtype=F64), 10)
    torch.testing.assert_close(a.psi_t, b.psi_t, atol=0, rtol=0)
    torch.testing.assert_close(a.d_psi_t, b.d_psi_t, atol=0, rtol=0)
    assert a.psi_t.shape == a.d_psi_t.shape == (3, 4)
    assert path.mean(H, torch.linspace(0, 1, 7, dtype=F64), 1.25).shape == (3, 7, 4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p, H, z: VideoLatentPath("cosine"), "unknown sigma schedule 'cosine'"),
        (lambda p, H, z: VideoLatentPath(sigma_min=0.0), "sigma_min"),
        (lambda p, H, z: VideoLatentPath(alpha=-1.0), "alpha"),
        (
            lambda p, H, z: p.sample(H[0], z, torch.zeros(3), 1.0, 4),
            r"H must be a float tensor of shape \(B, d, s\)",
        ),
        (lambda p, H, z: p.sample(H, z[:2], torch.zeros(3), 1.0, 4), r"z must have shape \(3, 4\)"),
        (lambda p, H, z: p.sample(H, z, torch.zeros(2), 1.0, 4), r"t must be a float tensor of shape \(3,\)"),
        (lambda p, H, z: p.sample(H, z, torch.zeros(3), 1.0, 0), "N must be an integer >= 1, got 0"),
        (lambda p, H, z: p.sample(H, z, torch.zeros(3), -2.0, 4), "T must be a positive"),
        (lambda p, H, z: p.sample(H, z, torch.zeros(3), torch.ones(2), 4), r"tensor of shape \(3,\)"),
        (lambda p, H, z: p.mean(H, torch.zeros(5), torch.zeros(3)), "T must be positive"),
    ],
)
def test_bad_input_raises(call, match):
    path, H, z = VideoLatentPath(), torch.zeros(3, 4, 2), torch.zeros(3, 4)
    with pytest.raises(ValueError, match=match):
        call(path, H, z)


def test_held_trajectory_before_the_first_frame():
    # Reference: legendre.reconstruct at the first frame time T/N (constant before it) and
    # central finite differences of mean() away from the kink at T/N.
    path = VideoLatentPath(hold_first_frame=True)
    H = _coefficients()
    T = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    N = 8
    t = torch.linspace(0.01, 2.5, 61, dtype=F64)  # t > 0: the ramp 1 − e^{−αt} is divided out below
    t = t[((t[None] - T[:, None] / N).abs() > 1e-3).all(0)]  # off every video's kink
    first = T / N
    mean = path.mean(H, t, T, N)  # (3, M, 4)
    ramp = (1 - torch.exp(-path.alpha * t))[None, :, None]
    for b in range(3):
        before, after = t < first[b], t >= first[b]
        held = reconstruct(H[b : b + 1], first[b : b + 1], T[b])[0]  # (1, 4)
        torch.testing.assert_close(mean[b, before] / ramp[0, before], held.expand(int(before.sum()), -1))
        torch.testing.assert_close(mean[b, after], (ramp * reconstruct(H, t, T))[b, after])
    eps = 1e-6
    fd = (path.mean(H, t + eps, T, N) - path.mean(H, t - eps, T, N)) / (2 * eps)
    torch.testing.assert_close(path.d_mean(H, t, T, N), fd, atol=1e-5, rtol=1e-7)
    z = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(path.sample(H, z, torch.zeros(3, dtype=F64), T, N).psi_t, z)  # ψ_0 = z still
    with pytest.raises(ValueError, match="number of frames"):
        path.mean(H, t, T)


def test_data_step_moves_an_exact_prediction_along_the_path():
    """Closed form: with μ̄(t) = a + b t predicted exactly, the deterministic step maps
    ψ_t = σ_t z + (1 − e^{−αt}) μ̄(t) to σ_{t+h} z + (1 − e^{−α(t+h)}) μ̄(t+h); the fresh-noise step keeps the
    mean and has variance σ²_{t+h} around it (Monte Carlo, 20,000 draws)."""
    path = VideoLatentPath(alpha=3.0)
    gen = torch.Generator().manual_seed(0)
    a, b, z = (torch.randn(20_000, dtype=torch.float64, generator=gen) for _ in range(3))
    t, t_next, s_t, s_next = 0.3, 0.35, 0.2, 0.5

    def psi(time, sigma):
        return sigma * z + (1 - math.exp(-3.0 * time)) * (a + b * time)

    step = path.data_step(psi(t, s_t), a + b * t, b, t, t_next, s_t, s_next)
    assert torch.allclose(step, psi(t_next, s_next), atol=1e-12)
    noise = torch.randn(z.shape, dtype=torch.float64, generator=gen)
    fresh = path.data_step(psi(t, s_t), a + b * t, b, t, t_next, s_t, s_next, fresh=noise)
    around = fresh - (1 - math.exp(-3.0 * t_next)) * (a + b * t_next)
    assert abs(float(around.mean())) < 0.02 and float(around.std()) == pytest.approx(s_next, rel=0.02)
    falling = path.data_step(psi(t, s_next), a + b * t, b, t, t_next, s_next, s_t, fresh=noise)  # σ falls:
    assert torch.allclose(falling, psi(t_next, s_t), atol=1e-12)  # the noise is not used
