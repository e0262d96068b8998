"""Optical-flow interpolation (tempoflow.evaluate.frame_interpolation) against an exactly translated texture."""

from __future__ import annotations

import math

import pytest
import torch

from tempoflow.evaluate.continuous_time import linear_between_frames
from tempoflow.evaluate.frame_interpolation import flow_between_frames, optical_flow, warp
from tempoflow.metrics.video import psnr_per_frame

pytest.importorskip("skimage")

SIZE, FPS = 32, 8.0
VELOCITY = (2.25, -1.25)  # pixels per frame (x right, y down): sub-pixel
MARGIN = 5  # pixels at the border: content entering the frame is unknown to any warp


def texture(times: torch.Tensor, waves: int = 12, seed: int = 0) -> torch.Tensor:
    """A smooth random texture (sum of low-frequency sinusoids) moving at VELOCITY, exact at any time:
    ``(1, M, 3, SIZE, SIZE)`` in [0, 1] at ``times`` seconds."""
    g = torch.Generator().manual_seed(seed)
    period = 5 + 5 * torch.rand(waves, generator=g)  # 5 to 10 px: a blend of two shifted frames blurs it
    angle = torch.rand(waves, generator=g) * 2 * math.pi
    freq = torch.stack([angle.cos(), angle.sin()], 1) * (2 * math.pi / period)[:, None]  # (waves, 2) rad/px
    phase = torch.rand(waves, generator=g) * 2 * math.pi
    colour = torch.rand(waves, 3, generator=g)
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    frames = []
    for t in times.tolist():
        x, y = xs - VELOCITY[0] * FPS * t, ys - VELOCITY[1] * FPS * t  # content moves with VELOCITY
        arg = freq[:, 0, None, None] * x + freq[:, 1, None, None] * y + phase[:, None, None]  # (waves, H, W)
        frames.append(torch.einsum("wc,whx->chx", colour, torch.sin(arg)) / waves * 1.5 + 0.5)
    return torch.stack(frames)[None].clamp(0, 1)


def inner(x: torch.Tensor) -> torch.Tensor:
    return x[..., MARGIN:-MARGIN, MARGIN:-MARGIN]


def test_flow_finds_the_translation_and_warp_follows_it():
    frames = texture(torch.tensor([1.0, 2.0]) / FPS)
    flow = optical_flow(frames)  # (1, 1, 2, H, W)
    assert flow.shape == (1, 1, 2, SIZE, SIZE)
    assert inner(flow[0, 0, 0]).mean().item() == pytest.approx(VELOCITY[0], abs=0.1)
    assert inner(flow[0, 0, 1]).mean().item() == pytest.approx(VELOCITY[1], abs=0.1)
    zero = warp(frames[:, 0], torch.zeros(1, 2, SIZE, SIZE))
    assert torch.allclose(zero, frames[:, 0], atol=1e-5)  # no displacement: the image itself


def test_in_between_frame_beats_the_blend_and_end_points_are_the_frames():
    train_times = torch.arange(1, 4) / FPS
    frames = texture(train_times)
    query = torch.tensor([1.5, 2.25, 1.0, 2.0, 3.0]) / FPS  # two in-between, then the frames themselves
    truth = texture(query)
    out = flow_between_frames(frames, FPS, query)
    blend = linear_between_frames(frames, FPS, query)
    p_flow = psnr_per_frame(inner(out), inner(truth))[0]
    p_blend = psnr_per_frame(inner(blend), inner(truth))[0]
    assert (p_flow[:2] > p_blend[:2] + 8).all(), (p_flow, p_blend)  # the blend is a double image
    assert (p_flow[:2] > 32).all(), p_flow  # near the exact shifted image (bilinear resampling limits it)
    assert torch.allclose(out[:, 2:], frames, atol=1e-5)  # w = 0 and w = 1: the end frames


def test_constant_translation_extrapolates_past_the_last_frame_and_before_the_first():
    train_times = torch.arange(1, 5) / FPS
    frames = texture(train_times)
    query = torch.tensor([0.5, 5.0, 6.0]) / FPS  # half a frame before frame 1; 1 and 2 frames past T
    truth = texture(query)
    p_flow = psnr_per_frame(inner(flow_between_frames(frames, FPS, query)), inner(truth))[0]
    p_hold = psnr_per_frame(inner(linear_between_frames(frames, FPS, query)), inner(truth))[0]
    assert (p_flow > p_hold + 10).all(), (p_flow, p_hold)
    assert (p_flow > 30).all(), p_flow


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 1, 3, 8, 8), (1, 2, 2, 8, 8)])
def test_bad_frame_shapes_are_refused_with_their_shape(shape):
    with pytest.raises(ValueError, match=r"\(B, N, C, H, W\)"):
        flow_between_frames(torch.zeros(shape), FPS, torch.tensor([0.1]))


def test_bad_times_and_flow_shapes_are_refused():
    frames = torch.zeros(1, 3, 3, 8, 8)
    with pytest.raises(ValueError, match="times"):
        flow_between_frames(frames, FPS, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="flow"):
        flow_between_frames(frames, FPS, torch.tensor([0.1]), flow=torch.zeros(1, 3, 2, 8, 8))


def test_bad_rates_times_and_displacements_are_refused():
    frames = torch.zeros(1, 3, 3, 8, 8)
    flow = torch.zeros(1, 2, 2, 8, 8)
    for fps in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="fps"):
            flow_between_frames(frames, fps, torch.tensor([0.1]), flow=flow)
    with pytest.raises(ValueError, match="finite"):
        flow_between_frames(frames, FPS, torch.tensor([math.nan]), flow=flow)
    with pytest.raises(ValueError, match="times"):
        flow_between_frames(frames, FPS, [0.1], flow=flow)
    with pytest.raises(ValueError, match="displacement"):
        warp(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
