"""Two training processes on the CPU (gloo), launched as users launch several GPUs (torchrun): one report,
one log with the learning-rate schedule of a single process, one set of checkpoints, and a run resumed
halfway that ends bit-identical to an uninterrupted one (issue 16)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tempoflow.config import load_config
from tempoflow.train.optimization import lr_lambda

from .conftest import TINY

ARGS = [*TINY, "train.steps=6", "train.warmup_steps=3", "train.log_every=2", "train.checkpoint_every=2"]


def launch(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m tempoflow.cli ARGV`` (a free port, gloo on the CPU)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tempoflow.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("ddp")
    result = launch("train", "demo", *ARGS, "out_dir=run", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run", result


def test_two_processes_report_once_and_keep_one_schedule(straight):
    run, result = straight
    assert result.stdout.count("trained 6 steps") == 1  # the main process alone reports
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    # the schedule of ONE process: after k optimizer steps the lr is lr·factor(k) (accelerate's wrapper used
    # to step it once per process, running warm-up and decay twice as fast)
    train = load_config("demo", ARGS).train
    factor = lr_lambda(train)
    for r in records:
        assert r["lr"] == pytest.approx(train.lr * factor(r["step"]), rel=1e-6), r
    folders = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert folders == ["latest", "step_00000002", "step_00000004", "step_00000006"]  # no stray temporaries


def test_a_two_process_run_resumed_halfway_ends_bit_identical(straight, tmp_path):
    run, _ = straight
    first = launch("train", "demo", *ARGS, "out_dir=half", "--until", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = launch("train", "demo", *ARGS, "out_dir=half", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(str(run / "checkpoints/step_00000006/ema.safetensors"))
    b = load_file(str(tmp_path / "half/checkpoints/step_00000006/ema.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    def losses(path: Path) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in map(json.loads, path.read_text().splitlines())]

    assert losses(run / "log.jsonl") == losses(tmp_path / "half/log.jsonl")  # the mean over both processes


def test_the_demo_under_a_launcher_evaluates_once(tmp_path):
    result = launch("demo", *ARGS, "train.steps=2", "eval.num_prompts=1", "out_dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("metrics: ") == 1 and (tmp_path / "run/eval/metrics.json").is_file()


def test_processes_take_disjoint_slices_of_the_batch_one_process_would_draw():
    """Reference: one process with twice the batch, from the same generator state."""
    from tempoflow.train.trainer import batch_indices

    def draw(rank: int, world: int, batch: int):
        return batch_indices(torch.Generator().manual_seed(7), 1000, batch, rank, world)

    one = draw(0, 1, 8)
    halves = [draw(r, 2, 4) for r in range(2)]
    assert torch.equal(torch.cat(halves), one)  # the union is the single process's batch, in order
    assert torch.equal(draw(0, 1, 4), torch.randint(1000, (4,), generator=torch.Generator().manual_seed(7)))


TOY = '''
import sys

import torch

from tempoflow.methods.base import Method
from tempoflow.train.trainer import TrainConfig, Trainer


class Toy(Method):
    """A noise-free loss, so two processes can equal one: regress each video's mean from its pixels."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(48, 1)

    def loss(self, batch, generator=None):
        x = batch["video"].flatten(1)
        return {"loss": (self.w(x).squeeze(1) - x.mean(1)).square().mean()}


torch.manual_seed(0)
videos = torch.rand(64, 1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
cfg = TrainConfig(steps=3, batch_size=int(sys.argv[2]), lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=3,
                  cpu_threads=1)
Trainer(Toy(), videos, None, cfg, sys.argv[1], {}, {"method": "toy", "video_shape": [1, 3, 4, 4], "fps": 8.0},
        "cpu").fit()
'''


def test_two_processes_train_as_one_with_twice_the_batch(tmp_path):
    """Reference: one process, batch 8. Two processes with batch 4 each average their gradients (DDP) over
    the two halves of that same batch, so after 3 AdamW steps (clipped) the weights agree to rounding."""
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), "one", "8"], cwd=tmp_path, env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), "two", "4"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    one = load_file(str(tmp_path / "one/checkpoints/step_00000003/model.safetensors"))
    two = load_file(str(tmp_path / "two/checkpoints/step_00000003/model.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6), key
    torch.manual_seed(0)
    start = torch.nn.Linear(48, 1).weight  # the script's initial weights (same seed)
    assert float((one["w.weight"] - start).abs().max()) > 1e-3  # it did train


def test_a_mistake_under_a_launcher_is_one_line_with_exit_status_2(tmp_path):
    """Every process meets the bad override; the first prints the CLI's line, none prints a traceback, and
    torchrun's failure summary (which it always prints, exiting 1) names the line and exit status 2."""
    result = launch("train", "demo", *ARGS, "train.stepz=3", "out_dir=run", cwd=tmp_path)
    line = "tempoflow: error: unknown config key 'train.stepz'"
    assert result.returncode != 0 and not (tmp_path / "run").exists()
    assert [s for s in result.stderr.splitlines() if s.startswith("tempoflow:")] == [
        next(s for s in result.stderr.splitlines() if s.startswith(line))]
    assert "tempoflow/cli.py" not in result.stderr and "tempoflow/config" not in result.stderr  # no traceback of ours
    root_cause = result.stderr.split("Root Cause")[1]
    assert "exitcode  : 2" in root_cause and f"traceback : {line}" in root_cause


def test_a_damaged_video_only_one_process_reads_is_named_once(tmp_path):
    """Lazy data: the second process alone draws the damaged clips (its slice of the first batch). It names
    the file; the first, whose gradient exchange then breaks, says so in one line instead of a traceback."""
    from tempoflow.data.io import write_video
    from tempoflow.train.trainer import batch_indices

    clips = tmp_path / "clips"
    for i in range(12):
        write_video(clips / f"c{i:02d}.mp4", torch.full((4, 3, 16, 16), (i + 1) / 13), fps=8.0)
    draw = batch_indices(torch.Generator().manual_seed(0), 12, 4, 0, 1).tolist()  # both processes' rows, step 1
    second = [i for i in draw[2:] if i not in draw[:2]]
    for i in second:
        (clips / f"c{i:02d}.mp4").write_bytes(b"damaged")
    result = launch("train", "demo", *ARGS, "train.steps=1", "train.batch_size=2", "data.name=folder",
                    "data.folder.path=clips", "data.folder.num_frames=4", "data.folder.test_fraction=0",
                    "data.folder.resolution=16", "out_dir=run", cwd=tmp_path)
    assert result.returncode != 0
    errors = re.findall(r"tempoflow: error: [^\n]*", result.stderr.split("Traceback")[0])  # before torchrun's
    damaged = "|".join(f"c{i:02d}" for i in second)
    assert re.fullmatch(rf"tempoflow: error: cannot read video clips/({damaged})\.mp4: .*", errors[0]), errors
    # the first process says why it stops, unless the launcher stopped it first
    assert [e.split(" (")[0] for e in errors[1:]] in ([], ["tempoflow: error: another process of this run stopped"])
    assert result.stderr.count("Traceback") == 1  # torchrun's own; none from a process


# ------------------------------------------------------------------------------------------------
# train.distributed=fsdp: FSDP2 on the CPU with gloo


def _tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    return {**load_file(str(ckpt / "model.safetensors")),
            **{f"ema.{k}": v for k, v in load_file(str(ckpt / "ema.safetensors")).items()}}


def test_fsdp_trains_as_ddp_writes_whole_checkpoints_and_resumes_exactly(straight, tmp_path):
    """Two sharded processes train what two replicas train (reduce-scatter sums in another order: equal to
    float rounding), write the same consolidated checkpoint (names and whole shapes), save the optimizer
    whole (one process could read it), and a sharded run resumed halfway ends bit-identical."""
    ddp, _ = straight
    fsdp = launch("train", "demo", *ARGS, "out_dir=fsdp", "train.distributed=fsdp", cwd=tmp_path)
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    a = _tensors(ddp / "checkpoints/step_00000006")
    b = _tensors(tmp_path / "fsdp/checkpoints/step_00000006")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    start = _tensors(ddp / "checkpoints/step_00000002")
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-3  # training moved the weights...
    for k in a:  # ...and both moved them alike
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    half = launch("train", "demo", *ARGS, "out_dir=half", "train.distributed=fsdp", "--until", "4", cwd=tmp_path)
    assert half.returncode == 0, half.stderr[-3000:]
    resumed = launch("train", "demo", *ARGS, "out_dir=half", "train.distributed=fsdp", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = _tensors(tmp_path / "half/checkpoints/step_00000006")
    assert all(torch.equal(b[k], c[k]) for k in b)
    from tempoflow.runs import load_run  # the sharded run's checkpoint samples like any other

    method, _, ckpt = load_run(tmp_path / "fsdp", device="cpu")
    assert ckpt.step == 6 and sum(p.numel() for p in method.parameters()) > 0


def test_resuming_with_another_number_of_processes_is_refused(straight, tmp_path, capsys):
    """train.batch_size is per process: one process resuming a two-process run would halve the global batch."""
    import shutil

    from tempoflow.cli import main

    run, _ = straight
    copy = shutil.copytree(run, tmp_path / "run")
    assert main(["train", "demo", *ARGS, f"out_dir={copy}", "train.steps=8", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "trained by 2 processes and is resumed by 1" in err and "torchrun --nproc_per_node 2" in err
