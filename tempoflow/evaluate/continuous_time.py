"""Scoring a continuous-time video model against ground truth at any times (DESIGN §4, §7).

The renderers of the built-in captioned data (shapes, digits, camera: ``data.render_at``) draw a video
at any float time, so frames generated between training frames
(interpolation) and past the training duration T (extrapolation) are scored against the true frames
at exactly those times, not by eye. A sample is generated from a caption, so its ground truth is
the video of the caption's bucket it matches best ON THE TRAINING FRAMES; that match is then
followed along the whole time grid.

Baselines use the model's own frames at the training times: linear interpolation between them (for
in-between times; it holds the last frame past T) and optical-flow warping
(:mod:`tempoflow.evaluate.frame_interpolation`: in-between and constant-velocity extrapolation). The
same baselines applied to the TRUE frames at the training times show how well they could do at best.
A fixed-frame-rate model (``flow``), which cannot make frames at other times itself, is scored
through these baselines alone (:func:`fixed_rate_scores`).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tempoflow.data.captioned import CaptionedVideos
from tempoflow.evaluate.frame_interpolation import flow_between_frames
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


def baseline_videos(frames: Tensor, fps: float, times: Tensor, optical_flow: bool = True) -> dict[str, Tensor]:
    """The baselines' frames at ``times`` ``(M,)`` from ``frames`` ``(B, N, C, H, W)`` at the training
    times: ``{"linear": ..., "flow": ...}`` each ``(B, M, C, H, W)`` ("flow" only with ``optical_flow``).
    "linear" holds the last frame past T (the hold-last baseline there)."""
    out = {"linear": linear_between_frames(frames, fps, times)}
    if optical_flow:
        out["flow"] = flow_between_frames(frames, fps, times)
    return out


def baseline_summary(videos: dict[str, Tensor], truth: Tensor, grid: TimeGrid, prefix: str) -> dict[str, float]:
    """Mean PSNR/SSIM of :func:`baseline_videos` against ``truth`` ``(B, M, C, H, W)``: in-between times
    (``{prefix}_linear_psnr_between_db``, ``{prefix}_flow_...``) and past T (``{prefix}_hold_last_...``,
    ``{prefix}_flow_..._extrapolated``)."""
    between, outside = grid.inside & ~grid.on_frame, ~grid.inside
    summary = {}
    for name, video in videos.items():
        p, s = psnr_per_frame(video, truth), ssim_per_frame(video, truth)  # (B, M)
        if between.any():
            summary[f"{prefix}_{name}_psnr_between_db"] = float(p[:, between].mean())
            summary[f"{prefix}_{name}_ssim_between"] = float(s[:, between].mean())
        if outside.any():
            past = "hold_last" if name == "linear" else name
            summary[f"{prefix}_{past}_psnr_extrapolated_db"] = float(p[:, outside].mean())
            summary[f"{prefix}_{past}_ssim_extrapolated"] = float(s[:, outside].mean())
    return summary


def _use_optical_flow(optical_flow: bool | None) -> bool:
    """``None``: when scikit-image (extra ``camera``) is installed; ``True`` fails later if it is not."""
    return importlib.util.find_spec("skimage") is not None if optical_flow is None else optical_flow


def _truth(data: CaptionedVideos, captions: list[str], samples: Tensor, match_times: Tensor,
           times: Tensor) -> tuple[Tensor, list[int]]:
    """The renderer's video ``(B, M, C, H, W)`` at ``times`` of each caption's bucket member nearest
    (PSNR) to the sample ``samples`` ``(B, M_match, C, H, W)`` at ``match_times``, and the members."""
    buckets = data.buckets()
    missing = [c for c in captions if c not in buckets]
    if missing:
        raise ValueError(f"captions without a bucket in the {data.split} split: {missing[:3]}")
    chosen = []
    for b, caption in enumerate(captions):
        members = buckets[caption]
        candidates = torch.stack([data.render_at(j, match_times) for j in members])  # (K, M_match, ...)
        best = nearest_in_bucket(samples[b : b + 1], [candidates], metric="psnr").index
        chosen.append(members[int(best)])
    return torch.stack([data.render_at(j, times) for j in chosen]), chosen


@torch.no_grad()
def continuous_time_scores(
    method, data: CaptionedVideos, captions: list[str], grid: TimeGrid, seed: int = 0,
    options: SamplingOptions | None = None, chunk: int = 16, optical_flow: bool | None = None,
) -> dict:
    """Generate each caption on ``grid`` and score it against the renderer at the same times.

    The model is sampled on ``grid.times`` together with its training frame times (for the
    baselines) in one solve per chunk. A sample's truth is the bucket video closest to it on the grid
    times inside ``(0, T]``.

    Args:
        method: a ``vlfm``-like method with ``sample(captions, generator, times)``, ``fps``, ``num_frames``.
        data: the split the captions' buckets come from (its ``render_at`` gives the truth at any time).
        captions: prompts (each must have a bucket in ``data``).
        grid: output times (see :func:`time_grid`).
        seed: the samples' noise.
        options: how to sample (the run's ``sample`` section); default ``SamplingOptions()``.
        optical_flow: add the optical-flow baseline; ``None`` = when scikit-image is installed.

    Returns:
        ``{"summary": {...}, "psnr_vs_time": [(t, dB)], "ssim_vs_time": [...], "baseline_vs_time": [...]
        (linear/hold-last), "baseline_flow_vs_time": [...] (with the flow baseline), "samples": (B, M, C, H, W),
        "truth": (B, M, C, H, W), "baselines": {name: (B, M, C, H, W)}}``; the summary holds mean PSNR/SSIM on
        training-frame times, in-between times and extrapolated times, and the baselines' PSNR/SSIM from the
        model's own frames (``baseline_*``) and from the true frames at the training times (``true_frames_*``).
    """
    if not captions:
        raise ValueError("need at least one caption to score")
    optical_flow = _use_optical_flow(optical_flow)
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
    truth, chosen = _truth(data, captions, samples[:, inside], grid.times[inside], grid.times)  # (B, M, C, H, W)
    true_frames = torch.stack([data.render_at(j, frame_times.cpu()) for j in chosen])  # (B, N, C, H, W)
    p = psnr_per_frame(samples, truth)  # (B, M)
    s = ssim_per_frame(samples, truth)  # (B, M)
    baselines = baseline_videos(own, method.fps, grid.times, optical_flow)
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
        })
    if outside.any():
        summary.update({
            "psnr_extrapolated_db": float(p[:, outside].mean()),
            "ssim_extrapolated": float(s[:, outside].mean()),
        })
    summary.update(baseline_summary(baselines, truth, grid, "baseline"))
    summary.update(baseline_summary(baseline_videos(true_frames, method.fps, grid.times, optical_flow), truth, grid,
                                    "true_frames"))
    times = grid.times.tolist()
    res = {
        "summary": summary,
        "psnr_vs_time": list(zip(times, p.mean(0).tolist())),
        "ssim_vs_time": list(zip(times, s.mean(0).tolist())),
        "baseline_vs_time": list(zip(times, psnr_per_frame(baselines["linear"], truth).mean(0).tolist())),
        "samples": samples,
        "truth": truth,
        "baselines": baselines,
    }
    if "flow" in baselines:
        res["baseline_flow_vs_time"] = list(zip(times, psnr_per_frame(baselines["flow"], truth).mean(0).tolist()))
    return res


@torch.no_grad()
def fixed_rate_scores(
    method, data: CaptionedVideos, captions: list[str], grid: TimeGrid, seed: int = 0,
    options: SamplingOptions | None = None, chunk: int = 16, optical_flow: bool | None = None,
) -> dict:
    """Score a fixed-frame-rate model (``flow``: frames at its training times only) on ``grid`` through
    the baselines made from its own frames, against the renderer.

    A sample's truth is the bucket video closest to it at the training frame times. Arguments as
    :func:`continuous_time_scores`; ``method`` needs ``sample(captions, generator, options)`` and draws
    ``data``'s frames (``data.fps``, as many frames).

    Returns:
        ``{"summary": {...}, "frames": (B, N, C, H, W) the model's frames, "truth": (B, M, C, H, W) on the grid,
        "baselines": {name: (B, M, C, H, W)}}``; the summary holds PSNR/SSIM at the training frame times and
        the ``baseline_*`` and ``true_frames_*`` entries of :func:`continuous_time_scores`.
    """
    if not captions:
        raise ValueError("need at least one caption to score")
    optical_flow = _use_optical_flow(optical_flow)
    device = next(method.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    own = torch.cat([
        method.sample(captions[i : i + chunk], generator=gen, options=options).video.float().cpu()
        for i in range(0, len(captions), chunk)
    ])  # (B, N, C, H, W)
    fps, frame_times = data.fps, data.times  # the model draws the data's frames, at k / fps
    if own.shape[1] != frame_times.numel():
        raise ValueError(f"the model draws {own.shape[1]} frames, the data has {frame_times.numel()}")
    truth, chosen = _truth(data, captions, own, frame_times, grid.times)
    true_frames = torch.stack([data.render_at(j, frame_times) for j in chosen])  # (B, N, C, H, W)
    baselines = baseline_videos(own, fps, grid.times, optical_flow)
    summary = {"psnr_train_frames_db": float(psnr_per_frame(own, true_frames).mean()),
               "ssim_train_frames": float(ssim_per_frame(own, true_frames).mean())}
    summary.update(baseline_summary(baselines, truth, grid, "baseline"))
    summary.update(baseline_summary(baseline_videos(true_frames, fps, grid.times, optical_flow), truth, grid,
                                    "true_frames"))
    return {"summary": summary, "frames": own, "truth": truth, "baselines": baselines}
