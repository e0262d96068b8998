"""The optimisation schedule and gradient clipping groups of the trainer."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from tempoflow.methods.base import Method


def lr_lambda(cfg) -> Callable[[int], float]:
    """The learning-rate factor of optimizer step ``k`` (0-based) for a ``TrainConfig``: linear warm-up to
    1 over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``steps``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def clip_groups(method: Method) -> list[list[nn.Parameter]]:
    """Trainable parameters split by player: one group per discriminator, one for everything else.

    Each group's gradient norm is clipped on its own: a discriminator's BCE gradient must not be
    shrunk by the generator's (eq. (2) of the align method sums over thousands of pixels) nor the
    other way round. A method without discriminators has one group.
    """
    discs = method.players()
    in_disc = {id(p) for d in discs for p in d.parameters()}
    groups = [[p for p in d.parameters() if p.requires_grad] for d in discs]
    groups.append([p for p in method.parameters() if p.requires_grad and id(p) not in in_disc])
    return [g for g in groups if g]
