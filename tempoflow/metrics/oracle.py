"""Shapes oracle: read colour, shape and direction of each object back from a video's pixels.

Analytic, no learning (DESIGN §7, caption accuracy). Each pixel is explained as ``alpha · c`` for the
palette colour ``c`` nearest in RGB to its ray from the background, which recovers the renderer's
anti-aliased coverage ``alpha`` exactly on clean frames. A colour with enough coverage mass is an
object; per frame its coverage gives area and centroid. The shape is the one whose anti-aliased
template (same area and centroid, :func:`tempoflow.data.shapes.shape_alpha`) fits the coverage best,
by the median over frames. The direction comes from the centroid track: per-axis speed is the median
absolute step (a bounce does not change it), the sign is that of the first steps, which the data
keep free of bounces (``shapes.CLEAR_FRAMES``); the vector maps to the nearest of ``DIRECTIONS``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tempoflow.data.shapes import (
    CENTROID_OFFSET,
    CLEAR_FRAMES,
    DIRECTIONS,
    FILL,
    PALETTE,
    SHAPES,
    ObjectSpec,
    parse_caption,
    shape_alpha,
)

ALPHA_GATE = 0.3  # a pixel counts for a colour from this coverage on (below: background or noise)
RESIDUAL_GATE = 0.3  # ...and only if it lies this close (RGB distance) to the colour's ray
MIN_OBJECT_FRACTION = 0.005  # median coverage mass of an object, fraction of H·W (smallest is ~0.016)
VALID_FRAME_FRACTION = 0.25  # frames with less than this × the median mass are ignored (occluded)
WHOLE_FRAME_FRACTION = 0.9  # the shape is read from frames with at least this × the largest mass
MIN_STEP_FRACTION = 0.005  # slower than this (image sides per frame) on both axes: no direction
EARLY_STEPS = CLEAR_FRAMES - 1  # first steps that show the captioned direction before any bounce
# Pixels (frames × H × W) classified at once by caption_accuracy: large batches keep the number of
# tensor ops small (each costs a thread-pool round trip); the cap bounds memory (~0.3 GB at K = 6).
_CHUNK_PIXELS = 2**21


@dataclass
class CaptionScore:
    """Oracle agreement with captions. Attribute accuracies are over caption objects; ``accuracy``
    and ``correct`` are per video (every object's colour, shape and direction right, none extra)."""

    accuracy: float
    colour: float
    shape: float
    direction: float
    correct: list[bool]


def _coverage(videos: Tensor) -> tuple[Tensor, Tensor]:
    """Owner colour and its coverage of every pixel of ``(B, T, 3, H, W)``: two ``(B, T, H, W)``
    tensors, the palette index (long) and ``alpha`` (zero for background and unexplained pixels)."""
    c = torch.tensor(list(PALETTE.values()), dtype=videos.dtype, device=videos.device)  # (K, 3)
    c2 = (c * c).sum(1)  # (K,)
    p = videos.movedim(2, -1)  # (B, T, H, W, 3)
    norm2 = (p * p).sum(-1)  # (B, T, H, W)
    # alpha >= ALPHA_GATE needs <p, c> >= gate |c|², hence |p| >= gate |c|: skip darker pixels.
    fg = norm2 >= ALPHA_GATE**2 * c2.min()
    q = p[fg]  # (P, 3) candidate pixels
    dot = q @ c.T  # (P, K)
    alpha = (dot / c2).clamp(0.0, 1.0)
    # |q − alpha c|² without materialising q − alpha c: |q|² − alpha (2 <q, c> − alpha |c|²).
    gain = alpha * (2.0 * dot - alpha * c2)  # (P, K)
    gain_best, k = gain.max(dim=-1)  # (P,)
    a = alpha.gather(-1, k[:, None])[:, 0]
    keep = (a >= ALPHA_GATE) & (norm2[fg] - gain_best <= RESIDUAL_GATE**2)
    owner = torch.zeros(fg.shape, dtype=torch.long, device=videos.device).masked_scatter_(fg, k)
    return owner, torch.zeros_like(norm2).masked_scatter_(fg, a * keep)


def _read_shapes(a: Tensor, m: Tensor, cx: Tensor, cy: Tensor, whole: Tensor) -> Tensor:
    """Index into ``SHAPES`` of the template (equal area and centroid) that fits coverage ``a``
    ``(..., T, H, W)`` best, by the median over the ``whole`` frames ``(..., T)`` → ``(...)``."""
    nan = torch.tensor(float("nan"), dtype=a.dtype, device=a.device)
    errors = []
    for shape in SHAPES:
        size = (m / FILL[shape]).sqrt()  # (..., T) diameter in pixels
        template = shape_alpha(shape, cx, cy - CENTROID_OFFSET[shape] * size, size, a.shape[-1])
        template = template * (template >= ALPHA_GATE)  # gated like the coverage
        error = (a - template).abs().sum((-2, -1)) / m  # (..., T) relative L1 misfit
        errors.append(torch.where(whole, error, nan).nanmedian(dim=-1).values)
    return torch.stack(errors, dim=-1).nan_to_num(0.0).argmin(dim=-1)


def _read_directions(cx: Tensor, cy: Tensor, valid: Tensor, resolution: int) -> Tensor:
    """Index into ``DIRECTIONS`` from centroid tracks ``(..., T)`` in pixels, or −1 if undecidable.

    Only steps between two ``valid`` frames count. Per-axis speed is the median absolute step
    (bounces only flip signs); signs come from the first ``EARLY_STEPS`` steps, before any bounce.
    """
    T = cx.shape[-1]
    if T < 2:
        return torch.full(cx.shape[:-1], -1, dtype=torch.long, device=cx.device)
    step = torch.stack([cx.diff(dim=-1), cy.diff(dim=-1)], dim=-1)  # (..., T − 1, 2) pixels per frame
    ok = valid[..., 1:] & valid[..., :-1]  # (..., T − 1)
    nan = torch.tensor(float("nan"), dtype=cx.dtype, device=cx.device)
    speed = torch.where(ok[..., None], step.abs(), nan).nanmedian(dim=-2).values.nan_to_num(0.0)  # (..., 2)
    k = torch.arange(T - 1, device=cx.device)
    first = ok.int().argmax(dim=-1, keepdim=True)  # first usable step
    early = (step * (ok & (k < first + EARLY_STEPS))[..., None]).sum(dim=-2)  # (..., 2)
    u = torch.tensor(list(DIRECTIONS.values()), dtype=cx.dtype, device=cx.device)  # (D, 2)
    best = ((speed * early.sign()) @ u.T).argmax(dim=-1)  # nearest direction
    decided = ok.any(dim=-1) & (speed.amax(dim=-1) >= MIN_STEP_FRACTION * resolution)
    return torch.where(decided, best, -1)


def read_objects(video: Tensor, max_objects: int = 2) -> list[ObjectSpec]:
    """Read the objects of one video from its pixels.

    Args:
        video: ``(T, 3, H, W)`` in [0, 1], square frames on the shapes background.
        max_objects: at most this many objects are returned (the most massive colours).

    Returns:
        One :class:`ObjectSpec` per object found, most massive first, ``speed`` always "" (not read)
        and ``direction`` "" when it cannot be told (one frame, or no motion).
    """
    if video.ndim != 4 or video.shape[1] != 3 or video.shape[2] != video.shape[3]:
        raise ValueError(f"video must be (T, 3, H, H), got shape {tuple(video.shape)}")
    return _read_batch(video[None].float(), max_objects)[0]


def _read_batch(videos: Tensor, max_objects: int) -> list[list[ObjectSpec]]:
    """Objects of each video of ``(B, T, 3, H, H)``, batched over videos, objects and frames."""
    B, T, H, K = videos.shape[0], videos.shape[1], videos.shape[-1], len(PALETTE)
    owner, alpha = _coverage(videos)  # (B, T, H, W) each
    mass = torch.zeros(B, T, K, dtype=alpha.dtype, device=alpha.device)
    mass = mass.scatter_add_(2, owner.flatten(2), alpha.flatten(2)).transpose(1, 2)  # (B, K, T) pixels
    order = mass.median(dim=-1).values.argsort(dim=1, descending=True)[:, :max_objects]  # (B, M) colours
    m = mass.gather(1, order[..., None].expand(-1, -1, T))  # (B, M, T)
    typical = m.median(dim=-1, keepdim=True).values  # (B, M, 1)
    present = typical[..., 0] >= MIN_OBJECT_FRACTION * H * H  # (B, M)
    video_of, slot = present.nonzero(as_tuple=True)  # (N,) each: the objects found
    colour, m, typical = order[video_of, slot], m[video_of, slot], typical[video_of, slot]  # (N,), (N, T)
    a = alpha[video_of] * (owner[video_of] == colour[:, None, None, None])  # (N, T, H, W)
    valid = m >= VALID_FRAME_FRACTION * typical  # (N, T) frames not (mostly) hidden
    whole = valid & (m >= WHOLE_FRAME_FRACTION * m.amax(dim=-1, keepdim=True))  # frames not occluded
    m = m.clamp(min=torch.finfo(m.dtype).tiny)
    grid = torch.arange(H, dtype=videos.dtype, device=videos.device) + 0.5
    cx = (a.sum(-2) * grid).sum(-1) / m  # (N, T) centroid in pixels
    cy = (a.sum(-1) * grid).sum(-1) / m
    shape = _read_shapes(a, m, cx, cy, whole)  # (N,)
    direction = _read_directions(cx, cy, valid, H)  # (N,)
    colours, directions = list(PALETTE), list(DIRECTIONS)
    out: list[list[ObjectSpec]] = [[] for _ in range(B)]
    for b, k, s, d in zip(video_of.tolist(), colour.tolist(), shape.tolist(), direction.tolist()):
        out[b].append(ObjectSpec(colours[k], SHAPES[s], directions[d] if d >= 0 else ""))
    return out


def _agreement(read: list[ObjectSpec], target: list[ObjectSpec]) -> tuple[int, int, int, bool]:
    """Best one-to-one matching of read objects to caption objects: counts of right colours,
    shapes and directions, and whether everything (including the number of objects) agrees."""
    padded: list[ObjectSpec | None] = [*read, *([None] * len(target))]
    best = (0, 0, 0)
    for assign in itertools.permutations(padded, len(target)):
        hits = [
            (o is not None and o.colour == t.colour, o is not None and o.shape == t.shape,
             o is not None and o.direction == t.direction)
            for o, t in zip(assign, target)
        ]
        score = tuple(sum(h[i] for h in hits) for i in range(3))
        best = max(best, score, key=sum)
    n = len(target)
    return (*best, len(read) == n and best == (n, n, n))


def matches(video: Tensor, caption: str, max_objects: int = 2) -> bool:
    """Whether the oracle reads ``caption`` (speed words ignored) from ``video`` ``(T, 3, H, W)``."""
    return _agreement(read_objects(video, max_objects), parse_caption(caption))[3]


def caption_accuracy(videos: Tensor, captions: list[str], max_objects: int = 2) -> CaptionScore:
    """Score videos ``(B, T, 3, H, W)`` in [0, 1] against their ``B`` captions with the oracle."""
    if videos.ndim != 5 or len(videos) != len(captions):
        raise ValueError(
            f"need videos (B, T, 3, H, W) and B captions, "
            f"got {tuple(videos.shape)} and {len(captions)} captions"
        )
    if videos.shape[2] != 3 or videos.shape[3] != videos.shape[4]:
        raise ValueError(f"videos must be (B, T, 3, H, H), got shape {tuple(videos.shape)}")
    totals, correct, n_objects = [0, 0, 0], [], 0
    chunk = max(1, _CHUNK_PIXELS // (videos.shape[1] * videos.shape[3] * videos.shape[4]))
    read = [objects for part in videos.float().split(chunk) for objects in _read_batch(part, max_objects)]
    for objects, caption in zip(read, captions):
        target = parse_caption(caption)
        *hits, ok = _agreement(objects, target)
        totals = [a + b for a, b in zip(totals, hits)]
        correct.append(ok)
        n_objects += len(target)
    n, m = max(len(correct), 1), max(n_objects, 1)
    return CaptionScore(sum(correct) / n, totals[0] / m, totals[1] / m, totals[2] / m, correct)


def objects_per_frame(videos: Tensor, threshold: float = 0.25) -> tuple[Tensor, Tensor]:
    """How many objects each frame shows, and how many object pixels: the statistics a long roll-out of a
    shapes model must keep within the training range (seed 001 Figure 5; README "Long video roll-outs").

    A pixel is an object pixel when its brightest channel exceeds ``threshold`` (the background is black);
    objects are the 8-connected components of those pixels (``scipy.ndimage.label``), so an object split
    in two counts twice and a frame gone blank counts 0.

    Args:
        videos: ``(B, T, C, H, W)`` in [0, 1].
        threshold: object-pixel threshold on the brightest channel.

    Returns:
        ``(counts, pixels)``, both ``(B, T)`` float32 on the CPU: components and object pixels per frame.

    Raises:
        ValueError: ``videos`` is not a non-empty ``(B, T, C, H, W)``, or ``threshold`` is not finite.
    """
    from scipy import ndimage

    if videos.dim() != 5 or videos.numel() == 0:
        raise ValueError(f"videos must be a non-empty (B, T, C, H, W) tensor, got {tuple(videos.shape)}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    mask = (videos.detach().amax(2) > threshold).cpu().numpy()  # (B, T, H, W)
    B, T = mask.shape[:2]
    within_frame = np.zeros((3, 3, 3, 3), dtype=bool)
    within_frame[1, 1] = True  # 8-connected inside a frame, never across frames or videos
    labels, n = ndimage.label(mask, structure=within_frame)  # (B, T, H, W) ids 1..n
    frame_of = np.zeros(n + 1, dtype=np.int64)  # every component lies in one frame: its flat (b, t)
    frame_of[labels.reshape(B * T, -1)] = np.arange(B * T)[:, None]
    counts = np.bincount(frame_of[1:], minlength=B * T).reshape(B, T)
    return torch.from_numpy(counts).float(), torch.from_numpy(mask.sum((2, 3))).float()
