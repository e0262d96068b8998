"""Where one training step of a config spends its time (default: the main job, the packaged ``demo`` config).

Times the trainer's own step parts over ``--steps`` steps after a warm-up: batch assembly (indexing,
caption lookup), forward (codec, text lookup, path sample, network, loss), backward, gradient
clipping, optimizer + scheduler, EMA. Then the same loop under ``torch.compile`` of the network
(``--compile``), reporting the compile time it costs. The share outside forward + backward +
optimizer is the overhead the time-to-quality issue asks to keep under 10 %.

    python benchmarks/step_profile.py                       # demo config, eager
    python benchmarks/step_profile.py --compile --json docs/results/step_profile_cpu.json   # + torch.compile
    python benchmarks/step_profile.py shapes_vlfm
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from tempoflow.config import load_config
from tempoflow.runs import make_trainer

PARTS = ("batch", "forward", "backward", "clip", "optimizer", "ema")


def profile(trainer, steps: int, warmup: int) -> dict:
    acc, cfg = trainer.accelerator, trainer.cfg
    seconds: dict[str, float] = defaultdict(float)
    for i in range(warmup + steps):
        marks = [time.perf_counter()]
        batch = trainer.batch()
        marks.append(time.perf_counter())
        loss = trainer.method(batch, trainer.state.noise_gen)["loss"]
        marks.append(time.perf_counter())
        acc.backward(loss)
        marks.append(time.perf_counter())
        acc.unscale_gradients()
        for group in trainer.clip_groups:
            torch.nn.utils.clip_grad_norm_(group, cfg.grad_clip)
        marks.append(time.perf_counter())
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        trainer.ema.update(trainer.unwrapped)
        if trainer.threads is not None:  # the adaptive thread count (train.cpu_threads=0), as in training
            trainer.threads.step()
        marks.append(time.perf_counter())
        if i >= warmup:
            for name, a, b in zip(PARTS, marks, marks[1:]):
                seconds[name] += b - a
    total = sum(seconds.values())
    share = {k: seconds[k] / total for k in PARTS}
    # the caption lookup happens inside forward (the method's loss); timed alone on the last batch
    text = getattr(trainer.unwrapped, "text", None)
    lookup = 0.0
    if text is not None and "caption" in batch:
        t0 = time.perf_counter()
        for _ in range(steps):
            text.lookup(batch["caption"], acc.device)
        lookup = (time.perf_counter() - t0) / total
    return {"steps_per_s": steps / total, "share": share, "text_lookup_share_inside_forward": lookup,
            "outside_forward_backward_optimizer": share["batch"] + share["clip"] + share["ema"] + lookup}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default="demo")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the network")
    ap.add_argument("--json", type=Path, help="also write the figures here (docs/results/step_profile_cpu.json)")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    rows = {}
    for compiled in (False, True) if args.compile else (False,):
        cfg = load_config(args.config, [*args.overrides, f"out_dir={tempfile.mkdtemp()}", "device=cpu",
                                        f"train.compile={str(compiled).lower()}"])
        trainer = make_trainer(cfg)
        t0 = time.perf_counter()
        first = profile(trainer, 1, 0)  # compiles on the first call
        warm_s = time.perf_counter() - t0
        row = profile(trainer, args.steps, 3)
        row["first_step_seconds"] = warm_s
        name = "compiled" if compiled else "eager"
        rows[name] = row
        parts = "  ".join(f"{k} {100 * v:4.1f}%" for k, v in row["share"].items())
        print(f"{name:8s} {row['steps_per_s']:5.2f} steps/s  first step {warm_s:5.1f} s  {parts}  "
              f"(text lookup {100 * row['text_lookup_share_inside_forward']:.1f}% of it inside forward)  "
              f"outside the network's fwd+bwd+opt {100 * row['outside_forward_backward_optimizer']:.1f}%", flush=True)
        del first
    if args.json is None:
        return
    out = args.json
    out.write_text(json.dumps({"config": args.config, "overrides": args.overrides, "threads": torch.get_num_threads(),
                               "cpu_count": os.cpu_count(), "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
