"""Shapes oracle: reads clean and noisy renders back into their captions; rejects wrong captions."""

import pytest
import torch

from tempoflow.data.shapes import ObjectSpec, ShapesConfig, make_shapes
from tempoflow.metrics.oracle import caption_accuracy, matches, objects_per_frame, read_objects


def _splits(cfg, splits):
    data = [make_shapes(cfg, s) for s in splits]
    return torch.cat([d.videos for d in data]), [c for d in data for c in d.captions]


@pytest.fixture(scope="module")
def default_videos():
    return _splits(ShapesConfig(), ("train", "heldout"))


def test_clean_default_renders_are_read_back(default_videos):
    videos, captions = default_videos
    score = caption_accuracy(videos, captions)
    assert score.accuracy >= 0.99  # measured 1.0
    assert min(score.colour, score.shape, score.direction) >= 0.99
    assert len(score.correct) == len(captions)


def test_clean_64px_renders_are_read_back():
    videos, captions = _splits(ShapesConfig(resolution=64), ("heldout",))
    assert caption_accuracy(videos, captions).accuracy >= 0.99  # measured 1.0


def test_two_object_renders_are_read_back():
    # Errors: one object hidden behind the other in most frames. Measured 0.989 here, 0.996 on train.
    videos, captions = _splits(ShapesConfig(two_objects=True), ("test", "heldout"))
    score = caption_accuracy(videos, captions)
    assert score.accuracy >= 0.97 and score.colour == 1.0


def test_speed_variants_are_read_back():
    videos, captions = _splits(ShapesConfig(speeds=True, colours=("red", "cyan")), ("train",))
    assert caption_accuracy(videos, captions).accuracy >= 0.99  # measured 1.0


def test_shuffled_captions_score_low(default_videos):
    videos, captions = default_videos
    perm = torch.randperm(len(captions), generator=torch.Generator().manual_seed(0)).tolist()
    assert caption_accuracy(videos, [captions[i] for i in perm]).accuracy < 0.3


def test_mild_noise_is_tolerated(default_videos):
    videos, captions = default_videos
    noise = torch.randn(videos.shape, generator=torch.Generator().manual_seed(0))
    assert caption_accuracy((videos + 0.05 * noise).clamp(0, 1), captions).accuracy >= 0.95  # measured 1.0


def test_read_objects_and_matches(default_videos):
    videos, captions = default_videos
    assert matches(videos[0], captions[0]) and not matches(videos[0], captions[40])
    assert read_objects(torch.zeros(8, 3, 32, 32)) == []
    [single] = read_objects(videos[0, :1])  # one frame: colour and shape, but no direction
    assert single.direction == "" and single.speed == ""
    assert caption_accuracy(videos[:4, :1], captions[:4]).accuracy == 0.0
    assert read_objects(videos[0]) == [ObjectSpec(*captions[0].split(" ")[1:3], captions[0].split(" ")[4])]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="got shape"):
        read_objects(torch.zeros(8, 1, 32, 32))
    with pytest.raises(ValueError, match="2 captions"):
        caption_accuracy(torch.zeros(3, 8, 3, 32, 32), ["a red circle moves left"] * 2)


def _components_by_flood_fill(mask: list[list[bool]]) -> int:
    """8-connected components of one frame's mask by an explicit stack flood fill (the reference)."""
    H, W = len(mask), len(mask[0])
    seen, count = set(), 0
    for i in range(H):
        for j in range(W):
            if mask[i][j] and (i, j) not in seen:
                count += 1
                stack = [(i, j)]
                seen.add((i, j))
                while stack:
                    y, x = stack.pop()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            q = (y + dy, x + dx)
                            if 0 <= q[0] < H and 0 <= q[1] < W and mask[q[0]][q[1]] and q not in seen:
                                seen.add(q)
                                stack.append(q)
    return count


def test_objects_per_frame_matches_a_flood_fill_and_counts_rendered_shapes():
    """Components per frame against a brute-force flood fill on random sparse frames (components never
    join across frames or videos); on rendered one-object shapes videos: one object in every frame."""
    g = torch.Generator().manual_seed(0)
    videos = (torch.rand(3, 4, 3, 9, 11, generator=g) > 0.8).float() * 0.9
    counts, pixels = objects_per_frame(videos, threshold=0.25)
    mask = videos.amax(2) > 0.25
    for b in range(3):
        for t in range(4):
            assert counts[b, t] == _components_by_flood_fill(mask[b, t].tolist())
            assert pixels[b, t] == mask[b, t].sum()
    assert counts.shape == (3, 4) and counts.max() > 1
    shapes = make_shapes(ShapesConfig(resolution=16, num_frames=16, videos_per_caption=2), "train").videos[:40]
    counts, pixels = objects_per_frame(shapes)
    assert (counts == 1).all() and (pixels >= 4).all()
    for bad in (torch.zeros(4, 3, 8, 8), torch.zeros(0, 2, 3, 8, 8), torch.zeros(2, 0, 3, 8, 8)):
        with pytest.raises(ValueError, match="B, T, C, H, W"):
            objects_per_frame(bad)
    with pytest.raises(ValueError, match="threshold"):
        objects_per_frame(videos, threshold=float("nan"))
