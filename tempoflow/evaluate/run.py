"""``tempoflow eval``: load a checkpoint and run the evaluation of the task its method declares
(``Method.task``); ``compare`` puts several runs side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tempoflow.errors import ConfigError
from tempoflow.evaluate.alignment import evaluate_alignment
from tempoflow.evaluate.reconstruction import evaluate_reconstruction
from tempoflow.evaluate.record import flatten
from tempoflow.evaluate.text_to_video import evaluate_text_to_video
from tempoflow.evaluate.trajectories import evaluate_trajectories
from tempoflow.report.html import VideoCell, read_log, write_comparison
from tempoflow.runs import load_run

# Method.task -> its evaluation: (method, cfg, checkpoint, out folder, start time) -> record
EVALUATIONS = {
    "text-to-video": evaluate_text_to_video,
    "alignment": lambda *args: evaluate_text_to_video(*args, extra=evaluate_alignment),
    "reconstruction": evaluate_reconstruction,
    "trajectory": evaluate_trajectories,
}


def evaluate(
    checkpoint: str | Path, out_dir: str | Path | None = None, device: str = "auto", overrides: dict | None = None,
    weights: str = "ema",
) -> dict:
    """Sample, score and report one checkpoint into ``out_dir`` (default ``<run>/eval``) with its EMA
    weights (``weights="ema"``) or its trained ones (``"raw"``); returns the record written to
    ``metrics.json``.

    Raises:
        CheckpointError: the checkpoint cannot be loaded (the EMA weights missing: pass ``weights="raw"``).
        ConfigError: its method declares a task with no evaluation; ``weights`` neither "ema" nor "raw".
    """
    t_start = time.perf_counter()
    method, cfg, ckpt = load_run(checkpoint, device=device, overrides=overrides, weights=weights)
    if method.task not in EVALUATIONS:
        raise ConfigError(f"method '{method.name}' declares task '{method.task}', which has no evaluation "
                          f"(known: {', '.join(EVALUATIONS)})")
    out = Path(out_dir) if out_dir else ckpt.run_folder / "eval"
    out.mkdir(parents=True, exist_ok=True)
    return EVALUATIONS[method.task](method, cfg, ckpt, out, t_start)


def compare(
    checkpoints: list[str | Path], out_dir: str | Path, device: str = "auto", overrides: dict | None = None,
    weights: str = "ema",
) -> list[dict]:
    """Evaluate several checkpoints with the same settings (and the same ``weights``, as :func:`evaluate`)
    and put them side by side in one report.

    Each run is evaluated into ``out_dir/<i>_<name>/``; ``out_dir/report.html`` and
    ``out_dir/comparison.json`` hold the joint table (a row per run).
    """
    out = Path(out_dir)
    records, names = [], []
    for i, ckpt in enumerate(checkpoints):
        name = f"{i}_{Path(ckpt).resolve().name}"
        records.append(evaluate(ckpt, out / name, device=device, overrides=overrides, weights=weights))
        names.append(name)
    rows = [(n, {"step": r["step"], **flatten(r["metrics"])}) for n, r in zip(names, records)]
    video_rows = []
    for j, p in enumerate(records[0]["prompts"]):
        cells = [VideoCell(n, out / n / "clips" / f"prompt_{j:02d}.gif") for n in names]
        video_rows.append((f"[{p['split']}] {p['caption']}", [c for c in cells if c.gif.is_file()]))
    logs = {n: read_log(Path(r["run"]) / "log.jsonl") for n, r in zip(names, records)}
    write_comparison(out / "report.html", f"tempoflow comparison of {len(names)} runs", rows, video_rows, logs)
    (out / "comparison.json").write_text(json.dumps([{"run": n, **m} for n, m in rows], indent=2))
    return records
