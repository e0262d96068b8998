"""Scoring at any time against the renderer: grids, the linear baseline, and a perfect model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tempoflow.data.shapes import ShapesConfig, make_shapes, render_at
from tempoflow.evaluate.continuous_time import (
    continuous_time_scores,
    fixed_rate_scores,
    linear_between_frames,
    time_grid,
)
from tempoflow.methods.base import Samples


def test_time_grid_marks_training_frames_and_range():
    g = time_grid(num_frames=4, fps=8.0, out_fps=12.0, extent=2.0)  # T = 0.5 s, up to 1 s
    assert torch.allclose(g.times, torch.arange(1, 13) / 12.0)
    # 12 fps meets 8 fps at 0.25 s and 0.5 s only (frames 2 and 4)
    assert g.times[g.on_frame].tolist() == [0.25, 0.5]
    assert int(g.inside.sum()) == 6


def test_linear_baseline_reproduces_a_linear_signal():
    """Reference: a signal linear in time is interpolated exactly between frames, held outside."""
    fps, t = 8.0, torch.arange(1, 5) / 8.0
    frames = (2.0 * t + 1.0).view(1, 4, 1)  # (B, N, d)
    query = torch.tensor([0.125, 0.2, 0.3125, 0.5, 0.9])
    out = linear_between_frames(frames, fps, query)[0, :, 0]
    assert torch.allclose(out[:4], 2.0 * query[:4] + 1.0)
    assert out[4] == frames[0, -1, 0]  # past the last frame: held


class PerfectModel(nn.Module):
    """Renders the true scene of each caption's first bucket video at any requested time."""

    def __init__(self, data, num_frames: int, fps: float):
        super().__init__()
        self.data, self.num_frames, self.fps = data, num_frames, fps
        self.anchor = nn.Parameter(torch.zeros(()))
        self.frame_times = torch.arange(1, num_frames + 1) / fps

    def sample(self, captions, generator=None, options=None, times=None):
        first = self.data.buckets()
        video = torch.stack([render_at(self.data, first[c][0], times) for c in captions])
        return Samples(video=video, latents=video, nfe=0, times=times)


def test_a_perfect_model_scores_perfectly_and_beats_holding_the_last_frame():
    cfg = ShapesConfig(resolution=16, num_frames=4, colours=("red", "blue"), directions=("left", "up"))
    data = make_shapes(cfg, "train")
    model = PerfectModel(data, cfg.num_frames, cfg.fps)
    grid = time_grid(cfg.num_frames, cfg.fps, out_fps=3 * cfg.fps, extent=3.0)
    res = continuous_time_scores(model, data, data.unique_captions[:3], grid)
    s = res["summary"]
    assert s["psnr_train_frames_db"] > 100 and s["psnr_between_frames_db"] > 100 and s["psnr_extrapolated_db"] > 100
    assert s["ssim_extrapolated"] > 0.999
    assert s["baseline_hold_last_psnr_extrapolated_db"] < 40  # moving objects: holding a frame is wrong
    # the model's frames at the training times are the true ones: both baselines see the same frames
    for name in ("linear_psnr_between_db", "flow_psnr_between_db", "hold_last_psnr_extrapolated_db",
                 "flow_ssim_extrapolated"):
        assert s[f"baseline_{name}"] == pytest.approx(s[f"true_frames_{name}"], abs=1e-4)
    assert s["baseline_flow_psnr_extrapolated_db"] > s["baseline_hold_last_psnr_extrapolated_db"]
    assert len(res["baseline_flow_vs_time"]) == grid.times.numel()
    assert set(res["baselines"]) == {"linear", "flow"}
    assert res["samples"].shape == res["truth"].shape == (3, grid.times.numel(), 3, 16, 16)
    assert "baseline_flow_psnr_between_db" not in continuous_time_scores(
        model, data, data.unique_captions[:1], grid, optical_flow=False)["summary"]


class FixedRateModel(PerfectModel):
    """The true frames at the training times only (a ``flow``-like model)."""

    def sample(self, captions, generator=None, options=None):
        return super().sample(captions, times=self.frame_times)


def test_a_fixed_rate_model_is_scored_through_the_baselines_of_its_frames():
    cfg = ShapesConfig(resolution=16, num_frames=4, colours=("red", "blue"), directions=("left", "up"))
    data = make_shapes(cfg, "train")
    model = FixedRateModel(data, cfg.num_frames, cfg.fps)
    grid = time_grid(cfg.num_frames, cfg.fps, out_fps=2 * cfg.fps, extent=2.0)
    res = fixed_rate_scores(model, data, data.unique_captions[:2], grid)
    s = res["summary"]
    assert s["psnr_train_frames_db"] > 100 and s["ssim_train_frames"] > 0.999
    assert s["baseline_linear_psnr_between_db"] == pytest.approx(s["true_frames_linear_psnr_between_db"], abs=1e-4)
    assert s["baseline_flow_psnr_extrapolated_db"] > s["baseline_hold_last_psnr_extrapolated_db"]
    assert res["frames"].shape == (2, 4, 3, 16, 16) and res["truth"].shape == (2, grid.times.numel(), 3, 16, 16)
