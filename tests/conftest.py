"""Shared tiny configurations: every model test runs in seconds on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from tempoflow.config import load_config

# A video WAE small enough for the default suite (tests of video_wae and of align, which needs one).
TINY_VIDEO_WAE = [
    "method=video_wae",
    "video_wae.width=8",
    "video_wae.multipliers=[1, 2]",
    "video_wae.d_z=16",
    "video_wae.disc_width=8",
    "video_wae.disc_layers=2",
    "video_wae.latent_disc_width=32",
]
TINY = [
    "text.encoder=hashing",
    "text.dim=16",
    "data.shapes.resolution=16",
    "data.shapes.num_frames=4",
    "data.shapes.videos_per_caption=2",
    "data.shapes.colours=[red, green, blue]",
    "data.shapes.directions=[left, right, up, down]",
    "data.shapes.heldout_pairs=[[red, triangle]]",
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
    "model.patch_t=2",
    "model.patch_hw=4",
    "sample.steps=2",
    "sample.num_per_prompt=1",
    "train.batch_size=4",
    "train.steps=4",
    "train.warmup_steps=1",
    "train.log_every=2",
    "train.checkpoint_every=2",
    "eval.num_prompts=2",
    "device=cpu",
    "train.cpu_threads=1",
]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny models: a second thread only adds synchronisation


@pytest.fixture
def tiny_cfg(tmp_path):
    """A tiny ``flow`` experiment writing into a temporary folder."""

    def make(*overrides: str):
        return load_config(None, [*TINY, f"out_dir={tmp_path / 'run'}", *overrides])

    return make


def overfit_l1(method, batch: dict, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    """Train ``method`` on one fixed ``batch`` with AdamW for ``steps`` steps; its reported ``l1`` at the
    first and the last step (an autoencoder that can learn must drive it down)."""
    opt = torch.optim.AdamW(method.parameters(), lr=lr)
    l1 = []
    for i in range(steps):
        out = method.loss(batch, torch.Generator().manual_seed(i))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        l1.append(out["l1"].item())
    return l1[0], l1[-1]
