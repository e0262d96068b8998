"""Captioned moving shapes rendered at any continuous time: the ground truth of DESIGN §4 and §7.

Coordinates are pixels: x to the right, y DOWN; the image covers ``[0, L] × [0, L]`` with
``L = resolution`` and pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``. Time is in seconds and
frame ``k`` (1-based) sits at ``t = k / fps`` (DESIGN §1). An object of diameter ``size`` keeps its
centre in ``[r, L − r]``, ``r = size / 2``, and bounces elastically off the walls: the unbounded
motion ``x0 + v t`` is folded into that interval by a triangle wave, so a frame at any float time is
exact (no time stepping). Edges are anti-aliased from signed distance functions, so frames are
continuous (Lipschitz) in time.

Captions follow one grammar, inverted exactly by :func:`parse_caption`::

    a red circle moves left [slowly|quickly] [and a blue square moves up-right ...]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tempoflow.data.captioned import CaptionedVideos, bucket_ids_of, check_names, frame_times

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}
BACKGROUND: tuple[float, float, float] = (0.0, 0.0, 0.0)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
_DIAG = 1.0 / math.sqrt(2.0)
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit vectors, x right, y down
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-_DIAG, -_DIAG),
    "up-right": (_DIAG, -_DIAG),
    "down-left": (-_DIAG, _DIAG),
    "down-right": (_DIAG, _DIAG),
}
# Every shape fills the square box of side `size` around its centre (circle inscribed, triangle
# upright: apex at the top middle, base along the bottom). FILL is its area / size²; CENTROID_OFFSET
# is how far its area centroid sits below the box centre, in units of size.
FILL: dict[str, float] = {"circle": math.pi / 4.0, "square": 1.0, "triangle": 0.5}
CENTROID_OFFSET: dict[str, float] = {"circle": 0.0, "square": 0.0, "triangle": 1.0 / 6.0}
# Speed in image sizes per second (resolution independent): at "normal" speed an object crosses
# half the image in one second, i.e. in 8 frames at 8 fps. Speed words scale it.
NORMAL_SPEED = 0.5
SPEED_FACTORS: dict[str, float] = {"": 1.0, "slowly": 0.5, "quickly": 1.75}
AA_RAMP_PX = 1.0  # anti-aliasing ramp width in pixels: alpha = clamp(0.5 − sdf / ramp, 0, 1)
# Start positions are drawn so that no object touches a wall before frame CLEAR_FRAMES: the first
# CLEAR_FRAMES − 1 displacements show the captioned direction (where the travel range allows it).
CLEAR_FRAMES = 3
SPLITS: tuple[str, ...] = ("train", "test", "heldout")
# Random stream of the two-object caption draw; video streams are [seed, caption, video] and a
# caption index never reaches this value, so the streams never coincide.
_CAPTION_STREAM = 2**32 - 1
_RENDER_CHUNK = 256  # videos rendered at once by make_shapes (bounds peak memory)


@dataclass(frozen=True)
class ShapesConfig:
    """Moving-shapes data set. Sizes are fractions of the image side; time in seconds."""

    resolution: int = 32  # H = W in pixels
    num_frames: int = 8  # frames per video
    fps: float = 8.0  # frame k (1-based) sits at t = k / fps seconds (DESIGN §1)
    videos_per_caption: int = 4  # bucket size
    test_per_bucket: int = 1  # the last videos of every bucket go to the test split
    two_objects: bool = False  # also generate captions with a second object
    two_object_captions: int = 72  # how many two-object captions are drawn (of all pairs)
    speeds: bool = False  # include "slowly"/"quickly" variants
    colours: tuple[str, ...] = tuple(PALETTE)
    shapes: tuple[str, ...] = SHAPES
    directions: tuple[str, ...] = tuple(DIRECTIONS)
    # Colour-shape pairs never seen in train/test; each colour and shape still is.
    heldout_pairs: tuple[tuple[str, str], ...] = (
        ("red", "triangle"), ("green", "circle"), ("blue", "square"))
    size_range: tuple[float, float] = (0.18, 0.28)  # object diameter as fraction of resolution
    seed: int = 0

    def __post_init__(self) -> None:
        check_names("colour", self.colours, PALETTE)
        check_names("shape", self.shapes, SHAPES)
        check_names("direction", self.directions, DIRECTIONS)
        lo, hi = self.size_range
        checks = [
            (all(len(p) == 2 and p[0] in PALETTE and p[1] in SHAPES for p in self.heldout_pairs),
             f"heldout_pairs must be (colour, shape) pairs, got {self.heldout_pairs}"),
            (self.resolution >= 8, f"resolution must be >= 8 pixels, got {self.resolution}"),
            (self.num_frames >= 1, f"num_frames must be >= 1, got {self.num_frames}"),
            (math.isfinite(self.fps) and self.fps > 0, f"fps must be finite and > 0, got {self.fps}"),
            (self.videos_per_caption >= 1, f"videos_per_caption must be >= 1, got {self.videos_per_caption}"),
            (0 <= self.test_per_bucket < self.videos_per_caption,
             f"test_per_bucket must be in [0, videos_per_caption), got {self.test_per_bucket}"),
            (0 < lo <= hi < 1, f"size_range must satisfy 0 < lo <= hi < 1, got {self.size_range}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.two_object_captions >= 0,
             f"two_object_captions must be >= 0, got {self.two_object_captions}"),
            (not self.two_objects or len(self.colours) >= 2,
             f"two_objects needs two colours (objects differ in colour), got {self.colours}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(frozen=True)
class ObjectSpec:
    """What a caption says about one object. ``speed`` is a word: "", "slowly" or "quickly"."""

    colour: str
    shape: str
    direction: str
    speed: str = ""


@dataclass(frozen=True)
class MovingObject:
    """One object of a scene: start centre ``(x0, y0)`` at ``t = 0`` and ``size`` (diameter) in
    pixels, ``speed_px`` in pixels per second along ``DIRECTIONS[spec.direction]``."""

    spec: ObjectSpec
    x0: float
    y0: float
    size: float
    speed_px: float


@dataclass(frozen=True)
class Scene:
    """Objects drawn in order (later ones in front) on a ``resolution``² background."""

    objects: tuple[MovingObject, ...]
    resolution: int

    @property
    def caption(self) -> str:
        return caption_of([obj.spec for obj in self.objects])


def _fold(p0: Tensor, v: Tensor, t: Tensor, r: Tensor, length: float) -> Tensor:
    """Elastic bounces in closed form: the triangle wave folding ``p0 + v t`` into ``[r, length − r]``.

    With travel ``w = length − 2r``, ``q = (p0 − r + v t) mod 2w`` and the position is
    ``r + w − |q − w|``. All arguments broadcast; ``p0`` must lie in ``[r, length − r]``.
    """
    w = length - 2.0 * r
    q = torch.remainder(p0 - r + v * t, 2.0 * w)
    return r + w - (q - w).abs()


def position(obj: MovingObject, t: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """Centre of ``obj`` at times ``t`` (seconds, any shape) in pixels, float64: ``(x, y)`` like ``t``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    ux, uy = DIRECTIONS[obj.spec.direction]
    p = [obj.x0, obj.y0, ux * obj.speed_px, uy * obj.speed_px, obj.size / 2.0]
    p = torch.tensor(p, dtype=torch.float64)
    x0, y0, vx, vy, r = p
    return _fold(x0, vx, t, r, resolution), _fold(y0, vy, t, r, resolution)


def _sdf_circle(dx: Tensor, dy: Tensor, r: Tensor) -> Tensor:
    return torch.hypot(dx, dy) - r


def _sdf_square(dx: Tensor, dy: Tensor, r: Tensor) -> Tensor:
    qx, qy = dx.abs() - r, dy.abs() - r
    return torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _sdf_triangle(dx: Tensor, dy: Tensor, r: Tensor) -> Tensor:
    # Apex (0, −r), base corners (±r, r). Mirrored to x ≥ 0 the boundary is the slanted edge
    # (0, −r) → (r, r) (direction (1, 2)) and the half base (0, r) → (r, r).
    px, py = dx.abs(), dy
    h = ((px + 2.0 * (py + r)) / (5.0 * r)).clamp(0.0, 1.0)  # projection onto the slanted edge
    d_edge = torch.hypot(px - r * h, py + r - 2.0 * r * h)
    d_base = torch.hypot((px - r).clamp(min=0), py - r)
    inside = (2.0 * px - (py + r) <= 0) & (py <= r)  # behind the edge's outward normal (2, −1)
    d = torch.minimum(d_edge, d_base)
    return torch.where(inside, -d, d)


_SDF = {"circle": _sdf_circle, "square": _sdf_square, "triangle": _sdf_triangle}


def shape_alpha(shape: str, cx: Tensor, cy: Tensor, size: Tensor | float, resolution: int) -> Tensor:
    """Anti-aliased coverage ``clamp(0.5 − sdf / AA_RAMP_PX, 0, 1)`` of one shape on the pixel grid.

    Args:
        shape: one of ``SHAPES``.
        cx, cy: ``(...)`` box centres in pixels.
        size: diameter in pixels, a float or broadcastable to ``cx``.
        resolution: image side ``L`` in pixels.

    Returns:
        ``(..., L, L)`` float32 in ``[0, 1]``.
    """
    cx = torch.as_tensor(cx, dtype=torch.float32)
    cy = torch.as_tensor(cy, dtype=torch.float32, device=cx.device)
    r = (torch.as_tensor(size, dtype=torch.float32, device=cx.device) / 2.0).expand_as(cx)
    grid = torch.arange(resolution, dtype=torch.float32, device=cx.device) + 0.5
    dx = grid - cx[..., None, None]  # (..., 1, L)
    dy = grid[:, None] - cy[..., None, None]  # (..., L, 1)
    sdf = _SDF[shape](dx, dy, r[..., None, None])  # (..., L, L)
    return (0.5 - sdf / AA_RAMP_PX).clamp(0.0, 1.0)


def render_scenes(scenes: list[Scene], times: Tensor) -> Tensor:
    """Render scenes of one resolution ``L`` at ``times`` (``(T,)`` seconds) → ``(N, T, 3, L, L)``.

    Batched over videos and times; objects are composited with alpha over the background in order.
    """
    times = torch.as_tensor(times).detach().cpu()  # rendering runs on the CPU
    if times.ndim != 1:
        raise ValueError(f"times must be a 1-D tensor of seconds, got shape {tuple(times.shape)}")
    resolutions = {s.resolution for s in scenes}
    if len(resolutions) > 1:
        raise ValueError(f"scenes must share one resolution, got {sorted(resolutions)}")
    L = resolutions.pop() if resolutions else 8
    t = times.to(torch.float64)[None]  # (1, T)
    out = torch.tensor(BACKGROUND, dtype=torch.float32)[:, None, None].repeat(len(scenes), len(t[0]), 1, L, L)
    for k in range(max((len(s.objects) for s in scenes), default=0)):
        idx = [n for n, s in enumerate(scenes) if len(s.objects) > k]
        objs = [scenes[n].objects[k] for n in idx]
        # Columns: x0, y0, size, speed_px, ux, uy (pixels, seconds).
        p = torch.tensor(
            [[o.x0, o.y0, o.size, o.speed_px, *DIRECTIONS[o.spec.direction]] for o in objs],
            dtype=torch.float64,
        ).T[..., None]  # (6, M, 1)
        x0, y0, size, speed, ux, uy = p
        cx = _fold(x0, speed * ux, t, size / 2.0, L)  # (M, T) pixels
        cy = _fold(y0, speed * uy, t, size / 2.0, L)
        alpha = torch.empty(len(objs), t.shape[1], L, L)  # (M, T, L, L)
        for shape in SHAPES:
            sel = torch.tensor([o.spec.shape == shape for o in objs], dtype=torch.bool)
            if sel.any():
                alpha[sel] = shape_alpha(shape, cx[sel], cy[sel], size[sel], L)
        colour = torch.tensor([PALETTE[o.spec.colour] for o in objs])[:, None, :, None, None]  # (M,1,3,1,1)
        a = alpha[:, :, None]  # (M, T, 1, L, L)
        out[idx] = out[idx] * (1.0 - a) + colour * a
    return out


def render(scene: Scene, times: Tensor) -> Tensor:
    """Render one scene at ``times`` (``(T,)`` seconds, any floats) → ``(T, 3, L, L)`` float32 in [0, 1]."""
    return render_scenes([scene], times)[0]


def caption_of(specs) -> str:
    """The caption of a sequence of :class:`ObjectSpec` (inverse of :func:`parse_caption`)."""
    parts = []
    for s in specs:
        if s.colour not in PALETTE or s.shape not in SHAPES or s.direction not in DIRECTIONS:
            raise ValueError(f"cannot caption {s!r}: unknown colour, shape or direction")
        if s.speed not in SPEED_FACTORS:
            raise ValueError(f"cannot caption {s!r}: speed must be one of {list(SPEED_FACTORS)}")
        parts.append(f"a {s.colour} {s.shape} moves {s.direction}" + (f" {s.speed}" if s.speed else ""))
    if not parts:
        raise ValueError("cannot caption an empty list of objects")
    return " and ".join(parts)


def parse_caption(caption: str) -> list[ObjectSpec]:
    """Invert the caption grammar exactly; raise ``ValueError`` naming the caption otherwise."""
    specs = []
    for part in caption.split(" and "):
        w = part.split(" ")
        ok = len(w) in (5, 6) and w[0] == "a" and w[1] in PALETTE and w[2] in SHAPES and w[3] == "moves"
        ok = ok and w[4] in DIRECTIONS and (len(w) == 5 or w[5] in SPEED_FACTORS and w[5] != "")
        if not ok:
            raise ValueError(f"cannot parse caption {caption!r} at {part!r}")
        specs.append(ObjectSpec(w[1], w[2], w[4], w[5] if len(w) == 6 else ""))
    return specs


def _caption_specs(cfg: ShapesConfig) -> list[tuple[ObjectSpec, ...]]:
    """Every caption of ``cfg`` in a fixed order: single objects, then drawn two-object pairs."""
    words = tuple(SPEED_FACTORS) if cfg.speeds else ("",)
    singles = [
        ObjectSpec(c, s, d, w) for c in cfg.colours for s in cfg.shapes for d in cfg.directions for w in words
    ]
    captions: list[tuple[ObjectSpec, ...]] = [(s,) for s in singles]
    if cfg.two_objects:
        colour = np.array([s.colour for s in singles])
        a, b = np.nonzero(colour[:, None] != colour[None, :])  # ordered pairs of different colours
        rng = np.random.default_rng([cfg.seed, _CAPTION_STREAM])
        n = min(cfg.two_object_captions, len(a))
        pick = np.sort(rng.choice(len(a), size=n, replace=False))
        captions += [(singles[a[p]], singles[b[p]]) for p in pick]
    return captions


def all_captions(cfg: ShapesConfig) -> list[str]:
    """Every caption of ``cfg`` over all splits, in the order that defines caption indices."""
    return [caption_of(specs) for specs in _caption_specs(cfg)]


def _start(u: float, v: float, r: float, w: float, t_clear: float) -> float:
    """Start coordinate from a uniform ``u``: the wall ahead is at least ``|v| t_clear`` away."""
    room = max(w - abs(v) * t_clear, 0.0)
    if v > 0:
        return r + u * room
    if v < 0:
        return r + w - u * room
    return r + u * w


def _sample_scene(specs: tuple[ObjectSpec, ...], cfg: ShapesConfig, rng: np.random.Generator) -> Scene:
    L, t_clear = cfg.resolution, CLEAR_FRAMES / cfg.fps
    objects = []
    for spec in specs:
        size = float(rng.uniform(*cfg.size_range)) * L
        speed = NORMAL_SPEED * SPEED_FACTORS[spec.speed] * L
        ux, uy = DIRECTIONS[spec.direction]
        r, w = size / 2.0, L - size
        x0 = _start(float(rng.uniform()), ux * speed, r, w, t_clear)
        y0 = _start(float(rng.uniform()), uy * speed, r, w, t_clear)
        objects.append(MovingObject(spec, x0, y0, size, speed))
    return Scene(tuple(objects), L)


@dataclass
class ShapesDataset(CaptionedVideos):
    """Rendered videos with their captions and the scenes that re-render them at any time.

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
    scenes: list[Scene]
    bucket_ids: Tensor
    fps: float
    split: str

    def render_at(self, index: int, times: Tensor) -> Tensor:
        """Ground truth of video ``index`` at any ``times`` (``(T,)`` seconds) → ``(T, 3, H, W)``."""
        return render(self.scenes[index], times)





def make_shapes(cfg: ShapesConfig, split: str) -> ShapesDataset:
    """Build one split of the moving-shapes data.

    Captions containing a colour-shape pair of ``cfg.heldout_pairs`` form the "heldout" split (all
    their videos); of every other bucket the last ``cfg.test_per_bucket`` videos are "test" and the
    rest "train". Video ``j`` of caption ``i`` is drawn from ``default_rng([seed, i, j])``, so its
    scene is the same whatever the split asked for.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    heldout = {tuple(p) for p in cfg.heldout_pairs}
    n_train = cfg.videos_per_caption - cfg.test_per_bucket
    scenes: list[Scene] = []
    for i, specs in enumerate(_caption_specs(cfg)):
        is_heldout = any((s.colour, s.shape) in heldout for s in specs)
        if split == "heldout":
            videos = range(cfg.videos_per_caption) if is_heldout else range(0)
        elif is_heldout:
            continue
        else:
            videos = range(n_train) if split == "train" else range(n_train, cfg.videos_per_caption)
        scenes += [_sample_scene(specs, cfg, np.random.default_rng([cfg.seed, i, j])) for j in videos]
    times = frame_times(cfg.num_frames, cfg.fps)
    starts = range(0, len(scenes), _RENDER_CHUNK)
    chunks = [render_scenes(scenes[c : c + _RENDER_CHUNK], times) for c in starts]
    L = cfg.resolution
    videos = torch.cat(chunks) if chunks else torch.zeros(0, cfg.num_frames, 3, L, L)
    captions = [s.caption for s in scenes]
    return ShapesDataset(videos, captions, scenes, bucket_ids_of(captions), float(cfg.fps), split)


def render_at(dataset: ShapesDataset, index: int, times: Tensor) -> Tensor:
    """Ground truth of video ``index`` at any ``times`` (``(T,)`` seconds) → ``(T, 3, H, W)``."""
    return dataset.render_at(index, times)
