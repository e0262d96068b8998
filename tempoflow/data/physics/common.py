"""Helpers shared by the physics simulators: stored times, per-trajectory seeds, sub-step schedules.

Every simulator draws the randomness of trajectory ``i`` from its own generator seeded by
``(stream, seed, i)``, so trajectory ``i`` is the same whatever the batch size or chunking it was
simulated in: ``simulate(n=8)[:4]`` equals ``simulate(n=4)`` up to roundoff (batched FFTs and sparse
solves may round differently with the batch size).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

ConfigT = TypeVar("ConfigT")


def output_times(t_end: float, n_times: int) -> Tensor:
    """The stored times ``t_k = k t_end / n_times``, ``k = 1..n_times``: evenly spaced on ``(0, t_end]``.

    Returns:
        ``(n_times,)`` float64, in the simulator's time unit (seconds).
    """
    if not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be finite and > 0, got {t_end}")
    if n_times < 1:
        raise ValueError(f"n_times must be >= 1, got {n_times}")
    return torch.arange(1, n_times + 1, dtype=torch.float64) * (t_end / n_times)


def check_sizes(n: int, size: int, n_times: int, min_size: int = 4) -> None:
    """Trajectory count, grid side and number of stored times, each a positive integer."""
    if n < 1:
        raise ValueError(f"n (number of trajectories) must be >= 1, got {n}")
    if size < min_size:
        raise ValueError(f"size (grid side) must be >= {min_size}, got {size}")
    if n_times < 1:
        raise ValueError(f"n_times must be >= 1, got {n_times}")


def trajectory_generators(stream: int, seed: int, start: int, stop: int) -> list[torch.Generator]:
    """CPU generators of trajectories ``start..stop-1``, seeded by ``SeedSequence([stream, seed, i])``.

    Drawing on the CPU and moving to the device afterwards makes the data identical on every device.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    states = (
        np.random.SeedSequence([stream, seed, i]).generate_state(1, np.uint64)[0] for i in range(start, stop)
    )
    return [torch.Generator().manual_seed(int(s)) for s in states]


def simulate_in_chunks(
    stream: int, seed: int, n: int, chunk: int, simulate: Callable[[list[torch.Generator]], Tensor]
) -> Tensor:
    """Trajectories ``0..n-1`` simulated ``chunk`` at a time (bounded memory); ``simulate`` maps the
    chunk's generators (:func:`trajectory_generators`) to ``(m, T, C, H, W)`` on the CPU. Returns
    ``(n, T, C, H, W)``, independent of ``chunk``."""
    return torch.cat([
        simulate(trajectory_generators(stream, seed, start, min(n, start + chunk)))
        for start in range(0, n, chunk)
    ])


def config_from_kwargs(cls: type[ConfigT], kwargs: dict[str, Any]) -> ConfigT:
    """``cls(**kwargs)`` for a config dataclass, with an error that names an unknown keyword."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(names)}")
    return cls(**kwargs)


def substep_dts(interval: Tensor | float, counts: Tensor) -> Iterator[Tensor]:
    """Per-trajectory sub-steps that split one output interval: trajectory ``i`` takes ``counts[i]``
    equal steps of ``interval / counts[i]`` and then steps of length 0.

    A zero step is an exact no-op of every integrator here (``x + 0 · y == x``), so a batch runs
    ``max(counts)`` vectorised steps while each trajectory keeps its own CFL step, and its result does
    not depend on which other trajectories share the batch.

    Args:
        interval: the interval length (seconds), a float or a ``(M,)`` tensor.
        counts: ``(M,)`` long, each ``>= 1``.

    Yields:
        ``(M,)`` step lengths in the dtype of ``interval`` (float64 for a float).
    """
    if counts.dim() != 1 or bool((counts < 1).any()):
        raise ValueError(f"counts must be a (M,) tensor of integers >= 1, got {counts}")
    dt = torch.as_tensor(interval, dtype=torch.float64, device=counts.device) / counts
    for j in range(int(counts.max())):
        yield torch.where(counts > j, dt, torch.zeros_like(dt))


def cfl_counts(interval: float, max_dt: Tensor) -> Tensor:
    """Fewest equal sub-steps of ``interval`` no longer than ``max_dt`` (``(M,)``), as ``(M,)`` long."""
    if not bool((max_dt > 0).all()) or not bool(torch.isfinite(max_dt).all()):
        raise ValueError(f"the stable step must be finite and > 0, got min {float(max_dt.min()):.3g}")
    # The 1e-9 slack keeps an interval that is an exact multiple of max_dt from taking an extra step.
    return torch.ceil(interval / max_dt * (1 - 1e-9)).clamp_min(1).long()
