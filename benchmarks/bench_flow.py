"""Benchmark of the ``flow`` method: training steps/s and sampling frames/s, with the hardware named.

    python benchmarks/bench_flow.py                       # CPU, and the GPU when there is one
    python benchmarks/bench_flow.py --config shapes_flow --batch 64 --json out.json

On a GPU it measures fp32, bf16 autocast, and bf16 + ``torch.compile`` (attention is always
``scaled_dot_product_attention``). Prints one table; nothing is asserted (this is not a test).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tempoflow.config import load_config
from tempoflow.data import load_dataset
from tempoflow.evaluate.record import hardware
from tempoflow.nets.dit import count_parameters
from tempoflow.runs import build_method


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(method, data, batch: int, steps: int, warmup: int, device, dtype) -> float:
    """Optimizer steps per second (forward + backward + AdamW), after ``warmup`` untimed steps."""
    opt = torch.optim.AdamW(method.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    videos = data.videos[:batch].to(device)
    captions = data.captions[:batch]
    batch_dict = {"video": videos, "caption": captions}
    method.train()
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = method.loss(batch_dict, gen)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return steps / (time.perf_counter() - t0)


@torch.no_grad()
def bench_sample(method, captions: list[str], options, device, dtype, repeats: int) -> tuple[float, int]:
    """Generated frames per second (whole ODE solve with guidance) and the NFE of one solve."""
    method.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = method.sample(captions, generator=gen, options=options)  # warm-up (and compilation)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = method.sample(captions, generator=gen, options=options)
        _sync(device)
    seconds = (time.perf_counter() - t0) / repeats
    return out.video.shape[0] * out.video.shape[1] / seconds, out.nfe


def timed_setups(cfg, devices: list[str]):
    """``(device, name, dtype, method)`` for every device and precision timed: fp32 everywhere; on a GPU
    also bf16 autocast and bf16 + ``torch.compile``. Each method is built fresh from ``cfg``."""
    for dev_name in devices:
        device = torch.device(dev_name)
        variants = [("fp32", torch.float32, False)]
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            variants += [("bf16", torch.bfloat16, False), ("bf16+compile", torch.bfloat16, True)]
        for name, dtype, compile_net in variants:
            method = build_method(cfg).to(device)
            if compile_net:
                method.net.compile()
            yield device, name, dtype, method


def benchmark_arguments(doc: str, config: str, sample_batch: int) -> argparse.ArgumentParser:
    """The options every method benchmark takes (config, overrides, batch, devices, json)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=config)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--batch", type=int, default=None, help="training batch (default: the config's)")
    p.add_argument("--sample-batch", type=int, default=sample_batch, help="videos generated at once")
    p.add_argument("--steps", type=int, default=None, help="timed training steps")
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: all available)")
    p.add_argument("--json", default=None, help="also write the results here")
    return p


def benchmark_setup(args: argparse.Namespace):
    """``(cfg, data, batch, devices, captions)`` for parsed :func:`benchmark_arguments`."""
    # the caption encoder is outside the timed loop (its embeddings are cached), so hashing stands in
    cfg = load_config(args.config, [*args.overrides, "text.encoder=hashing", "text.cache="])
    data = load_dataset(cfg.data, "train")
    batch = args.batch or cfg.train.batch_size
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    return cfg, data, batch, devices, data.unique_captions[: args.sample_batch]


def main() -> None:
    args = benchmark_arguments(__doc__, "shapes_flow", 16).parse_args()
    cfg, data, batch, devices, captions = benchmark_setup(args)
    rows = []
    for device, name, dtype, method in timed_setups(cfg, devices):
        steps = args.steps or (200 if device.type == "cuda" else 5)
        warmup = 10 if device.type == "cuda" else 1
        sps = bench_train(method, data, batch, steps, warmup, device, dtype)
        repeats = 5 if device.type == "cuda" else 1
        fps, nfe = bench_sample(method, captions, cfg.sample, device, dtype, repeats=repeats)
        rows.append({
            "device": hardware() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads",
            "variant": name, "batch": batch, "train_steps_per_s": sps,
            "train_videos_per_s": sps * batch, "sample_frames_per_s": fps, "nfe": nfe,
            "sample_batch": len(captions), "params_M": count_parameters(method.net) / 1e6,
        })
        r = rows[-1]
        print(f"{r['device'][:40]:40s} {name:13s} train {sps:8.2f} steps/s ({r['train_videos_per_s']:8.1f} "
              f"videos/s, batch {batch})  sample {fps:9.1f} frames/s (NFE {nfe}, batch {len(captions)})",
              flush=True)
    print(f"model: DiT dim {cfg.model.dim} depth {cfg.model.depth} patches {cfg.model.patch_t}x"
          f"{cfg.model.patch_hw}x{cfg.model.patch_hw}, {rows[0]['params_M']:.2f}M params; video "
          f"{cfg.data.shapes.num_frames}x{cfg.data.shapes.resolution}x{cfg.data.shapes.resolution}; "
          f"sampler {cfg.sample.solver} x{cfg.sample.steps}, guidance {cfg.sample.guidance}; "
          f"host: {hardware()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
