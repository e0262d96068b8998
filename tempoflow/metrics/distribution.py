"""Distances between two sets of feature vectors ``(N, D)``: Fréchet distance and polynomial-kernel MMD.

These are the formulas behind FID/FVD (Fréchet distance of Gaussian fits, Heusel et al. 2017) and
KID/KVD (unbiased polynomial-kernel MMD², Bińkowski et al. 2018), over *any* features. They are FVD or
KVD only when the features come from the I3D network those papers prescribe; nothing here extracts
features. All statistics are computed in float64 on the features' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

# Covariance eigenvalues down to -EIG_TOL × the largest are roundoff and clamped to zero; more negative
# ones mean the matrix is not a covariance. Loose enough for covariances computed in float32.
EIG_TOL = 1e-5
SYMMETRY_TOL = 1e-5  # allowed max |Σ − Σᵀ|, relative to max |Σ|
KID_SUBSETS = 100  # Bińkowski et al. 2018 / torch-fidelity defaults
KID_SUBSET_SIZE = 1000


class GaussianFit(NamedTuple):
    """Mean ``mu`` ``(D,)`` and covariance ``sigma`` ``(D, D)`` of a feature set, float64."""

    mu: Tensor
    sigma: Tensor


@dataclass(frozen=True)
class MMDEstimate:
    """Unbiased MMD² averaged over random subsets: ``mean`` and ``std`` over the subsets (0-dim
    float64 tensors; ``std`` is 0 for a single subset) and the subset sizes used."""

    mean: Tensor
    std: Tensor
    num_subsets: int
    subset_sizes: tuple[int, int]


def _check_features(name: str, f: Tensor, min_rows: int) -> None:
    """``f`` a finite ``(N, D)`` float tensor with ``N >= min_rows`` (one host sync)."""
    if not isinstance(f, Tensor) or f.dim() != 2 or not f.is_floating_point():
        what = f"{f.dtype} {tuple(f.shape)}" if isinstance(f, Tensor) else type(f).__name__
        raise ValueError(f"{name} must be a float (N, D) feature tensor, got {what}")
    if f.shape[0] < min_rows or f.shape[1] == 0:
        raise ValueError(f"{name} needs at least {min_rows} rows and 1 column, got shape {tuple(f.shape)}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError(f"{name} of shape {tuple(f.shape)} has non-finite values (NaN or inf)")


def _check_pair(f1: Tensor, f2: Tensor, min_rows: int) -> None:
    _check_features("f1", f1, min_rows)
    _check_features("f2", f2, min_rows)
    if f1.shape[1] != f2.shape[1] or f1.device != f2.device:
        raise ValueError(f"feature sets differ: {tuple(f1.shape)} on {f1.device} vs {tuple(f2.shape)} on {f2.device}")


def gaussian_fit(features: Tensor) -> GaussianFit:
    """Mean and unbiased covariance of ``(N, D)`` features (``N >= 2``), in float64.

    ``mu = (1/N) Σ_n f_n``, ``sigma = (1/(N−1)) Σ_n (f_n − mu)(f_n − mu)ᵀ`` (as ``numpy.cov``).
    """
    _check_features("features", features, min_rows=2)
    f = features.to(torch.float64)
    mu = f.mean(0)  # (D,)
    centred = f - mu  # (N, D)
    sigma = centred.T @ centred / (f.shape[0] - 1)  # (D, D)
    return GaussianFit(mu, (sigma + sigma.T) / 2)  # exactly symmetric (BLAS need not be)


def _covariance_eigh(name: str, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Symmetrised covariance, its eigenvalues (ascending, roundoff ones set to 0) and eigenvectors; raises if
    ``sigma`` is not symmetric PSD up to roundoff (``SYMMETRY_TOL``, ``EIG_TOL``)."""
    scale = sigma.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    asymmetry = (sigma - sigma.T).abs().max() / scale
    if not bool(asymmetry <= SYMMETRY_TOL):
        raise ValueError(f"{name} of shape {tuple(sigma.shape)} is not symmetric (asymmetry {asymmetry.item():.3g})")
    sigma = (sigma + sigma.T) / 2  # only roundoff is removed here
    evals, evecs = torch.linalg.eigh(sigma)
    if not bool(evals[0] >= -EIG_TOL * evals[-1].abs().clamp_min(scale)):
        raise ValueError(f"{name} is not positive semi-definite: smallest eigenvalue {evals[0].item():.3g}")
    return sigma, _drop_roundoff(evals), evecs


def _drop_roundoff(evals: Tensor) -> Tensor:
    """Eigenvalues of a PSD matrix with those at roundoff level (``<= D ε λ_max``, the rank cutoff of
    ``numpy.linalg.matrix_rank``) set to 0: their square roots (~1e-8 each) would otherwise bias
    ``Tr (Σ1 Σ2)^{1/2}`` for rank-deficient covariances."""
    cutoff = evals.shape[-1] * torch.finfo(evals.dtype).eps * evals.abs().max()
    return torch.where(evals > cutoff, evals, torch.zeros_like(evals))


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Fréchet (2-Wasserstein²) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``, float64.

    ``d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})``. The trace term uses
    ``Tr (Σ1 Σ2)^{1/2} = Σ_i sqrt(λ_i(Σ1^{1/2} Σ2 Σ1^{1/2}))``: ``Σ1 Σ2`` is similar to that symmetric
    PSD matrix, so two ``eigh`` calls replace ``scipy.linalg.sqrtm`` and stay real and stable for
    singular (rank-deficient) covariances. Eigenvalues at roundoff level (``|λ| <= D ε λ_max``) count as 0.

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` symmetric PSD covariances.
    Returns:
        0-dim float64 tensor, ``>= 0`` (same units as the features, squared).
    """
    tensors = {"mu1": mu1, "sigma1": sigma1, "mu2": mu2, "sigma2": sigma2}
    for name, x in tensors.items():
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got {type(x).__name__}")
    d = mu1.shape[0] if mu1.dim() == 1 else -1
    shapes = {name: tuple(x.shape) for name, x in tensors.items()}
    if d < 1 or shapes != {"mu1": (d,), "sigma1": (d, d), "mu2": (d,), "sigma2": (d, d)}:
        raise ValueError(f"need mu (D,) and sigma (D, D) with one D, got {shapes}")
    if len({x.device for x in tensors.values()}) > 1:
        raise ValueError(f"tensors on several devices: {[str(x.device) for x in tensors.values()]}")
    mu1, sigma1, mu2, sigma2 = (x.to(torch.float64) for x in tensors.values())
    if not bool(torch.stack([x.isfinite().all() for x in (mu1, sigma1, mu2, sigma2)]).all()):
        raise ValueError("means or covariances have non-finite values (NaN or inf)")
    sigma1, evals1, evecs1 = _covariance_eigh("sigma1", sigma1)
    sigma2, _, _ = _covariance_eigh("sigma2", sigma2)
    sqrt1 = (evecs1 * evals1.sqrt()) @ evecs1.T  # (D, D) Σ1^{1/2}
    middle = sqrt1 @ sigma2 @ sqrt1  # (D, D) symmetric PSD, similar to Σ1 Σ2
    trace_sqrt = _drop_roundoff(torch.linalg.eigvalsh((middle + middle.T) / 2)).sqrt().sum()
    dist = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return dist.clamp_min(0)  # the exact value is >= 0; only roundoff goes below


def frechet_distance_features(f1: Tensor, f2: Tensor) -> Tensor:
    """Fréchet distance between Gaussian fits of two feature sets ``(N1, D)``, ``(N2, D)``: 0-dim float64.

    ``frechet_distance(*gaussian_fit(f1), *gaussian_fit(f2))``; with I3D features this is FVD.
    """
    _check_pair(f1, f2, min_rows=2)
    return frechet_distance(*gaussian_fit(f1), *gaussian_fit(f2))


def _polynomial_kernel(x: Tensor, y: Tensor, degree: int, gamma: float, coef0: float) -> Tensor:
    """``k(x, y) = (γ xᵀy + c0)^d`` for all pairs: ``(..., M, D)``, ``(..., N, D)`` -> ``(..., M, N)``."""
    return (gamma * (x @ y.transpose(-1, -2)) + coef0) ** degree


def _offdiag_mean(k: Tensor) -> Tensor:
    """Mean of the off-diagonal entries of square ``(M, M)`` kernel matrices: ``(1/(M(M−1))) Σ_{i≠j}``."""
    m = k.shape[-1]
    return (k.sum((-1, -2)) - k.diagonal(dim1=-2, dim2=-1).sum(-1)) / (m * (m - 1))


def polynomial_mmd(
    f1: Tensor,
    f2: Tensor,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    num_subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> MMDEstimate:
    """Unbiased MMD² with a polynomial kernel, averaged over random subsets (the formula of KID/KVD).

    With ``k(x, y) = (γ xᵀy + c0)^d`` and subsets ``X`` (``m`` rows of ``f1``), ``Y`` (``n`` of ``f2``):
    ``MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (n(n−1)) − 2 Σ_{i,j} k(x_i, y_j) / (mn)``
    (Gretton et al. 2012, Lemma 6; Bińkowski et al. 2018). Each subset draws ``min(subset_size, N)`` rows
    of each set without replacement; a subset size at least both ``N`` gives the full-sample estimate.
    The estimate is unbiased, so it can be slightly negative when the distributions agree.

    Args:
        f1, f2: ``(N1, D)``, ``(N2, D)`` features, ``N >= 2``.
        degree, gamma, coef0: kernel ``d``, ``γ`` (default ``1 / D``), ``c0``.
        num_subsets, subset_size: number and size of the random subsets.
        seed: seeds the CPU generator that draws the subsets (the same on every device).
    Returns:
        :class:`MMDEstimate`: mean and std over subsets, float64.
    """
    _check_pair(f1, f2, min_rows=2)
    if degree < 1 or num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need degree >= 1, num_subsets >= 1, subset_size >= 2; got {degree}, {num_subsets}, {subset_size}")
    gamma = 1.0 / f1.shape[1] if gamma is None else gamma
    x_all, y_all = f1.to(torch.float64), f2.to(torch.float64)
    m, n = min(subset_size, len(x_all)), min(subset_size, len(y_all))
    gen = torch.Generator().manual_seed(seed)
    # Rows of each subset: the first m of a random permutation, all drawn at once on the host.
    rows_x = torch.rand(num_subsets, len(x_all), generator=gen).argsort(1)[:, :m].to(x_all.device)  # (S, m)
    rows_y = torch.rand(num_subsets, len(y_all), generator=gen).argsort(1)[:, :n].to(y_all.device)  # (S, n)
    estimates = []
    for ix, iy in zip(rows_x, rows_y):  # one subset at a time bounds memory at (m + n)² kernel entries
        x, y = x_all[ix], y_all[iy]  # (m, D), (n, D)
        k_xx = _offdiag_mean(_polynomial_kernel(x, x, degree, gamma, coef0))
        k_yy = _offdiag_mean(_polynomial_kernel(y, y, degree, gamma, coef0))
        k_xy = _polynomial_kernel(x, y, degree, gamma, coef0).mean()
        estimates.append(k_xx + k_yy - 2 * k_xy)
    values = torch.stack(estimates)  # (S,)
    std = values.std() if num_subsets > 1 else torch.zeros((), dtype=torch.float64, device=values.device)
    return MMDEstimate(mean=values.mean(), std=std, num_subsets=num_subsets, subset_sizes=(m, n))
