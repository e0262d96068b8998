"""Scaled Legendre bases and HiPPO-LegS projections of frame sequences (VLFM paper §3.1, DESIGN §4).

Time is video time in seconds. A video of ``N`` frames lasting ``T`` seconds has frame ``k``
(1-based) at ``t_k = k T / N`` (DESIGN §1). Its projection is a coefficient matrix ``H`` of shape
``(d, s)`` in the basis

    g_n(t) = √(2n+1) P_n(2t/T − 1),      n = 0 .. s−1,

which is orthonormal under the uniform *probability* measure ``(1/T) dt`` on ``[0, T]``; the signal is
read back as ``μ̄(t) = Σ_n H[:, n] g_n(t)`` (:func:`reconstruct`). The paper's ``√((2n+1)/2) P_n(t)``
is the normalisation on ``[−1, 1]`` and is not used (DESIGN §4).

Two projections return coefficients in this same convention:

- ``"legs"``: the paper's recurrence ``H_k = H_{k−1}(I − A/k)^T + u_k B^T / k``, a forward-Euler step
  of the HiPPO-LegS ODE ``t c'(t) = −A c + B f(t)`` whose exact solution is the projection onto
  ``g_n`` under ``(1/t) dt`` on ``[0, t]`` (Gu et al. 2020, LegS). Its coefficient ``H[:, 0]`` is
  exactly the mean of the frames; the others carry an ``O(1/N)`` discretisation bias. It needs
  ``N >= s``, and float64 roundoff in its cancelling products grows past ``s ≈ 48`` (measured: fine at
  ``N = s = 48``, max |H| = 20 for a unit signal at ``N = s = 64``, fine again at ``N = 2s``).
- ``"lstsq"``: the exact least-squares fit of the ``N`` frames at ``t_k`` by the first ``s`` basis
  functions; polynomials of degree ``< s`` are reproduced exactly.

Both are linear in the frames, so each is one ``(N, s)`` analysis matrix ``W`` built in float64 and
applied to every video with one matmul: ``H = frames^T W``. ``W`` depends on ``N`` and ``s`` only, not
on ``T``: dilating a video in time leaves ``H`` unchanged (the timescale equivariance of paper
Lemma 4.4), and ``T`` enters only when the coefficients are evaluated at times in seconds.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = [
    "PROJECTION_METHODS",
    "legendre_basis",
    "legendre_basis_derivative",
    "legs_matrices",
    "legs_projection",
    "projection_matrix",
    "reconstruct",
    "reconstruct_derivative",
]

PROJECTION_METHODS = ("legs", "lstsq")


def _check_order(s: int) -> None:
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ValueError(f"the number of basis functions s must be an integer >= 1, got {s!r}")


def _check_duration(T: float | Tensor) -> None:
    if isinstance(T, Tensor):
        if not T.is_floating_point() or not bool((T > 0).all()):
            raise ValueError(f"the duration T must be a positive float tensor (seconds), got {T}")
    elif isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0 or math.isinf(T):
        raise ValueError(f"the duration T must be a positive finite number of seconds, got {T!r}")


def _check_times(t: Tensor) -> None:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        what = t.dtype if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"times t must be a float tensor (seconds), got {what}")


def legs_matrices(s: int) -> tuple[Tensor, Tensor]:
    """The HiPPO-LegS state matrices (paper §3.1, Definitions F.1–F.2), float64.

    ``A[n, k] = √(2n+1) √(2k+1)`` if ``n > k``, ``n + 1`` if ``n = k``, 0 otherwise;
    ``B[n] = √(2n+1)``.

    Args:
        s: number of basis functions (the order of the approximation).

    Returns:
        ``A`` of shape ``(s, s)`` (lower triangular) and ``B`` of shape ``(s,)``.
    """
    _check_order(s)
    B = torch.sqrt(2.0 * torch.arange(s, dtype=torch.float64) + 1.0)
    A = torch.tril(torch.outer(B, B), diagonal=-1) + torch.diag(torch.arange(1, s + 1, dtype=torch.float64))
    return A, B


def _legendre_polynomials(x: Tensor, s: int) -> Tensor:
    """``P_0(x) .. P_{s−1}(x)`` by Bonnet's recurrence ``(n+1) P_{n+1} = (2n+1) x P_n − n P_{n−1}``.

    Args:
        x: any shape; values outside ``[−1, 1]`` give the polynomial continuation.

    Returns:
        Shape ``(*x.shape, s)``.
    """
    p = [torch.ones_like(x), x][:s]
    for n in range(1, s - 1):
        p.append(((2 * n + 1) * x * p[n] - n * p[n - 1]) / (n + 1))
    return torch.stack(p, dim=-1)


def _legendre_derivatives(p: Tensor) -> Tensor:
    """``P'_0 .. P'_{s−1}`` from ``P_n`` of shape ``(..., s)`` by ``P'_{n+1} = P'_{n−1} + (2n+1) P_n``."""
    s = p.shape[-1]
    zero = torch.zeros_like(p[..., 0])
    dp = [zero, torch.ones_like(zero)][:s]
    for n in range(1, s - 1):
        dp.append(dp[n - 1] + (2 * n + 1) * p[..., n])
    return torch.stack(dp, dim=-1)


def _normalisation(s: int, like: Tensor) -> Tensor:
    """``√(2n+1)`` for ``n < s``: makes ``P_n(2t/T − 1)`` orthonormal under ``(1/T) dt``."""
    return torch.sqrt(2.0 * torch.arange(s, dtype=like.dtype, device=like.device) + 1.0)


def legendre_basis(t: Tensor, T: float | Tensor, s: int) -> Tensor:
    """The scaled Legendre basis ``g_n(t) = √(2n+1) P_n(2t/T − 1)`` on ``[0, T]`` (DESIGN §4).

    Orthonormal under ``(1/T) dt`` on ``[0, T]``. Times outside ``[0, T]`` are not clamped: they give
    the polynomial continuation used to extrapolate.

    Args:
        t: times in seconds, any shape.
        T: duration in seconds, a number or a tensor broadcastable against ``t``.
        s: number of basis functions.

    Returns:
        Shape ``(*broadcast(t, T).shape, s)``.
    """
    _check_times(t)
    _check_duration(T)
    _check_order(s)
    x = 2.0 * t / T - 1.0
    return _legendre_polynomials(x, s) * _normalisation(s, x)


def legendre_basis_derivative(t: Tensor, T: float | Tensor, s: int) -> Tensor:
    """``d g_n / dt = √(2n+1) P'_n(2t/T − 1) · 2/T`` in closed form, per second.

    Shapes and arguments as in :func:`legendre_basis`.
    """
    _check_times(t)
    _check_duration(T)
    _check_order(s)
    x = 2.0 * t / T - 1.0
    dp = _legendre_derivatives(_legendre_polynomials(x, s))
    # Chain rule: x = 2t/T − 1, so dx/dt = 2/T.
    return dp * _normalisation(s, x) * (2.0 / (T if not isinstance(T, Tensor) else T.unsqueeze(-1)))


@functools.lru_cache(maxsize=64)  # called every training step with the same (N, s): build once
def _legs_analysis_matrix(N: int, s: int) -> Tensor:
    """``W`` with ``H_N = Σ_k u_k W[k]^T`` for the LegS recurrence, float64 ``(N, s)``.

    Unrolling ``c_k = (I − A/k) c_{k−1} + B u_k / k`` from ``c_0 = 0`` gives
    ``c_N = Σ_k P_k B u_k / k`` with ``P_k = (I − A/N) ⋯ (I − A/(k+1))``, built here from ``k = N`` down.
    """
    A, B = legs_matrices(s)
    eye = torch.eye(s, dtype=torch.float64)
    W = torch.empty(N, s, dtype=torch.float64)
    P = eye
    for k in range(N, 0, -1):
        W[k - 1] = P @ B / k
        P = P @ (eye - A / k)
    return W


@functools.lru_cache(maxsize=64)
def _lstsq_analysis_matrix(N: int, s: int) -> Tensor:
    """``W = pinv(G)^T`` for the design matrix ``G[k, n] = g_n(t_k)``, ``t_k = k T / N``; float64 ``(N, s)``.

    ``G`` depends on ``t_k / T = k / N`` only, so ``T = 1`` here loses nothing.
    """
    t = torch.arange(1, N + 1, dtype=torch.float64) / N
    G = legendre_basis(t, 1.0, s)  # (N, s)
    return torch.linalg.pinv(G).mT


# Largest condition number of the frames' design matrix G[k, n] = g_n(k / N) accepted for a projection.
# Coefficients H are stored and used in float32; reconstructing the frames from them loses about
# up to cond(G) x 1e-7 relative (measured at N = 32 on random frames: 7e-6-4e-5 at cond ~1e3, 2e-4 at
# 3e4, 13 at 3e9), so 1e3 keeps the fit at the frames within 1e-4 of the exact float64 least squares.
MAX_CONDITION = 1e3


def design_condition(N: int, s: int) -> float:
    """Condition number of ``G[k, n] = g_n(k / N)``, ``(N, s)``: how ill-posed fitting ``s`` Legendre
    polynomials to ``N`` evenly spaced frames is (~2.7 at N = 32, s = 8; ~3e9 at s = N = 32)."""
    t = torch.arange(1, N + 1, dtype=torch.float64) / N
    return float(torch.linalg.cond(legendre_basis(t, 1.0, s)))


def projection_matrix(N: int, s: int, method: str = "lstsq") -> Tensor:
    """The ``(N, s)`` float64 analysis matrix ``W`` of a projection: ``H = frames^T W``.

    Args:
        N: number of frames.
        s: number of basis functions; both methods need ``N >= s`` (see :func:`legs_projection`).
        method: ``"legs"`` or ``"lstsq"``.
    """
    _check_order(s)
    if method not in PROJECTION_METHODS:
        raise ValueError(f"unknown projection method {method!r}; valid: {', '.join(PROJECTION_METHODS)}")
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"the number of frames N must be an integer >= 1, got {N!r}")
    if N < s:
        # lstsq: fewer equations than unknowns. legs: the forward-Euler factors 1 − (n+1)/k are < −1
        # for k < n + 1 and the modes n >= N are never reset by the zero factor at k = n + 1, so H
        # blows up (measured max |H| ≈ 3e3 at N = 4, s = 8 and 5e8 at N = 8, s = 16, unit signal).
        raise ValueError(f"{method} projection needs at least s = {s} frames, got N = {N}")
    W = _legs_analysis_matrix(N, s) if method == "legs" else _lstsq_analysis_matrix(N, s)
    return W.clone()  # the cached matrix stays untouched whatever the caller does


def legs_projection(frames: Tensor, s: int, method: str = "lstsq") -> Tensor:
    """Project a sequence of frames onto the first ``s`` scaled Legendre polynomials (paper §3.2).

    Frame ``k`` (1-based) sits at ``t_k = k T / N``; the coefficients are those of the basis of
    :func:`legendre_basis` on ``[0, T]`` and do not depend on ``T`` (paper Lemma 4.4), which is why no
    duration is passed here.

    Args:
        frames: ``(..., N, d)`` — ``N`` frames of ``d`` features, any leading batch dimensions.
        s: number of basis functions, ``1 <= s <= N``.
        method: ``"lstsq"`` (default; the exact least-squares fit) or ``"legs"`` (the paper's
            recurrence ``H_k = H_{k−1}(I − A/k)^T + u_k B^T / k``, ``H_0 = 0``, with its ``O(1/N)`` bias).

    Returns:
        ``H`` of shape ``(..., d, s)`` in the dtype and on the device of ``frames``.

    Measured on ``sin(2π t/T + 0.3)`` with ``N = 32``: max reconstruction error on ``[0, T]`` of
    0.21 for ``legs`` at ``s = 8`` and 16 (halving as ``N`` doubles), and 1.6e-3 for ``lstsq`` at ``s = 8``.
    """
    if not isinstance(frames, Tensor) or not frames.is_floating_point() or frames.dim() < 2:
        what = (
            f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, Tensor) else type(frames).__name__
        )
        raise ValueError(f"frames must be a float tensor of shape (..., N, d), got {what}")
    if frames.shape[-1] == 0:
        raise ValueError(f"frames must have d >= 1 features, got shape {tuple(frames.shape)}")
    W = projection_matrix(frames.shape[-2], s, method).to(device=frames.device, dtype=frames.dtype)
    return frames.mT @ W  # (..., d, N) @ (N, s) -> (..., d, s)


def _basis_for(H: Tensor, t: Tensor, T: float | Tensor, derivative: bool) -> Tensor:
    """Basis (or its derivative) at ``t`` ``(..., M)`` for coefficients ``H`` ``(..., d, s)``: ``(..., M, s)``."""
    if not isinstance(H, Tensor) or H.dim() < 2:
        raise ValueError(f"H must be a tensor of shape (..., d, s), got {getattr(H, 'shape', type(H))}")
    _check_times(t)
    if t.dim() < 1:
        raise ValueError(f"times t must have shape (M,) or (..., M), got a scalar {t}")
    if isinstance(T, Tensor):
        # A per-video duration of shape (...) applies to all M times of that video.
        T = T.to(H.dtype).unsqueeze(-1) if T.dim() > 0 else T.to(H.dtype)
    fn = legendre_basis_derivative if derivative else legendre_basis
    return fn(t.to(H.dtype), T, H.shape[-1])


def reconstruct(H: Tensor, t: Tensor, T: float | Tensor) -> Tensor:
    """Evaluate the projected signal ``μ̄(t) = Σ_n H[..., n] g_n(t)`` (DESIGN §4).

    Args:
        H: coefficients ``(..., d, s)`` from :func:`legs_projection`.
        t: times in seconds, ``(M,)`` shared by every video, or ``(..., M)`` per video (broadcast
            against the leading dimensions of ``H``). Times outside ``[0, T]`` extrapolate.
        T: duration in seconds, a number or a tensor of shape ``(...)`` (one per video).

    Returns:
        ``(..., M, d)``.
    """
    return _basis_for(H, t, T, derivative=False) @ H.mT  # (..., M, s) @ (..., s, d)


def reconstruct_derivative(H: Tensor, t: Tensor, T: float | Tensor) -> Tensor:
    """``dμ̄/dt`` per second at ``t``, in closed form; arguments and shapes as in :func:`reconstruct`."""
    return _basis_for(H, t, T, derivative=True) @ H.mT
