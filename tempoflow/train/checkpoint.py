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

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tempoflow.errors import CheckpointError, TrainingError
from tempoflow.files import sha256_file, write_text_atomic
from tempoflow.weights import FROZEN_PREFIXES, first_line

WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
CONFIG = "config.json"
STATE = "state"
LATEST = "latest"
CHECKSUMS = "sha256"  # key in config.json's meta: {path relative to the checkpoint: SHA-256 hex digest}
def damaged(checkpoint: Path, file: Path, problem: str) -> CheckpointError:
    """The one-line error for an unusable file of ``checkpoint``: which file, what is wrong, what to do."""
    earlier = sorted(p for p in checkpoint.parent.glob("step_*") if p.is_dir() and p.name < checkpoint.name)
    if earlier:
        fallback = (f"or use the earlier checkpoint {earlier[-1]} (pass that folder, or write "
                    f"'{earlier[-1].name}' into {checkpoint.parent / LATEST} to resume from it)")
    else:
        fallback = "or train the run again (it has no earlier checkpoint)"
    return CheckpointError(f"{file} {problem}: restore it from a copy of the run, {fallback}")


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
    loaded: str | None = None  # the weights file weights() read last (what digest() names)

    @property
    def fps(self) -> float:
        """Frames per second of the videos the run trained on (frame k, 1-based, at k / fps seconds).

        Raises:
            CheckpointError: the metadata has no frame rate (training always writes one).
        """
        if "fps" not in self.meta:
            raise CheckpointError(f"{self.path / CONFIG} has no frame rate (meta.fps): not written by tempoflow train")
        return float(self.meta["fps"])

    @property
    def run_folder(self) -> Path:
        """The run this checkpoint belongs to (``<run>/checkpoints/step_X``), or, for a checkpoint or saved
        pipeline standing alone, its own folder: where ``log.jsonl`` and ``eval/`` go."""
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else self.path

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
        """The EMA weights (``ema.safetensors``) or the trained ones (``model.safetensors``); the file
        read is remembered in ``loaded``.

        Raises:
            CheckpointError: the weights file is missing (for the EMA: the message says to ask for the
                trained weights instead), changed or unreadable.
        """
        name = EMA_WEIGHTS if ema else WEIGHTS
        if ema and not (self.path / name).is_file():
            raise CheckpointError(f"{self.path / name} is missing: pass --weights raw (weights='raw' in "
                                  f"tempoflow.load) to use the trained weights in {WEIGHTS}")
        tensors = self.tensors(name)
        self.loaded = name
        return tensors

    def digest(self) -> str:
        """The first 16 hex digits of the SHA-256 of the weights file loaded (``loaded``), to name the
        exact model in metrics and reports: the one recorded in ``config.json`` (checked when it was
        loaded), else computed (checkpoints from before checksums).

        Raises:
            ValueError: no weights were loaded from this checkpoint.
        """
        if self.loaded is None:
            raise ValueError(f"no weights were loaded from {self.path}: nothing to name")
        return (self.checksums.get(self.loaded) or sha256_file(self.path / self.loaded))[:16]


def learned_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without the frozen, rebuilt-from-config entries (``FROZEN_PREFIXES``)."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith(FROZEN_PREFIXES)}


def cpu_state(state: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a weights file stores: the learned state of a module (or a state dict) as contiguous CPU
    copies (safetensors refuses shared or non-contiguous storage)."""
    state = learned_state(state) if isinstance(state, nn.Module) else state
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def staging_dir(root: Path, step: int) -> Path:
    """The temporary folder a checkpoint is assembled in before it is renamed into place."""
    return root / f".tmp_step_{step:08d}"


def retired_dir(root: Path, step: int) -> Path:
    """Where an existing ``step_X`` waits while its replacement is renamed into place."""
    return root / f".old_step_{step:08d}"


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor holds only finite values (integer tensors always do)."""
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def commit_checkpoint(
    root: Path, step: int, model: nn.Module | dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
    config: dict, meta: dict,
) -> Path:
    """Add weights and config to the staging folder, rename it to ``root/step_XXXXXXXX``, and
    point ``root/latest`` at it. The resumable state (``state/``) is already in the staging folder;
    ``config.json`` records the SHA-256 of every file, the state's included, and is written last: a
    folder with it is complete.

    A complete checkpoint is never removed before its replacement is in place: an existing
    ``step_X`` (one ``latest`` does not name: a run resumed from an earlier step) is first renamed
    aside, and removed only after ``latest`` names the new one. A kill at any point leaves ``latest``
    naming a complete checkpoint (or, before the first one, no ``latest``); ``recover_checkpoints``
    tidies what is left at the next start.

    Raises:
        TrainingError: a weight is not finite (nothing is written; the caller names the last good one).
    """
    weights, averaged = cpu_state(model), cpu_state(ema) if ema is not None else None
    if not all_finite(weights) or (averaged is not None and not all_finite(averaged)):
        raise TrainingError(f"the weights at step {step} are not finite: checkpoint not written")
    tmp = staging_dir(root, step)
    tmp.mkdir(parents=True, exist_ok=True)
    final, old = root / f"step_{step:08d}", retired_dir(root, step)
    try:
        save_file(weights, str(tmp / WEIGHTS))
        if averaged is not None:
            save_file(averaged, str(tmp / EMA_WEIGHTS))
        meta = {**meta, "step": step, CHECKSUMS: checksums(tmp)}
        write_text_atomic(tmp / CONFIG, json.dumps({"config": config, "meta": meta}, indent=2))
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(root / LATEST, final.name)
    shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """The ``step_*`` folders of ``root`` that were committed (they hold ``config.json``), oldest first."""
    return sorted(p for p in root.glob("step_*") if (p / CONFIG).is_file())


def recover_checkpoints(root: Path) -> list[str]:
    """Tidy a ``checkpoints`` folder after a kill, before a run continues in it; what was done, in words.

    A retired ``.old_step_X`` whose ``step_X`` is missing (killed between the two renames of
    ``commit_checkpoint``) is renamed back; every other ``.tmp_step_*`` / ``.old_step_*`` is removed
    (a staging folder is never complete enough to trust: its step is trained again); a missing
    ``latest`` is written naming the newest complete checkpoint (killed between the rename and the
    pointer, or deleted). A ``latest`` that names nothing is left for ``read_pointer`` to report.
    """
    done = []
    for old in sorted(root.glob(".old_step_*")):
        final = root / old.name.removeprefix(".old_")
        if not final.exists() and (old / CONFIG).is_file():
            os.replace(old, final)
            done.append(f"restored {final.name} from {old.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name}")
    for tmp in sorted(root.glob(".tmp_step_*")):
        shutil.rmtree(tmp, ignore_errors=True)
        done.append(f"removed the unfinished {tmp.name}")
    found = complete_checkpoints(root)
    if found and not (root / LATEST).exists():
        write_text_atomic(root / LATEST, found[-1].name)
        done.append(f"wrote {root / LATEST} naming the newest checkpoint, {found[-1].name}")
    return done


def newest_finite_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint in ``root`` whose weights (and EMA weights) load and are all finite,
    searching back from the newest; None if there is none. Checkpoints are only committed finite,
    so this looks past at most those written by older versions or damaged since."""
    for path in reversed(complete_checkpoints(root)):
        ckpt = Checkpoint(path=path, config={}, meta={})
        try:
            if all(all_finite(ckpt.tensors(name)) for name in (WEIGHTS, EMA_WEIGHTS) if (path / name).exists()):
                return path
        except CheckpointError:
            continue
    return None


def holds_checkpoints(root: Path) -> bool:
    """Whether ``root`` is a ``checkpoints`` folder: a ``latest`` pointer or ``step_*`` folders."""
    return (root / LATEST).exists() or any(p.is_dir() for p in root.glob("step_*"))


def read_pointer(root: Path) -> Path:
    """The checkpoint folder ``root/latest`` names; without ``latest``, the newest complete one (a warning).

    Raises:
        CheckpointError: ``latest`` is unreadable or does not name a folder in ``root``, or is missing
            and no complete checkpoint is left.
    """
    pointer = root / LATEST
    try:
        name = pointer.read_bytes().decode("utf-8").strip()
        problem = f"holds {name[:40]!r}, not the name of a checkpoint folder"
    except UnicodeDecodeError:
        name, problem = "", "holds binary data, not the name of a checkpoint folder"
    except FileNotFoundError:
        found = complete_checkpoints(root)
        if found:  # a kill between a checkpoint's rename and its pointer, or a deleted pointer
            warnings.warn(f"{pointer} is missing: using the newest checkpoint, {found[-1].name}")
            return found[-1]
        name, problem = "", "is missing"
    except OSError as err:
        raise CheckpointError(f"cannot read {pointer}: {first_line(err)}") from err
    if name and PurePosixPath(name).name == name and name not in (".", "..") and (root / name).is_dir():
        return root / name
    found = [p.name for p in complete_checkpoints(root)]
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


