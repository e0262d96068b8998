"""Which rows each process trains on at each step, and reading lazy rows ahead of training.

``batch_indices`` is the one batch stream: every step, every process draws ``batch_size × world`` rows
from the same generator state and takes its own slice, so processes never share a row and N processes
train as one with N times the batch. The trainer draws it from its batch generator, whose state is
saved in every checkpoint (exact resume).

``RowLoader`` serves those rows from a lazy dataset (``tempoflow.data.rows``) through a ``DataLoader``
whose batch sampler replays the same stream from a copy of the generator, so its workers read the
next batches while the current one trains; each batch comes back with its row indices, and the
trainer checks them against its own draw. A process reads only its own rows.
"""

from __future__ import annotations

import signal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tempoflow.data.rows import Rows
from tempoflow.errors import TempoflowError, TrainingError

# Batches each worker keeps ready (DataLoader's prefetch_factor): two hide a slow decode behind a step.
PREFETCH_PER_WORKER = 2


def batch_indices(generator: torch.Generator, n: int, batch_size: int, rank: int, world: int) -> Tensor:
    """This process's training rows for one step: slice ``rank`` of one draw of ``batch_size × world`` rows
    (uniform, with replacement) that every process makes from the same generator state. The processes'
    batches are disjoint slices of the batch one process with ``world`` times the batch size would draw,
    so N processes train as one with N times the batch. ``(batch_size,)`` long, CPU."""
    rows = torch.randint(n, (batch_size * world,), generator=generator)
    return rows[rank * batch_size : (rank + 1) * batch_size]


class StepRows:
    """The batch sampler: this process's rows for ``steps`` steps, drawn by ``batch_indices`` from a copy
    of the trainer's batch generator (so the DataLoader may run ahead without moving the trainer's)."""

    def __init__(self, generator: torch.Generator, n: int, batch_size: int, rank: int, world: int, steps: int):
        self.state = generator.get_state()
        self.n, self.batch_size, self.rank, self.world, self.steps = n, batch_size, rank, world, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        generator = torch.Generator()
        generator.set_state(self.state)
        for _ in range(self.steps):
            yield batch_indices(generator, self.n, self.batch_size, self.rank, self.world).tolist()


class _Batches(Dataset):
    """A batch of rows read in one worker: ``(indices (B,), rows (B, ...))``, or the ``TempoflowError``
    a row raised (returned, not raised: a worker's exception reaches the trainer as a multi-line
    traceback, this one is re-raised there as the one-line error it is)."""

    def __init__(self, rows: Rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Tensor:
        return self.rows[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor] | TempoflowError:
        try:
            return torch.tensor(indices), torch.stack([self.rows[i] for i in indices])
        except TempoflowError as err:
            return err


def _as_is(batch):
    return batch  # __getitems__ already made the batch


def _ignore_stop_signals(worker_id: int) -> None:
    """In a worker: leave SIGTERM and Ctrl-C to the training process. A cluster's SIGTERM and a terminal's
    Ctrl-C reach every process of the job; the trainer saves the current step before stopping
    (``tempoflow.train.signals``), which may take more batches, and a worker they killed would end
    training with DataLoader's error instead. Workers end when the trainer's loader does, or with it."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


class RowLoader:
    """Rows of a lazy dataset for ``steps`` training steps starting at step ``start``, read ahead by
    ``num_workers`` processes (0: read in this process when asked).

    Args:
        rows: the dataset; ``rows[i]`` must depend on ``i`` alone (``tempoflow.data.rows``).
        generator: the trainer's batch generator, in its state before step ``start``'s draw (copied).
        batch_size, rank, world: as ``batch_indices``.
        steps: how many batches to serve; start: the step the first one is for.
        pin_memory: page-locked batches for a faster copy to a GPU.
    """

    def __init__(self, rows: Rows, generator: torch.Generator, batch_size: int, rank: int, world: int, steps: int,
                 start: int, num_workers: int, pin_memory: bool = False):
        self.step, self.end = start, start + steps
        workers = ({"num_workers": num_workers, "prefetch_factor": PREFETCH_PER_WORKER,
                    "worker_init_fn": _ignore_stop_signals} if num_workers else {})
        loader = DataLoader(
            _Batches(rows), batch_sampler=StepRows(generator, len(rows), batch_size, rank, world, steps),
            collate_fn=_as_is, pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(0),  # workers' seeds: never drawn from the global RNG
            **workers,
        )
        self.batches = iter(loader) if steps > 0 else None

    def close(self) -> None:
        """Stop the workers now (training ended, or an error is on its way up): a worker left running
        would keep the process from exiting, as workers ignore the stop signals."""
        batches, self.batches = self.batches, None
        shutdown = getattr(batches, "_shutdown_workers", None)  # DataLoader's own clean stop
        if shutdown is not None:
            shutdown()

    def next(self, indices: Tensor) -> Tensor:
        """The rows ``indices`` (this step's draw, ``(B,)`` long): ``(B, ...)`` float32, CPU.

        Raises:
            DataError: a row's file is missing or corrupt (named).
            TrainingError: the loader's stream and the trainer's draw disagree (a bug) or ran out.
        """
        if self.batches is None:
            raise TrainingError(f"the data loader served its {self.end} steps; step {self.step + 1} was asked for")
        batch = next(self.batches)
        self.step += 1
        if self.step == self.end:
            self.batches = None  # the last batch: shut the workers down now
        if isinstance(batch, TempoflowError):
            raise batch
        got, rows = batch
        if not torch.equal(got, indices):
            raise TrainingError(f"the data loader's rows for step {self.step} differ from the trainer's draw")
        return rows
