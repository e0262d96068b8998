"""Data that scales (issue 16): a folder of videos and a latent cache are read a row at a time, when a batch
draws it, by DataLoader workers running ahead of training; lazy and in-memory training give the same
weights bit for bit, a resumed lazy run continues exactly, and a file that breaks mid-training is named."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tempoflow.config import load_config
from tempoflow.data import reads_lazily
from tempoflow.data.folder import FolderConfig, open_folder
from tempoflow.data.io import write_video
from tempoflow.data.rows import TensorRows
from tempoflow.errors import ConfigError, DataError
from tempoflow.runs import train
from tempoflow.train.loader import RowLoader, batch_indices

from .conftest import TINY

CLIPS = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """12 short captioned clips, each a different grey level (so a wrong row changes the weights)."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(CLIPS):
        level = torch.full((4, 3, 16, 16), (i + 1) / (CLIPS + 1))
        write_video(root / f"c{i:02d}.mp4", level, fps=8.0)
        (root / f"c{i:02d}.txt").write_text(["a red circle moves left", "a blue square moves up"][i % 2])
    return root


def folder_args(folder: Path, *more: str) -> list[str]:
    return [*TINY, "data.name=folder", f"data.folder.path={folder}", "data.folder.num_frames=4",
            "data.folder.resolution=16", "data.folder.test_fraction=0", "train.batch_size=2", *more]


@pytest.fixture
def decode_log(tmp_path, monkeypatch) -> Path:
    """Every clip decode leaves a file named after the clip in this folder, from any process (a
    DataLoader worker is a forked process: a counter in memory would not come back)."""
    import tempoflow.data.folder as folder_module

    log = tmp_path / "decoded"
    log.mkdir()
    read_clip = folder_module.read_clip

    def logged(path, *args, **kwargs):
        (log / f"{Path(path).stem}.{os.getpid()}.{uuid.uuid4().hex}").touch()
        return read_clip(path, *args, **kwargs)

    monkeypatch.setattr(folder_module, "read_clip", logged)
    return log


def decoded(log: Path) -> list[str]:
    return sorted(p.name.split(".")[0] for p in log.iterdir())


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / f"checkpoints/step_{step:08d}/model.safetensors"))


def test_lazy_training_decodes_only_the_drawn_clips_and_equals_in_memory(tmp_path, folder, decode_log):
    """Reference: the rows ``batch_indices`` draws for 2 steps of batch 2 from the run's seed (4 of 12 clips),
    and the weights of the same run with every clip decoded up front (data.loading=memory)."""
    gen = torch.Generator().manual_seed(0)  # train.seed 0: the batch stream is seeded with seed * 1000
    drawn = [f"c{int(i):02d}" for _ in range(2) for i in batch_indices(gen, CLIPS, 2, 0, 1)]
    assert len(set(drawn)) < CLIPS
    eager = tmp_path / "eager"
    train(load_config(None, folder_args(folder, "train.steps=2", "data.loading=memory", f"out_dir={eager}")))
    assert len(decoded(decode_log)) == CLIPS  # up front: all of them
    for workers in (0, 2):
        for p in decode_log.iterdir():
            p.unlink()
        run = tmp_path / f"lazy{workers}"
        train(load_config(None, folder_args(folder, "train.steps=2", f"data.num_workers={workers}", f"out_dir={run}")))
        assert decoded(decode_log) == sorted(drawn), workers  # each drawn row once, nothing else
        a, b = weights(eager, 2), weights(run, 2)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), workers


def test_a_lazy_run_resumed_halfway_ends_bit_identical(tmp_path, folder):
    straight, half = tmp_path / "straight", tmp_path / "half"
    train(load_config(None, folder_args(folder, "train.steps=4", f"out_dir={straight}")))
    train(load_config(None, folder_args(folder, "train.steps=4", f"out_dir={half}")), until=2)
    train(load_config(None, folder_args(folder, "train.steps=4", f"out_dir={half}", "data.num_workers=0")),
          resume=True)  # how rows are read may change on resume
    a, b = weights(straight, 4), weights(half, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_clip_that_breaks_mid_training_is_named_in_one_line(tmp_path, folder):
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in folder.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    for p in broken.glob("*.mp4"):  # listing checks only that files exist: each is named when first drawn
        p.write_bytes(b"not a video")
    for workers in (0, 2):
        with pytest.raises(DataError, match=r"^cannot read video .*c\d\d\.mp4: [^\n]*$"):
            train(load_config(None, folder_args(broken, "train.steps=2", f"data.num_workers={workers}",
                                                f"out_dir={tmp_path / f'run{workers}'}")))


def test_a_missing_file_is_named_before_training(tmp_path, folder):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,text\n{folder / 'c00.mp4'},a\n{tmp_path / 'gone.mp4'},b\n")
    with pytest.raises(DataError, match="video file not found: .*gone.mp4"):
        open_folder(FolderConfig(path=str(manifest), test_fraction=0.0), "train")


def test_the_loader_serves_each_process_its_own_rows_in_the_trainers_order():
    """Reference: ``batch_indices`` from the same generator state; two processes' rows are disjoint slices."""
    videos = torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1, 1)
    for workers in (0, 2):
        served = []
        for rank in range(2):
            gen = torch.Generator().manual_seed(3)
            loader = RowLoader(TensorRows(videos), gen, 4, rank, 2, steps=3, start=0, num_workers=workers)
            ahead = torch.Generator().manual_seed(3)
            for _ in range(3):
                idx = batch_indices(ahead, 50, 4, rank, 2)
                served.append(loader.next(idx).flatten().long())
                assert torch.equal(served[-1], idx)  # row i holds the value i
            assert gen.get_state().equal(torch.Generator().manual_seed(3).get_state())  # the trainer's untouched
        one = batch_indices(torch.Generator().manual_seed(3), 50, 8, 0, 1)
        assert torch.equal(torch.cat([served[0], served[3]]), one)


def test_loading_settings():
    base = [*TINY]
    assert not reads_lazily(load_config(None, base).data)  # built-in data: in memory
    assert reads_lazily(load_config(None, [*base, "data.name=folder", "data.folder.path=x"]).data)
    assert reads_lazily(load_config(None, [*base, "data.latent_cache=c"]).data)
    assert not reads_lazily(load_config(None, [*base, "data.latent_cache=c", "data.loading=memory"]).data)
    with pytest.raises(ConfigError, match="data.loading=lazy reads a folder"):
        reads_lazily(load_config(None, [*base, "data.loading=lazy"]).data)
    with pytest.raises(ConfigError, match="data.loading must be one of"):
        load_config(None, [*base, "data.loading=stream"])
    with pytest.raises(ConfigError, match="data.num_workers must be >= 0"):
        load_config(None, [*base, "data.num_workers=-1"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The TINY shapes' training split in pixel latents, in shards of 10 videos."""
    from tempoflow.data import load_dataset
    from tempoflow.data.latent_cache import encode_dataset
    from tempoflow.runs import build_codec, data_dict

    out = tmp_path_factory.mktemp("cache")
    cfg = load_config(None, TINY)
    encode_dataset(build_codec("pixel"), {"train": load_dataset(cfg.data, "train")}, data_dict(cfg.data), out,
                   shard_size=10)
    return out


def test_a_latent_cache_is_read_row_by_row_from_its_shards(tmp_path, cache):
    """Reference: the split read whole (load_latents). Reading a row opens only its shard; a shard damaged
    after the split was opened is named when a row of it is read."""
    import shutil

    from tempoflow.data.latent_cache import load_latents, open_latents
    from tempoflow.runs import build_codec, data_dict

    cfg, codec = load_config(None, TINY), build_codec("pixel")
    whole = load_latents(cache, codec, data_dict(cfg.data), "train")
    copy = shutil.copytree(cache, tmp_path / "cache")
    rows = open_latents(copy, codec, data_dict(cfg.data), "train")
    assert len(rows) == len(whole.latents) > 20 and rows.captions == whole.captions
    assert torch.equal(rows[15], whole.latents[15]) and list(rows._open) == [1]  # row 15 lies in shard 1
    assert all(torch.equal(rows[i], whole.latents[i]) for i in range(len(rows)))
    (copy / "train-00001.safetensors").write_bytes(b"damaged after it was opened")
    rows._open.clear()  # as a worker that opens it now
    with pytest.raises(DataError, match=r"^latent cache shard .*train-00001\.safetensors is missing or corrupt: [^\n]*$"):
        rows[15]
    with pytest.raises(DataError, match="train-00001.safetensors is missing or corrupt"):
        open_latents(copy, codec, data_dict(cfg.data), "train")  # and checked before a run trains


def test_training_from_a_latent_cache_lazily_equals_in_memory(tmp_path, cache):
    runs = {}
    for loading in ("memory", "lazy"):
        runs[loading] = tmp_path / loading
        train(load_config(None, [*TINY, f"data.latent_cache={cache}", f"data.loading={loading}", "train.steps=2",
                                 f"out_dir={runs[loading]}"]))
    a, b = weights(runs["memory"], 2), weights(runs["lazy"], 2)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_sigterm_to_the_whole_job_still_saves_and_stops_in_one_line(tmp_path, folder):
    """A cluster's SIGTERM (a terminal's Ctrl-C too) reaches the DataLoader workers as well: they leave it
    to the training process, which saves the current step and exits 128 + 15 with its one line (a killed
    worker used to end training with DataLoader's traceback instead)."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "tempoflow.cli", "train", "demo",
            *folder_args(folder, "train.steps=400", "train.log_every=1", "train.checkpoint_every=1000"),
            f"out_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a job's
    start = time.time()
    while not (run / "log.jsonl").exists() or not (run / "log.jsonl").read_text():
        assert proc.poll() is None and time.time() - start < 60, "training did not start"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its workers
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("tempoflow:")]
    assert len(lines) == 1 and "stopped by SIGTERM at step" in lines[0] and "Traceback" not in err, err[-2000:]


def test_a_broken_clip_with_workers_exits_with_one_line(tmp_path, folder):
    """The process exits (it used to hang at exit, joining DataLoader workers that ignore SIGTERM) with
    the CLI's one line and status 2."""
    import subprocess
    import sys

    broken = tmp_path / "broken"
    broken.mkdir()
    for p in folder.iterdir():
        (broken / p.name).write_bytes(p.read_bytes() if p.suffix != ".mp4" or p.name != "c03.mp4" else b"x" * 300)
    args = [sys.executable, "-m", "tempoflow.cli", "train", "demo",
            *folder_args(broken, "train.steps=40", "data.num_workers=2"), f"out_dir={tmp_path / 'run'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("tempoflow:")]
    assert result.returncode == 2 and len(lines) == 1 and "c03.mp4" in lines[0], result.stderr[-2000:]


def test_resuming_on_changed_files_is_refused(tmp_path, folder):
    """A folder's videos are pinned like a codec: resuming after files were removed is one line, not a
    silent run on another training set."""
    from tempoflow.errors import ConfigError

    mine = tmp_path / "mine"
    shutil.copytree(folder, mine)
    cfg = load_config(None, folder_args(mine, "train.steps=4", f"out_dir={tmp_path / 'run'}"))
    train(cfg, until=2)
    for p in sorted(mine.glob("c0[0-3].*")):
        p.unlink()
    with pytest.raises(ConfigError, match=r"training videos of the run .* changed since it started \(12 then, 8 now"):
        train(cfg, resume=True)
