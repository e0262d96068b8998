"""Classifier-free guidance for flow velocities (Ho & Salimans 2022).

One network trained with its conditioning dropped at random gives both the conditional velocity
``v(x, t | c)`` and the unconditional one ``v(x, t | ∅)``; sampling follows the extrapolation

    ṽ = v(x, t | ∅) + w (v(x, t | c) − v(x, t | ∅)),

which is the conditional field at ``w = 1``, the unconditional one at ``w = 0`` and sharpens the
conditioning for ``w > 1``. Flow matching applies it to velocities exactly as diffusion applies it
to noise predictions: the velocity is affine in the noise prediction at fixed ``(x, t)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ModelFn", "cfg_velocity", "guided", "warn_if_unconditional_untrained"]

# model_fn(x, t, drop_mask) -> velocity: drop_mask[i] = True runs sample i without its conditioning.
ModelFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def warn_if_unconditional_untrained(scale: float, caption_dropout: float, setting: str) -> None:
    """Warn when guidance ``scale`` ≠ 1 uses a model whose captions were never dropped in training:
    its unconditional velocity ``v(x, t | ∅)`` is untrained, and guidance mixes it in.

    Args:
        scale: guidance weight ``w``.
        caption_dropout: the training probability of dropping the caption.
        setting: the config key that set it, named in the message (e.g. ``flow.caption_dropout``).
    """
    if scale != 1.0 and caption_dropout == 0.0:
        warnings.warn(f"guidance {scale:g} on a model trained with {setting}=0: its unconditional velocity "
                      "was never trained; sample with sample.guidance=1 or train with caption dropout",
                      UserWarning, stacklevel=3)


def cfg_velocity(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """Guided velocity ``v_uncond + scale · (v_cond − v_uncond)`` (Ho & Salimans 2022, eq. 6).

    Args:
        v_cond: conditional velocity, any shape.
        v_uncond: unconditional velocity, the same shape.
        scale: guidance weight ``w``; 1 is the conditional model, 0 the unconditional one.

    Returns:
        The guided velocity, shaped like ``v_cond``. At ``scale`` 1 and 0 it *is* ``v_cond`` or
        ``v_uncond`` (bit-exact, where the formula would round).
    """
    if v_cond.shape != v_uncond.shape:
        raise ValueError(f"v_cond and v_uncond must have the same shape, got {tuple(v_cond.shape)} and "
                         f"{tuple(v_uncond.shape)}")
    if scale == 1.0:
        return v_cond
    if scale == 0.0:
        return v_uncond
    return v_uncond + scale * (v_cond - v_uncond)


def guided(model_fn: ModelFn, scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap a conditional model into the guided velocity field ``velocity(x, t)`` an ODE solver takes.

    Each call runs ONE batched forward over ``[x; x]`` with ``drop_mask = [False]·B + [True]·B``
    (conditional half first) and combines the halves with :func:`cfg_velocity`. At ``scale == 1``
    the unconditional half is skipped: one forward over ``x`` with nothing dropped.

    Args:
        model_fn: ``model_fn(x, t, drop_mask)`` with ``x`` of shape ``(N, ...)``, ``t`` passed through
            (a scalar, or shape ``(N,)``) and ``drop_mask`` a bool tensor of shape ``(N,)`` on
            ``x``'s device; returns a velocity shaped like ``x``. Any conditioning (captions,
            embeddings) is closed over by ``model_fn`` for the B samples and must be repeated by it
            for the doubled batch.
        scale: guidance weight ``w``.

    Returns:
        ``velocity(x, t)`` with ``x`` of shape ``(B, ...)`` and ``t`` a 0-dim tensor or shape ``(B,)``
        (repeated to ``(2B,)`` for the doubled batch); returns shape ``(B, ...)``.
    """
    if not math.isfinite(scale):
        raise ValueError(f"guidance scale must be finite, got {scale}")

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        batch = x.shape[0]
        if scale == 1.0:
            # Guidance off: the conditional model alone, half the compute.
            return model_fn(x, t, torch.zeros(batch, dtype=torch.bool, device=x.device))
        x_both = torch.cat([x, x], dim=0)  # (2B, ...): conditional half, then unconditional half
        t_both = torch.cat([t, t], dim=0) if t.dim() > 0 else t  # (2B,) or scalar
        drop = torch.zeros(2 * batch, dtype=torch.bool, device=x.device)
        drop[batch:] = True  # (2B,): drop the conditioning on the second half only
        v_both = model_fn(x_both, t_both, drop)  # (2B, ...)
        return cfg_velocity(v_both[:batch], v_both[batch:], scale)

    return velocity
