"""A noise-injected next-frame model trained with the (almost) fair CRPS: ``crps`` (FGN, Alet et al. 2025,
arXiv 2506.10772; AIFS-CRPS, Lang et al. 2024, arXiv 2412.15832; DESIGN §5).

The data, window and UNet of ``lifting``; like lifting, one network call per frame and sample, but the
randomness is *fresh noise at every call*, and what makes the calls spread like the data is the loss, not a
fixed label per pair::

    x̂ = F_θ(w, ξ),   ξ ~ N(0, I_d) drawn anew at every call

``ξ`` enters as FGN's noise does — a low-dimensional Gaussian through conditional normalisation of every
block — here lifting's label path: a 2-layer MLP and FiLM after the GroupNorm of every residual block.

Training, for a batch of pairs ``(w, y)``: ``M`` members per pair from independent noises, scored pixelwise
by the almost fair CRPS (AIFS-CRPS §2; Ferro 2014 for the fair CRPS), averaged over pixels and pairs::

    x̂_i = F_θ(w, ξ_i),  i = 1..M
    afCRPS_α = 1/M Σ_i |x̂_i − y| − (1 − ε) / (2M(M − 1)) Σ_{i≠j} |x̂_i − x̂_j|,    ε = (1 − α) / M

``α = 1`` is the fair CRPS, an unbiased estimate of the CRPS of the distribution the members are drawn from,
whatever ``M`` (so its expectation is minimised by members drawn from the true conditional law); ``α = 0`` is
the CRPS of the ``M``-member empirical distribution (``properscoring.crps_ensemble``), which rewards too small
a spread at small ``M``; in between, ``α fCRPS + (1 − α) CRPS``. AIFS-CRPS takes ``α = 0.95``: the fair score
alone has flat directions (with ``M = 2``, ``x̂_1 = y`` scores 0 wherever ``x̂_2`` is).

Roll-out: one network call per frame per member, a fresh ``ξ`` each time (:meth:`next_frame`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from tempoflow.configio import require
from tempoflow.methods.base import randn
from tempoflow.methods.lifting import LiftingConfig
from tempoflow.methods.rollout import NextFrameMethod, Step, training_pairs
from tempoflow.metrics.probabilistic import crps_ensemble
from tempoflow.nets.unet import UNet


@dataclass(frozen=True)
class CRPSConfig:
    """``crps`` on ``lifting``'s window and UNet: fresh noise per call, almost fair CRPS over ``members``."""

    members: int = 2  # M, ensemble members per training pair (FGN trains with 2); M network passes per pair
    alpha: float = 0.95  # α of the almost fair CRPS (AIFS-CRPS: 0.95); 1 = fair CRPS, 0 = ensemble CRPS
    noise_dim: int = 32  # d of the noise ξ ~ N(0, I_d) fed by FiLM (FGN: a 32-dimensional noise)

    def __post_init__(self) -> None:
        require(self.members >= 2, f"crps.members must be >= 2 (the spread term needs two), got {self.members}")
        require(0.0 <= self.alpha <= 1.0, f"crps.alpha must be in [0, 1], got {self.alpha}")
        require(self.noise_dim >= 1, f"crps.noise_dim must be >= 1, got {self.noise_dim}")


class NoiseInjectedCRPS(NextFrameMethod):
    """``F_θ(x_{j−m..j−1}, ξ) → x_j`` with fresh noise ``ξ`` per call, trained by the almost fair CRPS.

    Frames are the network's output for physics fields and its sigmoid for video in [0, 1] (so the members the
    CRPS compares are frames, in the data's range, as lifting's BCE head gives).

    Args:
        cfg: the ``crps`` section.
        video_shape: ``(T, C, H, W)`` of the training trajectories.
        lifting: the shared window, UNet and pairs per trajectory.
        fields, fps, first_frame_at_zero: the data's kind and timing (:class:`NextFrameMethod`).
    """

    name = "crps"

    def __init__(self, cfg: CRPSConfig, video_shape: tuple[int, int, int, int], *, lifting: LiftingConfig,
                 fields: bool, fps: float, first_frame_at_zero: bool):
        super().__init__(lifting.window, video_shape, fields=fields, fps=fps, first_frame_at_zero=first_frame_at_zero)
        self.cfg, self.lifting = cfg, lifting
        self.net = UNet(lifting.unet, self.window * self.channels, self.channels, label_dim=cfg.noise_dim)

    def predict(self, window: Tensor, noise: Tensor) -> Tensor:
        """``F_θ(w, ξ)``: window ``(N, m·C, H, W)``, noise ``(N, d)`` -> frame ``(N, C, H, W)`` (sigmoid for video)."""
        out = self.net(window, label=noise)  # (N, C, H, W)
        return torch.sigmoid(out) if self.clamp else out

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One step: ``M`` members per pair, the almost fair CRPS against the pair's next frame.

        batch: ``video`` ``(B, T, C, H, W)``, ``index`` ``(B,)``. The generator draws the pairs' target frames,
        then the noises ``(M·N, d)``, member-major. Also returns ``spread`` (mean |x̂_1 − x̂_2|) and ``mae``
        (mean |x̂_i − y|), whose balance the score sets."""
        pairs = training_pairs(
            batch["video"], batch["index"], self.window, self.lifting.pairs_per_video, generator
        )
        m, n = self.cfg.members, pairs.target.shape[0]
        noise = randn((m * n, self.cfg.noise_dim), generator, pairs.window)  # (M N, d)
        windows = pairs.window.repeat(m, 1, 1, 1)  # (M N, m·C, H, W), member-major
        members = rearrange(self.predict(windows, noise), "(m n) c h w -> m n c h w", m=m).float()
        target = pairs.target.float()  # (N, C, H, W)
        score = crps_ensemble(members, target, alpha=self.cfg.alpha)  # (N, C, H, W), almost fair
        return {
            "loss": score.mean(),
            "mae": (members - target).abs().mean().detach(),
            "spread": (members[0] - members[1]).abs().mean().detach(),
        }

    def next_frame(self, window: Tensor, generator: torch.Generator | None = None) -> Step:
        """One frame: fresh noise per sample, one network call. ``window`` ``(N, m·C, H, W)``."""
        noise = randn((window.shape[0], self.cfg.noise_dim), generator, window)  # (N, d)
        return Step(self.predict(window, noise), 1)
