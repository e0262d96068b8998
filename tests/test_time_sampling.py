"""Flow-time sampling (tempoflow.flows.time_sampling) against scipy's closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from tempoflow.flows.time_sampling import FlowTimeSampler


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (-0.5, 0.7)])
def test_logit_normal_matches_its_closed_form_cdf(mean, std):
    """Reference: the CDF Φ((logit t − m)/s) (scipy), by a Kolmogorov–Smirnov test; and the mean of
    t against scipy's quadrature of the density π(t; m, s) of Esser et al. (2024), §3.1."""
    t = FlowTimeSampler("logit_normal", mean, std).sample(20000, torch.Generator().manual_seed(0),
                                                          torch.empty(0, dtype=torch.float64))
    assert t.dtype == torch.float64 and t.shape == (20000,)
    assert bool(((t > 0) & (t < 1)).all())
    cdf = lambda x: stats.norm.cdf((special.logit(x) - mean) / std)
    assert stats.kstest(t.numpy(), cdf).pvalue > 1e-3

    def density(x):
        return math.exp(-((special.logit(x) - mean) ** 2) / (2 * std**2)) / (std * math.sqrt(2 * math.pi) * x * (1 - x))

    mass, _ = integrate.quad(density, 0, 1)
    expected_mean, _ = integrate.quad(lambda x: x * density(x), 0, 1)
    assert mass == pytest.approx(1.0, abs=1e-6)
    assert float(t.mean()) == pytest.approx(expected_mean, abs=4 * float(t.std()) / math.sqrt(len(t)))


def test_uniform_is_torch_rand_from_the_same_generator():
    """Uniform flow time draws exactly what torch.rand draws, so earlier runs reproduce bit for bit."""
    like = torch.empty(0)
    t = FlowTimeSampler("uniform").sample(7, torch.Generator().manual_seed(3), like)
    assert torch.equal(t, torch.rand(7, generator=torch.Generator().manual_seed(3)))
    assert stats.kstest(FlowTimeSampler().sample(5000, torch.Generator().manual_seed(1), like).numpy(),
                        "uniform").pvalue > 1e-3
    assert np.isfinite(t.numpy()).all()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="time sampling"):
        FlowTimeSampler("beta")
    with pytest.raises(ValueError, match="std"):
        FlowTimeSampler("logit_normal", 0.0, 0.0)
