"""Benchmark of ``lifting``'s roll-out: seconds per generated video, with the hardware named (issue 17 item 6).

    python benchmarks/bench_lifting.py                                   # the paper's video setting on a GPU
    python benchmarks/bench_lifting.py --size 64 --frames 8 --preset tiny # a CPU-sized check of the script

Seed 001 reports one 32-frame 480×480 video in under a second on an H100 with its "medium" UNet (Table 3:
widths 128/256/512, two residual blocks per level). This rolls out ``--batch`` videos of ``--frames``
generated frames at ``--size`` × ``--size`` from ``--window`` given frames, one network call per frame, with
an untrained network of the chosen preset (speed does not depend on the weights), in several variants:
fp32; bf16 autocast; bf16 + channels-last memory format; and, with ``--compile`` or on a GPU, bf16 +
channels-last + ``torch.compile`` of the UNet. Each variant is warmed up by one roll-out (compilation
included there), then timed ``--repeats`` times (the median is reported). Prints one table; nothing is
asserted (this is not a test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from tempoflow.evaluate.record import hardware
from tempoflow.methods.lifting import LiftingConfig, StochasticLifting
from tempoflow.nets.dit import count_parameters
from tempoflow.nets.unet import UNET_PRESETS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def time_rollout(method: StochasticLifting, initial: torch.Tensor, frames: int, dtype: torch.dtype,
                 repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` roll-outs of ``frames`` new frames after one untimed warm-up."""
    device = initial.device
    seconds = []
    for i in range(repeats + 1):
        gen = torch.Generator(device=device).manual_seed(i)
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            method.sample(initial, generator=gen, num_frames=initial.shape[1] + frames)
        _sync(device)
        if i:  # the first roll-out warms up (and compiles)
            seconds.append(time.perf_counter() - t0)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=480, help="frame side in pixels")
    p.add_argument("--frames", type=int, default=32, help="generated frames per video")
    p.add_argument("--window", type=int, default=2, help="given frames (the Markov window m)")
    p.add_argument("--batch", type=int, default=1, help="videos rolled out together")
    p.add_argument("--preset", default="medium", choices=sorted(UNET_PRESETS), help="UNet size (seed 001 Table 3)")
    p.add_argument("--label-dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile on the CPU (always on a GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default="", help="write the results here too")
    args = p.parse_args()
    for name in ("size", "frames", "window", "batch", "repeats", "label_dim"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    unet = UNET_PRESETS[args.preset]
    if args.size % unet.downsampling:
        p.error(f"--size must be a multiple of {unet.downsampling} for the {args.preset} UNet, got {args.size}")
    device = torch.device(args.device)
    cfg = LiftingConfig(window=args.window, label_dim=args.label_dim, loss="bce", unet=unet)
    shape = (args.window + args.frames, 3, args.size, args.size)
    initial = torch.rand(args.batch, args.window, 3, args.size, args.size, device=device)
    variants = [("fp32", torch.float32, False, False), ("bf16", torch.bfloat16, False, False),
                ("bf16+channels_last", torch.bfloat16, True, False)]
    if args.compile or device.type == "cuda":
        variants.append(("bf16+channels_last+compile", torch.bfloat16, True, True))
    rows = []
    for name, dtype, channels_last, compiled in variants:
        torch.manual_seed(0)
        method = StochasticLifting(cfg, shape, fields=False, fps=8.0, first_frame_at_zero=False).to(device).eval()
        if channels_last:
            method.net.to(memory_format=torch.channels_last)
        if compiled:
            method.net.compile()
        seconds = time_rollout(method, initial, args.frames, dtype, args.repeats)
        median = statistics.median(seconds)
        rows.append({"variant": name, "seconds_per_video": median / args.batch,
                     "ms_per_frame": 1e3 * median / (args.batch * args.frames), "seconds_all": seconds})
        print(f"{name:28s} {median / args.batch:8.3f} s per video   {rows[-1]['ms_per_frame']:8.2f} ms per frame",
              flush=True)
    record = {"hardware": hardware(), "torch": torch.__version__, "device": str(device), "preset": args.preset,
              "parameters": count_parameters(method.net), "size": args.size, "frames": args.frames,
              "window": args.window, "batch": args.batch, "rows": rows}
    print(f"hardware: {record['hardware']}; {args.preset} UNet, {record['parameters'] / 1e6:.1f} M parameters; "
          f"{args.batch} x {args.frames} frames of {args.size}x{args.size} from {args.window} given")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
