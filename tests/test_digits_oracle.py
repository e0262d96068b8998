"""Digits oracle: digit and direction read back from rendered moving-digits videos.

Reference: the renderer's own captions (``tempoflow.data.digits``). The classifier trains on the train
part of the sklearn images, so the test and held-out videos are scored on unseen handwriting.
"""

from __future__ import annotations

import pytest
import torch

from tempoflow.data.digits import DIRECTIONS, DigitsConfig, caption_of, make_digits, parse_caption
from tempoflow.metrics.digits_oracle import caption_accuracy, read_digits

CFG = DigitsConfig(resolution=16, num_frames=6, videos_per_caption=4, test_per_bucket=2)


@pytest.mark.parametrize("split", ["test", "heldout"])
def test_reads_rendered_videos_of_unseen_handwriting(split):
    data = make_digits(CFG, split)
    score = caption_accuracy(data.videos, data.captions, CFG)
    assert score.direction == 1.0  # the centre-of-mass track is exact on clean renders
    assert score.digit >= 0.85, score.digit  # 16-pixel digits: 0.93 (76 test videos), 0.875 (8 held out)
    assert score.accuracy == pytest.approx(sum(score.correct) / len(data))


def test_wrong_captions_score_zero_and_reversed_videos_flip_direction():
    data = make_digits(CFG, "test")
    flip = {
        "left to right": "right to left",
        "right to left": "left to right",
        "top to bottom": "bottom to top",
        "bottom to top": "top to bottom",
    }
    wrong = [caption_of(d, flip[direction]) for d, direction in map(parse_caption, data.captions)]
    assert caption_accuracy(data.videos, wrong, CFG).direction == 0.0
    # Played backwards, the first steps move the other way (no bounce in the last steps at this length).
    _, directions = read_digits(data.videos.flip(1)[:, -3:], CFG)
    assert directions == [flip[parse_caption(c)[1]] for c in data.captions]
    assert set(directions) <= set(DIRECTIONS)


def test_blank_videos_and_bad_input():
    digits, directions = read_digits(torch.zeros(2, 4, 3, 16, 16), CFG)
    assert digits == [None, None] and directions == [None, None]
    with pytest.raises(ValueError, match="16 pixels wide"):
        read_digits(torch.zeros(1, 4, 3, 16, 16), DigitsConfig(resolution=32))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, H\)"):
        read_digits(torch.zeros(4, 3, 16, 16), CFG)
    with pytest.raises(ValueError, match="cannot parse"):
        caption_accuracy(torch.zeros(1, 4, 3, 16, 16), ["a red circle moves left"], CFG)
