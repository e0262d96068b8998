"""``tempoflow eval`` for autoencoders (``autoencoder``, ``video_wae``): reconstruction PSNR/SSIM and
oracle caption accuracy on held-out videos, truth next to reconstruction."""

from __future__ import annotations

from pathlib import Path

import torch

from tempoflow.config import ExperimentConfig
from tempoflow.data import is_field_data, load_dataset
from tempoflow.data.io import write_video
from tempoflow.evaluate.record import write_record
from tempoflow.evaluate.scores import oracle_scores
from tempoflow.methods import Method
from tempoflow.metrics.video import psnr, ssim
from tempoflow.report.html import VideoCell, read_log, write_report
from tempoflow.viewing import tile, upscale


def evaluate_reconstruction(method: Method, cfg: ExperimentConfig, ckpt, out: Path, t_start: float) -> dict:
    """An autoencoder's report: reconstruction PSNR/SSIM and oracle caption accuracy on the held-out
    videos (test split and held-out combinations), truth next to reconstruction."""
    device = next(method.parameters()).device
    metrics: dict = {}
    cells = []
    fps = ckpt.fps
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
            oracle = oracle_scores(recon, data.captions, cfg.data)
            metrics[split].update({f"reconstruction_{k}": v for k, v in oracle.items()})
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
                 read_log(ckpt.run_folder / "log.jsonl"))
    return record
