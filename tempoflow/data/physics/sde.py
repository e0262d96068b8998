"""A Gaussian blob carried by an Ornstein–Uhlenbeck velocity: a small stochastic family for tests.

On the torus ``[0, 2π]²`` the blob centre ``X_t`` moves with a velocity ``V_t`` that is an
Ornstein–Uhlenbeck process, independently along each axis (time in seconds)::

    dV = −θ V dt + σ dW,     dX = V dt,     X_0 = (π, π),  V_0 = 0,

so, as in the paper's physics problems (seed 001 §3, appendix D), every trajectory starts from the
same state and the randomness enters during the roll-out. ``(X, V)`` is Gaussian; with
``a = e^{−θ h}`` its exact transition over a step ``h`` has mean ``(X + V (1 − a)/θ, a V)`` and
covariance (per axis)::

    Var V = σ² (1 − a²) / (2θ),
    Var X = σ² / θ² · (h − 2 (1 − a)/θ + (1 − a²)/(2θ)),
    Cov(X, V) = σ² (1 − a)² / (2θ²),

which are also the moments at time ``h`` from ``X_0 = x_0, V_0 = 0`` (:func:`ou_moments`). Frames are
``u(x) = exp(−d(x, X_t)² / (2 w²))`` with ``d`` the periodic distance: in [0, 1], one channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from tempoflow.data.physics.common import check_sizes, output_times, trajectory_generators

__all__ = ["OUMoments", "SDEConfig", "SDESolution", "ou_moments", "render_blobs", "simulate_sde", "solve_sde"]

DOMAIN = 2 * math.pi
SDE_STREAM = 3  # random stream of the SDE noise


@dataclass(frozen=True)
class SDEConfig:
    """Blob SDE; lengths in domain units (the domain is ``[0, 2π]²``), time in seconds."""

    t_end: float = 2.0
    theta: float = 1.0  # velocity mean-reversion rate θ (1/s)
    sigma: float = 1.0  # velocity noise σ (domain units / s^1.5)
    blob_width: float = 0.5  # w, the blob's standard deviation

    def __post_init__(self) -> None:
        for name in ("t_end", "theta", "sigma", "blob_width"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")


class OUMoments(NamedTuple):
    """Per-axis covariance of ``(X_t − E X_t, V_t − E V_t)``, each like the input ``t``."""

    var_x: Tensor
    cov_xv: Tensor
    var_v: Tensor


@dataclass
class SDESolution:
    """Blob trajectories at the stored times.

    Attributes:
        centres: ``(M, T, 2)`` unwrapped centres ``(y, x)`` (take them mod 2π for the image).
        velocities: ``(M, T, 2)``.
        times: ``(T,)`` float64 seconds.
    """

    centres: Tensor
    velocities: Tensor
    times: Tensor


def ou_moments(t: Tensor, theta: float, sigma: float) -> OUMoments:
    """Closed-form covariance of the integrated OU pair after time ``t`` (see the module docstring)."""
    a = torch.exp(-theta * t)
    var_v = sigma**2 * (1 - a**2) / (2 * theta)
    var_x = sigma**2 / theta**2 * (t - 2 * (1 - a) / theta + (1 - a**2) / (2 * theta))
    cov_xv = sigma**2 * (1 - a) ** 2 / (2 * theta**2)
    return OUMoments(var_x, cov_xv, var_v)


def solve_sde(generators: list[torch.Generator], times: Tensor, cfg: SDEConfig) -> SDESolution:
    """Exact Gaussian transitions of ``(X, V)`` between the stored times, one generator per trajectory.

    Args:
        generators: CPU generators, one per trajectory.
        times: ``(T,)`` increasing positive seconds.
        cfg: the SDE.

    Returns:
        An :class:`SDESolution` in float64.
    """
    times = times.to(torch.float64)
    if times.dim() != 1 or not bool((times > 0).all()) or not bool((times.diff() > 0).all()):
        raise ValueError(f"times must be an increasing (T,) tensor of positive seconds, got {times}")
    steps = torch.diff(times, prepend=times.new_zeros(1))  # (T,)
    noise = torch.stack([torch.randn(len(times), 2, 2, generator=g, dtype=torch.float64) for g in generators])
    m = len(generators)
    x = torch.full((m, 2), math.pi, dtype=torch.float64)
    v = torch.zeros(m, 2, dtype=torch.float64)
    var_x, cov_xv, var_v = ou_moments(steps, cfg.theta, cfg.sigma)
    # Cholesky factor of [[var_x, cov], [cov, var_v]] per step: L = [[l11, 0], [l21, l22]].
    l11 = var_x.sqrt()
    l21 = cov_xv / l11
    l22 = (var_v - l21**2).clamp_min(0).sqrt()
    centres, velocities = [], []
    for k, h in enumerate(steps.tolist()):
        a = math.exp(-cfg.theta * h)
        z_x, z_v = noise[:, k, :, 0], noise[:, k, :, 1]  # (M, 2) each: per axis
        x = x + v * (1 - a) / cfg.theta + l11[k] * z_x
        v = a * v + l21[k] * z_x + l22[k] * z_v
        centres.append(x)
        velocities.append(v)
    return SDESolution(torch.stack(centres, 1), torch.stack(velocities, 1), times)


def render_blobs(centres: Tensor, size: int, width: float) -> Tensor:
    """Periodic Gaussian blobs ``exp(−d(x, c)² / (2 w²))`` on the ``size × size`` grid ``2π j / size``.

    Args:
        centres: ``(..., 2)`` centres ``(y, x)``, any real values (wrapped onto the torus).
        size: grid side.
        width: ``w`` in domain units.

    Returns:
        ``(..., size, size)`` float32 in [0, 1]; separable, so ``O(size)`` exponentials per frame.
    """
    grid = torch.arange(size, dtype=torch.float64, device=centres.device) * (DOMAIN / size)
    offset = grid - centres.double()[..., None]  # (..., 2, size)
    wrapped = torch.remainder(offset + math.pi, DOMAIN) - math.pi  # periodic distance per axis
    profile = torch.exp(-(wrapped**2) / (2 * width**2))
    return (profile[..., 0, :, None] * profile[..., 1, None, :]).float()


def simulate_sde(
    n: int,
    size: int,
    n_times: int,
    seed: int,
    cfg: SDEConfig | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` blob videos on a ``size × size`` grid at ``n_times`` times evenly on ``(0, t_end]``.

    Returns:
        ``(n, n_times, 1, size, size)`` float32 in [0, 1], on the CPU.
    """
    cfg = cfg or SDEConfig()
    check_sizes(n, size, n_times)
    solution = solve_sde(trajectory_generators(SDE_STREAM, seed, 0, n), output_times(cfg.t_end, n_times), cfg)
    return render_blobs(solution.centres.to(device), size, cfg.blob_width).unsqueeze(2).cpu()
