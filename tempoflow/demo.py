"""The main job: built-in shapes data -> short ``flow`` training -> samples, metrics, report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tempoflow.config import load_config
from tempoflow.evaluate import evaluate
from tempoflow.runs import train
from tempoflow.train.checkpoint import holds_checkpoints


def run_demo(config: str | Path = "demo", overrides: list[str] = ()) -> dict:
    """Train and evaluate ``config`` (a YAML file or packaged name; default: the packaged demo); returns
    the eval record. Paths are printed for the user.

    Raises:
        ConfigError: the config is neither a file nor a packaged config, or an override is wrong.
    """
    t0 = time.perf_counter()
    cfg = load_config(config, list(overrides))
    out = Path(cfg.out_dir)
    resume = holds_checkpoints(out / "checkpoints")  # a run without one: train refuses, saying why
    if resume:
        print(f"resuming the run in {out} (delete it to start over)")
    result = train(cfg, resume=resume)
    if not result.main_process:  # under a launcher: the main process evaluates and reports, once
        return {}
    record = evaluate(result.checkpoint, out / "eval", device=cfg.device)
    m = record["metrics"]
    print()
    print(f"trained {result.step} steps in {result.seconds:.0f} s ({result.steps_per_second:.2f} steps/s) "
          f"on {record['hardware']}")
    for split in ("train", "heldout"):
        if split in m:
            r = m[split]
            print(f"  {split:8s} captions: oracle caption accuracy {r['caption_accuracy']:.2f}, "
                  f"nearest-bucket PSNR {r.get('nearest_bucket_psnr_db', float('nan')):.2f} dB")
    print(f"  sampling: NFE {m['nfe']}, {m['frames_per_second']:.1f} frames/s")
    print(f"samples: {out / 'eval' / 'samples.mp4'} (and .gif)")
    print(f"metrics: {out / 'eval' / 'metrics.json'}")
    print(f"report:  {out / 'eval' / 'report.html'}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    (out / "demo.json").write_text(json.dumps({"seconds": time.perf_counter() - t0, **m}, indent=2))
    return record
