"""Wave equation in random media (seed 001 appendix D.1): integrator identities, convergence, media."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import lognorm

from tempoflow.data.physics.common import output_times, trajectory_generators
from tempoflow.data.physics.wave import (
    WAVE_STREAM,
    WaveConfig,
    discrete_energy,
    grid_points,
    initial_bump,
    laplacian,
    sample_speed,
    simulate_wave,
    solve_wave,
)

F64 = torch.float64


def _media(n: int, size: int, seed: int = 0, **kw) -> torch.Tensor:
    return sample_speed(trajectory_generators(WAVE_STREAM, seed, 0, n), size, WaveConfig(**kw))


def test_laplacian_of_trigonometric_polynomial():
    # Reference: closed form Δ cos(k·x) = −|k|² cos(k·x), exact for modes below Nyquist.
    x = grid_points(16)
    u = torch.cos(3 * x[None, :] - 2 * x[:, None]) + torch.sin(5 * x[:, None])
    expected = -13 * torch.cos(3 * x[None, :] - 2 * x[:, None]) - 25 * torch.sin(5 * x[:, None])
    torch.testing.assert_close(laplacian(u), expected, atol=1e-11, rtol=0)


def test_single_fourier_mode_matches_exact_solutions():
    # References: (1) the continuous solution cos(c|k|t) cos(k·x) of u_tt = c²Δu with u_t(0) = 0;
    # (2) the exact Verlet solution cos(nθ) cos(k·x), cos θ = 1 − (ωh)²/2 (the recurrence
    # q_{n+1} − 2q_n + q_{n−1} = −(ωh)² q_n with q_0 = 1, q_1 = cos θ), which it must match to roundoff.
    size, c_value, k = 16, 1.3, (1.0, 2.0)  # k = (k_y, k_x)
    x = grid_points(size)
    mode = torch.cos(k[0] * x[:, None] + k[1] * x[None, :])
    c = torch.full((1, size, size), c_value, dtype=F64)
    times = output_times(2.0, 8)
    substeps = 50
    sol = solve_wave(c, mode, times, substeps=substeps)
    omega, h = c_value * math.hypot(*k), 0.25 / substeps
    theta = math.acos(1 - (omega * h) ** 2 / 2)
    n_steps = torch.arange(1, 9, dtype=F64) * substeps
    discrete = torch.cos(n_steps * theta)[:, None, None] * mode
    torch.testing.assert_close(sol.u[0], discrete, atol=1e-11, rtol=0)
    exact = torch.cos(omega * times)[:, None, None] * mode
    # Verlet's phase error after time t is t ω³ h² / 24 (θ/h = ω + ω³h²/24 + ...).
    phase_error = 2.0 * omega**3 * h**2 / 24
    error = (sol.u[0] - exact).abs().max().item()
    assert error <= 1.1 * phase_error
    assert error > 0.1 * phase_error  # the tolerance is the real error's size, not a loose bound


def test_energy_conserved_for_constant_speed():
    # Reference: for constant c, velocity Verlet with step h conserves E − (h²/8) c² ‖Δu‖² exactly (the
    # modified energy of the harmonic modes) and the plain energy ½‖u_t‖²/c² + ½‖∇u‖² to O((ωh)²).
    size, c_value = 32, 0.8
    c = torch.full((1, size, size), c_value, dtype=F64)
    times = output_times(4.0, 16)
    substeps = 40
    sol = solve_wave(c, initial_bump(size), times, substeps=substeps)
    h = 0.25 / substeps
    modified = discrete_energy(sol.u, sol.u_t, c_value, dt=h)[0]
    plain = discrete_energy(sol.u, sol.u_t, c_value)[0]
    e_0 = discrete_energy(initial_bump(size), torch.zeros(size, size, dtype=F64), c_value, dt=h)
    torch.testing.assert_close(modified, e_0.expand(16), atol=0, rtol=1e-12)
    plain_0 = discrete_energy(initial_bump(size), torch.zeros(size, size, dtype=F64), c_value)
    omega_max = c_value * math.sqrt(2) * size / 2
    assert ((plain - plain_0).abs() / plain_0).max() < (omega_max * h) ** 2 / 8
    assert (plain - plain_0).abs().max() > 0  # the plain energy is not conserved exactly, the other is


def test_modified_energy_conserved_in_random_medium():
    # Reference: the same exact invariant for variable c, ½∫u_t²/c² + ½∫|∇u|² − (h²/8)∫c²(Δu)².
    size = 16
    c = _media(3, size)
    times = output_times(2.0, 8)
    substeps = 60
    sol = solve_wave(c, initial_bump(size), times, substeps=substeps)
    energy = discrete_energy(sol.u, sol.u_t, c[:, None], dt=0.25 / substeps)  # (3, 8)
    e_0 = discrete_energy(initial_bump(size), torch.zeros(size, size, dtype=F64), c, dt=0.25 / substeps)
    torch.testing.assert_close(energy, e_0[:, None].expand(3, 8), atol=0, rtol=1e-12)


def test_second_order_convergence_in_dt():
    # Reference: a run with 32× smaller steps; Verlet is second order, so halving dt quarters the error.
    size = 16
    c = _media(2, size, seed=3)
    u_0 = initial_bump(size, sharpness=4.0)  # smooth enough that the error is in its asymptotic regime
    times = output_times(1.0, 2)
    reference = solve_wave(c, u_0, times, substeps=256).u
    errors = [(solve_wave(c, u_0, times, substeps=s).u - reference).abs().max().item() for s in (8, 16, 32)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(1.9 < p < 2.1 for p in orders), (errors, orders)


def test_cfl_steps_are_stable_and_per_trajectory():
    # Each trajectory's step is cfl · 2/(max c · max|k|); its solution must not depend on its batch mates.
    size = 16
    c = _media(3, size, seed=1)
    times = output_times(8.0, 4)
    both = solve_wave(c, initial_bump(size), times)
    alone = solve_wave(c[1:2], initial_bump(size), times)
    # Batched FFTs may round differently with the batch size, hence roundoff rather than bitwise equality.
    torch.testing.assert_close(both.u[1:2], alone.u, atol=1e-12, rtol=0)
    k_max = math.sqrt(2) * size / 2
    expected = torch.ceil(2.0 / (0.5 * 2 / (c.amax((1, 2)) * k_max))).long()
    assert torch.equal(both.substeps[:, 0], expected)
    assert both.u.abs().max() < 2  # bounded (the bump's energy is spread, not amplified)


def test_medium_pointwise_lognormal():
    # Reference: ln c(x) ~ N(ln c_median, log_std²) at every point (closed form of the construction).
    cfg = {"c_median": 1.5, "log_std": 0.4}
    log_c = torch.log(_media(400, 16, seed=5, **cfg))  # (400, 16, 16)
    n = log_c.shape[0]
    # Points are correlated, so use the per-point statistics' Monte Carlo error (std/√n) at one point.
    assert abs(log_c[:, 3, 7].mean().item() - math.log(1.5)) < 5 * 0.4 / math.sqrt(n)
    assert abs(log_c[:, 3, 7].std().item() - 0.4) < 5 * 0.4 / math.sqrt(2 * n)
    assert abs(log_c.mean().item() - math.log(1.5)) < 5 * 0.4 / math.sqrt(n)


def test_medium_spectrum_is_lognormal_peaked_at_one():
    # Reference: scipy.stats.lognorm, shape s, scale exp(μ) with μ = ln(peak) + s² (mode = peak).
    # E|ĝ(k)|² ∝ A(|k|)² with A(κ) = pdf(κ); compare shells |k| = 1, √2, 2 against |k| = 1.
    size, s = 16, 0.5
    g = torch.log(_media(300, size, seed=7, spectral_width=s)) / 0.3  # c_median = 1, log_std = 0.3
    power = (torch.fft.fft2(g).abs() ** 2).mean(0)  # (H, W)
    k = torch.fft.fftfreq(size, 1.0 / size, dtype=F64)
    norm = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    pdf = lognorm(s, scale=math.exp(s**2))
    assert pdf.pdf(np.linspace(0.9, 1.1, 21)).argmax() == 10  # the reference density peaks at k = 1
    shell = {kappa: power[(norm - kappa).abs() < 1e-9].mean().item() for kappa in (1.0, math.sqrt(2), 2.0)}
    for kappa in (math.sqrt(2), 2.0):
        expected = (pdf.pdf(kappa) / pdf.pdf(1.0)) ** 2
        # 300 draws × (4 or 8 modes): the shell's mean power has a relative error ≈ 1/√600 ≈ 4%.
        assert shell[kappa] / shell[1.0] == pytest.approx(expected, rel=0.2)
    assert power[norm > 6.5].max() < 1e-20  # nothing above k_cut


def test_simulate_shape_determinism_and_prefix():
    a = simulate_wave(3, 16, 4, seed=11, cfg=WaveConfig(t_end=2.0))
    assert a.shape == (3, 4, 1, 16, 16) and a.dtype == torch.float32
    b = simulate_wave(3, 16, 4, seed=11, cfg=WaveConfig(t_end=2.0, chunk=2))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # same seed, other chunking: same data
    torch.testing.assert_close(
        simulate_wave(1, 16, 4, seed=11, cfg=WaveConfig(t_end=2.0)), a[:1], atol=1e-5, rtol=0
    )
    other = simulate_wave(3, 16, 4, seed=12, cfg=WaveConfig(t_end=2.0))
    assert (other - a).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3  # other seed, other media
    assert (a[0] - a[1]).abs().max() > 1e-3  # trajectories differ: the media differ
    assert not torch.equal(_media(2, 16, seed=11), _media(2, 16, seed=12))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="k_cut"):
        _media(1, 12)  # 12 <= 2 · 6
    with pytest.raises(ValueError, match="cfl"):
        WaveConfig(cfl=1.5)
    with pytest.raises(ValueError, match="times"):
        solve_wave(torch.ones(1, 8, 8, dtype=F64), torch.zeros(8, 8), torch.tensor([0.5, 0.25]))
    with pytest.raises(ValueError, match="n_times"):
        simulate_wave(1, 16, 0, seed=0)
