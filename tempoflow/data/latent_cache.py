"""Latents computed once: a dataset encoded by a codec into sharded safetensors with a manifest.

``tempoflow data encode CONFIG --out DIR`` writes, per split, ``DIR/{split}-{k:05d}.safetensors``
(key ``latents``: ``(n_k, T, *latent_shape)``) and ``DIR/manifest.json`` recording the codec's name
and fingerprint, the data config, the latent shape and every shard's captions. Training with
``data.latent_cache=DIR`` reads the shards instead of re-encoding every batch, and refuses a cache
whose codec fingerprint or data config differs from the run's (a stale cache would silently train
on the wrong latents).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from tempoflow.codecs import Codec
from tempoflow.errors import ConfigError, DataError
from tempoflow.files import save_tensors_atomic, write_text_atomic

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


def load_latents(folder: str | Path, codec: Codec, data_config: dict, split: str) -> CachedLatents:
    """Read one split, refusing a cache made by another codec or from other data.

    Returns:
        :class:`CachedLatents` with ``latents (N, T, *latent_shape)``.
    """
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
    entry = manifest["splits"][split]
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
