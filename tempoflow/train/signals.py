"""SIGTERM and Ctrl-C during training: finish the step, save a checkpoint, stop with one line.

Clusters preempt a job with SIGTERM and kill it a grace period later; a user stops one with Ctrl-C.
While training, both only set ``StopSignals.received``; the training loop checkpoints the current step
(when its weights are finite) and raises ``Interrupted``. A second Ctrl-C stops at once, without a
checkpoint (``KeyboardInterrupt``), for a save that takes too long.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations only

from tempoflow.errors import TrainingError

CAUGHT = (signal.SIGTERM, signal.SIGINT)


class Interrupted(TrainingError):
    """Training stopped by a signal after saving; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """A context manager that turns SIGTERM and SIGINT into a request to stop (``received``).

    Only the main thread may install signal handlers; elsewhere (a training run started from a
    worker thread) the context does nothing and signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.received is None:
            self.received = signum

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in CAUGHT:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()
