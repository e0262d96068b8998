"""Nothing a run made is lost (issue 19): checkpoints are committed only finite and only whole, one run
per folder, and a kill, SIGTERM or Ctrl-C at any point leaves ``latest`` naming a loadable checkpoint
from which ``--resume`` ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.errors import CheckpointError, ConfigError, TrainingError
from tempoflow.runs import load_run, make_trainer, train
from tempoflow.train import checkpoint as checkpoint_module
from tempoflow.train.checkpoint import (
    all_finite,
    commit_checkpoint,
    read_checkpoint,
    recover_checkpoints,
    staging_dir,
)
from tempoflow.train.run_folder import RunLock, run_files
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent


def _finite_on_disk(ckpt: Path) -> bool:
    return all(all_finite(load_file(str(ckpt / name))) for name in ("model.safetensors", "ema.safetensors"))


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return {**load_file(str(ckpt / "model.safetensors")),
            **{f"ema.{k}": v for k, v in load_file(str(ckpt / "ema.safetensors")).items()}}


def _loadable(run: Path) -> Path:
    """``latest``'s checkpoint, fully read: every file against its SHA-256 and the weights loaded."""
    ckpt = read_checkpoint(run)
    ckpt.verify()
    ckpt.tensors("model.safetensors")
    ckpt.tensors("ema.safetensors")
    return ckpt.path


# ------------------------------------------------------------------------------------------------
# 1. Only finite checkpoints; the stop names the newest finite one


def test_a_diverging_run_writes_no_non_finite_checkpoint_and_names_a_finite_one(tiny_cfg):
    cfg = tiny_cfg("train.lr=1e4", "train.steps=30", "train.checkpoint_every=1", "train.log_every=1",
                   "train.warmup_steps=0")  # the weights go non-finite at step 9, the loss stays finite
    with pytest.raises(TrainingError, match="non-finite") as err:
        train(cfg)
    written = sorted((Path(cfg.out_dir) / "checkpoints").glob("step_*"))
    assert all(_finite_on_disk(p) for p in written)  # nothing non-finite was committed
    named = str(err.value).split("Last good checkpoint: ")[1].split(" (")[0]
    assert written and named == str(written[-1]) and _loadable(Path(cfg.out_dir)) == written[-1]


def test_after_a_resume_the_stop_still_names_the_checkpoint_before_it(tiny_cfg):
    cfg = tiny_cfg("train.steps=6", "train.checkpoint_every=2")
    train(cfg, until=2)
    trainer = make_trainer(cfg, resume=True)

    def poison(step: int) -> bool:  # the weights go NaN after the first resumed step
        with torch.no_grad():
            next(trainer.unwrapped.parameters()).fill_(math.nan)
        return False

    with pytest.raises(TrainingError, match=r"became non-finite .* Last good checkpoint: .*step_00000002"):
        trainer.fit(resume=True, callback=poison)
    assert sorted(p.name for p in (Path(cfg.out_dir) / "checkpoints").glob("step_*")) == ["step_00000002"]


def test_commit_refuses_non_finite_weights(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = math.inf
    with pytest.raises(TrainingError, match="not finite"):
        commit_checkpoint(tmp_path, 1, model, None, {}, {})
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# 2. One run per folder


def test_a_second_run_into_a_locked_folder_stops_with_one_line(tiny_cfg, capsys):
    cfg = tiny_cfg("train.steps=2")
    with RunLock(cfg.out_dir):  # as a running `tempoflow train` holds it
        assert main(["train", "demo", *TINY, f"out_dir={cfg.out_dir}", "train.steps=2"]) == 2
        err = capsys.readouterr().err
        assert "is in use by another training run (pid" in err and err.count("\n") == 1
        with pytest.raises(ConfigError, match="in use"):
            train(cfg, resume=True)
    assert not run_files(Path(cfg.out_dir))  # the refused runs wrote nothing
    assert train(cfg).step == 2  # the lock went with its holder


def test_two_processes_training_into_one_folder_one_refused(tmp_path):
    args = [sys.executable, "-m", "tempoflow.cli", "train", "demo", *TINY, f"out_dir={tmp_path / 'run'}",
            "train.steps=1000000", "train.checkpoint_every=1000000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "run" / "log.jsonl").exists():  # training: the lock is held
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.05)
        second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                                check=False)
        assert first.poll() is None  # still training while the second was refused
    finally:
        first.send_signal(signal.SIGTERM)  # preempted: saves its step and stops
        _, err = first.communicate(timeout=120)
    assert second.returncode == 2 and "is in use by another training run (pid" in second.stderr, second.stderr
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    steps = [p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")]
    assert len(steps) == 1 and _loadable(tmp_path / "run").name == steps[0]  # the first run's, intact


@pytest.mark.parametrize("left", ["latest removed", "only log.jsonl", "only config.yaml", "only .tmp_step"])
def test_a_folder_holding_any_run_is_recognised(tiny_cfg, left):
    cfg = tiny_cfg("train.steps=2", "train.checkpoint_every=1")
    run = Path(cfg.out_dir)
    train(cfg)
    (run / "checkpoints" / "latest").unlink()
    if left != "latest removed":  # the folder holds that one thing and nothing else
        kept = {"only log.jsonl": "log.jsonl", "only config.yaml": "config.yaml"}.get(left)
        text = (run / kept).read_text() if kept else None
        shutil.rmtree(run)
        if kept:
            run.mkdir()
            (run / kept).write_text(text)
        else:
            (run / "checkpoints" / ".tmp_step_00000003").mkdir(parents=True)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before
    if left == "latest removed":  # --resume rebuilds the pointer from the step folders
        with pytest.warns(UserWarning, match="latest naming the newest checkpoint, step_00000002"):
            assert train(tiny_cfg("train.steps=3", "train.checkpoint_every=1"), resume=True).step == 3
    else:
        with pytest.raises(CheckpointError, match="has no checkpoint yet"), warnings.catch_warnings(record=True):
            train(cfg, resume=True)  # (a left staging folder is removed, with a warning)


# ------------------------------------------------------------------------------------------------
# 3. Saves that survive any kill


def test_resuming_a_finished_run_writes_nothing(tiny_cfg):
    cfg = tiny_cfg("train.steps=2")
    done = train(cfg)
    before = {p: p.stat().st_mtime_ns for p in done.checkpoint.rglob("*")}
    again = train(cfg, resume=True)
    assert again.checkpoint == done.checkpoint
    assert {p: p.stat().st_mtime_ns for p in done.checkpoint.rglob("*")} == before


def test_recover_tidies_what_a_kill_leaves(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in (1, 2):
        staging_dir(tmp_path, step).mkdir(parents=True, exist_ok=True)
        commit_checkpoint(tmp_path, step, model, None, {}, {})
    # killed between the two renames of re-committing step 2 (latest named step 1 then), and mid-staging
    os.replace(tmp_path / "step_00000002", tmp_path / ".old_step_00000002")
    (tmp_path / "latest").write_text("step_00000001")
    staging_dir(tmp_path, 3).mkdir()
    done = recover_checkpoints(tmp_path)
    assert done == ["restored step_00000002 from .old_step_00000002", "removed the unfinished .tmp_step_00000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000001", "step_00000002"]
    (tmp_path / "latest").unlink()
    assert recover_checkpoints(tmp_path) == [f"wrote {tmp_path / 'latest'} naming the newest checkpoint, step_00000002"]


def _commit_then_die(root: str, step: int, die_at: int) -> None:
    """Child process: commit a checkpoint, dying like SIGKILL (``os._exit``, no clean-up) at the
    ``die_at``-th filesystem operation of the commit."""
    calls = [0]

    def dying(fn):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == die_at:
                os._exit(9)
            return fn(*args, **kwargs)
        return wrapped

    for name in ("save_file", "write_text_atomic"):
        setattr(checkpoint_module, name, dying(getattr(checkpoint_module, name)))
    checkpoint_module.os.replace = dying(os.replace)
    checkpoint_module.shutil.rmtree = dying(checkpoint_module.shutil.rmtree)
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(float(step))
    staging_dir(Path(root), step).mkdir(parents=True, exist_ok=True)
    commit_checkpoint(Path(root), step, model, None, {}, {"fps": 1.0})
    os._exit(0)


@pytest.mark.parametrize("replacing", [False, True], ids=["new step", "over an orphan step"])
def test_a_kill_at_every_point_of_a_commit_leaves_latest_loadable(tmp_path, replacing):
    """Exhaustive: die at operation k of ``commit_checkpoint`` for every k until one commit finishes.
    ``latest`` names a complete checkpoint after every death (step 1 before the new pointer, step 2
    after), and the next start (``recover_checkpoints``) leaves no staging folder behind."""
    ctx = multiprocessing.get_context("fork")
    k, finished = 0, False
    while not finished:
        k += 1
        root = tmp_path / f"k{k}"
        root.mkdir()
        commit_checkpoint(root, 1, torch.nn.Linear(2, 2), None, {}, {"fps": 1.0})
        if replacing:  # a step folder `latest` does not name: left by a run resumed from an earlier step
            commit_checkpoint(root, 2, torch.nn.Linear(2, 2), None, {}, {"fps": 1.0})
            (root / "latest").write_text("step_00000001")
        child = ctx.Process(target=_commit_then_die, args=(str(root), 2, k))
        child.start()
        child.join(30)
        finished = child.exitcode == 0
        assert child.exitcode in (0, 9), child.exitcode
        ckpt = read_checkpoint(root)
        ckpt.verify()
        assert ckpt.path.name in ("step_00000001", "step_00000002")
        if finished:
            assert ckpt.path.name == "step_00000002" and float(ckpt.tensors("model.safetensors")["weight"][0, 0]) == 2
        recover_checkpoints(root)
        assert not list(root.glob(".*_step_*")) and read_checkpoint(root).path == ckpt.path
    assert k >= 5  # the commit has that many steps to die in: the loop did test them


def _cli_train(run: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "tempoflow.cli", "train", "demo", *TINY, f"out_dir={run}", *extra]
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


RANDOM_KILL_RUN = ("train.steps=40", "train.checkpoint_every=1", "train.log_every=5")


def _kill_at_random_points(tmp_path: Path, kills: int, seed: int) -> None:
    """SIGKILL ``kills`` training processes at random times once checkpoints are being written; after
    each, ``latest`` names a loadable checkpoint; ``--resume`` then ends bit-identical to a straight run."""
    rng = random.Random(seed)
    straight = tmp_path / "straight"
    assert _cli_train(straight, *RANDOM_KILL_RUN).wait(120) == 0
    run = tmp_path / "killed"
    resume: tuple[str, ...] = ()
    latest = run / "checkpoints" / "latest"
    killed = 0
    for _ in range(kills):
        before = latest.read_text() if latest.exists() else None
        proc = _cli_train(run, *RANDOM_KILL_RUN, *resume)
        start = time.time()
        while proc.poll() is None and (latest.read_text() if latest.exists() else None) == before:
            assert time.time() - start < 60, "no checkpoint written"
            time.sleep(0.005)  # until this process writes checkpoints: kills then land in and around saves
        time.sleep(rng.uniform(0, 0.25))
        killed += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        _loadable(run)
        resume = ("--resume",)
    assert killed >= kills // 2  # most kills hit a training process (not one that had finished)
    finish = _cli_train(run, *RANDOM_KILL_RUN, "--resume")
    assert finish.wait(120) == 0, finish.stderr.read()[-2000:]
    a, b = _weights(straight / "checkpoints" / "step_00000040"), _weights(_loadable(run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((run / "checkpoints").glob(".*_step_*"))


def test_random_sigkills_during_training_lose_nothing(tmp_path):
    _kill_at_random_points(tmp_path, kills=3, seed=0)


@pytest.mark.slow
def test_many_random_sigkills_during_training_lose_nothing(tmp_path):
    _kill_at_random_points(tmp_path, kills=25, seed=1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_the_current_step_and_resume_exactly(tmp_path, signum):
    run = tmp_path / "run"
    opts = ("train.steps=400", "train.checkpoint_every=1000", "train.log_every=1")
    proc = _cli_train(run, *opts)
    start = time.time()
    while not (run / "log.jsonl").exists() or not (run / "log.jsonl").read_text():
        assert proc.poll() is None and time.time() - start < 60, "training did not start"
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("tempoflow:")]
    assert len(lines) == 1 and f"stopped by {signal.Signals(signum).name} at step" in lines[0], err[-2000:]
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert 0 < step < 400 and _loadable(run).name == f"step_{step:08d}"
    # ...and training on from it is training straight through
    short = ("train.steps=400", "train.checkpoint_every=1000", "train.log_every=1")
    assert main(["train", "demo", *TINY, f"out_dir={run}", *short, "--resume", "--until", str(step + 2)]) == 0
    straight = tmp_path / "straight"
    assert main(["train", "demo", *TINY, f"out_dir={straight}", *short, "--until", str(step + 2)]) == 0
    a, b = _weights(_loadable(straight)), _weights(_loadable(run))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("error", ["OSError", "SafetensorError"])
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_one(tiny_cfg, monkeypatch, capsys, error):
    cfg = tiny_cfg("train.steps=4", "train.checkpoint_every=2")
    opts = ["train", "demo", *TINY, f"out_dir={cfg.out_dir}", "train.steps=4", "train.checkpoint_every=2"]
    assert main([*opts, "--until", "2"]) == 0
    capsys.readouterr()
    real = checkpoint_module.save_file

    def full(tensors, path, *args, **kwargs):
        if "step_00000004" in str(path):  # safetensors reports ENOSPC as its own error
            raise OSError(28, "No space left on device") if error == "OSError" else \
                SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    assert main([*opts, "--resume"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tempoflow:")]
    assert len(err) == 1 and "No space left on device" in err[0] and "Last good checkpoint:" in err[0]
    assert err[0].endswith("step_00000002")
    ckpts = Path(cfg.out_dir) / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_00000002"]  # no staging folder left
    _, _, ckpt = load_run(cfg.out_dir, device="cpu")
    assert ckpt.step == 2


@pytest.mark.parametrize("where", ["below a file", "read-only"])
def test_an_unwritable_out_dir_is_one_line(tmp_path, capsys, monkeypatch, where):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    if where == "read-only":  # simulated: CI runs as root, which writes into read-only folders
        out = tmp_path / "ro" / "run"

        def refuse(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["train", "demo", *TINY, f"out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert f"out_dir {out} cannot be written" in err and err.count("\n") == 1


def test_a_refused_run_writes_nothing_into_the_holders_folder(tmp_path):
    """A refused run writes no config.yaml over the holder's (the lock comes before anything is written)."""
    cfg = load_config(None, [*TINY, f"out_dir={tmp_path / 'run'}"])
    with RunLock(cfg.out_dir):
        (tmp_path / "run" / "config.yaml").write_text("the holder's")
        with pytest.raises(ConfigError):
            train(cfg)
        assert (tmp_path / "run" / "config.yaml").read_text() == "the holder's"


def test_writing_below_a_file_is_one_line(tiny_cfg, capsys):
    """An environment fault outside training (here: an output path below a file) is the CLI's one line."""
    cfg = tiny_cfg("train.steps=2")
    assert main(["train", "demo", *TINY, f"out_dir={cfg.out_dir}", "train.steps=2"]) == 0
    capsys.readouterr()
    below = Path(cfg.out_dir) / "config.yaml" / "x.mp4"
    assert main(["sample", cfg.out_dir, "--prompt", "a red circle moves left", "--out", str(below)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tempoflow: error: ") and "\n" not in err and "config.yaml" in err, err
