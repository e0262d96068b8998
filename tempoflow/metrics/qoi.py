"""Quantities of interest of physics trajectories and 1-D Wasserstein distances between them.

Stochastic Lifting (seed 001), appendix D.4: a trajectory ``u`` of shape ``(T, C, H, W)`` is reduced to
a scalar — the mass ``m(x_t) = ‖x_t‖_1 / n`` of each frame, or the crossing time ``τ`` at which the field
first exceeds a threshold on a region — and the generated and true distributions of that scalar over
many trajectories are compared by the exact 1-D ``W_2``, computed from quantile functions
(Table 1's WIM and WCT). Appendix C's nearest-neighbour check that samples are not copies of training
trajectories is :func:`memorisation_report`. DESIGN §5.

Every function is batched torch and runs on the inputs' device; distances are computed in float64.
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch
from torch import Tensor

__all__ = [
    "CROSSING_REDUCTIONS",
    "MemorisationReport",
    "crossing_time",
    "crossing_time_w2",
    "mass",
    "mass_w2",
    "memorisation_report",
    "wasserstein_1d",
]

# How "u(t, x) > c for x ∈ B" is read on a region B. The paper's set notation (D.4) asks every point of B
# to exceed c, which is "min"; "mean" and "max" (the first point of B to exceed c) are common variants.
CROSSING_REDUCTIONS = ("min", "mean", "max")


def _check_samples(name: str, x: Tensor) -> None:
    """``x`` a finite float tensor ``(..., N)`` with ``N >= 1``."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1:
        what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor (..., N) of samples, got {what}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has no samples: shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} of shape {tuple(x.shape)} has non-finite values (NaN or inf); crossing times of "
            "trajectories that never cross are inf: censor them first (crossing_time_w2 does)"
        )


def _merged_quantile_indices(n: int, m: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Pieces on which the quantile functions of ``n`` and ``m`` equally weighted samples are both constant.

    With the common denominator ``n m`` the breakpoints ``i/n`` and ``j/m`` are the integers ``i m`` and
    ``j n``, so the merge is exact. On the piece ``(u_{k−1}, u_k]`` the left-continuous quantile function is
    ``F⁻¹(u) = x_(⌈u_k n⌉)`` (1-based order statistic).

    Returns:
        widths ``(n + m,)`` float64 summing to 1 (zero where breakpoints coincide), and 0-based indices
        ``(n + m,)`` into the sorted first and second samples.
    """
    ends_a = torch.arange(1, n + 1, device=device, dtype=torch.int64) * m  # (n,) i/n in units of 1/(nm)
    ends_b = torch.arange(1, m + 1, device=device, dtype=torch.int64) * n  # (m,)
    ends = torch.cat([ends_a, ends_b]).sort().values  # (n + m,) right ends u_k
    widths = torch.diff(ends, prepend=ends.new_zeros(1)).to(torch.float64) / (n * m)  # (n + m,)
    idx_a = (ends + m - 1) // m - 1  # ⌈u_k n⌉ − 1 = ⌈ends / m⌉ − 1
    idx_b = (ends + n - 1) // n - 1
    return widths, idx_a, idx_b


def wasserstein_1d(a: Tensor, b: Tensor, p: float = 2.0) -> Tensor:
    """Exact ``W_p`` between two 1-D empirical distributions with equally weighted samples.

    ``W_p^p = ∫_0^1 |F_a⁻¹(u) − F_b⁻¹(u)|^p du``; both quantile functions are piecewise constant, so the
    integral is a finite sum over the merged breakpoints ``{i/n} ∪ {j/m}`` and the counts may differ.
    Matches ``ot.wasserstein_1d(a, b, p=p) ** (1/p)`` (POT returns ``W_p^p``).

    Args:
        a: samples ``(..., n)``; leading dimensions are batch dimensions.
        b: samples ``(..., m)``; leading dimensions broadcast against those of ``a``.
        p: order, ``>= 1``.

    Returns:
        ``W_p`` (not ``W_p^p``), float64, shape of the broadcast leading dimensions (0-dim for 1-D input),
        in the samples' units.
    """
    if not p >= 1.0 or math.isinf(p):
        raise ValueError(f"p must be a finite number >= 1, got {p}")
    _check_samples("a", a)
    _check_samples("b", b)
    if a.device != b.device:
        raise ValueError(f"a and b are on different devices: {a.device} and {b.device}")
    try:
        batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except RuntimeError as err:
        raise ValueError(
            f"leading dimensions of a {tuple(a.shape)} and b {tuple(b.shape)} do not broadcast"
        ) from err
    n, m = a.shape[-1], b.shape[-1]
    a_sorted = a.to(torch.float64).sort(dim=-1).values.expand(*batch, n)  # (..., n)
    b_sorted = b.to(torch.float64).sort(dim=-1).values.expand(*batch, m)  # (..., m)
    widths, idx_a, idx_b = _merged_quantile_indices(n, m, a.device)
    qa = a_sorted[..., idx_a]  # (..., n + m) F_a⁻¹ on each piece
    qb = b_sorted[..., idx_b]  # (..., n + m) F_b⁻¹ on each piece
    cost = ((qa - qb).abs() ** p * widths).sum(-1)  # (...) W_p^p
    return cost ** (1.0 / p)


def _check_field(name: str, u: Tensor) -> None:
    if not isinstance(u, Tensor) or not u.is_floating_point() or u.dim() != 5:
        what = f"{u.dtype} {tuple(u.shape)}" if isinstance(u, Tensor) else type(u).__name__
        raise ValueError(f"{name} must be a float trajectory batch (M, T, C, H, W), got {what}")
    if u.shape[0] == 0 or u.shape[1] == 0:
        raise ValueError(f"{name} needs at least one trajectory and one frame, got shape {tuple(u.shape)}")


def _region_statistic(u: Tensor, region: Tensor, reduce: str, channel: int | None) -> Tensor:
    """``(M, T, C, H, W)`` -> ``(M, T)``: the field reduced over the region's points (and channels)."""
    fields = u if channel is None else u[:, :, channel : channel + 1]  # (M, T, C', H, W)
    inside = fields[..., region]  # (M, T, C', R) points of B only
    inside = inside.flatten(2)  # (M, T, C' R)
    if reduce == "min":
        return inside.amin(-1)
    if reduce == "max":
        return inside.amax(-1)
    return inside.mean(-1)


def crossing_time(
    u: Tensor,
    times: Tensor,
    threshold: float,
    region: Tensor,
    reduce: str = "min",
    channel: int | None = None,
    interpolate: bool = False,
) -> Tensor:
    """First time at which each trajectory exceeds ``threshold`` on ``region`` (appendix D.4).

    ``τ(u) = min{t ∈ 𝒯 : u(t, x) > c for x ∈ B}``. The region statistic ``s(t)`` (see ``reduce``) must
    exceed ``c`` strictly. With ``interpolate=True`` the crossing is placed where the straight line between
    the last frame at or below ``c`` and the first frame above it meets ``c``; a crossing at the first
    frame is ``times[0]`` either way.

    Args:
        u: fields ``(M, T, C, H, W)``.
        times: frame times ``(T,)``, strictly increasing, in seconds (the paper normalises them to
            ``[0, 1]`` before computing W2; pass normalised times to reproduce its numbers).
        threshold: ``c``, in the field's units.
        region: boolean mask ``(H, W)`` of the set ``B``, at least one point.
        reduce: how ``s(t)`` summarises ``B``: ``"min"`` (every point exceeds ``c``: the paper's set
            notation, default), ``"mean"`` or ``"max"`` (some point exceeds ``c``).
        channel: which field to test; ``None`` reduces over all channels together.
        interpolate: linear interpolation between the two frames around the crossing.

    Returns:
        ``(M,)`` crossing times in the units of ``times``, in ``u``'s dtype (float64 if ``times`` is);
        ``inf`` for trajectories that never cross, so ``torch.isfinite(τ)`` is the crossed mask. Censor
        before a W2 (:func:`crossing_time_w2`).
    """
    _check_field("u", u)
    num_frames, height, width = u.shape[1], u.shape[3], u.shape[4]
    if not isinstance(times, Tensor) or times.shape != (num_frames,) or not times.is_floating_point():
        what = f"{times.dtype} {tuple(times.shape)}" if isinstance(times, Tensor) else type(times).__name__
        raise ValueError(f"times must be a float tensor ({num_frames},), got {what}")
    if num_frames > 1 and not bool((times.diff() > 0).all()):
        raise ValueError(f"times must be strictly increasing, got {times.tolist()}")
    if not isinstance(region, Tensor) or region.dtype != torch.bool or region.shape != (height, width):
        what = (
            f"{region.dtype} {tuple(region.shape)}" if isinstance(region, Tensor) else type(region).__name__
        )
        raise ValueError(f"region must be a bool mask ({height}, {width}), got {what}")
    if not bool(region.any()):
        raise ValueError("region is empty: the mask has no True entry")
    if reduce not in CROSSING_REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; valid: {', '.join(CROSSING_REDUCTIONS)}")
    if channel is not None and not 0 <= channel < u.shape[2]:
        raise ValueError(f"channel {channel} out of range for {u.shape[2]} channels")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")

    dtype = torch.promote_types(u.dtype, times.dtype)
    times = times.to(device=u.device, dtype=dtype)
    s = _region_statistic(u, region.to(u.device), reduce, channel).to(dtype)  # (M, T)
    above = s > threshold  # (M, T)
    crossed = above.any(-1)  # (M,)
    k = above.to(torch.int8).argmax(-1)  # (M,) first frame above c (0 where none is)
    tau = times[k]  # (M,)
    if interpolate:
        prev = (k - 1).clamp_min(0)  # (M,) last frame at or below c
        s_prev, s_k = s.gather(1, prev[:, None])[:, 0], s.gather(1, k[:, None])[:, 0]  # (M,) each
        # s_prev <= c < s_k, so the fraction lies in [0, 1) and the denominator is positive.
        frac = ((threshold - s_prev) / (s_k - s_prev).clamp_min(torch.finfo(dtype).tiny)).clamp(0, 1)
        tau_lin = times[prev] + frac * (times[k] - times[prev])  # (M,)
        tau = torch.where(k > 0, tau_lin, tau)
    return torch.where(crossed, tau, torch.full_like(tau, math.inf))


def crossing_time_w2(tau_gen: Tensor, tau_true: Tensor, censor_time: float) -> Tensor:
    """WCT of Table 1: ``W_2`` between generated and true crossing times, never-crossed ones censored.

    A trajectory that never crosses (``τ = inf``) is given the time ``censor_time`` — e.g. the last frame
    time plus one frame step — so that missing crossings cost a finite, comparable amount.

    Args:
        tau_gen: ``(M1,)`` crossing times from :func:`crossing_time`.
        tau_true: ``(M2,)``, the same units.
        censor_time: finite time that replaces ``inf``; must not precede any finite crossing time.

    Returns:
        0-dim float64 ``W_2``, in the units of the times.
    """
    if not math.isfinite(censor_time):
        raise ValueError(f"censor_time must be finite, got {censor_time}")
    censored = []
    for name, tau in (("tau_gen", tau_gen), ("tau_true", tau_true)):
        if not isinstance(tau, Tensor) or tau.dim() != 1 or not tau.is_floating_point():
            what = f"{tau.dtype} {tuple(tau.shape)}" if isinstance(tau, Tensor) else type(tau).__name__
            raise ValueError(f"{name} must be a float tensor (M,), got {what}")
        if bool(tau.isnan().any()) or bool((tau == -math.inf).any()):
            raise ValueError(f"{name} holds NaN or -inf; crossing times are finite or +inf")
        finite = tau[tau.isfinite()]
        if finite.numel() and float(finite.max()) > censor_time:
            raise ValueError(
                f"censor_time {censor_time} precedes a crossing time {float(finite.max())} of {name}"
            )
        censored.append(torch.where(tau.isfinite(), tau, torch.full_like(tau, censor_time)))
    return wasserstein_1d(censored[0], censored[1], p=2.0)


def mass(u: Tensor) -> Tensor:
    """Mass of each frame, ``m(x_t) = ‖x_t‖_1 / n`` — the mean ``|u|`` over ``(C, H, W)`` (appendix D.4).

    Args:
        u: fields ``(M, T, C, H, W)``.

    Returns:
        ``(M, T)``, in the field's units and dtype.
    """
    _check_field("u", u)
    return u.abs().mean(dim=(2, 3, 4))


def mass_w2(u_gen: Tensor, u_true: Tensor) -> float:
    """WIM of Table 1: ``(1/T) Σ_t W_2(m♯ρ̂_t, m♯ρ̃_t)``, the per-frame mass distributions' W2 averaged over time.

    Args:
        u_gen: generated trajectories ``(M1, T, C, H, W)``.
        u_true: true trajectories ``(M2, T, C, H, W)``; the same frames, fields and grid.

    Returns:
        The time-averaged W2, in the field's units.
    """
    _check_field("u_gen", u_gen)
    _check_field("u_true", u_true)
    if u_gen.shape[1:] != u_true.shape[1:]:
        raise ValueError(
            f"u_gen {tuple(u_gen.shape)} and u_true {tuple(u_true.shape)} differ past the batch dim"
        )
    per_frame = wasserstein_1d(mass(u_gen).T, mass(u_true).T, p=2.0)  # (T,) one W2 per frame
    return float(per_frame.mean())


class MemorisationReport(TypedDict):
    """Nearest-neighbour distances of :func:`memorisation_report` (a plain dict, JSON-ready but for tensors).

    ``sample_to_train``: ``(N,)`` L2 distance of each sample to its k-th nearest training trajectory.
    ``train_to_train``: ``(M,)`` the same for each training trajectory among the others (leave-one-out).
    ``*_min`` / ``*_median``: summaries of the two. ``ratio``: ``sample_median / train_median``; near or
    above 1 means samples sit as far from the training set as its members sit from each other, near 0 means
    copies (``inf`` if the training set holds duplicates only, ``nan`` if both medians are 0).
    """

    sample_to_train: Tensor
    train_to_train: Tensor
    sample_min: float
    sample_median: float
    train_min: float
    train_median: float
    ratio: float


def memorisation_report(samples: Tensor, train: Tensor, k: int = 1) -> MemorisationReport:
    """Are samples copies of training trajectories? Appendix C's nearest-neighbour check, as numbers.

    Compares the distance from each generated trajectory to its k-th nearest training trajectory with the
    distance from each training trajectory to its k-th nearest *other* training trajectory. Distances are
    Euclidean over the whole flattened trajectory; ``torch.cdist`` runs without the matrix-product shortcut
    so that an exact copy is at distance exactly 0 (the shortcut's cancellation leaves ~1e-3).

    Args:
        samples: generated trajectories ``(N, ...)``, e.g. ``(N, T, C, H, W)``.
        train: training trajectories ``(M, ...)`` with the same trailing shape, ``M >= k + 1``.
        k: which neighbour (1 = the nearest), ``1 <= k < M``.

    Returns:
        A :class:`MemorisationReport` dict; distances in the field's units.
    """
    for name, x in (("samples", samples), ("train", train)):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a float tensor (N, ...) with N >= 1, got {what}")
    if samples.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"samples {tuple(samples.shape)} and train {tuple(train.shape)} differ past the batch dim"
        )
    if samples.device != train.device:
        raise ValueError(f"samples and train are on different devices: {samples.device} and {train.device}")
    if not 1 <= k < train.shape[0]:
        raise ValueError(
            f"k must lie in [1, {train.shape[0] - 1}] for {train.shape[0]} training trajectories, got {k}"
        )

    dtype = torch.promote_types(samples.dtype, train.dtype)
    s_flat = samples.flatten(1).to(dtype)  # (N, D)
    t_flat = train.flatten(1).to(dtype)  # (M, D)
    exact = "donot_use_mm_for_euclid_dist"
    d_st = torch.cdist(s_flat[None], t_flat[None], compute_mode=exact)[0]  # (N, M)
    d_tt = torch.cdist(t_flat[None], t_flat[None], compute_mode=exact)[0]  # (M, M)
    d_tt.fill_diagonal_(math.inf)  # leave-one-out: a trajectory is not its own neighbour
    sample_to_train = d_st.topk(k, dim=1, largest=False).values[:, -1]  # (N,)
    train_to_train = d_tt.topk(k, dim=1, largest=False).values[:, -1]  # (M,)

    # quantile(0.5) averages the two middle values of an even count; Tensor.median takes the lower one.
    sample_median = float(sample_to_train.quantile(0.5))
    train_median = float(train_to_train.quantile(0.5))
    if train_median > 0:
        ratio = sample_median / train_median
    else:
        ratio = math.nan if sample_median == 0 else math.inf
    return MemorisationReport(
        sample_to_train=sample_to_train,
        train_to_train=train_to_train,
        sample_min=float(sample_to_train.min()),
        sample_median=sample_median,
        train_min=float(train_to_train.min()),
        train_median=train_median,
        ratio=ratio,
    )
