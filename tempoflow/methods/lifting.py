"""Stochastic Lifting: one network call per frame (seed 001 §2, Algorithms 1–2, appendices E–F; DESIGN §5).

Algorithm 1 (training): every training pair ``(x_{j−m} .. x_{j−1}) → x_j`` of trajectory ``i`` carries a
label ``ξ_{i,j} ~ N(0, I_d)`` drawn ONCE — here derived from ``(label_seed, i, j)`` by a counter-based
generator, so it is never stored and never redrawn (fresh labels every epoch would teach the conditional
mean, §2.4)::

    ξ_{i,j} = HashedNormal(label_seed, i, j)
    loss = ‖F_θ(x_{j−m..j−1}, ξ_{i,j}) − x_j‖²               (eq. 6; physics, fields unclamped)
         = BCE(F_θ(x_{j−m..j−1}, ξ_{i,j}), x_j)             (appendix F; logits, video in [0, 1])

Algorithm 2 (inference), one network call per frame, batched over samples::

    ξ̃ ~ N(0, I_d);   x̃_j = F_θ(x̃_{j−m..j−1}, ξ̃)           (sigmoid of the logits for bce)

``F_θ`` is the FiLM UNet of ``tempoflow.nets.unet`` (appendix E): history frames stacked on channels, the
label through a 2-layer MLP in place of the diffusion-time embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tempoflow.configio import require
from tempoflow.errors import ConfigError
from tempoflow.methods.base import randn
from tempoflow.methods.rollout import (
    NextFrameMethod,
    Step,
    TrainingPairs,
    stack_window,
    training_pairs,
    window_frames,
)
from tempoflow.nets.unet import UNet, UNetConfig

# SplitMix64 (Steele, Lea & Flood 2014): the golden-ratio increment and the two multipliers of its
# output function, a bijective 64-bit mixer. All arithmetic is modulo 2^64 on uint64 arrays.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_MANTISSA = 53  # bits of a float64 uniform


LIFTING_LOSSES = ("auto", "l2", "bce")


@dataclass(frozen=True)
class LiftingConfig:
    """Stochastic Lifting ``lifting`` (seed 001 §2, Algorithms 1–2, appendices E–F; DESIGN §5). The window and
    the UNet are shared with ``ardm``, so that the two methods compare on the same backbone (Table 1)."""

    window: int = 3  # m, the Markov window: history frames stacked on channels (Table 3: 3 for wave, flow)
    label_dim: int = 64  # d of the fixed labels ξ ~ N(0, I_d) (Table 3: 64 for wave, flow)
    label_seed: int = 0  # ξ of a training pair is a function of (label_seed, trajectory, target frame)
    loss: str = "auto"  # "l2" (eq. 6), "bce" on logits (app. F, video in [0, 1]); "auto": bce for shapes
    residual: bool = False  # l2 only: the UNet predicts x_k − x_{k−1} (Corollary 1's F = x + dt R)
    pairs_per_video: int = 1  # training pairs drawn from each trajectory of a batch
    # Fraction of training pairs whose last window frame is the network's own prediction of it (the
    # pushforward trick, Brandstetter et al. 2022 §2.3; see StochasticLifting.pushforward); 0 = the paper.
    pushforward: float = 0.0
    # Std of Gaussian noise added to the training windows, in the frames' units (video intensity in [0, 1],
    # or the field's values), not to the targets (conditioning augmentation, Ho et al. 2022 §3; GameNGen,
    # Valevski et al. 2024 §3.2.1): the network learns to map corrupted histories back onto the data, so
    # its own small roll-out errors are pulled back instead of compounding (README "Long video roll-outs":
    # 0.2 on shapes). Training only; lifting only (ardm, meanflow and crps do not read it). 0 = the paper.
    window_noise: float = 0.0
    eval_trajectories: int = 64  # N trajectories rolled out by `tempoflow eval` (paper: 512)
    unet: UNetConfig = field(default_factory=UNetConfig)  # defaults: the paper's "medium" UNet

    def __post_init__(self) -> None:
        require(self.window >= 1, f"lifting.window must be >= 1, got {self.window}")
        require(self.label_dim >= 1, f"lifting.label_dim must be >= 1, got {self.label_dim}")
        require(self.loss in LIFTING_LOSSES, f"lifting.loss must be one of {LIFTING_LOSSES}, got {self.loss!r}")
        require(not (self.residual and self.loss == "bce"), "lifting.residual needs an l2 loss, not bce")
        require(self.pairs_per_video >= 1, f"lifting.pairs_per_video must be >= 1, got {self.pairs_per_video}")
        require(0.0 <= self.pushforward <= 1.0, f"lifting.pushforward must be in [0, 1], got {self.pushforward}")
        require(math.isfinite(self.window_noise) and self.window_noise >= 0,
                f"lifting.window_noise must be finite and >= 0, got {self.window_noise}")
        require(self.eval_trajectories >= 2,
                 f"lifting.eval_trajectories must be >= 2, got {self.eval_trajectories}")


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on a uint64 array."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def _as_uint64(x: Tensor | int) -> np.ndarray:
    """Integers as uint64 (negative ones wrap, two's complement)."""
    return np.asarray(torch.as_tensor(x).cpu().numpy(), dtype=np.int64).astype(np.uint64)


def pair_labels(seed: int, index: Tensor, frame: Tensor, dim: int) -> Tensor:
    """The fixed labels ``ξ ~ N(0, I_d)`` of training pairs, a pure function of ``(seed, index, frame)``.

    A counter-based generator: the key ``h = mix(mix(mix(seed + G) + i + G) + j + G)`` seeds a SplitMix64
    stream whose ``2d`` words give ``d`` normals by Box–Muller. No state, no storage: the same pair gets the
    same label in every batch, step, resumed run and on every device, and different pairs are independent.

    Args:
        seed: ``lifting.label_seed``.
        index: ``(N,)`` integer trajectory of each pair (its row in the training set).
        frame: ``(N,)`` integer target frame ``j`` of each pair.
        dim: ``d``.

    Returns:
        ``(N, d)`` float32 on the CPU.
    """
    if index.shape != frame.shape or index.dim() != 1:
        raise ValueError(
            f"index and frame must be (N,) alike, got {tuple(index.shape)} and {tuple(frame.shape)}"
        )
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    with np.errstate(over="ignore"):
        key = _mix64(np.full(index.shape, _as_uint64(seed), dtype=np.uint64) + _GOLDEN)  # (N,)
        key = _mix64(key + _as_uint64(index) + _GOLDEN)
        key = _mix64(key + _as_uint64(frame) + _GOLDEN)
        counters = np.arange(1, 2 * dim + 1, dtype=np.uint64) * _GOLDEN  # (2d,) SplitMix64 states
        words = _mix64(key[:, None] + counters[None, :])  # (N, 2d)
    # Top 53 bits, centred in their cell: uniforms strictly inside (0, 1), so the log is finite.
    u = ((words >> np.uint64(64 - _MANTISSA)).astype(np.float64) + 0.5) * 2.0**-_MANTISSA  # (N, 2d)
    u_1, u_2 = u[:, :dim], u[:, dim:]
    normal = np.sqrt(-2.0 * np.log(u_1)) * np.cos(2.0 * math.pi * u_2)  # Box–Muller, (N, d)
    return torch.from_numpy(normal).float()


def resolve_loss(loss: str, fields: bool) -> str:
    """``lifting.loss``, with "auto" read as "bce" for videos in [0, 1] and "l2" for physics fields."""
    if loss != "auto":
        return loss
    return "l2" if fields else "bce"


class StochasticLifting(NextFrameMethod):
    """``F_θ(x_{j−m..j−1}, ξ) → x_j`` with fixed per-pair labels (seed 001).

    Args:
        cfg: the ``lifting`` section.
        video_shape: ``(T, C, H, W)`` of the training trajectories.
        fields, fps, first_frame_at_zero: the data's kind and timing (:class:`NextFrameMethod`).
    """

    name = "lifting"

    def __init__(self, cfg: LiftingConfig, video_shape: tuple[int, int, int, int], *, fields: bool, fps: float,
                 first_frame_at_zero: bool):
        super().__init__(cfg.window, video_shape, fields=fields, fps=fps, first_frame_at_zero=first_frame_at_zero)
        self.cfg = lc = cfg
        self.label_dim, self.label_seed = lc.label_dim, lc.label_seed
        self.loss_kind = resolve_loss(lc.loss, fields)
        if lc.residual and self.loss_kind != "l2":
            raise ConfigError(
                f"lifting.residual needs the l2 loss, got {self.loss_kind} (lifting.loss={lc.loss!r})"
            )
        self.residual = lc.residual
        self.net = UNet(lc.unet, self.window * self.channels, self.channels, label_dim=lc.label_dim)

    def predict(self, window: Tensor, label: Tensor) -> Tensor:
        """The raw network output turned into a frame: sigmoid of logits (bce), plus the last frame
        (residual), clamped to [0, 1] for video.

        Args:
            window: ``(N, m·C, H, W)``.
            label: ``(N, d)``.

        Returns:
            ``(N, C, H, W)``.
        """
        out = self.net(window, label=label)  # (N, C, H, W)
        if self.loss_kind == "bce":
            return torch.sigmoid(out)
        if self.residual:
            out = out + window[:, -self.channels :]  # x_{j−1} + R(x, ξ)
        return out.clamp(0.0, 1.0) if self.clamp else out

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Algorithm 1, one step. batch: ``video`` ``(B, T, C, H, W)`` and ``index`` ``(B,)`` (training rows)."""
        pairs = training_pairs(
            batch["video"], batch["index"], self.window, self.cfg.pairs_per_video, generator
        )
        if self.cfg.pushforward > 0:
            pairs = self.pushforward(batch["video"], pairs, generator)
        if self.cfg.window_noise > 0:
            noise = randn(pairs.window.shape, generator, pairs.window)  # (N, m·C, H, W)
            pairs = replace(pairs, window=pairs.window + self.cfg.window_noise * noise)
        # ξ of each pair: a function of (label_seed, trajectory, frame), never drawn from the generator.
        label = pair_labels(self.label_seed, pairs.index, pairs.frame, self.label_dim)  # (N, d)
        out = self.net(pairs.window, label=label.to(pairs.window.device))  # (N, C, H, W)
        if self.loss_kind == "bce":
            loss = F.binary_cross_entropy_with_logits(out.float(), pairs.target.float())
        else:
            target = pairs.target - pairs.previous if self.residual else pairs.target
            loss = (out.float() - target.float()).square().mean()
        return {"loss": loss}

    @torch.no_grad()
    def pushforward(self, videos: Tensor, pairs: TrainingPairs, generator: torch.Generator | None) -> TrainingPairs:
        """Replace, in a fraction ``lifting.pushforward`` of the pairs, the window's last frame ``x_{j−1}``
        by the network's own prediction of it, ``x̂_{j−1} = F_θ(x_{j−1−m..j−2}, ξ_{i,j−1})`` with that
        pair's fixed label (no gradient through it), so the network learns to map the frames it will be
        fed in a roll-out — with its own small errors — back onto the data, instead of compounding them
        (the pushforward trick of Brandstetter, Worrall & Welling 2022, §2.3, with lifting's labels).
        With the pair's own label ``x̂_{j−1}`` is the network's version of the true ``x_{j−1}``, so the
        target ``x_j`` still follows it. Pairs with ``j = 1`` keep ``x_0``, which a roll-out is given.

        One extra forward pass of every pair, computed for all and selected per pair (no host sync).
        """
        C = self.channels
        chosen = torch.rand(pairs.frame.shape, generator=generator, device=generator.device if generator
                            is not None else "cpu").cpu() < self.cfg.pushforward  # (N,)
        chosen &= pairs.frame >= 2
        before = (pairs.frame - 1).clamp_min(1)  # (N,) the frame each pair's last window frame is
        window = stack_window(window_frames(videos, pairs.rows, before, self.window))  # (N, m·C, H, W)
        label = pair_labels(self.label_seed, pairs.index, before, self.label_dim).to(window.device)
        own = self.predict(window, label)  # (N, C, H, W) what a roll-out would feed back
        last = torch.where(chosen.to(own.device)[:, None, None, None], own.to(pairs.previous.dtype), pairs.previous)
        return replace(pairs, window=torch.cat([pairs.window[:, :-C], last], dim=1), previous=last)

    def next_frame(self, window: Tensor, generator: torch.Generator | None = None) -> Step:
        """Algorithm 2, one frame: a fresh label per sample, one network call. ``window`` ``(N, m·C, H, W)``."""
        label = randn((window.shape[0], self.label_dim), generator, window)  # (N, d)
        return Step(self.predict(window, label), 1)
