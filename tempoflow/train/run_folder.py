"""A run folder holds one run: recognising one, and the lock a training run holds for its life.

``out_dir`` is a run as soon as any of ``RUN_FILES`` is in it — checkpoints (complete, or a staging
folder a kill left behind), ``log.jsonl`` or ``config.yaml`` — with or without ``checkpoints/latest``.
A training process holds an exclusive ``flock`` on ``out_dir/.lock`` while it runs; the kernel drops
it when the process ends, however it ends (SIGKILL included), so a stale lock cannot block a folder.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations only

from tempoflow.errors import ConfigError
from tempoflow.files import unwritable
from tempoflow.weights import first_line

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected against a second writer
    fcntl = None

LOCK = ".lock"
RUN_FILES = ("checkpoints/latest", "checkpoints/step_*", "checkpoints/.tmp_step_*", "checkpoints/.old_step_*",
             "log.jsonl", "config.yaml")


def run_files(out_dir: Path) -> list[str]:
    """What makes ``out_dir`` a run folder (paths relative to it); empty if it holds no run."""
    return sorted({p.relative_to(out_dir).as_posix() for pattern in RUN_FILES for p in out_dir.glob(pattern)})


def launcher_rank() -> int:
    """This process's global rank under a launcher (torchrun, accelerate launch set ``RANK``); 0 alone."""
    return int(os.environ.get("RANK", "0"))


class RunLock:
    """An exclusive lock on a run folder for the life of a training run (a context manager).

    ``with RunLock(out_dir): ...`` creates ``out_dir`` if needed and locks ``out_dir/.lock``, which
    then names the holder (pid, host, start time) for the message a second run gets.

    Raises:
        ConfigError: another process holds the lock (the message names it), or ``out_dir`` cannot be
            created or written.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.fd: int | None = None

    def __enter__(self) -> Self:
        path = self.out_dir / LOCK
        problem = unwritable(self.out_dir)
        if problem is not None:
            raise ConfigError(f"out_dir {self.out_dir} cannot be written: {problem}; choose another out_dir")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(f"out_dir {self.out_dir} cannot be written: {first_line(err)}; choose another out_dir") from err
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # BlockingIOError: held by another open of the file (another run)
                holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "a process that did not say"
                os.close(fd)
                raise ConfigError(f"{self.out_dir} is in use by another training run ({holder}): wait for it to "
                                  "end or choose another out_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                     .encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None
