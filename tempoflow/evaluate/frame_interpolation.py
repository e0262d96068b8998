"""Optical-flow frame interpolation: the baseline a fixed-frame-rate model gets for any time (DESIGN §7).

From frames ``(B, N, C, H, W)`` at the training times ``t_k = k / fps`` (``k = 1..N``), a frame at any
time ``t`` is made from the dense optical flow between consecutive frames (scikit-image's TV-L1,
:func:`skimage.registration.optical_flow_tvl1`, on grayscale; extra ``camera``) under constant
velocity within each frame interval. With ``F_k`` the flow from frame ``k`` to frame ``k+1`` (pixel
``p`` of frame ``k`` is at ``p + F_k(p)`` in frame ``k+1``) and ``w = t · fps − k ∈ [0, 1]``:

    I(t)(q) = (1 − w) I_k(q − w F_k(q)) + w I_{k+1}(q + (1 − w) F_k(q))

(both end frames warped to time ``t`` and blended; ``w = 0`` and ``w = 1`` give the end frames). Past
the last frame the last frame moves on at the last flow's velocity, ``I(t)(q) = I_N(q − (t − T) fps
F_{N−1}(q))``, ``T = N / fps``; before the first frame the first flow runs backwards likewise. The flow
is read at the output pixel ``q`` instead of at the moving point (exact for a uniform flow such as a
pan, first order otherwise). Warping is bilinear (``F.grid_sample``, ``align_corners=False``: pixel
``(i, j)`` centred at ``(j + 0.5, i + 0.5)``) with the border pixels repeated outside the frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tempoflow.errors import needs_extra

# RGB -> luma weights (ITU-R BT.601) for the grayscale the flow is computed on.
_LUMA = (0.299, 0.587, 0.114)


def _check_frames(frames: Tensor) -> None:
    if frames.ndim != 5 or frames.shape[1] < 2 or frames.shape[2] not in (1, 3):
        raise ValueError(f"need frames (B, N, C, H, W) with N >= 2 and C in (1, 3), got {tuple(frames.shape)}")


def grayscale(frames: Tensor) -> Tensor:
    """``(..., C, H, W)`` with ``C`` 1 or 3 -> ``(..., H, W)`` luma."""
    if frames.shape[-3] == 1:
        return frames[..., 0, :, :]
    w = torch.tensor(_LUMA, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    return (frames * w).sum(-3)


def optical_flow(frames: Tensor) -> Tensor:
    """Dense TV-L1 flow between consecutive frames.

    Args:
        frames: ``(B, N, C, H, W)``, ``C`` 1 or 3, ``N >= 2``.

    Returns:
        ``(B, N − 1, 2, H, W)`` float32 on the frames' device: ``[..., k, 0]`` the x (column) and
        ``[..., k, 1]`` the y (row) displacement in pixels that takes each pixel of frame ``k`` to
        where it is in frame ``k + 1``.

    Raises:
        ValueError: frames of another shape.
        MissingExtraError: scikit-image is not installed (extra ``camera``).
    """
    _check_frames(frames)
    with needs_extra("skimage", "camera", "the optical-flow baseline"):
        from skimage.registration import optical_flow_tvl1
    grey = grayscale(frames.detach().float().cpu()).numpy()  # (B, N, H, W)
    B, N = grey.shape[:2]
    flow = np.zeros((B, N - 1, 2, *grey.shape[2:]), dtype=np.float32)
    for b in range(B):
        for k in range(N - 1):
            v, u = optical_flow_tvl1(grey[b, k], grey[b, k + 1])  # row, column displacement
            flow[b, k, 0], flow[b, k, 1] = u, v
    return torch.from_numpy(flow).to(frames.device)


def warp(images: Tensor, displacement: Tensor) -> Tensor:
    """Backward warp: ``out(q) = images(q + displacement(q))``, bilinear, border pixels repeated outside.

    Args:
        images: ``(B, C, H, W)``.
        displacement: ``(B, 2, H, W)`` in pixels, x (column) then y (row).

    Returns:
        ``(B, C, H, W)`` in ``images``' dtype.

    Raises:
        ValueError: ``images`` is not 4-D or ``displacement`` is not ``(B, 2, H, W)`` alike.
    """
    if images.ndim != 4 or displacement.shape != (images.shape[0], 2, *images.shape[-2:]):
        raise ValueError(f"need images (B, C, H, W) and displacement (B, 2, H, W), got {tuple(images.shape)} "
                         f"and {tuple(displacement.shape)}")
    H, W = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=images.dtype, device=images.device),
                            torch.arange(W, dtype=images.dtype, device=images.device), indexing="ij")
    x = xs + 0.5 + displacement[:, 0]  # (B, H, W) sampled point, pixel units
    y = ys + 0.5 + displacement[:, 1]
    grid = torch.stack([2 * x / W - 1, 2 * y / H - 1], dim=-1)  # (B, H, W, 2) normalised, align_corners=False
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def flow_between_frames(frames: Tensor, fps: float, times: Tensor, flow: Tensor | None = None) -> Tensor:
    """Baseline: frames at ``times`` ``(M,)`` seconds by optical-flow warping of ``frames`` ``(B, N, C, H, W)``
    (frame k at k / fps), constant velocity within each interval and past either end (module docstring).

    Args:
        frames: ``(B, N, C, H, W)`` at ``k / fps``, ``k = 1..N``, ``N >= 2``.
        fps: frames per second of ``frames``.
        times: ``(M,)`` seconds, any (in-between, before frame 1, past ``T = N / fps``).
        flow: ``(B, N − 1, 2, H, W)`` from :func:`optical_flow`, computed when not given.

    Returns:
        ``(B, M, C, H, W)`` in the frames' dtype.

    Raises:
        ValueError: frames, times or flow of another shape; ``fps`` or a time not finite (``fps <= 0``).
        MissingExtraError: ``flow`` not given and scikit-image not installed (extra ``camera``).
    """
    _check_frames(frames)
    if not isinstance(times, Tensor) or times.ndim != 1:
        raise ValueError(f"need times as a (M,) tensor of seconds, got {times!r}")
    if not (math.isfinite(fps) and fps > 0) or not torch.isfinite(times).all():
        raise ValueError(f"fps must be finite and > 0 and every time finite, got fps={fps}")
    B, N, C, H, W = frames.shape
    if flow is None:
        flow = optical_flow(frames)
    if flow.shape != (B, N - 1, 2, H, W):
        raise ValueError(f"need flow (B, N - 1, 2, H, W) = {(B, N - 1, 2, H, W)}, got {tuple(flow.shape)}")
    M = times.numel()
    pos = times.double().cpu() * fps - 1  # fractional frame index, 0-based, unclamped
    k = pos.floor().long().clamp(0, N - 2)  # (M,) interval [k, k + 1] that holds or is nearest the time
    w = (pos - k).to(frames.dtype).to(frames.device)  # (M,) < 0 before frame 1, > 1 past frame N
    k = k.to(frames.device)
    first, second = frames[:, k].flatten(0, 1), frames[:, k + 1].flatten(0, 1)  # (B·M, C, H, W)
    f = flow[:, k].to(frames.dtype).flatten(0, 1)  # (B·M, 2, H, W)
    wm = w.repeat(B).view(-1, 1, 1, 1)  # (B·M, 1, 1, 1), batch-major like flatten(0, 1)
    # Inside an interval both ends are warped to the time and blended; outside it only the nearer end
    # moves on (w < 0: I_1(q − w F_1); w > 1: I_N(q − (w − 1) F_{N−1})), its blend weight then 1.
    from_first = warp(first, -wm.clamp(max=1) * f)  # I_k(q − w F_k)
    from_second = warp(second, (1 - wm.clamp(min=0)) * f)  # I_{k+1}(q + (1 − w) F_k)
    out = (1 - wm.clamp(0, 1)) * from_first + wm.clamp(0, 1) * from_second  # (B·M, C, H, W)
    return out.view(B, M, C, H, W)
