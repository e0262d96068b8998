"""``tempoflow eval``: sample a fixed, seeded evaluation set from a checkpoint, score it, report it.

Writes ``metrics.json`` (metrics + config, checkpoint hash, seed, hardware, timing), the samples as
``samples.mp4`` / ``samples.gif`` (one tile per sample, a row per prompt) and ``report.html``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from tempoflow.config import ExperimentConfig, to_dict
from tempoflow.data import is_field_data, load_dataset
from tempoflow.data.io import write_video
from tempoflow.data.shapes import parse_caption
from tempoflow.evaluate_time import continuous_time_scores, time_grid
from tempoflow.methods import Method
from tempoflow.metrics.distribution import frechet_distance_features, polynomial_mmd
from tempoflow.metrics.features import thumbnail_features
from tempoflow.metrics.i3d import I3DFeatures, fvd, kvd, load_i3d
from tempoflow.metrics.lpips import LPIPS, load_lpips, lpips_video
from tempoflow.metrics.lpips import MIN_SIZE as LPIPS_MIN_SIZE
from tempoflow.metrics.oracle import caption_accuracy
from tempoflow.metrics.video import nearest_in_bucket, psnr, psnr_per_frame, ssim
from tempoflow.report.html import VideoCell, read_log, write_comparison, write_report
from tempoflow.train.run import load_method

VIEW_SCALE = 4  # tiny training resolutions are upscaled (nearest) in the files people look at


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


def _spread(items: list[str], k: int) -> list[str]:
    """``k`` items evenly spaced through ``items`` (first and last included)."""
    return [items[round(i * (len(items) - 1) / max(k - 1, 1))] for i in range(k)]


def default_prompts(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """``(split, caption)`` pairs: evenly spread training captions, then held-out combinations."""
    if cfg.eval.prompts:
        return [("custom", p) for p in cfg.eval.prompts]
    n = cfg.eval.num_prompts
    train = load_dataset(cfg.data, "train").unique_captions
    held = load_dataset(cfg.data, "heldout").unique_captions
    n_held = min(len(held), n // 2)
    n_train = n - n_held
    return [("train", c) for c in _spread(train, n_train)] + [("heldout", c) for c in _spread(held, n_held)]


def tile(videos: Tensor, rows: int) -> Tensor:
    """``(B, T, C, H, W)`` -> one video ``(T, C, rows*H, cols*W)`` with a 1-pixel grey gutter."""
    B, T, C, H, W = videos.shape
    cols = -(-B // rows)
    padded = F.pad(videos, (1, 1, 1, 1), value=0.5)
    canvas = padded.new_full((rows * cols, T, C, H + 2, W + 2), 0.5)
    canvas[:B] = padded
    canvas = canvas.view(rows, cols, T, C, H + 2, W + 2).permute(2, 3, 0, 4, 1, 5)
    return canvas.reshape(T, C, rows * (H + 2), cols * (W + 2))


def upscale(video: Tensor, factor: int = VIEW_SCALE) -> Tensor:
    """``(T, C, H, W)`` nearest-neighbour upscaling so small videos are visible."""
    return F.interpolate(video, scale_factor=factor, mode="nearest") if factor > 1 else video


def unique_videos(buckets: list[Tensor]) -> Tensor:
    """All videos of the given buckets, each bucket once (samples of one caption share its tensor)."""
    return torch.cat(list({id(b): b for b in buckets}.values()))


def bucket_scores(samples: Tensor, buckets: list[Tensor], feature_size: int) -> dict:
    """One-to-many scores of samples against their captions' buckets of real videos.

    B-PSNR / B-SSIM: the best match in the sample's own bucket. ``fd_thumb`` / ``kd_thumb``:
    Fréchet distance and polynomial-kernel MMD² between thumbnail features of the samples and of
    all videos of the same buckets (offline features, NOT FVD/KVD; see ``metrics.features``).
    """
    real = unique_videos(buckets)
    f_fake = thumbnail_features(samples, feature_size)
    f_real = thumbnail_features(real, feature_size)
    scores = {
        "nearest_bucket_psnr_db": float(nearest_in_bucket(samples, buckets, metric="psnr").score.mean()),
        "nearest_bucket_ssim": float(nearest_in_bucket(samples, buckets, metric="ssim").score.mean()),
    }
    if min(len(f_fake), len(f_real)) >= 2:
        scores["fd_thumb"] = float(frechet_distance_features(f_fake, f_real))
        scores["kd_thumb"] = float(polynomial_mmd(f_fake, f_real, num_subsets=10).mean)
    return scores


def fvd_extractor(i3d_path: str, num_frames: int, device: torch.device) -> I3DFeatures | str:
    """The I3D logits extractor of FVD/KVD, or the reason it does not apply (a string)."""
    if not i3d_path:
        return "n/a: no I3D weights (set eval.i3d_path to a local Kinetics-400 I3D file)"
    if num_frames < 16:
        return f"n/a: FVD's I3D takes 16-frame clips, these videos have {num_frames} frames"
    return I3DFeatures(load_i3d(i3d_path).to(device))


def oracle_scores(videos: Tensor, captions: list[str]) -> dict:
    """Caption accuracy read from pixels by the shapes oracle (n/a for captions outside its grammar)."""
    try:
        for c in set(captions):
            parse_caption(c)
    except ValueError:
        return {"caption_accuracy": "n/a: captions outside the shapes grammar"}
    score = caption_accuracy(videos, captions)
    return {"caption_accuracy": score.accuracy, "colour_accuracy": score.colour,
            "shape_accuracy": score.shape, "direction_accuracy": score.direction}


def i3d_scores(samples: Tensor, buckets: list[Tensor], i3d: I3DFeatures | str) -> dict:
    """FVD and KVD of samples against the videos of their buckets, or the reason they do not apply."""
    real = unique_videos(buckets)
    if isinstance(i3d, str):
        return {"fvd": i3d}
    if min(len(real), len(samples)) < 2:
        return {"fvd": "n/a: FVD needs at least 2 real and 2 generated videos"}
    f_fake, f_real = i3d(samples), i3d(real)
    return {"fvd": float(fvd(f_real, f_fake)), "kvd": float(kvd(f_real, f_fake, num_subsets=10).mean)}


def lpips_model(backbone: str, lin: str, size: tuple[int, int]) -> LPIPS | str:
    """LPIPS (AlexNet, v0.1) from local weight files, or the reason it does not apply (a string)."""
    if not backbone or not lin:
        return "n/a: no LPIPS weights (set eval.lpips_backbone and eval.lpips_lin to local files)"
    if min(size) < LPIPS_MIN_SIZE:
        return f"n/a: LPIPS's AlexNet needs frames of at least {LPIPS_MIN_SIZE} pixels, these are {tuple(size)}"
    return load_lpips(backbone, lin)


def lpips_scores(samples: Tensor, buckets: list[Tensor], model: LPIPS | str) -> dict:
    """B-LPIPS: the smallest LPIPS distance of each sample to a video of its bucket, averaged."""
    if isinstance(model, str):
        return {"nearest_bucket_lpips": model}
    best = []
    for sample, bucket in zip(samples, buckets):
        d = lpips_video(model, sample[None].expand_as(bucket), bucket)  # (K,)
        best.append(d.min())
    return {"nearest_bucket_lpips": float(torch.stack(best).mean())}


def matched_psnr_vs_time(samples: Tensor, buckets: list[Tensor]) -> Tensor:
    """PSNR per frame ``(T,)`` (mean over samples) against each sample's best bucket match: does
    quality hold up along the clip?"""
    match = nearest_in_bucket(samples, buckets, metric="psnr").index
    matched = torch.stack([b[int(j)] for b, j in zip(buckets, match)])  # (B, T, C, H, W)
    return psnr_per_frame(samples, matched).mean(0)


def sample_prompts(method: Method, prompts: list[str], per_prompt: int, seed: int) -> tuple[Tensor, int, float]:
    """All samples ``(P*K, T, C, H, W)`` (prompt-major), the NFE per batch and the seconds taken."""
    device = next(method.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    captions = [p for p in prompts for _ in range(per_prompt)]
    t0 = time.perf_counter()
    out = method.sample(captions, generator=gen, progress=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out.video.float().cpu(), out.nfe, time.perf_counter() - t0


def flatten(metrics: dict, prefix: str = "") -> dict:
    """``{"train": {"psnr": 1}}`` -> ``{"train/psnr": 1}`` for one-row-per-run tables."""
    flat = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}/"))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def compare(
    checkpoints: list[str | Path], out_dir: str | Path, device: str = "auto", overrides: dict | None = None
) -> list[dict]:
    """Evaluate several checkpoints with the same settings and put them side by side in one report.

    Each run is evaluated into ``out_dir/<i>_<name>/``; ``out_dir/report.html`` and
    ``out_dir/comparison.json`` hold the joint table (a row per run).
    """
    out = Path(out_dir)
    records, names = [], []
    for i, ckpt in enumerate(checkpoints):
        name = f"{i}_{Path(ckpt).resolve().name}"
        records.append(evaluate(ckpt, out / name, device=device, overrides=overrides))
        names.append(name)
    rows = [(n, {"step": r["step"], **flatten(r["metrics"])}) for n, r in zip(names, records)]
    video_rows = []
    for j, p in enumerate(records[0]["prompts"]):
        cells = [VideoCell(n, out / n / "clips" / f"prompt_{j:02d}.gif") for n in names]
        video_rows.append((f"[{p['split']}] {p['caption']}", [c for c in cells if c.gif.is_file()]))
    logs = {n: read_log(Path(r["checkpoint"]).parent.parent / "log.jsonl") for n, r in zip(names, records)}
    write_comparison(out / "report.html", f"tempoflow comparison of {len(names)} runs", rows, video_rows, logs)
    (out / "comparison.json").write_text(json.dumps([{"run": n, **m} for n, m in rows], indent=2))
    return records


def write_record(out: Path, ckpt, cfg: ExperimentConfig, t_start: float, metrics: dict, **extra) -> dict:
    """Write ``out/metrics.json``: the metrics, what produced them (checkpoint path and SHA-256, step,
    config, hardware) and how long evaluation took, plus any method-specific ``extra`` entries."""
    record = {
        "metrics": metrics,
        **extra,
        "eval_seconds": time.perf_counter() - t_start,
        "checkpoint": str(ckpt.path),
        "checkpoint_sha256": ckpt.digest(),
        "step": ckpt.step,
        "hardware": hardware(),
        "config": to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
    return record


def evaluate_reconstruction(method: Method, cfg: ExperimentConfig, ckpt, out: Path, t_start: float) -> dict:
    """An autoencoder's report: reconstruction PSNR/SSIM and oracle caption accuracy on the held-out
    videos (test split and held-out combinations), truth next to reconstruction."""
    device = next(method.parameters()).device
    metrics: dict = {}
    cells = []
    fps = float(ckpt.meta.get("fps", 8.0))
    fields = is_field_data(cfg.data)
    for split in ("test",) if fields else ("test", "heldout"):
        data = load_dataset(cfg.data, split)
        if len(data) == 0:
            continue
        videos = data.videos
        recon = torch.cat([method.reconstruct(v.to(device)).float().cpu() for v in videos.split(64)])
        # fields: PSNR/SSIM over the truth's own range (its max − min), as for any signal not in [0, 1]
        data_range = float(videos.max() - videos.min()) if fields else 1.0
        metrics[split] = {
            "videos": len(data),
            "psnr_db": float(psnr(recon, videos, data_range).mean()),
            "ssim": float(ssim(recon, videos, data_range).mean()),
            "data_range": data_range,
        }
        if data.captions is not None:
            metrics[split].update({f"reconstruction_{k}": v for k, v in oracle_scores(recon, data.captions).items()})
        if fields:  # shown as video: the truth's range mapped to [0, 1]
            lo = float(videos.min())
            videos, recon = (videos - lo) / data_range, ((recon - lo) / data_range).clamp(0, 1)
        pairs = torch.stack([videos[:4], recon[:4]], dim=1).flatten(0, 1)  # truth, reconstruction, ...
        path = write_video(out / "clips" / f"{split}.gif", upscale(tile(pairs, min(4, len(data)))), fps=fps)
        cells.append(VideoCell(f"[{split}] truth | reconstruction", path))
    record = write_record(out, ckpt, cfg, t_start, metrics, latent_shape=list(method.latent_shape),
                          latent_std=float(method.latent_std))
    write_report(out / "report.html", f"tempoflow autoencoder: {Path(cfg.out_dir).name} @ step {ckpt.step}",
                 {"step": ckpt.step, "hardware": record["hardware"], **metrics}, cells,
                 read_log(ckpt.path.parent.parent / "log.jsonl"))
    return record


def time_scores(method: Method, cfg: ExperimentConfig, pairs: list[tuple[str, str]], metrics: dict,
                out: Path, seed: int) -> tuple[dict[str, list[tuple[float, float]]], list[VideoCell]]:
    """Interpolation/extrapolation scores of a continuous-time method (``tempoflow.evaluate_time``):
    adds ``time_*`` entries to ``metrics[split]``; returns the curves and truth|sample clips on the grid."""
    grid = time_grid(method.num_frames, method.fps, method.fps * cfg.eval.time_rate, cfg.eval.time_extent)
    series: dict[str, list[tuple[float, float]]] = {}
    cells = []
    for split in ("train", "heldout"):
        captions = [c for s, c in pairs if s == split]
        if not captions:
            continue
        res = continuous_time_scores(method, load_dataset(cfg.data, split), captions, grid, seed)
        metrics[split].update({f"time_{k}": v for k, v in res["summary"].items()})
        series[f"{split}: model"] = res["psnr_vs_time"]
        series[f"{split}: baseline"] = res["baseline_vs_time"]
        pairs_video = torch.stack([res["truth"][:4], res["samples"][:4]], dim=1).flatten(0, 1)
        fps = method.fps * cfg.eval.time_rate
        path = write_video(out / "clips" / f"time_{split}.gif", upscale(tile(pairs_video, min(4, len(captions)))),
                           fps=fps)
        cells.append(VideoCell(f"[{split}] truth | sample at {fps:g} fps over {float(grid.times[-1]):g} s "
                               f"(trained on {method.num_frames / method.fps:g} s at {method.fps:g} fps)", path))
    metrics["time_grid_fps"] = method.fps * cfg.eval.time_rate
    metrics["time_grid_seconds"] = float(grid.times[-1])
    return series, cells


def evaluate(
    checkpoint: str | Path, out_dir: str | Path | None = None, device: str = "auto", overrides: dict | None = None
) -> dict:
    """Sample, score and report one checkpoint; returns the metrics dict written to ``metrics.json``."""
    t_start = time.perf_counter()
    method, cfg, ckpt = load_method(checkpoint, device=device, overrides=overrides)
    out = Path(out_dir) if out_dir else ckpt.path.parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    if method.task == "reconstruction":
        return evaluate_reconstruction(method, cfg, ckpt, out, t_start)
    if method.task == "trajectory":  # lifting, ardm; imported here as that module builds on this one
        from tempoflow.evaluate_trajectories import evaluate_trajectories

        return evaluate_trajectories(method, cfg, ckpt, out, t_start)
    sc = cfg.sample
    pairs = default_prompts(cfg)
    prompts = [c for _, c in pairs]
    K = sc.num_per_prompt
    videos, nfe, seconds = sample_prompts(method, prompts, K, sc.seed)
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
    times = torch.arange(1, T + 1) / float(ckpt.meta.get("fps", 8.0))  # frame k at k / fps seconds
    for split in ("train", "heldout", "custom"):
        sel = [i for i, s in enumerate(splits) if s == split]
        if not sel:
            continue
        sel_captions = [captions[i] for i in sel]
        metrics[split] = row = {"samples": len(sel), **oracle_scores(videos[sel], sel_captions)}
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
        "solver": sc.solver,
        "steps": sc.steps,
        "guidance": sc.guidance,
        "sampling_seconds": seconds,
        "frames_per_second": B * T / seconds,
    })
    extra_cells = []
    if hasattr(method, "extra_evaluation"):  # a method's own scores and figures (align: tempoflow.evaluate_align)
        extra_metrics, extra_cells = method.extra_evaluation(cfg, out)
        metrics.update(extra_metrics)

    curves = {"PSNR vs time against the best-matching bucket video (dB)": ("seconds", over_time)} if over_time else {}
    time_cells = []
    if getattr(method, "continuous_time", False):
        series, time_cells = time_scores(method, cfg, pairs, metrics, out, sc.seed)
        curves["PSNR at any time against the renderer (dB): model vs baselines (linear between frames, "
               "hold last frame)"] = ("seconds", series)

    rows = len(prompts)
    grid = upscale(tile(videos, rows))
    fps = float(ckpt.meta.get("fps", 8.0))
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
        read_log(ckpt.path.parent.parent / "log.jsonl"),
        notes=f"{K} samples per prompt, seed {sc.seed}, {sc.solver} x {sc.steps}, guidance {sc.guidance}.",
        curves=curves,
    )
    return record
