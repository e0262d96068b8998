"""The VLFM paper's experiments on shapes, scored against the renderer (DESIGN §4; issue "VLFM" item 4).

    python benchmarks/vlfm_experiments.py --steps 1500 --out docs/results/vlfm     # all variants
    python benchmarks/vlfm_experiments.py --variants base direct --steps 300        # a subset

Trains one model per variant of the packaged ``shapes_vlfm`` config (same data, backbone and steps), then:
  - generation at 8, 12 and 16 fps from the same model (paper §5.2): caption accuracy (oracle) and
    PSNR/SSIM against the true frames at those times;
  - interpolation: 2× and 3× the training fps, in-between frames vs truth and vs linear interpolation
    of the model's own training-time frames;
  - extrapolation to 4 T: PSNR vs time, and holding the last frame as the baseline.
Prints markdown tables with the hardware and writes ``results.json``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tempoflow.config import load_config
from tempoflow.data import load_dataset
from tempoflow.evaluate.continuous_time import continuous_time_scores, time_grid
from tempoflow.evaluate.record import hardware
from tempoflow.metrics.oracle import caption_accuracy
from tempoflow.runs import load_run, train

VARIANTS: dict[str, list[str]] = {
    "base": [],  # the config as written
    "extrapolated_start": ["vlfm.hold_first_frame=false"],  # the paper's μ̄ before frame 1 (fit extrapolated)
    "velocity": ["vlfm.prediction=velocity"],  # the paper's parametrisation
    "direct": ["vlfm.objective=direct", "vlfm.prediction=velocity"],  # paper Table 1 ablation: G_θ(c, t), no flow
    "legs": ["vlfm.projection=legs"],  # the paper's recurrence instead of least squares
    "order4": ["vlfm.order=4"],
    "decay": ["vlfm.schedule=decay"],  # no re-noising between frames
    "latent": ["vlfm.codec=autoencoder", "vlfm.codec_path=runs/shapes_autoencoder", "model.patch_hw=2"],
}
# Sampling-only variants: the checkpoint of another variant, sampled with other settings (no training).
SAMPLING_VARIANTS: dict[str, tuple[str, dict]] = {
    "base_ode_step": ("base", {"vlfm": {"rising_noise": "ode"}}),  # deterministic step where σ rises
}


def scores(method, data, captions: list[str], out_fps: float, extent: float, seed: int) -> dict:
    grid = time_grid(method.num_frames, method.fps, out_fps, extent)
    res = continuous_time_scores(method, data, captions, grid, seed)
    acc = caption_accuracy(res["samples"][:, grid.inside], captions)
    return {**res["summary"], "caption_accuracy": acc.accuracy, "colour_accuracy": acc.colour,
            "shape_accuracy": acc.shape, "direction_accuracy": acc.direction, "curve": res["psnr_vs_time"],
            "baseline_curve": res["baseline_vs_time"]}


def run_variant(name: str, args) -> dict:
    trained, sampling = SAMPLING_VARIANTS.get(name, (name, None))
    out = Path(args.out) / trained
    overrides = [*VARIANTS[trained], f"train.steps={args.steps}", f"out_dir={out}", f"device={args.device}",
                 *args.override]
    cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    if not (out / "checkpoints" / "latest").exists():
        train(cfg)
    train_s = time.perf_counter() - t0
    method, cfg, _ = load_run(out, device=args.device, overrides=sampling)
    data = load_dataset(cfg.data, "train")
    captions = data.unique_captions[:: max(1, len(data.unique_captions) // args.prompts)][: args.prompts]
    fps = method.fps
    row = {"train_seconds": train_s, "steps": cfg.train.steps}
    row["generation"] = {f"{f:g}": scores(method, data, captions, f, 1.0, args.seed) for f in (8, 12, 16)}
    row["interpolation"] = {f"{r}x": scores(method, data, captions, r * fps, 1.0, args.seed) for r in (2, 3)}
    row["extrapolation"] = scores(method, data, captions, fps, 4.0, args.seed)
    return row


def tables(results: dict) -> str:
    header = ("| variant | acc@8 | acc@12 | acc@16 | colour / shape / direction @8 | PSNR@8 fps | "
              "interp 2x PSNR (linear) | interp 3x PSNR (linear) | extrap PSNR to 4T (hold last) |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        g, i, e = r["generation"], r["interpolation"], r["extrapolation"]
        g8 = g["8"]
        lines.append(
            f"| {name} | {g['8']['caption_accuracy']:.2f} | {g['12']['caption_accuracy']:.2f} | "
            f"{g['16']['caption_accuracy']:.2f} | {g8['colour_accuracy']:.2f} / {g8['shape_accuracy']:.2f} / "
            f"{g8['direction_accuracy']:.2f} | {g['8']['psnr_train_frames_db']:.1f} | "
            f"{i['2x']['psnr_between_frames_db']:.1f} ({i['2x']['baseline_linear_psnr_between_db']:.1f}) | "
            f"{i['3x']['psnr_between_frames_db']:.1f} ({i['3x']['baseline_linear_psnr_between_db']:.1f}) | "
            f"{e['psnr_extrapolated_db']:.1f} ({e['baseline_hold_last_psnr_extrapolated_db']:.1f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="shapes_vlfm")
    names = [*VARIANTS, *SAMPLING_VARIANTS]
    p.add_argument("--variants", nargs="+", default=names, choices=names)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--prompts", type=int, default=16, help="training captions scored per setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/vlfm_experiments")
    p.add_argument("override", nargs="*", help="extra config overrides for every variant")
    args = p.parse_args()
    results = {name: run_variant(name, args) for name in args.variants}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    record = {"hardware": hardware(), "torch": torch.__version__, "config": args.config, "results": results}
    (Path(args.out) / "results.json").write_text(json.dumps(record, indent=1))
    print(f"hardware: {record['hardware']}; {args.steps} training steps per variant, {args.prompts} prompts")
    print("accuracy = oracle caption accuracy; PSNR in dB against the renderer's true frames at the same times")
    print(tables(results))


if __name__ == "__main__":
    main()
