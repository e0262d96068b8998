"""Moving digits: rendering against scipy, bounces, continuity in time, motion, buckets and splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.datasets import load_digits

from tempoflow.data.digits import (
    DIRECTIONS,
    DigitScene,
    DigitsConfig,
    all_captions,
    caption_of,
    digit_instances,
    make_digits,
    parse_caption,
    render,
    render_at,
)

SMALL = DigitsConfig(resolution=24, num_frames=6, digits=(1, 3, 7), heldout_pairs=((3, "right to left"),))


def _with(cfg: DigitsConfig, **changes) -> DigitsConfig:
    return DigitsConfig(**{**cfg.__dict__, **changes})


def _reference_frame(instance: int, cx: float, cy: float, size: float, resolution: int) -> np.ndarray:
    """Independent renderer: scipy's linear ``map_coordinates`` of the 8×8 image with zero fill outside.

    Pixel centre ``p`` sits at source coordinate ``(p − (c − size/2)) · 8 / size − 0.5`` (source pixel
    ``k`` centred at ``k + 0.5`` of the box's 8 cells).
    """
    image = load_digits().images[instance] / 16.0
    pixel = np.arange(resolution) + 0.5
    u = (pixel - (cx - size / 2)) * 8 / size - 0.5  # columns
    v = (pixel - (cy - size / 2)) * 8 / size - 0.5  # rows
    rows, cols = np.meshgrid(v, u, indexing="ij")
    return ndimage.map_coordinates(image, [rows, cols], order=1, mode="grid-constant", cval=0.0)


def test_render_matches_scipy_bilinear_and_the_hand_computed_bounce():
    # L = 32, size 16: the centre stays in [9, 23] (footprint 9/8 · 8 = 9 px), travel 14 px.
    # x(t) = 12 + 16 t folds at 23: x(0.5) = 20, x(1.0) = 23 − (28 − 23) = 18, x(2.0) = 9 + (44 − 9 − 28) = 16.
    scene = DigitScene(3, "left to right", 3, x0=12.0, y0=14.3, size=16.0, speed_px=16.0, resolution=32)
    frames = render(scene, torch.tensor([0.0, 0.5, 1.0, 2.0]))  # (4, 3, 32, 32)
    assert frames.shape == (4, 3, 32, 32)
    for frame, cx in zip(frames, (12.0, 20.0, 18.0, 16.0)):
        want = torch.from_numpy(_reference_frame(3, cx, 14.3, 16.0, 32)).float()
        torch.testing.assert_close(frame, want.expand(3, 32, 32), atol=1e-5, rtol=0)


def test_colour_scales_the_ink():
    grey = DigitScene(7, "top to bottom", 17, 11.0, 12.0, 12.0, 10.0, 24)
    tinted = DigitScene(7, "top to bottom", 17, 11.0, 12.0, 12.0, 10.0, 24, colour=(1.0, 0.5, 0.0))
    t = torch.tensor([0.3])
    g, c = render(grey, t), render(tinted, t)
    torch.testing.assert_close(c, g * torch.tensor([1.0, 0.5, 0.0])[:, None, None])


def test_shapes_range_times_and_ground_truth():
    data = make_digits(SMALL, "train")
    n_buckets = 3 * 4 - 1  # one held-out pair
    assert data.videos.shape == (n_buckets * 3, 6, 3, 24, 24) and data.videos.dtype == torch.float32
    assert float(data.videos.min()) >= 0.0 and float(data.videos.max()) <= 1.0
    assert bool((data.videos.sum(dim=(2, 3, 4)) > 5.0).all())  # a digit is visible in every frame
    assert len(data) == len(data.captions) == len(data.scenes) == len(data.bucket_ids)
    torch.testing.assert_close(data.times, torch.arange(1, 7) / 8.0)
    assert (
        data.unique_captions == list(dict.fromkeys(data.captions)) and len(data.unique_captions) == n_buckets
    )
    for b, (caption, idx) in enumerate(data.buckets().items()):
        assert data.unique_captions[b] == caption and bool((data.bucket_ids[idx] == b).all())
    torch.testing.assert_close(render_at(data, 5, data.times), data.videos[5], atol=1e-6, rtol=0)


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_digits(SMALL, "train"), make_digits(SMALL, "train")
    c = make_digits(_with(SMALL, seed=1), "train")
    assert torch.equal(a.videos, b.videos) and a.captions == b.captions and a.scenes == b.scenes
    assert a.captions == c.captions and not torch.equal(a.videos, c.videos)


def test_buckets_hold_different_instances_and_splits_do_not_share_them():
    cfg = _with(SMALL, videos_per_caption=5, test_per_bucket=2)
    train, test, heldout = (make_digits(cfg, s) for s in ("train", "test", "heldout"))
    for data, per_bucket in ((train, 3), (test, 2), (heldout, 5)):
        for idx in data.buckets().values():
            instances = [data.scenes[i].instance for i in idx]
            assert len(instances) == per_bucket and len(set(instances)) == per_bucket
            starts = {(data.scenes[i].x0, data.scenes[i].y0) for i in idx}
            assert len(starts) == per_bucket  # random offsets too
    labels = load_digits().target
    for data in (train, test, heldout):
        assert all(labels[s.instance] == s.digit for s in data.scenes)
    seen_in_train = {s.instance for s in train.scenes}
    assert seen_in_train.isdisjoint(s.instance for s in test.scenes)
    assert seen_in_train.isdisjoint(s.instance for s in heldout.scenes)


def test_instance_pools_partition_each_digit():
    labels = load_digits().target
    for digit in (0, 8):
        tr, te = digit_instances(digit, "train", 0.2), digit_instances(digit, "test", 0.2)
        assert set(tr).isdisjoint(te) and sorted([*tr, *te]) == list(np.flatnonzero(labels == digit))
        assert abs(len(te) - 0.2 * (len(tr) + len(te))) <= 1
        assert np.array_equal(digit_instances(digit, "heldout", 0.2), te)


def test_bucket_scenes_do_not_depend_on_split():
    all_train = make_digits(_with(SMALL, test_per_bucket=0), "train")
    train = make_digits(SMALL, "train")
    buckets = all_train.buckets()
    for caption, idx in train.buckets().items():
        assert [train.scenes[i] for i in idx] == [all_train.scenes[i] for i in buckets[caption][:3]]


def test_heldout_pairs_absent_from_train_and_test():
    held = caption_of(3, "right to left")
    train, test, heldout = (make_digits(SMALL, s) for s in ("train", "test", "heldout"))
    assert held not in train.captions and held not in test.captions
    assert set(heldout.captions) == {held} and len(heldout) == SMALL.videos_per_caption
    # Digit 3 and the direction "right to left" are both still seen in training.
    pairs = {parse_caption(c) for c in train.unique_captions}
    assert any(d == 3 for d, _ in pairs) and any(r == "right to left" for _, r in pairs)
    assert set(train.unique_captions) == set(test.unique_captions) == set(all_captions(SMALL)) - {held}


def test_caption_grammar_round_trip_and_rejects_others():
    captions = all_captions(DigitsConfig())
    assert len(captions) == 40 and captions[0] == "digit 0 moves left to right"
    for caption in captions:
        assert caption_of(*parse_caption(caption)) == caption
    for bad in (
        "digit 3 moves left",
        "digit 12 moves left to right",
        "Digit 3 moves top to bottom",
        "digit 3 moves top to bottom ",
        "a red circle moves left",
    ):
        with pytest.raises(ValueError, match="cannot parse"):
            parse_caption(bad)
    with pytest.raises(ValueError, match="cannot caption"):
        caption_of(10, "left to right")


def test_frames_are_continuous_in_time():
    # Bilinear sampling is Lipschitz in the box position: the ink changes by at most 1 per source
    # pixel = size / 8 output pixels, so a shift of speed · 1e-3 px moves a value by ≤ 8 · speed · 1e-3 / size.
    data = make_digits(SMALL, "train")
    t = torch.tensor([0.2, 0.61, 1.3], dtype=torch.float64)
    scene = data.scenes[4]
    bound = 8 * scene.speed_px * 1e-3 / scene.size
    near = (render_at(data, 4, t + 1e-3) - render_at(data, 4, t)).abs().max()
    far = (render_at(data, 4, t + 0.1) - render_at(data, 4, t)).abs().max()
    assert float(near) <= bound + 1e-5 and float(far) > 20 * bound


def test_centre_of_mass_moves_in_the_captioned_direction():
    # Reference: the box kinematics, speed / fps pixels per frame along DIRECTIONS[direction]. Start
    # offsets keep the wall ahead CLEAR_FRAMES = 3 frames away, so frames 1 → 2 → 3 do not bounce. The
    # footprint never touches the border, so the ink centroid translates with the box (measured error ~4e-6).
    data = make_digits(_with(SMALL, resolution=32), "train")
    v = data.videos[:, :3, 0]  # (N, 3, L, L)
    pixel = torch.arange(32, dtype=torch.float32) + 0.5
    mass = v.sum(dim=(-2, -1))  # (N, 3)
    cx = (v.sum(dim=-2) * pixel).sum(-1) / mass  # (N, 3)
    cy = (v.sum(dim=-1) * pixel).sum(-1) / mass
    step = torch.stack([cx.diff(dim=1), cy.diff(dim=1)], dim=-1)  # (N, 2, 2) pixels per frame
    for n, scene in enumerate(data.scenes):
        expected = torch.tensor(DIRECTIONS[scene.direction]) * scene.speed_px / data.fps
        torch.testing.assert_close(step[n], expected.expand(2, 2), atol=1e-3, rtol=0)


def test_bad_config_and_split_raise():
    for changes, match in [
        ({"digits": (1, 11)}, "unknown digit"),
        ({"directions": ("left",)}, "unknown direction"),
        ({"heldout_pairs": ((3, "left"),)}, "heldout_pairs"),
        ({"digit_scale": 0.95}, "digit_scale"),
        ({"test_per_bucket": 4}, "test_per_bucket"),
        ({"colour": (1.0, 2.0, 0.0)}, "colour"),
    ]:
        with pytest.raises(ValueError, match=match):
            _with(SMALL, **changes)
    with pytest.raises(ValueError, match="unknown split"):
        make_digits(SMALL, "validation")
    with pytest.raises(ValueError, match="distinct images of digit"):
        make_digits(_with(SMALL, videos_per_caption=60, test_per_bucket=50), "test")
