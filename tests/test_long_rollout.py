"""Long lifting roll-outs of shapes video stay on the data's statistics (issue 17 item 4; README "Long
video roll-outs"; seed 001 Figure 5).

A lifting model trained on 16-frame videos is rolled out far past its training length: no roll-out may go
blank, at least 98 % of generated frames must show exactly one object (8-connected components,
``metrics.oracle.objects_per_frame``), and at least 90 % must keep their mean intensity and object size
inside the range the training videos span. With the packaged recipe (``lifting.window_noise=0.2``) this
run measured 0 of 32 blank, one object in at least 98 % of frames and 93 % of frames with a mean intensity
inside the training range. Colour is not asserted: objects change colour in about a quarter of long
roll-outs, with this recipe as with the paper's (README). The test pins the default seed and checks the
recipe end to end; the README gives the spread over seeds.
"""

from __future__ import annotations

import pytest
import torch

from tempoflow.config import load_config
from tempoflow.data import load_dataset
from tempoflow.evaluate.trajectories import timed_rollout
from tempoflow.metrics.oracle import objects_per_frame
from tempoflow.runs import initial_frames, load_run, train

LONG_RECIPE = [  # the shapes_lifting config (window_noise 0.2, the README's long-roll-out recipe) at 16 px
    "data.shapes.resolution=16",
    "data.shapes.videos_per_caption=2",
    "lifting.unet.base_width=16",
    "lifting.unet.groups=4",
    "lifting.unet.cond_dim=64",
    "train.steps=800",
    "train.batch_size=8",
    "train.checkpoint_every=800",
    "train.log_every=100",
    "device=cpu",
]


@pytest.mark.slow
def test_a_200_frame_shapes_rollout_keeps_one_object_of_training_size(tmp_path):
    cfg = load_config("shapes_lifting", [*LONG_RECIPE, f"out_dir={tmp_path / 'run'}"])
    method, cfg, _ = load_run(train(cfg).checkpoint, device="cpu")
    frames = timed_rollout(method, initial_frames(cfg, 32), 200, seed=1234)["frames"]  # (32, 202, 3, 16, 16)
    given = cfg.lifting.window
    generated = frames[:, given:]
    assert torch.isfinite(generated).all()
    counts, pixels = objects_per_frame(generated)
    train_videos = load_dataset(cfg.data, "train").videos
    train_counts, train_pixels = objects_per_frame(train_videos)
    assert (train_counts == 1).all()
    assert (pixels[:, -1] > 0).all(), f"{int((pixels[:, -1] == 0).sum())} of 32 roll-outs went blank"
    assert (counts == 1).float().mean() >= 0.98, "frames with no object or a split one"
    intensity, train_intensity = generated.mean((2, 3, 4)), train_videos.mean((2, 3, 4))
    inside = (intensity >= train_intensity.min()) & (intensity <= train_intensity.max())
    assert inside.float().mean() >= 0.9
    inside = (pixels >= train_pixels.min()) & (pixels <= train_pixels.max())
    assert inside.float().mean() >= 0.9
