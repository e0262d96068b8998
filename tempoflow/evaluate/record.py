"""What every evaluation writes beside its scores: where it ran and what produced it (``metrics.json``)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from tempoflow.config import ExperimentConfig
from tempoflow.configio import flatten as flatten_tree
from tempoflow.configio import to_dict
from tempoflow.runs import held_weights


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """A one-line description of where this ran (CPU: model, cores, torch threads)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return (f"CPU {cpu_name()} x{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")


def flatten(metrics: dict) -> dict:
    """``{"train": {"psnr": 1}}`` -> ``{"train/psnr": 1}`` for one-row-per-run tables."""
    return flatten_tree(metrics, sep="/")


def write_record(out: Path, ckpt, cfg: ExperimentConfig, t_start: float, metrics: dict, **extra) -> dict:
    """Write ``out/metrics.json``: the metrics, what produced them (checkpoint path, which weights —
    ``ema`` or ``raw`` — from which file and that file's SHA-256, step, config, hardware) and how long
    evaluation took, plus any method-specific ``extra`` entries."""
    record = {
        "metrics": metrics,
        **extra,
        "eval_seconds": time.perf_counter() - t_start,
        "checkpoint": str(ckpt.path),
        "run": str(ckpt.run_folder),
        "weights": held_weights(ckpt),
        "weights_file": ckpt.loaded,
        "checkpoint_sha256": ckpt.digest(),  # of weights_file
        "step": ckpt.step,
        "hardware": hardware(),
        "config": to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
    return record
