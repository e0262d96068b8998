"""Offline video features for Fréchet/MMD scores where no I3D weights are available.

These are NOT the I3D features of FVD/KVD: scores over them are reported as ``fd_thumb`` and
``kd_thumb`` so nobody mistakes them for FVD. They compare appearance and motion statistics of
small thumbnails, which is enough to rank runs on simple data (shapes) with no download.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def thumbnail_features(videos: Tensor, size: int = 4) -> Tensor:
    """Appearance + motion features of ``(B, T, C, H, W)`` videos: ``(B, 2 * C * size²)``.

    Each frame is area-averaged to ``size × size``; the features are the time mean of the
    thumbnails (what is where) and the time mean of their absolute frame differences (what moves
    where). Videos of one frame get zero motion features.
    """
    if videos.ndim != 5:
        raise ValueError(f"expected videos (B, T, C, H, W), got shape {tuple(videos.shape)}")
    B, T, C, H, W = videos.shape
    if size < 1 or size > min(H, W):
        raise ValueError(f"thumbnail size must be in [1, {min(H, W)}], got {size}")
    thumbs = F.adaptive_avg_pool2d(videos.float().reshape(B * T, C, H, W), size).reshape(B, T, -1)
    appearance = thumbs.mean(1)  # (B, C*size²)
    motion = (thumbs[:, 1:] - thumbs[:, :-1]).abs().mean(1) if T > 1 else appearance.new_zeros(appearance.shape)
    return torch.cat([appearance, motion], dim=1)  # (B, 2*C*size²)
