"""Noise-word augmentation of captions (paper 002, appendix C.3.1 and C.3.3; DESIGN §6).

The alignment method trains on a second version ``t̂_i`` of each caption ``t_i`` in which, with
probability ``p = 0.15``, a random word is inserted: the text varies inside its bucket while the
bucket loss still uses the original caption. The paper draws noise words from a DBpedia dictionary
with every word of the data set's corpus removed, so a noise word can never turn one caption into
another (word *removal* was rejected for that reason). Here the dictionary is the fixed list
:data:`COMMON_WORDS` filtered against the vocabulary that is passed in.

A caption of ``n`` words (split on whitespace) has ``n + 1`` gaps — before the first word, between
words, after the last — and each gap independently receives one noise word with probability ``p``,
so on average ``p (n + 1)`` words are inserted and the original words keep their order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["COMMON_WORDS", "NOISE_PROBABILITY", "NoiseWords", "vocabulary_of"]

NOISE_PROBABILITY = 0.15  # appendix C.3.3
_SPLIT = re.compile(r"[^0-9a-z]+")  # "up-left" also bans "up" and "left"

# Common English words (nouns, verbs, adjectives, function words); no negations, which could flip a
# caption's meaning for a language-model text encoder. Lower case, one token each.
# fmt: off
COMMON_WORDS: tuple[str, ...] = (
    "about", "above", "across", "after", "again", "air", "all", "also", "always", "among",
    "an", "animal", "another", "answer", "any", "apple", "are", "area", "around", "as",
    "at", "away", "back", "ball", "be", "because", "been", "before", "began", "being",
    "below", "best", "better", "between", "big", "bird", "black", "blue", "boat", "body",
    "book", "both", "bottom", "box", "boy", "bring", "brown", "build", "but", "by",
    "call", "came", "can", "car", "care", "carry", "cat", "center", "change", "children",
    "city", "close", "cold", "color", "come", "could", "country", "course", "cut", "day",
    "did", "different", "do", "does", "dog", "door", "down", "draw", "during", "each",
    "early", "earth", "easy", "eat", "end", "enough", "even", "ever", "every", "eye",
    "face", "fact", "family", "far", "farm", "fast", "father", "feel", "few", "field",
    "find", "fire", "first", "fish", "five", "food", "foot", "for", "form", "found",
    "four", "friend", "from", "full", "game", "gave", "girl", "give", "go", "good",
    "got", "great", "green", "ground", "group", "grow", "hand", "hard", "has", "have",
    "he", "head", "hear", "help", "her", "here", "high", "him", "his", "hold",
    "home", "horse", "hot", "house", "how", "idea", "if", "important", "in", "into",
    "is", "island", "it", "just", "keep", "kind", "king", "know", "land", "large",
    "last", "late", "learn", "leave", "left", "letter", "life", "light", "like", "line",
    "list", "little", "live", "long", "look", "made", "make", "man", "many", "map",
    "may", "me", "mean", "men", "might", "mile", "money", "moon", "more", "morning",
    "most", "mother", "mountain", "move", "much", "music", "must", "my", "name", "near",
    "need", "new", "next", "night", "now", "number", "of", "off", "often", "old",
    "on", "once", "one", "only", "open", "or", "other", "our", "out", "over",
    "own", "page", "paper", "part", "people", "picture", "place", "plant", "play", "point",
    "quick", "rain", "read", "real", "red", "right", "river", "road", "rock", "room",
    "run", "said", "same", "saw", "say", "school", "sea", "second", "see", "sentence",
    "set", "she", "ship", "short", "should", "show", "side", "small", "so", "some",
    "song", "soon", "sound", "south", "spell", "stand", "star", "start", "still", "stop",
    "story", "street", "study", "such", "sun", "table", "take", "talk", "tell", "than",
    "that", "the", "their", "them", "then", "there", "these", "they", "thing", "think",
    "this", "those", "thought", "three", "through", "time", "to", "together", "too", "took",
    "top", "tree", "try", "turn", "two", "under", "until", "up", "us", "use",
    "very", "walk", "want", "warm", "was", "watch", "water", "way", "we", "week",
    "well", "went", "were", "what", "when", "where", "which", "while", "white", "who",
    "why", "will", "wind", "with", "without", "word", "work", "world", "would", "write",
    "year", "yellow", "you", "young", "your",
)
# fmt: on


def vocabulary_of(captions: Iterable[str]) -> set[str]:
    """The lower-case words of ``captions``, hyphenated words also split into their parts."""
    words: set[str] = set()
    for caption in captions:
        for token in caption.lower().split():
            words.add(token)
            words.update(part for part in _SPLIT.split(token) if part)
    return words


class NoiseWords:
    """Insert noise words that no caption of the data set contains (paper 002, appendix C.3.3).

    Args:
        vocabulary: every word of the data set's captions (any case; see :func:`vocabulary_of`).
            Entries are also split at non-alphanumeric characters, so ``"up-left"`` bans ``"up"``.
        p: probability that a gap between words (or at either end) receives a noise word.
        words: the dictionary to filter; :data:`COMMON_WORDS` by default.

    Attributes:
        p: the insertion probability.
        words: the noise words left after filtering, in dictionary order.
    """

    def __init__(
        self, vocabulary: Iterable[str], p: float = NOISE_PROBABILITY, words: Sequence[str] = COMMON_WORDS
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"noise-word probability p must be in [0, 1], got {p}")
        if isinstance(vocabulary, str):
            raise TypeError(f"vocabulary must be a collection of words, got the string {vocabulary!r}")
        banned = vocabulary_of(vocabulary)
        self.p = float(p)
        self.words: tuple[str, ...] = tuple(w for w in dict.fromkeys(words) if w.lower() not in banned)
        if not self.words:
            raise ValueError(
                f"no noise word left: all {len(words)} dictionary words are in the vocabulary "
                f"({len(banned)} words)"
            )

    def __call__(self, caption: str, rng: np.random.Generator) -> str:
        """``caption`` with a noise word inserted in each of its ``n + 1`` gaps with probability ``p``.

        Args:
            caption: words separated by whitespace.
            rng: the only source of randomness; it draws ``n + 1`` uniforms and one index per insertion.

        Returns:
            The augmented caption, words joined by single spaces; ``caption`` itself when nothing
            was inserted.
        """
        tokens = caption.split()
        insert = rng.random(len(tokens) + 1) < self.p  # (n + 1,) one flag per gap
        picks = rng.integers(len(self.words), size=int(insert.sum()))
        if len(picks) == 0:
            return caption
        noise = iter(self.words[k] for k in picks)
        out: list[str] = []
        for gap, token in enumerate([*tokens, None]):
            if insert[gap]:
                out.append(next(noise))
            if token is not None:
                out.append(token)
        return " ".join(out)

    def batch(self, captions: Sequence[str], rng: np.random.Generator) -> list[str]:
        """Augment each caption in order with one shared ``rng`` (the same as calling one by one)."""
        if isinstance(captions, str):
            raise TypeError(f"batch expects a sequence of captions, got the string {captions!r}")
        return [self(caption, rng) for caption in captions]
