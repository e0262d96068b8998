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
from dataclasses import dataclass

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
MIN_STEP_FRACTION = 0.005  # slower than this (image sides per frame) on both axes: no direction
EARLY_STEPS = CLEAR_FRAMES - 1  # first steps that show the captioned direction before any bounce


@dataclass
class CaptionScore:
    """Oracle agreement with captions. Attribute accuracies are over caption objects; ``accuracy``
    and ``correct`` are per video (every object's colour, shape and direction right, none extra)."""

    accuracy: float
    colour: float
    shape: float
    direction: float
    correct: list[bool]


def _coverage(video: Tensor) -> Tensor:
    """``(T, 3, H, W)`` → ``(K, T, H, W)`` coverage of each palette colour (zero where not owned)."""
    c = torch.tensor(list(PALETTE.values()), dtype=video.dtype, device=video.device)  # (K, 3)
    alpha = torch.einsum("kc,tchw->kthw", c, video) / (c * c).sum(1)[:, None, None, None]
    alpha = alpha.clamp(0.0, 1.0)  # (K, T, H, W)
    residual = (video[None] - alpha[:, :, None] * c[:, None, :, None, None]).norm(dim=2)  # (K, T, H, W)
    r_best, k_best = residual.min(dim=0)  # (T, H, W)
    a_best = alpha.gather(0, k_best[None])[0]
    keep = (a_best >= ALPHA_GATE) & (r_best <= RESIDUAL_GATE)
    out = torch.zeros_like(alpha)
    return out.scatter_(0, k_best[None], (a_best * keep)[None])


def _read_shape(a: Tensor, mass: Tensor, cx: Tensor, cy: Tensor) -> str:
    """Shape whose template of equal area and centroid fits coverage ``a`` ``(F, H, W)`` best."""
    errors = []
    for shape in SHAPES:
        size = (mass / FILL[shape]).sqrt()  # (F,) diameter in pixels
        template = shape_alpha(shape, cx, cy - CENTROID_OFFSET[shape] * size, size, a.shape[-1])
        template = template * (template >= ALPHA_GATE)  # gated like the coverage
        errors.append(((a - template).abs().sum((1, 2)) / mass).median())
    return SHAPES[int(torch.stack(errors).argmin())]


def _read_direction(frames: Tensor, cx: Tensor, cy: Tensor, resolution: int) -> str:
    """Direction from centroids ``(F,)`` at (sorted) frame indices ``frames``; "" if undecidable."""
    if len(frames) < 2:
        return ""
    gap = frames.diff().to(cx.dtype)
    step = torch.stack([cx.diff() / gap, cy.diff() / gap], dim=1)  # (F − 1, 2) pixels per frame
    speed = step.abs().median(dim=0).values  # (2,) per-axis speed; bounces only flip signs
    if float(speed.max()) < MIN_STEP_FRACTION * resolution:
        return ""
    early = step[frames[1:] <= frames[0] + EARLY_STEPS].sum(0)  # steps before any bounce
    if len(early) == 0 or not bool(early.ne(0).any()):
        early = step[0]
    v = speed * early.sign()  # (2,)
    names = list(DIRECTIONS)
    u = torch.tensor([DIRECTIONS[n] for n in names], dtype=v.dtype, device=v.device)  # (8, 2)
    return names[int((u @ v).argmax())]


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
    video = video.float()
    T, _, H, W = video.shape
    cover = _coverage(video)  # (K, T, H, W)
    mass = cover.sum((2, 3))  # (K, T) pixels
    typical = mass.median(dim=1).values  # (K,)
    found = [k for k in typical.argsort(descending=True).tolist() if typical[k] >= MIN_OBJECT_FRACTION * H * W]
    grid = torch.arange(H, dtype=video.dtype, device=video.device) + 0.5
    specs = []
    for k in found[:max_objects]:
        frames = (mass[k] >= VALID_FRAME_FRACTION * typical[k]).nonzero()[:, 0]  # (F,) frame indices
        a, m = cover[k, frames], mass[k, frames]  # (F, H, W), (F,)
        cx = (a.sum(1) * grid).sum(1) / m  # (F,) centroid in pixels
        cy = (a.sum(2) * grid).sum(1) / m
        shape = _read_shape(a, m, cx, cy)
        specs.append(ObjectSpec(list(PALETTE)[k], shape, _read_direction(frames, cx, cy, H)))
    return specs


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
        raise ValueError(f"need videos (B, T, 3, H, W) and B captions, got {tuple(videos.shape)} and {len(captions)}")
    totals, correct, n_objects = [0, 0, 0], [], 0
    for video, caption in zip(videos, captions):
        target = parse_caption(caption)
        *hits, ok = _agreement(read_objects(video, max_objects), target)
        totals = [a + b for a, b in zip(totals, hits)]
        correct.append(ok)
        n_objects += len(target)
    n, m = max(len(correct), 1), max(n_objects, 1)
    return CaptionScore(sum(correct) / n, totals[0] / m, totals[1] / m, totals[2] / m, correct)
