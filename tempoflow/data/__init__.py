"""Datasets and video I/O. ``load_dataset(cfg.data, split)`` is the one entry point for training data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tempoflow.errors import ConfigError

if TYPE_CHECKING:
    from tempoflow.config import DataConfig
    from tempoflow.data.shapes import ShapesDataset

DATASETS = ("shapes",)


def _check(cfg: DataConfig) -> None:
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown data.name '{cfg.name}' (valid: {', '.join(DATASETS)})")


def load_dataset(cfg: DataConfig, split: str) -> ShapesDataset:
    """The videos, captions and buckets of one split ("train", "test" or "heldout")."""
    from tempoflow.data.shapes import make_shapes

    _check(cfg)
    try:
        return make_shapes(cfg.shapes, split)
    except ValueError as err:
        raise ConfigError(f"data.shapes: {err}") from err


def video_shape(cfg: DataConfig) -> tuple[int, int, int, int]:
    """``(T, C, H, W)`` of the dataset's videos, known from the config alone."""
    _check(cfg)
    s = cfg.shapes
    return s.num_frames, 3, s.resolution, s.resolution
