"""CPU thread count chosen while training runs, so a run degrades gracefully when the cores are shared.

Measured on 2 cores (``python benchmarks/thread_contention.py``; README "CPU step cost and threads"):
torch on both cores trains the demo ~1.7x faster than on one when the machine is free, but when a
second busy process shares the cores, OpenMP's spin-waiting threads and the other job's steal each
other's time and the two-thread run falls 4-7x (one thread: unchanged). Letting idle threads sleep
(``OMP_WAIT_POLICY=PASSIVE``) halves that fall but costs a third of the free-machine speed. So the
trainer measures instead: it times windows of steps at each thread count, keeps the faster, and
re-tries the other every few windows (the machine's load changes while a run goes on).

Thread counts change floating-point reduction order, so a run whose count switches is not bit-for-bit
reproducible; ``train.cpu_threads: N`` fixes the count (tests do, for exact-resume checks).
"""

from __future__ import annotations

import os
import time

import torch


class ThreadGovernor:
    """Switches ``torch.set_num_threads`` between ``choices`` by measured steps per second.

    Args:
        choices: thread counts to choose from (e.g. ``(cores, 1)``); the first is tried first.
        window: steps per timing window.
        probe_every: every this many windows, one window runs at the count not in use.
    """

    def __init__(self, choices: tuple[int, ...], window: int = 25, probe_every: int = 8):
        self.choices, self.window, self.probe_every = choices, window, probe_every
        self.rates: dict[int, float] = {}
        self.current = choices[0]
        self.steps = self.windows = 0
        self.tick = time.perf_counter()
        torch.set_num_threads(self.current)

    def step(self) -> None:
        """Count one training step; at the end of a window, record its rate and pick the next count."""
        self.steps += 1
        if self.steps < self.window:
            return
        now = time.perf_counter()
        self.rates[self.current] = self.steps / max(now - self.tick, 1e-9)
        self.windows += 1
        untried = [c for c in self.choices if c not in self.rates]
        if untried:
            choice = untried[0]
        elif self.windows % self.probe_every == 0:  # re-measure the other count: the load may have changed
            choice = next(c for c in self.choices if c != self.current)
        else:
            choice = max(self.rates, key=self.rates.get)
        if choice != self.current:
            torch.set_num_threads(choice)
            self.current = choice
        self.steps, self.tick = 0, time.perf_counter()

    def finish(self) -> None:
        """Leave torch at the fastest measured count (not a probe's), for what runs after training."""
        best = max(self.rates, key=self.rates.get) if self.rates else self.choices[0]
        torch.set_num_threads(best)
        self.current = best


def thread_governor(cpu_threads: int, on_cpu: bool) -> ThreadGovernor | None:
    """``train.cpu_threads``: 0 = adaptive on CPU (a governor over all cores and one), N = N threads
    fixed (set here), and nothing to do on a GPU or with one core."""
    if not on_cpu:
        return None
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ThreadGovernor((cores, 1)) if cores > 1 else None
