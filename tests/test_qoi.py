"""Trajectory quantities of interest and their 1-D Wasserstein distances (seed 001, appendix D.4)."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from tempoflow.metrics.qoi import (
    crossing_time,
    crossing_time_w2,
    mass,
    mass_w2,
    memorisation_report,
    wasserstein_1d,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pot_w(a: np.ndarray, b: np.ndarray, p: float) -> float:
    """Reference: POT's quantile-function W_p^p (equal weights), rooted."""
    return float(ot.wasserstein_1d(a, b, p=p)) ** (1.0 / p)


# --- wasserstein_1d -------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("n, m", [(1, 1), (6, 6), (50, 50), (7, 3), (1, 5), (100, 37), (64, 96)])
def test_wasserstein_1d_matches_pot(n, m, p):
    # Reference: POT's ot.wasserstein_1d, an independent implementation of the same integral.
    g = _rng(n * 1000 + m)
    a = g.normal(size=n)
    b = 1.5 * g.standard_t(3, size=m) + 0.3
    ours = wasserstein_1d(torch.from_numpy(a), torch.from_numpy(b), p=p)
    assert ours.dtype == torch.float64 and ours.shape == ()
    assert float(ours) == pytest.approx(_pot_w(a, b, p), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n, m", [(7, 3), (12, 8), (5, 11)])
def test_wasserstein_1d_unequal_counts_by_replication(n, m):
    # Reference: brute force. Repeating every sample of a m times and of b n times gives two equal-count
    # samples (n m each) with the same empirical distributions, whose W_p^p is the mean over sorted pairs.
    g = _rng(3)
    a, b = g.normal(size=n), g.exponential(size=m)
    a_rep, b_rep = np.sort(np.repeat(a, m)), np.sort(np.repeat(b, n))
    for p in (1.0, 2.0):
        brute = np.mean(np.abs(a_rep - b_rep) ** p) ** (1 / p)
        assert float(wasserstein_1d(torch.from_numpy(a), torch.from_numpy(b), p=p)) == pytest.approx(
            brute, rel=1e-12
        )


def test_wasserstein_1d_shift_is_exact():
    # Closed form: W_p(μ, μ(· − s)) = |s| for every p, also for unequal counts of the same distribution
    # (a repeated 3 times has the same empirical measure as a).
    a = torch.from_numpy(_rng(4).normal(size=40))
    for shift in (0.0, 0.25, -3.0):
        for p in (1.0, 2.0, 4.0):
            assert float(wasserstein_1d(a, a + shift, p=p)) == pytest.approx(abs(shift), abs=1e-12)
            assert float(wasserstein_1d(a, a.repeat(3) + shift, p=p)) == pytest.approx(abs(shift), abs=1e-12)
    # Order of the samples does not matter.
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert float(wasserstein_1d(a[perm], a)) == 0.0


def test_wasserstein_1d_gaussians_closed_form():
    # Closed form: W_2(N(μ1, σ1²), N(μ2, σ2²))² = (μ1 − μ2)² + (σ1 − σ2)² = 0.25 + 0.25 here, W_2 = 0.7071.
    # Finite-sample error of the empirical W_2 for 2e5 and 1.5e5 samples is ~1e-2; loose tolerance.
    g = torch.Generator().manual_seed(5)
    a = 1.0 + 1.0 * torch.randn(200_000, generator=g, dtype=torch.float64)
    b = 0.5 + 1.5 * torch.randn(150_000, generator=g, dtype=torch.float64)
    assert float(wasserstein_1d(a, b)) == pytest.approx(math.sqrt(0.5), abs=2e-2)


def test_wasserstein_1d_batched_matches_loop():
    # Reference: the unbatched call, one row at a time; b's leading dim broadcasts.
    g = torch.Generator().manual_seed(6)
    a = torch.randn(3, 4, 10, generator=g)
    b = torch.randn(4, 7, generator=g) * 2
    out = wasserstein_1d(a, b)
    assert out.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert float(out[i, j]) == pytest.approx(float(wasserstein_1d(a[i, j], b[j])), rel=1e-12)


def test_wasserstein_1d_bad_input_raises():
    x = torch.randn(5)
    with pytest.raises(ValueError, match="non-finite"):
        wasserstein_1d(x, torch.tensor([1.0, math.inf]))
    with pytest.raises(ValueError, match="non-finite"):
        wasserstein_1d(torch.tensor([math.nan]), x)
    with pytest.raises(ValueError, match="no samples"):
        wasserstein_1d(x, torch.zeros(0))
    with pytest.raises(ValueError, match="p must be"):
        wasserstein_1d(x, x, p=0.5)
    with pytest.raises(ValueError, match="float tensor"):
        wasserstein_1d(torch.arange(5), x)
    with pytest.raises(ValueError, match="broadcast"):
        wasserstein_1d(torch.randn(2, 5), torch.randn(3, 5))


# --- crossing_time --------------------------------------------------------------------------------------


def _field_from_region_values(
    values: torch.Tensor, region: torch.Tensor, outside: float = 100.0
) -> torch.Tensor:
    """Fields ``(M, T, 1, H, W)`` equal to ``values[m, t]`` on the region and a large value elsewhere."""
    M, T = values.shape
    u = torch.full((M, T, 1, *region.shape), outside, dtype=torch.float64)
    u[..., region] = values[:, :, None, None].expand(M, T, 1, int(region.sum())).to(torch.float64)
    return u


def test_crossing_time_known_frames():
    # Exact answer: region values are built by hand; points outside the region (value 100) must be ignored.
    region = torch.zeros(4, 5, dtype=torch.bool)
    region[1:3, 2:4] = True
    times = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    values = torch.tensor(
        [
            [0.0, 0.5, 1.5, 2.0, 0.0],  # crosses at frame 2
            [0.0, 1.0, 1.0, 0.9, 0.2],  # touches c = 1 but never exceeds it strictly: never crosses
            [3.0, 0.0, 0.0, 0.0, 0.0],  # crosses at the first frame
            [0.0, 0.0, 0.0, 0.0, 1.25],  # crosses at the last frame
        ]
    )
    u = _field_from_region_values(values, region)
    tau = crossing_time(u, times, threshold=1.0, region=region, reduce="mean")
    assert tau.shape == (4,)
    assert tau.tolist() == [0.3, math.inf, 0.1, 0.5]
    # Linear interpolation: 0.5 -> 1.5 crosses 1 halfway (0.25 s); 0 -> 1.25 crosses at 0.8 of the step.
    tau_lin = crossing_time(u, times, threshold=1.0, region=region, reduce="mean", interpolate=True)
    torch.testing.assert_close(
        tau_lin, torch.tensor([0.25, math.inf, 0.1, 0.48], dtype=torch.float64), atol=1e-12, rtol=0
    )


def test_crossing_time_reductions_and_channels():
    # Exact answer: two region points ramp at different speeds; "max" crosses when the fast one does,
    # "min" when the slow one does, "mean" when their average does. Channel 1 is all zeros (never).
    T = 6
    times = torch.arange(T, dtype=torch.float32)  # seconds 0..5
    region = torch.tensor([[True, True, False]])
    u = torch.zeros(1, T, 2, 1, 3)
    u[0, :, 0, 0, 0] = torch.tensor([0.0, 0.6, 1.2, 1.8, 2.4, 3.0])  # fast point
    u[0, :, 0, 0, 1] = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # slow point
    u[0, :, 0, 0, 2] = 50.0  # outside the region
    crossing = {
        r: crossing_time(u, times, 0.5, region, reduce=r, channel=0).item() for r in ("min", "mean", "max")
    }
    assert crossing == {"min": 3.0, "mean": 2.0, "max": 1.0}
    assert crossing_time(u, times, 0.5, region, reduce="max", channel=1).item() == math.inf
    # channel=None reduces over both channels: the zero channel keeps "min" below 0.5 forever.
    assert crossing_time(u, times, 0.5, region, reduce="min").item() == math.inf
    assert crossing_time(u, times, 0.5, region, reduce="max").item() == 1.0


def test_crossing_time_bad_input_raises():
    u = torch.zeros(2, 3, 1, 4, 4)
    times = torch.tensor([0.0, 1.0, 2.0])
    region = torch.ones(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="region must be a bool mask"):
        crossing_time(u, times, 0.5, torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="region is empty"):
        crossing_time(u, times, 0.5, torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="strictly increasing"):
        crossing_time(u, torch.tensor([0.0, 2.0, 1.0]), 0.5, region)
    with pytest.raises(ValueError, match=r"times must be a float tensor \(3,\)"):
        crossing_time(u, times[:2], 0.5, region)
    with pytest.raises(ValueError, match="unknown reduce"):
        crossing_time(u, times, 0.5, region, reduce="median")
    with pytest.raises(ValueError, match="channel 1 out of range"):
        crossing_time(u, times, 0.5, region, channel=1)
    with pytest.raises(ValueError, match=r"\(M, T, C, H, W\)"):
        crossing_time(u[0], times, 0.5, region)


def test_crossing_time_w2_censors_never_crossed():
    # Reference: wasserstein_1d on hand-censored times (itself checked against POT above).
    tau_gen = torch.tensor([0.2, math.inf, 0.4, 0.5], dtype=torch.float64)
    tau_true = torch.tensor([0.3, 0.6, math.inf], dtype=torch.float64)
    w = crossing_time_w2(tau_gen, tau_true, censor_time=1.0)
    expected = _pot_w(np.array([0.2, 1.0, 0.4, 0.5]), np.array([0.3, 0.6, 1.0]), 2.0)
    assert float(w) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="precedes a crossing time"):
        crossing_time_w2(tau_gen, tau_true, censor_time=0.45)
    with pytest.raises(ValueError, match="NaN"):
        crossing_time_w2(torch.tensor([math.nan]), tau_true, censor_time=1.0)


# --- mass -----------------------------------------------------------------------------------------------


def test_mass_of_constant_fields():
    # Exact answer: the mean |u| of a constant field c is |c|.
    constants = torch.tensor([[1.5, -2.0, 0.0], [-0.25, 3.0, 7.0]])  # (M, T)
    u = constants[:, :, None, None, None].expand(2, 3, 2, 5, 4)
    torch.testing.assert_close(mass(u), constants.abs(), atol=0, rtol=0)


def test_mass_w2_exact_and_vs_pot():
    # Exact answer: constant positive fields with constants c vs c + s have masses c vs c + s, so every
    # per-frame W2 is s and so is their time average.
    c = torch.rand(8, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.1  # (M, T)
    u_true = c[:, :, None, None, None].expand(8, 5, 1, 3, 3)
    assert mass_w2(u_true + 0.3, u_true) == pytest.approx(0.3, abs=1e-12)
    # Reference: POT per frame on random fields with unequal sample counts, averaged over time by hand.
    g = torch.Generator().manual_seed(8)
    u_gen = torch.randn(12, 4, 2, 6, 6, generator=g, dtype=torch.float64)
    u_ref = 1.3 * torch.randn(9, 4, 2, 6, 6, generator=g, dtype=torch.float64)
    m_gen, m_ref = mass(u_gen).numpy(), mass(u_ref).numpy()
    expected = np.mean([_pot_w(m_gen[:, t], m_ref[:, t], 2.0) for t in range(4)])
    assert mass_w2(u_gen, u_ref) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="differ past the batch dim"):
        mass_w2(u_gen[:, :3], u_ref)


# --- memorisation ---------------------------------------------------------------------------------------


def _brute_kth_nn(queries: np.ndarray, refs: np.ndarray, k: int, leave_one_out: bool) -> np.ndarray:
    """Reference: Python loop over queries, full sort of Euclidean distances."""
    out = []
    for i, q in enumerate(queries):
        d = np.sqrt(((refs - q) ** 2).sum(axis=1))
        if leave_one_out:
            d = np.delete(d, i)
        out.append(np.sort(d)[k - 1])
    return np.array(out)


@pytest.mark.parametrize("k", [1, 2])
def test_memorisation_report_vs_brute_force(k):
    g = torch.Generator().manual_seed(9)
    train = torch.randn(10, 3, 1, 4, 4, generator=g, dtype=torch.float64)
    samples = torch.randn(6, 3, 1, 4, 4, generator=g, dtype=torch.float64)
    samples[2] = train[7]  # an exact copy of a training trajectory
    report = memorisation_report(samples, train, k=k)
    s_np, t_np = samples.flatten(1).numpy(), train.flatten(1).numpy()
    np.testing.assert_allclose(
        report["sample_to_train"].numpy(), _brute_kth_nn(s_np, t_np, k, False), rtol=1e-10
    )
    np.testing.assert_allclose(
        report["train_to_train"].numpy(), _brute_kth_nn(t_np, t_np, k, True), rtol=1e-10
    )
    assert report["train_median"] == pytest.approx(float(np.median(_brute_kth_nn(t_np, t_np, k, True))))
    if k == 1:
        assert report["sample_to_train"][2].item() == 0.0  # exactly, not ~1e-3
        assert report["sample_min"] == 0.0
    assert report["ratio"] == pytest.approx(report["sample_median"] / report["train_median"])


def test_memorisation_ratio_separates_copies_from_new_samples():
    # Copies of the training set give ratio 0; fresh draws from the same distribution give a ratio near 1.
    g = torch.Generator().manual_seed(10)
    train = torch.randn(40, 2, 1, 3, 3, generator=g)  # float32: exactness must not rely on float64
    assert memorisation_report(train[:15].clone(), train)["ratio"] == 0.0
    fresh = memorisation_report(torch.randn(40, 2, 1, 3, 3, generator=g), train)
    assert 0.7 < fresh["ratio"] < 1.5
    with pytest.raises(ValueError, match="k must lie in"):
        memorisation_report(train, train, k=40)
    with pytest.raises(ValueError, match="differ past the batch dim"):
        memorisation_report(train[:, :1], train)
