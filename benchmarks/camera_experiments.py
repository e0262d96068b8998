"""VLFM against a fixed-rate flow model + frame interpolation on the camera data (issue 18 item 2; DESIGN §4, §7).

    python benchmarks/camera_experiments.py --out docs/results/camera      # both models, ~10 min each
    python benchmarks/camera_experiments.py --steps 20 --prompts 2 --out /tmp/cam   # a smoke run

Trains ``vlfm`` (the packaged ``camera_vlfm`` config) and ``flow`` (``camera_flow``: the recipe of the
time-to-quality work) on the same 16x16 camera videos, then scores against the renderer, whose frames
are exact at any time:
  - in-between frames at 2x, 3x and 7x the training frame rate over (0, T];
  - extrapolation past T to 2T and 4T;
for VLFM's own frames at those times and for three baselines made from a model's frames at the
training times: linear blend (in between), hold-last (past T) and optical-flow warping (scikit-image
TV-L1, ``tempoflow.evaluate.frame_interpolation``; in between and constant-velocity past T). ``flow``
makes only its training frames, so it is scored through the baselines alone: the best a fixed-rate
model + interpolation gives here. The same baselines on the TRUE training frames show what they could
do at best. PSNR and SSIM always; LPIPS (AlexNet v0.1, frames upscaled 4x nearest to reach its 31 px
minimum) only with ``--lpips-backbone`` and ``--lpips-lin`` (local weight files: nothing is downloaded).
Caption accuracy: the camera oracle on the frames at the training times.
Writes ``results.json`` and ``table.md`` to ``--out`` and prints the table with the hardware.
Nothing is asserted. A run folder that already holds a checkpoint is scored, not retrained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tempoflow.config import ExperimentConfig, load_config
from tempoflow.data import load_dataset
from tempoflow.errors import ConfigError
from tempoflow.evaluate.continuous_time import TimeGrid, continuous_time_scores, fixed_rate_scores, time_grid
from tempoflow.evaluate.record import hardware
from tempoflow.evaluate.scores import oracle_scores
from tempoflow.metrics.lpips import load_lpips, lpips_video
from tempoflow.runs import load_run, train

# Steps per model: about 10 minutes each on 2 free CPU cores (shapes at the same sizes, README: the
# VLFM DiT 10.7 steps/s, the flow UNet ~8 steps/s); measured here with one thread next to another busy
# job: 4.3 and 3.4 steps/s (then ~23 min each).
DEFAULT_STEPS = {"vlfm": 6000, "flow": 4500}
RATES = (2, 3, 7)  # in-between frames at these multiples of the training fps
EXTENTS = (2.0, 4.0)  # extrapolation to these multiples of T
LPIPS_UPSCALE = 4  # 16 px frames -> 64 px: AlexNet needs >= 31


def settings(num_frames: int, fps: float) -> dict[str, TimeGrid]:
    """Name -> time grid: the training frames, in-between rates over (0, T], extrapolation at the training fps."""
    grids = {"train_fps": time_grid(num_frames, fps, fps, 1.0)}
    grids.update({f"between_{r}x": time_grid(num_frames, fps, r * fps, 1.0) for r in RATES})
    grids.update({f"to_{e:g}T": time_grid(num_frames, fps, fps, e) for e in EXTENTS})
    return grids


def lpips_means(model, videos: dict[str, torch.Tensor], truth: torch.Tensor, grid: TimeGrid) -> dict[str, float]:
    """Mean LPIPS of each video ``(B, M, C, H, W)`` against ``truth`` on the in-between or extrapolated times."""
    mask = (grid.inside & ~grid.on_frame) if grid.inside.all() else ~grid.inside

    def up(x: torch.Tensor) -> torch.Tensor:  # (B, M', C, H, W) -> upscaled, in [0, 1]
        B, M = x.shape[:2]
        y = F.interpolate(x.flatten(0, 1).clamp(0, 1), scale_factor=LPIPS_UPSCALE, mode="nearest")
        return y.view(B, M, *y.shape[1:])

    target = up(truth[:, mask])
    return {name: float(lpips_video(model, up(v[:, mask]), target).mean()) for name, v in videos.items()}


def model_config(kind: str, args) -> tuple[ExperimentConfig, list[str]]:
    """The packaged ``camera_<kind>`` config with this run's steps, device, folder and overrides."""
    steps = args.steps or DEFAULT_STEPS[kind]
    overrides = [f"train.steps={steps}", f"out_dir={Path(args.out) / kind}", f"device={args.device}",
                 *(args.vlfm_override if kind == "vlfm" else args.flow_override)]
    return load_config(f"camera_{kind}", overrides), overrides


def run_model(kind: str, args, lpips) -> dict:
    """Train (unless its folder has a checkpoint) and score one model on every setting."""
    cfg, overrides = model_config(kind, args)
    out = Path(cfg.out_dir)  # an out_dir among the overrides wins
    t0 = time.perf_counter()
    trained_here = not (out / "checkpoints" / "latest").exists()
    if trained_here:
        train(cfg)
    train_s = time.perf_counter() - t0
    method, cfg, _ = load_run(out, device=args.device)
    data = load_dataset(cfg.data, "train")
    every = max(1, len(data.unique_captions) // args.prompts)
    captions = data.unique_captions[::every][: args.prompts]
    num_frames, fps = data.videos.shape[1], data.fps
    row = {"config": f"camera_{kind}", "overrides": overrides, "steps": cfg.train.steps,
           "train_seconds": train_s if trained_here else None, "prompts": len(captions), "scores": {}}
    for name, grid in settings(num_frames, fps).items():
        t0 = time.perf_counter()
        if kind == "vlfm":
            res = continuous_time_scores(method, data, captions, grid, args.seed, cfg.sample, optical_flow=True)
            videos = {"model": res["samples"], **res["baselines"]}
            frames = res["samples"][:, grid.on_frame]
        else:
            res = fixed_rate_scores(method, data, captions, grid, args.seed, cfg.sample, optical_flow=True)
            videos, frames = res["baselines"], res["frames"]
        entry = dict(res["summary"])
        if name == "train_fps":
            entry.update(oracle_scores(frames, captions, cfg.data))
        elif lpips is not None:
            entry["lpips"] = lpips_means(lpips, videos, res["truth"], grid)
        if "psnr_vs_time" in res:
            entry["psnr_vs_time"] = res["psnr_vs_time"]
        entry["seconds"] = time.perf_counter() - t0
        row["scores"][name] = entry
        print(f"[{kind}] {name}: {json.dumps({k: v for k, v in entry.items() if k != 'psnr_vs_time'})}", flush=True)
    return row


def _cell(s: dict, psnr: str, ssim: str, lpips_key: str | None) -> str:
    if psnr not in s:
        return "—"
    text = f"{s[psnr]:.2f} / {s[ssim]:.3f}"
    if lpips_key and "lpips" in s and lpips_key in s["lpips"]:
        text += f" / {s['lpips'][lpips_key]:.3f}"
    return text


def tables(results: dict, lpips_note: str) -> str:
    """Markdown: one row per setting, one column per source of frames."""
    v, f = results["vlfm"]["scores"], results["flow"]["scores"]
    cols = ["VLFM itself", "VLFM frames + blend/hold", "VLFM frames + optical flow", "flow frames + blend/hold",
            "flow frames + optical flow", "true frames + blend/hold", "true frames + optical flow"]
    lines = [(f"PSNR (dB) / SSIM{' / LPIPS' if 'computed' not in lpips_note else ''} against the renderer; "
              f"LPIPS: {lpips_note}. blend/hold = linear blend in between, hold-last past T."), "",
             "| setting | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name in [n for n in v if n != "train_fps"]:
        past = name.startswith("to_")
        where = "extrapolated" if past else "between"
        model_keys = (f"psnr_{where}_db" if past else "psnr_between_frames_db",
                      "ssim_extrapolated" if past else "ssim_between_frames")
        lin = "hold_last" if past else "linear"
        label = (f"past T, to {name[3:]}" if past else f"in-between, {name.split('_')[1]} the training fps")
        cells = [_cell(v[name], *model_keys, "model")]
        for src, prefix in ((v, "baseline"), (f, "baseline"), (v, "true_frames")):
            for base, lk in ((lin, "linear"), ("flow", "flow")):
                cells.append(_cell(src[name], f"{prefix}_{base}_psnr_{where}_db",
                                   f"{prefix}_{base}_ssim_{where}", lk if prefix == "baseline" else None))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", ("| model | steps | training minutes | PSNR / SSIM at the training frames | caption accuracy "
                   "(photo / motion) at the training fps |"), "|---|---|---|---|---|"]
    for kind in ("vlfm", "flow"):
        r = results[kind]
        s = r["scores"]["train_fps"]
        minutes = f"{r['train_seconds'] / 60:.1f}" if r["train_seconds"] is not None else "(trained before)"
        acc = s.get("caption_accuracy")
        acc_text = (f"{acc:.2f} ({s['photo_accuracy']:.2f} / {s['motion_accuracy']:.2f})"
                    if isinstance(acc, float) else str(acc))
        lines.append(f"| {kind} | {r['steps']} | {minutes} | {s['psnr_train_frames_db']:.2f} / "
                     f"{s['ssim_train_frames']:.3f} | {acc_text} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=0,
                   help=f"training steps for both models (default: {DEFAULT_STEPS}, ~10 min each on 2 free cores)")
    p.add_argument("--prompts", type=int, default=16, help="training captions scored per setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/camera_experiments")
    p.add_argument("--lpips-backbone", default="", help="local torchvision AlexNet weights (alexnet-owt-*.pth)")
    p.add_argument("--lpips-lin", default="", help="local LPIPS v0.1 linear layers (lpips weights/v0.1/alex.pth)")
    p.add_argument("--vlfm-override", nargs="*", default=[], help="config overrides for vlfm, e.g. vlfm.backbone=unet")
    p.add_argument("--flow-override", nargs="*", default=[], help="config overrides for flow")
    args = p.parse_args()
    if bool(args.lpips_backbone) != bool(args.lpips_lin):
        p.error("LPIPS needs both --lpips-backbone and --lpips-lin")
    if args.steps < 0 or args.prompts < 1:
        p.error(f"--steps must be >= 0 and --prompts >= 1, got {args.steps} and {args.prompts}")
    for kind in ("vlfm", "flow"):  # both configs checked before anything trains
        try:
            model_config(kind, args)
        except (ConfigError, ValueError) as err:
            p.error(f"camera_{kind}: {err}")
    lpips = load_lpips(args.lpips_backbone, args.lpips_lin) if args.lpips_backbone else None
    lpips_note = (f"AlexNet v0.1 on frames upscaled {LPIPS_UPSCALE}x (nearest)" if lpips is not None
                  else "not computed (no weights: pass --lpips-backbone and --lpips-lin)")
    results = {kind: run_model(kind, args, lpips) for kind in ("vlfm", "flow")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"hardware": hardware(), "torch": torch.__version__, "seed": args.seed, "lpips": lpips_note,
              "rates": RATES, "extents": EXTENTS, "results": results}
    (out / "results.json").write_text(json.dumps(record, indent=1))
    table = tables(results, lpips_note)
    (out / "table.md").write_text(f"hardware: {record['hardware']}; seed {args.seed}\n\n{table}\n")
    print(f"hardware: {record['hardware']}")
    print(table)


if __name__ == "__main__":
    main()
