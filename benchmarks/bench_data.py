"""A folder of short video clips trained on lazily (DataLoader workers) against decoding it all up front.

    python benchmarks/bench_data.py                           # 1,000 clips of 8 frames at 32x32, 40 steps
    python benchmarks/bench_data.py --clips 1000 --frames 16 --size 64 --json docs/results/bench_data_cpu.json

Writes ``--clips`` mp4 files and a ``manifest.csv`` into ``--folder`` (kept for the next run), then trains
a tiny ``flow`` on them ``--steps`` steps once per loading mode, each in a fresh process so that its peak
resident memory (``ru_maxrss``) is its own: ``memory`` (every clip decoded before the first step),
``lazy`` with 0 workers (each batch's clips decoded in the training process) and with ``--workers``
workers (decoded ahead, in parallel with the step). Reports the seconds before the first step (building
the trainer; the up-front decode for ``memory``), training steps per second, peak memory of the
training process and of its largest worker, and the bytes every decoded clip would hold together.
Nothing is asserted (this is not a test).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from tempoflow.evaluate.record import hardware

CAPTIONS = ("a red circle moves left", "a blue square moves up", "a green triangle moves right")
# The tiny flow of the test suite: the data path, not the network, is what is measured.
TINY_FLOW = ["text.encoder=hashing", "text.dim=16", "model.dim=32", "model.depth=1", "model.heads=2",
             "model.patch_t=2", "model.patch_hw=8", "device=cpu", "train.cpu_threads=1", "train.warmup_steps=1"]


def make_folder(folder: Path, clips: int, frames: int, size: int) -> None:
    """``clips`` mp4 files of ``frames`` frames at ``size``², each a seeded gradient moving across the
    frame, and ``manifest.csv`` (``path, text``); left as it is when it already holds them."""
    from tempoflow.data.io import write_video

    manifest = folder / "manifest.csv"
    if manifest.is_file() and len(manifest.read_text().splitlines()) == clips + 1:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, size)
    rows = []
    for i in range(clips):
        colour = torch.rand(3, 1, 1, generator=gen)
        shift = torch.arange(frames).view(-1, 1, 1, 1) / frames  # (T, 1, 1, 1)
        video = colour * ((x.view(1, 1, 1, -1) + shift) % 1.0)  # (T, 3, 1, W) -> broadcast below
        write_video(folder / f"clip{i:05d}.mp4", video.expand(frames, 3, size, size), fps=8.0)
        rows.append({"path": f"clip{i:05d}.mp4", "text": CAPTIONS[i % len(CAPTIONS)]})
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "text"])
        writer.writeheader()
        writer.writerows(rows)


def child(args: argparse.Namespace) -> None:
    """One training run in this process; prints one JSON line."""
    from tempoflow.config import load_config
    from tempoflow.runs import make_trainer

    loading, workers = args.child.split(":")
    out = Path(args.out_dir) / f"{loading}{workers}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(None, [
        *TINY_FLOW, "data.name=folder", f"data.folder.path={Path(args.folder) / 'manifest.csv'}",
        f"data.folder.num_frames={args.frames}", f"data.folder.resolution={args.size}", "data.folder.test_fraction=0",
        f"data.loading={loading}", f"data.num_workers={workers}", f"train.steps={args.steps}",
        f"train.batch_size={args.batch_size}", f"train.log_every={args.steps}", f"train.checkpoint_every={args.steps}",
        f"out_dir={out}",
    ])
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    trainer = make_trainer(cfg)
    setup = time.perf_counter() - t0
    result = trainer.fit()
    print(json.dumps({
        "loading": loading, "num_workers": int(workers), "setup_s": setup, "steps_per_s": result.steps_per_second,
        "train_s": result.seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mib": rss_start / 1024,
        "peak_worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=1000)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--folder", default="data/bench_clips", help="where the clips are written (kept)")
    p.add_argument("--out-dir", default="runs/bench_data")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "LOADING:WORKERS": one run, in this process
    args = p.parse_args()
    if args.child:
        child(args)
        return
    t0 = time.perf_counter()
    make_folder(Path(args.folder), args.clips, args.frames, args.size)
    print(f"{args.clips} clips of {args.frames} frames at {args.size}x{args.size} in {args.folder} "
          f"({time.perf_counter() - t0:.1f} s)")
    results = []
    for mode in ("memory:0", "lazy:0", f"lazy:{args.workers}"):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode], env=env, check=True,
                             capture_output=True, text=True)
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{r['loading']:6s} workers {r['num_workers']}: {r['setup_s']:6.1f} s before the first step, "
              f"{r['steps_per_s']:5.2f} steps/s, peak RSS {r['peak_rss_mib']:6.0f} MiB "
              f"(after imports {r['rss_after_imports_mib']:.0f}; largest worker {r['peak_worker_rss_mib']:.0f})")
    decoded = args.clips * args.frames * 3 * args.size**2 * 4 / 2**20
    print(f"every clip decoded (float32): {decoded:.0f} MiB")
    if args.json:
        record = {"command": " ".join(["python benchmarks/bench_data.py", *sys.argv[1:]]), "clips": args.clips, "frames": args.frames,
                  "size": args.size, "steps": args.steps, "batch_size": args.batch_size, "decoded_mib": decoded,
                  "hardware": hardware(), "results": results}
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
