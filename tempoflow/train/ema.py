"""Exponential moving average of a method's weights, updated in place without host syncs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from tempoflow.errors import CheckpointError
from tempoflow.train.checkpoint import learned_state
from tempoflow.train.sharding import copy_full_into


class EMA(nn.Module):
    """Exponential moving average of a module's learned floating-point state: ``ema ← d·ema + (1−d)·θ``.

    A fused ``_foreach_lerp_`` per step; torch's ``AveragedModel`` checks a device counter on
    every update, which would force a host sync each step on a GPU. Frozen sub-modules rebuilt from
    the config (the codec, ``FROZEN_PREFIXES``) are neither copied nor averaged.
    """

    def __init__(self, module: nn.Module, decay: float):
        super().__init__()
        state = learned_state(module)
        self.names = list(state)
        for i, v in enumerate(state.values()):
            self.register_buffer(f"v{i}", v.detach().clone())
        self.decay = decay

    def averaged(self) -> dict[str, Tensor]:
        """The averaged state under the module's own names."""
        return {name: getattr(self, f"v{i}") for i, name in enumerate(self.names)}

    @torch.no_grad()
    def load(self, weights: dict[str, Tensor], where: Path) -> None:
        """Set the average to saved weights (under the module's names, as ``averaged`` gives them).

        Raises:
            CheckpointError: the names or shapes differ from the model's.
        """
        current = self.averaged()
        if weights.keys() != current.keys() or any(weights[k].shape != v.shape for k, v in current.items()):
            raise CheckpointError(f"EMA weights in {where} do not match the model")
        for k, v in current.items():
            copy_full_into(v, weights[k])  # v may be sharded (train.distributed=fsdp)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        if getattr(self, "_owner", None) != id(module):  # pair the tensors once: both sides update in place
            current = learned_state(module)
            pairs = [(v, current[k]) for k, v in self.averaged().items()]
            self._floats = ([a for a, b in pairs if a.dtype.is_floating_point],
                            [b for a, b in pairs if a.dtype.is_floating_point])
            self._others = [(a, b) for a, b in pairs if not a.dtype.is_floating_point]
            self._owner = id(module)  # an id, not the module: nn.Module would register it as a child
        torch._foreach_lerp_(*self._floats, 1.0 - self.decay)
        for a, b in self._others:  # integer buffers (counters) follow the model
            a.copy_(b)
