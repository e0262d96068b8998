"""Caption conditioning shared by the text-to-video flows (``flow``, ``vlfm``): caption inputs,
uncaptioned training videos, the classifier-free-guided field and its evaluation count.

A video without a caption (an empty string, e.g. a folder video with no ``.txt``) trains on the null
condition — the same learned ∅ that caption dropout trains for classifier-free guidance — so an
uncaptioned video teaches the unconditional model, as the README promises. Sampling still asks for
a real caption (an empty one is refused by the text encoder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tempoflow.flows.guidance import guided
from tempoflow.text import TextEncoder

Field = Callable[[Tensor, Tensor], Tensor]  # (x, t) -> output, t a 0-dim tensor or one per sample

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


def guided_field(net: Callable[..., Tensor], cond: dict[str, Tensor], guidance: float) -> Field:
    """``(x, t) ->`` the classifier-free-guided output of ``net(x, t, drop=..., **cond)`` for the ``B``
    captions embedded in ``cond`` (Ho & Salimans 2022; ``tempoflow.flows.guidance``).

    ``x`` is ``(B, ...)``; ``t`` a 0-dim time (broadcast to the batch) or one per sample. Guidance
    doubles the batch, so the caption inputs are repeated to fit.
    """
    B = cond["pooled"].shape[0]

    def model_fn(x: Tensor, t: Tensor, drop: Tensor) -> Tensor:
        reps = x.shape[0] // B
        c = {k: v.repeat(reps, *([1] * (v.ndim - 1))) for k, v in cond.items()}
        return net(x, t.expand(x.shape[0]) if t.ndim == 0 else t, drop=drop, **c)

    return guided(model_fn, guidance)


@contextmanager
def progress_counted(field: Field, progress: bool) -> Iterator[Field]:
    """``field`` with a progress bar that advances once per evaluation (shown when ``progress``)."""
    with tqdm(desc="sample", unit="nfe", disable=not progress, leave=False) as bar:

        def counted(x: Tensor, t: Tensor) -> Tensor:
            bar.update(1)
            return field(x, t)

        yield counted
