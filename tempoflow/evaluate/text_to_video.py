"""``tempoflow eval`` for text-to-video methods (``flow``, ``vlfm``, ``align``): sample a fixed, seeded
evaluation set, score it against the captions' buckets, report it.

Writes ``metrics.json`` (metrics + config, checkpoint hash, seed, hardware, timing), the samples as
``samples.mp4`` / ``samples.gif`` (one tile per sample, a row per prompt), ``samples.safetensors`` and
``report.html``. A continuous-time method (``vlfm``) adds interpolation/extrapolation scores
(``tempoflow.evaluate.continuous_time``); ``align`` adds its alignment scores and latent-space figures
(``tempoflow.evaluate.alignment``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from tempoflow.config import ExperimentConfig, SampleConfig
from tempoflow.data import load_dataset, video_shape
from tempoflow.data.io import write_video
from tempoflow.data.video_reader import require_memory
from tempoflow.errors import ConfigError
from tempoflow.evaluate.continuous_time import continuous_time_scores, grid_size, time_grid
from tempoflow.evaluate.record import write_record
from tempoflow.evaluate.scores import (
    bucket_scores,
    fvd_extractor,
    i3d_scores,
    lpips_model,
    lpips_scores,
    matched_psnr_vs_time,
    oracle_scores,
)
from tempoflow.methods import Method, Samples
from tempoflow.report.html import VideoCell, read_log, write_report
from tempoflow.viewing import VIEW_SCALE, tile, upscale

# A method's own scores and report cells, added to the text-to-video ones (align's alignment scores).
ExtraScores = Callable[[Method, ExperimentConfig, Path], tuple[dict, list[VideoCell]]]


def _spread(items: list[str], k: int) -> list[str]:
    """``k`` items evenly spaced through ``items`` (first and last included)."""
    return [items[round(i * (len(items) - 1) / max(k - 1, 1))] for i in range(k)]


def default_prompts(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """``(split, caption)`` pairs: evenly spread training captions, then held-out combinations."""
    if cfg.eval.prompts:
        return [("custom", p) for p in cfg.eval.prompts]
    n = cfg.eval.num_prompts
    # uncaptioned videos (trained on the null condition) have no caption to be scored against
    train = [c for c in load_dataset(cfg.data, "train").unique_captions if c.strip()]
    held = [c for c in load_dataset(cfg.data, "heldout").unique_captions if c.strip()]
    if not train:
        raise ConfigError("the run's training videos have no captions (it learned the unconditional model), so "
                          "there is no caption to sample and score: pass eval.prompts=['...'] to sample anyway")
    n_held = min(len(held), n // 2)
    n_train = n - n_held
    return [("train", c) for c in _spread(train, n_train)] + [("heldout", c) for c in _spread(held, n_held)]


def sample_prompts(method: Method, prompts: list[str], sc: SampleConfig) -> tuple[Samples, float]:
    """``sc.num_per_prompt`` samples of every prompt from seed ``sc.seed``: the samples (video
    ``(P*K, T, C, H, W)``, prompt-major, on the CPU) and the seconds taken."""
    device = next(method.parameters()).device
    gen = torch.Generator(device=device).manual_seed(sc.seed)
    captions = [p for p in prompts for _ in range(sc.num_per_prompt)]
    t0 = time.perf_counter()
    out = method.sample(captions, generator=gen, options=sc, progress=sys.stderr.isatty())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out.video = out.video.float().cpu()
    return out, seconds


def time_scores(method: Method, cfg: ExperimentConfig, pairs: list[tuple[str, str]], metrics: dict,
                out: Path, seed: int) -> tuple[dict[str, list[tuple[float, float]]], list[VideoCell]]:
    """Interpolation/extrapolation scores of a continuous-time method (``tempoflow.evaluate.continuous_time``):
    adds ``time_*`` entries to ``metrics[split]``; returns the curves and truth|sample clips on the grid."""
    grid = time_grid(method.num_frames, method.fps, method.fps * cfg.eval.time_rate, cfg.eval.time_extent)
    series: dict[str, list[tuple[float, float]]] = {}
    cells = []
    for split in ("train", "heldout"):
        captions = [c for s, c in pairs if s == split]
        if not captions:
            continue
        res = continuous_time_scores(method, load_dataset(cfg.data, split), captions, grid, seed, cfg.sample)
        metrics[split].update({f"time_{k}": v for k, v in res["summary"].items()})
        series[f"{split}: model"] = res["psnr_vs_time"]
        series[f"{split}: baseline"] = res["baseline_vs_time"]
        if "baseline_flow_vs_time" in res:
            series[f"{split}: optical-flow baseline"] = res["baseline_flow_vs_time"]
        pairs_video = torch.stack([res["truth"][:4], res["samples"][:4]], dim=1).flatten(0, 1)
        fps = method.fps * cfg.eval.time_rate
        path = write_video(out / "clips" / f"time_{split}.gif", upscale(tile(pairs_video, min(4, len(captions)))),
                           fps=fps)
        cells.append(VideoCell(f"[{split}] truth | sample at {fps:g} fps over {float(grid.times[-1]):g} s "
                               f"(trained on {method.num_frames / method.fps:g} s at {method.fps:g} fps)", path))
    metrics["time_grid_fps"] = method.fps * cfg.eval.time_rate
    metrics["time_grid_seconds"] = float(grid.times[-1])
    return series, cells


def _require_grid_memory(method: Method, cfg: ExperimentConfig, pairs: list[tuple[str, str]]) -> None:
    """Refuse, before sampling, a time grid (:func:`time_scores`) whose frames cannot fit in host memory:
    a split's samples on the grid and at the training frame times, their copy on the grid and the truth
    (3 float copies), and the upscaled clip of 4 truths and 4 samples."""
    times = grid_size(method.num_frames, method.fps, method.fps * cfg.eval.time_rate, cfg.eval.time_extent)
    _, C, H, W = video_shape(cfg.data)
    most = max(sum(s == split for s, _ in pairs) for split in ("train", "heldout"))  # captions scored at once
    need = 4 * C * H * W * (3 * most * (times + method.num_frames) + 8 * times * VIEW_SCALE**2)
    require_memory(need, f"scoring {most} samples at {times} times (eval.time_rate {cfg.eval.time_rate}, "
                         f"eval.time_extent {cfg.eval.time_extent:g}) at {H}x{W}",
                   "lower eval.time_rate or eval.time_extent")


def evaluate_text_to_video(method: Method, cfg: ExperimentConfig, ckpt, out: Path, t_start: float,
                           extra: ExtraScores | None = None) -> dict:
    """Sample, score and report one text-to-video checkpoint; returns the record written to ``metrics.json``."""
    sc = cfg.sample
    pairs = default_prompts(cfg)
    if method.continuous_time:  # its time grid, refused before anything is sampled when too large
        _require_grid_memory(method, cfg, pairs)
    prompts = [c for _, c in pairs]
    K = sc.num_per_prompt
    out_samples, seconds = sample_prompts(method, prompts, sc)
    videos, nfe = out_samples.video, out_samples.nfe
    B, T = videos.shape[:2]

    # One-to-many scores: PSNR against the closest video of the caption's bucket, oracle accuracy.
    refs = {}
    for split in {s for s, _ in pairs if s != "custom"}:
        data = load_dataset(cfg.data, split)
        buckets = data.buckets()
        refs.update({c: data.videos[idx] for c, idx in buckets.items()})
    captions = [c for c in prompts for _ in range(K)]
    splits = [s for s, _ in pairs for _ in range(K)]
    metrics: dict = {}
    over_time: dict[str, list[tuple[float, float]]] = {}
    i3d = fvd_extractor(cfg.eval.i3d_path, T, next(method.parameters()).device)
    lpips = lpips_model(cfg.eval.lpips_backbone, cfg.eval.lpips_lin, videos.shape[-2:])
    times = torch.arange(1, T + 1) / ckpt.fps  # frame k at k / fps seconds
    for split in ("train", "heldout", "custom"):
        sel = [i for i, s in enumerate(splits) if s == split]
        if not sel:
            continue
        sel_captions = [captions[i] for i in sel]
        metrics[split] = row = {"samples": len(sel), **oracle_scores(videos[sel], sel_captions, cfg.data)}
        have = [i for i in sel if captions[i] in refs]
        if have:
            buckets = [refs[captions[i]] for i in have]
            row.update(bucket_scores(videos[have], buckets, cfg.eval.feature_size))
            row.update(i3d_scores(videos[have], buckets, i3d))
            row.update(lpips_scores(videos[have], buckets, lpips))
            psnr_t = matched_psnr_vs_time(videos[have], buckets)
            over_time[split] = [(float(t), float(p)) for t, p in zip(times, psnr_t)]
    metrics.update({
        "nfe": nfe,
        **out_samples.settings,  # what the sampler used (vlfm: steps per frame, not sample.steps)
        "sampling_seconds": seconds,
        "frames_per_second": B * T / seconds,
    })
    extra_cells = []
    if extra is not None:
        extra_metrics, extra_cells = extra(method, cfg, out)
        metrics.update(extra_metrics)

    curves = {"PSNR vs time against the best-matching bucket video (dB)": ("seconds", over_time)} if over_time else {}
    time_cells = []
    if method.continuous_time:
        series, time_cells = time_scores(method, cfg, pairs, metrics, out, sc.seed)
        curves["PSNR at any time against the renderer (dB): model vs baselines (linear between frames, "
               "hold last frame)"] = ("seconds", series)

    rows = len(prompts)
    grid = upscale(tile(videos, rows))
    fps = ckpt.fps
    write_video(out / "samples.mp4", grid, fps=fps)
    write_video(out / "samples.gif", grid, fps=fps)
    cells = []
    clips = out / "clips"
    for i, (split, caption) in enumerate(pairs):
        samples = videos[i * K:(i + 1) * K]
        label = f"[{split}] {caption}: " + ("truth | samples" if caption in refs else "samples")
        if caption in refs:  # a ground-truth video of the bucket first, then the samples
            samples = torch.cat([refs[caption][:1], samples])
        path = write_video(clips / f"prompt_{i:02d}.gif", upscale(tile(samples, 1)), fps=fps)
        cells.append(VideoCell(label, path))
    cells += time_cells + extra_cells
    record = write_record(out, ckpt, cfg, t_start, metrics, psnr_vs_time=over_time, seed=sc.seed,
                          prompts=[{"split": s, "caption": c} for s, c in pairs])
    # the raw samples (float16 halves the file), to rescore or compare later without sampling again
    save_file({"videos": videos.half().contiguous()}, str(out / "samples.safetensors"),
              metadata={"captions": json.dumps(captions), "splits": json.dumps(splits)})
    flat = {"step": ckpt.step, "hardware": record["hardware"], **metrics}
    write_report(
        out / "report.html",
        f"tempoflow {cfg.method}: {Path(cfg.out_dir).name} @ step {ckpt.step}",
        flat,
        cells,
        read_log(ckpt.run_folder / "log.jsonl"),
        notes=f"{K} samples per prompt, seed {sc.seed}, "
              + ", ".join(f"{k} {v}" for k, v in out_samples.settings.items()) + ".",
        curves=curves,
    )
    return record
