"""Scoring a continuous-time video model against ground truth at any times (DESIGN §4, §7).

The renderers of the built-in captioned data (shapes, digits, camera: ``data.render_at``) draw a video
at any float time, so frames generated between training frames
(interpolation) and past the training duration T (extrapolation) are scored against the true frames
at exactly those times, not by eye. A sample is generated from a caption, so its ground truth is
the video of the caption's bucket it matches best ON THE TRAINING FRAMES; that match is then
followed along the whole time grid.

Two baselines use the model's own frames at the training times: linear interpolation between them
(for in-between times) and holding the last one (past T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tempoflow.data.captioned import CaptionedVideos
from tempoflow.methods.base import SamplingOptions
from tempoflow.metrics.video import nearest_in_bucket, psnr_per_frame, ssim_per_frame


@dataclass
class TimeGrid:
    """Output times in seconds ``(M,)`` and what each one is.

    Attributes:
        times: ``(M,)`` seconds, strictly increasing.
        on_frame: ``(M,)`` bool, the time is a training frame time ``k / fps``, ``k = 1..N``.
        inside: ``(M,)`` bool, the time lies in ``(0, T]`` (interpolation range).
    """

    times: Tensor
    on_frame: Tensor
    inside: Tensor


def grid_size(num_frames: int, fps: float, out_fps: float, extent: float = 1.0) -> int:
    """How many times :func:`time_grid` gives: ``k / out_fps`` in ``(0, extent · num_frames / fps]``."""
    return math.floor(num_frames / fps * extent * out_fps + 1e-6)


def time_grid(num_frames: int, fps: float, out_fps: float, extent: float = 1.0) -> TimeGrid:
    """Frames at ``out_fps`` over ``(0, extent · T]``, ``T = num_frames / fps`` seconds.

    ``out_fps = 3 fps`` puts two new frames between every pair of training frames; ``extent = 4``
    asks for four times the training duration (the paper's T = 2 → 8 extrapolation).
    """
    if out_fps <= 0 or extent <= 0:
        raise ValueError(f"out_fps and extent must be > 0, got out_fps={out_fps}, extent={extent}")
    T = num_frames / fps
    count = grid_size(num_frames, fps, out_fps, extent)
    if count < 1:
        raise ValueError(f"no frame at {out_fps} fps within {T * extent} s")
    times = torch.arange(1, count + 1, dtype=torch.float64) / out_fps
    index = times * fps  # training frame index (1-based) where the time falls
    on_frame = ((index - index.round()).abs() < 1e-6) & (index.round() <= num_frames)
    return TimeGrid(times.float(), on_frame, times <= T + 1e-9)


def linear_between_frames(frames: Tensor, fps: float, times: Tensor) -> Tensor:
    """Baseline: piecewise-linear interpolation of ``frames`` ``(B, N, ...)`` (frame k at k / fps) at
    ``times`` ``(M,)`` seconds; before frame 1 and after frame N the end frames are held."""
    N = frames.shape[1]
    pos = (times.double() * fps - 1).clamp(0, N - 1)  # fractional frame index, 0-based
    lo = pos.floor().long().clamp(max=N - 1)
    hi = (lo + 1).clamp(max=N - 1)
    w = (pos - lo).to(frames.dtype).view(1, -1, *([1] * (frames.ndim - 2)))
    return frames[:, lo] * (1 - w) + frames[:, hi] * w


@torch.no_grad()
def continuous_time_scores(
    method, data: CaptionedVideos, captions: list[str], grid: TimeGrid, seed: int = 0,
    options: SamplingOptions | None = None, chunk: int = 16,
) -> dict:
    """Generate each caption on ``grid`` and score it against the renderer at the same times.

    The model is sampled on ``grid.times`` together with its training frame times (for the linear
    baseline) in one solve per chunk. A sample's truth is the bucket video closest to it on the grid
    times inside ``(0, T]``.

    Args:
        method: a ``vlfm``-like method with ``sample(captions, generator, times)``, ``fps``, ``num_frames``.
        data: the split the captions' buckets come from (its ``render_at`` gives the truth at any time).
        captions: prompts (each must have a bucket in ``data``).
        grid: output times (see :func:`time_grid`).
        seed: the samples' noise.
        options: how to sample (the run's ``sample`` section); default ``SamplingOptions()``.

    Returns:
        ``{"summary": {...}, "psnr_vs_time": [(t, dB)], "ssim_vs_time": [...], "baseline_vs_time": [...],
        "samples": (B, M, C, H, W), "truth": (B, M, C, H, W)}``; the summary holds mean PSNR/SSIM on
        training-frame times, in-between times and extrapolated times, and the baselines' PSNR.
    """
    buckets = data.buckets()
    missing = [c for c in captions if c not in buckets]
    if missing:
        raise ValueError(f"captions without a bucket in the {data.split} split: {missing[:3]}")
    device = next(method.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    frame_times = method.frame_times
    union, where = torch.unique(torch.cat([grid.times, frame_times]).double().mul(1e6).round(), return_inverse=True)
    union = union.div(1e6).float()
    M = grid.times.numel()
    out = torch.cat([
        method.sample(captions[i : i + chunk], generator=gen, options=options, times=union).video.float().cpu()
        for i in range(0, len(captions), chunk)
    ])  # (B, |union|, C, H, W)
    samples, own = out[:, where[:M]], out[:, where[M:]]  # on the grid; at the training frame times
    inside = grid.inside.nonzero().flatten()
    truths = []
    for b, caption in enumerate(captions):
        members = buckets[caption]
        candidates = torch.stack([data.render_at(j, grid.times[inside]) for j in members])  # (K, M_in, ...)
        best = nearest_in_bucket(samples[b : b + 1, inside], [candidates], metric="psnr").index
        truths.append(data.render_at(members[int(best)], grid.times))
    truth = torch.stack(truths)  # (B, M, C, H, W)
    p = psnr_per_frame(samples, truth)  # (B, M)
    s = ssim_per_frame(samples, truth)  # (B, M)
    linear = psnr_per_frame(linear_between_frames(own, method.fps, grid.times), truth)
    between = grid.inside & ~grid.on_frame
    outside = ~grid.inside
    summary = {}
    if grid.on_frame.any():
        summary.update({
            "psnr_train_frames_db": float(p[:, grid.on_frame].mean()),
            "ssim_train_frames": float(s[:, grid.on_frame].mean()),
        })
    if between.any():
        summary.update({
            "psnr_between_frames_db": float(p[:, between].mean()),
            "ssim_between_frames": float(s[:, between].mean()),
            "baseline_linear_psnr_between_db": float(linear[:, between].mean()),
        })
    if outside.any():
        summary.update({
            "psnr_extrapolated_db": float(p[:, outside].mean()),
            "ssim_extrapolated": float(s[:, outside].mean()),
            "baseline_hold_last_psnr_extrapolated_db": float(linear[:, outside].mean()),  # holds frame N
        })
    times = grid.times.tolist()
    return {
        "summary": summary,
        "psnr_vs_time": list(zip(times, p.mean(0).tolist())),
        "ssim_vs_time": list(zip(times, s.mean(0).tolist())),
        "baseline_vs_time": list(zip(times, linear.mean(0).tolist())),
        "samples": samples,
        "truth": truth,
    }
