"""Pixel metrics on video batches ``(B, T, C, H, W)`` in [0, 1]."""

from __future__ import annotations

import torch
from torch import Tensor


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-video mean squared error: ``(B, T, C, H, W)`` x2 -> ``(B,)``."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).square().flatten(1).mean(1)


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0, eps: float = 1e-12) -> Tensor:
    """Peak signal-to-noise ratio per video, ``10 log10(range² / MSE)`` in dB: ``(B,)``."""
    return 10 * torch.log10(data_range**2 / (mse(a, b) + eps))


def nearest_psnr(samples: Tensor, references: list[Tensor]) -> Tensor:
    """PSNR of each sample against the closest video of its bucket (the one-to-many score).

    Args:
        samples: ``(B, T, C, H, W)``.
        references: B tensors ``(K_i, T, C, H, W)``: the bucket of each sample's caption.
    Returns:
        ``(B,)`` best PSNR over each bucket, in dB.
    """
    if len(references) != samples.shape[0]:
        raise ValueError(f"{samples.shape[0]} samples but {len(references)} reference buckets")
    best = []
    for sample, bucket in zip(samples, references):
        scores = psnr(sample[None].expand_as(bucket), bucket)  # (K,)
        best.append(scores.max())
    return torch.stack(best)
