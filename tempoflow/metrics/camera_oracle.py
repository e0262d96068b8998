"""Camera oracle: read the camera's motion and the photograph back from a video's pixels.

Analytic, no learning (DESIGN §7, caption accuracy), for :mod:`tempoflow.data.camera`. On the grey
frames ``F_1..F_T`` three hypotheses of a constant pose change per frame are fitted:

- translation: ``skimage.registration.phase_cross_correlation`` of ``F_1`` with every later frame
  ``F_{1+g}`` gives candidate shifts per frame (shift / g); the one that best explains every
  ``F_{k+1}`` from ``F_k`` is refined on a 0.1 px grid around it (phase correlation on small,
  non-periodic frames is pulled towards zero by the borders, which do not move with the content);
- zoom: the scale ``s`` about the frame centre, and rotation: the angle ``θ``, that best explain
  ``F_{k+1}`` from ``F_k`` (a fine grid of candidates, warped with the renderer's own map
  ``p = c + R(θ) u / s``), the median over pairs;
- the motion's kind is the hypothesis with the smallest residual over all pairs, on a central disk
  (new content enters at the borders); a pan's direction is the nearest of the 8 against the content's
  shift (the camera moves the other way), a zoom is "in" for ``s > 1``, a rotation "clockwise" for
  ``θ > 0`` (the content turns counterclockwise on screen);
- the photograph: normalised cross-correlation of the first frames' thumbnails with each working
  image's thumbnail at every position and a few zooms; the photo with the best mean over frames.

Speed words are not read (as the shapes oracle). Accuracy on clean renders: README "Camera".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tempoflow.data.camera import (
    DIRECTIONS,
    PANS,
    CameraConfig,
    motion_kind,
    parse_caption,
    sampling_theta,
    working_image,
)
from tempoflow.errors import needs_extra

MAX_LOG_SCALE = 0.12  # zoom candidates: |log s| per frame up to this (quickly at 8 fps is 0.056)
MAX_ANGLE = math.radians(9.0)  # rotation candidates per frame up to this (quickly at 8 fps is 5.6°)
CANDIDATES = 49  # per search (odd: includes "no motion")
DISK_FRACTION = 0.4  # the zoom/rotation residual is taken inside radius DISK_FRACTION · L (borders move in)
UPSAMPLE = 20  # phase correlation's subpixel precision: 1/UPSAMPLE pixel
REFINE_RANGE = 0.6  # the shift is refined within this many pixels per frame of phase correlation's
REFINE_STEPS = 13  # ...on a grid of REFINE_STEPS² candidates (0.1 px apart)
THUMB_SIDE = 8  # frame thumbnails for the photo match (the working images shrink by the same factor)
PHOTO_ZOOMS = (0.7, 0.85, 1.0, 1.2, 1.5)  # zooms of the working images the thumbnails are matched at
FRAMES_FOR_PHOTO = 4  # the photo is read from the first frames (closest to the start pose)


@dataclass
class CameraScore:
    """Oracle agreement with captions, per video: ``accuracy`` (photo and motion right), ``photo``,
    ``motion`` and the motion's kind (pan, zoom, rotate) alone."""

    accuracy: float
    photo: float
    motion: float
    kind: float
    correct: list[bool]


def _grey(videos: Tensor) -> Tensor:
    return videos.float().mean(dim=2)  # (B, T, H, W)


def _shifts(grey: Tensor) -> Tensor:
    """Candidate content shifts per frame ``(B, T − 1, 2)`` as ``(dx, dy)`` pixels: phase correlation of
    the first frame with frame ``1 + g``, divided by ``g``, for every gap ``g = 1..T − 1`` (a long
    baseline resolves the direction finely, a short one survives fast pans in small frames)."""
    with needs_extra("skimage", "camera", "the camera oracle (phase correlation)"):
        from skimage.registration import phase_cross_correlation
    B, T = grey.shape[:2]
    g = grey.double().numpy()
    out = np.zeros((B, T - 1, 2))
    for b in range(B):
        a = g[b, 0] - g[b, 0].mean()
        for gap in range(1, T):
            c = g[b, gap] - g[b, gap].mean()
            shift = phase_cross_correlation(a, c, upsample_factor=UPSAMPLE)[0]  # registers F_{1+g} onto F_1
            out[b, gap - 1] = (-shift[1] / gap, -shift[0] / gap)
    return torch.from_numpy(out)


def _best_shift(grey: Tensor, candidates: Tensor) -> Tensor:
    """Of candidate shifts per frame ``(B, K, 2)``, the one ``(B, 2)`` that best explains every
    ``F_{k+1}`` from ``F_k``."""
    z = torch.zeros(candidates.shape[:2], dtype=torch.float64)
    err = _errors(grey, _pose_change(grey, candidates[..., 0], candidates[..., 1], z, z)).mean(dim=1)  # (B, K)
    return candidates[torch.arange(len(candidates)), err.argmin(dim=1)]


def _refine_shifts(grey: Tensor, shift: Tensor) -> Tensor:
    """The per-frame shift near ``shift`` ``(B, 2)`` (within ``REFINE_RANGE`` px) that best explains every
    ``F_{k+1}`` from ``F_k``: phase correlation's estimate, corrected for its pull towards zero (the
    frames' borders do not move with their content)."""
    grid = torch.linspace(-REFINE_RANGE, REFINE_RANGE, REFINE_STEPS, dtype=torch.float64)
    dy, dx = torch.meshgrid(grid, grid, indexing="ij")
    offsets = torch.stack([dx.flatten(), dy.flatten()], dim=1)  # (K, 2)
    return _best_shift(grey, shift[:, None] + offsets)


def _errors(grey: Tensor, affine: Tensor) -> Tensor:
    """Mean squared residual on the central disk of ``F_{k+1}`` against ``F_k`` warped by each candidate
    pose change ``affine`` (``(K, 2, 3)`` shared, or ``(B, K, 2, 3)`` per video; ``F.affine_grid``
    matrices, ``align_corners=False``): ``(B, T − 1, K)``."""
    B, T, H, W = grey.shape
    affine = affine.expand(B, *affine.shape[-3:]) if affine.ndim == 3 else affine
    K = affine.shape[1]
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5 - H / 2, torch.arange(W) + 0.5 - W / 2, indexing="ij")
    disk = (xx**2 + yy**2) <= (DISK_FRACTION * min(H, W)) ** 2  # (H, W)
    out = torch.empty(B, T - 1, K)
    for b in range(B):
        grid = F.affine_grid(affine[b].float(), [K, 1, H, W], align_corners=False)  # (K, H, W, 2)
        src = grey[b, :-1, None].repeat_interleave(K, 0)  # (T−1)·K frames, pair-major
        warped = F.grid_sample(src, grid.repeat(T - 1, 1, 1, 1), mode="bilinear", padding_mode="border",
                               align_corners=False).view(T - 1, K, H, W)
        out[b] = ((warped - grey[b, 1:, None]) ** 2)[..., disk].mean(-1)  # (T−1, K)
    return out


def _pose_change(grey: Tensor, dx: Tensor, dy: Tensor, log_s: Tensor, theta: Tensor) -> Tensor:
    """Affine matrices of camera pose changes per frame: ``F_{k+1}(u) = F_k(c + R(θ) (u − d) / s)`` with
    ``c`` the frame centre and ``d = (dx, dy)`` the content's shift; arguments broadcast."""
    H, W = grey.shape[-2:]
    return sampling_theta(W / 2 - dx.double(), H / 2 - dy.double(), torch.exp(log_s.double()), theta.double(), W, W)


def read_motions(videos: Tensor) -> list[str]:
    """The camera motion of each video ``(B, T, 3, H, W)``: one of ``camera.MOTIONS``, or "" when the
    video has fewer than 2 frames. The motion kind is the hypothesis (the measured shift, the median
    best zoom, the median best rotation) with the smallest residual over all frame pairs."""
    grey = _grey(videos)
    B, T = grey.shape[:2]
    if T < 2:
        return [""] * B
    shift = _refine_shifts(grey, _best_shift(grey, _shifts(grey)))  # (B, 2) content shift per frame
    grid = torch.linspace(-1.0, 1.0, CANDIDATES)
    zero = torch.zeros(CANDIDATES)
    zooms = _errors(grey, _pose_change(grey, zero, zero, grid * MAX_LOG_SCALE, zero))  # (B, T−1, K)
    turns = _errors(grey, _pose_change(grey, zero, zero, zero, grid * MAX_ANGLE))
    log_s = (grid[zooms.argmin(dim=2)] * MAX_LOG_SCALE).median(dim=1).values  # (B,)
    theta = (grid[turns.argmin(dim=2)] * MAX_ANGLE).median(dim=1).values
    z = torch.zeros(B)
    hypotheses = torch.stack([
        _pose_change(grey, shift[:, 0], shift[:, 1], z, z),
        _pose_change(grey, z, z, log_s, z),
        _pose_change(grey, z, z, z, theta),
    ], dim=1)  # (B, 3, 2, 3)
    kind = _errors(grey, hypotheses).mean(dim=1).argmin(dim=1)  # (B,)
    units = torch.tensor([DIRECTIONS[d] for d in PANS], dtype=torch.float64)  # (8, 2)
    pan = (-shift @ units.T).argmax(dim=1)  # the camera moves against its content
    out = []
    for b in range(B):
        if kind[b] == 0:
            out.append(PANS[int(pan[b])])
        elif kind[b] == 1:  # zooming in by s per frame: F_{k+1}(u) = F_k(u / s), s > 1
            out.append("in" if log_s[b] > 0 else "out")
        else:  # θ > 0 is the camera turning clockwise (camera module doc)
            out.append("clockwise" if theta[b] > 0 else "counterclockwise")
    return out


def read_photos(videos: Tensor, cfg: CameraConfig) -> list[str]:
    """The photograph (a name of ``cfg.photos``) each video ``(B, T, 3, L, L)`` shows, by normalised
    cross-correlation of frame thumbnails with the working images' thumbnails at every position."""
    B, C, W = videos.shape[0], videos.shape[2], videos.shape[-1]
    factor = THUMB_SIDE / W
    frames = videos[:, :FRAMES_FOR_PHOTO].float().flatten(0, 1)  # (B·T', 3, H, W)
    f = F.interpolate(frames, size=(THUMB_SIDE, THUMB_SIDE), mode="area")  # (M, 3, t, t)
    f = f - f.mean(dim=(1, 2, 3), keepdim=True)
    f = f / f.flatten(1).norm(dim=1).clamp_min(1e-6)[:, None, None, None]
    n = f[0].numel()
    ones = torch.ones(1, C, THUMB_SIDE, THUMB_SIDE)
    scores = []
    for name in cfg.photos:
        best = None
        for zoom in PHOTO_ZOOMS:
            side = max(THUMB_SIDE, round(cfg.photo_size * factor * zoom))
            p = F.interpolate(working_image(name, cfg.photo_size)[None], size=(side, side), mode="area")  # (1, 3, s, s)
            # NCC(x) = Σ f̂ · p_x / ‖p_x − mean(p_x)‖ since f̂ has zero mean and unit norm.
            num = F.conv2d(p, f)  # (1, M, s', s')
            total = F.conv2d(p, ones)
            energy = F.conv2d(p * p, ones)
            denom = (energy - total**2 / n).clamp_min(1e-8).sqrt()
            ncc = (num / denom).flatten(2).amax(dim=2)[0]  # (M,)
            best = ncc if best is None else torch.maximum(best, ncc)
        scores.append(best.view(B, -1).mean(dim=1))
    pick = torch.stack(scores, dim=1).argmax(dim=1)  # (B,)
    return [cfg.photos[int(i)] for i in pick]


def caption_accuracy(videos: Tensor, captions: list[str], cfg: CameraConfig | None = None) -> CameraScore:
    """Score videos ``(B, T, 3, L, L)`` in [0, 1] against their ``B`` camera captions with the oracle.

    ``cfg`` gives the photographs and the working-image scale (default ``CameraConfig()``); the frame
    side is read from the videos.
    """
    if videos.ndim != 5 or len(videos) != len(captions) or videos.shape[2] != 3 or videos.shape[3] != videos.shape[4]:
        raise ValueError(f"need videos (B, T, 3, L, L) and B captions, got {tuple(videos.shape)} and "
                         f"{len(captions)} captions")
    cfg = cfg or CameraConfig()
    if cfg.resolution != videos.shape[-1]:
        cfg = dataclasses.replace(cfg, resolution=videos.shape[-1])
    targets = [parse_caption(c) for c in captions]
    motions = read_motions(videos.cpu())
    photos = read_photos(videos.cpu(), cfg)
    photo_ok = [p == t[0] for p, t in zip(photos, targets)]
    motion_ok = [m == t[1] for m, t in zip(motions, targets)]
    kind_ok = [m != "" and motion_kind(m) == motion_kind(t[1]) for m, t in zip(motions, targets)]
    correct = [a and b for a, b in zip(photo_ok, motion_ok)]
    n = max(len(captions), 1)
    return CameraScore(sum(correct) / n, sum(photo_ok) / n, sum(motion_ok) / n, sum(kind_ok) / n, correct)
