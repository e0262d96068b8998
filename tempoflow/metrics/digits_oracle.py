"""Digits oracle: read the digit and its direction of motion back from a moving-digits video
(caption accuracy for ``data.name = digits``, DESIGN §7; the data are :mod:`tempoflow.data.digits`).

Ink: each pixel's coverage ``alpha`` is its projection on the ink colour, ``<p, c> / |c|²``, kept from
``INK_GATE`` on (darker pixels are background or noise). Per frame the ink's mass and centre of mass
follow.

Digit: a multinomial logistic regression (scikit-learn) on a ``CROP_SIDE × CROP_SIDE`` bilinear
resampling of the window of ``CROP_SCALE`` box sides around the centre of mass, divided by its ink
mass. It is trained on frames that the data set's own renderer draws from the TRAIN part of every
digit's sklearn images (:func:`tempoflow.data.digits.digit_instances`), so the images behind test and
held-out videos are unseen by it. A video's digit is the class with the largest summed
log-probability over its frames with ink.

Direction: from the centre-of-mass track, as the shapes oracle: the axis with the larger median
absolute step (a bounce only flips the sign) and the sign of the first ``EARLY_STEPS`` steps, which
the data keep free of bounces (``shapes.CLEAR_FRAMES``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tempoflow.data.digits import (
    DIGITS,
    FOOTPRINT,
    DigitScene,
    DigitsConfig,
    digit_instances,
    parse_caption,
    render_digit_scenes,
)
from tempoflow.data.shapes import CLEAR_FRAMES
from tempoflow.errors import needs_extra

__all__ = ["DigitsCaptionScore", "caption_accuracy", "read_digits"]

INK_GATE = 0.15  # coverage below this is background (generated videos are not clean black)
MIN_INK_FRACTION = 0.01  # a frame shows a digit from this ink mass on, as a fraction of the box area
CROP_SIDE = 12  # classifier input: CROP_SIDE² samples of the window around the centre of mass
CROP_SCALE = 1.5  # window side in box sides: the centre of mass is not the box centre
EARLY_STEPS = CLEAR_FRAMES - 1  # first steps that show the captioned direction before any bounce
MIN_STEP_FRACTION = 0.005  # slower than this (image sides per frame) on both axes: no direction
TRAIN_POSITIONS = 4  # rendered positions per training image
CLASSIFIER_SEED = 0
# Inverse L2 strength C of the logistic regression: the features sum to 1, so their weights must be
# large; C = 1 held the test-image accuracy at 0.83 where C = 100 reaches 0.93 (32 px, 152 videos).
REGULARISATION = 100.0
# (axis, sign) -> direction words; x to the right, y down (tempoflow.data.digits)
_DIRECTIONS = {
    (0, 1): "left to right",
    (0, -1): "right to left",
    (1, 1): "top to bottom",
    (1, -1): "bottom to top",
}


@dataclass
class DigitsCaptionScore:
    """Oracle agreement with captions: fractions of videos whose digit, direction, and both, are right.

    Attributes:
        accuracy: digit and direction both right.
        digit: digit right.
        direction: direction right.
        correct: per video, both right.
    """

    accuracy: float
    digit: float
    direction: float
    correct: list[bool]


def _box_side(cfg: DigitsConfig) -> float:
    return cfg.digit_scale * cfg.resolution


def _ink(videos: Tensor, colour: tuple[float, float, float]) -> Tensor:
    """Coverage ``(..., H, W)`` of ``(..., 3, H, W)`` frames: projection on the ink colour, gated."""
    c = torch.tensor(colour, dtype=torch.float32, device=videos.device)  # (3,)
    alpha = torch.einsum("...chw,c->...hw", videos.float(), c) / c.square().sum()
    return alpha.clamp(0.0, 1.0) * (alpha >= INK_GATE)


def _centres(ink: Tensor) -> tuple[Tensor, Tensor]:
    """Ink mass ``(N,)`` and centre of mass ``(N, 2)`` (x, y in pixels) of ``(N, H, W)`` coverage."""
    H, W = ink.shape[-2:]
    mass = ink.sum((-2, -1))  # (N,)
    ys = torch.arange(H, dtype=ink.dtype, device=ink.device) + 0.5  # pixel centres
    xs = torch.arange(W, dtype=ink.dtype, device=ink.device) + 0.5
    cx = (ink.sum(-2) * xs).sum(-1) / mass.clamp_min(1e-6)
    cy = (ink.sum(-1) * ys).sum(-1) / mass.clamp_min(1e-6)
    return mass, torch.stack([cx, cy], dim=-1)


def _crops(ink: Tensor, centre: Tensor, box: float) -> Tensor:
    """Classifier features ``(N, CROP_SIDE²)``: the window of ``CROP_SCALE · box`` pixels around each
    centre, resampled bilinearly (zeros outside the frame) and divided by its ink mass."""
    H, W = ink.shape[-2:]
    half = CROP_SCALE * box / 2.0
    u = torch.arange(CROP_SIDE, dtype=ink.dtype, device=ink.device) + 0.5  # (S,) sample centres
    u = u / CROP_SIDE * 2 - 1  # in (-1, 1) across the window
    px = centre[:, 0, None] + u * half  # (N, S) pixels
    py = centre[:, 1, None] + u * half
    gx, gy = px / W * 2 - 1, py / H * 2 - 1  # grid_sample coordinates, align_corners=False
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (N, S, S, 2)
    crop = F.grid_sample(ink[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    crop = crop.flatten(1)  # (N, S²)
    return crop / crop.sum(1, keepdim=True).clamp_min(1e-6)


@functools.lru_cache(maxsize=4)
def _classifier(resolution: int, digit_scale: float, test_fraction: float):
    """Logistic regression trained on rendered frames of the train-part images (see module doc).

    Raises:
        MissingExtraError: scikit-learn is not installed.
    """
    with needs_extra("sklearn", "digits", "the digits oracle"):
        from sklearn.linear_model import LogisticRegression

    cfg = DigitsConfig(resolution=resolution, digit_scale=digit_scale, test_instance_fraction=test_fraction)
    rng = np.random.default_rng(CLASSIFIER_SEED)
    box = _box_side(cfg)
    reach = FOOTPRINT * box / 2.0
    scenes, labels = [], []
    for d in DIGITS:
        for instance in digit_instances(d, "train", test_fraction):
            for x0, y0 in rng.uniform(reach, resolution - reach, size=(TRAIN_POSITIONS, 2)):
                scenes.append(
                    DigitScene(d, "left to right", int(instance), float(x0), float(y0), box, 0.0, resolution)
                )
                labels.append(d)
    frames = render_digit_scenes(scenes, torch.zeros(1))[:, 0]  # (N, 3, L, L): static scenes
    ink = _ink(frames, (1.0, 1.0, 1.0))
    _, centre = _centres(ink)
    features = _crops(ink, centre, box).numpy()
    return LogisticRegression(C=REGULARISATION, max_iter=2000).fit(features, np.array(labels))


def _directions(centre: Tensor, valid: Tensor, resolution: int) -> list[str | None]:
    """Direction words from centre tracks ``(B, T, 2)`` (pixels) over ``valid`` frames ``(B, T)``;
    None when it cannot be told (fewer than two frames with ink, or no motion)."""
    B, T = valid.shape
    if T < 2:
        return [None] * B
    step = centre.diff(dim=1)  # (B, T − 1, 2) pixels per frame
    ok = valid[:, 1:] & valid[:, :-1]  # (B, T − 1)
    nan = torch.tensor(float("nan"), dtype=step.dtype, device=step.device)
    speed = torch.where(ok[..., None], step.abs(), nan).nanmedian(dim=1).values.nan_to_num(0.0)  # (B, 2)
    axis = speed.argmax(dim=1)  # (B,)
    k = torch.arange(T - 1, device=step.device)
    first = ok.int().argmax(dim=1, keepdim=True)  # (B, 1) first usable step
    early = (step * (ok & (k < first + EARLY_STEPS))[..., None]).sum(dim=1)  # (B, 2)
    sign = early.gather(1, axis[:, None])[:, 0].sign()  # (B,)
    decided = ok.any(dim=1) & (speed.amax(dim=1) >= MIN_STEP_FRACTION * resolution) & (sign != 0)
    return [_DIRECTIONS[(int(a), int(s))] if d else None for a, s, d in zip(axis, sign, decided)]


@torch.no_grad()
def read_digits(videos: Tensor, cfg: DigitsConfig) -> tuple[list[int | None], list[str | None]]:
    """The digit and direction of each video of ``(B, T, 3, H, W)`` in [0, 1] (None where no ink).

    Args:
        videos: clips of the data set ``cfg`` describes (its resolution, digit size and ink colour).
        cfg: the moving-digits config.
    """
    if videos.ndim != 5 or videos.shape[2] != 3 or videos.shape[-1] != videos.shape[-2]:
        raise ValueError(f"videos must be (B, T, 3, H, H), got shape {tuple(videos.shape)}")
    if videos.shape[-1] != cfg.resolution:
        raise ValueError(
            f"videos are {videos.shape[-1]} pixels wide, the digits config says {cfg.resolution}"
        )
    B, T = videos.shape[:2]
    box = _box_side(cfg)
    ink = _ink(videos.cpu(), cfg.colour).flatten(0, 1)  # (B T, H, W)
    mass, centre = _centres(ink)
    valid = (mass >= MIN_INK_FRACTION * box**2).view(B, T)
    model = _classifier(cfg.resolution, cfg.digit_scale, cfg.test_instance_fraction)
    log_p = torch.from_numpy(model.predict_log_proba(_crops(ink, centre, box).numpy()))  # (B T, 10)
    score = (log_p.view(B, T, -1) * valid[..., None]).sum(1)  # (B, 10)
    classes = torch.as_tensor(model.classes_)
    digits = [int(classes[i]) if v else None for i, v in zip(score.argmax(1), valid.any(1))]
    return digits, _directions(centre.view(B, T, 2), valid, cfg.resolution)


def caption_accuracy(videos: Tensor, captions: list[str], cfg: DigitsConfig) -> DigitsCaptionScore:
    """How many videos ``(B, T, 3, H, W)`` show their caption ("digit <d> moves <direction>")."""
    if len(captions) != len(videos):
        raise ValueError(f"{len(videos)} videos but {len(captions)} captions")
    wanted = [parse_caption(c) for c in captions]
    digits, directions = read_digits(videos, cfg)
    digit_ok = [d == w[0] for d, w in zip(digits, wanted)]
    direction_ok = [d == w[1] for d, w in zip(directions, wanted)]
    correct = [a and b for a, b in zip(digit_ok, direction_ok)]
    n = max(len(correct), 1)
    return DigitsCaptionScore(sum(correct) / n, sum(digit_ok) / n, sum(direction_ok) / n, correct)
