"""Trajectories in The Well's HDF5 layout (Ohana et al. 2024; PolymathicAI/the_well, ``docs/data_format.md``):
read a downloaded dataset for ``data.name=the_well``, and write our own simulations in that layout.

The layout, as read here (``@`` marks an HDF5 attribute)::

    @dataset_name, @n_spatial_dims (2), @n_trajectories, @grid_type, @simulation_parameters
    dimensions/    @spatial_dims = [x, y];  time (T,) or (n_traj, T);  x (X,);  y (Y,)
    boundary_conditions/<name>/  @bc_type, @associated_dims, mask
    scalars/       @field_names
    t0_fields/     @field_names;  <f> (n_traj, T, X, Y)           scalar fields
    t1_fields/     @field_names;  <f> (n_traj, T, X, Y, 2)        vector fields: channels f_x, f_y
    t2_fields/     @field_names;  <f> (n_traj, T, X, Y, 2, 2)     tensor fields: channels f_xx, f_xy, ...
    each field: @time_varying (else no T axis), @sample_varying (else no n_traj axis), @dim_varying

A dataset is a folder ``<name>/data/{train,valid,test}/*.hdf5`` (what ``the-well-download`` writes).
Trajectory ``i`` of a split becomes ``(T, C, H, W)`` with rows along ``y`` and columns along ``x``
(``H = Y``, ``W = X``; the arrays are stored ``[x, y]``), one channel per selected field component.
Only the selected fields and frames of one trajectory are read at a time (h5py slicing), then cropped
and resized, so memory holds the result, not the file. Fields constant in time (``@time_varying``
false, e.g. a material density) may be selected by name: they are repeated over the frames.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tempoflow.configio import require
from tempoflow.errors import ConfigError, DataError, needs_extra
from tempoflow.files import write_atomic

WELL_SPLITS = ("train", "valid", "test")
FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")  # tensor order 0, 1, 2
REQUIRED_GROUPS = ("dimensions", *FIELD_GROUPS)  # what a reader needs (boundary_conditions, scalars: not)
SUFFIXES = (".hdf5", ".h5")


@dataclass(frozen=True)
class TheWellConfig:
    """``data.name=the_well``: trajectories from The Well's HDF5 files (``tempoflow.data.the_well``)."""

    # A dataset folder with data/{train,valid,test}/ (or {train,valid,test}/), one .hdf5 file, or a folder
    # of .hdf5 files; the last two are split by trajectory with test_fraction and split_seed.
    path: str = ""
    # Field names (all components: "velocity") or component names ("velocity_x"); empty = every field
    # that varies in time.
    fields: tuple[str, ...] = ()
    resolution: int = 0  # side after a centre crop to a square and an area (or bilinear) resize; 0 = as stored
    num_frames: int = 0  # frames kept from the start of each trajectory (after frame_stride); 0 = all
    frame_stride: int = 1  # keep every n-th stored step
    max_trajectories: int = 0  # the first ones of each split; 0 = all
    test_fraction: float = 0.25  # share held out when the source has no split folders
    split_seed: int = 0

    def __post_init__(self) -> None:
        require(self.resolution >= 0, f"data.the_well.resolution must be >= 0, got {self.resolution}")
        require(self.num_frames == 0 or self.num_frames >= 2,
                f"data.the_well.num_frames must be 0 (all) or >= 2, got {self.num_frames}")
        require(self.frame_stride >= 1, f"data.the_well.frame_stride must be >= 1, got {self.frame_stride}")
        require(self.max_trajectories >= 0,
                f"data.the_well.max_trajectories must be >= 0, got {self.max_trajectories}")
        require(0.0 < self.test_fraction < 1.0,
                f"data.the_well.test_fraction must be in (0, 1), got {self.test_fraction}")


@contextmanager
def _h5(path: Path) -> Iterator[Any]:
    """``path`` opened read-only with h5py; a file that is not HDF5 is one line."""
    with needs_extra("h5py", "the_well", "data.name=the_well"):
        import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path} is not a readable HDF5 file ({err})") from err
    with f:
        yield f


def _strings(value: Any) -> list[str]:
    """An HDF5 string attribute (a str, bytes, or an array of either) as a list of str."""
    if isinstance(value, (str, bytes)):
        value = [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value).tolist()]


@dataclass(frozen=True)
class WellField:
    """One field of a file: its group, its channels (components) and which axes it has."""

    name: str
    group: str
    components: tuple[str, ...]  # channel names, The Well's: "p", or "v_x", "v_y", or "s_xx", "s_xy", ...
    time_varying: bool
    sample_varying: bool


@dataclass(frozen=True)
class WellHeader:
    """What a file holds, read from its attributes and dimension datasets (no field data)."""

    path: Path
    dataset_name: str
    n_trajectories: int
    times: Tensor  # (T,) float64, the stored time of each step (the first trajectory's if they vary)
    grid: tuple[int, int]  # (X, Y) points along the spatial dims
    fields: tuple[WellField, ...]

    def channel_names(self) -> list[str]:
        return [c for f in self.fields for c in f.components]

    def describe_fields(self) -> str:
        return ", ".join(c + ("" if f.time_varying else " (constant in time)") for f in self.fields
                         for c in f.components)


def read_header(path: str | Path) -> WellHeader:
    """The :class:`WellHeader` of one file.

    Raises:
        DataError: not an HDF5 file, a group of the layout missing (named), not 2-D, or a field whose
            axes do not match its attributes.
    """
    path = Path(path)
    with _h5(path) as f:
        missing = [g for g in REQUIRED_GROUPS if g not in f]
        if missing:
            raise DataError(f"{path} is not in The Well's layout: no group '{missing[0]}' "
                            f"(it has: {', '.join(sorted(f.keys())) or 'nothing'})")
        dims = f["dimensions"]
        n_dims = int(f.attrs.get("n_spatial_dims", len(_strings(dims.attrs.get("spatial_dims", [])))))
        if n_dims != 2:
            raise DataError(f"{path} holds {n_dims}-D fields (n_spatial_dims={n_dims}); tempoflow reads 2-D ones")
        spatial = _strings(dims.attrs.get("spatial_dims", ["x", "y"]))
        absent = [d for d in ("time", *spatial) if d not in dims]
        if absent:
            raise DataError(f"{path} is not in The Well's layout: no dataset 'dimensions/{absent[0]}'")
        grid = (int(dims[spatial[0]].shape[-1]), int(dims[spatial[1]].shape[-1]))
        time = np.asarray(dims["time"][...], dtype=np.float64)
        times = torch.from_numpy(time[0] if time.ndim == 2 else time)
        if "n_trajectories" not in f.attrs:
            raise DataError(f"{path} is not in The Well's layout: no attribute 'n_trajectories'")
        n_traj = int(f.attrs["n_trajectories"])
        fields = []
        for order, group in enumerate(FIELD_GROUPS):
            for name in _strings(f[group].attrs.get("field_names", [])):
                if name not in f[group]:
                    raise DataError(f"{path}: {group} lists field '{name}' but holds no dataset of that name")
                data = f[group][name]
                timed, sampled = bool(data.attrs.get("time_varying", True)), bool(data.attrs.get("sample_varying", True))
                expected = (n_traj,) * sampled + (len(times),) * timed + grid + (2,) * order
                flat = (n_traj,) * sampled + (len(times),) * timed + grid + ((4,) if order == 2 else ())
                if tuple(data.shape) not in (expected, flat):
                    raise DataError(f"{path}: field '{group}/{name}' has shape {tuple(data.shape)}, expected "
                                    f"{expected} from its attributes (time_varying={timed}, sample_varying={sampled})")
                parts = ["".join(p) for p in itertools.product(spatial, repeat=order)]
                components = tuple(f"{name}_{p}" if p else name for p in parts)
                fields.append(WellField(name, group, components, timed, sampled))
        return WellHeader(path, _strings(f.attrs.get("dataset_name", path.stem))[0], n_traj, times, grid,
                          tuple(fields))


def select_channels(header: WellHeader, names: tuple[str, ...]) -> list[tuple[WellField, int]]:
    """The channels ``(field, component index)`` that ``data.the_well.fields`` names, in its order (empty:
    every time-varying field's components, in the file's order).

    Raises:
        DataError: a name that is neither a field nor a component of the file (the available ones listed).
    """
    if not names:
        chosen = [(f, i) for f in header.fields if f.time_varying for i in range(len(f.components))]
        if not chosen:
            raise DataError(f"{header.path} has no field that varies in time (its fields: "
                            f"{header.describe_fields() or 'none'})")
        return chosen
    chosen = []
    for name in names:
        by_field = [(f, i) for f in header.fields if f.name == name for i in range(len(f.components))]
        by_component = [(f, f.components.index(name)) for f in header.fields if name in f.components]
        if not (by_field or by_component):
            raise DataError(f"field '{name}' is not in {header.path} (its fields: {header.describe_fields()})")
        chosen += by_field or by_component
    return chosen


def fit_resolution(frames: Tensor, resolution: int) -> Tensor:
    """``(T, C, H, W)`` centre-cropped to a square and resized to ``resolution`` (0: unchanged): block means
    when the side is a multiple of it (exact area averaging), else bilinear with antialiasing."""
    if resolution == 0:
        return frames
    height, width = frames.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    frames = frames[..., top : top + side, left : left + side]
    if side == resolution:
        return frames.contiguous()
    if side % resolution == 0:
        return F.avg_pool2d(frames, side // resolution)
    return F.interpolate(frames, size=(resolution, resolution), mode="bilinear", antialias=side > resolution,
                         align_corners=False)


def read_trajectory(f: Any, header: WellHeader, channels: list[tuple[WellField, int]], index: int,
                    frames: slice) -> Tensor:
    """Trajectory ``index`` of the open file ``f``: the ``channels``' ``frames``, ``(T', C, Y, X)`` float32.

    Reads one slice per field (only this trajectory, only these frames); fields constant in time are
    repeated over the frames.
    """
    n_frames = len(range(*frames.indices(len(header.times))))
    arrays: dict[str, Tensor] = {}
    out = []
    for field, component in channels:
        if field.name not in arrays:
            where = (index,) * field.sample_varying + (frames,) * field.time_varying
            data = torch.from_numpy(np.asarray(f[field.group][field.name][where], dtype=np.float32))
            if not field.time_varying:
                data = data.expand(n_frames, *data.shape)
            arrays[field.name] = data.reshape(n_frames, *header.grid, -1)  # (T', X, Y, components)
        out.append(arrays[field.name][..., component].transpose(-1, -2))  # (T', Y, X)
    return torch.stack(out, dim=1)  # (T', C, Y, X)


@dataclass
class WellSplit:
    """One split read from The Well's files (wrapped into a ``TrajectoryDataset`` by ``load_dataset``).

    Attributes:
        videos: ``(N, T, C, H, W)`` float32 fields.
        times: ``(T,)`` float32 seconds after the first kept step.
        indices: ``(N,)`` long, each trajectory's index among all trajectories of its source, in file order.
        fps: frames per second of the kept frames.
        channels: the channel names.
    """

    videos: Tensor
    times: Tensor
    indices: Tensor
    fps: float
    channels: list[str]


def _hdf5_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def source_files(path: str, split: str) -> tuple[list[Path], bool]:
    """The files of ``split`` under ``data.the_well.path`` and whether they are that split as a whole
    (split folders) or must be divided by trajectory (one file, or a folder without split folders).

    Raises:
        ConfigError / DataError: no path, a path that does not exist, no split folder of that name, no files.
    """
    if not path:
        raise ConfigError("data.name=the_well needs data.the_well.path (a The Well dataset folder or .hdf5 file)")
    root = Path(path).expanduser()
    if root.is_file():
        return [root], False
    if not root.is_dir():
        raise DataError(f"data.the_well.path {root} does not exist")
    for base in (root / "data", root):
        present = [s for s in WELL_SPLITS if (base / s).is_dir()]
        if present:
            if split not in present:
                raise DataError(f"{base} has no '{split}' folder (it has: {', '.join(present)})")
            files = _hdf5_files(base / split)
            if not files:
                raise DataError(f"no .hdf5 files in {base / split}")
            return files, True
    files = _hdf5_files(root)
    if not files:
        raise DataError(f"no .hdf5 files in {root} (nor train/valid/test folders of them)")
    return files, False


def _headers(cfg: TheWellConfig, split: str) -> tuple[list[WellHeader], bool]:
    files, whole = source_files(cfg.path, split)
    headers = [read_header(p) for p in files]
    for h in headers[1:]:
        if h.grid != headers[0].grid:
            raise DataError(f"{h.path} has a {h.grid} grid, {headers[0].path} a {headers[0].grid} one: "
                            "one dataset's files share a grid")
    return headers, whole


def _frames(cfg: TheWellConfig, headers: list[WellHeader]) -> tuple[slice, int]:
    """The kept steps of every file, ``num_frames`` steps ``frame_stride`` apart from the first, and their
    count."""
    stored = min(len(h.times) for h in headers)
    available = len(range(0, stored, cfg.frame_stride))
    if cfg.num_frames > available:
        raise DataError(f"data.the_well.num_frames={cfg.num_frames} but {headers[0].path.parent} has "
                        f"{stored} steps per trajectory ({available} at frame_stride={cfg.frame_stride})")
    count = cfg.num_frames or available
    return slice(0, (count - 1) * cfg.frame_stride + 1, cfg.frame_stride), count


def _frame_rate(header: WellHeader, stride: int) -> float:
    steps = torch.diff(header.times)
    if len(steps) == 0 or float(steps[0]) <= 0:
        return 1.0  # a single stored step has no rate: frames one second apart
    return 1.0 / (float(steps[0]) * stride)


def well_shape(cfg: TheWellConfig) -> tuple[tuple[int, int, int, int], float]:
    """``((T, C, H, W), fps)`` of the training split, from the files' headers alone."""
    headers, _ = _headers(cfg, "train")
    channels = select_channels(headers[0], cfg.fields)
    _, n = _frames(cfg, headers)
    x, y = headers[0].grid
    h, w = (cfg.resolution, cfg.resolution) if cfg.resolution else (y, x)
    return (n, len(channels), h, w), _frame_rate(headers[0], cfg.frame_stride)


def load_the_well(cfg: TheWellConfig, split: str) -> WellSplit:
    """Read one split ("train", "valid" or "test"; the last two alike when the source has no split folders)
    into memory, one trajectory at a time.

    Raises:
        ConfigError: no path set.
        DataError: a missing file or folder, a file not in the layout (the missing group named), a field name
            not in the file (the available ones listed), too few stored steps, too few trajectories.
    """
    from tqdm.auto import tqdm

    from tempoflow.data.physics import split_rows

    headers, whole = _headers(cfg, split)
    frames, _ = _frames(cfg, headers)
    rows = [(h, i) for h in headers for i in range(h.n_trajectories)]  # every trajectory, file order
    index = torch.arange(len(rows))
    if not whole:
        try:
            index = split_rows(len(rows), "test" if split == "valid" else split, cfg.test_fraction, cfg.split_seed)
        except ValueError as err:
            raise DataError(f"data.the_well ({cfg.path}): {err}") from err
    if cfg.max_trajectories:
        index = index[: cfg.max_trajectories]
    videos = []
    for header, group in itertools.groupby([rows[i] for i in index.tolist()], key=lambda r: r[0]):
        channels = select_channels(header, cfg.fields)
        with _h5(header.path) as f:
            for _, i in tqdm(list(group), desc=f"read {header.path.name}", disable=len(index) < 64):
                videos.append(fit_resolution(read_trajectory(f, header, channels, i, frames), cfg.resolution))
    if not videos:
        raise DataError(f"data.the_well ({cfg.path}): the '{split}' split holds no trajectory")
    times = (headers[0].times[frames] - headers[0].times[0]).float()
    names = [c.components[i] for c, i in select_channels(headers[0], cfg.fields)]
    return WellSplit(torch.stack(videos), times, index, _frame_rate(headers[0], cfg.frame_stride), names)


def write_well(
    path: str | Path, videos: Tensor, times: Tensor, field_names: list[str], dataset_name: str,
    extent: float = 2 * math.pi, bc_type: str = "PERIODIC", parameters: dict[str, float] | None = None,
) -> Path:
    """Write trajectories ``(N, T, C, H, W)`` as one file in The Well's layout, each channel a scalar field of
    ``t0_fields`` stored ``(N, T, X, Y)`` float32 (``X = W`` columns, ``Y = H`` rows): what
    :func:`load_the_well` reads back exactly.

    Args:
        path: the ``.hdf5`` file (written atomically).
        videos: the fields, float32.
        times: ``(T,)`` seconds of each frame.
        field_names: one name per channel.
        dataset_name: ``@dataset_name``.
        extent: the square domain's side; grid points ``x_j = extent · j / W`` (our solvers: ``2π``, periodic).
        bc_type: the boundary condition of both axes (The Well's ``PERIODIC``, ``WALL``, ``OPEN``).
        parameters: ``@simulation_parameters`` and their values (root attributes and ``scalars/``).
    """
    with needs_extra("h5py", "the_well", "writing The Well's layout"):
        import h5py
    n, t, c, height, width = videos.shape
    if len(field_names) != c or times.shape != (t,):
        raise ValueError(f"{c} channels and {t} frames need {c} field names and (T,) times, "
                         f"got {field_names} and {tuple(times.shape)}")
    parameters = parameters or {}
    coords = {"x": np.arange(width) * extent / width, "y": np.arange(height) * extent / height}

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"dataset_name": dataset_name, "grid_type": "cartesian", "n_spatial_dims": 2,
                            "n_trajectories": n, "simulation_parameters": list(parameters), **parameters})
            dims = f.create_group("dimensions")
            dims.attrs["spatial_dims"] = ["x", "y"]
            dims.create_dataset("time", data=times.numpy().astype(np.float32)).attrs["sample_varying"] = False
            for axis, values in coords.items():
                d = dims.create_dataset(axis, data=values.astype(np.float32))
                d.attrs.update({"sample_varying": False, "time_varying": False})
            bcs = f.create_group("boundary_conditions")
            for axis, values in coords.items():
                bc = bcs.create_group(f"{axis}_{bc_type.lower()}")
                bc.attrs.update({"associated_dims": [axis], "associated_fields": [], "bc_type": bc_type,
                                 "sample_varying": False, "time_varying": False})
                mask = np.zeros(len(values), dtype=bool)
                mask[[0, -1]] = True
                bc.create_dataset("mask", data=mask)
            scalars = f.create_group("scalars")
            scalars.attrs["field_names"] = list(parameters)
            for name, value in parameters.items():
                s = scalars.create_dataset(name, data=np.float32(value))
                s.attrs.update({"sample_varying": False, "time_varying": False})
            for group in FIELD_GROUPS:
                f.create_group(group).attrs["field_names"] = field_names if group == "t0_fields" else []
            for i, name in enumerate(field_names):
                data = videos[:, :, i].transpose(-1, -2).contiguous().numpy().astype(np.float32)  # (N, T, X, Y)
                d = f["t0_fields"].create_dataset(name, data=data)
                d.attrs.update({"dim_varying": [True, True], "sample_varying": True, "time_varying": True})

    return write_atomic(path, write)
