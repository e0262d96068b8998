"""Physics trajectories as videos ``(M, T, C, H, W)`` (seed 001 appendix D; DESIGN §5).

``simulate(kind, ...)`` runs one simulator by name — ``"wave"`` (waves in a random medium),
``"porous"`` (two-phase flow in a random permeability field) or ``"sde"`` (a blob with an
Ornstein–Uhlenbeck velocity) — and ``load_or_simulate`` caches the result in a safetensors file whose
name encodes the parameters. Frames sit at ``n_times`` times evenly on ``(0, t_end]`` (seconds; the
initial state is fixed and not stored). Trajectory ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from tempoflow.data.physics.common import config_from_kwargs, output_times
from tempoflow.errors import DataError
from tempoflow.files import save_tensors_atomic

__all__ = [
    "KINDS",
    "PhysicsDataset",
    "cache_path",
    "load_or_simulate",
    "make_config",
    "make_physics_dataset",
    "simulate",
    "simulation_times",
    "split_rows",
]

KINDS = ("wave", "porous", "sde")
SPLITS = ("train", "test")
CACHE_FORMAT = 1  # bump when a simulator's output changes, so old cache files are not reused
NOT_DATA = ("chunk",)  # config fields that change memory use only, not the data


def make_config(kind: str, **kw: Any):
    """The simulator config of ``kind`` with ``kw`` overriding its defaults (unknown keys raise).

    For ``"porous"``, ``permeability`` may be a dict of :class:`MaternField` fields.
    """
    if kind == "wave":
        from tempoflow.data.physics.wave import WaveConfig

        return config_from_kwargs(WaveConfig, kw)
    if kind == "porous":
        from tempoflow.data.physics.permeability import MaternField
        from tempoflow.data.physics.porous import PorousConfig

        if isinstance(kw.get("permeability"), dict):
            kw = {**kw, "permeability": config_from_kwargs(MaternField, kw["permeability"])}
        return config_from_kwargs(PorousConfig, kw)
    if kind == "sde":
        from tempoflow.data.physics.sde import SDEConfig

        return config_from_kwargs(SDEConfig, kw)
    raise ValueError(f"unknown physics kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def simulate(
    kind: str, n: int, size: int, n_times: int, seed: int, device: torch.device | str | None = None, **kw: Any
) -> Tensor:
    """Simulate ``n`` trajectories of ``kind`` on a ``size × size`` grid at ``n_times`` stored times.

    Args:
        kind: ``"wave"``, ``"porous"`` or ``"sde"``.
        n: number of trajectories.
        size: grid side (cells or points).
        n_times: stored times, evenly on ``(0, t_end]``.
        seed: trajectory ``i`` is a function of ``(seed, i)``.
        device: where the time stepping runs (the result is on the CPU).
        **kw: fields of the simulator's config (``WaveConfig``, ``PorousConfig``, ``SDEConfig``).

    Returns:
        ``(n, n_times, C, size, size)`` float32; ``C = 1`` except porous with ``with_pressure=True``.
    """
    cfg = make_config(kind, **kw)
    if kind == "wave":
        from tempoflow.data.physics.wave import simulate_wave as run
    elif kind == "porous":
        from tempoflow.data.physics.porous import simulate_porous as run
    else:
        from tempoflow.data.physics.sde import simulate_sde as run
    return run(n, size, n_times, seed, cfg, device)


def simulation_times(kind: str, n_times: int, **kw: Any) -> Tensor:
    """``(n_times,)`` float64 stored times ``k t_end / n_times`` (seconds) of ``kind`` with ``kw``."""
    return output_times(make_config(kind, **kw).t_end, n_times)


def _cache_key(kind: str, n: int, size: int, n_times: int, seed: int, **kw: Any) -> str:
    config = {k: v for k, v in dataclasses.asdict(make_config(kind, **kw)).items() if k not in NOT_DATA}
    key = {
        "format": CACHE_FORMAT,
        "kind": kind,
        "n": n,
        "size": size,
        "n_times": n_times,
        "seed": seed,
        "config": config,
    }
    return json.dumps(key, sort_keys=True)


def cache_path(
    kind: str, n: int, size: int, n_times: int, seed: int, cache_dir: str | Path, **kw: Any
) -> Path:
    """``cache_dir/{kind}_n{n}_s{size}_t{n_times}_seed{seed}_{digest}.safetensors``; the digest covers
    every config value (defaults included) and the cache format."""
    digest = hashlib.sha256(_cache_key(kind, n, size, n_times, seed, **kw).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{kind}_n{n}_s{size}_t{n_times}_seed{seed}_{digest}.safetensors"


def load_or_simulate(
    kind: str,
    n: int,
    size: int,
    n_times: int,
    seed: int,
    cache_dir: str | Path,
    device: torch.device | str | None = None,
    **kw: Any,
) -> Tensor:
    """:func:`simulate`, read from ``cache_dir`` when it was run before with the same parameters.

    A new result is written to a temporary file and renamed into place (``os.replace``), so a crash or a
    concurrent writer never leaves a partial file under the final name.

    Returns:
        ``(n, n_times, C, size, size)`` float32, as :func:`simulate`.
    """
    key = _cache_key(kind, n, size, n_times, seed, **kw)
    path = cache_path(kind, n, size, n_times, seed, cache_dir, **kw)
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                stored_key = (f.metadata() or {}).get("key")
                videos = f.get_tensor("videos")
        except (OSError, SafetensorError) as err:
            raise DataError(
                f"physics cache {path} is unreadable ({err}): delete it to simulate again"
            ) from err
        if stored_key != key:
            raise DataError(f"physics cache {path} holds other parameters ({stored_key}): delete it")
        return videos
    videos = simulate(kind, n, size, n_times, seed, device=device, **kw)
    save_tensors_atomic(path, {"videos": videos.contiguous()}, metadata={"key": key})
    return videos


@dataclass
class PhysicsDataset:
    """Physics trajectories as videos.

    Attributes:
        videos: ``(M, T, C, H, W)`` float32 fields (not clamped; DESIGN §1).
        times: ``(T,)`` float32 stored times in seconds.
        indices: ``(M,)`` long, the trajectory index ``i`` of each video (its seed stream).
        kind: ``"wave"``, ``"porous"`` or ``"sde"``.
        split: ``"all"``, ``"train"`` or ``"test"``.
    """

    videos: Tensor
    times: Tensor
    indices: Tensor
    kind: str
    split: str = "all"

    def __len__(self) -> int:
        return self.videos.shape[0]

    def select(self, split: str, test_fraction: float = 0.1, split_seed: int = 0) -> PhysicsDataset:
        """The ``"train"`` or ``"test"`` trajectories: a permutation drawn from ``split_seed`` puts
        ``round(test_fraction · M)`` of them (at least one of each split) in the test set.

        Deterministic: the same ``(M, test_fraction, split_seed)`` always picks the same trajectories.
        """
        if self.split != "all":
            raise ValueError(f"this dataset is already the {self.split!r} split")
        chosen = split_rows(len(self), split, test_fraction, split_seed)
        return PhysicsDataset(self.videos[chosen], self.times, self.indices[chosen], self.kind, split)


def split_rows(m: int, split: str, test_fraction: float, split_seed: int) -> Tensor:
    """The sorted rows ``(n,)`` of ``m`` trajectories in ``split``: a permutation drawn from ``split_seed``
    puts ``round(test_fraction · m)`` of them (at least one of each split) in ``"test"``, the rest in
    ``"train"``. Deterministic in ``(m, test_fraction, split_seed)``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if m < 2 or not 0 < test_fraction < 1:
        raise ValueError(f"need >= 2 trajectories and 0 < test_fraction < 1, got {m} and {test_fraction}")
    n_test = min(max(round(test_fraction * m), 1), m - 1)
    order = torch.randperm(m, generator=torch.Generator().manual_seed(split_seed))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    return chosen.sort().values


def make_physics_dataset(
    kind: str,
    n: int,
    size: int,
    n_times: int,
    seed: int,
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    **kw: Any,
) -> PhysicsDataset:
    """All ``n`` trajectories of ``kind`` as a :class:`PhysicsDataset` (cached when ``cache_dir`` is set);
    take splits with :meth:`PhysicsDataset.select`."""
    if cache_dir is None:
        videos = simulate(kind, n, size, n_times, seed, device=device, **kw)
    else:
        videos = load_or_simulate(kind, n, size, n_times, seed, cache_dir, device=device, **kw)
    times = simulation_times(kind, n_times, **kw).float()
    return PhysicsDataset(videos, times, torch.arange(n), kind)
