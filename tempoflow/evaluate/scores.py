"""Scores of generated videos against their captions' buckets of real videos: nearest-bucket PSNR/SSIM,
thumbnail FD/KD, FVD/KVD (I3D), B-LPIPS, oracle caption accuracy, PSNR along the clip."""

from __future__ import annotations

import torch
from torch import Tensor

from tempoflow.data import DataConfig
from tempoflow.data.shapes import parse_caption
from tempoflow.metrics.distribution import frechet_distance_features, polynomial_mmd
from tempoflow.metrics.features import thumbnail_features
from tempoflow.metrics.i3d import I3DFeatures, fvd, kvd, load_i3d
from tempoflow.metrics.lpips import LPIPS, load_lpips, lpips_video
from tempoflow.metrics.lpips import MIN_SIZE as LPIPS_MIN_SIZE
from tempoflow.metrics.oracle import caption_accuracy
from tempoflow.metrics.video import nearest_in_bucket, psnr_per_frame


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


def oracle_scores(videos: Tensor, captions: list[str], data: DataConfig | None = None) -> dict:
    """Caption accuracy read from pixels by the data set's oracle: ``data.name`` picks it (shapes, digits
    or camera); without ``data``, the caption grammar does (shapes, else camera with its default
    photographs). Captions outside the grammar give "n/a"."""
    name = data.name if data is not None else _grammar_of(captions)
    if name == "digits":
        from tempoflow.data.digits import parse_caption as parse_digits
        from tempoflow.metrics.digits_oracle import caption_accuracy as digits_accuracy

        if not _parses(parse_digits, captions):
            return {"caption_accuracy": "n/a: captions outside the digits grammar"}
        d = digits_accuracy(videos, captions, data.digits)
        return {"caption_accuracy": d.accuracy, "digit_accuracy": d.digit, "direction_accuracy": d.direction}
    if name == "camera":
        from tempoflow.data.camera import parse_caption as parse_camera
        from tempoflow.metrics.camera_oracle import caption_accuracy as camera_accuracy

        if not _parses(parse_camera, captions):
            return {"caption_accuracy": "n/a: captions outside the camera grammar"}
        c = camera_accuracy(videos, captions, data.camera if data is not None else None)
        return {"caption_accuracy": c.accuracy, "photo_accuracy": c.photo, "motion_accuracy": c.motion,
                "motion_kind_accuracy": c.kind}
    if not _parses(parse_caption, captions):
        return {"caption_accuracy": "n/a: captions outside the shapes grammar"}
    score = caption_accuracy(videos, captions)
    return {"caption_accuracy": score.accuracy, "colour_accuracy": score.colour,
            "shape_accuracy": score.shape, "direction_accuracy": score.direction}


def _parses(parse, captions: list[str]) -> bool:
    try:
        for c in set(captions):
            parse(c)
    except ValueError:
        return False
    return True


def _grammar_of(captions: list[str]) -> str:
    """"camera" when every caption is a camera caption, else "shapes" (the default grammar)."""
    from tempoflow.data.camera import parse_caption as parse_camera

    return "camera" if captions and _parses(parse_camera, captions) else "shapes"


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
