"""Files written so that a reader never sees half of one: beside the target under a temporary name,
then moved into place with ``os.replace`` (a rename on one filesystem). Every writer of user-visible
files — videos, grids, checkpoints' pointers, caches, logs — goes through :func:`write_atomic`."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then move it onto ``path``.

    Parent folders are created. If ``write`` raises, the temporary file is removed and an existing
    ``path`` is left as it was. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is a rename on one filesystem; a unique name, so concurrent writers
    # never share a temporary; our own name rather than mkstemp's, so the file gets the usual
    # permissions (mkstemp makes it 0600).
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file``, atomically (tensors must be contiguous and unshared)."""
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unwritable(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` cannot be created and written to, or None when it can. Nothing is created: the
    nearest existing path at or above it must be a folder this process may write in (a path below a
    file, or in a read-only folder or file system, is named)."""
    existing = Path(folder).absolute()
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent  # the root always exists
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is read-only for this process"
    return None
