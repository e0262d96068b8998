"""Affine probability paths ``x_t = α_t x_1 + σ_t x_0`` (DESIGN §1, §3).

Flow time ``t ∈ [0, 1]``: noise ``x_0 ~ N(0, I)`` at ``t = 0``, data ``x_1`` at ``t = 1``
(Lipman et al. 2023). A path is one concept with one verb, :meth:`AffinePath.sample`, which returns
a :class:`PathSample` holding the point on the path and its conditional velocity target
``dx_t = α'_t x_1 + σ'_t x_0``. Subclasses only say what ``α_t, σ_t`` and their derivatives are.

The conversions between a velocity and the endpoint estimates it implies solve the 2×2 system

    x_t = α_t x_1 + σ_t x_0,      v = α'_t x_1 + σ'_t x_0,

whose determinant ``α_t σ'_t − σ_t α'_t`` is non-zero for every path here (``−(1 − σ_min)`` for
CondOT, ``−π/2`` for the cosine path), so it is well posed at every ``t`` including the endpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PATH_NAMES", "AffinePath", "CondOTPath", "CosinePath", "PathSample", "make_path"]


@dataclass
class PathSample:
    """One draw from a probability path; every tensor but ``t`` has the shape ``(B, ...)``.

    Attributes:
        x_t: the point on the path, ``α_t x_1 + σ_t x_0``.
        dx_t: the conditional velocity target, ``α'_t x_1 + σ'_t x_0``.
        t: flow times, shape ``(B,)``.
        x_0: the noise endpoint.
        x_1: the data endpoint.
    """

    x_t: Tensor
    dx_t: Tensor
    t: Tensor
    x_0: Tensor
    x_1: Tensor


def _expand_t(t: Tensor, x: Tensor) -> Tensor:
    """Broadcast flow time ``t`` — a scalar or shape ``(B,)`` — against ``x`` of shape ``(B, ...)``."""
    if t.dim() == 0:
        return t
    if t.dim() == 1 and t.shape[0] == x.shape[0]:
        # (B,) -> (B, 1, ..., 1) so it multiplies each sample's whole tensor.
        return t.reshape(-1, *([1] * (x.dim() - 1)))
    raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got shape {tuple(t.shape)}")


class AffinePath:
    """Base class of affine paths ``x_t = α_t x_1 + σ_t x_0``.

    Subclasses implement the four scalar schedules; everything else (sampling, velocity targets,
    endpoint conversions) is written once here. Schedules take a tensor ``t`` of any shape and return
    a tensor of the same shape.
    """

    def alpha(self, t: Tensor) -> Tensor:
        """Data coefficient ``α_t``."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """Noise coefficient ``σ_t``."""
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        """``dα_t/dt``."""
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        """``dσ_t/dt``."""
        raise NotImplementedError

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> PathSample:
        """Draw the point ``x_t = α_t x_1 + σ_t x_0`` and its target ``dx_t = α'_t x_1 + σ'_t x_0``.

        Args:
            x_0: noise, shape ``(B, ...)``.
            x_1: data, the same shape as ``x_0``.
            t: flow times in ``[0, 1]``, shape ``(B,)``.

        Returns:
            A :class:`PathSample`; ``x_t`` and ``dx_t`` have the shape of ``x_1``.
        """
        if x_0.shape != x_1.shape:
            raise ValueError(f"x_0 and x_1 must have the same shape, got {tuple(x_0.shape)} and "
                             f"{tuple(x_1.shape)}")
        if t.dim() != 1 or t.shape[0] != x_1.shape[0]:
            raise ValueError(f"t must have shape ({x_1.shape[0]},), got {tuple(t.shape)}")
        tt = _expand_t(t, x_1)
        x_t = self.alpha(tt) * x_1 + self.sigma(tt) * x_0
        dx_t = self.d_alpha(tt) * x_1 + self.d_sigma(tt) * x_0
        return PathSample(x_t=x_t, dx_t=dx_t, t=t, x_0=x_0, x_1=x_1)

    def _coefficients(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``α, σ, α', σ'`` broadcast against ``x``, and the determinant ``α σ' − σ α'``."""
        tt = _expand_t(t, x)
        a, s, da, ds = self.alpha(tt), self.sigma(tt), self.d_alpha(tt), self.d_sigma(tt)
        return a, s, da, ds, a * ds - s * da

    def velocity_to_x1(self, v: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Data estimate implied by a velocity: ``x_1 = (σ' x_t − σ v) / (α σ' − σ α')``.

        Args:
            v: velocity at ``(x_t, t)``, shape ``(B, ...)``.
            x_t: the current point, the same shape.
            t: a scalar or shape ``(B,)``.
        """
        _, s, _, ds, det = self._coefficients(t, x_t)
        return (ds * x_t - s * v) / det

    def velocity_to_x0(self, v: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Noise estimate implied by a velocity: ``x_0 = (α v − α' x_t) / (α σ' − σ α')``.

        Shapes as in :meth:`velocity_to_x1`.
        """
        a, _, da, _, det = self._coefficients(t, x_t)
        return (a * v - da * x_t) / det

    def x1_to_velocity(self, x_1: Tensor, x_t: Tensor, t: Tensor, min_sigma: float = 0.0) -> Tensor:
        """Velocity implied by a data estimate: ``v = α' x_1 + σ' (x_t − α x_1) / σ``.

        Undefined where ``σ_t = 0`` (``t = 1`` with ``σ_min = 0``): the data estimate then carries no
        information about the noise. ``min_sigma`` clamps ``σ_t`` from below so that a network
        predicting data can be integrated up to ``t = 1`` (as in Li & He 2025, "JiT", which clips
        ``1 − t``). Shapes as in :meth:`velocity_to_x1`.
        """
        a, s, da, ds, _ = self._coefficients(t, x_t)
        x_0 = (x_t - a * x_1) / s.clamp_min(min_sigma)
        return da * x_1 + ds * x_0


class CondOTPath(AffinePath):
    """Conditional optimal-transport path (DESIGN §3): ``α_t = t``, ``σ_t = 1 − (1 − σ_min) t``.

    The target is the straight-line velocity ``x_1 − (1 − σ_min) x_0``.
    """

    def __init__(self, sigma_min: float = 0.0) -> None:
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"sigma_min must lie in [0, 1), got {sigma_min}")
        self.sigma_min = sigma_min

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return 1.0 - (1.0 - self.sigma_min) * t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -(1.0 - self.sigma_min))

    def __repr__(self) -> str:
        return f"CondOTPath(sigma_min={self.sigma_min})"


class CosinePath(AffinePath):
    """Variance-preserving cosine path: ``α_t = sin(π t / 2)``, ``σ_t = cos(π t / 2)``.

    ``α_t² + σ_t² = 1``, so ``x_t`` keeps unit variance when the data does.
    """

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def __repr__(self) -> str:
        return "CosinePath()"


PATH_NAMES = ("condot", "cosine")


def make_path(name: str, sigma_min: float = 0.0) -> AffinePath:
    """Build a path by its config name (``FlowConfig.path``).

    Args:
        name: ``"condot"`` or ``"cosine"``.
        sigma_min: noise left at ``t = 1`` by the CondOT path; the cosine path has none, so it must
            be 0 there rather than silently ignored.
    """
    if name == "condot":
        return CondOTPath(sigma_min)
    if name == "cosine":
        if sigma_min != 0.0:
            raise ValueError(f"the cosine path has no sigma_min; got sigma_min={sigma_min}, set it to 0")
        return CosinePath()
    raise ValueError(f"unknown path {name!r}; valid names: {', '.join(PATH_NAMES)}")
