"""No silent fall-backs (issue 19 item 5), through the command line: each setting that used to be
accepted and quietly replaced — a GPU that is not there, fp16 on the CPU, a negative final learning
rate, an empty out_dir, --until 0, a zero-width MLP, missing EMA weights, a view scale of 0 — is one
``tempoflow: error:`` line and exit status 2; and ``eval`` names the weights file it loaded and its hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tempoflow.cli import main
from tempoflow.data import video_reader

from .conftest import TINY
from .test_vlfm import VLFM

PROMPT = "a red circle moves left"


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 and one line on stderr; that line without its prefix."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tempoflow: error: ") and "\n" not in err, err
    return err.removeprefix("tempoflow: error: ")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny trained flow run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("flow") / "run"
    assert main(["train", "demo", *TINY, f"out_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def vlfm_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vlfm") / "run"
    assert main(["train", "shapes_vlfm", *TINY, *VLFM, f"out_dir={out}"]) == 0
    return out


@pytest.mark.parametrize("args, message", [
    (["train.min_lr_ratio=-1"],
     "train.min_lr_ratio must be in [0, 1] (the final learning rate is lr × min_lr_ratio), got -1.0"),
    (["train.mixed_precision=fp16"],
     ("train.mixed_precision=fp16 needs a CUDA GPU but this run trains on the CPU (device=cpu), where accelerate "
      "would train in float32: use train.mixed_precision=no, or bf16 (bf16 autocast, which the CPU runs)")),
    (["device=cuda"], "device=cuda but torch sees no CUDA GPU"),
    (["out_dir="], "out_dir must name a folder for the run, got '' (an empty one would write into the current folder)"),
    (["model.mlp_ratio=0.01"],
     ("model.mlp_ratio 0.01 gives the MLP int(model.dim × mlp_ratio) = 0 units at model.dim 32: raise it to at "
      "least 0.03125")),
    (["--until", "0"], "--until must be a step >= 1 to stop at, got 0"),
])
def test_train_refuses_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # where an empty out_dir would have written
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, wherever this runs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    out = [] if "out_dir=" in args else ["out_dir=run"]
    assert message in _one_line_error(capsys, ["train", "demo", *TINY, *out, *args])
    assert not any(tmp_path.iterdir())


def test_an_out_dir_below_a_file_names_the_file(tmp_path, capsys):
    (tmp_path / "notes").write_text("a file")
    err = _one_line_error(capsys, ["train", "demo", *TINY, f"out_dir={tmp_path / 'notes' / 'run'}"])
    assert err == f"out_dir {tmp_path / 'notes' / 'run'} cannot be written: {tmp_path / 'notes'} is a file, not a " \
                  "folder; choose another out_dir"


@pytest.mark.parametrize("flag, value", [("--scale", "0"), ("--scale", "-4"), ("--num", "0")])
def test_sample_refuses_a_scale_or_count_below_one(run, tmp_path, capsys, flag, value):
    err = _one_line_error(capsys, ["sample", str(run), "--prompt", PROMPT, flag, value,
                                   "--out", str(tmp_path / "s.mp4")])
    assert err.startswith("--num and --scale must be >= 1") and value in err
    assert not (tmp_path / "s.mp4").exists()


def test_without_ema_weights_sample_and_eval_ask_for_weights_raw(run, tmp_path, capsys):
    """Field case: sampling a checkpoint without ema.safetensors used its raw weights with a warning."""
    run = Path(shutil.copytree(run, tmp_path / "run"))
    ema = run / "checkpoints" / "step_00000004" / "ema.safetensors"
    ema.unlink()
    expected = (f"{ema} is missing: pass --weights raw (weights='raw' in tempoflow.load) to use the trained "
                "weights in model.safetensors")
    video = tmp_path / "s.mp4"
    assert _one_line_error(capsys, ["sample", str(run), "--prompt", PROMPT, "--out", str(video)]) == expected
    assert _one_line_error(capsys, ["eval", str(run), "eval.num_prompts=1"]) == expected
    assert not video.exists() and not (run / "eval").exists()
    assert main(["sample", str(run), "--prompt", PROMPT, "--out", str(video), "--weights", "raw"]) == 0
    assert video.is_file()
    err = _one_line_error(capsys, ["sample", str(run), "--prompt", PROMPT, "--weights", "last"])
    assert err == "weights must be 'ema' or 'raw' (the trained weights), got 'last'"


@pytest.mark.parametrize("weights, file", [("ema", "ema.safetensors"), ("raw", "model.safetensors")])
def test_eval_records_the_weights_file_it_loaded_and_its_hash(run, tmp_path, weights, file):
    """metrics.json named model.safetensors' hash whatever was loaded; now the file loaded, by name."""
    out = tmp_path / "eval"
    assert main(["eval", str(run), "--out", str(out), "--weights", weights, "eval.num_prompts=1"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    recorded = json.loads((run / "checkpoints" / "step_00000004" / "config.json").read_text())["meta"]["sha256"]
    assert (record["weights"], record["weights_file"]) == (weights, file)
    assert record["checkpoint_sha256"] == recorded[file][:16] != recorded["model.safetensors" if weights == "ema"
                                                                          else "ema.safetensors"][:16]


def test_vlfm_frames_beyond_memory_are_refused_before_sampling(vlfm_run, tmp_path, capsys, monkeypatch):
    """--fps 1e6 --duration 8 asks for 8e6 frames; eval's time grid (eval.time_rate × fps over
    eval.time_extent × T) is checked the same way, before anything is sampled."""
    monkeypatch.setattr(video_reader, "available_memory", lambda: 64 * 2**30)  # the same on any machine
    err = _one_line_error(capsys, ["sample", str(vlfm_run), "--prompt", PROMPT, "--fps", "1e6", "--duration", "8",
                                   "--out", str(tmp_path / "s.mp4")])
    assert err == ("1 samples of 8000000 frames at 16x16 (x4 for viewing) needs 389.1 GiB, more than 80% of the "
                   "64.0 GiB of memory available: fewer samples, frames, a shorter duration, a lower fps or scale")
    err = _one_line_error(capsys, ["eval", str(vlfm_run), "--out", str(tmp_path / "ev"), "--config", "eval_vlfm",
                                   "eval.time_rate=1000000", "eval.time_extent=8", "eval.num_prompts=2",
                                   "sample.num_per_prompt=1"])
    assert err.startswith("scoring 1 samples at 32000000 times (eval.time_rate 1000000, eval.time_extent 8) at "
                          "16x16 needs ") and err.endswith("lower eval.time_rate or eval.time_extent")
    assert not (tmp_path / "ev" / "samples.mp4").exists()


def test_until_past_the_run_and_a_second_dataset_into_one_folder_are_refused(tmp_path, capsys):
    assert "--until 9 is past train.steps=4" in _one_line_error(
        capsys, ["train", "demo", *TINY, f"out_dir={tmp_path / 'run'}", "--until", "9"])
    assert not (tmp_path / "run").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("path,text\nmine.mp4,my own\n")
    message = _one_line_error(capsys, ["data", "render", "demo", *TINY, "--out", str(tmp_path / "data")])
    assert "already holds a dataset" in message
    assert (tmp_path / "data" / "manifest.csv").read_text() == "path,text\nmine.mp4,my own\n"


def test_a_blank_out_dir_is_named_as_blank(tmp_path, capsys):
    """`out_dir= ` (a blank) is the blank text, refused as an empty folder name (YAML alone reads it as null,
    which gave a type message)."""
    assert "out_dir must name a folder for the run, got ' '" in _one_line_error(capsys, ["train", "demo", "out_dir= "])
