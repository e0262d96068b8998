"""Log-Gaussian Matérn permeability fields (Stochastic Lifting, seed 001 appendix D.2).

``K(x) = exp(ε Z(x) + Z̄ + Y(x))`` with ``Y, Z`` independent zero-mean Gaussian fields of Matérn
covariance (Rasmussen & Williams 2006, eq. 4.14; scikit-learn's ``Matern`` kernel)::

    C(r) = σ² 2^{1−ν} / Γ(ν) · (√(2ν) r / ℓ)^ν · K_ν(√(2ν) r / ℓ),

paper values ``σ = 3``, ``ℓ = 10``, ``ν = 1``, ``ε = 0.01``. The paper's grid has 100 × 100 cells, so we
read ``ℓ = 10`` as ten cells of that grid: ``ℓ = 0.1`` in units of the domain side, which keeps the
media statistically the same when the grid is made coarser for tests. ``Z̄`` is a constant mean.

**Sampling: circulant embedding** (Dietrich & Newsam 1997). The covariance of the ``n × n`` cell
centres is embedded in a circulant one on a ``m × m`` torus (``m = embedding · n``, distances wrapped);
its eigenvalues are the FFT of its first row. When they are all ``≥ 0`` the draw is exact:
``y = FFT(√(λ / m²) ⊙ (w₁ + i w₂))`` with ``w ~ N(0, I)`` has real and imaginary parts that are two
independent fields with covariance ``C`` on the torus, hence on the cropped ``n × n`` block. One
complex FFT gives both ``Y`` and ``Z``. Cost ``O(m² log m)`` per draw, so it scales to large grids.
Eigenvalues below ``−EIGEN_TOL · max λ`` make the embedding grow (doubling ``m``), smaller negative
ones (roundoff) are set to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gamma, kv
from torch import Tensor

__all__ = ["MaternField", "embedding_eigenvalues", "matern_covariance", "sample_log_permeability"]

EIGEN_TOL = 1e-10  # negative circulant eigenvalues down to this fraction of the largest are roundoff
MAX_EMBEDDING = 16  # give up growing the torus beyond this multiple of the grid


@dataclass(frozen=True)
class MaternField:
    """Parameters of ``log K = Z̄ + Y + ε Z`` (appendix D.2); lengths in units of the domain side."""

    std: float = 3.0  # σ, marginal standard deviation of Y and of Z
    length_scale: float = 0.1  # ℓ; the paper's 10 cells of its 100-cell grid
    nu: float = 1.0  # smoothness ν
    nugget: float = 0.01  # ε, weight of the second ("noisiness") field Z
    mean: float = 0.0  # Z̄, the mean of log K
    embedding: int = 2  # initial torus side in grid sides (grown if the embedding is not PSD)

    def __post_init__(self) -> None:
        for name in ("std", "nugget"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        for name in ("length_scale", "nu"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        if not math.isfinite(self.mean):
            raise ValueError(f"mean must be finite, got {self.mean}")
        if not 1 <= self.embedding <= MAX_EMBEDDING:
            raise ValueError(f"embedding must lie in [1, {MAX_EMBEDDING}], got {self.embedding}")


def matern_covariance(r: np.ndarray, std: float, length_scale: float, nu: float) -> np.ndarray:
    """``C(r)`` above for distances ``r >= 0`` (any shape), float64; ``C(0) = σ²``."""
    scaled = math.sqrt(2 * nu) * np.asarray(r, dtype=np.float64) / length_scale
    with np.errstate(invalid="ignore"):
        c = std**2 * 2 ** (1 - nu) / gamma(nu) * scaled**nu * kv(nu, scaled)
    return np.where(scaled == 0, std**2, c)


def embedding_eigenvalues(size: int, field: MaternField) -> np.ndarray:
    """Eigenvalues ``(m, m)`` of the smallest PSD circulant embedding of the ``size × size`` covariance.

    Cells have side ``1 / size``. Raises ``ValueError`` if no torus up to ``MAX_EMBEDDING`` sides works.
    """
    factor = field.embedding
    while factor <= MAX_EMBEDDING:
        m = factor * size
        j = np.arange(m)
        wrapped = np.minimum(j, m - j) / size  # torus distance along one axis, domain units
        r = np.sqrt(wrapped[:, None] ** 2 + wrapped[None, :] ** 2)
        eigenvalues = np.fft.fft2(matern_covariance(r, 1.0, field.length_scale, field.nu)).real
        if eigenvalues.min() >= -EIGEN_TOL * eigenvalues.max():
            return np.clip(eigenvalues, 0.0, None) * field.std**2
        factor *= 2
    raise ValueError(
        f"no PSD circulant embedding up to {MAX_EMBEDDING}x the grid for length_scale={field.length_scale}, "
        f"nu={field.nu} on {size} cells: use a smaller length scale"
    )


def sample_log_permeability(generators: list[torch.Generator], size: int, field: MaternField) -> Tensor:
    """``log K = Z̄ + Y + ε Z`` on ``size × size`` cells, one field per generator.

    Args:
        generators: one CPU generator per trajectory.
        size: cells per side of the unit square.
        field: the Matérn parameters.

    Returns:
        ``(M, size, size)`` float64; its pointwise variance is ``σ² (1 + ε²)``.
    """
    if size < 2:
        raise ValueError(f"size must be >= 2 cells, got {size}")
    eigenvalues = torch.from_numpy(embedding_eigenvalues(size, field))  # (m, m)
    m = eigenvalues.shape[0]
    noise = torch.stack([torch.randn(2, m, m, generator=g, dtype=torch.float64) for g in generators])
    white = torch.complex(noise[:, 0], noise[:, 1])  # (M, m, m), E|w|² = 2
    y = torch.fft.fft2(torch.sqrt(eigenvalues / m**2) * white)[:, :size, :size]  # (M, n, n)
    return field.mean + y.real + field.nugget * y.imag
