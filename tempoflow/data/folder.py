"""Your own videos: a folder of video files, or a CSV manifest in Open-Sora's columns.

``data.name=folder`` with ``data.folder.path`` pointing at either

- a CSV with columns ``path, text`` (``caption`` is accepted for ``text``; ``fps`` optional; the other
  Open-Sora columns ``num_frames, height, width`` are ignored — they are read from the file), paths
  relative to the CSV's folder; or
- a folder: every video file in it (mp4, webm, mkv, mov, avi, gif), sorted by name, each captioned by
  the ``.txt`` file of the same stem when there is one (else the empty caption: unconditional).

Every video becomes one clip of ``num_frames`` frames at ``fps``: clip frame ``k`` is the frame on
screen at ``k / fps`` seconds by the file's timestamps (variable frame rates included; a manifest's
``fps`` instead spaces the file's frames evenly at that rate), turned upright by the file's display
rotation, centre-cropped to a square and resized to ``resolution``. Only the frames a clip needs are
decoded and kept. A file shorter than the clip (by duration), missing or corrupt is an error naming it. Videos with
equal captions form a bucket; the split is by video, deterministic from ``seed``; there is no
"heldout" split of unseen combinations (it is empty) — unless the manifest has a ``split`` column
(train, test, heldout per row, as ``tempoflow data`` writes it), which is then used as it is.

``open_folder`` lists a split without decoding it (``FolderClips``: clip ``i`` is decoded when read,
which is how training reads a folder by default, ``data.loading``); ``make_folder`` decodes every clip
of the split into one tensor (evaluation, ``tempoflow data``, ``data.loading=memory``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tempoflow.data.captioned import CaptionedVideos, bucket_ids_of
from tempoflow.data.rows import Rows
from tempoflow.data.video_reader import read_clip, require_memory, to_float_frames
from tempoflow.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")


@dataclass(frozen=True)
class FolderConfig:
    """A folder or CSV of your videos (module docstring)."""

    path: str = ""
    num_frames: int = 8  # frames per clip
    fps: float = 8.0  # clip frame rate: frame k (1-based) at k / fps seconds
    resolution: int = 32  # square side after centre crop and resize
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.resolution < 4 or not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"need num_frames >= 1, resolution >= 4, fps > 0; got {self.num_frames}, "
                             f"{self.resolution}, {self.fps}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")


@dataclass
class FolderDataset(CaptionedVideos):
    """Clips of your videos: ``videos (N, T, 3, H, W)`` in [0, 1], captions and buckets (as ShapesDataset)."""

    videos: Tensor
    captions: list[str]
    bucket_ids: Tensor
    fps: float
    split: str
    paths: list[Path]


def parse_rate(text: str, where: str) -> float:
    """A frame rate in frames per second from ``"29.97"`` or a rational ``"30000/1001"`` (how ffprobe
    writes NTSC rates).

    Raises:
        DataError: not a number, or not finite and > 0; the message names ``where``.
    """
    num, _, den = text.strip().partition("/")
    try:
        rate = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        rate = float("nan")
    if not (math.isfinite(rate) and rate > 0):
        raise DataError(f"{where}: fps {text!r} is not a frame rate (a number > 0, or a ratio like 30000/1001)")
    return rate


SPLIT_NAMES = ("train", "test", "heldout")


def list_videos(path: str | Path) -> list[tuple[Path, str, float | None]]:
    """``(file, caption, fps or None)`` for every video of a folder or CSV manifest."""
    path = Path(path)
    if not str(path) or not path.exists():
        raise DataError(f"data.folder.path not found: {path}")
    if path.is_file():
        try:  # utf-8-sig: spreadsheets' "CSV UTF-8" starts with a byte-order mark
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text (byte {err.start}); save the manifest as UTF-8") from err
        if not rows or "path" not in rows[0] or not ({"text", "caption"} & set(rows[0])):
            raise DataError(f"{path}: a manifest needs the columns path and text (or caption)")
        # line numbers as an editor shows them: the header is line 1
        empty = [i + 2 for i, r in enumerate(rows) if not (r.get("path") or "").strip()]
        if empty:
            raise DataError(f"{path} line {empty[0]}: the path column is empty")
        return [(path.parent / r["path"], (r.get("text") or r.get("caption") or "").strip(),
                 parse_rate(r["fps"], f"{path} line {i + 2} ({r['path']})") if (r.get("fps") or "").strip() else None)
                for i, r in enumerate(rows)]
    # hidden files are never videos of the set (macOS writes "._name.mp4" resource forks beside them)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DataError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {path}")
    return [(p, read_caption(p.with_suffix(".txt")), None) for p in files]


def manifest_splits(path: str | Path) -> list[str] | None:
    """The ``split`` column of a CSV manifest (train, test or heldout per row, as ``tempoflow data``
    writes it), or None for a folder or a manifest without one.

    Raises:
        DataError: a row's split is empty or not train, test or heldout (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or "split" not in rows[0]:
        return None
    names = [(r.get("split") or "").strip() for r in rows]
    bad = next((i for i, name in enumerate(names) if name not in SPLIT_NAMES), None)
    if bad is not None:
        raise DataError(f"{path} line {bad + 2}: split {names[bad]!r} is not one of {', '.join(SPLIT_NAMES)}")
    return names


def read_caption(path: Path) -> str:
    """The caption in ``path`` (UTF-8, with or without a byte-order mark), or "" if there is none.

    Raises:
        DataError: the file is not UTF-8 text.
    """
    if not path.is_file():
        return ""
    try:
        return path.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); save the caption as UTF-8") from err


def crop_and_resize(frames: np.ndarray, resolution: int) -> Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, R, R)`` float32 in [0, 1]: centre square, resized frame by frame."""
    H, W = frames.shape[1:3]
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    return to_float_frames(frames[:, top : top + side, left : left + side], (resolution, resolution))


class FolderClips(Rows):
    """One split of your videos, read lazily: clip ``i`` is decoded when ``clips[i]`` is asked for (by the
    trainer's ``DataLoader`` workers), so nothing is decoded up front and memory does not grow with the
    number of videos. Clip ``i`` is a function of the file alone (centre crop, no randomness): every
    worker and every epoch reads the same clip for the same index.

    Attributes:
        captions: one per clip ("" = uncaptioned); paths: the files; fps: the clip rate; split: its name.
    """

    def __init__(self, cfg: FolderConfig, entries: list[tuple[Path, str, float | None]], split: str):
        self.cfg, self.entries, self.split = cfg, entries, split
        self.captions = [caption for _, caption, _ in entries]
        self.paths = [file for file, _, _ in entries]
        self.fps = float(cfg.fps)
        self.bucket_ids = bucket_ids_of(self.captions)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Tensor:
        """``(T, 3, R, R)`` float32 in [0, 1]: the clip of video ``i``.

        Raises:
            DataError: the file is missing, corrupt or shorter than a clip; the message names it.
        """
        file, _, fps = self.entries[i]
        return crop_and_resize(read_clip(file, self.cfg.num_frames, self.cfg.fps, file_fps=fps), self.cfg.resolution)


def open_folder(cfg: FolderConfig, split: str) -> FolderClips:
    """One split ("train", "test"; "heldout" is empty) of the videos at ``cfg.path``, not decoded yet:
    the files are listed and checked to exist, and each clip is decoded when it is read. A manifest's
    ``split`` column, when it has one, decides the split (``manifest_splits``).

    Raises:
        DataError: the folder or manifest is unreadable, or a listed file does not exist (named).
    """
    if split not in ("train", "test", "heldout"):
        raise ValueError(f"unknown split {split!r}; expected train, test or heldout")
    entries = list_videos(cfg.path)
    given = manifest_splits(cfg.path)
    if given is not None:  # the manifest says (tempoflow data writes it): test_fraction is not used
        chosen = [i for i, name in enumerate(given) if name == split]
    else:
        order = np.random.default_rng(cfg.seed).permutation(len(entries))
        n_test = math.floor(cfg.test_fraction * len(entries))
        chosen = {"test": order[:n_test], "train": order[n_test:], "heldout": order[:0]}[split]
    entries = [entries[i] for i in sorted(int(i) for i in chosen)]
    missing = [file for file, _, _ in entries if not file.exists()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"video file not found: {missing[0]}{more}")
    return FolderClips(cfg, entries, split)


def make_folder(cfg: FolderConfig, split: str) -> FolderDataset:
    """One split ("train", "test"; "heldout" is empty) of the videos at ``cfg.path``, every clip decoded."""
    clips = open_folder(cfg, split)
    R = cfg.resolution
    require_memory(len(clips) * cfg.num_frames * 3 * R * R * 4,
                   f"{len(clips)} clips of {cfg.num_frames} frames at {R}x{R} ({split} split of {cfg.path})",
                   "lower data.folder.resolution or num_frames, or use fewer videos")
    stacked = torch.empty(len(clips), cfg.num_frames, 3, R, R)
    for n in range(len(clips)):
        stacked[n] = clips[n]
    return FolderDataset(stacked, clips.captions, clips.bucket_ids, clips.fps, split, clips.paths)
