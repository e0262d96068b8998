"""Latents computed once: a dataset encoded by a codec into sharded safetensors with a manifest.

``tempoflow data encode CONFIG --out DIR`` writes, per split, ``DIR/{split}-{k:05d}.safetensors``
(key ``latents``: ``(n_k, T, *latent_shape)``) and ``DIR/manifest.json`` recording the codec's name
and fingerprint, the data config, the latent shape and every shard's captions. Training with
``data.latent_cache=DIR`` reads the shards instead of re-encoding every batch, and refuses a cache
whose codec fingerprint or data config differs from the run's (a stale cache would silently train
on the wrong latents). Training reads it row by row from memory-mapped shards (``open_latents``:
each process touches only the rows it draws); ``load_latents`` reads a split whole.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from tempoflow.codecs import Codec
from tempoflow.data.rows import Rows
from tempoflow.errors import ConfigError, DataError
from tempoflow.files import save_tensors_atomic, write_text_atomic
from tempoflow.weights import first_line

MANIFEST = "manifest.json"
FORMAT = 1  # bump when the layout changes; older caches are refused


@dataclass
class CachedLatents:
    """One split of a cache: ``latents (N, T, *latent_shape)`` float32 and ``N`` captions."""

    latents: Tensor
    captions: list[str]
    fps: float


def encode_dataset(
    codec: Codec, datasets: dict, data_config: dict, out: str | Path, shard_size: int = 512, chunk: int = 16,
    device: str | torch.device = "cpu",
) -> Path:
    """Encode every split of ``datasets`` (split -> dataset with ``videos``, ``captions``, ``fps``).

    Args:
        codec: the latent space; its :meth:`Codec.fingerprint` goes into the manifest.
        datasets: ``{split: dataset}``, videos ``(N, T, C, H, W)`` in [0, 1].
        data_config: the ``data`` section the videos came from (checked again at load time).
        out: cache folder (created).
        shard_size: videos per shard file; chunk: videos per ``codec.encode`` call.
    Returns:
        The manifest's path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    codec = codec.to(device)
    manifest = {"format": FORMAT, "codec": codec.name, "fingerprint": codec.fingerprint(),
                "data": data_config, "splits": {}}
    for split, data in datasets.items():
        shards = []
        for start in tqdm(range(0, len(data.videos), shard_size), desc=f"encode {split}"):
            videos = data.videos[start : start + shard_size]
            with torch.no_grad():
                latents = torch.cat([codec.encode(v.to(device)).float().cpu() for v in videos.split(chunk)])
            name = f"{split}-{len(shards):05d}.safetensors"
            save_tensors_atomic(out / name, {"latents": latents.contiguous()})  # never a half-written shard
            shards.append({"file": name, "count": len(videos)})
            manifest["latent_shape"] = list(latents.shape[2:])
            manifest["num_frames"] = latents.shape[1]
        manifest["splits"][split] = {"shards": shards, "captions": list(data.captions), "fps": data.fps}
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1))  # last: a cache without one is incomplete
    return out / MANIFEST


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"no latent cache at {folder} ({MANIFEST} missing): run `tempoflow data encode` first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"latent cache manifest {path} is corrupt: {err}") from err
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"latent cache {folder} has format {manifest.get('format')}, this version reads {FORMAT}")
    return manifest


def _split_entry(folder: str | Path, codec: Codec, data_config: dict, split: str) -> dict:
    """The manifest's entry for ``split``, refusing a cache made by another codec or from other data."""
    manifest = read_manifest(folder)
    fingerprint = codec.fingerprint()
    if manifest["codec"] != codec.name or manifest["fingerprint"] != fingerprint:
        raise ConfigError(
            f"latent cache {folder} was made by codec '{manifest['codec']}' ({manifest['fingerprint'][:12]}), "
            f"this run uses '{codec.name}' ({fingerprint[:12]}): re-run `tempoflow data encode` or clear "
            "data.latent_cache"
        )
    if manifest["data"] != data_config:
        raise ConfigError(f"latent cache {folder} was made from other data settings: re-run `tempoflow data encode`")
    if split not in manifest["splits"]:
        raise ConfigError(f"latent cache {folder} has no '{split}' split (has: {', '.join(manifest['splits'])})")
    return manifest["splits"][split]


def load_latents(folder: str | Path, codec: Codec, data_config: dict, split: str) -> CachedLatents:
    """Read one split whole, refusing a cache made by another codec or from other data.

    Returns:
        :class:`CachedLatents` with ``latents (N, T, *latent_shape)``.
    """
    entry = _split_entry(folder, codec, data_config, split)
    parts = []
    for shard in entry["shards"]:
        path = Path(folder) / shard["file"]
        try:
            latents = load_file(str(path))["latents"]
        except (FileNotFoundError, SafetensorError, KeyError) as err:
            raise DataError(f"latent cache shard {path} is missing or corrupt: {err}") from err
        if latents.shape[0] != shard["count"]:
            raise DataError(f"latent cache shard {path} holds {latents.shape[0]} videos, manifest says {shard['count']}")
        parts.append(latents)
    return CachedLatents(torch.cat(parts), entry["captions"], entry["fps"])


class LatentRows(Rows):
    """One split of a cache read row by row: ``rows[i]`` reads latent video ``i`` from its memory-mapped
    shard, so a process holds only the rows it trains on (a rank reads only its own). Every shard's header
    is checked when the split is opened (``open_latents``); a shard that breaks later is named when read.

    Attributes:
        captions: one per row; fps: the videos' frame rate.
    """

    def __init__(self, folder: Path, shards: list[dict], captions: list[str], fps: float):
        self.folder, self.shards, self.captions, self.fps = folder, shards, captions, fps
        self.ends = list(itertools.accumulate(shard["count"] for shard in shards))  # one past each shard's last row
        self._open: dict[int, safe_open] = {}  # shard -> handle, in this process (workers open their own)
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, i: int) -> Tensor:
        """``(T, *latent_shape)`` float32: latent video ``i``.

        Raises:
            DataError: its shard is missing or corrupt (named).
        """
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of a latent cache split of {len(self)}")
        k = bisect.bisect_right(self.ends, i)
        first = self.ends[k - 1] if k else 0
        try:
            return self._handle(k).get_slice("latents")[i - first : i - first + 1][0].float()
        except (OSError, SafetensorError, KeyError) as err:
            raise DataError(f"latent cache shard {self.folder / self.shards[k]['file']} is missing or corrupt: "
                            f"{first_line(err)}") from err

    def _handle(self, k: int) -> safe_open:
        if os.getpid() != self._pid:  # a forked DataLoader worker: open its own memory maps
            self._open, self._pid = {}, os.getpid()
        if k not in self._open:
            self._open[k] = check_shard(self.folder / self.shards[k]["file"], self.shards[k]["count"])
        return self._open[k]

    def __getstate__(self) -> dict:  # handles stay in their process (spawned workers open their own)
        return {**self.__dict__, "_open": {}}


def check_shard(path: Path, count: int) -> safe_open:
    """Open one shard memory-mapped (nothing read but its header) and check it holds ``count`` rows.

    Raises:
        DataError: missing, not a safetensors file, no ``latents``, or another row count (named).
    """
    try:
        handle = safe_open(str(path), framework="pt")
        rows = handle.get_slice("latents").get_shape()[0]
    except (OSError, SafetensorError, KeyError) as err:
        raise DataError(f"latent cache shard {path} is missing or corrupt: {first_line(err)}") from err
    if rows != count:
        raise DataError(f"latent cache shard {path} holds {rows} videos, manifest says {count}")
    return handle


def open_latents(folder: str | Path, codec: Codec, data_config: dict, split: str) -> LatentRows:
    """One split of a cache to read row by row (``LatentRows``), refusing a cache made by another codec or
    from other data, or with a missing or damaged shard (every shard's header is checked, no row read)."""
    entry = _split_entry(folder, codec, data_config, split)
    for shard in entry["shards"]:
        check_shard(Path(folder) / shard["file"], shard["count"])
    return LatentRows(Path(folder), entry["shards"], entry["captions"], entry["fps"])
