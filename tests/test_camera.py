"""The camera data set (``tempoflow.data.camera``): exact rendering at any time, captions, splits, the
oracle on clean renders, and a tiny end-to-end run of every method on it through the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import affine_transform

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.data import load_dataset
from tempoflow.data.camera import (
    DIRECTIONS,
    MOTIONS,
    PANS,
    PHOTOS,
    CameraConfig,
    Shot,
    all_captions,
    caption_of,
    make_camera,
    parse_caption,
    poses,
    render,
    working_image,
)
from tempoflow.errors import ConfigError
from tempoflow.methods import METHODS
from tempoflow.metrics.camera_oracle import caption_accuracy

from .conftest import TINY, TINY_VIDEO_WAE
from .test_align import SMALL_ALIGN
from .test_autoencoder import AE
from .test_vlfm import VLFM

L, S = 32, 128  # frame side and working-image side (photo_scale 4)
# A tiny camera data set for the end-to-end runs: 2 photos × 3 motions, 16 px, 4 frames.
TINY_CAMERA = [
    "data.name=camera",
    "data.camera.resolution=16",
    "data.camera.num_frames=4",
    "data.camera.videos_per_caption=2",
    "data.camera.photos=[cat, coffee]",
    "data.camera.motions=[left, in, clockwise]",
    "data.camera.heldout_pairs=[[cat, in]]",
]
# The next-frame methods' shared UNet and roll-out evaluation, tiny.
TINY_NEXT_FRAME = [
    "lifting.unet.base_width=8",
    "lifting.unet.channel_mults=[1, 2]",
    "lifting.unet.groups=4",
    "lifting.unet.cond_dim=16",
    "lifting.label_dim=4",
    "lifting.pairs_per_video=1",
    "lifting.eval_trajectories=2",
    "eval.ensemble_size=2",
    "train.steps=2",
]
# Every method but flow and vlfm (their own tests below): config and overrides of a tiny camera run. align
# also trains the video WAE it maps captions into (align.video_path is set by the test).
CAMERA_RUNS = {
    "lifting": ["camera_lifting", *TINY_NEXT_FRAME],
    "ardm": ["camera_ardm", *TINY_NEXT_FRAME, "ardm.steps=2"],
    "meanflow": ["camera_meanflow", *TINY_NEXT_FRAME],
    "crps": ["camera_crps", *TINY_NEXT_FRAME, "crps.noise_dim=4"],
    "autoencoder": ["camera_flow", *AE],
    "video_wae": ["camera_flow", *TINY_VIDEO_WAE, "train.steps=2"],
    "align": ["camera_flow", *SMALL_ALIGN, "train.steps=2"],
}


def test_frames_are_continuous_in_time():
    for motion in ("up-right", "out", "counterclockwise"):
        shot = Shot("astronaut", motion, "", 64.0, 64.0, 1.0 if motion != "out" else 1.6,
                    {"up-right": 8.0, "out": -0.3, "counterclockwise": -0.5}[motion])
        t = torch.tensor([0.3, 0.3 + 1e-4, 0.4])
        f = render(shot, t, L, S)
        assert (f[1] - f[0]).abs().max() < 1e-3  # 1e-4 s moves the view by < 1e-3 px
        assert (f[2] - f[0]).abs().max() > 0.05


@pytest.mark.parametrize("motion", PANS)
def test_a_pan_of_d_pixels_per_second_lands_exactly(motion):
    d = 5  # whole pixels per second along each moving axis
    ux, uy = DIRECTIONS[motion]
    speed = d * (math.sqrt(2.0) if ux and uy else 1.0)
    shot = Shot("coffee", motion, "", 60.0, 58.0, 1.0, speed)
    f0, f1 = render(shot, torch.tensor([0.0, 1.0]), L, S)
    # The camera moves by (dx, dy): the content moves by −(dx, dy), so f1[y, x] = f0[y + dy, x + dx].
    dx, dy = round(ux * speed), round(uy * speed)
    assert abs(dx) in (0, d) and abs(dy) in (0, d)
    ys, xs = slice(max(-dy, 0), L - max(dy, 0)), slice(max(-dx, 0), L - max(dx, 0))
    ys0, xs0 = slice(max(dy, 0), L + min(dy, 0)), slice(max(dx, 0), L + min(dx, 0))
    torch.testing.assert_close(f1[:, ys, xs], f0[:, ys0, xs0], atol=2e-5, rtol=0)
    pose = poses([shot], torch.tensor([1.0]))
    assert (float(pose.cx), float(pose.cy)) == pytest.approx((60.0 + dx, 58.0 + dy), abs=1e-9)


def _reference(image: np.ndarray, cx: float, cy: float, s: float, theta: float) -> np.ndarray:
    """The frame of pose (c, s, θ) by scipy's affine_transform (pixel indices, centres at integers):
    output (a, b) shows input index (p_y − ½, p_x − ½) with p = c + R(θ) u / s, u = (b, a) + ½ − L/2."""
    cos, sin = math.cos(theta) / s, math.sin(theta) / s
    h = 0.5 - L / 2
    matrix = np.array([[cos, sin], [-sin, cos]])  # (row, col) of the input per (a, b) of the output
    offset = np.array([cy - 0.5 + (sin + cos) * h, cx - 0.5 + (cos - sin) * h])
    return np.stack([affine_transform(c, matrix, offset=offset, order=1, output_shape=(L, L)) for c in image])


@pytest.mark.parametrize("motion,rate,s0", [
    ("in", 0.3, 1.0), ("out", -0.45, 1.6), ("clockwise", 0.5, 1.0), ("counterclockwise", -0.8, 1.0)])
def test_zoom_and_rotation_match_an_independent_resample(motion, rate, s0):
    shot = Shot("astronaut", motion, "", 61.3, 66.7, s0, rate)
    times = torch.tensor([0.37, 1.9])
    frames = render(shot, times, L, S).numpy()
    image = working_image("astronaut", S).double().numpy()
    for t, frame in zip(times.tolist(), frames):
        zoom = motion in ("in", "out")
        s = s0 * math.exp(rate * t) if zoom else s0  # s(t) = s0 exp(k t)
        theta = 0.0 if zoom else rate * t  # θ(t) = ω t
        np.testing.assert_allclose(frame, _reference(image, 61.3, 66.7, s, theta), atol=1e-4)


def test_captions_parse_back_and_bad_ones_are_refused():
    for photo in PHOTOS:
        for motion in MOTIONS:
            for speed in ("", "slowly", "quickly"):
                assert parse_caption(caption_of(photo, motion, speed)) == (photo, motion, speed)
    assert caption_of("cat", "left") == "the camera pans left over a cat"
    assert caption_of("coffee", "in") == "the camera zooms in on the coffee"
    for bad in ("the camera pans left on a cat", "the camera zooms in on a dog", "a red circle moves left",
                "the camera pans sideways over a cat", "the camera rotates clockwise over a cat fast"):
        with pytest.raises(ValueError, match="cannot parse camera caption"):
            parse_caption(bad)


def test_buckets_splits_and_heldout_pairs():
    cfg = CameraConfig(resolution=16, photos=("cat", "coffee", "moon"), motions=("left", "in", "clockwise"),
                       heldout_pairs=(("cat", "in"),), videos_per_caption=3, speeds=True)
    train, test, held = (make_camera(cfg, s) for s in ("train", "test", "heldout"))
    assert len(all_captions(cfg)) == 3 * 3 * 3
    assert set(held.unique_captions) == {caption_of("cat", "in", w) for w in ("", "slowly", "quickly")}
    assert set(train.unique_captions) == set(test.unique_captions) == set(all_captions(cfg)) - set(held.unique_captions)
    assert all(len(v) == 2 for v in train.buckets().values()) and all(len(v) == 1 for v in test.buckets().values())
    assert all(len(v) == 3 for v in held.buckets().values())
    assert not set(train.shots) & set(test.shots)  # a split by video
    for idx in train.buckets().values():  # a bucket: one caption, different start crops
        assert len({(train.shots[i].cx, train.shots[i].cy) for i in idx}) == len(idx)
    again = make_camera(cfg, "train")
    assert torch.equal(again.videos, train.videos) and again.shots == train.shots
    torch.testing.assert_close(train.render_at(4, train.times), train.videos[4])
    assert train.videos.shape == (len(train), 8, 3, 16, 16) and 0 <= train.videos.min() <= train.videos.max() <= 1


def test_views_stay_inside_the_photo_until_the_horizon():
    cfg = CameraConfig(speeds=True)
    shots = make_camera(dataclasses.replace(cfg, videos_per_caption=2), "train").shots
    t = torch.linspace(0, cfg.horizon, 33)
    pose = poses(shots, t)
    x, y, s = pose.cx, pose.cy, pose.s  # (N, T)
    rotates = torch.tensor([sh.motion in ("clockwise", "counterclockwise") for sh in shots])[:, None]
    r = (L / 2) / s * torch.where(rotates, math.sqrt(2.0), 1.0)  # half side, or circumradius when turning
    assert ((x - r) >= -1e-9).all() and ((x + r) <= S + 1e-9).all()
    assert ((y - r) >= -1e-9).all() and ((y + r) <= S + 1e-9).all()
    with pytest.raises(ValueError, match="leaves the photo before"):
        CameraConfig(pan_speed=1.0)
    with pytest.raises(ConfigError, match="data.camera"):
        load_dataset(load_config(None, ["data.name=camera", "data.camera.photos=[dog]"]).data, "train")


@pytest.mark.parametrize("resolution", [32, 16])
def test_the_oracle_reads_every_motion_and_photo_of_clean_renders(resolution):
    cfg = CameraConfig(resolution=resolution, videos_per_caption=2, heldout_pairs=(), speeds=resolution == 16)
    data = make_camera(cfg, "test")  # one video of every photo × motion (× speed)
    assert len(data) == len(cfg.photos) * len(MOTIONS) * (3 if cfg.speeds else 1)
    score = caption_accuracy(data.videos, data.captions, cfg)
    assert score.accuracy >= 0.95 and score.photo >= 0.95, score
    k = 3 if cfg.speeds else 1  # the next motion's caption (speed words are not read)
    wrong = caption_accuracy(data.videos, data.captions[k:] + data.captions[:k], cfg)
    assert wrong.accuracy < 0.1


def test_tempoflow_data_render_writes_camera_videos(tmp_path):
    out = tmp_path / "cam"
    assert main(["data", "render", "camera_flow", *TINY_CAMERA, "--out", str(out), "--splits", "train", "heldout"]) == 0
    with open(out / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "heldout"} and all(r["height"] == "16" for r in rows)
    assert "the camera zooms in on a cat" in {r["text"] for r in rows if r["split"] == "heldout"}
    assert (out / rows[0]["path"]).is_file()


def test_flow_end_to_end_on_camera_through_the_cli(tmp_path):
    run, ev = tmp_path / "run", tmp_path / "ev"
    assert main(["train", "camera_flow", *TINY, *TINY_CAMERA, f"out_dir={run}"]) == 0
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    for split in ("train", "heldout"):
        assert isinstance(m[split]["caption_accuracy"], float) and "photo_accuracy" in m[split]


def test_vlfm_end_to_end_on_camera_through_the_cli(tmp_path):
    run, ev = tmp_path / "run", tmp_path / "ev"
    assert main(["train", "camera_vlfm", *TINY, *VLFM, *TINY_CAMERA, "model.patch_hw=4", f"out_dir={run}"]) == 0
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu", "--config", "eval_vlfm",
                 "eval.time_rate=2", "eval.time_extent=4", "eval.num_prompts=2", "sample.num_per_prompt=1"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    for key in ("time_psnr_between_frames_db", "time_psnr_extrapolated_db", "time_baseline_linear_psnr_between_db",
                "time_baseline_flow_psnr_between_db", "time_baseline_flow_psnr_extrapolated_db",
                "time_true_frames_flow_ssim_between"):
        assert isinstance(m["train"][key], float)
    assert isinstance(m["train"]["caption_accuracy"], float)


def test_every_method_has_a_tiny_camera_run():
    assert set(CAMERA_RUNS) | {"flow", "vlfm"} == set(METHODS)


@pytest.mark.parametrize("method", list(CAMERA_RUNS))
def test_method_end_to_end_on_camera_through_the_cli(method, tmp_path):
    pytest.importorskip("skimage")  # the camera extra's photographs
    config, *overrides = CAMERA_RUNS[method]
    run, ev = tmp_path / "run", tmp_path / "ev"
    if method == "align":  # the frozen video space it aligns captions with, on the same camera data
        wae = tmp_path / "wae"
        assert main(["train", "camera_flow", *TINY, *TINY_CAMERA, *TINY_VIDEO_WAE, "train.steps=2",
                     f"out_dir={wae}"]) == 0
        overrides.append(f"align.video_path={wae}")
    assert main(["train", config, *TINY, *TINY_CAMERA, *overrides, f"out_dir={run}"]) == 0
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    if method in ("lifting", "ardm", "meanflow", "crps"):  # next-frame video prediction from the test split
        assert m["frames"] == 4 and m["given_frames"] == 2 and isinstance(m["wim"], float)
        # A roll-out past the training length (4 frames) through `tempoflow sample`.
        assert main(["sample", str(run), "--frames", "7", "--num", "2", "--out", str(tmp_path / "v.gif"),
                     "--device", "cpu", "--quiet"]) == 0
        assert (tmp_path / "v.gif").is_file()
        assert main(["sample", str(run), "--frames", "2", "--out", str(tmp_path / "w.gif"), "--quiet"]) == 2
    elif method == "align":
        assert isinstance(m["train"]["caption_accuracy"], float) and "photo_accuracy" in m["train"]
    else:  # reconstructions, read back by the camera oracle
        for split in ("test", "heldout"):
            assert isinstance(m[split]["psnr_db"], float)
            assert isinstance(m[split]["reconstruction_photo_accuracy"], float)


def test_truth_past_the_horizon_warns_that_it_is_mirrored():
    """Inside ``inside_extent · T`` the renderer is the truth; past it the photo is reflect-padded, and asking
    for it (e.g. ``eval.time_extent`` above ``inside_extent``) warns instead of scoring silently."""
    pytest.importorskip("skimage")
    cfg = CameraConfig(resolution=16, num_frames=4, inside_extent=2.0, videos_per_caption=2)
    data = make_camera(cfg, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.render_at(0, torch.tensor([0.1, cfg.horizon]))  # up to the horizon: silent
    with pytest.warns(UserWarning, match="mirrored content"):
        data.render_at(0, torch.tensor([cfg.horizon + 0.25]))
