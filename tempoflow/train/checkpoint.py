"""Checkpoints: safetensors weights (+ EMA) with a JSON config, written atomically.

Layout of ``<out_dir>/checkpoints/step_00001000/``::

    model.safetensors     trained weights of the method
    ema.safetensors       EMA weights (what sampling uses by default)
    config.json           the full experiment config and method metadata, with the SHA-256 of every other file
    state/                optimizer, scheduler, RNG and step (``tempoflow.train.state``); only for resume

A checkpoint is first written to a temporary sibling folder and renamed into place, and the
``latest`` pointer is replaced atomically after it, so a crash never leaves a half-written
checkpoint that looks complete. Reading one checks each file against its recorded SHA-256 (a
damaged copy or a flipped bit is named, not loaded); checkpoints written before checksums were
recorded load without that check. Every unusable file is reported as one ``CheckpointError`` that
names it and says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

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
CHECKSUMS = "sha256"  # key in config.json's meta: {path relative to the checkpoint: SHA-256 hex digest}
# What torch.load(weights_only=True) raises on a truncated, empty or garbage file (found by fuzzing it):
# a bad zip archive (RuntimeError), no data (EOFError), refused or malformed pickle opcodes (the others).
TORCH_LOAD_ERRORS = (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, pickle.UnpicklingError)


def first_line(err: BaseException) -> str:
    """An exception's first line (its type's name when it has no message), for one-line errors."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def damaged(checkpoint: Path, file: Path, problem: str) -> CheckpointError:
    """The one-line error for an unusable file of ``checkpoint``: which file, what is wrong, what to do."""
    earlier = sorted(p for p in checkpoint.parent.glob("step_*") if p.is_dir() and p.name < checkpoint.name)
    if earlier:
        fallback = (f"or use the earlier checkpoint {earlier[-1]} (pass that folder, or write "
                    f"'{earlier[-1].name}' into {checkpoint.parent / LATEST} to resume from it)")
    else:
        fallback = "or train the run again (it has no earlier checkpoint)"
    return CheckpointError(f"{file} {problem}: restore it from a copy of the run, {fallback}")


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a checkpoint folder but its ``config.json`` (which records them)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / CONFIG)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


@dataclass
class Checkpoint:
    """A checkpoint folder as read back: its config dict, its metadata and where its files are."""

    path: Path
    config: dict
    meta: dict
    verified: set[str] = field(default_factory=set, repr=False)  # files already checked: hashed once

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def checksums(self) -> dict[str, str]:
        """Recorded SHA-256 per file (empty for checkpoints written before checksums were recorded)."""
        return self.meta.get(CHECKSUMS, {})

    def file(self, name: str) -> Path:
        """``path / name``, checked to exist and to match its recorded SHA-256.

        Raises:
            CheckpointError: the file is missing or differs from the one written.
        """
        file = self.path / name
        if not file.is_file():
            raise damaged(self.path, file, "is missing")
        expected = self.checksums.get(name)
        if name not in self.verified and expected is not None and sha256_file(file) != expected:
            raise damaged(self.path, file, "does not match the SHA-256 recorded in config.json "
                                           "(damaged or changed since it was written)")
        self.verified.add(name)
        return file

    def verify(self, prefix: str = "") -> None:
        """Check every recorded file whose relative path starts with ``prefix`` (all by default).

        Raises:
            CheckpointError: a file is missing or differs from the one written.
        """
        for name in self.checksums:
            if name.startswith(prefix):
                self.file(name)

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of one of the checkpoint's safetensors files, after ``file``'s checks.

        Raises:
            CheckpointError: missing, changed, or not a readable safetensors file.
        """
        file = self.file(name)
        try:
            return load_file(str(file))
        except (SafetensorError, OSError) as err:
            raise damaged(self.path, file, f"is not a readable safetensors file ({first_line(err)})") from err

    def weights(self, ema: bool = True) -> dict[str, torch.Tensor]:
        """The EMA weights (or the trained ones). A checkpoint written without EMA weights gives the
        trained ones, with a warning.

        Raises:
            CheckpointError: the weights file is missing, changed or unreadable.
        """
        if ema and EMA_WEIGHTS not in self.checksums and not (self.path / EMA_WEIGHTS).exists():
            warnings.warn(f"{self.path} has no {EMA_WEIGHTS}: using its trained weights ({WEIGHTS})")
            ema = False
        return self.tensors(EMA_WEIGHTS if ema else WEIGHTS)

    def digest(self) -> str:
        """SHA-256 of the weights file, to name the exact model in metrics and reports."""
        return sha256_file(self.path / WEIGHTS)[:16]


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
    point ``root/latest`` at it. The resumable state (``state/``) is already in the staging folder;
    ``config.json`` records the SHA-256 of every file, the state's included.
    """
    tmp = staging_dir(root, step)
    tmp.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    try:
        save_file(_state_dict(model), str(tmp / WEIGHTS))
        if ema is not None:
            save_file(_state_dict(ema), str(tmp / EMA_WEIGHTS))
        meta = {**meta, "step": step, CHECKSUMS: checksums(tmp)}
        (tmp / CONFIG).write_text(json.dumps({"config": config, "meta": meta}, indent=2))
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


def holds_checkpoints(root: Path) -> bool:
    """Whether ``root`` is a ``checkpoints`` folder: a ``latest`` pointer or ``step_*`` folders."""
    return (root / LATEST).exists() or any(p.is_dir() for p in root.glob("step_*"))


def read_pointer(root: Path) -> Path:
    """The checkpoint folder ``root/latest`` names.

    Raises:
        CheckpointError: ``latest`` is missing, unreadable or does not name a folder in ``root``.
    """
    pointer = root / LATEST
    try:
        name = pointer.read_bytes().decode("utf-8").strip()
        problem = f"holds {name[:40]!r}, not the name of a checkpoint folder"
    except UnicodeDecodeError:
        name, problem = "", "holds binary data, not the name of a checkpoint folder"
    except FileNotFoundError:
        name, problem = "", "is missing"
    except OSError as err:
        raise CheckpointError(f"cannot read {pointer}: {first_line(err)}") from err
    if name and PurePosixPath(name).name == name and name not in (".", "..") and (root / name).is_dir():
        return root / name
    found = sorted(p.name for p in root.glob("step_*") if (p / CONFIG).is_file())
    fix = f"write a checkpoint folder's name into it (the newest is {found[-1]})" if found else \
        f"no checkpoint folder is left in {root}"
    raise CheckpointError(f"{pointer} {problem}: {fix}")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run folder, a ``checkpoints`` folder or a checkpoint folder.

    Raises:
        CheckpointError: nothing there, a damaged ``latest`` pointer, or no checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    for candidate in (path, path / "checkpoints"):
        if holds_checkpoints(candidate):
            path = read_pointer(candidate)
            break
    if not (path / CONFIG).is_file():
        if (path / WEIGHTS).is_file():
            raise damaged(path, path / CONFIG, "is missing")
        raise CheckpointError(f"not a tempoflow checkpoint (no {CONFIG} and {WEIGHTS}): {path}")
    return path


def _meta_problem(data: object) -> str | None:
    """What makes a parsed ``config.json`` unusable, or None."""
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        return "has no 'config' section (not a tempoflow checkpoint's config.json?)"
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        return "has a 'meta' section that is not a mapping"
    if not isinstance(meta.get("step", 0), int) or not isinstance(meta.get("fps", 0.0), (int, float)):
        return "has a 'step' or 'fps' that is not a number"
    sums = meta.get(CHECKSUMS, {})
    if not isinstance(sums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and ".." not in PurePosixPath(k).parts
        and not PurePosixPath(k).is_absolute() for k, v in sums.items()
    ):
        return f"has unreadable checksums ('{CHECKSUMS}')"
    return None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The config and metadata of a checkpoint (a run folder, its ``checkpoints`` folder or one checkpoint).

    Raises:
        CheckpointError: no checkpoint there, or its ``latest`` or ``config.json`` is unreadable.
    """
    path = resolve_checkpoint(path)
    file = path / CONFIG
    try:
        data = json.loads(file.read_bytes())
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or bad UTF-8
        raise damaged(path, file, f"is not readable JSON ({first_line(err)})") from err
    problem = _meta_problem(data)
    if problem is not None:
        raise damaged(path, file, problem)
    return Checkpoint(path=path, config=data["config"], meta=data.get("meta", {}))


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
