"""Metrics: pixel and structural errors of videos, bucket metrics, distances between feature sets."""

from tempoflow.metrics.distribution import (
    GaussianFit,
    MMDEstimate,
    frechet_distance,
    frechet_distance_features,
    gaussian_fit,
    polynomial_mmd,
)
from tempoflow.metrics.video import (
    BucketMatch,
    FrameErrors,
    error_vs_time,
    mse,
    nearest_in_bucket,
    psnr,
    psnr_per_frame,
    ssim,
    ssim_per_frame,
)

__all__ = [
    "BucketMatch",
    "FrameErrors",
    "GaussianFit",
    "MMDEstimate",
    "error_vs_time",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_fit",
    "mse",
    "nearest_in_bucket",
    "polynomial_mmd",
    "psnr",
    "psnr_per_frame",
    "ssim",
    "ssim_per_frame",
]
