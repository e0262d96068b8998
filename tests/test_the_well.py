"""The Well's HDF5 layout (issue 17 item 5): our wave solver written in it and read back exactly, a file built
by hand with h5py the way The Well's own dummy-data writer builds one (the_well/utils/dummy_data.py: a
vector field, a field constant in time) read with field selection and orientation checked, crops and
resizes against numpy block means, the errors, and lifting trained on it through the CLI."""

from __future__ import annotations

import json
import math
import sys

import h5py
import numpy as np
import pytest
import torch

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.data import load_dataset, video_shape
from tempoflow.data.the_well import fit_resolution, read_header
from tempoflow.errors import ConfigError, DataError, MissingExtraError

from .test_lifting import TINY_PHYSICS

WAVE = ["data.physics.n_trajectories=12", "data.physics.size=16", "data.physics.n_times=6"]


@pytest.fixture(scope="module")
def wave_well(tmp_path_factory):
    """A tiny wave dataset written in The Well's layout through the CLI, and its physics config."""
    root = tmp_path_factory.mktemp("well")
    physics = [*WAVE, f"data.physics.cache_dir={root / 'cache'}"]
    assert main(["data", "well", "wave_lifting", *physics, "--out", str(root / "wave")]) == 0
    return root / "wave", load_config("wave_lifting", physics)


def test_wave_round_trip_is_exact(wave_well):
    folder, physics = wave_well
    cfg = load_config("wave_lifting", [*WAVE, "data.name=the_well", f"data.the_well.path={folder}"])
    for split in ("train", "test"):
        ours, back = load_dataset(physics.data, split), load_dataset(cfg.data, split)
        assert torch.equal(back.videos, ours.videos) and torch.equal(back.times, ours.times)
        assert math.isclose(back.fps, ours.fps, rel_tol=1e-6) and back.kind == "the_well"
    assert video_shape(cfg.data) == video_shape(physics.data) == (7, 1, 16, 16)
    # The layout itself: (n_traj, T, x, y) float32, x along our columns; the header as The Well reads it.
    path = folder / "data" / "train" / "wave_train.hdf5"
    with h5py.File(path) as f:
        assert f.attrs["n_spatial_dims"] == 2 and f.attrs["n_trajectories"] == 9
        assert list(f["dimensions"].attrs["spatial_dims"]) == ["x", "y"]
        stored = f["t0_fields/displacement"]
        assert stored.shape == (9, 7, 16, 16) and stored.dtype == np.float32
        u = load_dataset(physics.data, "train").videos
        assert np.array_equal(stored[2, 3], u[2, 3, 0].numpy().T)
        assert set(f["boundary_conditions"]) == {"x_periodic", "y_periodic"}
    header = read_header(path)
    assert header.dataset_name == "tempoflow_wave" and header.channel_names() == ["displacement"]


def _write_dummy(path, n_traj=3, steps=5, nx=12, ny=8, drop=None):
    """A file laid out as The Well's write_dummy_data writes one: a t1 vector field, a t0 field constant in
    time, a time-varying t0 field; ``drop`` leaves one group out."""
    g = np.random.default_rng(0)
    arrays = {
        "velocity": g.normal(size=(n_traj, steps, nx, ny, 2)).astype(np.float32),
        "density": g.normal(size=(n_traj, nx, ny)).astype(np.float32),
        "pressure": g.normal(size=(n_traj, steps, nx, ny)).astype(np.float32),
    }
    with h5py.File(path, "w") as f:
        f.attrs.update({"dataset_name": "dummy", "grid_type": "cartesian", "n_spatial_dims": 2,
                        "n_trajectories": n_traj, "simulation_parameters": []})
        groups = {}
        for name in ("dimensions", "boundary_conditions", "scalars", "t0_fields", "t1_fields", "t2_fields"):
            if name != drop:
                groups[name] = f.create_group(name)
        if "dimensions" in groups:
            groups["dimensions"].attrs["spatial_dims"] = ["x", "y"]
            for key, n in (("time", steps), ("x", nx), ("y", ny)):
                groups["dimensions"].create_dataset(key, data=np.linspace(0, 0.5, n, dtype=np.float32))
        for group, names in (("t0_fields", ["density", "pressure"]), ("t1_fields", ["velocity"]),
                             ("t2_fields", [])):
            if group not in groups:
                continue
            groups[group].attrs["field_names"] = names
            for name in names:
                d = groups[group].create_dataset(name, data=arrays[name])
                d.attrs.update({"dim_varying": [True, True], "sample_varying": True,
                                "time_varying": name != "density"})
    return arrays


def test_a_well_file_reads_with_field_selection_and_orientation(tmp_path):
    arrays = _write_dummy(tmp_path / "dummy.hdf5")
    header = read_header(tmp_path / "dummy.hdf5")
    assert header.channel_names() == ["density", "pressure", "velocity_x", "velocity_y"]

    def load(*overrides, split="train"):
        cfg = load_config(None, ["data.name=the_well", f"data.the_well.path={tmp_path / 'dummy.hdf5'}",
                                 "data.the_well.test_fraction=0.34", *overrides])
        return load_dataset(cfg.data, split)

    data = load()  # every time-varying field: pressure, velocity_x, velocity_y; 2 of 3 trajectories
    assert data.videos.shape == (2, 5, 3, 8, 12) and data.fps == pytest.approx(8.0)
    test = load(split="test")
    assert sorted([*data.indices.tolist(), *test.indices.tolist()]) == [0, 1, 2]
    i = int(data.indices[0])
    # rows along y, columns along x: our [t, c, y, x] is The Well's [t, x, y, (c)]
    assert np.array_equal(data.videos[0, :, 0].numpy(), arrays["pressure"][i].transpose(0, 2, 1))
    assert np.array_equal(data.videos[0, :, 2].numpy(), arrays["velocity"][i, ..., 1].transpose(0, 2, 1))
    chosen = load("data.the_well.fields=[velocity_y, density]", "data.the_well.frame_stride=2")
    assert chosen.videos.shape == (2, 3, 2, 8, 12) and chosen.fps == pytest.approx(4.0)
    assert np.array_equal(chosen.videos[0, :, 0].numpy(), arrays["velocity"][i, ::2, ..., 1].transpose(0, 2, 1))
    density = arrays["density"][i].T  # constant in time: the same frame repeated
    assert all(np.array_equal(chosen.videos[0, t, 1].numpy(), density) for t in range(3))
    short = load("data.the_well.num_frames=2", "data.the_well.resolution=4", "data.the_well.max_trajectories=1")
    assert short.videos.shape == (1, 2, 3, 4, 4)


def test_fit_resolution_crops_the_centre_and_averages_blocks():
    frames = torch.randn(2, 1, 8, 12, dtype=torch.float64)
    square = frames[..., :, 2:10].numpy()  # the centre 8x8
    blocks = square.reshape(2, 1, 4, 2, 4, 2).mean((3, 5))  # numpy 2x2 block means
    assert np.allclose(fit_resolution(frames, 4).numpy(), blocks, rtol=0, atol=1e-15)
    assert torch.equal(fit_resolution(frames, 8), frames[..., :, 2:10]) and fit_resolution(frames, 0) is frames
    assert fit_resolution(frames, 5).shape == (2, 1, 5, 5)  # not a divisor: bilinear, antialiased


def test_errors_are_one_line(tmp_path, capsys, monkeypatch):
    def load(path, *extra):
        cfg = load_config(None, ["data.name=the_well", f"data.the_well.path={path}", *extra])
        return load_dataset(cfg.data, "train")

    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(ConfigError, match="needs data.the_well.path"):
        load("")
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(DataError, match="is not a readable HDF5 file"):
        load(tmp_path / "text.hdf5")
    _write_dummy(tmp_path / "no_t1.hdf5", drop="t1_fields")
    with pytest.raises(DataError, match="not in The Well's layout: no group 't1_fields'"):
        load(tmp_path / "no_t1.hdf5")
    _write_dummy(tmp_path / "ok.hdf5")
    with pytest.raises(DataError, match=r"field 'vorticity' is not in .* \(its fields: density \(constant in "
                                        r"time\), pressure, velocity_x, velocity_y\)"):
        load(tmp_path / "ok.hdf5", "data.the_well.fields=[vorticity]")
    with pytest.raises(DataError, match="num_frames=9 but .* has 5 steps"):
        load(tmp_path / "ok.hdf5", "data.the_well.num_frames=9")
    (tmp_path / "splits" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="has no 'test' folder"):
        load_dataset(load_config(None, ["data.name=the_well", f"data.the_well.path={tmp_path / 'splits'}"]).data,
                     "test")
    # through the CLI: one line, no traceback
    assert main(["train", "wave_lifting", "data.name=the_well", f"data.the_well.path={tmp_path / 'no_t1.hdf5'}",
                 f"out_dir={tmp_path / 'run'}", "device=cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no group 't1_fields'" in err[0]
    # without h5py: the extra named
    for name in [m for m in sys.modules if m == "h5py" or m.startswith("h5py.")] + ["h5py"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"needs h5py: pip install 'tempoflow\[the_well\]'"):
        load(tmp_path / "ok.hdf5")


def test_lifting_trains_and_evaluates_on_the_well_layout(wave_well, tmp_path):
    folder, _ = wave_well
    run = tmp_path / "run"
    common = [*TINY_PHYSICS, "data.name=the_well", f"data.the_well.path={folder}"]
    assert main(["train", "wave_lifting", *common, f"out_dir={run}"]) == 0
    ev = tmp_path / "eval"
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu", "eval.ensemble_size=3"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    assert m["frames"] == 7 and m["given_frames"] == 1 and "wct" not in m  # no crossing QoI for The Well
    assert m["ensemble"]["initial_conditions"] == 1 and math.isfinite(m["ensemble"]["crps_fair"])
