"""Moving shapes: exact bounces, continuity in time, caption grammar, splits and config checks."""

import math

import pytest
import torch

from tempoflow.data.shapes import (
    CENTROID_OFFSET,
    DIRECTIONS,
    FILL,
    PALETTE,
    SHAPES,
    MovingObject,
    ObjectSpec,
    Scene,
    ShapesConfig,
    all_captions,
    caption_of,
    make_shapes,
    parse_caption,
    position,
    render,
    render_at,
    render_scenes,
    shape_alpha,
)

SMALL = ShapesConfig(colours=("red", "green", "blue"), directions=("left", "up-right", "down"))


def _object(direction="right", shape="circle", x0=10.0, y0=12.0, size=8.0, speed_px=16.0):
    return MovingObject(ObjectSpec("red", shape, direction), x0, y0, size, speed_px)


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_shapes(SMALL, "train"), make_shapes(SMALL, "train")
    c = make_shapes(ShapesConfig(**{**SMALL.__dict__, "seed": 1}), "train")
    assert torch.equal(a.videos, b.videos) and a.captions == b.captions and a.scenes == b.scenes
    assert a.captions == c.captions and not torch.equal(a.videos, c.videos)


def test_bucket_scenes_do_not_depend_on_split():
    all_videos = make_shapes(ShapesConfig(**{**SMALL.__dict__, "test_per_bucket": 0}), "train")
    train, test = make_shapes(SMALL, "train"), make_shapes(SMALL, "test")
    buckets = all_videos.buckets()
    for caption, idx in train.buckets().items():
        assert [train.scenes[i] for i in idx] == [all_videos.scenes[i] for i in buckets[caption][:3]]
    for caption, idx in test.buckets().items():
        assert [test.scenes[i] for i in idx] == [all_videos.scenes[i] for i in buckets[caption][3:]]


def test_bounce_positions_match_the_hand_computed_fold():
    # L = 32, r = 4: the centre lives in [4, 28], travel 24 px, period 2 · 24 / 16 = 3 s.
    obj = _object("right", x0=10.0, speed_px=16.0)
    t = torch.tensor([0.0, 1.0, 1.125, 1.5, 2.625, 3.0, 4.0, 4.125])
    x, y = position(obj, t, 32)
    # Wall at x = 28 reached at t = 18 / 16 = 1.125 s, back at the left wall 24 / 16 = 1.5 s later.
    expected = torch.tensor([10.0, 26.0, 28.0, 28.0 - 16 * 0.375, 4.0, 10.0, 26.0, 28.0], dtype=torch.float64)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(y, torch.full_like(y, 12.0), rtol=0, atol=0)


def test_diagonal_bounce_reflects_each_axis():
    obj = _object("up-left", x0=6.0, y0=8.0, size=4.0, speed_px=10.0 * math.sqrt(2))
    x, y = position(obj, torch.tensor([0.1, 0.5, 1.0]), 20)  # 10 px/s per axis, walls at 2 and 18
    # x: 6 − 10 t reflected at 2 → 2 + (2 − (6 − 10 t)); y: 8 − 10 t reflected the same way.
    torch.testing.assert_close(x, torch.tensor([5.0, 3.0, 8.0], dtype=torch.float64))
    torch.testing.assert_close(y, torch.tensor([7.0, 3.0, 6.0], dtype=torch.float64))


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_positions_stay_inside_and_are_continuous(direction):
    obj = _object(direction, x0=20.0, y0=7.0, size=10.0, speed_px=37.0)
    t = torch.rand(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20.0
    x, y = position(obj, t, 32)
    assert bool(((x >= 5.0) & (x <= 27.0) & (y >= 5.0) & (y <= 27.0)).all())
    x2, y2 = position(obj, t + 1e-6, 32)  # Lipschitz with constant = speed per axis
    assert float(torch.maximum((x2 - x).abs(), (y2 - y).abs()).max()) <= 37.0 * 1e-6 * (1 + 1e-6)


def test_frames_are_continuous_in_time():
    cfg = ShapesConfig(**{**SMALL.__dict__, "two_objects": True, "two_object_captions": 8})
    data = make_shapes(cfg, "test")
    scenes = data.scenes[::4]
    t = torch.rand(16, generator=torch.Generator().manual_seed(1)) * 3.0
    base = render_scenes(scenes, t)
    diffs = [float((render_scenes(scenes, t + eps) - base).abs().max()) for eps in (1e-2, 1e-3, 1e-4)]
    assert diffs[0] >= diffs[1] >= diffs[2] and diffs[2] < 1e-2


def test_render_shape_range_and_colours():
    scene = Scene((_object("down", shape="square", size=10.0),), 32)
    video = render(scene, torch.tensor([0.0, 0.25, 0.5]))
    assert video.shape == (3, 3, 32, 32) and video.dtype == torch.float32
    assert float(video.min()) >= 0.0 and float(video.max()) <= 1.0
    assert video[0, :, 12, 10].tolist() == list(PALETTE["red"])  # centre pixel (x0, y0) = (10, 12)
    assert video[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]  # background


@pytest.mark.parametrize("shape", SHAPES)
def test_coverage_has_the_shape_area_and_centroid(shape):
    size, cx, cy = 20.0, 31.3, 30.6
    alpha = shape_alpha(shape, torch.tensor(cx), torch.tensor(cy), size, 64).double()  # (64, 64)
    grid = torch.arange(64, dtype=torch.float64) + 0.5
    area = alpha.sum()
    assert abs(float(area) / (FILL[shape] * size**2) - 1) < 0.01
    assert abs(float((alpha.sum(0) * grid).sum() / area) - cx) < 0.02
    assert abs(float((alpha.sum(1) * grid).sum() / area) - (cy + CENTROID_OFFSET[shape] * size)) < 0.02


def test_triangle_sdf_matches_a_brute_force_reference():
    # Reference: distance to 3000 points on the boundary; inside by the three half-planes.
    r, cx, cy = 6.0, 10.2, 9.7
    corners = torch.tensor([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + r]], dtype=torch.float64)
    s = torch.linspace(0, 1, 1000, dtype=torch.float64)[:, None]
    boundary = torch.cat([a + s * (b - a) for a, b in zip(corners, corners.roll(-1, 0))])  # (3000, 2)
    grid = torch.arange(20, dtype=torch.float64) + 0.5
    pts = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).reshape(-1, 2)  # (400, 2) as (x, y)
    dist = torch.cdist(pts, boundary).min(1).values
    px, py = pts[:, 0] - cx, pts[:, 1] - cy
    inside = (py <= r) & (2 * px - (py + r) <= 0) & (-2 * px - (py + r) <= 0)
    reference = (0.5 - torch.where(inside, -dist, dist)).clamp(0, 1).reshape(20, 20)
    alpha = shape_alpha("triangle", torch.tensor(cx), torch.tensor(cy), 2 * r, 20)
    torch.testing.assert_close(alpha.double(), reference, rtol=0, atol=5e-3)


def test_caption_grammar_round_trip():
    cfg = ShapesConfig(speeds=True, two_objects=True)
    captions = all_captions(cfg)
    assert len(captions) == len(set(captions)) == 6 * 3 * 8 * 3 + cfg.two_object_captions
    for caption in captions:
        specs = parse_caption(caption)
        assert caption_of(specs) == caption and parse_caption(caption_of(specs)) == specs
    assert parse_caption("a red circle moves left quickly and a blue square moves up") == [
        ObjectSpec("red", "circle", "left", "quickly"),
        ObjectSpec("blue", "square", "up"),
    ]
    pairs = [parse_caption(c) for c in captions if " and " in c]
    assert all(a.colour != b.colour for a, b in pairs)


@pytest.mark.parametrize(
    "caption",
    [
        "",
        "a red circle",
        "a purple circle moves left",
        "a red circle moves left fast",
        "a red circle moves left and",
        "a red  circle moves left",
        "A red circle moves left",
        "a red circle moves sideways",
    ],
)
def test_parse_errors_name_the_caption(caption):
    with pytest.raises(ValueError, match=repr(caption).replace("[", r"\[")):
        parse_caption(caption)


def test_splits():
    cfg = ShapesConfig(colours=("red", "green", "blue", "yellow"), two_objects=True, two_object_captions=24)
    train, test, heldout = (make_shapes(cfg, s) for s in ("train", "test", "heldout"))
    pairs = set(cfg.heldout_pairs)

    def has_pair(caption):
        return any((o.colour, o.shape) in pairs for o in parse_caption(caption))

    assert heldout.unique_captions and all(has_pair(c) for c in heldout.unique_captions)
    assert not any(has_pair(c) for c in train.captions + test.captions)
    assert train.unique_captions == test.unique_captions
    assert not set(train.scenes) & set(test.scenes)
    assert len(train) + len(test) + len(heldout) == len(all_captions(cfg)) * cfg.videos_per_caption
    singles = [parse_caption(c)[0] for c in train.unique_captions]
    assert {o.colour for o in singles} == set(cfg.colours) and {o.shape for o in singles} == set(SHAPES)
    with pytest.raises(ValueError, match="validation"):
        make_shapes(cfg, "validation")


def test_bucket_structure():
    data = make_shapes(SMALL, "train")
    assert data.videos.shape == (len(data), SMALL.num_frames, 3, SMALL.resolution, SMALL.resolution)
    torch.testing.assert_close(data.times, torch.arange(1, 9) / 8.0)
    for caption, idx in data.buckets().items():
        assert len(idx) == SMALL.videos_per_caption - SMALL.test_per_bucket
        assert all(data.unique_captions[int(data.bucket_ids[i])] == caption for i in idx)
        assert all(not torch.equal(data.videos[i], data.videos[j]) for i in idx for j in idx if i < j)
    torch.testing.assert_close(render_at(data, 5, data.times), data.videos[5])


@pytest.mark.parametrize(
    ("change", "bad"),
    [
        ({"colours": ("red", "purple")}, "purple"),
        ({"shapes": ("circle", "hexagon")}, "hexagon"),
        ({"directions": ("left", "sideways")}, "sideways"),
        ({"heldout_pairs": (("red", "blob"),)}, "blob"),
        ({"resolution": 4}, "4"),
        ({"num_frames": 0}, "0"),
        ({"fps": 0.0}, "0.0"),
        ({"fps": -2.0}, "-2.0"),
        ({"test_per_bucket": 4}, "4"),
        ({"size_range": (0.3, 1.2)}, "1.2"),
    ],
)
def test_config_validation_names_the_bad_value(change, bad):
    with pytest.raises(ValueError, match=bad):
        ShapesConfig(**change)
