"""Trainer: exact resume, atomic checkpoints, non-finite loss handling, EMA."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tempoflow.errors import CheckpointError, ConfigError, TrainingError
from tempoflow.runs import build_method, load_run, make_trainer, train
from tempoflow.train.checkpoint import read_checkpoint, resolve_checkpoint
from tempoflow.train.ema import EMA
from tempoflow.train.optimization import lr_lambda
from tempoflow.train.trainer import Trainer


def _weights(path):
    return load_file(str(path / "model.safetensors")), load_file(str(path / "ema.safetensors"))


def test_resume_is_exact(tiny_cfg, tmp_path):
    """N steps straight == N/2 steps, stop, resume, N/2 steps: identical weights and EMA on CPU."""
    straight = train(tiny_cfg("train.steps=6", "train.checkpoint_every=100", f"out_dir={tmp_path / 'a'}"))
    half = train(tiny_cfg("train.steps=6", "train.checkpoint_every=100", f"out_dir={tmp_path / 'b'}"), until=3)
    assert half.step == 3
    resumed = train(tiny_cfg("train.steps=6", "train.checkpoint_every=100", f"out_dir={tmp_path / 'b'}"),
                    resume=True)
    assert resumed.step == 6
    (wa, ea), (wb, eb) = _weights(straight.checkpoint), _weights(resumed.checkpoint)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
        assert torch.equal(ea[k], eb[k]), k
    # ...and training did change the weights, so the comparison is not vacuous.
    fresh = build_method(tiny_cfg()).state_dict()
    assert any(not torch.equal(fresh[k], wa[k]) for k in wa)


def test_log_after_resume_has_each_step_once_with_its_own_mean(tiny_cfg, tmp_path):
    """Field case 09: records past the resumed step (and a line cut short by a crash) are dropped, and
    the first record after a resume averages the steps actually run since the one before."""
    ref = train(tiny_cfg("train.steps=8", "train.log_every=1", "train.checkpoint_every=100",
                         f"out_dir={tmp_path / 'ref'}"))
    per_step = {r["step"]: r["loss"] for r in ref.log}
    opts = ("train.steps=8", "train.log_every=3", "train.checkpoint_every=4", f"out_dir={tmp_path / 'run'}")
    train(tiny_cfg(*opts), until=4)  # logs 3, checkpoints 4 (and 4, as it stops there)
    log = tmp_path / "run" / "log.jsonl"
    with open(log, "a") as f:  # what an interrupted run leaves: a record past the checkpoint, a cut line
        f.write(json.dumps({"step": 6, "loss": 123.0}) + "\n" + '{"step": 7, "lo')
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        train(tiny_cfg(*opts), resume=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 4, 6, 8]
    assert records[2]["loss"] == pytest.approx((per_step[5] + per_step[6]) / 2, rel=1e-5)
    assert records[3]["loss"] == pytest.approx((per_step[7] + per_step[8]) / 2, rel=1e-5)


def test_refuses_to_overwrite_and_needs_a_checkpoint_to_resume(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=2")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(cfg, resume=True)
    train(cfg)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg)


def test_checkpoints_are_complete_and_pointer_is_atomic(tiny_cfg):
    result = train(tiny_cfg("train.steps=4", "train.checkpoint_every=2"))
    root = result.checkpoint.parent
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step_00000002", "step_00000004"]
    assert not list(root.glob(".tmp*"))  # no staging folders left behind
    assert resolve_checkpoint(root.parent) == root / "step_00000004"
    ckpt = read_checkpoint(root.parent)
    assert ckpt.step == 4 and ckpt.config["method"] == "flow"
    log = [json.loads(line) for line in (root.parent / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and all(r["loss"] > 0 for r in log)
    method, cfg, _ = load_run(root.parent, device="cpu")
    assert cfg.train.steps == 4 and not method.training


def test_callback_sees_every_step_and_can_stop_training(tiny_cfg):
    """The time-to-quality benchmark's hook: called after each step; True stops there with a checkpoint
    and a log record, as the last step would."""
    trainer = make_trainer(tiny_cfg("train.steps=8", "train.checkpoint_every=4", "train.log_every=4"))
    seen = []
    result = trainer.fit(callback=lambda step: seen.append(step) or step == 3)
    assert seen == [1, 2, 3] and result.step == 3
    assert result.checkpoint.name == "step_00000003"
    log = [json.loads(line) for line in (result.checkpoint.parent.parent / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3]


def test_log_holds_the_methods_other_terms(tiny_cfg):
    """Besides the loss, a method's scalar terms (here the autoencoder's l1, l2, kl) are logged as their
    mean over the log window, like the loss: with one step per window they equal that step's terms."""
    result = train(tiny_cfg("method=autoencoder", "train.steps=2", "train.log_every=1"))
    log = [json.loads(line) for line in (result.checkpoint.parent.parent / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    for r in log:
        assert {"l1", "l2", "kl"} <= r.keys() and r["l1"] > 0 and r["l2"] > 0
        # default autoencoder: loss = (l1 + l2) + kl_weight · kl
        assert r["loss"] == pytest.approx(r["l1"] + r["l2"] + 1e-6 * r["kl"], rel=1e-5)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a tempoflow checkpoint"):
        read_checkpoint(tmp_path / "empty")


def test_non_finite_loss_stops_with_clear_message_and_keeps_last_good(tiny_cfg):
    cfg = tiny_cfg("train.steps=6", "train.checkpoint_every=2", "train.log_every=2")
    method = build_method(cfg)
    calls = {"n": 0}
    original = method.loss

    def poisoned(batch, generator=None):
        calls["n"] += 1
        out = original(batch, generator)
        if calls["n"] >= 3:  # step 3 goes bad, after the step-2 checkpoint
            out["loss"] = out["loss"] * float("nan")
        return out

    method.loss = poisoned
    from tempoflow.data import load_dataset

    data = load_dataset(cfg.data, "train")
    trainer = Trainer(method, data.videos, data.captions, cfg.train, cfg.out_dir, {"method": "flow"}, {}, "cpu")
    with pytest.raises(TrainingError, match="non-finite at or before step 4.*step_00000002"):
        trainer.fit()
    root = trainer.ckpt_dir
    assert (root / "latest").read_text() == "step_00000002"
    assert not (root / "step_00000004").exists()


def test_ema_is_a_moving_average():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, decay=0.9)
    before = {k: v.clone() for k, v in ema.averaged().items()}
    assert set(before) == {"weight", "bias"}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    for k, v in ema.averaged().items():
        # closed form: 0.9 * old + 0.1 * (old + 1) = old + 0.1
        assert torch.allclose(v, before[k] + 0.1)


def test_ema_skips_the_frozen_codec():
    net = torch.nn.Module()
    net.head, net.codec = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert set(EMA(net, decay=0.9).averaged()) == {"head.weight", "head.bias"}


def test_lr_schedule_warmup_then_cosine():
    from tempoflow.train.trainer import TrainConfig

    f = lr_lambda(TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)


def test_each_discriminator_is_clipped_on_its_own():
    # A generator gradient of norm 1000 and a discriminator gradient of norm 0.5, clip 1: clipped as one
    # vector the discriminator's would shrink 1000-fold; per group (clip_groups) it is left as it is.
    from torch import nn

    from tempoflow.methods.base import Method
    from tempoflow.nets.discriminator import LatentDiscriminator
    from tempoflow.train.optimization import clip_groups

    class Adversarial(Method):  # what a method with a discriminator declares: its players
        def __init__(self):
            super().__init__()
            self.gen, self.disc = nn.Linear(4, 4), LatentDiscriminator(4, 8)

        def players(self):
            return [self.disc]

        def __getitem__(self, name):
            return getattr(self, name)

    model = Adversarial()
    groups = clip_groups(model)
    disc_ids = {id(p) for p in model["disc"].parameters()}
    assert len(groups) == 2 and {id(p) for p in groups[0]} == disc_ids
    assert {id(p) for g in groups for p in g} == {id(p) for p in model.parameters()}
    for p in model["gen"].parameters():
        p.grad = torch.full_like(p, 1000.0 / math.sqrt(20))  # 20 generator weights: norm 1000
    disc_params = list(model["disc"].parameters())
    n = sum(p.numel() for p in disc_params)
    for p in disc_params:
        p.grad = torch.full_like(p, 0.5 / math.sqrt(n))  # norm 0.5
    for g in groups:
        torch.nn.utils.clip_grad_norm_(g, 1.0)
    disc_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in disc_params]))
    gen_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model["gen"].parameters()]))
    assert float(disc_norm) == pytest.approx(0.5, rel=1e-5)
    assert float(gen_norm) == pytest.approx(1.0, rel=1e-5)


def test_running_out_of_memory_is_one_line(tiny_cfg, monkeypatch):
    from tempoflow.errors import TrainingError
    from tempoflow.methods.flow import FlowMatching

    def allocate(self, batch, generator=None):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 256000000004 bytes")

    monkeypatch.setattr(FlowMatching, "loss", allocate)
    with pytest.raises(TrainingError, match=r"out of memory in training step 1 .*lower train.batch_size \(4\)"):
        train(tiny_cfg())


def _no_data(monkeypatch):
    """Loading the training data fails the test: a refusal must come before it."""
    import tempoflow.runs

    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded before the refusal")

    monkeypatch.setattr(tempoflow.runs, "load_dataset", refuse)


def test_fp16_and_a_missing_gpu_are_refused_not_run_on_the_cpu(tiny_cfg, tmp_path, monkeypatch):
    """accelerate ignores fp16 on the CPU (float32 training) and the trainer used to fall back to the CPU
    when no GPU was there: both are refused, by make_trainer before the data is loaded and by Trainer."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, wherever this runs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    method = build_method(tiny_cfg())
    videos = torch.rand(2, 4, 3, 16, 16)
    cases = [
        ({"device": "cpu", "mixed_precision": "fp16"},
         (r"^train.mixed_precision=fp16 needs a CUDA GPU but this run trains on the CPU \(device=cpu\), where "
          r"accelerate would train in float32: use train.mixed_precision=no, or bf16")),
        ({"device": "auto", "mixed_precision": "fp16"}, r"fp16 needs a CUDA GPU .*\(device=auto\)"),
        ({"device": "cuda", "mixed_precision": "auto"}, r"^device=cuda but torch sees no CUDA GPU"),
        ({"device": "cuda:1", "mixed_precision": "no"}, r"^device=cuda:1 but torch sees no CUDA GPU"),
    ]
    _no_data(monkeypatch)
    for case, message in cases:
        cfg = tiny_cfg(f"device={case['device']}", f"train.mixed_precision={case['mixed_precision']}")
        with pytest.raises(ConfigError, match=message):
            make_trainer(cfg)
        with pytest.raises(ConfigError, match=message):
            Trainer(method, videos, None, cfg.train, tmp_path / "t", {}, {}, device=case["device"])
    assert not (tmp_path / "run").exists() and not (tmp_path / "t").exists()


def test_until_below_one_is_refused(tiny_cfg, tmp_path):
    """Field case: --until 0 wrote an untrained step_00000000 checkpoint."""
    trainer = make_trainer(tiny_cfg())
    for until in (0, -2):
        with pytest.raises(ConfigError, match=rf"^until must be a step >= 1 to stop at, got {until}$"):
            trainer.fit(until=until)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("where", ["below a file", "read-only", "read-only (mocked)"])
def test_an_out_dir_that_cannot_be_written_is_one_line(tiny_cfg, tmp_path, monkeypatch, where):
    """Not an OSError traceback after the data is loaded: the folder that stops it is named first."""
    import os

    blocker = tmp_path / "blocker"
    if where == "below a file":
        blocker.write_text("a file")
        problem = f"{blocker} is a file, not a folder"
    else:
        blocker.mkdir()
        problem = f"{blocker} is read-only for this process"
        if where == "read-only":
            if os.geteuid() == 0:
                pytest.skip("root may write in a read-only folder; the mocked case covers the check")
            blocker.chmod(0o555)
        else:  # what os.access reports for a read-only folder or file system
            access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != blocker and access(path, mode))
    out = blocker / "runs" / "x"
    _no_data(monkeypatch)
    try:
        with pytest.raises(ConfigError, match=f"^out_dir {re.escape(str(out))} cannot be written: "
                                              f"{re.escape(problem)}; choose another out_dir$"):
            make_trainer(tiny_cfg(f"out_dir={out}"))
    finally:
        blocker.chmod(0o755) if blocker.is_dir() else None


def test_fsdp_shards_each_block_of_the_dit(tiny_cfg):
    """The units `train.distributed=fsdp` shards one by one: the DiT's blocks (outermost ModuleList
    elements with parameters), not their insides; the method itself is sharded last (tests/test_distributed)."""
    from tempoflow.train.sharding import shard_units

    method = build_method(tiny_cfg("model.depth=3"))
    units = shard_units(method)
    blocks = [m for m in method.modules() if type(m).__name__ == "DiTBlock"]
    assert len(blocks) == 3 and units == blocks


def test_fsdp_with_one_process_warns_and_trains_unsharded(tiny_cfg):
    with pytest.warns(UserWarning, match="nothing to shard"):
        result = train(tiny_cfg("train.distributed=fsdp", "train.steps=2"))
    assert result.step == 2
