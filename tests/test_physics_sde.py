"""Blob with an Ornstein–Uhlenbeck velocity: centre statistics against the SDE's closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from tempoflow.data import physics
from tempoflow.data.physics.common import output_times, trajectory_generators
from tempoflow.data.physics.sde import (
    SDE_STREAM,
    SDEConfig,
    ou_moments,
    render_blobs,
    simulate_sde,
    solve_sde,
)
from tempoflow.errors import DataError

F64 = torch.float64


@pytest.mark.parametrize("theta, sigma", [(1.0, 1.0), (3.0, 0.5)])
def test_ou_moments_match_quadrature(theta, sigma):
    # Reference: the Itô isometry by numerical quadrature (scipy.integrate.quad), from
    # X_t − x_0 = ∫ σ (1 − e^{−θ(t−s)})/θ dW_s and V_t = ∫ σ e^{−θ(t−s)} dW_s.
    t = 1.7
    var_x = quad(lambda s: (sigma * (1 - math.exp(-theta * (t - s))) / theta) ** 2, 0, t)[0]
    cov = quad(
        lambda s: sigma**2 * (1 - math.exp(-theta * (t - s))) / theta * math.exp(-theta * (t - s)), 0, t
    )[0]
    var_v = quad(lambda s: (sigma * math.exp(-theta * (t - s))) ** 2, 0, t)[0]
    got = ou_moments(torch.tensor(t, dtype=F64), theta, sigma)
    assert float(got.var_x) == pytest.approx(var_x, rel=1e-10)
    assert float(got.cov_xv) == pytest.approx(cov, rel=1e-10)
    assert float(got.var_v) == pytest.approx(var_v, rel=1e-10)


def test_centre_statistics_match_closed_form():
    # Reference: the closed-form Gaussian law of (X_t, V_t) (checked above by quadrature); the sampler
    # composes per-step transitions, so agreement at every stored time tests the composition.
    n, cfg = 20_000, SDEConfig(theta=1.5, sigma=0.8, t_end=3.0)
    sol = solve_sde(trajectory_generators(SDE_STREAM, 0, 0, n), output_times(cfg.t_end, 6), cfg)
    moments = ou_moments(sol.times, cfg.theta, cfg.sigma)  # each (T,)
    x = sol.centres - math.pi  # (n, T, 2), mean 0
    v = sol.velocities
    # Monte Carlo tolerances: 5 standard errors; var of a sample variance is 2σ⁴/n for a Gaussian.
    mean_tol = 5 * moments.var_x.sqrt() / math.sqrt(n)
    assert (x.mean(0).abs() < mean_tol[:, None]).all()
    assert (v.mean(0).abs() < 5 * moments.var_v.sqrt()[:, None] / math.sqrt(n)).all()
    for got, want in ((x.var(0), moments.var_x), (v.var(0), moments.var_v)):
        assert ((got - want[:, None]).abs() < 5 * want[:, None] * math.sqrt(2 / n)).all(), (got, want)
    cov = (x * v).mean(0)
    cov_se = torch.sqrt((moments.var_x * moments.var_v + moments.cov_xv**2) / n)
    assert ((cov - moments.cov_xv[:, None]).abs() < 5 * cov_se[:, None]).all()
    # The two axes are independent.
    assert (x[..., 0] * x[..., 1]).mean(0).abs().max() < 5 * moments.var_x.max() / math.sqrt(n)


def test_rendered_blob_is_centred_and_periodic():
    # Reference: the phase of the first Fourier coefficient of a periodic even bump is its centre
    # (aliasing terms are ~exp(−w²(size)²/2), negligible), including across the wrap at 2π.
    size, width = 32, 0.5
    centres = torch.tensor([[1.0, 2.0], [6.2, 0.05], [-0.3, 7.0]], dtype=F64)  # (3, 2), some off the torus
    frames = render_blobs(centres, size, width).double()  # (3, H, W)
    assert frames.shape == (3, size, size) and frames.max() <= 1 and frames.min() >= 0
    grid = torch.arange(size, dtype=F64) * (2 * math.pi / size)
    phase_y = torch.angle((frames.sum(-1) * torch.exp(1j * grid)).sum(-1))
    phase_x = torch.angle((frames.sum(-2) * torch.exp(1j * grid)).sum(-1))
    recovered = torch.remainder(torch.stack([phase_y, phase_x], -1), 2 * math.pi)
    torch.testing.assert_close(recovered, torch.remainder(centres, 2 * math.pi), atol=1e-8, rtol=0)
    # Closed form at a grid point: a blob centred on one has value 1 there and exp(−h²/2w²) next to it.
    on_grid = render_blobs(torch.tensor([grid[4], grid[9]]), size, width)
    assert on_grid[4, 9] == pytest.approx(1.0)
    assert on_grid[4, 10] == pytest.approx(math.exp(-((2 * math.pi / size) ** 2) / (2 * width**2)), rel=1e-6)


def test_simulate_shape_determinism_and_prefix():
    a = simulate_sde(4, 16, 5, seed=3)
    assert a.shape == (4, 5, 1, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, simulate_sde(4, 16, 5, seed=3))
    assert torch.equal(simulate_sde(2, 16, 5, seed=3), a[:2])  # trajectory i depends only on (seed, i)
    assert (simulate_sde(4, 16, 5, seed=4) - a).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3
    assert (a[0] - a[1]).abs().max() > 1e-3


def test_bad_input_raises():
    with pytest.raises(ValueError, match="theta"):
        SDEConfig(theta=0.0)
    with pytest.raises(ValueError, match="times"):
        solve_sde(trajectory_generators(SDE_STREAM, 0, 0, 1), torch.tensor([1.0, 0.5]), SDEConfig())
    with pytest.raises(ValueError, match="seed"):
        simulate_sde(1, 16, 2, seed=-1)


# --- tempoflow.data.physics: dispatch, cache, dataset (exercised on the fast SDE family) ---------------


def test_simulate_dispatch_and_errors():
    torch.testing.assert_close(
        physics.simulate("sde", 2, 16, 3, seed=1, theta=2.0),
        simulate_sde(2, 16, 3, seed=1, cfg=SDEConfig(theta=2.0)),
        atol=0,
        rtol=0,
    )
    with pytest.raises(ValueError, match="unknown physics kind 'heat'"):
        physics.simulate("heat", 1, 16, 2, seed=0)
    with pytest.raises(ValueError, match="tend"):
        physics.simulate("sde", 1, 16, 2, seed=0, tend=1.0)
    with pytest.raises(ValueError, match="stdev"):
        physics.make_config("porous", permeability={"stdev": 1.0})
    assert physics.make_config("porous", permeability={"std": 1.0}).permeability.std == 1.0
    torch.testing.assert_close(
        physics.simulation_times("wave", 4), torch.tensor([2.0, 4.0, 6.0, 8.0], dtype=F64)
    )


def test_cache_round_trip(tmp_path, monkeypatch):
    first = physics.load_or_simulate("sde", 3, 16, 4, seed=2, cache_dir=tmp_path, sigma=0.7)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [physics.cache_path("sde", 3, 16, 4, 2, tmp_path, sigma=0.7).name]
    assert files[0].name.startswith("sde_n3_s16_t4_seed2_") and files[0].suffix == ".safetensors"

    def fail(*args, **kwargs):
        raise AssertionError("the cached result must be read, not simulated again")

    monkeypatch.setattr(physics, "simulate", fail)
    again = physics.load_or_simulate("sde", 3, 16, 4, seed=2, cache_dir=tmp_path, sigma=0.7)
    assert torch.equal(first, again) and again.dtype == torch.float32
    # Another config value is another file; spelling out a default is the same file.
    assert physics.cache_path("sde", 3, 16, 4, 2, tmp_path, sigma=0.8) != files[0]
    assert physics.cache_path("sde", 3, 16, 4, 2, tmp_path, sigma=0.7, blob_width=0.5) == files[0]  # defaults


def test_corrupt_cache_raises(tmp_path):
    path = physics.cache_path("sde", 2, 16, 3, 0, tmp_path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="unreadable"):
        physics.load_or_simulate("sde", 2, 16, 3, seed=0, cache_dir=tmp_path)


def test_dataset_split_by_trajectory(tmp_path):
    data = physics.make_physics_dataset("sde", 10, 16, 4, seed=5, cache_dir=tmp_path)
    assert data.videos.shape == (10, 4, 1, 16, 16) and len(data) == 10
    torch.testing.assert_close(data.times, torch.tensor([0.5, 1.0, 1.5, 2.0]))  # seconds, t_end = 2
    train, test = data.select("train", 0.3), data.select("test", 0.3)
    assert len(test) == 3 and len(train) == 7
    assert sorted(train.indices.tolist() + test.indices.tolist()) == list(range(10))
    assert torch.equal(test.videos, data.videos[test.indices])
    assert torch.equal(data.select("test", 0.3).indices, test.indices)  # deterministic
    assert not torch.equal(data.select("test", 0.3, split_seed=1).indices, test.indices)
    with pytest.raises(ValueError, match="split"):
        data.select("val")
