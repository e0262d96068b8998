"""Damaged run folders (issue 15, kinds C and D): every file a tiny run writes, truncated, emptied,
replaced by garbage or removed, gives one ``CheckpointError`` naming it (or is tolerated) on both
``--resume`` and loading for sample/eval; a flipped bit is caught by the recorded SHA-256; ``--resume``
refuses config changes that alter what is trained; and no file in ``state/`` can run code."""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.configio import save_yaml, to_dict
from tempoflow.errors import CheckpointError, ConfigError
from tempoflow.report.html import read_log
from tempoflow.resume import resume_conflicts
from tempoflow.runs import load_run, train
from tempoflow.train import trainer as trainer_module
from tempoflow.train.checkpoint import CHECKSUMS
from tests.conftest import TINY

RUN = ("train.steps=2", "train.checkpoint_every=1", "train.log_every=1")
LATEST = "checkpoints/step_00000002"  # the checkpoint `latest` names; step_00000001 is the earlier one
# Every file of a tiny run (test_the_lists_cover_every_file_a_run_writes keeps this complete) and what
# reading it does when it is damaged: "refused" = one CheckpointError naming it, "tolerated" = works.
#                      file                                     --resume     load (sample/eval)
FILES = {
    f"{LATEST}/config.json":                                 ("refused", "refused"),
    f"{LATEST}/model.safetensors":                           ("refused", "refused"),
    f"{LATEST}/ema.safetensors":                             ("refused", "refused"),
    f"{LATEST}/state/trainer.json":                          ("refused", "tolerated"),
    f"{LATEST}/state/optimizer.safetensors":                 ("refused", "tolerated"),
    f"{LATEST}/state/scheduler.safetensors":                 ("refused", "tolerated"),
    f"{LATEST}/state/rng_0.safetensors":                     ("refused", "tolerated"),
    "checkpoints/latest":                                    ("refused", "refused"),
    "log.jsonl":                    ("tolerated", "tolerated"),  # cut records dropped, with a warning
    "config.yaml":                  ("tolerated", "tolerated"),  # written afresh by every train
    "tb/*":                         ("tolerated", "tolerated"),  # TensorBoard's, never read back
    ".lock":                        ("tolerated", "tolerated"),  # only flock'ed; its text names the holder
}
DAMAGE = {
    "half": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: random.Random(len(data)).randbytes(max(len(data), 16)),
}


def _cfg(run: Path, *overrides: str):
    return load_config(None, [*TINY, *RUN, f"out_dir={run}", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny trained run (checkpoints at steps 1 and 2), shared by every test here: copy it first."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(_cfg(run))
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _file(run: Path, name: str) -> Path:
    return next(run.glob(name))


def _resume(run: Path, *overrides: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a dropped log line warns
        return train(_cfg(run, *overrides), resume=True)


def _load(run: Path):
    return load_run(run, device="cpu")


def _strip_checksums(run: Path) -> None:
    """Make the latest checkpoint look written before checksums: its readers alone must catch damage."""
    for config in run.glob("checkpoints/step_*/config.json"):
        data = json.loads(config.read_text())
        data["meta"].pop(CHECKSUMS)
        config.write_text(json.dumps(data))


def _expect(outcome: str, action, file: Path) -> None:
    if outcome == "tolerated":
        action()
        return
    with pytest.raises(CheckpointError) as err:
        action()
    message = str(err.value)
    assert str(file) in message and "\n" not in message, message


def test_the_lists_cover_every_file_a_run_writes(trained):
    files = {p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file()}
    earlier = {f for f in files if f.startswith("checkpoints/step_00000001/")}
    covered = {f for pattern in FILES for f in files if Path(f).match(pattern) or f == pattern}
    assert files - earlier == covered, files - earlier - covered
    assert all(any(True for _ in trained.glob(pattern)) for pattern in FILES)


@pytest.mark.parametrize("damage", [*DAMAGE, "missing"])
@pytest.mark.parametrize("name", FILES)
def test_a_damaged_file_is_named_in_one_line(run, name, damage):
    """With the recorded SHA-256 (a new run): resume and load refuse or tolerate, never a traceback."""
    file = _file(run, name)
    if damage == "missing":
        file.unlink()
    else:
        file.write_bytes(DAMAGE[damage](file.read_bytes()))
    on_resume, on_load = FILES[name]
    if name == "checkpoints/latest" and damage == "missing":  # what a kill before the pointer leaves
        with pytest.warns(UserWarning, match="latest is missing: using the newest checkpoint, step_00000002"):
            assert _load(run)[2].step == 2
        return
    _expect(on_load, lambda: _load(run), file)
    _expect(on_resume, lambda: _resume(run), file)


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("name", [n for n in FILES if n.startswith(LATEST)])
def test_readers_name_a_damaged_file_without_checksums(run, name, damage):
    """A checkpoint from before checksums: each file's own reader catches the damage (resume reads all)."""
    _strip_checksums(run)
    file = _file(run, name)
    file.write_bytes(DAMAGE[damage](file.read_bytes()))
    _expect("refused", lambda: _resume(run), file)


@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors", "state/optimizer.safetensors"])
def test_a_flipped_bit_is_caught_by_the_checksum(run, name):
    file = run / LATEST / name
    data = bytearray(file.read_bytes())
    data[len(data) - 100] ^= 0x10  # inside the tensor data: the file still parses
    file.write_bytes(bytes(data))
    load_file(str(file))  # ...so only the checksum can tell
    for action in (lambda: _resume(run), *([lambda: _load(run)] if "state" not in name else [])):
        with pytest.raises(CheckpointError, match="SHA-256") as err:
            action()
        assert str(file) in str(err.value)


def test_a_checkpoint_without_checksums_still_loads_and_resumes(run):
    _strip_checksums(run)
    _, cfg, ckpt = _load(run)
    assert CHECKSUMS not in ckpt.meta and cfg.train.steps == 2
    assert _resume(run, "train.steps=3").step == 3


# ------------------------------------------------------------------------------------------------
# --resume with another config


def test_resume_refuses_changes_to_what_is_trained_and_allows_the_rest(run):
    saved = to_dict(_cfg(run))
    changed = {
        "method": "vlfm", "model.dim": 64, "model.patch_hw": 2, "data.shapes.resolution": 32,
        "data.shapes.num_frames": 8, "data.name": "digits", "train.lr": 1e-3, "flow.codec": "autoencoder",
    }
    for key, value in changed.items():
        conflicts = resume_conflicts(saved, to_dict(_cfg(run, f"{key}={value}")))
        assert len(conflicts) == 1 and conflicts[0].startswith(f"{key} "), (key, conflicts)
    allowed = ("train.steps=10", "train.log_every=5", "train.checkpoint_every=7", "eval.num_prompts=4",
               "sample.steps=8", "sample.guidance=3", "device=auto", "train.cpu_threads=0")
    assert resume_conflicts(saved, to_dict(_cfg(run, *allowed))) == []
    with pytest.raises(ConfigError, match=r"data\.shapes\.resolution 16 -> 32; model\.dim 32 -> 64"):
        _resume(run, "model.dim=64", "data.shapes.resolution=32")
    with pytest.raises(ConfigError, match="method 'flow' -> 'vlfm'"):
        _resume(run, "method=vlfm")
    assert _resume(run, "train.steps=3", "train.log_every=3", "eval.num_prompts=1").step == 3


# ------------------------------------------------------------------------------------------------
# No code from the run folder


class _Payload:
    """Unpickling this creates the marker file: what a malicious ``state/`` file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant(file: Path, marker: Path, zipped: bool) -> None:
    """Replace ``file`` by a bare pickle of the payload, or by a torch zip archive holding it."""
    buffer = io.BytesIO()
    torch.save({"state": _Payload(marker)}, buffer)
    file.write_bytes(buffer.getvalue() if zipped else pickle.dumps(_Payload(marker)))


@pytest.mark.parametrize("zipped", [False, True])
def test_the_payload_is_live(tmp_path, zipped):
    """Control: unpickled without ``weights_only``, the planted file does create its marker."""
    marker, file = tmp_path / "MARKER", tmp_path / "payload"
    _plant(file, marker, zipped)
    if zipped:
        torch.load(file, weights_only=False)
    else:
        pickle.loads(file.read_bytes())
    assert marker.exists()


STATE_FILES = ["trainer.json", "optimizer.safetensors", "scheduler.safetensors", "rng_0.safetensors",
               "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"]


@pytest.mark.parametrize("zipped", [False, True])
@pytest.mark.parametrize("checksums", [True, False])
@pytest.mark.parametrize("name", STATE_FILES)
def test_resume_never_runs_a_pickle_planted_in_state(run, tmp_path, name, checksums, zipped):
    if not checksums:
        _strip_checksums(run)
    marker = tmp_path / "MARKER"
    file = run / LATEST / "state" / name
    _plant(file, marker, zipped)
    try:
        _resume(run)  # ignored (custom_checkpoint_*.pkl are never read) ...
        assert name.startswith("custom_checkpoint")
    except CheckpointError as err:  # ... or refused by name
        assert str(file) in str(err)
    assert not marker.exists()


class _OldTrainState:
    """The state_dict the trainer registered with accelerate before (step and the two generators)."""

    def __init__(self, state):
        self.state = state

    def state_dict(self) -> dict:
        s = self.state
        return {"step": torch.tensor(s.step), "batch_gen": s.batch_gen.get_state(),
                "noise_gen": s.noise_gen.get_state()}


def _old_save_state(self, folder: Path) -> None:
    """How checkpoints were written before: accelerate's save_state with the EMA and TrainState registered."""
    self.accelerator._custom_objects = [self.ema, _OldTrainState(self.state)]
    if self.scheduler not in self.accelerator._schedulers:  # it went through accelerate's prepare then
        self.accelerator._schedulers.append(self.scheduler)
    self.accelerator.save_state(str(folder))


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Path:
    """A run stopped at step 2 of 4, written in accelerate's layout, without checksums."""
    run = tmp_path_factory.mktemp("legacy") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module.Trainer, "save_state", _old_save_state)
        train(_cfg(run, "train.steps=4"), until=2)
    _strip_checksums(run)
    return run


def test_a_checkpoint_in_accelerates_old_layout_resumes_exactly(legacy, tmp_path):
    assert {p.name for p in (legacy / LATEST / "state").iterdir()} >= {
        "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"}
    straight = train(_cfg(tmp_path / "straight", "train.steps=4"))
    resumed = _resume(Path(shutil.copytree(legacy, tmp_path / "resumed")), "train.steps=4")
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(straight.checkpoint / name)), load_file(str(resumed.checkpoint / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("name", ["optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_1.pkl"])
def test_a_damaged_old_layout_file_is_named_in_one_line(legacy, tmp_path, name, damage):
    run = Path(shutil.copytree(legacy, tmp_path / "run"))
    file = run / LATEST / "state" / name
    file.write_bytes(DAMAGE[damage](file.read_bytes()))
    _expect("refused", lambda: _resume(run, "train.steps=4"), file)


@pytest.mark.parametrize("zipped", [False, True])
@pytest.mark.parametrize("name", ["optimizer.bin", "scheduler.bin", "random_states_0.pkl", "model.safetensors",
                                  "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"])
def test_an_old_layout_checkpoint_never_runs_a_planted_pickle(legacy, tmp_path, name, zipped):
    run = Path(shutil.copytree(legacy, tmp_path / "run"))
    marker = tmp_path / "MARKER"
    file = run / LATEST / "state" / name
    _plant(file, marker, zipped)
    try:
        _resume(run, "train.steps=4")  # state/model.safetensors and the EMA pickle are never read ...
        assert name in ("model.safetensors", "custom_checkpoint_0.pkl")
    except CheckpointError as err:  # ... the others refuse the payload by name
        assert str(file) in str(err)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# The log and the command line


def test_a_cut_log_line_is_skipped_with_a_warning(run):
    log = run / "log.jsonl"
    log.write_bytes(log.read_bytes() + b'{"step": 3, "lo' + b"\n\xff\xfe garbage\n")
    with pytest.warns(UserWarning, match=r"log\.jsonl: skipped 2 unreadable line"):
        assert [r["step"] for r in read_log(log)] == [1, 2]
    with pytest.warns(UserWarning, match="skipped 2"):
        train(_cfg(run, "train.steps=3"), resume=True)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("command", ["train", "sample"])
def test_the_cli_prints_one_line_and_exits_2(run, tmp_path, capsys, command):
    config = tmp_path / "tiny.yaml"
    save_yaml(_cfg(run), config)
    if command == "train":
        file = run / LATEST / "state" / "optimizer.safetensors"
        argv = ["train", str(config), "--resume"]
    else:
        file = run / LATEST / "ema.safetensors"
        argv = ["sample", str(run), "--prompt", "a red circle moves left", "--out", str(tmp_path / "s.mp4")]
    file.write_bytes(file.read_bytes()[:100])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tempoflow: error: ") and "\n" not in err and str(file) in err, err


def test_resume_cannot_go_back_and_a_finished_run_says_so(run, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"is at step 2 already, past train.steps=1; pass train.steps=N with N > 2"):
        _resume(run, "train.steps=1")
    config = tmp_path / "tiny.yaml"
    save_yaml(_cfg(run), config)
    assert main(["train", str(config), "--resume"]) == 0
    assert "at step 2 already (train.steps=2): nothing to train" in capsys.readouterr().out


def test_a_refused_pickle_is_not_explained_with_how_to_run_it(legacy, tmp_path):
    run = Path(shutil.copytree(legacy, tmp_path / "run"))
    marker = tmp_path / "marker"
    file = run / LATEST / "state" / "optimizer.bin"
    _plant(file, marker, zipped=True)
    with pytest.raises(CheckpointError) as info:
        _resume(run, "train.steps=4")
    message = str(info.value)
    assert "never loads" in message and "weights_only" not in message and not marker.exists()
