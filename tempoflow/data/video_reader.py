"""Reading videos on PyAV: any container FFmpeg decodes, or a folder of frames, as ``(T, 3, H, W)``
float tensors in [0, 1] (DESIGN §1), displayed the way players show them (rotation applied), with
clips taken by presentation time (variable frame rates) and decoding stopped after the last frame a
clip needs. Sizes that cannot fit in memory are refused before anything is allocated.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from tempoflow.errors import DataError

# Frame rate of a folder of frames when the caller does not give one.
FOLDER_FPS = 8.0


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class VideoClip:
    """A decoded video.

    Attributes:
        frames: ``(T, 3, H, W)`` float32 in ``[0, 1]``.
        fps: frames per second (frame ``k``, 1-based, sits at ``t = k / fps`` seconds).
        path: the file or folder it was read from.
    """

    frames: Tensor
    fps: float
    path: Path


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
) -> VideoClip:
    """Read a video file (any container PyAV decodes) or a folder of frames, every frame in order.

    A folder holds ``.png``/``.jpg`` (also bmp, webp, tif) frames of one size, ordered by the
    natural order of their names (``f2`` before ``f10``); other files are ignored. A GIF's rate is
    measured from its frame delays (1/100 s steps); other containers' from their average rate.
    Frames come back as displayed: a display-matrix rotation (how phones store portrait video) is
    applied. To take a clip at a frame rate from a file of any (or variable) rate, use
    :func:`read_clip`.

    Args:
        path: a video file or a folder of frames.
        max_frames: keep only the first ``max_frames`` frames (decoding stops there).
        size: ``(H, W)`` to resize to, bilinear with antialiasing (frame by frame: the full-size
            video is never held as floats).
        fps: frame rate of a folder (default ``FOLDER_FPS``); for a file, overrides the stored rate.

    Returns:
        ``VideoClip`` with frames ``(T, 3, H, W)`` float32 in ``[0, 1]``.

    Raises:
        DataError: a missing, empty, corrupt or undecodable file; an empty folder or frames of
            different sizes; a video too large for the memory available. The message names the file.
    """
    path = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    _check_size(size)
    fps = None if fps is None else check_fps(fps)
    if path.is_dir():
        frames = [array for array, _, _ in _folder_frames(path, max_frames)]
        rate = FOLDER_FPS if fps is None else fps
    elif path.is_file():
        with _open_video(path) as (container, stream):
            _require_memory(path, stream, max_frames, size)
            frames, first, last = [], None, None
            for array, frame in _decoded(path, container, stream):
                frames.append(array)
                first, last = (frame if first is None else first), frame
                if max_frames is not None and len(frames) >= max_frames:
                    break
            rate = fps or _frame_rate(container.format.name, stream, first, last, len(frames))
        if rate is None:
            raise DataError(f"cannot read video {path}: no frame rate stored; pass fps=")
    else:
        raise DataError(f"video file not found: {path}")
    return VideoClip(frames=to_float_frames(frames, size), fps=float(rate), path=path)


def read_clip(
    path: str | os.PathLike, num_frames: int, fps: float, file_fps: float | None = None
) -> np.ndarray:
    """The frames of a video on screen at ``k / fps`` seconds, ``k = 1 … num_frames``, 8-bit.

    Chosen by presentation time, so variable-frame-rate files (screen and phone recordings) give
    evenly timed clips: time runs from the first frame's timestamp, and file frame ``i`` is on
    screen during ``(start_i, start_{i+1}]`` (the last one for its duration). For a file at exactly
    ``fps`` this is file frame ``k`` (1-based) — the package convention that frame ``k`` sits at
    ``k / fps`` (DESIGN §1). Decoding stops after the last frame the clip needs, and only the chosen
    frames are kept, so a long file costs no more memory than a short one. Rotation is applied as
    in :func:`read_video`.

    Args:
        path: a video file or a folder of frames.
        num_frames: frames in the clip, >= 1.
        fps: the clip's frame rate, > 0.
        file_fps: take the file's frames as evenly spaced at this rate instead of their
            timestamps (a manifest's ``fps``; a folder of frames has ``FOLDER_FPS`` without it).

    Returns:
        ``(num_frames, H, W, 3)`` uint8 (displayed size). Frames repeat when ``fps`` exceeds the
        file's rate.

    Raises:
        DataError: the file is shorter than ``num_frames / fps`` seconds (the message gives both
            durations), or cannot be read (as :func:`read_video`).
    """
    path = Path(path)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    fps = check_fps(fps)
    file_fps = None if file_fps is None else check_fps(file_fps)
    targets = [k / fps for k in range(1, num_frames + 1)]  # seconds after the first frame's timestamp
    chosen: list[np.ndarray] = []
    previous: np.ndarray | None = None
    end = 0.0  # when the last decoded frame leaves the screen, seconds
    if path.is_dir():
        timed = ((array, index / (file_fps or FOLDER_FPS), 1 / (file_fps or FOLDER_FPS))
                 for array, index, _ in _folder_frames(path, None))
        for array, start, duration in timed:
            while len(chosen) < num_frames and targets[len(chosen)] <= start + _TIME_SLACK:
                chosen.append(previous)  # on screen until this frame's start
            if len(chosen) == num_frames:
                break
            previous, end = array, start + duration
    elif path.is_file():
        with _open_video(path) as (container, stream):
            height, width = stream.codec_context.height, stream.codec_context.width
            require_memory(num_frames * 3 * height * width, f"a clip of {num_frames} frames of {width}x{height} "
                           f"from {path}", "take fewer frames")
            origin = None
            for index, (array, frame) in enumerate(_decoded(path, container, stream)):
                start, duration = _frame_timing(frame, stream, index, file_fps)
                origin = start if origin is None else origin
                start -= origin
                while len(chosen) < num_frames and targets[len(chosen)] <= start + _TIME_SLACK:
                    chosen.append(previous)
                if len(chosen) == num_frames:
                    break
                previous, end = array, start + duration
    else:
        raise DataError(f"video file not found: {path}")
    while len(chosen) < num_frames and targets[len(chosen)] <= end + _TIME_SLACK:
        chosen.append(previous)  # the last frame stays on screen for its duration
    if len(chosen) < num_frames:
        raise DataError(f"{path}: {end:.3g} s of video are shorter than a clip of {num_frames} frames at "
                        f"{fps:g} fps ({targets[-1]:.3g} s)")
    return np.stack(chosen)


# Timestamps are rounded to the container's time base; a frame starting within this many seconds
# after a clip time counts as starting at it (so a file at exactly the clip's rate maps 1:1).
_TIME_SLACK = 1e-6


# Refuse a decode whose frames would need more than this fraction of the memory available.
MEMORY_FRACTION = 0.8


def to_float_frames(frames: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int] | None = None) -> Tensor:
    """8-bit ``(T, H, W, 3)`` frames -> ``(T, 3, H', W')`` float32 in ``[0, 1]``, resized to ``size``
    frame by frame (bilinear, antialiased) so the full-size video is never held as floats."""
    _check_size(size)
    out = None
    for k, array in enumerate(frames):
        frame = torch.as_tensor(np.array(array)).permute(2, 0, 1).float().div_(255)[None]  # copy: may be read-only
        if size is not None and tuple(size) != tuple(frame.shape[-2:]):
            frame = F.interpolate(frame, size=tuple(size), mode="bilinear", antialias=True,
                                  align_corners=False).clamp_(0, 1)
        if out is None:
            out = torch.empty(len(frames), *frame.shape[1:])
        out[k] = frame[0]
    if out is None:
        raise ValueError("no frames to convert")
    return out


def _check_size(size: tuple[int, int] | None) -> None:
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (H, W) with positive entries, got {size}")


class _open_video:
    """``with _open_video(path) as (container, stream)``: the first video stream of a file, with
    FFmpeg's and PyAV's errors (at open and while decoding) turned into a ``DataError`` naming it."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> tuple[av.container.InputContainer, av.VideoStream]:
        if self.path.stat().st_size == 0:
            raise DataError(f"cannot read video {self.path}: the file is empty")
        try:
            self.container = av.open(str(self.path))
        except av.FFmpegError as err:
            raise DataError(f"cannot read video {self.path}: {ffmpeg_reason(err)}") from err
        # FFmpeg renders any text file as "tty" video; that is never what a caller means.
        if self.container.format.name == "tty" or not self.container.streams.video:
            self.container.close()
            raise DataError(f"cannot read video {self.path}: no video stream")
        stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"
        return self.container, stream

    def __exit__(self, kind, err, tb) -> bool:
        self.container.close()
        if isinstance(err, av.FFmpegError):
            raise DataError(f"cannot read video {self.path}: {ffmpeg_reason(err)}") from err
        return False


def _decoded(path: Path, container: av.container.InputContainer, stream: av.VideoStream):
    """Yield ``(array (H, W, 3) uint8 as displayed, frame)`` for every decodable frame. Decoded to the
    end, fewer frames than the header declares (``stream.frames``, where the container stores a count)
    warn with both counts: FFmpeg's threaded decoder ends a truncated file quietly.

    Raises:
        DataError: no frame decodes, or the frame size changes mid-file.
    """
    shape = None
    decoded = 0
    for frame in container.decode(stream):
        decoded += 1
        array = _displayed(frame.to_ndarray(format="rgb24", src_color_range=frame.color_range), frame)
        if shape is not None and array.shape != shape:
            raise DataError(f"cannot read video {path}: frame size changes from {shape[:2]} to "
                            f"{array.shape[:2]}")
        shape = array.shape
        yield array, frame
    if shape is None:
        raise DataError(f"cannot read video {path}: no frames could be decoded")
    if stream.frames and decoded < stream.frames:
        warnings.warn(f"{path}: its header declares {stream.frames} frames but only {decoded} decode "
                      f"(truncated or damaged?); using those {decoded}")


def _displayed(array: np.ndarray, frame: av.VideoFrame) -> np.ndarray:
    """The frame as a player shows it: turned by its display-matrix rotation (degrees
    counter-clockwise, as PyAV reports it; rounded to a quarter turn)."""
    quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    return np.rot90(array, quarter_turns) if quarter_turns else array


def _frame_timing(frame: av.VideoFrame, stream: av.VideoStream, index: int,
                  file_fps: float | None) -> tuple[float, float]:
    """``(start, duration)`` of a decoded frame in seconds: its timestamp, or ``index / rate`` when
    the caller fixes the rate or the file stores none."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    step = 1 / file_fps if file_fps else (1 / float(rate) if rate else None)
    if file_fps is None and frame.pts is not None and frame.time_base is not None:
        start = float(frame.pts * frame.time_base)
        duration = float(frame.duration * frame.time_base) if frame.duration else step
        return start, duration if duration else 0.0
    if step is None:
        raise DataError("no timestamps and no frame rate stored; give the fps (a manifest's fps column)")
    return index * step, step


def _require_memory(path: Path, stream: av.VideoStream, max_frames: int | None,
                    size: tuple[int, int] | None) -> None:
    """Refuse, before decoding, a video whose 8-bit frames plus float copy cannot fit in memory."""
    frames = stream.frames or 0
    if not frames and stream.duration is not None and stream.time_base is not None:
        rate = stream.average_rate or stream.guessed_rate or 0
        frames = math.ceil(float(stream.duration * stream.time_base) * float(rate))
    if max_frames is not None:
        frames = min(frames, max_frames) if frames else max_frames
    height, width = stream.codec_context.height, stream.codec_context.width
    out_h, out_w = size or (height, width)
    need = frames * (3 * height * width + 4 * 3 * out_h * out_w)
    require_memory(need, f"reading {frames} frames of {width}x{height} from {path}",
                   "pass max_frames or size, or take a clip with read_clip")


def available_memory() -> int:
    """Bytes of host memory available to a new allocation (Linux ``MemAvailable``; else all RAM)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_memory(nbytes: int, what: str, hint: str) -> None:
    """Refuse work whose tensors would not fit in host memory, before allocating them.

    Raises:
        DataError: ``nbytes`` exceeds ``MEMORY_FRACTION`` of :func:`available_memory`; the
            message gives both sizes, ``what`` needs them and ``hint`` says what to change.
    """
    free = available_memory()
    if nbytes > MEMORY_FRACTION * free:
        raise DataError(f"{what} needs {nbytes / 2**30:.1f} GiB, more than {MEMORY_FRACTION:.0%} of the "
                        f"{free / 2**30:.1f} GiB of memory available: {hint}")


def _frame_rate(
    container_format: str, stream: av.VideoStream, first: av.VideoFrame, last: av.VideoFrame, count: int
) -> float | None:
    if "gif" in container_format and count > 1 and first.pts is not None and last.pts is not None:
        return float(_rounded_rate(count - 1, (last.pts - first.pts) * stream.time_base, stream.time_base))
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _rounded_rate(steps: int, span: Fraction, tick: Fraction) -> Fraction:
    """The frame rate behind ``steps`` frame intervals over ``span`` seconds, each start rounded to ``tick``.

    GIF delays are whole centiseconds, so 8 fps is stored as 13, 12, 13, ... and no single delay nor
    FFmpeg's average (25/3 here) gives 8 back. The true rate lies in ``steps / (span ± tick)``;
    return the simplest rate there (smallest denominator, then nearest the estimate ``steps / span``).
    """
    estimate = steps / span
    low, high = steps / (span + tick), steps / max(span - tick, tick)
    denominator = 1
    while True:
        numerators = range(max(1, math.ceil(low * denominator)), math.floor(high * denominator) + 1)
        if numerators:
            return min((Fraction(n, denominator) for n in numerators), key=lambda r: abs(r - estimate))
        denominator += 1


def _folder_frames(folder: Path, max_frames: int | None):
    """Yield ``(array (H, W, 3) uint8, index, file)`` for the frames of a folder, in natural order.

    Raises:
        DataError: no frames, an unreadable frame, or frames of different sizes (naming the files).
    """
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
        key=_natural_key,
    )
    if not files:
        raise DataError(f"no frames ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
    shape = None
    for index, file in enumerate(files[:max_frames]):
        try:
            with Image.open(file) as image:
                frame = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot read frame {file}: {err}") from err
        if shape is not None and frame.shape != shape:
            raise DataError(
                f"frames differ in size in {folder}: {files[0].name} is {shape[1]}x"
                f"{shape[0]} but {file.name} is {frame.shape[1]}x{frame.shape[0]}"
            )
        shape = frame.shape
        yield frame, index, file


def _natural_key(path: Path) -> list[str | int]:
    # "frame10" -> ["frame", 10, ""]: digit runs compare as numbers; strings and ints alternate in
    # the same positions for every name, so the lists always compare.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def check_fps(fps: float) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    return value


def ffmpeg_reason(err: av.FFmpegError) -> str:
    """FFmpeg's short message ("Invalid data found when processing input") without errno noise."""
    return getattr(err, "strerror", None) or str(err)
