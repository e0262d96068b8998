"""Probabilistic scores of ensembles (issue 17 item 2): CRPS against properscoring and scoringrules, the fair
CRPS against a brute-force double sum, spread/skill on ensembles with a known answer, the radial energy
spectrum on closed forms (a sinusoid, Parseval, white noise), VRMSE in closed form, The Well's windows."""

from __future__ import annotations

import math

import numpy as np
import properscoring
import pytest
import scoringrules
import torch

from tempoflow.metrics.probabilistic import (
    crps_ensemble,
    radial_energy_spectrum,
    spectrum_log_ratio,
    spread_skill,
    vrmse,
    well_windows,
    window_means,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- CRPS -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [1, 2, 5, 16])
def test_crps_matches_properscoring_and_scoringrules(members):
    # References: properscoring.crps_ensemble (the empirical CDF's CRPS, members on the last axis) and
    # scoringrules' energy-form estimator "nrg" — two independent implementations.
    g = _rng(members)
    truth = g.normal(size=(3, 4, 5))
    ens = 1.3 * g.standard_t(4, size=(members, 3, 4, 5)) + 0.2
    ours = crps_ensemble(torch.from_numpy(ens), torch.from_numpy(truth)).numpy()
    ref = properscoring.crps_ensemble(truth, np.moveaxis(ens, 0, -1))
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    nrg = scoringrules.crps_ensemble(truth, np.moveaxis(ens, 0, -1), estimator="nrg", backend="numpy")
    np.testing.assert_allclose(ours, nrg, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("members", [2, 3, 8])
def test_fair_crps_matches_a_double_sum_and_scoringrules(members):
    # References: the fair CRPS written from its definition (Ferro 2014) as a Python double loop, and
    # scoringrules' "fair" estimator.
    g = _rng(10 + members)
    truth = g.normal(size=7)
    ens = g.normal(size=(members, 7)) * 2.0
    brute = np.empty(7)
    for p in range(7):
        x, y = ens[:, p], truth[p]
        first = sum(abs(xi - y) for xi in x) / members
        pairs = sum(abs(xi - xj) for xi in x for xj in x)
        brute[p] = first - pairs / (2 * members * (members - 1))
    ours = crps_ensemble(torch.from_numpy(ens), torch.from_numpy(truth), fair=True).numpy()
    np.testing.assert_allclose(ours, brute, rtol=1e-12, atol=1e-13)
    fair = scoringrules.crps_ensemble(truth, ens.T, estimator="fair", backend="numpy")
    np.testing.assert_allclose(ours, fair, rtol=1e-12, atol=1e-13)


def test_crps_identities_and_broadcasting():
    y = torch.tensor([0.3, -1.0])
    # one member: CRPS = |x − y| (the MAE of a point forecast)
    x = torch.tensor([[1.0, 2.0]])
    assert torch.allclose(crps_ensemble(x, y), (x[0] - y).abs())
    # the fair CRPS of a Gaussian ensemble -> the Gaussian closed form (Gneiting et al. 2005) in expectation
    g = torch.Generator().manual_seed(0)
    sigma, obs = 1.5, 0.7
    ens = sigma * torch.randn(8, 200_000, generator=g, dtype=torch.float64)
    z = obs / sigma
    closed = sigma * (z * math.erf(z / math.sqrt(2)) + 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
                      - 1 / math.sqrt(math.pi))
    fair = crps_ensemble(ens, torch.full((200_000,), obs, dtype=torch.float64), fair=True).mean()
    assert abs(float(fair) - closed) < 0.01 * closed
    # members (M, S) score a truth (K, S): each of the K cases against the same members
    ens, truth = torch.randn(4, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    both = crps_ensemble(ens, truth)
    assert both.shape == (3, 6)
    assert torch.allclose(both[1], crps_ensemble(ens, truth[1]))
    with pytest.raises(ValueError, match="needs >= 2 members"):
        crps_ensemble(torch.zeros(1, 3), torch.zeros(3), fair=True)
    with pytest.raises(ValueError, match="do not broadcast"):
        crps_ensemble(torch.zeros(2, 3), torch.zeros(4))


# --- spread / skill ------------------------------------------------------------------------------------


def test_spread_skill_of_a_reliable_ensemble_is_one_after_the_finite_ensemble_correction():
    # Known answer: truth and members i.i.d. from one distribution (per case: a random centre, unit noise).
    # E[s²] = 1 and E[(x̄ − y)²] = 1 + 1/M, so the ratio -> sqrt(M/(M+1)) and the corrected one -> 1.
    g = torch.Generator().manual_seed(1)
    cases, members = 20_000, 8
    centre = 3.0 * torch.randn(cases, 1, generator=g, dtype=torch.float64)
    truth = centre + torch.randn(cases, 1, generator=g, dtype=torch.float64)
    ens = centre + torch.randn(members, cases, 1, generator=g, dtype=torch.float64)
    ss = spread_skill(ens, truth)
    assert abs(float(ss.spread) - 1.0) < 0.02
    assert abs(float(ss.skill) - math.sqrt(1 + 1 / members)) < 0.02
    assert abs(float(ss.ratio) - math.sqrt(members / (members + 1))) < 0.02
    assert abs(float(ss.ratio_corrected) - 1.0) < 0.02
    # the spread is the members' mean variance × M/(M−1), rooted
    biased = ens.var(0, correction=0).mean()
    assert torch.isclose(ss.spread, (biased * members / (members - 1)).sqrt())


def test_spread_skill_under_and_over_dispersed_and_per_dim():
    g = torch.Generator().manual_seed(2)
    truth = torch.randn(5000, 3, generator=g, dtype=torch.float64)
    narrow = 0.3 * torch.randn(16, 5000, 3, generator=g, dtype=torch.float64)  # truth has unit spread
    wide = 3.0 * torch.randn(16, 5000, 3, generator=g, dtype=torch.float64)
    # members N(0, a²), truth N(0, 1): spread a, skill sqrt(1 + a²/M); corrected ratio a·sqrt((M+1)/(M + a²))
    for ens, a in ((narrow, 0.3), (wide, 3.0)):
        expected = a * math.sqrt(17 / (16 + a * a))
        assert abs(float(spread_skill(ens, truth).ratio_corrected) - expected) < 0.03 * expected
    assert float(spread_skill(narrow, truth).ratio_corrected) < 1 < float(spread_skill(wide, truth).ratio_corrected)
    per = spread_skill(narrow, truth, dim=(0,))  # keep the last dim
    assert per.spread.shape == (3,) and torch.allclose(per.skill.square().mean(), spread_skill(narrow, truth).skill.square())


# --- energy spectrum -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(32, 32), (16, 24)])
def test_spectrum_of_a_sinusoid_is_in_one_shell_and_parseval_holds(height, width):
    # Closed form: cos(2π (a y/H + b x/W)) has energy 1/2 at |κ| = sqrt(a² + b²), nothing elsewhere.
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    for a, b, shell in [(0, 3, 3), (3, 4, 5), (2, 0, 2)]:
        u = 2.0 * torch.cos(2 * math.pi * (a * y / height + b * x / width))
        spec = radial_energy_spectrum(u)
        expected = torch.zeros_like(spec.energy)
        expected[shell] = 2.0  # amplitude 2: mean(u²) = 2
        assert torch.allclose(spec.energy, expected, atol=1e-12)
    # Parseval: all shells plus the corner modes = mean(u²); a field without corner energy sums exactly.
    g = torch.Generator().manual_seed(0)
    field = torch.randn(3, height, width, generator=g, dtype=torch.float64)
    spec = radial_energy_spectrum(field)
    assert spec.energy.shape == (3, min(height, width) // 2 + 1)
    assert torch.all(spec.energy.sum(-1) <= field.square().mean((-2, -1)) + 1e-12)
    # without its corner modes (|κ| beyond the last shell) a field's shells hold all of mean(u²)
    k_y = torch.fft.fftfreq(height, 1 / height, dtype=torch.float64)
    k_x = torch.fft.fftfreq(width, 1 / width, dtype=torch.float64)
    inside = (k_y[:, None] ** 2 + k_x[None, :] ** 2).sqrt().round() <= min(height, width) // 2
    low = torch.fft.ifft2(torch.fft.fft2(field) * inside).real
    assert torch.allclose(radial_energy_spectrum(low).energy.sum(-1), low.square().mean((-2, -1)), rtol=1e-12)
    assert int(spec.modes.sum()) <= height * width and int(spec.modes[0]) == 1


def test_spectrum_of_white_noise_is_flat_per_mode():
    # Closed form: for i.i.d. N(0, σ²) pixels, E|FFT(u)(κ)|² = σ² H W, so E[E(k)] / modes(k) = σ² / (H W).
    g = torch.Generator().manual_seed(3)
    sigma, n = 0.5, 32
    noise = sigma * torch.randn(2000, n, n, generator=g, dtype=torch.float64)
    spec = radial_energy_spectrum(noise)
    per_mode = spec.energy.mean(0)[1:] / spec.modes[1:]
    assert torch.allclose(per_mode, torch.full_like(per_mode, sigma**2 / n**2), rtol=0.1)
    assert torch.allclose(spec.wavenumber, torch.arange(n // 2 + 1, dtype=torch.float64))


def test_spectrum_log_ratio():
    true = torch.tensor([1.0, 0.5, 0.25, 0.0])
    assert torch.allclose(spectrum_log_ratio(2 * true, true)[:3], torch.full((3,), math.log(2)))
    assert spectrum_log_ratio(2 * true, true)[3] == 0  # no energy in either: agree (the floor)
    assert torch.isfinite(spectrum_log_ratio(true, torch.zeros(4))).all()


# --- VRMSE ---------------------------------------------------------------------------------------------


def test_vrmse_closed_forms():
    # v = sin over one period: mean 0, biased variance 1/2 -> unbiased variance n/(2(n−1)).
    n = 16
    x = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    v = torch.sin(x)[None, :].expand(n, n)  # (H, W), every row the same
    var = (n * n) / (2 * (n * n - 1))  # unbiased over all n² points
    for shift in (0.0, 0.1, -2.0):  # u = v + c: mse = c²
        got = vrmse(v + shift, v)
        assert math.isclose(float(got), abs(shift) / math.sqrt(var + 1e-7), rel_tol=1e-12)
    # predicting the spatial mean: sqrt((n−1)/n) with n = H W points (The Well's "mean predictor ≈ 1")
    g = torch.Generator().manual_seed(0)
    field = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    mean = field.mean((-2, -1), keepdim=True).expand_as(field)
    var = field.flatten(-2).var(-1)  # (2, 3), unbiased
    assert torch.allclose(vrmse(mean, field), (63 / 64 * var / (var + 1e-7)).sqrt(), rtol=1e-12)
    assert torch.allclose(vrmse(mean, field), torch.full((2, 3), math.sqrt(63 / 64), dtype=torch.float64), rtol=1e-6)
    assert vrmse(mean, field).shape == (2, 3)


def test_well_windows_and_window_means():
    # The Well's split_up_losses for 100 steps: [0] + int(exp(linspace(0, ln 100, 5))) = 0 1 3 10 31 100
    assert well_windows(100) == (0, 1, 3, 10, 31, 100)
    assert well_windows(32) == (0, 1, 2, 5, 13, 32)
    assert well_windows(3) == (0, 1, 3) and well_windows(1) == (0, 1)
    steps = torch.arange(1.0, 11.0)  # values 1..10 at indices 0..9
    means = window_means(steps, (0, 1, 3, 12, 20))
    assert means == {"0:1": 1.0, "1:3": 2.5, "3:12": 7.0, "12:20": "n/a: the roll-out has 10 steps"}
    with pytest.raises(ValueError, match="increasing"):
        window_means(steps, (3, 1))
