"""Datasets and video I/O. ``load_dataset(cfg.data, split)`` is the one entry point for training data."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tempoflow.configio import require
from tempoflow.data.camera import CameraConfig
from tempoflow.data.digits import DigitsConfig
from tempoflow.data.folder import FolderConfig
from tempoflow.data.physics.porous import PorousConfig
from tempoflow.data.physics.sde import SDEConfig
from tempoflow.data.physics.wave import WaveConfig
from tempoflow.data.shapes import ShapesConfig
from tempoflow.data.the_well import WELL_SPLITS, TheWellConfig
from tempoflow.errors import ConfigError

if TYPE_CHECKING:
    from tempoflow.data.camera import CameraDataset
    from tempoflow.data.digits import DigitsDataset
    from tempoflow.data.folder import FolderClips
    from tempoflow.data.shapes import ShapesDataset

PHYSICS_KINDS = ("wave", "porous", "sde")  # data.name values served by tempoflow.data.physics
FIELD_KINDS = (*PHYSICS_KINDS, "the_well")  # fields (signed, not clamped): our simulators and The Well's files
DATASETS = ("shapes", "digits", "camera", "folder", *FIELD_KINDS)
PHYSICS_SPLITS = ("train", "test")
LOADING = ("auto", "memory", "lazy")  # data.loading


@dataclass(frozen=True)
class PhysicsConfig:
    """Physics trajectories (seed 001 appendix D; ``tempoflow.data.physics``), used when ``data.name`` is
    "wave", "porous" or "sde" (the name is the kind). The kind's own settings — ``t_end`` in seconds, the
    medium, the SDE's rates — are its sub-section, e.g. ``data.physics.wave.t_end``. Defaults are sized for
    a CPU; the paper's sizes are in the comments."""

    n_trajectories: int = 128  # M, train + test (paper: 1024 wave, 1000 porous)
    size: int = 32  # grid side (paper: 64 wave, 100 porous)
    n_times: int = 32  # stored times evenly on (0, t_end] (paper: 64 wave, 50 porous)
    seed: int = 0  # trajectory i is a function of (seed, i) only
    test_fraction: float = 0.25  # share of the trajectories held out (the "test" split)
    split_seed: int = 0  # permutation that draws the test trajectories
    cache_dir: str = "data/physics"  # simulations are cached here; "" = simulate on every load
    # Prepend the fixed initial state u(0) (not stored by the simulators) as frame 0 at t = 0, so that a
    # roll-out starts from the one deterministic initial condition, as in the paper's Algorithm 2.
    include_initial: bool = True
    wave: WaveConfig = field(default_factory=WaveConfig)
    porous: PorousConfig = field(default_factory=PorousConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)

    def __post_init__(self) -> None:
        require(self.n_trajectories >= 2, f"data.physics.n_trajectories must be >= 2, got {self.n_trajectories}")
        require(self.size >= 4, f"data.physics.size must be >= 4, got {self.size}")
        require(self.n_times >= 1, f"data.physics.n_times must be >= 1, got {self.n_times}")
        require(self.seed >= 0, f"data.physics.seed must be >= 0, got {self.seed}")
        require(0.0 < self.test_fraction < 1.0,
                 f"data.physics.test_fraction must be in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to train on; ``name`` selects the sub-config that is used: "shapes", "digits" or
    "camera" (captioned video), "folder" (your videos: a folder or an Open-Sora-style CSV), a physics kind
    "wave", "porous", "sde" (``physics``), or "the_well" (trajectories in The Well's HDF5 files)."""

    name: str = "shapes"
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    digits: DigitsConfig = field(default_factory=DigitsConfig)  # used when name is "digits"
    camera: CameraConfig = field(default_factory=CameraConfig)  # used when name is "camera": photographs
    folder: FolderConfig = field(default_factory=FolderConfig)  # used when name is "folder": your videos
    the_well: TheWellConfig = field(default_factory=TheWellConfig)  # used when name is "the_well"
    # Folder written by `tempoflow data encode`: train on its latents instead of encoding every batch.
    latent_cache: str = ""
    # How training reads its rows: "memory" = the whole split up front, held on the device; "lazy" = each
    # video when a batch draws it, read ahead by `num_workers` DataLoader workers (a folder of videos, a
    # latent cache); "auto" = lazy for those two, memory for the built-in datasets (generated in memory).
    # Both give the same batches bit for bit (tempoflow.data.rows).
    loading: str = "auto"
    num_workers: int = 2  # processes reading lazy rows ahead of the training step (0 = in the training process)

    def __post_init__(self) -> None:
        require(self.loading in LOADING, f"data.loading must be one of {', '.join(LOADING)}, got {self.loading!r}")
        require(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class TrajectoryDataset:
    """One split of physics trajectories as the trainer and evaluation read them (no captions).

    Attributes:
        videos: ``(M, T, C, H, W)`` float32 fields, not clamped (DESIGN §1).
        times: ``(T,)`` float32 seconds of each frame: ``k / fps``, ``k = 0..T−1`` when the fixed initial
            state is frame 0 (``data.physics.include_initial``), else ``k = 1..T``.
        indices: ``(M,)`` long, the simulator's trajectory index ``i`` of each video (The Well: the index
            among all trajectories of the source, in file order).
        fps: frames per second, ``n_times / t_end`` (The Well: one over the kept steps' spacing).
        kind: "wave", "porous", "sde" or "the_well".
        split: "train" or "test" (The Well also "valid").
        captions: always None: physics data is unconditional.
    """

    videos: Tensor
    times: Tensor
    indices: Tensor
    fps: float
    kind: str
    split: str
    captions: None = None

    def __len__(self) -> int:
        return self.videos.shape[0]


def is_field_data(cfg: DataConfig) -> bool:
    """Physics fields (signed, not clamped; DESIGN §1) rather than video in [0, 1]."""
    return cfg.name in FIELD_KINDS


def _check(cfg: DataConfig) -> None:
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown data.name '{cfg.name}' (valid: {', '.join(DATASETS)})")


def _kind_settings(cfg: DataConfig) -> dict:
    """The simulator settings of the physics kind ``cfg.name`` as keyword arguments of ``simulate``."""
    return dataclasses.asdict(getattr(cfg.physics, cfg.name))


def physics_initial_state(cfg: DataConfig) -> Tensor:
    """The fixed initial state ``u(0)`` of the physics kind ``cfg.name``, ``(C, H, W)`` float32 (appendix D).

    The simulators start every trajectory from it but do not store it: wave, the bump
    ``exp(−30 ‖x − (π, π)‖²)``; porous, zero saturation; sde, the blob at ``(π, π)``.
    """
    p = cfg.physics
    if cfg.name == "wave":
        from tempoflow.data.physics.wave import initial_bump

        state = initial_bump(p.size, p.wave.bump_sharpness)
    elif cfg.name == "porous":
        if p.porous.with_pressure:  # the initial pressure depends on the random medium: not fixed
            raise ConfigError("data.physics.include_initial needs data.physics.porous.with_pressure=false: "
                              "the initial pressure depends on the random permeability")
        state = torch.zeros(p.size, p.size)
    elif cfg.name == "sde":
        from tempoflow.data.physics.sde import render_blobs

        state = render_blobs(torch.tensor([math.pi, math.pi], dtype=torch.float64), p.size, p.sde.blob_width)
    else:
        raise ConfigError(f"data.name '{cfg.name}' is not a physics kind ({', '.join(PHYSICS_KINDS)})")
    return state.float()[None]  # (1, H, W)


def load_physics(cfg: DataConfig, split: str) -> TrajectoryDataset:
    """One split of the physics kind ``cfg.name``, simulated once and cached in ``data.physics.cache_dir``."""
    from tempoflow.data.physics import make_physics_dataset

    if split not in PHYSICS_SPLITS:
        raise ConfigError(f"physics data '{cfg.name}' has the splits {', '.join(PHYSICS_SPLITS)}, not '{split}'")
    p = cfg.physics
    try:
        data = make_physics_dataset(cfg.name, p.n_trajectories, p.size, p.n_times, p.seed, p.cache_dir or None,
                                    **_kind_settings(cfg))
        data = data.select(split, p.test_fraction, p.split_seed)
    except ValueError as err:
        raise ConfigError(f"data.physics ({cfg.name}): {err}") from err
    videos, times = data.videos, data.times
    if p.include_initial:
        u_0 = physics_initial_state(cfg)  # (C, H, W)
        videos = torch.cat([u_0.expand(len(data), 1, *u_0.shape), videos], dim=1)  # (M, 1 + n_times, C, H, W)
        times = torch.cat([times.new_zeros(1), times])
    return TrajectoryDataset(videos, times, data.indices, frame_rate(cfg), cfg.name, split)


def load_the_well_split(cfg: DataConfig, split: str) -> TrajectoryDataset:
    """One split of The Well's files under ``data.the_well.path`` (``tempoflow.data.the_well``)."""
    from tempoflow.data.the_well import load_the_well

    if split not in WELL_SPLITS:
        raise ConfigError(f"data.name=the_well has the splits {', '.join(WELL_SPLITS)}, not '{split}'")
    data = load_the_well(cfg.the_well, split)
    return TrajectoryDataset(data.videos, data.times, data.indices, data.fps, "the_well", split)


# Field names of the physics kinds' channels when written in The Well's layout.
PHYSICS_FIELDS = {"wave": ("displacement",), "porous": ("saturation", "pressure"), "sde": ("intensity",)}


def export_the_well(cfg: DataConfig, out: str | Path, splits: tuple[str, ...] = ("train", "test")) -> list[Path]:
    """Write the physics kind ``cfg.name``'s splits in The Well's layout: ``out/data/<split>/<kind>_<split>.hdf5``
    (a dataset folder ``data.the_well.path=out`` reads back exactly), with the kind's numeric settings as
    ``@simulation_parameters``."""
    from tempoflow.data.physics import NOT_DATA
    from tempoflow.data.the_well import write_well

    if cfg.name not in PHYSICS_KINDS:
        raise ConfigError(f"only the physics kinds ({', '.join(PHYSICS_KINDS)}) are written in The Well's layout, "
                          f"not data.name={cfg.name}")
    parameters = {k: float(v) for k, v in _kind_settings(cfg).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_DATA}
    paths = []
    for split in splits:
        data = load_physics(cfg, split)
        names = list(PHYSICS_FIELDS[cfg.name][: data.videos.shape[2]])
        paths.append(write_well(Path(out) / "data" / split / f"{cfg.name}_{split}.hdf5", data.videos, data.times,
                                names, f"tempoflow_{cfg.name}", parameters=parameters))
    return paths


def load_dataset(cfg: DataConfig, split: str) -> ShapesDataset | DigitsDataset | CameraDataset | TrajectoryDataset:
    """The videos (with captions and buckets for shapes, digits and camera) of one split: "train", "test"
    or "heldout" for those; "train" or "test" for the physics kinds (and "valid" for The Well)."""
    from tempoflow.data.shapes import make_shapes

    _check(cfg)
    if cfg.name in PHYSICS_KINDS:
        return load_physics(cfg, split)
    if cfg.name == "the_well":
        return load_the_well_split(cfg, split)
    if cfg.name == "folder":
        from tempoflow.data.folder import make_folder

        if not cfg.folder.path:
            raise ConfigError("data.name=folder needs data.folder.path (a folder of videos or a CSV manifest)")
        return make_folder(cfg.folder, split)
    if cfg.name == "digits":
        from tempoflow.data.digits import make_digits

        try:
            return make_digits(cfg.digits, split)
        except ValueError as err:
            raise ConfigError(f"data.digits: {err}") from err
    if cfg.name == "camera":
        from tempoflow.data.camera import make_camera

        try:
            return make_camera(cfg.camera, split)
        except ValueError as err:
            raise ConfigError(f"data.camera: {err}") from err
    try:
        return make_shapes(cfg.shapes, split)
    except ValueError as err:
        raise ConfigError(f"data.shapes: {err}") from err


def reads_lazily(cfg: DataConfig) -> bool:
    """Whether training reads rows when a batch draws them (``data.loading``; module ``tempoflow.data.rows``).

    Raises:
        ConfigError: ``data.loading=lazy`` for a built-in dataset, which is generated in memory.
    """
    _check(cfg)
    lazy_source = cfg.name == "folder" or bool(cfg.latent_cache)
    if cfg.loading == "lazy" and not lazy_source:
        raise ConfigError(f"data.loading=lazy reads a folder of videos (data.name=folder) or a latent cache "
                          f"(data.latent_cache); data.name={cfg.name} is generated in memory")
    return lazy_source if cfg.loading == "auto" else cfg.loading == "lazy"


def open_rows(cfg: DataConfig, split: str) -> FolderClips:
    """One split of a folder of videos to read lazily (``FolderClips``): listed, not decoded."""
    from tempoflow.data.folder import open_folder

    if cfg.name != "folder":
        raise ConfigError(f"data.name={cfg.name} is generated in memory: use load_dataset")
    if not cfg.folder.path:
        raise ConfigError("data.name=folder needs data.folder.path (a folder of videos or a CSV manifest)")
    return open_folder(cfg.folder, split)


def video_shape(cfg: DataConfig) -> tuple[int, int, int, int]:
    """``(T, C, H, W)`` of the dataset's videos, known from the config alone (The Well: and the files'
    headers)."""
    _check(cfg)
    if cfg.name == "the_well":
        from tempoflow.data.the_well import well_shape

        return well_shape(cfg.the_well)[0]
    if cfg.name in PHYSICS_KINDS:
        p = cfg.physics
        channels = 2 if cfg.name == "porous" and p.porous.with_pressure else 1
        return p.n_times + int(p.include_initial), channels, p.size, p.size
    s = {"digits": cfg.digits, "camera": cfg.camera, "folder": cfg.folder}.get(cfg.name, cfg.shapes)
    return s.num_frames, 3, s.resolution, s.resolution


def frame_rate(cfg: DataConfig) -> float:
    """Frames per second of the dataset's videos (frame k, 1-based, at t = k / fps seconds; physics data
    with its initial state, and The Well's, have their first state as frame 0 at t = 0)."""
    _check(cfg)
    if cfg.name == "the_well":
        from tempoflow.data.the_well import well_shape

        return well_shape(cfg.the_well)[1]
    if cfg.name in PHYSICS_KINDS:
        return cfg.physics.n_times / getattr(cfg.physics, cfg.name).t_end
    return float({"digits": cfg.digits, "camera": cfg.camera, "folder": cfg.folder}.get(cfg.name, cfg.shapes).fps)
