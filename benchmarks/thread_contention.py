"""How the main job's training speed degrades when another process shares the CPU cores.

Runs the demo config's training step (forward, backward, optimizer, EMA; ``make_trainer``'s parts)
in a fresh process per setting, alone and next to an identical competitor process (both start their
timed steps together), and prints steps/s, for the thread settings in ``SETTINGS``: torch threads
(1 or all cores) and how OpenMP's idle threads wait (spin, sleep, or spin briefly then sleep).

    python benchmarks/thread_contention.py --json docs/results/thread_contention_cpu.json
    python benchmarks/thread_contention.py --steps 60 train.batch_size=16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One worker: the trainer's step as benchmarks/step_profile.py times it, warm-up, then a barrier so
# that competing workers time their steps together.
WORKER = r"""
import sys, time, tempfile, json, os
sys.path.insert(0, os.path.dirname(sys.argv[6]))
from step_profile import profile
from tempoflow.config import load_config
from tempoflow.runs import make_trainer
threads, steps, overrides, config, barrier = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
cfg = load_config(config, [*overrides, "out_dir=" + tempfile.mkdtemp(), "device=cpu", f"train.cpu_threads={threads}"])
tr = make_trainer(cfg)
profile(tr, 5, 0)
open(barrier + "." + str(os.getpid()), "w").close()  # ready; wait until every worker is
while not os.path.exists(barrier + ".go"):
    time.sleep(0.01)
print(json.dumps({"steps_per_s": profile(tr, steps, 0)["steps_per_s"]}))
"""


CONFIG = "demo"  # the packaged main job


# (torch threads, OpenMP environment); 0 threads = the trainer's adaptive choice (train.cpu_threads=0,
# tempoflow.train.threads). OMP_WAIT_POLICY=PASSIVE makes OpenMP's idle threads sleep instead of spin.
SETTINGS: list[tuple[int, dict[str, str]]] = [
    (1, {}), (2, {}), (2, {"OMP_WAIT_POLICY": "PASSIVE"}), (0, {}),
]
OPENMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def run_together(n: int, threads: int, openmp: dict[str, str], steps: int, overrides: list[str]) -> list[float]:
    """Start ``n`` workers, release their timed loops together, return each one's steps/s."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_KEYS}
    env.update(openmp)
    with tempfile.TemporaryDirectory() as tmp:
        barrier = os.path.join(tmp, "barrier")
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(threads), str(steps), json.dumps(overrides),
                                   str(CONFIG), barrier, str(Path(__file__).resolve())], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(n)]
        while len([f for f in os.listdir(tmp) if f.startswith("barrier.")]) < n:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
        open(barrier + ".go", "w").close()
        rates = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"worker failed:\n{err[-2000:]}")
            rates.append(json.loads(out.strip().splitlines()[-1])["steps_per_s"])
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="dotted overrides of the packaged demo config")
    ap.add_argument("--json", type=Path, help="also write the figures here (docs/results/thread_contention_cpu.json)")
    ap.add_argument("--steps", type=int, default=120, help="timed steps (the adaptive choice times windows of 25)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    if cores != 2:
        print(f"note: SETTINGS name 2 threads; this machine has {cores} cores")
    rows = []
    for threads, openmp in SETTINGS:
        alone = run_together(1, threads, openmp, args.steps, args.overrides)[0]
        shared = min(run_together(2, threads, openmp, args.steps, args.overrides))
        label = " ".join(f"{k}={v}" for k, v in openmp.items()) or "(default OpenMP waiting)"
        label = label if threads else "adaptive (train.cpu_threads=0)"
        row = {"threads": threads, "openmp": label, "alone_steps_per_s": alone,
               "with_competitor_steps_per_s": shared, "slowdown": alone / shared}
        rows.append(row)
        print(f"threads {threads or 'auto'}  {label:31s}  alone {alone:5.2f} steps/s  next to a second job "
              f"{shared:5.2f} steps/s  ({row['slowdown']:.1f}x slower)", flush=True)
    if args.json is None:
        return
    out = args.json
    out.write_text(json.dumps({"cpu_count": cores, "overrides": args.overrides, "steps": args.steps,
                               "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
