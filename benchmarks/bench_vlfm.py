"""Benchmark of the ``vlfm`` method: training steps/s, and sampling frames/s at 8, 24 and 48 fps from one
ODE solve (dense output), with the network calls (NFE) per second of video and the hardware named.

    python benchmarks/bench_vlfm.py                          # CPU, and the GPU when there is one
    python benchmarks/bench_vlfm.py --duration 4 --json out.json vlfm.steps_per_frame=4

The number of network calls depends on the solver's steps per *training* frame interval, not on the
requested frame rate: a 48-fps video costs the NFE of an 8-fps one and only more decoding. On a GPU it
measures fp32, bf16 autocast and bf16 + ``torch.compile``. Prints one table; nothing is asserted.
"""

from __future__ import annotations

import json
import time

import torch
from bench_flow import (  # same options, timing loop and precisions as the flow benchmark
    _sync,
    bench_train,
    benchmark_arguments,
    benchmark_setup,
    timed_setups,
)

from tempoflow.evaluate.record import hardware
from tempoflow.nets.dit import count_parameters


@torch.no_grad()
def bench_sample(method, captions: list[str], options, fps: float, duration: float, device, dtype,
                 repeats: int) -> dict:
    """Frames per second of generation at ``fps`` over ``duration`` seconds, and NFE per video second."""
    method.eval()
    times = torch.arange(1, round(duration * fps) + 1, dtype=torch.float32) / fps  # seconds
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = method.sample(captions, generator=gen, options=options, times=times)  # warm-up (and compilation)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = method.sample(captions, generator=gen, options=options, times=times)
        _sync(device)
    seconds = (time.perf_counter() - t0) / repeats
    frames = out.video.shape[0] * out.video.shape[1]
    return {"fps": fps, "frames": frames, "seconds": seconds, "frames_per_s": frames / seconds,
            "nfe": out.nfe, "nfe_per_video_second": out.nfe / duration}


def main() -> None:
    p = benchmark_arguments(__doc__, "shapes_vlfm", 8)
    p.add_argument("--duration", type=float, default=None, help="seconds generated (default: training T)")
    args = p.parse_args()
    cfg, data, batch, devices, captions = benchmark_setup(args)
    rows = []
    for device, name, dtype, method in timed_setups(cfg, devices):
        duration = args.duration or method.duration
        steps = args.steps or (200 if device.type == "cuda" else 5)
        sps = bench_train(method, data, batch, steps, 10 if device.type == "cuda" else 1, device, dtype)
        where = hardware() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
        print(f"{where[:40]:40s} {name:13s} train {sps:8.2f} steps/s (batch {batch} videos x "
              f"{cfg.vlfm.times_per_video} times)", flush=True)
        for fps in (8.0, 24.0, 48.0):
            repeats = 5 if device.type == "cuda" else 1
            r = bench_sample(method, captions, cfg.sample, fps, duration, device, dtype, repeats)
            rows.append({"device": where, "variant": name, "train_steps_per_s": sps, "batch": batch,
                         "sample_batch": len(captions), "duration_s": duration,
                         "params_M": count_parameters(method.net) / 1e6, **r})
            print(f"{'':40s} {name:13s} {fps:4.0f} fps: {r['frames_per_s']:9.1f} frames/s "
                  f"({r['frames']} frames in {r['seconds']:.3f} s), NFE {r['nfe']} = "
                  f"{r['nfe_per_video_second']:.0f} per video second", flush=True)
    print(f"model: DiT dim {cfg.model.dim} depth {cfg.model.depth} patch {cfg.model.patch_hw}, "
          f"{rows[0]['params_M']:.2f}M params; codec {cfg.vlfm.codec}; video {cfg.data.shapes.num_frames} "
          f"frames at {cfg.data.shapes.fps:g} fps, {cfg.data.shapes.resolution}px; prediction "
          f"{cfg.vlfm.prediction}, {cfg.vlfm.steps_per_frame} steps per training frame, guidance "
          f"{cfg.sample.guidance}; host: {hardware()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "overrides": args.overrides, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
