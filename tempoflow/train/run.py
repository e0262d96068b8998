"""Build a method from a config, train it, and load it back from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from tempoflow.config import DataConfig, ExperimentConfig, from_dict, save_config, to_dict
from tempoflow.data import load_dataset, video_shape
from tempoflow.data.latent_cache import load_latents
from tempoflow.errors import CheckpointError, ConfigError, DataError
from tempoflow.methods import Method, method_class
from tempoflow.text import TextEncoder, make_text_encoder
from tempoflow.train.checkpoint import Checkpoint, load_weights, read_checkpoint
from tempoflow.train.trainer import Trainer, TrainResult


def text_encoder(cfg: ExperimentConfig) -> TextEncoder:
    t = cfg.text
    return make_text_encoder(t.encoder, path=t.path, dim=t.dim, max_tokens=t.max_tokens, cache=t.cache)


def data_dict(data: DataConfig) -> dict:
    """The data settings a latent cache must agree with (everything but the cache's own path)."""
    d = to_dict(data)
    d.pop("latent_cache")
    return d


def build_method(cfg: ExperimentConfig, text: TextEncoder | None = None) -> Method:
    """The method named by ``cfg.method``, with fresh weights."""
    cls = method_class(cfg.method)
    text = text or text_encoder(cfg)
    with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching global RNG
        torch.manual_seed(cfg.train.seed)
        return cls(cfg, video_shape(cfg.data), text)


def train(
    cfg: ExperimentConfig, resume: bool = False, text: TextEncoder | None = None, until: int | None = None
) -> TrainResult:
    """Train ``cfg.method`` on the training split of ``cfg.data``; checkpoints go to ``cfg.out_dir``."""
    return make_trainer(cfg, resume, text).fit(resume=resume, until=until)


def make_trainer(cfg: ExperimentConfig, resume: bool = False, text: TextEncoder | None = None) -> Trainer:
    """The method, its training data and a ``Trainer`` writing to ``cfg.out_dir``, ready to ``fit``
    (``resume`` only checks that the folder may be continued; ``fit(resume=True)`` loads the state)."""
    out = Path(cfg.out_dir)
    if not resume and (out / "checkpoints" / "latest").exists():
        raise ConfigError(
            f"{out} already holds a run: pass --resume to continue it or choose another out_dir"
        )
    method = build_method(cfg, text)
    if cfg.data.latent_cache:
        if getattr(method, "codec", None) is None:
            raise ConfigError(f"method '{cfg.method}' has no codec: it cannot train from data.latent_cache")
        data = load_latents(cfg.data.latent_cache, method.codec, data_dict(cfg.data), "train")
        tensors, key = data.latents, "latents"
    else:
        data = load_dataset(cfg.data, "train")
        tensors, key = data.videos, "video"
    if method.captions == "required":
        _require_captions(cfg.method, data.captions, getattr(data, "paths", None))
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    meta = {"method": cfg.method, "video_shape": list(video_shape(cfg.data)), "fps": data.fps}
    if getattr(method, "codec", None) is not None:  # the codec is rebuilt at load time: pin which one
        meta["codec_fingerprint"] = method.codec.fingerprint()
    return Trainer(method, tensors, data.captions, cfg.train, out, to_dict(cfg), meta, cfg.device, key)


def _require_captions(method: str, captions: list[str] | None, paths: list[Path] | None) -> None:
    """A method that learns from captions refuses videos without one, naming them (files when known).

    Raises:
        DataError: the data has no captions, or some are empty.
    """
    empty = [i for i, c in enumerate(captions or []) if not c.strip()]
    if captions is None or empty:
        where = [str(paths[i]) for i in empty[:3]] if paths else [f"video {i}" for i in empty[:3]]
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        raise DataError(f"method '{method}' needs a caption for every video; none for {', '.join(where) or 'any'}"
                        f"{more} (add a .txt of the same name, or a text column in the manifest)")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible to torch")
    return torch.device(device)


def load_method(
    path: str | Path, device: str = "auto", ema: bool = True, text: TextEncoder | None = None,
    overrides: dict | None = None,
) -> tuple[Method, ExperimentConfig, Checkpoint]:
    """Rebuild a trained method from a checkpoint (EMA weights by default), in eval mode."""
    ckpt = read_checkpoint(path)
    try:
        cfg = from_dict(ExperimentConfig, ckpt.config)
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {ckpt.path} has an unreadable config: {err}") from err
    if overrides:  # a bad override is the user's setting, not a fault of the checkpoint
        data = dict(ckpt.config)
        for section, values in overrides.items():
            data[section] = {**data.get(section, {}), **values}
        cfg = from_dict(ExperimentConfig, data)
    method = build_method(cfg, text)
    load_weights(method, ckpt.weights(ema=ema), ckpt.path)
    pinned = ckpt.meta.get("codec_fingerprint")
    if pinned is not None and method.codec.fingerprint() != pinned:
        raise CheckpointError(
            f"checkpoint {ckpt.path} was trained in another latent space: its codec '{method.codec.name}' "
            "now loads different weights (was the codec's run retrained or moved?)"
        )
    return method.to(pick_device(device)).eval(), cfg, ckpt
