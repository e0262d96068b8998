"""Training rows: what the trainer reads, one video (or latent video) at a time.

A dataset the trainer draws batches from is ``len(rows)`` rows, ``rows[i]`` one row ``(T, C, H, W)``
(or ``(T, *latent_shape)``), and ``rows.captions`` (one per row, or None). Two kinds:

- :class:`TensorRows` holds every row in one tensor (the built-in datasets, which are generated in
  memory, and any data loaded whole): the trainer moves it to the device once and indexes it there.
- a lazy implementation reads a row when a batch needs it (a folder of your videos,
  ``tempoflow.data.folder.FolderClips``; a latent cache, ``tempoflow.data.latent_cache.LatentRows``):
  the trainer fetches its rows through a ``DataLoader`` with workers (``tempoflow.train.loader``).

A lazy ``rows[i]`` must be a function of ``i`` alone — the same row for the same index in any process,
worker or order — so lazy and in-memory training give the same batches, and a resumed run the same as
an uninterrupted one. Anything random in reading a row (a crop, a clip offset) must be seeded by ``i``,
never by a worker's RNG.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor


class Rows(ABC):
    """``len(rows)`` training rows, ``rows[i]`` one row (a tensor), ``captions`` one per row or None."""

    captions: list[str] | None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, i: int) -> Tensor:
        """Row ``i``: ``(T, C, H, W)`` video in [0, 1] (or fields, or a latent video), float32, CPU.

        Raises:
            DataError: the row's file is missing or cannot be read; the message names it.
        """


class TensorRows(Rows):
    """Every row in memory: ``videos (N, T, ...)``."""

    def __init__(self, videos: Tensor, captions: list[str] | None = None):
        self.videos, self.captions = videos, captions

    def __len__(self) -> int:
        return self.videos.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.videos[i]
