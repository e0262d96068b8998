"""Checkpoints: safetensors weights (+ EMA) with a JSON config, written atomically.

Layout of ``<out_dir>/checkpoints/step_00001000/``::

    model.safetensors     trained weights of the method
    ema.safetensors       EMA weights (what sampling uses by default)
    config.json           the full experiment config and method metadata
    state/                optimizer, scheduler, RNG and step (accelerate ``save_state``); only for resume

A checkpoint is first written to a temporary sibling folder and renamed into place, and the
``latest`` pointer is replaced atomically after it, so a crash never leaves a half-written
checkpoint that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tempoflow.errors import CheckpointError

WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
CONFIG = "config.json"
STATE = "state"
LATEST = "latest"


@dataclass
class Checkpoint:
    """A checkpoint folder as read back: its config dict and where its files are."""

    path: Path
    config: dict
    meta: dict

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    def weights(self, ema: bool = True) -> dict[str, torch.Tensor]:
        name = EMA_WEIGHTS if ema and (self.path / EMA_WEIGHTS).exists() else WEIGHTS
        return load_file(str(self.path / name))

    def digest(self) -> str:
        """SHA-256 of the weights file, to name the exact model in metrics and reports."""
        h = hashlib.sha256()
        with open(self.path / WEIGHTS, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]


# Sub-modules rebuilt from the config (a frozen codec loaded from its own run or a pretrained model):
# never saved in a checkpoint and never averaged. A checkpoint records the codec's fingerprint instead.
FROZEN_PREFIXES = ("codec.",)


def learned_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without the frozen, rebuilt-from-config entries (``FROZEN_PREFIXES``)."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith(FROZEN_PREFIXES)}


def _state_dict(state: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # contiguous CPU copies: safetensors refuses shared or non-contiguous storage
    state = learned_state(state) if isinstance(state, nn.Module) else state
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def staging_dir(root: Path, step: int) -> Path:
    """The temporary folder a checkpoint is assembled in before it is renamed into place."""
    return root / f".tmp_step_{step:08d}"


def commit_checkpoint(
    root: Path, step: int, model: nn.Module, ema: dict[str, torch.Tensor] | None, config: dict, meta: dict
) -> Path:
    """Add weights and config to the staging folder, rename it to ``root/step_XXXXXXXX``, and
    point ``root/latest`` at it. The resumable state (``state/``) is already in the staging folder.
    """
    tmp = staging_dir(root, step)
    tmp.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    try:
        save_file(_state_dict(model), str(tmp / WEIGHTS))
        if ema is not None:
            save_file(_state_dict(ema), str(tmp / EMA_WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps({"config": config, "meta": {**meta, "step": step}}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run folder, a ``checkpoints`` folder or a checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    for candidate in (path, path / "checkpoints"):
        if (candidate / LATEST).is_file():
            path = candidate / (candidate / LATEST).read_text().strip()
            break
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"not a tempoflow checkpoint (no {CONFIG} and {WEIGHTS}): {path}")
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = resolve_checkpoint(path)
    try:
        data = json.loads((path / CONFIG).read_text())
        return Checkpoint(path=path, config=data["config"], meta=data.get("meta", {}))
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"corrupt {CONFIG} in checkpoint {path}") from err


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
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, SafetensorError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot read {what} weights {path}: {reason}") from err
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
