"""Affine probability paths: marginals, endpoints, velocity targets, conversions (exact answers)."""

import math

import pytest
import torch

from tempoflow.flows.paths import CondOTPath, CosinePath, PathSample, make_path

PATHS = [CondOTPath(0.0), CondOTPath(0.1), CosinePath()]
PATH_IDS = ["condot", "condot-smin0.1", "cosine"]


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_marginal_mean_and_std_over_noise(path):
    # For a fixed data point x_1, x_t over x_0 ~ N(0, I) is N(α_t x_1, σ_t² I).
    n = 200_000
    g = _generator(1)
    x_1 = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64).expand(n, 3)
    x_0 = torch.randn(n, 3, generator=g, dtype=torch.float64)
    for t_value in (0.1, 0.5, 0.9):
        t = torch.full((n,), t_value, dtype=torch.float64)
        ps = path.sample(x_0, x_1, t)
        alpha = path.alpha(torch.tensor(t_value, dtype=torch.float64))
        sigma = path.sigma(torch.tensor(t_value, dtype=torch.float64))
        # Tolerance: 6 Monte Carlo standard errors, σ/√n for the mean (the std's is smaller, σ/√(2n)).
        tol = 6 * float(sigma) / math.sqrt(n)  # ≤ 1.3e-2 here
        torch.testing.assert_close(ps.x_t.mean(0), alpha * x_1[0], atol=tol, rtol=0)
        torch.testing.assert_close(ps.x_t.std(0), sigma.expand(3), atol=tol, rtol=0)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_endpoints(path):
    g = _generator(2)
    x_0 = torch.randn(4, 2, 3, dtype=torch.float64, generator=g)
    x_1 = torch.randn(4, 2, 3, dtype=torch.float64, generator=g)
    at_0 = path.sample(x_0, x_1, torch.zeros(4, dtype=torch.float64))
    at_1 = path.sample(x_0, x_1, torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(at_0.x_t, x_0, atol=1e-15, rtol=0)
    sigma_min = getattr(path, "sigma_min", 0.0)
    torch.testing.assert_close(at_1.x_t, x_1 + sigma_min * x_0, atol=1e-15, rtol=0)
    assert float(path.sigma(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(sigma_min, abs=1e-15)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_velocity_target_is_time_derivative(path):
    # dx_t must equal d/dt x_t; central differences are O(eps²) ≈ 1e-12 accurate in float64.
    g = _generator(3)
    x_0 = torch.randn(5, 3, 4, dtype=torch.float64, generator=g)
    x_1 = torch.randn(5, 3, 4, dtype=torch.float64, generator=g)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)
    eps = 1e-6
    fd = (path.sample(x_0, x_1, t + eps).x_t - path.sample(x_0, x_1, t - eps).x_t) / (2 * eps)
    torch.testing.assert_close(path.sample(x_0, x_1, t).dx_t, fd, atol=1e-8, rtol=0)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_conversions_round_trip(path):
    g = _generator(4)
    x_0 = torch.randn(6, 2, 3, dtype=torch.float64, generator=g)
    x_1 = torch.randn(6, 2, 3, dtype=torch.float64, generator=g)
    t = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.7, 0.99], dtype=torch.float64)
    ps = path.sample(x_0, x_1, t)
    # The true velocity recovers both endpoints ...
    torch.testing.assert_close(path.velocity_to_x1(ps.dx_t, ps.x_t, t), x_1, atol=1e-10, rtol=0)
    torch.testing.assert_close(path.velocity_to_x0(ps.dx_t, ps.x_t, t), x_0, atol=1e-10, rtol=0)
    # ... and any velocity survives velocity -> x_1 -> velocity.
    v = torch.randn(6, 2, 3, dtype=torch.float64, generator=g)
    x1_hat = path.velocity_to_x1(v, ps.x_t, t)
    torch.testing.assert_close(path.x1_to_velocity(x1_hat, ps.x_t, t), v, atol=1e-10, rtol=0)
    # A scalar t works too (what an ODE solver hands to a velocity field).
    t_scalar = torch.tensor(0.4, dtype=torch.float64)
    x_t = path.alpha(t_scalar) * x_1 + path.sigma(t_scalar) * x_0
    torch.testing.assert_close(path.x1_to_velocity(path.velocity_to_x1(v, x_t, t_scalar), x_t, t_scalar), v,
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("sigma_min", [0.0, 1e-4, 0.1])
def test_condot_target_is_literal(sigma_min):
    g = _generator(5)
    x_0 = torch.randn(3, 4, 2, 2, generator=g)
    x_1 = torch.randn(3, 4, 2, 2, generator=g)
    t = torch.rand(3, generator=g)
    ps = CondOTPath(sigma_min).sample(x_0, x_1, t)
    assert isinstance(ps, PathSample)
    assert torch.equal(ps.dx_t, x_1 - (1 - sigma_min) * x_0)
    assert torch.equal(ps.t, t) and ps.x_0 is x_0 and ps.x_1 is x_1
    tt = t.view(3, 1, 1, 1)
    torch.testing.assert_close(ps.x_t, (1 - (1 - sigma_min) * tt) * x_0 + tt * x_1)


def test_cosine_is_variance_preserving():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    path = CosinePath()
    torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))


def test_make_path_and_errors():
    assert isinstance(make_path("condot", 0.01), CondOTPath)
    assert make_path("condot", 0.01).sigma_min == 0.01
    assert isinstance(make_path("cosine", 0.0), CosinePath)
    with pytest.raises(ValueError, match="condot, cosine"):
        make_path("vp", 0.0)
    with pytest.raises(ValueError, match="sigma_min"):
        make_path("cosine", 0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        CondOTPath(1.0)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        CondOTPath().sample(x, x, torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        CondOTPath().sample(x, torch.zeros(2, 4), torch.zeros(2))
