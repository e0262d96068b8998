"""Weight files: tensors read without unpickling objects, and loaded into a module with one clear line
when they do not fit. Used by checkpoints and by the metrics' and codecs' published weights."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tempoflow.errors import CheckpointError

# What torch.load(weights_only=True) raises on a truncated, empty or garbage file (found by fuzzing it):
# a bad zip archive (RuntimeError), no data (EOFError), refused or malformed pickle opcodes (the others).
TORCH_LOAD_ERRORS = (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, pickle.UnpicklingError)


def first_line(err: BaseException) -> str:
    """An exception's first line (its type's name when it has no message), for one-line errors."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# Sub-modules rebuilt from the config (a frozen codec loaded from its own run or a pretrained model):
# never saved in a checkpoint and never averaged. A checkpoint records the codec's fingerprint instead.
FROZEN_PREFIXES = ("codec.",)


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a published weight file, read without unpickling objects.

    ``.safetensors``, or ``.pt``/``.pth`` through ``torch.load(weights_only=True)``; a state dict
    nested under ``"state_dict"`` or ``"model"`` and a DDP ``"module."`` prefix are accepted.
    ``what`` names the weights in errors ("I3D", "LPIPS backbone", ...).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} weights not found: {path}")
    if path.suffix not in (".pt", ".pth", ".safetensors"):
        raise CheckpointError(f"{what} weights must be .pt, .pth or .safetensors: {path}")
    try:
        if path.suffix == ".safetensors":
            data = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (*TORCH_LOAD_ERRORS, SafetensorError) as err:
        raise CheckpointError(f"cannot read {what} weights {path}: {first_line(err)}") from err
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{what} weights {path} hold no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Load weights strictly, with one clear line when they do not fit the module."""
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"weights in {where} do not fit the model: {str(err).splitlines()[-1]}") from err
    missing = [k for k in missing if not k.startswith(FROZEN_PREFIXES)]  # rebuilt from the config
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {where} do not match the model: missing {list(missing)[:3]}, "
            f"unexpected {list(unexpected)[:3]}"
        )
