"""Videos arranged for people to look at: tiled batches, nearest-neighbour upscaling, fields mapped to
[0, 1]. Used by ``tempoflow sample``, evaluation reports and benchmarks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

VIEW_SCALE = 4  # tiny training resolutions are upscaled (nearest) in the files people look at


def tile(videos: Tensor, rows: int) -> Tensor:
    """``(B, T, C, H, W)`` -> one video ``(T, C, rows*H, cols*W)`` with a 1-pixel grey gutter."""
    B, T, C, H, W = videos.shape
    cols = -(-B // rows)
    padded = F.pad(videos, (1, 1, 1, 1), value=0.5)
    canvas = padded.new_full((rows * cols, T, C, H + 2, W + 2), 0.5)
    canvas[:B] = padded
    canvas = canvas.view(rows, cols, T, C, H + 2, W + 2).permute(2, 3, 0, 4, 1, 5)
    return canvas.reshape(T, C, rows * (H + 2), cols * (W + 2))


def upscale(video: Tensor, factor: int = VIEW_SCALE) -> Tensor:
    """``(T, C, H, W)`` nearest-neighbour upscaling so small videos are visible."""
    return F.interpolate(video, scale_factor=factor, mode="nearest") if factor > 1 else video


def viewable(videos: Tensor, lo: float, hi: float) -> Tensor:
    """Fields ``(B, T, C, H, W)`` -> first channel mapped from ``[lo, hi]`` to [0, 1], for GIFs."""
    return ((videos[:, :, :1] - lo) / max(hi - lo, 1e-12)).clamp(0.0, 1.0)
