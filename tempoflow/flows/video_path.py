"""The VLFM video latent probability path (VLFM paper §3.2 eq. (3), DESIGN §4).

Flow time *is* video time in seconds: noise at ``t = 0``, frame ``k`` of ``N`` near ``t = k T / N``.
Given the Legendre coefficients ``H`` ``(d, s)`` of a latent video (:mod:`tempoflow.flows.legendre`),

    ψ_t = σ_t z + μ_t,        μ_t = (1 − e^{−α t}) μ̄(t),        μ̄(t) = Σ_n H[:, n] g_n(t),

with ``z ~ N(0, I_d)`` and the regression target ``dψ_t/dt = σ'_t z + μ'_t``. The factor
``1 − e^{−α t}`` makes ``μ_0 = 0`` as the paper requires (``H g(0) ≠ 0``), so ``ψ_0 = z`` exactly.

Two noise schedules (``t`` in seconds, ``α`` per second):

- ``"renoise"`` (the paper's): ``σ_t = (1 − σ_min)(sin²(π N t / T) + e^{−α t}) + σ_min``, which re-noises
  between frames; at the frame times ``sin² = 0`` and ``σ_t = (1 − σ_min) e^{−α t} + σ_min``, i.e. the
  paper's ``σ_min`` only up to ``e^{−α t}``.
- ``"decay"``: ``σ_t = (1 − σ_min) e^{−α t} + σ_min``, no re-noising.

Before the first frame (``t < T/N``) the Legendre fit extrapolates backwards, and a polynomial of
degree s − 1 through N points swings hardest just outside them: on shapes (N = 8, s = 6) 84 % of
``‖μ̄'‖²`` over ``[0, T]`` lies in ``[0, T/N)``, where no frame exists. ``hold_first_frame=True`` holds
the trajectory there at its first-frame value, ``μ̄(t) = μ̄(T/N)`` and ``μ̄'(t) = 0`` for ``t < T/N``
(continuous, with a kink at the first frame), so that a network regressing ``μ̄'`` learns motion
between frames instead of the fit's swing before them. ``False`` keeps the paper's path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tempoflow.flows.legendre import reconstruct, reconstruct_derivative

__all__ = ["SIGMA_SCHEDULES", "VideoLatentPath", "VideoPathSample", "trajectory"]

SIGMA_SCHEDULES = ("renoise", "decay")


@dataclass
class VideoPathSample:
    """One draw from the video latent path, for a batch of ``B`` videos.

    Attributes:
        psi_t: the point on the path ``σ_t z + μ_t``, shape ``(B, d)``.
        d_psi_t: the velocity target ``σ'_t z + μ'_t`` (per second), shape ``(B, d)``.
        t: times in seconds, shape ``(B,)``.
        z: the noise, shape ``(B, d)``.
    """

    psi_t: Tensor
    d_psi_t: Tensor
    t: Tensor
    z: Tensor


def _check_frames(N: int) -> None:
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"the number of frames N must be an integer >= 1, got {N!r}")


def _check_coefficients(H: Tensor) -> None:
    if not isinstance(H, Tensor) or not H.is_floating_point() or H.dim() != 3:
        raise ValueError(f"H must be a float tensor of shape (B, d, s), got {getattr(H, 'shape', type(H))}")


def _check_duration(T: float | Tensor, batch: int) -> None:
    if isinstance(T, Tensor):
        if not T.is_floating_point() or T.shape not in ((), (batch,)):
            raise ValueError(f"T must be a float or a float tensor of shape ({batch},), got {T}")
        if not bool((T > 0).all()):
            raise ValueError(f"the duration T must be positive (seconds), got {T}")
    elif isinstance(T, bool) or not isinstance(T, (int, float)) or not 0 < T < math.inf:
        raise ValueError(f"the duration T must be a positive finite number of seconds, got {T!r}")


def trajectory(H: Tensor, t: Tensor, T: float | Tensor, hold_until: float | Tensor = 0.0) -> tuple[Tensor, Tensor]:
    """The clean trajectory ``μ̄(t)`` and ``μ̄'(t)`` (per second), held constant before ``hold_until``.

    Args:
        H: Legendre coefficients ``(B, d, s)``.
        t: times in seconds, ``(M,)`` or ``(B, M)``.
        T: durations in seconds, a number or ``(B,)``.
        hold_until: seconds, a number or a tensor broadcastable against ``t`` (``(B, 1)``); 0 = no hold.

    Returns:
        ``(μ̄, μ̄')``, each ``(B, M, d)``.
    """
    if not isinstance(hold_until, Tensor) and hold_until <= 0:
        return reconstruct(H, t, T), reconstruct_derivative(H, t, T)
    held = t < hold_until  # (M,) or (B, M)
    t_eval = torch.where(held, hold_until, t) if isinstance(hold_until, Tensor) else t.clamp(min=hold_until)
    mean = reconstruct(H, t_eval, T)
    derivative = reconstruct_derivative(H, t_eval, T) * (~held).unsqueeze(-1).to(H.dtype)
    return mean, derivative


@dataclass(frozen=True)
class VideoLatentPath:
    """The VLFM path ``ψ_t = σ_t z + (1 − e^{−α t}) μ̄(t)`` (paper eq. (3), DESIGN §4).

    Attributes:
        schedule: ``"renoise"`` (the paper's σ, re-noising between frames) or ``"decay"``.
        sigma_min: the noise floor ``σ_min`` (paper §5.1: 0.01).
        alpha: the decay rate ``α`` in 1/seconds of both ``e^{−α t}`` terms (paper §5.1: 10).
        hold_first_frame: hold ``μ̄`` at the first frame before it (module docstring); needs ``N``.
    """

    schedule: str = "renoise"
    sigma_min: float = 0.01
    alpha: float = 10.0
    hold_first_frame: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SIGMA_SCHEDULES:
            raise ValueError(f"unknown sigma schedule {self.schedule!r}; valid: {', '.join(SIGMA_SCHEDULES)}")
        if not 0.0 < self.sigma_min < 1.0:
            raise ValueError(f"sigma_min must lie in (0, 1), got {self.sigma_min}")
        if not 0.0 < self.alpha < math.inf:
            raise ValueError(f"alpha must be a positive finite rate (1/seconds), got {self.alpha}")

    def sigma(self, t: Tensor, T: float | Tensor, N: int) -> Tensor:
        """``σ_t`` at times ``t`` (seconds, any shape); ``T`` broadcastable against ``t``; same shape."""
        decay = torch.exp(-self.alpha * t)
        if self.schedule == "decay":
            return (1.0 - self.sigma_min) * decay + self.sigma_min
        renoise = torch.sin(math.pi * N * t / T) ** 2
        return (1.0 - self.sigma_min) * (renoise + decay) + self.sigma_min

    def d_sigma(self, t: Tensor, T: float | Tensor, N: int) -> Tensor:
        """``dσ_t/dt`` per second; arguments as in :meth:`sigma`."""
        d_decay = -self.alpha * torch.exp(-self.alpha * t)
        if self.schedule == "decay":
            return (1.0 - self.sigma_min) * d_decay
        # d/dt sin²(ω t) = ω sin(2ω t) with ω = π N / T.
        omega = math.pi * N / T
        return (1.0 - self.sigma_min) * (omega * torch.sin(2.0 * omega * t) + d_decay)

    def hold_until(self, T: float | Tensor, N: int | None) -> float | Tensor:
        """Seconds before which ``μ̄`` is held: the first frame ``T / N``, or 0 without the hold.
        A per-video ``T`` ``(B,)`` gives ``(B, 1)``, to broadcast against times ``(B, M)``."""
        if not self.hold_first_frame:
            return 0.0
        if N is None:
            raise ValueError("hold_first_frame needs the number of frames N")
        _check_frames(N)
        return T.unsqueeze(-1) / N if isinstance(T, Tensor) and T.dim() == 1 else T / N

    def mean(self, H: Tensor, t: Tensor, T: float | Tensor, N: int | None = None) -> Tensor:
        """The path centre ``μ_t = (1 − e^{−α t}) μ̄(t)`` at many times.

        Args:
            H: Legendre coefficients ``(B, d, s)``.
            t: times in seconds, ``(M,)`` shared by the batch or ``(B, M)``.
            T: durations in seconds, a number or ``(B,)``.
            N: frames per video (needed with ``hold_first_frame``).

        Returns:
            ``(B, M, d)``.
        """
        _check_coefficients(H)
        _check_duration(T, H.shape[0])
        ramp = 1.0 - torch.exp(-self.alpha * t)  # (M,) or (B, M)
        return ramp.unsqueeze(-1) * trajectory(H, t, T, self.hold_until(T, N))[0]

    def d_mean(self, H: Tensor, t: Tensor, T: float | Tensor, N: int | None = None) -> Tensor:
        """``dμ_t/dt = α e^{−α t} μ̄(t) + (1 − e^{−α t}) μ̄'(t)`` per second; as :meth:`mean`."""
        _check_coefficients(H)
        _check_duration(T, H.shape[0])
        decay = torch.exp(-self.alpha * t).unsqueeze(-1)  # (M, 1) or (B, M, 1)
        mean, derivative = trajectory(H, t, T, self.hold_until(T, N))
        return self.alpha * decay * mean + (1.0 - decay) * derivative

    def sample(self, H: Tensor, z: Tensor, t: Tensor, T: float | Tensor, N: int) -> VideoPathSample:
        """Draw ``ψ_t = σ_t z + μ_t`` and its target ``dψ_t/dt = σ'_t z + μ'_t`` (paper §3.3).

        Args:
            H: Legendre coefficients of each video's latent frames, ``(B, d, s)``.
            z: noise ``(B, d)``.
            t: one time per video in seconds, ``(B,)`` (training draws ``t ~ U[0, T]``).
            T: durations in seconds, a number or ``(B,)``.
            N: number of frames of the videos (sets the re-noising frequency ``N / T``).

        Returns:
            A :class:`VideoPathSample` with ``psi_t`` and ``d_psi_t`` of shape ``(B, d)``.
        """
        _check_coefficients(H)
        B, d, _ = H.shape
        if not isinstance(z, Tensor) or z.shape != (B, d):
            raise ValueError(f"z must have shape ({B}, {d}) to match H, got {getattr(z, 'shape', type(z))}")
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.shape != (B,):
            raise ValueError(
                f"t must be a float tensor of shape ({B},) in seconds, got {getattr(t, 'shape', t)}"
            )
        _check_frames(N)
        _check_duration(T, B)
        if isinstance(T, Tensor):
            T = T.to(H.dtype)
        T_col = T.unsqueeze(-1) if isinstance(T, Tensor) and T.dim() == 1 else T  # (B, 1) or scalar
        t_col = t.unsqueeze(-1)  # (B, 1): one time per video
        sigma = self.sigma(t_col, T_col, N)  # (B, 1)
        d_sigma = self.d_sigma(t_col, T_col, N)  # (B, 1)
        mu = self.mean(H, t_col, T, N).squeeze(-2)  # (B, 1, d) -> (B, d)
        d_mu = self.d_mean(H, t_col, T, N).squeeze(-2)  # (B, d)
        return VideoPathSample(psi_t=sigma * z + mu, d_psi_t=d_sigma * z + d_mu, t=t, z=z)

    def data_step(self, psi: Tensor, mean: Tensor, change: Tensor, t: float, t_next: float, sigma_t: float,
                  sigma_next: float, fresh: Tensor | None = None) -> Tensor:
        """One step of the path from a data prediction (``vlfm.prediction="data"``, module docstring of
        ``tempoflow.methods.vlfm``): ``ψ_t`` to ``ψ_{t+h}`` given the predicted ``μ̄̂(t)`` and ``μ̄̂'(t)``.

        With ``ẑ σ_t = ψ_t − (1 − e^{−αt}) μ̄̂`` and ``μ_{t+h} = (1 − e^{−α(t+h)}) (μ̄̂ + h μ̄̂')``:
        ``ψ_{t+h} = μ_{t+h} + (σ_{t+h} / σ_t) σ_t ẑ`` (the deterministic flow, exact for an exact
        prediction of a trajectory linear in t), or, given ``fresh`` noise where σ rises,
        ``ψ_{t+h} = μ_{t+h} + σ_t ẑ + √(σ²_{t+h} − σ²_t) ε`` (ancestral: the path's marginal at t+h).

        Args:
            psi: ``ψ_t``; mean: ``μ̄̂(t)``; change: ``μ̄̂'(t)`` per second; all the same shape.
            t, t_next: the step's ends in seconds; sigma_t, sigma_next: ``σ`` there.
            fresh: standard normal noise shaped like ``psi``, used only where ``sigma_next > sigma_t``.

        Returns:
            ``ψ_{t+h}``, shaped like ``psi``.
        """
        residual = psi - (1 - math.exp(-self.alpha * t)) * mean  # σ_t ẑ
        mu_next = (1 - math.exp(-self.alpha * t_next)) * (mean + (t_next - t) * change)
        if fresh is not None and sigma_next > sigma_t:
            return mu_next + residual + math.sqrt(sigma_next**2 - sigma_t**2) * fresh
        return mu_next + (sigma_next / sigma_t) * residual
