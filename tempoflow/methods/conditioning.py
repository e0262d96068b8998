"""Caption conditioning shared by the text-to-video flows (``flow``, ``vlfm``).

A video without a caption (an empty string, e.g. a folder video with no ``.txt``) trains on the null
condition — the same learned ∅ that caption dropout trains for classifier-free guidance — so an
uncaptioned video teaches the unconditional model, as the README promises. Sampling still asks for
a real caption (an empty one is refused by the text encoder).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tempoflow.text import TextEncoder

# What an uncaptioned video is looked up as; the network never sees it (its rows are dropped).
NO_CAPTION = "<no caption>"


def encode_captions(text: TextEncoder, captions: list[str], device: torch.device) -> dict[str, Tensor]:
    """The network's caption inputs: ``tokens (B, L, D)``, ``mask (B, L)``, ``pooled (B, D)``.

    Raises:
        DataError: an empty caption or a non-string (``tempoflow.text.check_captions``).
    """
    emb = text.lookup(captions, device)
    return {"tokens": emb.tokens, "mask": emb.mask, "pooled": emb.pooled}


def training_captions(captions: list[str], device: torch.device) -> tuple[list[str], Tensor]:
    """Training captions with the empty ones replaced by ``NO_CAPTION``, and a ``(B,)`` bool mask of
    them, to be OR-ed into caption dropout so those rows get the null condition."""
    empty = [isinstance(c, str) and not c.strip() for c in captions]
    kept = [NO_CAPTION if e else c for c, e in zip(captions, empty)]
    return kept, torch.tensor(empty, dtype=torch.bool).to(device, non_blocking=True)
