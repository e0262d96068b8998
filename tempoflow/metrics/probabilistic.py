"""Probabilistic scores of ensemble forecasts of fields, as weather and physics-emulation benchmarks report
them (issue 17 item 2; DESIGN §5): the CRPS (ensemble and fair estimators), the spread/skill ratio, the
radially averaged energy spectrum and its error, and The Well's VRMSE per step and over roll-out windows.

Conventions. An ensemble is ``(M, *S)``: ``M`` members along dim 0, each shaped like the truth ``(*S)``
(broadcasting: a truth of shape ``(K, *S')`` may be scored against members ``(M, 1, *S')``). Fields are
``(..., H, W)``. Scores are in the field's units (CRPS, spread, skill) or dimensionless (ratios, VRMSE,
log spectra). Everything is batched torch on the inputs' device and dtype.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "WELL_EPS",
    "WELL_WINDOWS",
    "RadialSpectrum",
    "SpreadSkill",
    "crps_ensemble",
    "radial_energy_spectrum",
    "spectrum_log_ratio",
    "spread_skill",
    "vrmse",
    "well_windows",
    "window_means",
]

WELL_EPS = 1e-7  # The Well's eps in the VRMSE denominator (the_well/benchmark/metrics/spatial.py)
WELL_WINDOWS = 5  # The Well's num_time_intervals: log-spaced roll-out windows (trainer/defaults.yaml)
SPECTRUM_FLOOR = 1e-10  # shells below this fraction of the true spectrum's peak are round-off (float32)


def _aligned(ensemble: Tensor, truth: Tensor, min_members: int) -> Tensor:
    """``ensemble`` checked, with size-1 dims inserted after dim 0 so that its members align with ``truth``
    from the right (members ``(M, S)`` against a truth ``(K, S)`` become ``(M, 1, S)``)."""
    if not isinstance(ensemble, Tensor) or not ensemble.is_floating_point() or ensemble.dim() < 1:
        raise ValueError(f"ensemble must be a float tensor (M, ...), got {getattr(ensemble, 'shape', ensemble)!r}")
    if ensemble.shape[0] < min_members:
        raise ValueError(f"the ensemble needs >= {min_members} members along dim 0, got shape {tuple(ensemble.shape)}")
    try:
        torch.broadcast_shapes(ensemble.shape[1:], truth.shape)
    except RuntimeError as err:
        raise ValueError(
            f"members {tuple(ensemble.shape[1:])} and truth {tuple(truth.shape)} do not broadcast"
        ) from err
    extra = truth.dim() - (ensemble.dim() - 1)
    return ensemble.reshape(ensemble.shape[0], *([1] * extra), *ensemble.shape[1:]) if extra > 0 else ensemble


def crps_ensemble(ensemble: Tensor, truth: Tensor, fair: bool = False, alpha: float | None = None) -> Tensor:
    """Pointwise CRPS of an ``M``-member ensemble (Gneiting & Raftery 2007, eq. 21; Ferro 2014)::

        CRPS   = (1/M) Σ_i |x_i − y| − 1/(2 M²)      Σ_{i,j} |x_i − x_j|     (the empirical CDF's CRPS)
        fCRPS  = (1/M) Σ_i |x_i − y| − 1/(2 M(M−1))  Σ_{i,j} |x_i − x_j|     (fair: unbiased, M >= 2)
        afCRPS = (1/M) Σ_i |x_i − y| − (1 − ε)/(2 M(M−1)) Σ_{i,j} |x_i − x_j|,  ε = (1 − α)/M

    The fair CRPS is the expected CRPS of the distribution the members are drawn from (independent
    members), so ensembles of different sizes compare on it; the plain one favours larger ensembles.
    The almost fair CRPS (Lang et al. 2024, AIFS-CRPS §2) mixes them: ``α = 1`` is the fair one, ``α = 0``
    the plain one; a training loss with ``α`` just below 1 keeps a gradient on every member when
    ``M = 2`` (the fair score is flat once one member hits the target). Differentiable in the members.
    ``Σ_{i,j} |x_i − x_j| = 2 Σ_i (2i − M − 1) x_(i)`` over the sorted members (``i`` 1-based): O(M log M).

    Args:
        ensemble: ``(M, *S)`` members.
        truth: ``(*S)``, or any shape the members broadcast with.
        fair: the fair estimator (``alpha = 1``); ignored when ``alpha`` is given.
        alpha: the almost fair CRPS's ``α ∈ [0, 1]``.

    Returns:
        ``broadcast(*S, truth.shape)`` CRPS per point, in the field's units (0 for a perfect point ensemble).

    Raises:
        ValueError: fewer than 2 members for ``α > 0``, ``α`` outside [0, 1], or shapes that do not broadcast.
    """
    alpha = (1.0 if fair else 0.0) if alpha is None else float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ensemble = _aligned(ensemble, truth, 2 if alpha > 0 else 1)
    m = ensemble.shape[0]
    skill = (ensemble - truth).abs().mean(0)  # (1/M) Σ_i |x_i − y|
    ranks = torch.arange(1, m + 1, device=ensemble.device, dtype=ensemble.dtype)
    weights = (2 * ranks - m - 1).reshape(m, *([1] * (ensemble.dim() - 1)))  # (M, 1, ...)
    pair_sum = 2 * (weights * ensemble.sort(dim=0).values).sum(0)  # Σ_{i,j} |x_i − x_j|, (*S)
    if alpha == 0.0:
        return skill - pair_sum / (2 * m * m)
    return skill - (1.0 - (1.0 - alpha) / m) * pair_sum / (2 * m * (m - 1))


@dataclass(frozen=True)
class SpreadSkill:
    """Ensemble spread against the error of the ensemble mean (Fortin et al. 2014, J. Hydrometeor. 15).

    Attributes:
        spread: ``sqrt(mean(s²))``, ``s² = Σ_i (x_i − x̄)² / (M − 1)`` the unbiased ensemble variance
            (= the members' mean variance × M/(M−1)), averaged over the reduced points.
        skill: ``sqrt(mean((x̄ − y)²))``, the RMSE of the ensemble mean over the same points.
        ratio: ``spread / skill``. A reliable ensemble (truth and members exchangeable) has
            ``E[(x̄ − y)²] = (M+1)/M · E[s²]``, so its ratio tends to ``sqrt(M/(M+1))`` (0.97 at M = 16),
            not 1; below that it is under-dispersed (over-confident), above over-dispersed.
        ratio_corrected: ``sqrt((M+1)/M) · ratio``, Fortin et al.'s finite-ensemble correction: 1 when reliable.
        members: ``M``.
    """

    spread: Tensor
    skill: Tensor
    ratio: Tensor
    ratio_corrected: Tensor
    members: int


def spread_skill(ensemble: Tensor, truth: Tensor, dim: tuple[int, ...] | None = None) -> SpreadSkill:
    """Spread, skill and their ratio (:class:`SpreadSkill`) averaged over the dims ``dim`` of the truth.

    Means of squares are taken first and rooted last (WeatherBench 2's convention), so the ratio compares
    the mean ensemble variance with the mean squared error of the ensemble mean.

    Args:
        ensemble: ``(M, *S)``, ``M >= 2``.
        truth: ``(*S)`` (or broadcastable).
        dim: dims of ``broadcast(*S, truth)`` to average over (e.g. cases, channels, pixels); None = all.

    Returns:
        :class:`SpreadSkill` whose tensors have the kept dims (scalars when ``dim`` is None).
    """
    ensemble = _aligned(ensemble, truth, 2)
    m = ensemble.shape[0]
    variance = ensemble.var(dim=0, correction=1)  # (*S), the unbiased s²
    error = (ensemble.mean(0) - truth).square()  # (*S')
    variance, error = torch.broadcast_tensors(variance, error)
    dims = tuple(range(error.dim())) if dim is None else dim
    spread, skill = variance.mean(dims).sqrt(), error.mean(dims).sqrt()
    ratio = spread / skill
    return SpreadSkill(spread, skill, ratio, ratio * math.sqrt((m + 1) / m), m)


@dataclass(frozen=True)
class RadialSpectrum:
    """A radially averaged (isotropic) energy spectrum.

    Attributes:
        energy: ``(..., K + 1)``: ``E(k) = Σ_{round|κ| = k} |û(κ)|²`` over the Fourier modes ``κ`` of shell
            ``k``, with ``û = FFT(u) / (H W)``, so that ``Σ_κ |û(κ)|² = mean(u²)`` (Parseval); field units².
        wavenumber: ``(K + 1,)`` float, ``k = 0 .. K``, ``K = min(H, W) // 2``: integer wave numbers, cycles
            per domain side. Modes in the corners (``|κ| > K + 1/2``) are in no shell.
        modes: ``(K + 1,)`` long, the number of modes in each shell (for a density: ``energy / modes``).
    """

    energy: Tensor
    wavenumber: Tensor
    modes: Tensor


def _shells(height: int, width: int, device: torch.device) -> tuple[Tensor, int]:
    """Shell index ``round(|κ|)`` of each mode ``(H·W,)`` (corner modes set to ``K + 1``) and ``K``."""
    k_y = torch.fft.fftfreq(height, 1.0 / height, device=device, dtype=torch.float64)  # (H,) integers
    k_x = torch.fft.fftfreq(width, 1.0 / width, device=device, dtype=torch.float64)  # (W,)
    radius = (k_y[:, None].square() + k_x[None, :].square()).sqrt().flatten()  # (H·W,)
    k_max = min(height, width) // 2
    return torch.round(radius).long().clamp_max(k_max + 1), k_max


def radial_energy_spectrum(field: Tensor) -> RadialSpectrum:
    """The isotropic energy spectrum of ``field`` ``(..., H, W)`` over its last two dims.

    ``E(k) = Σ_{κ : round(|κ|) = k} |FFT(u)(κ)|² / (H W)²`` for ``k = 0 .. min(H, W) // 2`` (integer wave
    numbers from ``fftfreq``); a sinusoid ``cos(2π k₀ x / W)`` has ``E(k₀) = 1/2`` and nothing elsewhere,
    white noise of variance ``σ²`` has ``E[E(k)] = σ² · modes(k) / (H W)`` (flat per mode).

    Returns:
        :class:`RadialSpectrum` with ``energy`` ``(..., K + 1)`` in the field's dtype.
    """
    if not isinstance(field, Tensor) or not field.is_floating_point() or field.dim() < 2:
        raise ValueError(f"field must be a float tensor (..., H, W), got {getattr(field, 'shape', field)!r}")
    height, width = field.shape[-2:]
    shell, k_max = _shells(height, width, field.device)
    power = torch.fft.fft2(field).abs().square() / (height * width) ** 2  # (..., H, W), Σ = mean(u²)
    flat = power.flatten(-2)  # (..., H·W)
    energy = flat.new_zeros(*flat.shape[:-1], k_max + 2).index_add_(-1, shell, flat)[..., : k_max + 1]
    modes = torch.bincount(shell, minlength=k_max + 2)[: k_max + 1]
    wavenumber = torch.arange(k_max + 1, device=field.device, dtype=field.dtype)
    return RadialSpectrum(energy, wavenumber, modes)


def spectrum_log_ratio(predicted: Tensor, true: Tensor, floor: float = SPECTRUM_FLOOR) -> Tensor:
    """``ln(E_pred(k) / E_true(k))`` per shell, both clamped below at ``floor · max_k E_true(k)``.

    0 where the spectra agree, ``ln 2 ≈ 0.69`` where the prediction holds twice the energy. The floor keeps
    shells that hold no energy (a constant field, round-off) finite: they count as agreeing.

    Args:
        predicted, true: ``(..., K + 1)`` energies (:func:`radial_energy_spectrum`), broadcastable.

    Returns:
        ``(..., K + 1)`` natural-log ratios.
    """
    scale = true.amax(-1, keepdim=True) * floor  # (..., 1)
    tiny = torch.finfo(true.dtype).tiny
    lo = scale.clamp_min(tiny)
    return torch.log(predicted.maximum(lo)) - torch.log(true.maximum(lo))


def vrmse(predicted: Tensor, truth: Tensor, eps: float = WELL_EPS) -> Tensor:
    """The Well's variance-scaled RMSE over the last two (spatial) dims (``VRMSE``, Ohana et al. 2024)::

        VRMSE(u, v) = sqrt( mean_xy (u − v)² / (var_xy(v) + eps) ),   var with Bessel's correction

    as ``the_well.benchmark.metrics.VRMSE`` (``NRMSE`` with ``norm_mode="std"``, ``eps = 1e-7``): predicting
    the true field's spatial mean scores ``sqrt((n − 1)/n) ≈ 1`` (``n = H W``), a perfect prediction 0.

    Args:
        predicted: ``(..., H, W)``.
        truth: ``(..., H, W)`` (broadcastable; ``v``, whose variance scales the error).

    Returns:
        ``(...)`` one VRMSE per field (e.g. per trajectory, step and channel).
    """
    if predicted.dim() < 2 or truth.dim() < 2:
        raise ValueError(f"VRMSE needs fields (..., H, W), got {tuple(predicted.shape)} and {tuple(truth.shape)}")
    mse = (predicted - truth).square().mean((-2, -1))
    variance = truth.flatten(-2).var(-1, correction=1)
    return (mse / (variance + eps)).sqrt()


def well_windows(steps: int, count: int = WELL_WINDOWS) -> tuple[int, ...]:
    """The Well's roll-out window boundaries for ``steps`` predicted steps (its ``split_up_losses``)::

        [0] + [int(exp(x)) for x in linspace(0, ln steps, min(steps, count))]

    with repeated boundaries dropped; e.g. 32 steps → ``(0, 1, 2, 5, 13, 32)``, windows "0:1" … "13:32".
    """
    if steps < 1:
        raise ValueError(f"need >= 1 step, got {steps}")
    points = np.linspace(0.0, math.log(steps), min(steps, count))
    bounds = [0] + [int(math.exp(x)) for x in points]
    bounds[-1] = steps  # exp(ln s) may round down to s − 1
    return tuple(sorted(set(bounds)))


def window_means(per_step: Tensor, boundaries: tuple[int, ...]) -> dict[str, float | str]:
    """Means of ``per_step`` ``(S,)`` over the windows ``[b_i, b_{i+1})`` of step indices (0-based: index 0
    is the first predicted step), named ``"b_i:b_{i+1}"`` as The Well names them ("6:12" = steps 7 to 12).

    A window that starts at or after ``S`` is "n/a" (the roll-out is shorter); one that ends after it is
    cut at ``S`` and keeps its name.
    """
    if per_step.dim() != 1:
        raise ValueError(f"per_step must be (S,), got {tuple(per_step.shape)}")
    if len(boundaries) < 2 or any(b < 0 for b in boundaries) or list(boundaries) != sorted(set(boundaries)):
        raise ValueError(f"window boundaries must be >= 2 increasing integers >= 0, got {list(boundaries)}")
    steps = per_step.shape[0]
    out: dict[str, float | str] = {}
    for start, end in itertools.pairwise(boundaries):
        name = f"{start}:{end}"
        out[name] = (f"n/a: the roll-out has {steps} steps" if start >= steps
                     else float(per_step[start:min(end, steps)].mean()))
    return out
