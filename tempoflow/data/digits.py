"""Captioned moving handwritten digits rendered at any continuous time (DESIGN §6).

In the spirit of SyncDraw-MM (paper 002, appendix B): one digit moves along one axis and the caption
names the digit and the direction. The digit images are the 8×8 scans shipped with scikit-learn
(``sklearn.datasets.load_digits``, 1797 images, no download). A bucket (one caption) holds videos of
DIFFERENT handwritten instances of its digit at random start offsets: the one-to-many case.

Coordinates and time follow :mod:`tempoflow.data.shapes`: pixels, x right, y DOWN, pixel ``(i, j)``
centred at ``(j + 0.5, i + 0.5)``; time in seconds, frame ``k`` (1-based) at ``t = k / fps``. The
digit image is stretched over a square box of side ``size = digit_scale · L`` whose centre bounces
elastically (the same closed-form triangle-wave fold as shapes) and is sampled bilinearly with zero
padding (``F.grid_sample``), so a frame at any float time is exact and Lipschitz in time. The
bilinear footprint reaches half a source pixel past the box, so the centre is kept
``FOOTPRINT · size / 2`` away from the walls and the digit is never clipped.

Captions follow one grammar, inverted exactly by :func:`parse_caption`::

    digit <0-9> moves <left to right | right to left | top to bottom | bottom to top>
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Shared with shapes so both data sets bounce, start and time their frames the same way.
from tempoflow.data.captioned import CaptionedVideos, bucket_ids_of, check_names, frame_times
from tempoflow.data.shapes import (
    CLEAR_FRAMES,
    NORMAL_SPEED,
    SPLITS,
    _fold,
    _start,
)
from tempoflow.errors import needs_extra

__all__ = [
    "DIGITS",
    "DIRECTIONS",
    "DigitScene",
    "DigitsConfig",
    "DigitsDataset",
    "all_captions",
    "caption_of",
    "digit_instances",
    "make_digits",
    "parse_caption",
    "render",
    "render_at",
    "render_digit_scenes",
]

DIGITS: tuple[int, ...] = tuple(range(10))
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit vectors, x right, y down
    "left to right": (1.0, 0.0),
    "right to left": (-1.0, 0.0),
    "top to bottom": (0.0, 1.0),
    "bottom to top": (0.0, -1.0),
}
IMAGE_SIDE = 8  # sklearn digit images are 8 × 8
IMAGE_MAX = 16.0  # their grey levels are integers 0..16
FOOTPRINT = 1.0 + 1.0 / IMAGE_SIDE  # bilinear support / box side: half a source pixel on each side
_CAPTION = re.compile(r"digit ([0-9]) moves (" + "|".join(DIRECTIONS) + r")")
# Stream of a caption's instance draw; video streams are [seed, caption, video] with video indices
# far below this value, so the streams never coincide.
_INSTANCE_STREAM = 2**32 - 1
_RENDER_CHUNK = 128  # videos rendered at once (bounds the (N·T, L, L, 2) sampling grid)


@dataclass(frozen=True)
class DigitsConfig:
    """Moving-digits data set. Sizes are fractions of the image side; time in seconds."""

    resolution: int = 32  # H = W in pixels
    num_frames: int = 8  # frames per video
    fps: float = 8.0  # frame k (1-based) sits at t = k / fps seconds (DESIGN §1)
    digit_scale: float = 0.5  # side of the stretched 8×8 digit as a fraction of resolution
    speed: float = NORMAL_SPEED  # image sides per second, as shapes at "normal" speed
    videos_per_caption: int = 4  # bucket size
    test_per_bucket: int = 1  # the last videos of every bucket go to the test split
    digits: tuple[int, ...] = DIGITS
    directions: tuple[str, ...] = tuple(DIRECTIONS)
    # (digit, direction) pairs never seen in train/test; each digit and direction still is.
    heldout_pairs: tuple[tuple[int, str], ...] = ((3, "right to left"), (7, "bottom to top"))
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB of full ink on a black background
    # The last fraction of each digit's sklearn images (file order) draw the test and heldout videos.
    test_instance_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        check_names("digit", self.digits, DIGITS)
        check_names("direction", self.directions, DIRECTIONS)
        checks = [
            (
                all(len(p) == 2 and p[0] in DIGITS and p[1] in DIRECTIONS for p in self.heldout_pairs),
                f"heldout_pairs must be (digit, direction) pairs, got {self.heldout_pairs}",
            ),
            (self.resolution >= 8, f"resolution must be >= 8 pixels, got {self.resolution}"),
            (self.num_frames >= 1, f"num_frames must be >= 1, got {self.num_frames}"),
            (math.isfinite(self.fps) and self.fps > 0, f"fps must be finite and > 0, got {self.fps}"),
            (
                0 < self.digit_scale * FOOTPRINT < 1,
                f"digit_scale must be in (0, {1 / FOOTPRINT:.4f}) so the digit fits, got {self.digit_scale}",
            ),
            (
                math.isfinite(self.speed) and self.speed >= 0,
                f"speed must be finite and >= 0, got {self.speed}",
            ),
            (self.videos_per_caption >= 1, f"videos_per_caption must be >= 1, got {self.videos_per_caption}"),
            (
                0 <= self.test_per_bucket < self.videos_per_caption,
                f"test_per_bucket must be in [0, videos_per_caption), got {self.test_per_bucket}",
            ),
            (
                len(self.colour) == 3 and all(0.0 <= c <= 1.0 for c in self.colour),
                f"colour must be three values in [0, 1], got {self.colour}",
            ),
            (
                0 < self.test_instance_fraction < 1,
                f"test_instance_fraction must be in (0, 1), got {self.test_instance_fraction}",
            ),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[Tensor, np.ndarray]:
    """All sklearn digit images ``(1797, 8, 8)`` float32 in [0, 1] and their labels ``(1797,)``.

    Raises:
        MissingExtraError: scikit-learn, which ships the images, is not installed.
    """
    with needs_extra("sklearn", "digits", "the digits dataset"):
        from sklearn.datasets import load_digits

    data = load_digits()
    return torch.from_numpy(data.images / IMAGE_MAX).float(), np.asarray(data.target)


def digit_instances(digit: int, split: str, test_fraction: float) -> np.ndarray:
    """Indices into ``load_digits()`` of the images of ``digit`` that ``split`` draws from.

    Each digit's images, in file order, are cut in two: the first ``1 − test_fraction`` feed "train",
    the rest "test" and "heldout", so no handwritten instance is shared across that cut.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    _, labels = _sklearn_digits()
    idx = np.flatnonzero(labels == digit)
    cut = len(idx) - max(1, round(test_fraction * len(idx)))
    return idx[:cut] if split == "train" else idx[cut:]


@dataclass(frozen=True)
class DigitScene:
    """One video: sklearn image ``instance`` of ``digit`` in a box of side ``size`` pixels whose centre
    starts at ``(x0, y0)`` pixels at ``t = 0`` and moves at ``speed_px`` pixels per second along
    ``DIRECTIONS[direction]``, bouncing off the walls of a ``resolution``² image."""

    digit: int
    direction: str
    instance: int
    x0: float
    y0: float
    size: float
    speed_px: float
    resolution: int
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def caption(self) -> str:
        return caption_of(self.digit, self.direction)


def caption_of(digit: int, direction: str) -> str:
    """``"digit <d> moves <direction>"`` (inverse of :func:`parse_caption`)."""
    if digit not in DIGITS or direction not in DIRECTIONS:
        raise ValueError(f"cannot caption digit {digit!r} moving {direction!r}")
    return f"digit {digit} moves {direction}"


def parse_caption(caption: str) -> tuple[int, str]:
    """``(digit, direction)`` of a caption; raise ``ValueError`` naming it if it breaks the grammar."""
    match = _CAPTION.fullmatch(caption)
    if match is None:
        raise ValueError(f"cannot parse digits caption {caption!r}; expected 'digit <0-9> moves <direction>'")
    return int(match.group(1)), match.group(2)


def _caption_pairs(cfg: DigitsConfig) -> list[tuple[int, str]]:
    return [(d, direction) for d in cfg.digits for direction in cfg.directions]


def all_captions(cfg: DigitsConfig) -> list[str]:
    """Every caption of ``cfg`` over all splits, in the order that defines caption indices."""
    return [caption_of(d, direction) for d, direction in _caption_pairs(cfg)]


def render_digit_scenes(scenes: list[DigitScene], times: Tensor) -> Tensor:
    """Render scenes of one resolution ``L`` at ``times`` (``(T,)`` seconds) → ``(N, T, 3, L, L)`` in [0, 1].

    Batched over videos and times: the box centres come from the bounce fold in closed form, and each
    output pixel samples the 8×8 image bilinearly at its position relative to the box.
    """
    times = torch.as_tensor(times).detach().cpu()  # rendering runs on the CPU
    if times.ndim != 1:
        raise ValueError(f"times must be a 1-D tensor of seconds, got shape {tuple(times.shape)}")
    resolutions = {s.resolution for s in scenes}
    if len(resolutions) > 1:
        raise ValueError(f"scenes must share one resolution, got {sorted(resolutions)}")
    L = resolutions.pop() if resolutions else 8
    n, t = len(scenes), times.to(torch.float64)[None]  # t: (1, T)
    if n == 0:
        return torch.zeros(0, t.shape[1], 3, L, L)
    # Columns: x0, y0, size, speed_px, ux, uy (pixels, seconds).
    p = torch.tensor(
        [[s.x0, s.y0, s.size, s.speed_px, *DIRECTIONS[s.direction]] for s in scenes], dtype=torch.float64
    ).T[..., None]  # (6, N, 1)
    x0, y0, size, speed, ux, uy = p
    reach = FOOTPRINT * size / 2.0  # (N, 1) the bilinear footprint stays inside the image
    cx = _fold(x0, speed * ux, t, reach, L)  # (N, T) pixels
    cy = _fold(y0, speed * uy, t, reach, L)
    pixel = torch.arange(L, dtype=torch.float64) + 0.5  # (L,) pixel centres
    half = (size / 2.0)[..., None]  # (N, 1, 1)
    # grid_sample coordinates (align_corners=False): −1 and +1 are the box's outer edges.
    gx = (pixel - cx[..., None]) / half  # (N, T, L) along W
    gy = (pixel - cy[..., None]) / half  # (N, T, L) along H
    grid = torch.stack(
        torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1
    )  # (N, T, L, L, 2)
    images, _ = _sklearn_digits()
    ink = images[[s.instance for s in scenes]][:, None, None].expand(
        n, t.shape[1], 1, IMAGE_SIDE, IMAGE_SIDE
    )  # (N, T, 1, 8, 8)
    alpha = F.grid_sample(
        ink.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE),
        grid.reshape(-1, L, L, 2).float(),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).reshape(n, t.shape[1], 1, L, L)  # (N, T, 1, L, L)
    colour = torch.tensor([s.colour for s in scenes], dtype=torch.float32)[
        :, None, :, None, None
    ]  # (N,1,3,1,1)
    return (alpha * colour).clamp(0.0, 1.0)


def render(scene: DigitScene, times: Tensor) -> Tensor:
    """Render one scene at ``times`` (``(T,)`` seconds, any floats) → ``(T, 3, L, L)`` float32 in [0, 1]."""
    return render_digit_scenes([scene], times)[0]


def _sample_scene(
    digit: int, direction: str, instance: int, cfg: DigitsConfig, rng: np.random.Generator
) -> DigitScene:
    """Random start offsets: the wall ahead at least ``CLEAR_FRAMES`` frames of travel away."""
    L = cfg.resolution
    size = cfg.digit_scale * L
    speed = cfg.speed * L
    reach = FOOTPRINT * size / 2.0
    travel = L - 2.0 * reach
    ux, uy = DIRECTIONS[direction]
    t_clear = CLEAR_FRAMES / cfg.fps
    x0 = _start(float(rng.uniform()), ux * speed, reach, travel, t_clear)
    y0 = _start(float(rng.uniform()), uy * speed, reach, travel, t_clear)
    return DigitScene(digit, direction, int(instance), x0, y0, size, speed, L, tuple(cfg.colour))


@dataclass
class DigitsDataset(CaptionedVideos):
    """Rendered digit videos with their captions and the scenes that re-render them at any time.

    Attributes:
        videos: ``(N, T, 3, H, W)`` float32 in [0, 1]; frame k (1-based) at ``t = k / fps``.
        captions: ``N`` captions.
        scenes: ``N`` scenes (ground truth at any time, see :func:`render_at`).
        bucket_ids: ``(N,)`` long, index into :attr:`unique_captions`.
        fps: frames per second.
        split: "train", "test" or "heldout".
    """

    videos: Tensor
    captions: list[str]
    scenes: list[DigitScene]
    bucket_ids: Tensor
    fps: float
    split: str

    def render_at(self, index: int, times: Tensor) -> Tensor:
        """Ground truth of video ``index`` at any ``times`` (``(T,)`` seconds) → ``(T, 3, H, W)``."""
        return render(self.scenes[index], times)



def _bucket_instances(digit: int, cfg: DigitsConfig, caption_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and test instance pools of one caption, the same whatever split is built."""
    rng = np.random.default_rng([cfg.seed, caption_index, _INSTANCE_STREAM])
    train = rng.permutation(digit_instances(digit, "train", cfg.test_instance_fraction))
    test = rng.permutation(digit_instances(digit, "test", cfg.test_instance_fraction))
    return train, test


def make_digits(cfg: DigitsConfig, split: str) -> DigitsDataset:
    """Build one split of the moving-digits data.

    Captions whose (digit, direction) is in ``cfg.heldout_pairs`` form the "heldout" split (all their
    videos); of every other bucket the last ``cfg.test_per_bucket`` videos are "test" and the rest
    "train". Train videos draw distinct instances from the train part of the digit's images, test and
    heldout videos distinct instances from the test part (:func:`digit_instances`). Video ``j`` of
    caption ``i`` takes its offsets from ``default_rng([seed, i, j])``, so its scene is the same
    whatever split is asked for.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    heldout = {(int(d), direction) for d, direction in cfg.heldout_pairs}
    n_train = cfg.videos_per_caption - cfg.test_per_bucket
    scenes: list[DigitScene] = []
    for i, (digit, direction) in enumerate(_caption_pairs(cfg)):
        is_heldout = (digit, direction) in heldout
        if split == "heldout":
            videos = range(cfg.videos_per_caption) if is_heldout else range(0)
        elif is_heldout:
            continue
        else:
            videos = range(n_train) if split == "train" else range(n_train, cfg.videos_per_caption)
        if len(videos) == 0:
            continue
        train_pool, test_pool = _bucket_instances(digit, cfg, i)
        # Test videos of a bucket are numbered n_train.., heldout ones 0..; both index the test pool.
        pool, first = (train_pool, 0) if split == "train" else (test_pool, 0 if is_heldout else n_train)
        if videos[-1] - first >= len(pool):
            raise ValueError(
                f"{split} split needs {len(videos)} distinct images of digit {digit} per bucket but only "
                f"{len(pool)} are set aside for it; lower videos_per_caption or change test_instance_fraction"
            )
        for j in videos:
            rng = np.random.default_rng([cfg.seed, i, j])
            scenes.append(_sample_scene(digit, direction, pool[j - first], cfg, rng))
    times = frame_times(cfg.num_frames, cfg.fps)
    starts = range(0, len(scenes), _RENDER_CHUNK)
    chunks = [render_digit_scenes(scenes[c : c + _RENDER_CHUNK], times) for c in starts]
    L = cfg.resolution
    videos = torch.cat(chunks) if chunks else torch.zeros(0, cfg.num_frames, 3, L, L)
    captions = [s.caption for s in scenes]
    return DigitsDataset(videos, captions, scenes, bucket_ids_of(captions), float(cfg.fps), split)


def render_at(dataset: DigitsDataset, index: int, times: Tensor) -> Tensor:
    """Ground truth of video ``index`` at any ``times`` (``(T,)`` seconds) → ``(T, 3, H, W)``."""
    return dataset.render_at(index, times)
