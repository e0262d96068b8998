"""Pixel metrics on video batches ``(B, T, C, H, W)`` in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-video mean squared error: ``(B, T, C, H, W)`` x2 -> ``(B,)``."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).square().flatten(1).mean(1)


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0, eps: float = 1e-12) -> Tensor:
    """Peak signal-to-noise ratio per video, ``10 log10(range² / MSE)`` in dB: ``(B,)``."""
    return 10 * torch.log10(data_range**2 / (mse(a, b) + eps))


# --- SSIM, per-frame errors and bucket metrics ------------------------------------------------------

SSIM_SIGMA = 1.5  # Gaussian window σ in pixels (Wang et al. 2004)
SSIM_TRUNCATE = 3.5  # window radius int(3.5 σ + 0.5): 5, an 11 × 11 window at σ = 1.5 (as skimage)
SSIM_K1 = 0.01  # C1 = (K1 R)², Wang et al. 2004 eq. (13)
SSIM_K2 = 0.03  # C2 = (K2 R)²
# Input pixels (frames × C × H × W) blurred at once by SSIM: its five moment maps take ~20 bytes per
# pixel in float32, so a chunk holds ~0.3 GB whatever the batch.
_SSIM_CHUNK_PIXELS = 2**24
BUCKET_METRICS = ("psnr", "ssim")


@dataclass(frozen=True)
class FrameErrors:
    """Per-frame errors against ground truth, averaged over the batch; every field is ``(T,)``.

    ``psnr`` and ``ssim`` are batch means of per-frame values (not the PSNR of the mean MSE)."""

    times: Tensor  # seconds (DESIGN §1: frame k at k / fps)
    mse: Tensor
    psnr: Tensor  # dB
    ssim: Tensor


@dataclass(frozen=True)
class BucketMatch:
    """Best match of each sample in its bucket: ``score`` ``(B,)`` and its position ``index`` ``(B,)``
    (long) in the bucket."""

    score: Tensor
    index: Tensor


def _check_videos(a: Tensor, b: Tensor, data_range: float) -> None:
    """Both ``(B, T, C, H, W)`` float, same non-empty shape, finite (one host sync), range > 0."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, Tensor) or x.dim() != 5 or not x.is_floating_point():
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a float (B, T, C, H, W) video tensor, got {what}")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"devices differ: {a.device} vs {b.device}")
    if a.numel() == 0:
        raise ValueError(f"empty videos of shape {tuple(a.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    if not bool(torch.isfinite(a).all() & torch.isfinite(b).all()):
        raise ValueError(f"videos of shape {tuple(a.shape)} have non-finite values (NaN or inf)")


def _frame_mse(a: Tensor, b: Tensor) -> Tensor:
    """``(B, T, C, H, W)`` x2 -> ``(B, T)`` mean squared error of each frame (at least float32)."""
    dtype = torch.promote_types(a.dtype, torch.float32)
    return (a.to(dtype) - b.to(dtype)).square().flatten(2).mean(2)


def _ssim_radius(sigma: float, height: int, width: int) -> int:
    """Radius of the Gaussian window, checked to fit the frame (no padding: skimage's valid interior)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = int(SSIM_TRUNCATE * sigma + 0.5)
    size = 2 * radius + 1
    if height < size or width < size:
        raise ValueError(
            f"SSIM window {size}x{size} (sigma={sigma}) exceeds the {height}x{width} frames; "
            f"pass a smaller sigma (window = 2 int({SSIM_TRUNCATE} sigma + 0.5) + 1)"
        )
    return radius


def _ssim_frames(a: Tensor, b: Tensor, data_range: float, sigma: float) -> Tensor:
    """Unchecked SSIM of each frame, ``(B, T, C, H, W)`` x2 -> ``(B, T)``; see :func:`ssim_per_frame`."""
    B, T, C, H, W = a.shape
    radius = _ssim_radius(sigma, H, W)
    dtype = torch.promote_types(a.dtype, torch.float32)  # half/bf16 moments lose SSIM's precision
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=a.device)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    taps = taps / taps.sum()  # (k,) normalised 1-D Gaussian, as scipy.ndimage.gaussian_filter
    groups = 5 * C  # five moment maps per channel, each blurred on its own
    w_row = taps.view(1, 1, 1, -1).expand(groups, 1, 1, -1)  # (5C, 1, 1, k)
    w_col = taps.view(1, 1, -1, 1).expand(groups, 1, -1, 1)  # (5C, 1, k, 1)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    frames_a = a.reshape(B * T, C, H, W).to(dtype)
    frames_b = b.reshape(B * T, C, H, W).to(dtype)
    chunk = max(1, _SSIM_CHUNK_PIXELS // (C * H * W))
    out = []
    for fa, fb in zip(frames_a.split(chunk), frames_b.split(chunk)):
        maps = torch.cat([fa, fb, fa * fa, fb * fb, fa * fb], dim=1)  # (n, 5C, H, W)
        # Separable Gaussian blur, no padding: only the interior at least `radius` from the border,
        # which is exactly the region skimage averages after cropping its reflect-padded maps.
        maps = F.conv2d(F.conv2d(maps, w_row, groups=groups), w_col, groups=groups)  # (n, 5C, H', W')
        mu_a, mu_b, e_aa, e_bb, e_ab = maps.chunk(5, dim=1)  # (n, C, H', W') each
        var_a = e_aa - mu_a * mu_a  # population (co)variances, as Wang et al. 2004
        var_b = e_bb - mu_b * mu_b
        cov = e_ab - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        out.append(s.mean((1, 2, 3)))  # (n,) mean over channels and interior pixels
    return torch.cat(out).view(B, T)


def ssim_per_frame(a: Tensor, b: Tensor, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> Tensor:
    """Structural similarity of each frame (Wang et al. 2004), channel-averaged: ``(B, T)``.

    ``SSIM = (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2))`` with local
    moments under a Gaussian window (σ = 1.5 px, 11 × 11), ``C1 = (0.01 R)²``, ``C2 = (0.03 R)²``,
    averaged over the pixels whose window lies inside the frame, then over channels. Equals
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, data_range=R, channel_axis=...)`` on each frame.

    Args:
        a, b: ``(B, T, C, H, W)`` videos; frames must be at least as large as the window
            ``2 int(3.5 sigma + 0.5) + 1`` (smaller frames: pass a smaller ``sigma``).
        data_range: ``R``, the value range of the pixels.
        sigma: window standard deviation in pixels.
    Returns:
        ``(B, T)`` in ``[-1, 1]``, 1 for identical frames; float32, or float64 for float64 input.
    """
    _check_videos(a, b, data_range)
    return _ssim_frames(a, b, data_range, sigma)


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> Tensor:
    """Per-video SSIM, the mean over frames of :func:`ssim_per_frame`: ``(B, T, C, H, W)`` x2 -> ``(B,)``."""
    return ssim_per_frame(a, b, data_range, sigma).mean(1)


def psnr_per_frame(a: Tensor, b: Tensor, data_range: float = 1.0, eps: float = 1e-12) -> Tensor:
    """PSNR of each frame, ``10 log10(R² / MSE_frame)`` in dB: ``(B, T, C, H, W)`` x2 -> ``(B, T)``."""
    _check_videos(a, b, data_range)
    return 10 * torch.log10(data_range**2 / (_frame_mse(a, b) + eps))


def error_vs_time(
    samples: Tensor,
    truth: Tensor,
    times: Tensor | list[float],
    data_range: float = 1.0,
    eps: float = 1e-12,
    sigma: float = SSIM_SIGMA,
) -> FrameErrors:
    """Per-frame error against ground truth as a function of video time, averaged over the batch.

    The interpolation/extrapolation score of DESIGN §4/§7: frame ``k`` of every video sits at
    ``times[k]`` seconds; MSE, PSNR ``10 log10(R² / MSE)`` and SSIM (:func:`ssim_per_frame`) are
    computed per frame and averaged over ``B``.

    Args:
        samples, truth: ``(B, T, C, H, W)`` videos.
        times: ``(T,)`` frame times in seconds.
        sigma: SSIM window standard deviation (see :func:`ssim_per_frame`).
    Returns:
        :class:`FrameErrors` with ``(T,)`` fields.
    """
    _check_videos(samples, truth, data_range)
    times = torch.as_tensor(times)
    if times.shape != (samples.shape[1],) or not times.is_floating_point():
        raise ValueError(f"times must be a float ({samples.shape[1]},) tensor, got {times.dtype} {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError(f"times must be finite, got {times.tolist()}")
    mse_t = _frame_mse(samples, truth)  # (B, T)
    psnr_t = 10 * torch.log10(data_range**2 / (mse_t + eps))  # (B, T)
    ssim_t = _ssim_frames(samples, truth, data_range, sigma)  # (B, T)
    return FrameErrors(times=times, mse=mse_t.mean(0), psnr=psnr_t.mean(0), ssim=ssim_t.mean(0))


def nearest_in_bucket(
    samples: Tensor, buckets: list[Tensor], metric: str = "psnr", data_range: float = 1.0, sigma: float = SSIM_SIGMA
) -> BucketMatch:
    """Bucket metrics B-PSNR / B-SSIM: each sample scored against the best video of its bucket.

    ``score_i = max_k m(sample_i, bucket_i[k])`` with ``m`` the per-video :func:`psnr` or :func:`ssim`
    (the one-to-many score of DESIGN §6). All pairs are scored in one batched call.

    Args:
        samples: ``(B, T, C, H, W)``.
        buckets: B non-empty tensors ``(K_i, T, C, H, W)``: the videos of each sample's caption.
        metric: ``"psnr"`` (dB) or ``"ssim"``.
        sigma: SSIM window standard deviation (see :func:`ssim_per_frame`).
    Returns:
        :class:`BucketMatch`: best ``score`` ``(B,)`` and its ``index`` ``(B,)`` in the bucket.
    """
    if metric not in BUCKET_METRICS:
        raise ValueError(f"metric must be one of {BUCKET_METRICS}, got {metric!r}")
    if not isinstance(samples, Tensor) or samples.dim() != 5:
        what = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
        raise ValueError(f"samples must be a (B, T, C, H, W) tensor, got {what}")
    if len(buckets) != samples.shape[0]:
        raise ValueError(f"{samples.shape[0]} samples but {len(buckets)} buckets")
    for i, bucket in enumerate(buckets):
        if not isinstance(bucket, Tensor) or bucket.dim() != 5 or bucket.shape[0] == 0:
            what = tuple(bucket.shape) if isinstance(bucket, Tensor) else type(bucket).__name__
            raise ValueError(f"bucket {i} must be a non-empty (K, T, C, H, W) tensor, got {what}")
        if bucket.shape[1:] != samples.shape[1:]:
            raise ValueError(f"bucket {i} holds {tuple(bucket.shape[1:])} videos, samples are {tuple(samples.shape[1:])}")
    sizes = torch.tensor([bucket.shape[0] for bucket in buckets])  # (B,) on the host: no sync
    owner = torch.repeat_interleave(torch.arange(len(buckets)), sizes)  # (N,) sample of each pair
    slot = torch.arange(len(owner)) - (sizes.cumsum(0) - sizes)[owner]  # (N,) position in its bucket
    owner, slot = owner.to(samples.device), slot.to(samples.device)
    refs = torch.cat(list(buckets))  # (N, T, C, H, W)
    pairs = samples[owner]  # (N, T, C, H, W)
    _check_videos(pairs, refs, data_range)
    if metric == "psnr":
        scores = psnr(pairs, refs, data_range)  # (N,)
    else:
        scores = _ssim_frames(pairs, refs, data_range, sigma).mean(1)  # (N,)
    table = scores.new_full((len(buckets), int(sizes.max())), float("-inf"))  # (B, K_max), padded
    table[owner, slot] = scores
    best, index = table.max(1)  # first maximum on ties
    return BucketMatch(score=best, index=index)
