"""Stochastic Lifting vs ARDM as video predictors on the camera data (issue 18; the role of seed 001's KTH/BAIR
runs) at a CPU budget (measured on a shared 2-core machine: about 4 training steps/s per model, so 2 x 1500
steps take ~12.5 min; the 24 x 4 roll-outs of 64 frames, the oracle and the timings ~4.5 min, ardm s = 10
alone ~2 min).

    OMP_NUM_THREADS=1 python benchmarks/camera_rollouts.py                      # ~17-20 min on 2 CPU cores
    python benchmarks/camera_rollouts.py --steps 20000 --width 64 --starts 93 --device cuda   # a longer run

Both methods are trained with the real trainer on their packaged configs (``camera_lifting``, ``camera_ardm``:
the same 16-frame videos, window, UNet and training budget; ``--peers`` adds ``meanflow`` / ``crps``), then
``--members`` roll-outs of ``--frames`` frames each are generated from the first ``window`` frames of
``--starts`` test videos (spread evenly over the test split's captions: every photo and motion). The camera
renderer gives the true continuation at any time (``CameraDataset.render_at``) for as long as the view stays
inside the photograph, ``CameraConfig.horizon`` seconds (64 frames with the packaged configs); frames past the
horizon are rolled out and checked for intensity and contrast only, never scored against the renderer's
mirrored padding. Per setting (ardm at every ``--ardm-steps``):

- PSNR and SSIM per roll-out frame against the truth (mean over starts and members), summarised over the
  generated frames and read at multiples of the training length (``psnr@16`` ...);
- mean intensity and contrast (per-frame std over pixels): the fraction of generated frames inside the
  training frames' range, and the contrast of the last scored segment over the truth's (below 1: blur);
- the camera oracle (``tempoflow.metrics.camera_oracle``) on consecutive segments of training length: does the
  predicted video keep the caption's motion (and photo) past the training length? The truth row is the
  oracle's own reading of the true continuation (its ceiling);
- the ensemble scores of ``tempoflow eval`` (``evaluate.ensembles.ensemble_scores``) over the ``--members``
  roll-outs of each start: CRPS, spread, skill, spread/skill ratio;
- network calls per frame, and wall time per frame as a ratio to lifting, every setting timed on the same
  batch in one interleaved loop (``lifting_experiments.relative_wall_time``).

The "copy last given frame" row is the persistence floor (no network). Writes ``results.json``,
``table.md`` and ``psnr_vs_frame.png`` to ``--out`` and prints the hardware.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from lifting_experiments import (
    CALLS_KNOB,
    MEANFLOW_STEPS,
    PEERS,
    markdown_table,
    print_table,
    relative_wall_time,
    train_and_load,
    unet_and_budget,
)
from torch import Tensor

from tempoflow.config import ExperimentConfig, load_config
from tempoflow.data import load_dataset
from tempoflow.errors import ConfigError
from tempoflow.evaluate.ensembles import ensemble_scores
from tempoflow.evaluate.record import hardware
from tempoflow.evaluate.trajectories import timed_rollout
from tempoflow.metrics.camera_oracle import caption_accuracy
from tempoflow.metrics.video import psnr_per_frame, ssim_per_frame
from tempoflow.runs import context_length

ARDM_STEPS = (2, 10)  # solver steps (network calls) per frame of the multi-step baseline
TIME_EPS = 1e-6  # seconds: a frame at exactly the horizon is still inside the photo


def experiment(args: argparse.Namespace, method: str, *overrides: str) -> ExperimentConfig:
    """The packaged ``camera_<method>`` config with this run's budget, output in ``--out/<method>``."""
    sizes = [
        f"data.camera.resolution={args.resolution}",
        *unet_and_budget(args, logs=20),
        f"train.cpu_threads={args.threads}",  # not the trainer's adaptive choice: every timing on one count
        f"out_dir={args.out / method}",
    ]
    return load_config(f"camera_{method}", [*sizes, *overrides])


def start_rows(n_test: int, n: int) -> Tensor:
    """``n`` test videos spread evenly over the split (it is ordered photo-major, motion-minor)."""
    return torch.linspace(0, n_test - 1, min(n, n_test)).round().long().unique()


def frame_stats(videos: Tensor) -> tuple[Tensor, Tensor]:
    """Mean intensity and contrast (std over channels and pixels) of every frame: two ``(N, T)``."""
    flat = videos.flatten(2)
    return flat.mean(2), flat.std(2)


def video_scores(frames: Tensor, truth: Tensor, context: int, checkpoints: list[int], train_range: dict) -> dict:
    """Scores of roll-outs ``frames`` ``(N, F, C, H, W)`` whose first ``S`` frames have a ``truth`` ``(N, S, ...)``.

    Returns PSNR/SSIM curves over the scored frames (means over roll-outs) and summaries over the generated
    ones (``context`` given frames left out), intensity/contrast against ``train_range`` over ALL frames, and
    the last scored segment's contrast over the truth's."""
    S = truth.shape[1]
    psnr = psnr_per_frame(frames[:, :S], truth).mean(0)  # (S,)
    ssim = ssim_per_frame(frames[:, :S], truth).mean(0)
    mean, std = frame_stats(frames[:, context:])  # (N, F − k)
    inside = ((mean >= train_range["intensity"][0]) & (mean <= train_range["intensity"][1])
              & (std >= train_range["contrast"][0]) & (std <= train_range["contrast"][1]))
    segment = slice(max(context, S - S // 4), S)  # the last quarter of the scored frames
    out = {
        "psnr": float(psnr[context:].mean()),
        "ssim": float(ssim[context:].mean()),
        **{f"psnr@{k}": float(psnr[k - 1]) for k in checkpoints},
        **{f"ssim@{k}": float(ssim[k - 1]) for k in checkpoints},
        "in_training_range": float(inside.float().mean()),
        "intensity_range": [float(mean.min()), float(mean.max())],
        "contrast_range": [float(std.min()), float(std.max())],
        "contrast_ratio_last": float(frame_stats(frames[:, segment])[1].mean() / frame_stats(truth[:, segment])[1].mean()),
        "finite": bool(torch.isfinite(frames).all()),
    }
    curves = {"psnr": psnr.tolist(), "ssim": ssim.tolist(), "intensity": frame_stats(frames)[0].mean(0).tolist(),
              "contrast": frame_stats(frames)[1].mean(0).tolist()}
    return {**out, "curves": curves}


def motion_scores(frames: Tensor, captions: list[str], cfg: ExperimentConfig, segment: int) -> dict:
    """The camera oracle on consecutive ``segment``-frame pieces of the scored frames ``(N, S, ...)``:
    motion, kind and photo accuracy per piece, and their means over the pieces after the first (which
    holds the given frames; the oracle reads the photo from a piece's first frames)."""
    pieces = []
    for a in range(0, frames.shape[1] - segment + 1, segment):
        score = caption_accuracy(frames[:, a : a + segment], captions, cfg.data.camera)
        pieces.append({"frames": f"{a + 1}-{a + segment}", "motion": score.motion, "kind": score.kind,
                       "photo": score.photo})
    if not pieces:  # fewer scored frames than one segment
        return {"oracle_segments": []}
    later = pieces[1:]  # wholly generated: the first piece holds the given frames the photo is read from
    mean = (lambda key: sum(p[key] for p in later) / len(later)) if later else (lambda key: None)
    return {"motion_first": pieces[0]["motion"], "motion_later": mean("motion"), "photo_first": pieces[0]["photo"],
            "photo_later": mean("photo"), "oracle_segments": pieces}


def ensemble_summary(frames: Tensor, truth: Tensor, context: int, members: int) -> dict:
    """``ensemble_scores`` of the ``members`` roll-outs of each start (frames are start-major) over the
    generated scored frames: CRPS, spread, skill and their ratios."""
    S = truth.shape[1]
    starts = len(frames) // members
    ens = frames[:, context:S].reshape(starts, members, S - context, *frames.shape[2:])  # (U, M, S', C, H, W)
    truth = truth.reshape(starts, members, *truth.shape[1:])[:, 0, context:]  # (U, S', C, H, W)
    summary = ensemble_scores(ens, truth, torch.arange(starts), (0, S - context)).summary
    keys = ("crps", "crps_fair", "spread", "skill", "spread_skill_ratio", "spread_skill_ratio_corrected")
    return {k: summary[k] for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="training steps of every model")
    p.add_argument("--batch", type=int, default=8, help="videos per batch (x lifting.pairs_per_video pairs)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=16, help="UNet base width (2 levels)")
    p.add_argument("--resolution", type=int, default=32, help="frame side in pixels")
    p.add_argument("--peers", nargs="*", default=["ardm"], choices=list(PEERS),
                   help="methods compared with lifting (same data, window, UNet and budget)")
    p.add_argument("--ardm-steps", type=int, nargs="+", default=list(ARDM_STEPS))
    p.add_argument("--meanflow-steps", type=int, nargs="+", default=list(MEANFLOW_STEPS))
    p.add_argument("--starts", type=int, default=24, help="test videos the roll-outs start from")
    p.add_argument("--members", type=int, default=4, help="roll-outs per start (the ensemble; >= 2)")
    p.add_argument("--frames", type=int, default=0,
                   help="frames per roll-out, given ones included (0: every frame up to the horizon)")
    p.add_argument("--time-starts", type=int, default=16, help="roll-outs per side-by-side timing")
    p.add_argument("--time-frames", type=int, default=8, help="generated frames per side-by-side timing")
    p.add_argument("--time-repeats", type=int, default=3, help="interleaved timings (median; 0: skip)")
    p.add_argument("--reuse", action="store_true", help="load finished runs of the same config from --out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=1234, help="sampling seed")
    p.add_argument("--out", type=Path, default=Path("out/camera_rollouts"))
    args = p.parse_args()
    if args.members < 2:
        p.error(f"--members must be >= 2 (an ensemble), got {args.members}")
    for name in ("steps", "starts", "threads", "batch", "width", "time_starts", "time_frames"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.ardm_steps + args.meanflow_steps) < 1 or args.time_repeats < 0:
        p.error("--ardm-steps and --meanflow-steps must be >= 1 and --time-repeats >= 0")
    for method in ("lifting", *args.peers):  # every config checked before anything trains
        try:
            experiment(args, method)
        except (ConfigError, ValueError) as err:
            p.error(f"camera_{method}: {err}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict = {"hardware": hardware(), "threads": args.threads,
                     "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    print(f"hardware: {results['hardware']}, {args.threads} thread(s)")

    cfg = experiment(args, "lifting")
    test, train_set = load_dataset(cfg.data, "test"), load_dataset(cfg.data, "train")
    context, T = context_length(cfg), train_set.videos.shape[1]
    horizon_frames = int(cfg.data.camera.horizon * cfg.data.camera.fps + TIME_EPS)  # frame k at k / fps
    frames = args.frames or horizon_frames
    if frames <= context:
        p.error(f"--frames must exceed the {context} given frames, got {frames}")
    rows = start_rows(len(test), args.starts)
    starts = test.videos[rows, :context].repeat_interleave(args.members, 0)  # (N, k, C, H, W), start-major
    captions = [test.captions[int(r)] for r in rows for _ in range(args.members)]
    times = (torch.arange(frames, dtype=torch.float64) + 1) / cfg.data.camera.fps  # frame k at k / fps
    scored = int((times <= cfg.data.camera.horizon + TIME_EPS).sum())
    truth = torch.stack([test.render_at(int(r), times[:scored]) for r in rows]).repeat_interleave(args.members, 0)
    checkpoints = [k for k in range(T, scored + 1, T)]
    t_mean, t_std = frame_stats(train_set.videos)
    train_range = {"intensity": [float(t_mean.min()), float(t_mean.max())],
                   "contrast": [float(t_std.min()), float(t_std.max())]}
    results.update(horizon_s=cfg.data.camera.horizon, frames=frames, scored_frames=scored, context=context,
                   training_frames=T, starts=[int(r) for r in rows], training_range=train_range)
    print(f"{len(rows)} starts x {args.members} members, {frames} frames ({scored} inside the {horizon_frames}-frame "
          f"horizon), {context} given, trained on {T}-frame videos")

    def score(name: str, s: int, video: Tensor, extra: dict) -> dict:
        row = {"method": name, "s": s, **extra, **video_scores(video, truth, context, checkpoints, train_range)}
        row.update(motion_scores(video[:, :scored], captions, cfg, T))
        return row

    if not torch.allclose(truth[:, :context], starts, atol=1e-5):
        raise RuntimeError("the renderer's frames at the given times disagree with the test videos")
    table = [score("truth (renderer)", 0, truth, {})]
    for key in [k for k in table[0] if k.startswith(("psnr", "ssim"))]:
        del table[0][key]  # against itself: infinite / 1
    copy = starts[:, -1:].expand(-1, frames - context, -1, -1, -1)
    table.append(score("copy last given frame", 0, torch.cat([starts, copy], 1), {"nfe_per_frame": 0.0}))
    models = {"lifting": [(train_and_load(cfg, args.reuse), {})]}
    sweeps = {"ardm": args.ardm_steps, "meanflow": args.meanflow_steps, "crps": [1]}
    for peer in args.peers:
        trained = train_and_load(experiment(args, peer), args.reuse)
        models[peer] = [(trained, {CALLS_KNOB[peer]: s} if peer in CALLS_KNOB else {}) for s in sweeps[peer]]
    torch.set_num_threads(args.threads)
    timed: dict[str, tuple] = {}
    for name, settings in models.items():
        for (model, loss), fields in settings:
            if fields:  # what `tempoflow sample RUN ardm.steps=s` sets
                model.cfg = dataclasses.replace(model.cfg, **fields)
            s = next(iter(fields.values()), 1)
            key = name if name == "lifting" else f"{name} s={s}"
            run = timed_rollout(model, starts, frames - context, args.seed)
            print(f"{key}: {run['seconds']:.1f} s roll-out")
            extra = {"nfe_per_frame": run["nfe"] / (frames - context), "train_loss": loss,
                     "rollout_s": run["seconds"]}
            row = score(name, s, run["frames"], extra)
            row["ensemble"] = ensemble_summary(run["frames"], truth, context, args.members)
            table.append(row)
            timed[key] = (model, fields)
    if args.time_repeats > 0:
        wall = relative_wall_time(timed, cfg, args.time_starts, args.time_frames, args.time_repeats, args.seed)
        for row in table[2:]:
            row.update(wall[row["method"] if row["method"] == "lifting" else f"{row['method']} s={row['s']}"])
    results["table"] = table

    flat = [{**{k: v for k, v in r.items() if k not in ("curves", "ensemble", "oracle_segments")},
             **r.get("ensemble", {})} for r in table]
    columns = ["method", "s", "nfe_per_frame", "psnr", *(f"psnr@{k}" for k in checkpoints), "ssim",
               f"ssim@{checkpoints[-1]}" if checkpoints else "ssim", "motion_first", "motion_later", "photo_later",
               "in_training_range", "contrast_ratio_last", "crps", "spread", "skill", "spread_skill_ratio_corrected",
               "time_ratio_to_lifting", "ms_per_frame_median", "train_loss"]
    title = (f"Camera roll-outs ({args.resolution}x{args.resolution}, {len(rows)} test starts x {args.members} "
             f"members, {frames} frames, scored to frame {scored}; {args.steps} training steps)")
    print_table(title, flat, columns)
    segments = "\n".join(
        f"| {r['method']} {'' if r['s'] in (0, 1) else 's=' + str(r['s'])} | "
        + " | ".join(f"{p['motion']:.2f} / {p['photo']:.2f}" for p in r["oracle_segments"]) + " |" for r in table)
    header = " | ".join(p["frames"] for p in table[0]["oracle_segments"])
    markdown = (f"hardware: {results['hardware']}, {args.threads} thread(s)\n\n### {title}\n\n"
                f"{markdown_table(flat, columns)}\n### Camera oracle per segment (motion / photo accuracy)\n\n"
                f"| method | {header} |\n|---|{'---|' * len(table[0]['oracle_segments'])}\n{segments}\n")
    (args.out / "table.md").write_text(markdown)
    plot(table, context, scored, T, train_range, args.out / "psnr_vs_frame.png")
    results["seconds"] = time.perf_counter() - t0
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{results['seconds'] / 60:.1f} min; wrote {args.out / 'results.json'}, table.md, psnr_vs_frame.png")


def plot(table: list[dict], context: int, scored: int, T: int, train_range: dict, path: Path) -> None:
    """PSNR and SSIM of the generated frames against the roll-out frame, and the mean contrast of every
    frame with the training frames' range; one colour per row of ``table``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 3.6))
    for i, row in enumerate(table):
        label, colour = row["method"] + (f" s={row['s']}" if row["s"] > 1 else ""), f"C{i}"
        curves = row["curves"]
        if not row["method"].startswith("truth"):  # the truth against itself: infinite PSNR
            for ax, key in zip(axes[:2], ("psnr", "ssim")):
                ax.plot(range(context + 1, len(curves[key]) + 1), curves[key][context:], color=colour, label=label)
        axes[2].plot(range(1, len(curves["contrast"]) + 1), curves["contrast"], color=colour, label=label)
    axes[2].axhspan(*train_range["contrast"], color="0.9", label="training frames' range")
    for ax, name in zip(axes, ("PSNR (dB)", "SSIM", "contrast (std over pixels)")):
        ax.axvline(T, color="0.5", ls=":", lw=1)
        ax.axvline(scored, color="0.5", ls="--", lw=1)
        ax.set_xlabel("frame (dotted: training length; dashed: last frame with truth)")
        ax.set_ylabel(name)
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: the curves fill the axes
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
