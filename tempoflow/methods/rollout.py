"""Next-frame models: the training pairs and the autoregressive roll-out shared by ``lifting`` and ``ardm``.

Seed 001 (Stochastic Lifting), §2 and Algorithm 2; DESIGN §5. Both methods learn a map from the last
``m`` frames (the Markov window, stacked on channels) to the next frame, and generate a trajectory by
feeding each new frame back::

    X ← [x_0 .. x_{k−1}]                       k given frames (the window is padded by repeating x_0)
    for j = k .. k + steps − 1:
        X[j] ← next_frame(X[j−m .. j−1])       one network call (lifting) or one ODE solve (ardm)

A training pair is ``(x_{j−m} .. x_{j−1}) → x_j`` for a target frame ``j ∈ {1, .., T−1}``; window frames
before the start of the trajectory repeat frame 0, so a roll-out may start from the single fixed initial
state of the physics data (Algorithm 2 starts from ``x̃_0``) whatever ``m`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor
from tqdm.auto import tqdm

from tempoflow.errors import ConfigError
from tempoflow.methods.base import Method, Samples, SamplingOptions


class Step(NamedTuple):
    """What a next-frame map returns: the frame ``(B, C, H, W)`` and the network calls it took."""

    frame: Tensor
    nfe: int


NextFrame = Callable[[Tensor, "torch.Generator | None"], Step]


@dataclass
class Rollout:
    """A generated batch of trajectories.

    Attributes:
        frames: ``(B·n, k + steps, C, H, W)``: the ``k`` given frames, then the generated ones.
        nfe: network calls for the whole batch (one batched call = 1).
    """

    frames: Tensor
    nfe: int


@dataclass
class TrainingPairs:
    """Training pairs ``window → target`` cut out of whole trajectories.

    Attributes:
        window: ``(N, m·C, H, W)`` the ``m`` frames before the target, oldest first, stacked on channels.
        target: ``(N, C, H, W)`` the frame to predict.
        previous: ``(N, C, H, W)`` the last frame of the window.
        index: ``(N,)`` long, CPU: the trajectory (row of the training set) of each pair.
        frame: ``(N,)`` long, CPU: the target's frame index ``j`` (0-based, ``1 <= j <= T − 1``).
        rows: ``(N,)`` long, CPU: the row of each pair's trajectory in the batch's ``videos``.
    """

    window: Tensor
    target: Tensor
    previous: Tensor
    index: Tensor
    frame: Tensor
    rows: Tensor


def stack_window(frames: Tensor) -> Tensor:
    """``(B, m, C, H, W)`` -> ``(B, m·C, H, W)``, oldest frame in the first ``C`` channels."""
    return rearrange(frames, "b m c h w -> b (m c) h w")


def pad_window(frames: Tensor, window: int) -> Tensor:
    """Repeat the first frame in front of ``frames`` ``(B, k, C, H, W)`` until there are ``window`` frames."""
    missing = window - frames.shape[1]
    if missing <= 0:
        return frames
    return torch.cat([frames[:, :1].expand(-1, missing, -1, -1, -1), frames], dim=1)


def training_pairs(
    videos: Tensor, index: Tensor, window: int, per_video: int, generator: torch.Generator | None
) -> TrainingPairs:
    """Draw ``per_video`` target frames ``j ~ U{1, .., T−1}`` per trajectory and cut out their windows.

    Args:
        videos: ``(B, T, C, H, W)`` whole trajectories, ``T >= 2``.
        index: ``(B,)`` long, each trajectory's row in the training set.
        window: ``m``.
        per_video: pairs per trajectory.
        generator: draws the target frames (the trainer's noise generator).

    Returns:
        :class:`TrainingPairs` of ``N = B · per_video`` pairs, trajectory-major.
    """
    B, T = videos.shape[:2]
    if T < 2:
        raise ValueError(f"training pairs need trajectories of >= 2 frames, got {tuple(videos.shape)}")
    if index.shape != (B,):
        raise ValueError(f"index must have shape ({B},), got {tuple(index.shape)}")
    device = generator.device if generator is not None else videos.device
    frame = torch.randint(1, T, (B * per_video,), generator=generator, device=device).cpu()  # (N,)
    rows = torch.arange(B).repeat_interleave(per_video)  # (N,)
    history = window_frames(videos, rows, frame, window)  # (N, m, C, H, W)
    return TrainingPairs(
        window=stack_window(history),
        target=videos[rows.to(videos.device), frame.to(videos.device)],  # (N, C, H, W)
        previous=history[:, -1],  # (N, C, H, W)
        index=index.cpu()[rows],
        frame=frame,
        rows=rows,
    )


def window_frames(videos: Tensor, rows: Tensor, frame: Tensor, window: int) -> Tensor:
    """The ``m`` frames ``j − m .. j − 1`` before target frame ``j`` of each trajectory; indices before 0
    repeat frame 0 (see the module docstring).

    Args:
        videos: ``(B, T, C, H, W)``.
        rows, frame: ``(N,)`` long, CPU: the trajectory (row of ``videos``) and target frame of each pair.
        window: ``m``.

    Returns:
        ``(N, m, C, H, W)``, oldest first.
    """
    taken = (frame[:, None] + torch.arange(-window, 0)).clamp_min(0)  # (N, m)
    return videos[rows.to(videos.device)[:, None], taken.to(videos.device)]


def rollout(
    next_frame: NextFrame,
    initial_frames: Tensor,
    window: int,
    steps: int,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Rollout:
    """Seed 001 Algorithm 2: generate ``steps`` frames after ``initial_frames``, one ``next_frame`` per frame.

    Args:
        next_frame: ``(window (N, m·C, H, W), generator) -> Step`` with the frame ``(N, C, H, W)``.
        initial_frames: ``(B, k, C, H, W)``, ``k >= 1`` given frames; fewer than ``m`` are padded in front
            by repeating the first.
        window: ``m``.
        steps: frames to generate, ``>= 0``.
        n_samples: trajectories per initial condition; all ``B·n`` go through each call as one batch.
        generator: the noise of every call (labels or ODE initial states).
        progress: a progress bar over frames.

    Returns:
        :class:`Rollout` with ``frames`` ``(B·n, k + steps, C, H, W)``, sample-major per initial condition.
    """
    if initial_frames.dim() != 5 or initial_frames.shape[1] < 1:
        raise ValueError(f"initial_frames must be (B, k >= 1, C, H, W), got {tuple(initial_frames.shape)}")
    if steps < 0 or n_samples < 1 or window < 1:
        raise ValueError(f"need steps >= 0, n_samples >= 1, window >= 1; got {steps}, {n_samples}, {window}")
    frames = initial_frames.repeat_interleave(n_samples, dim=0)  # (B n, k, C, H, W)
    history = pad_window(frames, window)[:, -window:]  # (B n, m, C, H, W)
    out, nfe = [frames], 0
    for _ in tqdm(range(steps), desc="rollout", unit="frame", disable=not progress, leave=False):
        step = next_frame(stack_window(history), generator)  # frame: (B n, C, H, W)
        nfe += step.nfe
        history = torch.cat([history[:, 1:], step.frame[:, None]], dim=1)  # (B n, m, C, H, W)
        out.append(step.frame[:, None])
    return Rollout(frames=torch.cat(out, dim=1), nfe=nfe)


class NextFrameMethod(Method):
    """Shared parts of ``lifting`` and ``ardm``: window, shapes, roll-out and ``sample``.

    Subclasses set ``self.net`` and implement ``loss`` and ``next_frame(window, generator) -> Step``.

    Args:
        window: ``m``, the frames the next-frame map sees (``lifting.window``).
        video_shape: ``(T, C, H, W)`` of the training trajectories.
        fields: physics fields (signed, never clamped) rather than video in [0, 1] (DESIGN §1).
        fps: frames per second of the trajectories.
        first_frame_at_zero: frame 0 sits at t = 0 (the physics initial state); else frame k (0-based)
            at (k + 1) / fps, the video convention.
    """

    task = "trajectory"

    def __init__(self, window: int, video_shape: tuple[int, int, int, int], *, fields: bool, fps: float,
                 first_frame_at_zero: bool):
        super().__init__()
        self.window = window
        self.fps, self.first_frame_at_zero = float(fps), first_frame_at_zero
        self.num_frames, self.channels, self.height, self.width = video_shape
        if self.num_frames < 2:
            raise ConfigError(
                f"{self.name} learns frame-to-frame maps: it needs >= 2 frames, got {self.num_frames}"
            )
        self.clamp = not fields  # video frames stay in [0, 1] (DESIGN §1); physics fields are not clamped

    def next_frame(self, window: Tensor, generator: torch.Generator | None = None) -> Step:
        raise NotImplementedError

    @torch.no_grad()
    def rollout(
        self, initial_frames: Tensor, steps: int, n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """``(B, k, C, H, W)`` given frames -> ``(B·n_samples, k + steps, C, H, W)`` (see :func:`rollout`)."""
        return rollout(self.next_frame, initial_frames, self.window, steps, n_samples, generator).frames

    def frame_times(self, n: int) -> Tensor:
        """``(n,)`` seconds of frames ``0..n−1``: ``j / fps`` when frame 0 is at t = 0 (the physics
        initial state), else ``(j + 1) / fps`` (video frame k, 1-based, at ``k / fps``; DESIGN §1)."""
        start = 0 if self.first_frame_at_zero else 1
        return (torch.arange(n, dtype=torch.float32) + start) / self.fps

    def frame_sampler(self) -> tuple[NextFrame, dict]:
        """The per-frame map :meth:`sample` rolls out and the settings it uses (recorded in
        ``Samples.settings``). Methods whose per-frame map has knobs (``ardm``'s solver steps,
        ``meanflow``'s steps) take them as keyword arguments here, and ``sample`` passes them on."""
        return self.next_frame, {}

    @torch.no_grad()
    def sample(
        self,
        initial: Tensor,
        generator: torch.Generator | None = None,
        options: SamplingOptions | None = None,
        num_frames: int | None = None,
        progress: bool = False,
        next_frame: NextFrame | None = None,
        **knobs,
    ) -> Samples:
        """Roll out one trajectory from each of the given frames, ``num_frames`` frames in all.

        Args:
            initial: ``(N, k, C, H, W)`` given frames (``tempoflow.runs.initial_frames``: the test
                split's first frames; the fixed initial state for physics data).
            generator: noise of the roll-out.
            options: not used (each method's own section sets its per-frame map).
            num_frames: frames per trajectory, the given ones included; default the training length ``T``.
            progress: a progress bar over frames.
            next_frame: the map to roll out; default the method's own (:meth:`frame_sampler`).
            knobs: the per-frame map's settings (:meth:`frame_sampler`), e.g. ``solver_steps=`` for ``ardm``.

        Returns:
            :class:`Samples` with ``video`` ``(N, num_frames, C, H, W)`` and frame ``times``.

        Raises:
            ValueError: ``initial`` is not 5-D or holds more frames than ``num_frames``.
        """
        if initial.ndim != 5:
            raise ValueError(f"initial frames must be (N, k, C, H, W), got shape {tuple(initial.shape)}")
        device = next(self.net.parameters()).device
        initial = initial.to(device)
        num_frames = num_frames or self.num_frames
        steps = num_frames - initial.shape[1]
        if steps < 0:
            raise ValueError(f"num_frames={num_frames} is fewer than the {initial.shape[1]} given frames")
        own, settings = self.frame_sampler(**knobs)
        out = rollout(next_frame or own, initial, self.window, steps, 1, generator, progress)
        return Samples(video=out.frames, latents=out.frames, nfe=out.nfe, times=self.frame_times(num_frames),
                       settings={"frames": num_frames, "given_frames": initial.shape[1], **settings})
