"""What every captioned video dataset shares: frame times, buckets and bucket ids (DESIGN §1)."""

from __future__ import annotations

import torch
from torch import Tensor


def frame_times(num_frames: int, fps: float) -> Tensor:
    """``(T,)`` float32 frame times ``k / fps`` in seconds, ``k = 1..T`` (DESIGN §1)."""
    return torch.arange(1, num_frames + 1, dtype=torch.float64).div(fps).float()


def bucket_ids_of(captions: list[str]) -> Tensor:
    """``(N,)`` long ids of the captions' buckets: equal captions share an id, numbered in order of
    first appearance (a bucket is the set of videos of one caption)."""
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(c, len(index)) for c in captions], dtype=torch.long)


def check_names(kind: str, names, known) -> None:
    """A config's list of caption words (colours, shapes, digits, directions): non-empty, known, no repeats."""
    if len(names) == 0:
        raise ValueError(f"need at least one {kind}")
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {kind} {name!r}; expected one of {list(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate {kind} in {tuple(names)}")


class CaptionedVideos:
    """What every captioned dataset offers on top of ``videos (N, T, C, H, W)``, ``captions`` and ``fps``:
    frame times, buckets (the videos sharing a caption) and their captions."""

    videos: Tensor
    captions: list[str]
    fps: float

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def times(self) -> Tensor:
        """``(T,)`` float32 frame times ``k / fps`` in seconds, ``k = 1..T``."""
        return frame_times(self.videos.shape[1], self.fps)

    @property
    def unique_captions(self) -> list[str]:
        """Captions of the buckets, in bucket-id order."""
        return list(dict.fromkeys(self.captions))

    def render_at(self, index: int, times: Tensor) -> Tensor:
        """Ground truth of video ``index`` at any ``times`` (``(T,)`` seconds) → ``(T, C, H, W)``: only data
        rendered from a closed form has one (shapes, digits, camera)."""
        raise NotImplementedError(f"{type(self).__name__} has no renderer: its frames exist only at k / fps")

    def buckets(self) -> dict[str, list[int]]:
        """Caption → indices of its videos in this split."""
        out: dict[str, list[int]] = {}
        for i, caption in enumerate(self.captions):
            out.setdefault(caption, []).append(i)
        return out
