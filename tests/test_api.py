"""The public Python API (``tempoflow.load``, ``Pipeline``): the README's "Use from Python" code, run
as written, and what a saved pipeline carries."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tempoflow
from tempoflow.cli import main
from tempoflow.errors import ConfigError

from .conftest import TINY

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_python_api() -> str:
    """The first ```python block of the README's "Use from Python" section."""
    section = README.read_text().split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture
def demo_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "demo", *TINY, "out_dir=runs/demo"]) == 0
    return tmp_path


def test_readme_python_api_runs_as_written(demo_run):
    code = readme_python_api()
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    video = namespace["video"]
    assert video.ndim == 5 and video.shape[0] == 1 and 0 <= float(video.min()) <= float(video.max()) <= 1
    assert (demo_run / "circle.mp4").is_file() and (demo_run / "circle_model" / "config.json").is_file()
    assert torch.equal(namespace["again"], video)  # the saved folder samples what the run sampled


def test_a_saved_pipeline_loads_in_another_process_without_the_run(demo_run):
    pipe = tempoflow.load("runs/demo", device="cpu")
    pipe.save("saved")
    import shutil

    shutil.rmtree("runs")  # the saved folder must not need the run it came from
    code = ("import tempoflow, torch; p = tempoflow.load('saved', device='cpu'); "
            "torch.save(p('a red circle moves left', seed=5), 'v.pt')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=demo_run)
    # Not bit-equal: the other process may split reductions over a different number of threads
    # (CI's did), which changes float rounding; a different seed or weights would differ by ~0.1.
    torch.testing.assert_close(torch.load(demo_run / "v.pt"), pipe("a red circle moves left", seed=5),
                               rtol=0, atol=1e-4)


def test_pipeline_settings_and_mistakes(demo_run):
    pipe = tempoflow.load("runs/demo", device="cpu", guidance=1.0)
    assert pipe.config.sample.guidance == 1.0 and "flow" in repr(pipe)
    two = pipe(["a red circle moves left", "a blue square moves up"], num=2, seed=1, steps=1)
    assert two.shape[0] == 4
    with pytest.raises(ConfigError, match="continuous-time"):
        pipe("a red circle moves left", fps=24)
    with pytest.raises(ConfigError, match="needs a prompt"):
        pipe()
    with pytest.raises(ConfigError, match="is not empty"):
        pipe.save("runs/demo")
    with pytest.raises(ConfigError, match="sample.steps must be >= 1"):
        pipe("a red circle moves left", steps=0)


def test_knobs_a_method_does_not_use_are_refused_not_ignored(demo_run):
    pipe = tempoflow.load("runs/demo", device="cpu", seed=7)
    assert torch.equal(pipe("a red circle moves left"), pipe("a red circle moves left", seed=7))  # the run's seed
    for bad in ({"num": 0}, {"frames": 0}, {"steps": 2.5}, {"prompt": 5}):
        with pytest.raises(ConfigError):
            pipe(**{"prompt": "a red circle moves left", **bad})
    pipe.method.sampling_knobs = ("guidance",)  # as a method that reads only guidance would declare
    with pytest.raises(ConfigError, match=r"does not use solver, steps when sampling \(its sampling settings: guidance"):
        pipe("a red circle moves left", steps=3, solver="euler")
    assert {"load", "Pipeline", "write_video"} <= set(dir(tempoflow))


def test_evaluating_a_saved_pipeline_writes_beside_it(demo_run):
    tempoflow.load("runs/demo", device="cpu").save("deep/x/pipe")
    assert main(["eval", "deep/x/pipe", "--device", "cpu", "eval.num_prompts=1"]) == 0
    assert (demo_run / "deep/x/pipe/eval/metrics.json").is_file() and not (demo_run / "deep/eval").exists()


def test_a_saved_trajectory_pipeline_rolls_out_without_the_runs_data(tmp_path, monkeypatch):
    """A lifting run on physics data: the saved folder carries its roll-out starts, so it samples after
    the simulation cache is gone (and from frames the caller hands in)."""
    import shutil

    from .test_method_contract import PHYSICS

    monkeypatch.chdir(tmp_path)
    assert main(["train", "sde_lifting", *PHYSICS, "method=lifting", "data.physics.cache_dir=cache",
                 "out_dir=run"]) == 0
    pipe = tempoflow.load("run", device="cpu")
    before = pipe(num=3, seed=2)
    pipe.save("saved")
    shutil.rmtree("cache")
    shutil.rmtree("run")
    saved = tempoflow.load("saved", device="cpu")
    assert torch.equal(saved(num=3, seed=2), before) and not (tmp_path / "cache").exists()
    starts = before[:, :1]
    assert saved(num=3, seed=2, initial=starts).shape == before.shape
    with pytest.raises(ConfigError, match="rolls out trajectories"):
        saved("a prompt")


def test_weights_ema_or_raw_and_a_missing_ema_is_refused_not_replaced(demo_run):
    """A checkpoint without ema.safetensors gave its raw weights with only a warning; now the raw weights
    are asked for by name (``weights="raw"``), and a saved pipeline gives only the weights it holds."""
    from safetensors.torch import load_file

    from tempoflow.errors import CheckpointError

    ckpt = demo_run / "runs/demo/checkpoints/step_00000004"
    ema, raw = tempoflow.load("runs/demo", device="cpu"), tempoflow.load("runs/demo", device="cpu", weights="raw")
    for pipe, file in ((ema, "ema.safetensors"), (raw, "model.safetensors")):
        saved = load_file(str(ckpt / file))
        assert all(torch.equal(pipe.method.state_dict()[k], v) for k, v in saved.items())
    assert not torch.equal(ema("a red circle moves left", seed=0), raw("a red circle moves left", seed=0))
    with pytest.raises(ConfigError, match=r"^weights must be 'ema' or 'raw' \(the trained weights\), got 'best'$"):
        tempoflow.load("runs/demo", weights="best")
    raw.save("raw_pipe")  # holds the raw weights, and says so
    assert torch.equal(tempoflow.load("raw_pipe", device="cpu", weights="raw")("a red circle moves left", seed=0),
                       raw("a red circle moves left", seed=0))
    with pytest.raises(CheckpointError, match=r"raw_pipe is a saved pipeline holding its run's raw weights only, "
                                              r"not the ema ones: pass --weights raw \(weights='raw' in tempoflow"):
        tempoflow.load("raw_pipe")
    (ckpt / "ema.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        tempoflow.load("runs/demo")
    assert str(err.value) == (f"{Path('runs/demo/checkpoints/step_00000004/ema.safetensors')} is missing: pass "
                              "--weights raw (weights='raw' in tempoflow.load) to use the trained weights in "
                              "model.safetensors")
    tempoflow.load("runs/demo", device="cpu", weights="raw")
