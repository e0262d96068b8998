"""How the main job's training speed degrades when another process shares the CPU cores.

Runs the demo config's training step (forward, backward, optimizer, EMA; ``make_trainer``'s parts)
in a fresh process per setting, alone and next to an identical competitor process, and prints
steps/s. Settings: torch threads (1 or all cores) x ``OMP_WAIT_POLICY`` (libgomp's default spin-wait
vs PASSIVE, which ``tempoflow``'s CLI sets unless the user did).

    python benchmarks/thread_contention.py                 # writes docs/results/thread_contention_cpu.json
    python benchmarks/thread_contention.py --steps 60 train.batch_size=16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"

WORKER = r"""
import sys, time, tempfile, json
import torch
from tempoflow.config import load_config
from tempoflow.train.run import make_trainer
threads, steps, overrides = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
cfg = load_config("configs/demo.yaml", [*overrides, "out_dir=" + tempfile.mkdtemp(), "device=cpu"])
tr = make_trainer(cfg)
def step():
    batch = tr.batch()
    loss = tr.method(batch, tr.state.noise_gen)["loss"]
    tr.accelerator.backward(loss)
    tr.optimizer.step(); tr.optimizer.zero_grad(set_to_none=True); tr.ema.update(tr.unwrapped)
for _ in range(5):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"steps_per_s": steps / (time.perf_counter() - t), "threads": torch.get_num_threads()}))
"""


def launch(threads: int, policy: str, steps: int, overrides: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    return subprocess.Popen([sys.executable, "-c", WORKER, str(threads), str(steps), json.dumps(overrides)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def result(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="dotted overrides of configs/demo.yaml")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for threads in sorted({1, cores}):
        for policy in ("", "PASSIVE"):
            alone = result(launch(threads, policy, args.steps, args.overrides))
            a, b = launch(threads, policy, args.steps, args.overrides), launch(threads, policy, args.steps,
                                                                               args.overrides)
            shared = min(result(a), result(b))
            row = {"threads": threads, "OMP_WAIT_POLICY": policy or "(default)", "alone_steps_per_s": alone,
                   "with_competitor_steps_per_s": shared, "slowdown": alone / shared}
            rows.append(row)
            print(f"threads {threads}  OMP_WAIT_POLICY {row['OMP_WAIT_POLICY']:9s}  alone {alone:5.2f} steps/s  "
                  f"next to a second job {shared:5.2f} steps/s  ({row['slowdown']:.1f}x slower)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "thread_contention_cpu.json"
    out.write_text(json.dumps({"cpu_count": cores, "overrides": args.overrides, "steps": args.steps,
                               "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
