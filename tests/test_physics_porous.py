"""Two-phase porous flow (seed 001 appendix D.2): TPFA pressure, conservation, bounds, permeability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.gaussian_process.kernels import Matern

from tempoflow.data.physics.common import output_times, trajectory_generators
from tempoflow.data.physics.permeability import MaternField, matern_covariance, sample_log_permeability
from tempoflow.data.physics.porous import (
    F_PRIME_MARGIN,
    POROUS_STREAM,
    PorousConfig,
    flux_divergence,
    fractional_flow,
    max_fractional_flow_slope,
    simulate_porous,
    solve_porous,
    solve_pressure,
    well_rates,
)

F64 = torch.float64


def _log_k(n: int, size: int, seed: int = 0, **kw) -> torch.Tensor:
    return sample_log_permeability(trajectory_generators(POROUS_STREAM, seed, 0, n), size, MaternField(**kw))


def _dense_tpfa_reference(kl: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Reference: the TPFA matrix assembled cell by cell with explicit loops, the producer's (last
    cell's) pressure fixed to 0 by removing its row and column, solved densely."""
    h, w = kl.shape
    a = np.zeros((h * w, h * w))
    for i in range(h):
        for j in range(w):
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                ni, nj = i + di, j + dj
                if 0 <= ni < h and 0 <= nj < w:
                    t = 2.0 / (1.0 / kl[i, j] + 1.0 / kl[ni, nj])
                    a[i * w + j, i * w + j] += t
                    a[i * w + j, ni * w + nj] -= t
    p = np.zeros(h * w)
    p[:-1] = np.linalg.solve(a[:-1, :-1], q.reshape(-1)[:-1])
    return p.reshape(h, w)


def test_pressure_matches_dense_loop_assembly():
    size = 5
    conductivity = torch.exp(_log_k(2, size, seed=1, length_scale=0.3))
    q = well_rates(size, 1.0)
    pressure = solve_pressure(conductivity, q)
    for b in range(2):
        expected = _dense_tpfa_reference(conductivity[b].numpy(), q.numpy())
        np.testing.assert_allclose(
            pressure.p[b].numpy(), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max()
        )


def test_pressure_residual_is_small_in_rough_media():
    # Reference: mass balance per cell, net Darcy outflow = q (the equation the solve must satisfy),
    # here with the paper's σ = 3 (permeability contrast ~e^±9).
    size = 16
    conductivity = torch.exp(_log_k(3, size, seed=2))
    assert conductivity.max() / conductivity.min() > 1e5
    q = well_rates(size, 1.0)
    pressure = solve_pressure(conductivity, q)
    residual = flux_divergence(pressure.flux_x, pressure.flux_y) - q
    assert residual.abs().max() < 1e-9
    # The pinned producer is at 0 up to roundoff of the largest pressure.
    assert (pressure.p[:, -1, -1].abs() < 1e-12 * pressure.p.abs().amax((1, 2))).all()


def test_water_volume_equals_time_integral_of_source():
    # Reference: conservation, pv Σ s(t) + produced water(t) = rate · t (water in = water held + out).
    size, rate = 16, 1.5
    cfg = PorousConfig(rate=rate, t_end=0.7)
    sol = solve_porous(_log_k(3, size, seed=3), output_times(0.7, 14), cfg)
    held = sol.saturation.sum((2, 3)) * cfg.porosity / size**2  # (M, T)
    torch.testing.assert_close(held + sol.produced_water, rate * sol.times.expand(3, 14), atol=1e-12, rtol=0)
    assert (sol.produced_water[:, -1] > 1e-3).all()  # breakthrough: the production term is exercised
    assert (sol.produced_water[:, 0] < 1e-12).all()  # none before the front reaches the producer


@pytest.mark.parametrize("cfl", [0.5, 1.0])
def test_saturation_stays_in_unit_interval(cfl):
    # Reference: the monotonicity bound of the upwind scheme (max principle); cfl = 1 is the limit.
    cfg = PorousConfig(cfl=cfl, mu_o=4.0)
    sol = solve_porous(_log_k(3, 16, seed=4), output_times(0.7, 7), cfg)
    assert sol.saturation.min() >= 0.0
    assert sol.saturation.max() <= 1.0
    assert sol.saturation[:, -1, 0, 0].min() > 0.5  # water has filled the injector cell


def test_homogeneous_medium_is_symmetric_about_the_diagonal():
    # Reference: the quarter five-spot with constant K is symmetric under transposition (x ↔ y).
    cfg = PorousConfig(permeability=MaternField(std=0.0, nugget=0.0))
    sol = solve_porous(_log_k(1, 12, std=0.0, nugget=0.0), output_times(0.7, 5), cfg)
    torch.testing.assert_close(sol.saturation, sol.saturation.transpose(-1, -2), atol=1e-12, rtol=0)
    assert sol.saturation[0, 2].max() > 0.5 and sol.saturation[0, 2].min() == 0.0  # a front, not a blur


def test_fractional_flow_slope():
    # References: closed form max f' = 2 at s = 1/2 for equal viscosities; central differences otherwise.
    assert max_fractional_flow_slope(1.0, 1.0) == pytest.approx(2.0 * F_PRIME_MARGIN, rel=1e-6)
    s = torch.linspace(0, 1, 20001, dtype=F64)
    f = fractional_flow(s, 1.0, 5.0)
    fd = (f[2:] - f[:-2]) / (s[2] - s[0])
    assert max_fractional_flow_slope(1.0, 5.0) == pytest.approx(F_PRIME_MARGIN * float(fd.max()), rel=1e-6)


def test_permeability_matches_matern_covariance():
    # Reference: scikit-learn's Matern kernel (√(2ν) r/ℓ convention); var log K = σ² (1 + ε²).
    size, n, field = 32, 200, MaternField()
    log_k = _log_k(n, size, seed=5)
    lags = [0, 1, 2, 4, 8]
    kernel = Matern(length_scale=field.length_scale, nu=field.nu)
    expected = (
        field.std**2 * (1 + field.nugget**2) * kernel(np.zeros((1, 1)), np.array(lags)[:, None] / size)[0]
    )
    np.testing.assert_allclose(
        matern_covariance(np.array(lags) / size, field.std, field.length_scale, field.nu)
        * (1 + field.nugget**2),
        expected,
        rtol=1e-10,
    )
    centred = log_k - field.mean
    for lag, target in zip(lags, expected):
        # Per-field estimates are independent across fields: their spread gives the standard error.
        per_field = (centred[:, :, : size - lag] * centred[:, :, lag:]).mean((1, 2))
        se = per_field.std().item() / math.sqrt(n)
        assert abs(per_field.mean().item() - target) < 5 * se, (lag, per_field.mean().item(), target, se)
    assert abs(log_k.var().item() / (field.std**2 * (1 + field.nugget**2)) - 1) < 0.1


def test_simulate_shapes_determinism_and_channels():
    cfg = PorousConfig(t_end=0.35, pressure_dt=0.035)
    a = simulate_porous(3, 12, 5, seed=7, cfg=cfg)
    assert a.shape == (3, 5, 1, 12, 12) and a.dtype == torch.float32
    b = simulate_porous(3, 12, 5, seed=7, cfg=PorousConfig(t_end=0.35, pressure_dt=0.035, chunk=2))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # other chunking: the same trajectories
    c = simulate_porous(3, 12, 5, seed=8, cfg=cfg)
    assert (c - a).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3  # other seed, other media
    assert (a[0] - a[1]).abs().max() > 1e-3
    both = simulate_porous(
        2, 12, 5, seed=7, cfg=PorousConfig(t_end=0.35, pressure_dt=0.035, with_pressure=True)
    )
    assert both.shape == (2, 5, 2, 12, 12)
    torch.testing.assert_close(both[:, :, :1], a[:2], atol=1e-6, rtol=0)
    assert (both[:, :, 1, 0, 0] > 0).all()  # injector pressure above the pinned producer's 0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="sum to zero"):
        solve_pressure(torch.ones(1, 4, 4, dtype=F64), torch.ones(4, 4, dtype=F64))
    with pytest.raises(ValueError, match="porosity"):
        PorousConfig(porosity=0.0)
    with pytest.raises(ValueError, match="length_scale"):
        MaternField(length_scale=-1.0)
    with pytest.raises(ValueError, match="size"):
        simulate_porous(1, 1, 3, seed=0)
