"""Fully sharded data parallel training (``train.distributed: fsdp``), on torch's FSDP2 (``fully_shard``).

Each process holds a 1/N slice of every parameter, gradient, optimizer moment and EMA weight (DTensors
sharded on dim 0); a block's full weights exist only while it runs forward or backward. What the
trainer does with them stays the same, through the calls here:

- clipping: ``torch.nn.utils.clip_grad_norm_`` reduces the norm of DTensor gradients over the shards;
- EMA: ``_foreach_lerp_`` on DTensors updates each process's slice (an elementwise update needs no
  communication);
- checkpoints: ``full_state``/``full_optimizer_state`` gather the whole tensors on the first process,
  so a checkpoint is the same consolidated ``model.safetensors``/``ema.safetensors`` a one-process run
  writes, and loads for sampling anywhere; ``--resume`` scatters them back (``load_full_state``).

Every function here is a collective: all processes call it, in the same order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from tempoflow.errors import CheckpointError
from tempoflow.weights import FROZEN_PREFIXES

# Full (unsharded) state dicts, gathered to the first process's CPU memory; the others get {}.
FULL_ON_FIRST = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Loading: every process passes the full tensors (read from the checkpoint) and keeps its slice.
FULL_EVERYWHERE = StateDictOptions(full_state_dict=True, strict=False)


def shard_units(module: nn.Module) -> list[nn.Module]:
    """The modules ``shard`` wraps one by one: the elements of the outermost ``nn.ModuleList``s that hold
    parameters (the DiT's blocks, the UNet's stages), in the order they are found."""
    units: list[nn.Module] = []
    inside: set[int] = set()
    for sub in module.modules():
        if id(sub) in inside:
            continue
        if isinstance(sub, nn.ModuleList):
            for element in sub:
                if any(True for _ in element.parameters()):
                    units.append(element)
                    inside.update(id(m) for m in element.modules())
    return units


def shard(module: nn.Module) -> int:
    """``fully_shard`` each unit (``shard_units``), then ``module`` itself (its remaining parameters:
    embeddings, heads, a frozen codec). The process group must be initialised. Returns the number of
    units, the module's own included."""
    units = shard_units(module)
    for unit in units:
        fully_shard(unit)
    fully_shard(module)
    return len(units) + 1


def local(t: Tensor) -> Tensor:
    """This process's slice of a sharded tensor (the tensor itself when not sharded)."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Gather sharded tensors whole (``DTensor.full_tensor``) on every process; plain tensors unchanged."""
    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}


def full_state(module: nn.Module) -> dict[str, Tensor]:
    """The learned state of a sharded module, whole, on the first process's CPU ({} on the others);
    frozen entries rebuilt from the config (``FROZEN_PREFIXES``) left out, as ``learned_state`` does."""
    state = get_model_state_dict(module, options=FULL_ON_FIRST)
    return {k: v for k, v in state.items() if not k.startswith(FROZEN_PREFIXES)}


def load_full_state(module: nn.Module, state: dict[str, Tensor], where: Path) -> None:
    """Load whole tensors (every process passes the same) into a sharded module: each keeps its slice.

    Raises:
        CheckpointError: the names or (whole) shapes differ from the module's learned state.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith(FROZEN_PREFIXES)}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        differ = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise CheckpointError(f"weights in {where} do not fit the model: {differ[:3]} differ in name or shape")
    set_model_state_dict(module, state, options=FULL_EVERYWHERE)


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state, whole and keyed by parameter name, on the first process ({} on the others)."""
    return get_optimizer_state_dict(module, optimizer, options=FULL_ON_FIRST)


def load_full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a whole optimizer state (``full_optimizer_state``'s form) into the sharded optimizer."""
    set_optimizer_state_dict(module, optimizer, state, options=FULL_EVERYWHERE)


class ShardedOptimizer:
    """A sharded optimizer seen through whole state dicts, as ``tempoflow.train.state`` saves and restores
    them: the same layout whatever the number of processes."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer):
        self.module, self.optimizer = module, optimizer

    def state_dict(self) -> dict:
        return full_optimizer_state(self.module, self.optimizer)

    def load_state_dict(self, state: dict) -> None:
        load_full_optimizer_state(self.module, self.optimizer, state)


@torch.no_grad()
def copy_full_into(target: Tensor, full: Tensor) -> None:
    """``target.copy_(full)`` where ``target`` may be sharded: each process copies its slice of ``full``."""
    if isinstance(target, DTensor):
        full = distribute_tensor(full.to(target.device, target.dtype), target.device_mesh, target.placements)
    target.copy_(full)
