"""Seed 002's comparison (Tables 2 and 3) on our data: the progressive bucket alignment against its
baselines, on the same frozen video WAE and text encoder, at the same training budget.

    python benchmarks/align_experiments.py                              # shapes and digits, CPU budget
    python benchmarks/align_experiments.py --datasets digits --steps 2000 --wae-steps 5000 --resolution 32

For each data set: train the video WAE once (the packaged ``<data>_video_wae`` config; an existing run in
``--out`` is reused), then every ``align.objective`` from the packaged ``<data>_align`` config, evaluate each
(``tempoflow.evaluate``, which adds ``tempoflow.evaluate.alignment``'s scores), and write one table:
B-PSNR / B-SSIM of the training captions (best match in the bucket), FD-WAE and MMD-WAE (video WAE
codes of generated vs real videos, NOT FVD/KVD), oracle caption accuracy on training captions and on
held-out combinations, and text -> video recall R@1 / R@5 over every video of the data set.
Writes ``<out>/table.md`` and ``<out>/results.json``; nothing is asserted (this is not a test).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tempoflow.config import load_config
from tempoflow.data import load_dataset
from tempoflow.evaluate import evaluate
from tempoflow.evaluate.alignment import oracle_accuracy
from tempoflow.evaluate.record import hardware
from tempoflow.methods.align import ALIGN_OBJECTIVES
from tempoflow.metrics.video import nearest_in_bucket
from tempoflow.runs import build_codec, train
from tempoflow.train.checkpoint import read_checkpoint

REFERENCE_BLACK = "reference_black"
REFERENCE_WAE = "reference_wae"
PAPER_NAMES = {
    REFERENCE_BLACK: "(reference) all-black video",
    REFERENCE_WAE: "(reference) video WAE reconstruction G(E_v(v))",
    "progressive_bucket": "Ours: progressive + bucket loss",
    "direct_bucket": "Non-progressive (bucket loss)",
    "direct_infonce": "Non-progressive w/ InfoNCE",
    "clip_infonce": "CLIP-based (our mapping, InfoNCE)",
    "imagebind": "ImageBind-based (projection heads)",
    "progressive_vicreg": "Progressive - VICReg",
    "progressive_byol": "Progressive - BYOL",
}
COLUMNS = (  # (header, split row, key, format)
    ("B-PSNR (dB)", "align_train", "b_psnr_db", "{:.2f}"),
    ("B-SSIM", "align_train", "b_ssim", "{:.3f}"),
    ("FD-WAE", "align_train", "fd_wae", "{:.2f}"),
    ("MMD-WAE", "align_train", "mmd_wae", "{:.3f}"),
    ("CapAcc train", "align_train", "caption_accuracy", "{:.2f}"),
    ("CapAcc held-out", "align_heldout", "caption_accuracy", "{:.2f}"),
    ("R@1", "align_train", "recall_at_1", "{:.2f}"),
    ("R@5", "align_train", "recall_at_5", "{:.2f}"),
)


def data_overrides(dataset: str, resolution: int) -> list[str]:
    """A smaller frame size for a CPU budget; the video WAE's four levels still fit 16 pixels."""
    return [f"data.{dataset}.resolution={resolution}"]


def train_video_wae(dataset: str, out: Path, steps: int | None, common: list[str]) -> tuple[Path, float]:
    """The frozen video space: trained once, reused when ``out`` already holds the run."""
    run = out / f"{dataset}_video_wae"
    if (run / "checkpoints" / "latest").is_file():
        return run, 0.0
    t0 = time.perf_counter()
    train(
        load_config(
            f"{dataset}_video_wae",
            [*common, f"out_dir={run}",
             *([f"train.steps={steps}", f"train.checkpoint_every={steps}"] if steps else [])],
        )
    )
    return run, time.perf_counter() - t0


def run_objective(dataset: str, objective: str, wae: Path, out: Path, steps: int, common: list[str]) -> dict:
    """Train and evaluate one objective; the record's metrics plus the seconds each phase took."""
    run = out / f"{dataset}_{objective}"
    cfg = load_config(
        f"{dataset}_align",
        [
            *common,
            f"out_dir={run}",
            f"align.video_path={wae}",
            f"align.objective={objective}",
            f"train.steps={steps}",
            f"train.checkpoint_every={steps}",
            "train.log_every=25",
        ],
    )
    t0 = time.perf_counter()
    if not (run / "checkpoints" / "latest").is_file():
        train(cfg)
    t1 = time.perf_counter()
    record = evaluate(run, run / "eval", device=cfg.device)
    return {"metrics": record["metrics"], "train_seconds": t1 - t0, "eval_seconds": time.perf_counter() - t1}


def reference_rows(dataset: str, wae: Path, common: list[str]) -> dict[str, dict]:
    """Two references scored by the same code: an all-black video per caption (what a model collapsed
    to the background reaches on these dark clips) and the frozen video space's reconstruction
    ``G(E_v(v))`` of the bucket's first video (what any alignment through it can reach at best)."""
    cfg = load_config(f"{dataset}_align", [*common, f"align.video_path={wae}"])
    codec = build_codec("video_wae", str(wae))
    rows: dict[str, dict] = {REFERENCE_BLACK: {"metrics": {}}, REFERENCE_WAE: {"metrics": {}}}
    for split in ("train", "heldout"):
        data = load_dataset(cfg.data, split)
        buckets = data.buckets()
        refs = [data.videos[idx] for idx in buckets.values()]
        candidates = {
            REFERENCE_BLACK: torch.zeros(len(refs), *data.videos.shape[1:]),
            REFERENCE_WAE: codec.decode(codec.encode(torch.stack([r[0] for r in refs]))),
        }
        for name, videos in candidates.items():
            rows[name]["metrics"][f"align_{split}"] = {
                "b_psnr_db": float(nearest_in_bucket(videos, refs, metric="psnr").score.mean()),
                "b_ssim": float(nearest_in_bucket(videos, refs, metric="ssim").score.mean()),
                **oracle_accuracy(cfg, videos, list(buckets)),
            }
    for row in rows.values():
        row["train_seconds"] = 0.0
    return rows


def table(results: dict[str, dict[str, dict]]) -> str:
    """A markdown table per data set, a row per objective."""
    lines = []
    for dataset, rows in results.items():
        lines += [
            f"\n**{dataset}**\n",
            "| model | " + " | ".join(c[0] for c in COLUMNS) + " | train s |",
            "|---" * (len(COLUMNS) + 2) + "|",
        ]
        for objective, res in rows.items():
            m = res["metrics"]
            cells = []
            for _, split, key, fmt in COLUMNS:
                value = m.get(split, {}).get(key)
                cells.append(fmt.format(value) if isinstance(value, float) else "–")
            lines.append(
                f"| {PAPER_NAMES[objective]} | " + " | ".join(cells) + f" | {res['train_seconds']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["shapes", "digits"], choices=["shapes", "digits"])
    p.add_argument("--objectives", nargs="+", default=list(ALIGN_OBJECTIVES), choices=ALIGN_OBJECTIVES)
    p.add_argument("--steps", type=int, default=150, help="training steps of every alignment run")
    p.add_argument("--wae-steps", type=int, default=None,
                   help="training steps of the video WAE (default: its config's, 12,000 shapes / 8,000 digits)")
    p.add_argument("--resolution", type=int, default=16, help="frame side in pixels (configs: 16)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/align_experiments")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results: dict[str, dict[str, dict]] = {}
    wae_seconds, wae_steps = {}, {}
    for dataset in args.datasets:
        common = [*data_overrides(dataset, args.resolution), f"device={args.device}"]
        wae, wae_seconds[dataset] = train_video_wae(dataset, out, args.wae_steps, common)
        wae_steps[dataset] = read_checkpoint(wae).step  # a reused run may have trained longer
        results[dataset] = reference_rows(dataset, wae, common)
        for objective in args.objectives:
            results[dataset][objective] = run_objective(dataset, objective, wae, out, args.steps, common)
            print(f"{dataset} {objective}: {time.perf_counter() - t_start:.0f} s so far", flush=True)
    header = (
        f"Hardware: {hardware()}, torch threads {torch.get_num_threads()}. Frames {args.resolution}x"
        f"{args.resolution}, 8 per clip; video WAE steps {wae_steps}, each alignment {args.steps} "
        f"steps at batch 16; total {time.perf_counter() - t_start:.0f} s. Bucket metrics, FD/MMD-WAE and "
        f"R@k over the training captions (R@k against every video of the data set); one deterministic "
        f"video per caption."
    )
    text = header + "\n" + table(results)
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps({"header": header, "video_wae_seconds": wae_seconds, "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
