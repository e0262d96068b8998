"""Time to quality: train a config for a fixed wall-clock budget and score it along the way.

Learning per unit of compute is the figure this measures: the oracle caption accuracy (training
captions and held-out colour-shape combinations) and the nearest-bucket PSNR of samples drawn from
EMA snapshots taken every ``--every`` minutes of *training* time. Snapshots are copies of the EMA
weights held in memory; sampling and scoring happen after training, outside the timed part. The
learning-rate schedule runs over the config's ``train.steps`` (training stops at the budget or at
those steps, whichever comes first), so a snapshot before the end was taken at a learning rate that
had not yet decayed: set ``train.steps`` to about budget x steps/s for a run that ends decayed.

    python benchmarks/time_to_quality.py demo --minutes 10 --name flow_demo
    python benchmarks/time_to_quality.py shapes_vlfm --minutes 20 --every 2 --name vlfm
    python benchmarks/time_to_quality.py demo --minutes 5 --name lr3e-3 train.lr=3e-3
    python benchmarks/time_to_quality.py --plot docs/results/ttq_a.json docs/results/ttq_b.json \\
        --out docs/results/ttq_flow.png                      # overlay curves of earlier runs

Writes ``docs/results/ttq_<name>.json`` (hardware, threads, config, the curve), ``.png`` and
``ttq_<name>_samples.gif`` (the last snapshot's samples; ``--name`` defaults to "run" and overwrites). Works
for ``flow`` and ``vlfm`` (for vlfm the final snapshot is also scored at 16 and 24 fps from one
solve). The evaluation prompts are fixed by ``default_prompts``: evenly spread training captions
and every held-out combination, never seen in training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

from tempoflow.config import ExperimentConfig, load_config
from tempoflow.configio import to_dict
from tempoflow.data import load_dataset
from tempoflow.data.io import write_video
from tempoflow.evaluate.record import hardware
from tempoflow.evaluate.scores import oracle_scores
from tempoflow.evaluate.text_to_video import default_prompts
from tempoflow.metrics.video import nearest_in_bucket
from tempoflow.runs import build_method, make_trainer
from tempoflow.viewing import tile, upscale
from tempoflow.weights import load_weights

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
EVAL_PROMPTS = 48  # 24 spread training captions + all 24 held-out combinations of the shapes data
VLFM_RATES = (8.0, 16.0, 24.0)  # frame rates scored from one VLFM solve at the end


def hardware_record() -> dict:
    return {"device": hardware(), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "")}


class Snapshots:
    """Trainer callback: EMA copies every ``every_s`` seconds of training; stops at ``budget_s``.

    Its own time (the copies) is excluded from the training clock.
    """

    def __init__(self, trainer, budget_s: float, every_s: float):
        self.trainer, self.budget_s, self.every_s = trainer, budget_s, every_s
        self.t0 = time.perf_counter()
        self.paused = 0.0
        self.next_mark = every_s
        self.items: list[dict] = []
        self.stopped_at: float | None = None  # training seconds at the last step (before the final save)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.paused

    def __call__(self, step: int) -> bool:
        elapsed = self.elapsed()
        done = elapsed >= self.budget_s or step >= self.trainer.cfg.steps
        if elapsed >= self.next_mark or done:
            t = time.perf_counter()
            state = {k: v.detach().cpu().clone() for k, v in self.trainer.ema.averaged().items()}
            self.items.append({"minutes": elapsed / 60, "step": step, "state": state})
            while self.next_mark <= elapsed:
                self.next_mark += self.every_s
            self.paused += time.perf_counter() - t
        if done:
            self.stopped_at = elapsed
        return done


def score(method, cfg: ExperimentConfig, pairs: list[tuple[str, str]], refs: dict, seed: int,
          guidance: float | None = None) -> tuple[dict, Tensor]:
    """Oracle caption accuracy and nearest-bucket PSNR per split of samples at the training frame
    times, and the samples ``(P K, T, C, H, W)`` (prompt-major)."""
    captions = [c for _, c in pairs for _ in range(cfg.sample.num_per_prompt)]
    splits = [s for s, _ in pairs for _ in range(cfg.sample.num_per_prompt)]
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        options = cfg.sample if guidance is None else dataclasses.replace(cfg.sample, guidance=guidance)
        out = method.sample(captions, generator=gen, options=options)
    videos = out.video.float().cpu()
    row: dict = {"sampling_seconds": time.perf_counter() - t0, "nfe": out.nfe}
    for split in ("train", "heldout"):
        sel = [i for i, s in enumerate(splits) if s == split]
        r = oracle_scores(videos[sel], [captions[i] for i in sel])
        buckets = [refs[captions[i]] for i in sel]
        r["nearest_bucket_psnr_db"] = float(nearest_in_bucket(videos[sel], buckets, metric="psnr").score.mean())
        row[split] = r
    return row, videos


def vlfm_times(rates: tuple[float, ...], duration: float) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """One sorted time grid holding frames k / fps for every rate, and each rate's indices into it."""
    wanted = {r: [k / r for k in range(1, round(r * duration) + 1)] for r in rates}
    grid = sorted({round(t, 9) for ts in wanted.values() for t in ts})
    index = {r: torch.tensor([grid.index(round(t, 9)) for t in ts]) for r, ts in wanted.items()}
    return torch.tensor(grid, dtype=torch.float64).float(), index


def evaluate_snapshots(cfg: ExperimentConfig, text, snapshots: list[dict], seed: int, gif: Path,
                       guidances: list[float] = ()) -> list[dict]:
    """Score every snapshot; the last one's samples go to ``gif`` (a row per prompt, truth first)."""
    method = build_method(cfg, text).eval()
    pairs = default_prompts(cfg)
    refs = {}
    for split in ("train", "heldout"):
        data = load_dataset(cfg.data, split)
        refs.update({c: data.videos[idx] for c, idx in data.buckets().items()})
    leaked = {c for s, c in pairs if s == "heldout"} & set(load_dataset(cfg.data, "train").captions)
    if leaked:  # the held-out score must be on captions the model never trained on
        raise SystemExit(f"held-out captions appear in the training split: {sorted(leaked)[:3]}")
    curve = []
    for i, snap in enumerate(snapshots):
        load_weights(method, snap["state"], Path(f"snapshot@{snap['step']}"))
        scores, videos = score(method, cfg, pairs, refs, seed)
        row = {"minutes": snap["minutes"], "step": snap["step"], **scores}
        if cfg.method == "vlfm" and i == len(snapshots) - 1:
            duration = cfg.data.shapes.num_frames / cfg.data.shapes.fps
            grid, index = vlfm_times(VLFM_RATES, duration)
            rates = {}
            captions = [c for _, c in pairs for _ in range(cfg.sample.num_per_prompt)]
            splits = [s for s, _ in pairs for _ in range(cfg.sample.num_per_prompt)]
            with torch.no_grad():
                video = method.sample(captions, generator=torch.Generator().manual_seed(seed), options=cfg.sample,
                                      times=grid).video
            for r, idx in index.items():
                rates[f"{r:g}fps"] = {
                    split: oracle_scores(video[[j for j, s in enumerate(splits) if s == split]][:, idx].float(),
                                         [c for c, s in zip(captions, splits) if s == split])
                    for split in ("train", "heldout")
                }
            row["rates_one_solve"] = rates
            print("  from one solve: " + ", ".join(
                f"{r} {v['train']['caption_accuracy']:.2f} / {v['heldout']['caption_accuracy']:.2f}"
                for r, v in rates.items()) + " (train / held-out)", flush=True)
        if i == len(snapshots) - 1:
            for w in guidances:  # the sampler's guidance, to be chosen on the training captions only
                row.setdefault("guidance_sweep", {})[f"{w:g}"] = score(method, cfg, pairs, refs, seed, w)[0]
                r = row["guidance_sweep"][f"{w:g}"]
                print(f"  guidance {w:g}: accuracy train {r['train']['caption_accuracy']:.2f} "
                      f"held-out {r['heldout']['caption_accuracy']:.2f}", flush=True)
        curve.append(row)
        if i == len(snapshots) - 1:
            K = cfg.sample.num_per_prompt
            rows = [torch.cat([refs[c][:1], videos[j * K:(j + 1) * K]]) for j, (_, c) in enumerate(pairs)]
            shown = rows[:8] + rows[-8:]  # 8 training captions, 8 held-out pairs
            write_video(gif, upscale(tile(torch.cat(shown), len(shown))), fps=cfg.data.shapes.fps)
        tr, ho = row["train"], row["heldout"]
        print(f"  {row['minutes']:5.2f} min  step {row['step']:6d}  accuracy train {tr['caption_accuracy']:.2f} "
              f"held-out {ho['caption_accuracy']:.2f}  PSNR {tr['nearest_bucket_psnr_db']:.1f} / "
              f"{ho['nearest_bucket_psnr_db']:.1f} dB", flush=True)
    return curve


def run(config: str, overrides: list[str], minutes: float, every: float, name: str, seed: int,
        guidances: list[float] = ()) -> dict:
    out_dir = tempfile.mkdtemp(prefix=f"ttq_{name}_")  # the run's checkpoints; removed at the end
    try:
        return _run(config, overrides, minutes, every, name, seed, guidances, out_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _run(config: str, overrides: list[str], minutes: float, every: float, name: str, seed: int,
         guidances: list[float], out_dir: str) -> dict:
    cfg = load_config(config, [*overrides, f"out_dir={out_dir}", f"eval.num_prompts={EVAL_PROMPTS}"])
    if cfg.method not in ("flow", "vlfm") or cfg.data.name != "shapes":
        raise SystemExit(f"time_to_quality scores flow or vlfm on shapes (the oracle reads shapes captions), "
                         f"got method {cfg.method!r} on data {cfg.data.name!r}")
    t_setup = time.perf_counter()
    trainer = make_trainer(cfg)
    setup_s = time.perf_counter() - t_setup
    snaps = Snapshots(trainer, minutes * 60, every * 60)
    result = trainer.fit(callback=snaps)
    train_s = snaps.stopped_at or snaps.elapsed()
    print(f"{name}: {result.step} steps in {train_s / 60:.1f} min of training "
          f"({result.step / train_s:.2f} steps/s); setup {setup_s:.0f} s; scoring {len(snaps.items)} snapshot(s)",
          flush=True)
    text = trainer.unwrapped.text
    t_eval = time.perf_counter()
    gif = RESULTS / f"ttq_{name}_samples.gif"
    curve = evaluate_snapshots(cfg, text, snaps.items, seed, gif, guidances)
    print(f"last snapshot's samples (truth first in each row): {gif}")
    record = {
        "name": name, "config": config, "overrides": overrides, "method": cfg.method,
        "budget_minutes": minutes, "hardware": hardware_record(), "setup_seconds": setup_s,
        "train_seconds": train_s, "steps": result.step, "steps_per_second": result.step / train_s,
        "eval_seconds": time.perf_counter() - t_eval, "eval_prompts": EVAL_PROMPTS,
        "samples_per_prompt": cfg.sample.num_per_prompt, "curve": curve, "full_config": to_dict(cfg),
    }
    return record


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for rec in records:
        c = rec["curve"]
        m = [r["minutes"] for r in c]
        line, = axes[0].plot(m, [r["train"]["caption_accuracy"] for r in c], "-o", ms=3, label=rec["name"])
        axes[1].plot(m, [r["heldout"]["caption_accuracy"] for r in c], "-o", ms=3, color=line.get_color())
        axes[2].plot(m, [r["train"]["nearest_bucket_psnr_db"] for r in c], "-o", ms=3, color=line.get_color())
    for ax, title in zip(axes, ("caption accuracy, training captions", "caption accuracy, held-out pairs",
                                "nearest-bucket PSNR, training captions (dB)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_ylim(-0.02, 1.02)
    hw = records[0]["hardware"]
    fig.suptitle(f"time to quality on {hw['device']}", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="a YAML config (flow or vlfm on shapes)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-3")
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    ap.add_argument("--every", type=float, default=1.0, help="minutes between snapshots")
    ap.add_argument("--name", default="run", help="names docs/results/ttq_<name>.json / .png")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed of the evaluation")
    ap.add_argument("--guidance-sweep", type=lambda s: [float(w) for w in s.split(",")], default=[],
                    help="also score the final snapshot at these guidance scales, e.g. 1,3,4")
    ap.add_argument("--plot", nargs="+", metavar="JSON", help="only overlay these earlier results")
    ap.add_argument("--out", type=Path, help="the PNG of --plot")
    args = ap.parse_intermixed_args()
    if args.plot:
        out = args.out or RESULTS / "ttq_overlay.png"
        plot([json.loads(Path(p).read_text()) for p in args.plot], out)
        print(f"wrote {out}")
        return
    if not args.config:
        ap.error("give a config (or --plot)")
    if not (args.minutes > 0 and args.every > 0):
        ap.error(f"--minutes and --every must be > 0, got {args.minutes} and {args.every}")
    record = run(args.config, args.overrides, args.minutes, args.every, args.name, args.seed, args.guidance_sweep)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ttq_{args.name}.json").write_text(json.dumps(record, indent=2))
    plot([record], RESULTS / f"ttq_{args.name}.png")
    print(f"wrote {RESULTS / f'ttq_{args.name}.json'} and .png")


if __name__ == "__main__":
    main()
