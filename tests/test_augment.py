"""Noise-word augmentation: never a data set word, order kept, rate ≈ p, seeded, loud on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tempoflow.data.shapes import ShapesConfig, all_captions
from tempoflow.text.augment import COMMON_WORDS, NoiseWords, vocabulary_of

CAPTIONS = all_captions(ShapesConfig(two_objects=True, speeds=True))
VOCABULARY = vocabulary_of(CAPTIONS)


def test_vocabulary_splits_hyphenated_words():
    assert vocabulary_of(["a red circle moves Up-Left"]) == {
        "a",
        "red",
        "circle",
        "moves",
        "up-left",
        "up",
        "left",
    }


def test_noise_list_excludes_every_data_set_word():
    noise = NoiseWords(VOCABULARY)
    # Reference: the plain set difference of the dictionary and the words seen in the captions.
    seen = {w for c in CAPTIONS for w in c.replace("-", " ").split()}
    assert set(noise.words) == set(COMMON_WORDS) - seen
    assert {"red", "left", "up", "down", "right"} <= set(COMMON_WORDS) - set(noise.words)


def test_never_inserts_a_data_set_word_and_keeps_the_original_order():
    noise = NoiseWords(VOCABULARY, p=0.5)
    rng = np.random.default_rng(0)
    inserted = 0
    for caption in CAPTIONS[::3]:
        for _ in range(5):
            out = noise(caption, rng).split()
            added = [w for w in out if w not in VOCABULARY]
            assert set(added) <= set(noise.words)
            # Every word that is not noise is an original word, in the original order.
            assert [w for w in out if w in VOCABULARY] == caption.split()
            assert len(out) == len(caption.split()) + len(added)
            inserted += len(added)
    assert inserted > 100  # the check above ran over real insertions


def test_p_zero_is_the_identity_and_p_one_fills_every_gap():
    rng = np.random.default_rng(1)
    assert all(NoiseWords(VOCABULARY, p=0.0)(c, rng) == c for c in CAPTIONS[:50])
    full = NoiseWords(VOCABULARY, p=1.0)
    for caption in CAPTIONS[:20]:
        out = full(caption, rng).split()
        n = len(caption.split())
        assert len(out) == 2 * n + 1 and out[1::2] == caption.split()


def test_insertion_rate_matches_p():
    # Reference: each of the n + 1 gaps is a Bernoulli(p) trial, so the rate over G gaps has
    # standard error sqrt(p (1 − p) / G); allow 5 of them.
    p = 0.15
    noise = NoiseWords(VOCABULARY, p=p)
    rng = np.random.default_rng(2)
    captions = CAPTIONS * 20
    augmented = noise.batch(captions, rng)
    gaps = sum(len(c.split()) + 1 for c in captions)
    added = sum(len(a.split()) - len(c.split()) for a, c in zip(augmented, captions))
    assert abs(added / gaps - p) < 5 * math.sqrt(p * (1 - p) / gaps)


def test_seeded_rng_is_deterministic_and_batch_equals_one_by_one():
    noise = NoiseWords(VOCABULARY)
    first = noise.batch(CAPTIONS[:200], np.random.default_rng(3))
    again = noise.batch(CAPTIONS[:200], np.random.default_rng(3))
    rng = np.random.default_rng(3)
    one_by_one = [noise(c, rng) for c in CAPTIONS[:200]]
    other = noise.batch(CAPTIONS[:200], np.random.default_rng(4))
    assert first == again == one_by_one
    assert first != other and first != CAPTIONS[:200]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="no noise word left"):
        NoiseWords(set(COMMON_WORDS))
    with pytest.raises(ValueError, match="no noise word left"):
        NoiseWords({"cat", "dog"}, words=["Cat", "dog"])  # case does not hide a data set word
    with pytest.raises(ValueError, match="p must be in"):
        NoiseWords(VOCABULARY, p=1.5)
    with pytest.raises(TypeError, match="string"):
        NoiseWords("a red circle")
    with pytest.raises(TypeError, match="string"):
        NoiseWords(VOCABULARY).batch("a red circle moves left", np.random.default_rng(0))
