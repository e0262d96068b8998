"""Captioned videos of a virtual camera moving over real photographs, rendered at any continuous time.

The photographs are scikit-image's ``skimage.data`` images (shipped inside its wheel: no download;
extra ``camera``). Each is converted to RGB float in [0, 1], centre-cropped to a square and
downscaled ONCE (antialiased) to the *working image* of side ``S = photo_scale · L`` pixels, ``L`` the
frame side. Coordinates follow :mod:`tempoflow.data.shapes`: pixels, x right, y DOWN, working pixel
``(i, j)`` centred at ``(j + 0.5, i + 0.5)``, the image covering ``[0, S]²``; time in seconds, frame
``k`` (1-based) at ``t = k / fps`` (DESIGN §1).

The camera's pose at time ``t`` is a centre ``c(t)`` (working pixels), a zoom ``s(t)`` (the view is
``L / s`` working pixels wide; ``s = 1``: one frame pixel per working pixel) and an angle ``θ(t)``.
Frame pixel ``(a, b)`` at offset ``u = (b + 0.5 − L/2, a + 0.5 − L/2)`` from the frame centre shows
the working image at ``p = c + R(θ) u / s`` with ``R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]`` (with y
down, θ > 0 turns the view clockwise on screen, so the content appears to turn counterclockwise).
One motion per video, in closed form, so a frame at ANY float time is exact:

- pan ``d``: ``c(t) = c0 + v t · u_d`` (``v`` working pixels per second, ``u_d`` one of 8 unit vectors);
- zoom in / out: ``s(t) = s0 · exp(±k t)`` about a fixed centre;
- rotate clockwise / counterclockwise: ``θ(t) = ±ω t`` about a fixed centre.

Sampling is bilinear (``F.affine_grid`` + ``F.grid_sample``) with ``align_corners=False``: normalised
coordinate ``x_n = 2 p / S − 1`` is exactly the pixel-centre convention above, so a pan of an integer
number of pixels from an integer centre moves the frame by exactly that many pixels. Start poses are
drawn so that the view stays inside the photograph for ``t ∈ [0, inside_extent · T]``, ``T =
num_frames / fps`` (4T by default, the extrapolation range of VLFM's evaluation); the config is refused
when the speeds make that impossible. Past that range the photograph is reflect-padded
(``padding_mode="reflection"``), so any time still renders, continuously, but shows mirrored content.
A view wider than the frame (zooming out past ``s = 1``) is sampled bilinearly without prefiltering.

Captions follow one grammar, inverted exactly by :func:`parse_caption`::

    the camera <pans left|pans up-right|...|zooms in|zooms out|rotates clockwise|rotates
    counterclockwise> <over|on|from> <photo phrase> [slowly|quickly]

e.g. "the camera pans left over a cat", "the camera zooms in on the coffee".
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tempoflow.data.captioned import CaptionedVideos, bucket_ids_of, check_names, frame_times
from tempoflow.data.shapes import DIRECTIONS
from tempoflow.errors import needs_extra

# Photo name -> (skimage.data loader, caption phrase).
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut", "an astronaut"),
    "cat": ("chelsea", "a cat"),
    "coffee": ("coffee", "the coffee"),
    "rocket": ("rocket", "a rocket"),
    "coins": ("coins", "coins"),
    "cameraman": ("camera", "a cameraman"),
    "bricks": ("brick", "bricks"),
    "moon": ("moon", "the moon"),
    "galaxies": ("hubble_deep_field", "galaxies"),
    "retina": ("retina", "a retina"),
    "gravel": ("gravel", "gravel"),
    "grass": ("grass", "grass"),
}
DEFAULT_PHOTOS: tuple[str, ...] = ("astronaut", "cat", "coffee", "rocket", "coins", "cameraman", "bricks", "moon")
PANS: tuple[str, ...] = tuple(DIRECTIONS)  # the camera moves that way (the content moves the other way)
ZOOMS: tuple[str, ...] = ("in", "out")
ROTATIONS: tuple[str, ...] = ("clockwise", "counterclockwise")
MOTIONS: tuple[str, ...] = (*PANS, *ZOOMS, *ROTATIONS)
# Motion -> its words in a caption (verb phrase and preposition before the photo).
_PHRASES: dict[str, tuple[str, str]] = {
    **{d: (f"pans {d}", "over") for d in PANS},
    "in": ("zooms in", "on"),
    "out": ("zooms out", "from"),
    **{r: (f"rotates {r}", "over") for r in ROTATIONS},
}
SPEED_FACTORS: dict[str, float] = {"": 1.0, "slowly": 0.5, "quickly": 1.5}
SPLITS: tuple[str, ...] = ("train", "test", "heldout")
_CAPTION = re.compile(r"the camera (pans \S+|zooms in|zooms out|rotates clockwise|rotates counterclockwise) "
                      r"(over|on|from) (.+?)( slowly| quickly)?")
_RENDER_CHUNK = 256  # videos rendered at once (bounds the sampling grid's memory)


def motion_kind(motion: str) -> str:
    """"pan", "zoom" or "rotate"."""
    return "pan" if motion in PANS else "zoom" if motion in ZOOMS else "rotate"


@dataclass(frozen=True)
class CameraConfig:
    """Camera-over-photographs data set. Speeds at the "normal" speed word; time in seconds."""

    resolution: int = 32  # frame side L in pixels
    num_frames: int = 8  # frames per video
    fps: float = 8.0  # frame k (1-based) sits at t = k / fps seconds (DESIGN §1)
    photo_scale: float = 4.0  # working image side S = photo_scale · L pixels (the view at zoom 1 is L wide)
    pan_speed: float = 0.25  # frame widths (L working pixels) per second: 8 px/s at L = 32
    zoom_rate: float = 0.3  # k in s(t) = s0 exp(±k t), per second
    zoom_out_start: float = 1.6  # s0 of zoom-out videos (zoom-in starts at 1): room to zoom out
    rotation_speed: float = 30.0  # ω in degrees per second
    inside_extent: float = 4.0  # the view stays inside the photo for t in [0, inside_extent · T]
    videos_per_caption: int = 4  # bucket size (random start crops)
    test_per_bucket: int = 1  # the last videos of every bucket go to the test split
    speeds: bool = False  # include "slowly"/"quickly" variants
    photos: tuple[str, ...] = DEFAULT_PHOTOS
    motions: tuple[str, ...] = MOTIONS
    # (photo, motion) pairs never seen in train/test; each photo and motion still is.
    heldout_pairs: tuple[tuple[str, str], ...] = (("cat", "in"), ("coffee", "left"), ("astronaut", "clockwise"))
    seed: int = 0

    def __post_init__(self) -> None:
        check_names("photo", self.photos, PHOTOS)
        check_names("motion", self.motions, MOTIONS)
        positive = {"fps": self.fps, "photo_scale": self.photo_scale, "inside_extent": self.inside_extent,
                    "zoom_out_start": self.zoom_out_start}
        rates = {"pan_speed": self.pan_speed, "zoom_rate": self.zoom_rate, "rotation_speed": self.rotation_speed}
        checks = [
            (all(len(p) == 2 and p[0] in PHOTOS and p[1] in MOTIONS for p in self.heldout_pairs),
             f"heldout_pairs must be (photo, motion) pairs, got {self.heldout_pairs}"),
            (self.resolution >= 8, f"resolution must be >= 8 pixels, got {self.resolution}"),
            (self.num_frames >= 1, f"num_frames must be >= 1, got {self.num_frames}"),
            *((math.isfinite(v) and v > 0, f"{k} must be finite and > 0, got {v}") for k, v in positive.items()),
            *((math.isfinite(v) and v >= 0, f"{k} must be finite and >= 0, got {v}") for k, v in rates.items()),
            (self.videos_per_caption >= 1, f"videos_per_caption must be >= 1, got {self.videos_per_caption}"),
            (0 <= self.test_per_bucket < self.videos_per_caption,
             f"test_per_bucket must be in [0, videos_per_caption), got {self.test_per_bucket}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for motion in self.motions:
            for word in (SPEED_FACTORS if self.speeds else ("",)):
                if _room(self, motion, word) < 0:
                    raise ValueError(
                        f"the camera {_PHRASES[motion][0]} {word or 'at normal speed'} leaves the photo before "
                        f"inside_extent · T = {self.inside_extent * self.num_frames / self.fps:g} s: lower its "
                        "speed or inside_extent, or raise photo_scale")

    @property
    def photo_size(self) -> int:
        """Side ``S`` of the working image in pixels."""
        return round(self.photo_scale * self.resolution)

    @property
    def horizon(self) -> float:
        """Seconds ``inside_extent · T`` during which the view stays inside the photo."""
        return self.inside_extent * self.num_frames / self.fps


@dataclass(frozen=True)
class Shot:
    """One video: ``motion`` over ``photo`` at ``speed`` (a word), from the start pose at ``t = 0``:
    centre ``(cx, cy)`` in working pixels, zoom ``s0``; ``rate`` is the motion's speed (pans: working
    pixels per second; zooms: k per second; rotations: radians per second), signed by direction."""

    photo: str
    motion: str
    speed: str
    cx: float
    cy: float
    s0: float
    rate: float

    @property
    def caption(self) -> str:
        return caption_of(self.photo, self.motion, self.speed)


def caption_of(photo: str, motion: str, speed: str = "") -> str:
    """The caption of a shot (inverse of :func:`parse_caption`)."""
    if photo not in PHOTOS or motion not in MOTIONS or speed not in SPEED_FACTORS:
        raise ValueError(f"cannot caption photo {photo!r}, motion {motion!r}, speed {speed!r}")
    verb, prep = _PHRASES[motion]
    return f"the camera {verb} {prep} {PHOTOS[photo][1]}" + (f" {speed}" if speed else "")


_BY_PHRASE = {phrase: name for name, (_, phrase) in PHOTOS.items()}
_BY_VERB = {verb: (motion, prep) for motion, (verb, prep) in _PHRASES.items()}


def parse_caption(caption: str) -> tuple[str, str, str]:
    """``(photo, motion, speed)`` of a caption; ``ValueError`` naming the caption when it is not one."""
    m = _CAPTION.fullmatch(caption)
    if m is None or m.group(1) not in _BY_VERB or m.group(3) not in _BY_PHRASE or _BY_VERB[m.group(1)][1] != m.group(2):
        raise ValueError(f"cannot parse camera caption {caption!r}")
    return _BY_PHRASE[m.group(3)], _BY_VERB[m.group(1)][0], (m.group(4) or "").strip()


@functools.lru_cache(maxsize=32)
def _photo_pixels(name: str) -> np.ndarray:
    """The photograph ``name`` as RGB float32 ``(H, W, 3)`` in [0, 1], centre-cropped to a square."""
    with needs_extra("skimage", "camera", "data.name=camera (scikit-image's photographs)"):
        import skimage.data
    image = np.asarray(getattr(skimage.data, PHOTOS[name][0])())
    image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)  # horse is boolean
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]  # drop an alpha channel
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(image[top : top + side, left : left + side])


@functools.lru_cache(maxsize=64)
def working_image(name: str, size: int) -> Tensor:
    """The working image of photo ``name``: ``(3, size, size)`` float32 in [0, 1], downscaled once with
    an antialiasing (area-weighted bilinear) filter."""
    pixels = torch.from_numpy(_photo_pixels(name)).permute(2, 0, 1)[None]  # (1, 3, side, side)
    return F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


@dataclass(frozen=True)
class Pose:
    """Camera poses, each ``(N, T)`` float64: centre ``cx, cy`` (working pixels), zoom ``s`` (the view
    is ``L / s`` working pixels wide) and angle ``theta`` (radians, > 0 clockwise on screen)."""

    cx: Tensor
    cy: Tensor
    s: Tensor
    theta: Tensor


def poses(shots: list[Shot], times: Tensor) -> Pose:
    """Camera poses of ``shots`` at ``times`` (``(T,)`` seconds) in closed form (module doc)."""
    t = torch.as_tensor(times, dtype=torch.float64)[None]  # (1, T)
    p = torch.tensor([[sh.cx, sh.cy, sh.s0, sh.rate] for sh in shots], dtype=torch.float64).reshape(-1, 4)
    cx, cy, s0, rate = (p[:, k : k + 1] for k in range(4))  # (N, 1)
    kind = [motion_kind(sh.motion) for sh in shots]
    ux, uy = torch.tensor([DIRECTIONS.get(sh.motion, (0.0, 0.0)) for sh in shots], dtype=torch.float64).reshape(-1, 2).T
    pan = torch.tensor([k == "pan" for k in kind])[:, None]
    zoom = torch.tensor([k == "zoom" for k in kind])[:, None]
    rot = torch.tensor([k == "rotate" for k in kind])[:, None]
    zero = torch.zeros_like(t)
    x = cx + torch.where(pan, rate * ux[:, None] * t, zero)  # c(t) = c0 + v t u_d
    y = cy + torch.where(pan, rate * uy[:, None] * t, zero)
    s = s0 * torch.where(zoom, torch.exp(rate * t), torch.ones_like(t))  # s(t) = s0 exp(k t)
    theta = torch.where(rot, rate * t, zero)  # θ(t) = ω t
    return Pose(x, y, s, theta.expand_as(x))


def sampling_theta(cx: Tensor, cy: Tensor, s: Tensor, theta: Tensor, resolution: int, size: int) -> Tensor:
    """``F.affine_grid`` matrices ``(..., 2, 3)`` (``align_corners=False``) of poses ``(...)``: the frame's
    normalised coordinate ``x_o = 2u / L`` maps to ``x_n = 2p / S − 1`` with ``p = c + R(θ) u / s``, i.e.
    ``x_n = (L / (s S)) R(θ) x_o + (2c / S − 1)``."""
    k = resolution / (s * size)
    cos, sin = torch.cos(theta) * k, torch.sin(theta) * k
    row0 = torch.stack([cos, -sin, 2.0 * cx / size - 1.0], dim=-1)
    row1 = torch.stack([sin, cos, 2.0 * cy / size - 1.0], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def render_shots(shots: list[Shot], times: Tensor, resolution: int, size: int) -> Tensor:
    """Render ``shots`` at ``times`` (``(T,)`` seconds, any floats) → ``(N, T, 3, L, L)`` float32 in [0, 1].

    Batched over videos and times: one ``grid_sample`` per photograph over all its frames.
    """
    times = torch.as_tensor(times).detach().cpu()
    if times.ndim != 1:
        raise ValueError(f"times must be a 1-D tensor of seconds, got shape {tuple(times.shape)}")
    L, T = resolution, times.numel()
    out = torch.zeros(len(shots), T, 3, L, L)
    if not shots:
        return out
    pose = poses(shots, times)  # (N, T) each
    affine = sampling_theta(pose.cx, pose.cy, pose.s, pose.theta, L, size).float()  # (N, T, 2, 3)
    for photo in sorted({sh.photo for sh in shots}):
        idx = torch.tensor([n for n, sh in enumerate(shots) if sh.photo == photo])
        M = len(idx)
        grid = F.affine_grid(affine[idx].reshape(M * T, 2, 3), [M * T, 3, L, L], align_corners=False)  # (M·T, L, L, 2)
        image = working_image(photo, size)[None]  # (1, 3, S, S)
        frames = F.grid_sample(image, grid.reshape(1, M * T * L, L, 2), mode="bilinear",
                               padding_mode="reflection", align_corners=False)  # (1, 3, M·T·L, L)
        out[idx] = frames[0].reshape(3, M, T, L, L).permute(1, 2, 0, 3, 4)
    return out.clamp(0.0, 1.0)


def render(shot: Shot, times: Tensor, resolution: int, size: int) -> Tensor:
    """Render one shot at ``times`` (``(T,)`` seconds) → ``(T, 3, L, L)``."""
    return render_shots([shot], times, resolution, size)[0]


def _rate(cfg: CameraConfig, motion: str, speed: str) -> float:
    """The signed rate of ``motion`` at the speed word ``speed`` (see :class:`Shot`)."""
    f = SPEED_FACTORS[speed]
    kind = motion_kind(motion)
    if kind == "pan":
        return cfg.pan_speed * cfg.resolution * f
    if kind == "zoom":
        return cfg.zoom_rate * f * (1.0 if motion == "in" else -1.0)
    return math.radians(cfg.rotation_speed) * f * (1.0 if motion == "clockwise" else -1.0)


def _extent(cfg: CameraConfig, motion: str, speed: str) -> tuple[float, float, float]:
    """``(s0, half_x, half_y)``: start zoom and the half extents (working pixels) the view's centre must
    keep from the photo's edges over ``[0, horizon]`` (pans: at ``t = 0``, before the travel)."""
    L, kind = cfg.resolution, motion_kind(motion)
    if kind == "zoom":
        s0 = 1.0 if motion == "in" else cfg.zoom_out_start
        s_min = min(s0, s0 * math.exp(_rate(cfg, motion, speed) * cfg.horizon))
        return s0, L / (2 * s_min), L / (2 * s_min)
    if kind == "rotate":
        return 1.0, L / math.sqrt(2.0), L / math.sqrt(2.0)  # the view's circumscribed circle
    return 1.0, L / 2, L / 2


def _room(cfg: CameraConfig, motion: str, speed: str) -> float:
    """The smallest free range (working pixels) left for a start centre coordinate; < 0: impossible."""
    _, hx, hy = _extent(cfg, motion, speed)
    travel = abs(_rate(cfg, motion, speed)) * cfg.horizon if motion_kind(motion) == "pan" else 0.0
    ux, uy = DIRECTIONS.get(motion, (0.0, 0.0))
    return min(cfg.photo_size - 2 * hx - abs(ux) * travel, cfg.photo_size - 2 * hy - abs(uy) * travel)


def _sample_shot(photo: str, motion: str, speed: str, cfg: CameraConfig, rng: np.random.Generator) -> Shot:
    S, rate = cfg.photo_size, _rate(cfg, motion, speed)
    s0, hx, hy = _extent(cfg, motion, speed)
    ux, uy = DIRECTIONS.get(motion, (0.0, 0.0))
    if motion_kind(motion) == "pan":
        # The centre travels v·horizon along u_d; it starts where the whole path keeps hx, hy inside.
        tx, ty = rate * ux * cfg.horizon, rate * uy * cfg.horizon
        h = cfg.resolution / 2  # the frame's corner sits at c − L/2: whole pixels make whole-pixel shifts exact
        lo_x, lo_y = math.ceil(hx + max(-tx, 0.0) - h), math.ceil(hy + max(-ty, 0.0) - h)
        room_x = S - 2 * hx - abs(tx) - (lo_x + h - hx - max(-tx, 0.0))
        room_y = S - 2 * hy - abs(ty) - (lo_y + h - hy - max(-ty, 0.0))
        cx = h + lo_x + math.floor(float(rng.uniform()) * max(room_x, 0.0))
        cy = h + lo_y + math.floor(float(rng.uniform()) * max(room_y, 0.0))
    else:
        cx = hx + float(rng.uniform()) * (S - 2 * hx)
        cy = hy + float(rng.uniform()) * (S - 2 * hy)
    return Shot(photo, motion, speed, float(cx), float(cy), s0, rate)


def _caption_keys(cfg: CameraConfig) -> list[tuple[str, str, str]]:
    """Every ``(photo, motion, speed)`` of ``cfg`` in the order that defines caption indices."""
    words = tuple(SPEED_FACTORS) if cfg.speeds else ("",)
    return [(p, m, w) for p in cfg.photos for m in cfg.motions for w in words]


def all_captions(cfg: CameraConfig) -> list[str]:
    """Every caption of ``cfg`` over all splits."""
    return [caption_of(*key) for key in _caption_keys(cfg)]


@dataclass
class CameraDataset(CaptionedVideos):
    """Rendered camera videos with their captions and the shots that re-render them at any time.

    Attributes:
        videos: ``(N, T, 3, L, L)`` float32 in [0, 1]; frame k (1-based) at ``t = k / fps``.
        captions: ``N`` captions.
        shots: ``N`` shots (ground truth at any time, see :meth:`render_at`).
        bucket_ids: ``(N,)`` long, index into :attr:`unique_captions`.
        fps: frames per second.
        split: "train", "test" or "heldout".
        resolution, photo_size: frame side ``L`` and working-image side ``S`` in pixels.
        horizon: seconds during which every view stays inside its photo (``CameraConfig.horizon``); later
            frames show the reflect-padded photo, so scores against them say little (a warning says so).
    """

    videos: Tensor
    captions: list[str]
    shots: list[Shot]
    bucket_ids: Tensor
    fps: float
    split: str
    resolution: int
    photo_size: int
    horizon: float = math.inf

    def render_at(self, index: int, times: Tensor) -> Tensor:
        """Ground truth of video ``index`` at any ``times`` (``(T,)`` seconds) → ``(T, 3, L, L)``; past
        :attr:`horizon` the view shows mirrored photo content (warned once per call site)."""
        if times.numel() and float(times.max()) > self.horizon + 1e-6:
            warnings.warn(f"camera truth asked at {float(times.max()):g} s, past the {self.horizon:g} s the views stay "
                          "inside their photos (data.camera.inside_extent x T): later frames show mirrored content, "
                          "so scores there say little", stacklevel=2)
        return render(self.shots[index], times, self.resolution, self.photo_size)


def make_camera(cfg: CameraConfig, split: str) -> CameraDataset:
    """Build one split of the camera data.

    Captions whose ``(photo, motion)`` is in ``cfg.heldout_pairs`` form the "heldout" split (all their
    videos); of every other bucket the last ``cfg.test_per_bucket`` videos are "test" and the rest
    "train". Video ``j`` of caption ``i`` is drawn from ``default_rng([seed, i, j])`` (its start crop),
    so it is the same whatever the split asked for.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    heldout = {tuple(p) for p in cfg.heldout_pairs}
    n_train = cfg.videos_per_caption - cfg.test_per_bucket
    shots: list[Shot] = []
    for i, (photo, motion, speed) in enumerate(_caption_keys(cfg)):
        is_heldout = (photo, motion) in heldout
        if split == "heldout":
            videos = range(cfg.videos_per_caption) if is_heldout else range(0)
        elif is_heldout:
            continue
        else:
            videos = range(n_train) if split == "train" else range(n_train, cfg.videos_per_caption)
        shots += [_sample_shot(photo, motion, speed, cfg, np.random.default_rng([cfg.seed, i, j])) for j in videos]
    times = frame_times(cfg.num_frames, cfg.fps)
    L, S = cfg.resolution, cfg.photo_size
    chunks = [render_shots(shots[c : c + _RENDER_CHUNK], times, L, S) for c in range(0, len(shots), _RENDER_CHUNK)]
    videos = torch.cat(chunks) if chunks else torch.zeros(0, cfg.num_frames, 3, L, L)
    captions = [sh.caption for sh in shots]
    return CameraDataset(videos, captions, shots, bucket_ids_of(captions), float(cfg.fps), split, L, S,
                         cfg.horizon)


def render_at(dataset: CameraDataset, index: int, times: Tensor) -> Tensor:
    """Ground truth of video ``index`` at any ``times`` (``(T,)`` seconds) → ``(T, 3, L, L)``."""
    return dataset.render_at(index, times)
