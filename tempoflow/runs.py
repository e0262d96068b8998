"""The composition root: the one place that turns names in a config into objects and reads run folders.

``build_codec`` (a codec by name; a trained codec's run loaded), ``build_method`` (the method with its
text encoder, codec and data-derived parts handed in), ``make_trainer``/``train`` and ``load_run`` (a
trained method back from a run or checkpoint folder). Everything below it takes built parts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from tempoflow.codecs import CODECS, Codec, PixelCodec
from tempoflow.codecs.autoencoder import AutoencoderCodec
from tempoflow.codecs.video_wae import VideoWAECodec
from tempoflow.config import ExperimentConfig
from tempoflow.configio import from_dict, save_yaml, to_dict
from tempoflow.data import (
    DataConfig,
    frame_rate,
    is_field_data,
    load_dataset,
    open_rows,
    reads_lazily,
    video_shape,
)
from tempoflow.data.latent_cache import load_latents, open_latents
from tempoflow.devices import pick_device
from tempoflow.errors import CheckpointError, ConfigError, DataError
from tempoflow.files import unwritable
from tempoflow.methods import Method, method_class
from tempoflow.resume import check_resumable
from tempoflow.text import TextEncoder, make_text_encoder
from tempoflow.train.checkpoint import (
    CHECKSUMS,
    CONFIG,
    EMA_WEIGHTS,
    WEIGHTS,
    Checkpoint,
    checksums,
    cpu_state,
    holds_checkpoints,
    read_checkpoint,
    recover_checkpoints,
)
from tempoflow.train.run_folder import RunLock, launcher_rank, run_files
from tempoflow.train.trainer import Trainer, TrainResult, accelerator_settings
from tempoflow.weights import load_weights


def text_encoder(cfg: ExperimentConfig) -> TextEncoder:
    t = cfg.text
    return make_text_encoder(t.encoder, path=t.path, dim=t.dim, max_tokens=t.max_tokens, cache=t.cache)


def data_dict(data: DataConfig) -> dict:
    """The data settings a latent cache must agree with (all but the cache's path and how it is read)."""
    d = to_dict(data)
    for key in ("latent_cache", "loading", "num_workers"):
        d.pop(key)
    return d


def build_codec(name: str, path: str = "", key: str = "codec_path") -> Codec:
    """The codec ``name`` (one of ``CODECS``); ``path`` is its source where it needs one.

    ``key`` names the setting ``path`` came from, in errors. ``pixel``: none. ``autoencoder`` / ``video_wae``: a trained run of that method (loaded on the CPU,
    frozen). ``diffusers_vae``: a diffusers VAE folder or hub id (a full pipeline folder's ``vae/`` is
    found too). ``ddim_inversion``: a diffusers image pipeline folder or hub id (``vae/ unet/ scheduler/``).

    Raises:
        ConfigError: an unknown name, a missing path, or a run of another method.
        CheckpointError: the run cannot be loaded.
    """
    if name == "pixel":
        return PixelCodec()
    if name in ("autoencoder", "video_wae"):
        if not path:
            raise ConfigError(f"codec {name} needs {key}: the path of a trained {name} run")
        method, cfg, ckpt = load_run(path, device="cpu")
        if cfg.method != name:
            article = "an" if name[0] in "aeiou" else "a"
            raise ConfigError(f"{key} {path} is a '{cfg.method}' run, not {article} {name}")
        codec = AutoencoderCodec if name == "autoencoder" else VideoWAECodec
        return codec(method, source=str(ckpt.path))
    if name == "diffusers_vae":
        from tempoflow.codecs.diffusers_vae import DiffusersVAECodec, vae_subfolder

        return DiffusersVAECodec(path, subfolder=vae_subfolder(path))
    if name == "ddim_inversion":
        from tempoflow.codecs.ddim_inversion import DDIMInversionCodec

        return DDIMInversionCodec(path)
    raise ConfigError(f"unknown codec '{name}' (valid: {', '.join(CODECS)})")


def caption_vocabulary(data: DataConfig) -> list[str]:
    """Every caption of a captioned data set, all splits (align's noise words avoid them all).

    Raises:
        ConfigError: the data set has no caption grammar (only shapes, digits and camera do).
    """
    if data.name == "shapes":
        from tempoflow.data.shapes import all_captions

        return all_captions(data.shapes)
    if data.name == "digits":
        from tempoflow.data.digits import all_captions

        return all_captions(data.digits)
    if data.name == "camera":
        from tempoflow.data.camera import all_captions

        return all_captions(data.camera)
    raise ConfigError(f"method align needs captioned data (data.name shapes, digits or camera), got '{data.name}'")


def starts_at_zero(data: DataConfig) -> bool:
    """Frame 0 is the physics initial state at t = 0 (``data.physics.include_initial``; The Well's first
    stored step); otherwise video frame k (1-based) sits at k / fps (DESIGN §1)."""
    if data.name == "the_well":
        return True
    return is_field_data(data) and data.physics.include_initial


def context_length(cfg: ExperimentConfig) -> int:
    """Given frames a roll-out starts from: the one fixed initial state of physics data stored as frame 0,
    otherwise the first ``m`` frames (``lifting.window``) of a video."""
    return 1 if starts_at_zero(cfg.data) else cfg.lifting.window


def initial_frames(cfg: ExperimentConfig, n: int | None = None, split: str = "test") -> Tensor:
    """The first :func:`context_length` frames of ``n`` trajectories of ``split`` (cycled when it holds
    fewer; all of them when ``n`` is None): ``(n, k, C, H, W)``, what a trajectory method's ``sample``
    rolls out from. For physics data they are all the fixed initial state."""
    videos = load_dataset(cfg.data, split).videos
    rows = torch.arange(len(videos) if n is None else n) % len(videos)
    return videos[rows, : context_length(cfg)]


def rollout_starts(cfg: ExperimentConfig, ckpt: Checkpoint, n: int | None = None) -> Tensor:
    """What ``n`` roll-outs of a trajectory method start from (every distinct start when ``n`` is None):
    the frames a saved pipeline carries (``INITIAL_FRAMES``, cycled), else :func:`initial_frames` of the
    run's test split."""
    if ckpt.meta.get(PIPELINE) and INITIAL_FRAMES in ckpt.checksums:
        frames = ckpt.tensors(INITIAL_FRAMES)["frames"]
        return frames if n is None else frames[torch.arange(n) % len(frames)]
    return initial_frames(cfg, n)


def method_parts(cfg: ExperimentConfig, text: TextEncoder | None = None) -> dict:
    """What ``cfg.method`` is built with besides its own section and the video shape: built parts
    (text encoder, codec) and what it needs to know of the data and of shared sections."""
    method = cfg.method
    timing = {"fields": is_field_data(cfg.data), "fps": frame_rate(cfg.data),
              "first_frame_at_zero": starts_at_zero(cfg.data)}
    if method in ("flow", "vlfm"):
        section = getattr(cfg, method)
        parts = {"text": text or text_encoder(cfg), "model": cfg.model,
                 "codec": build_codec(section.codec, section.codec_path, f"{method}.codec_path")}
        return {**parts, "fps": timing["fps"]} if method == "vlfm" else parts
    if method == "align":
        vocabulary = caption_vocabulary(cfg.data)  # also refuses data without captions
        if not cfg.align.video_path:
            raise ConfigError("align.video_path must name a trained video_wae run (the video space)")
        return {"text": text or text_encoder(cfg), "vocabulary": vocabulary,
                "codec": build_codec("video_wae", cfg.align.video_path, "align.video_path")}
    if method == "autoencoder":
        return {"fields": timing["fields"]}
    if method == "lifting":
        return timing
    if method in ("ardm", "meanflow", "crps"):  # lifting's window, UNet and pairs: the same backbone
        return {**timing, "lifting": cfg.lifting}
    return {}


def build_method(cfg: ExperimentConfig, text: TextEncoder | None = None) -> Method:
    """The method named by ``cfg.method`` with fresh weights (seeded by ``train.seed``), built from its
    own config section and the parts :func:`method_parts` hands it."""
    cls = method_class(cfg.method)
    parts = method_parts(cfg, text)
    with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching global RNG
        torch.manual_seed(cfg.train.seed)
        return cls(getattr(cfg, cfg.method), video_shape(cfg.data), **parts)


def train(
    cfg: ExperimentConfig, resume: bool = False, text: TextEncoder | None = None, until: int | None = None
) -> TrainResult:
    """Train ``cfg.method`` on the training split of ``cfg.data``; checkpoints go to ``cfg.out_dir``,
    which the run holds locked (``RunLock``, on the main process of a launcher) until it ends.

    Raises:
        ConfigError: another run holds ``cfg.out_dir``, and every error of ``make_trainer`` and ``fit``.
    """
    preflight(cfg)  # before the lock creates out_dir: a refused run leaves nothing behind
    lock = RunLock(cfg.out_dir) if launcher_rank() == 0 else contextlib.nullcontext()
    with lock:
        return make_trainer(cfg, resume, text).fit(resume=resume, until=until)


def preflight(cfg: ExperimentConfig) -> None:
    """Refuse a run that cannot start, before anything is created or loaded.

    Raises:
        ConfigError: ``out_dir`` cannot be written (below a file, read-only), the device is missing, or
            the precision does not run on it (fp16 on the CPU).
    """
    problem = unwritable(cfg.out_dir)
    if problem is not None:
        raise ConfigError(f"out_dir {cfg.out_dir} cannot be written: {problem}; choose another out_dir")
    accelerator_settings(cfg.device, cfg.train.mixed_precision)


def make_trainer(cfg: ExperimentConfig, resume: bool = False, text: TextEncoder | None = None) -> Trainer:
    """The method, its training data and a ``Trainer`` writing to ``cfg.out_dir``, ready to ``fit``
    (``resume`` only checks that the folder may be continued with this config, before any data is
    loaded; ``fit(resume=True)`` loads the state).

    Raises:
        ConfigError: ``out_dir`` cannot be written (below a file, read-only); ``device`` names a GPU
            torch does not see, or fp16 on the CPU; a run is there and ``resume`` is False; or ``resume``
            with a config that changes what the run trains (``resume_conflicts``) or a codec that now
            loads other weights.
        CheckpointError: ``resume`` without a checkpoint, or with an unreadable ``latest``/``config.json``.
    """
    out = Path(cfg.out_dir)
    preflight(cfg)
    found = run_files(out)
    # Under a launcher only the first process judges the folder: the others may already see the
    # config.yaml it writes. If it refuses, the launcher stops them.
    if not resume and found and launcher_rank() == 0:
        what = "pass --resume to continue it" if holds_checkpoints(out / "checkpoints") else \
            "it has no checkpoint yet: delete it to start over"
        raise ConfigError(f"{out} already holds a run ({', '.join(found[:3])}): {what}, or choose another out_dir")
    saved = None
    if resume and launcher_rank() == 0:
        for done in recover_checkpoints(out / "checkpoints"):
            warnings.warn(f"{out}: {done} (left by an interrupted run)")
    if resume:
        if not found:
            raise CheckpointError(f"--resume: no checkpoint in {out}: no run is there to continue")
        if not holds_checkpoints(out / "checkpoints"):
            raise CheckpointError(
                f"--resume: the run in {out} has no checkpoint yet ({', '.join(found[:3])}): nothing to resume "
                "from; delete the folder to start over or choose another out_dir"
            )
        saved = read_checkpoint(out)
        check_resumable(cfg, saved)
        if cfg.train.steps < saved.step:
            raise ConfigError(f"--resume: the run in {out} is at step {saved.step} already, past train.steps="
                              f"{cfg.train.steps}; pass train.steps=N with N > {saved.step} to train longer")
    method = build_method(cfg, text)
    lazy = reads_lazily(cfg.data)  # rows read when a batch draws them (tempoflow.data.rows), or all up front
    if cfg.data.latent_cache:
        if method.codec is None:
            raise ConfigError(f"method '{cfg.method}' has no codec: it cannot train from data.latent_cache")
        data = (open_latents if lazy else load_latents)(cfg.data.latent_cache, method.codec, data_dict(cfg.data),
                                                        "train")
        rows, key = (data if lazy else data.latents), "latents"
    else:
        data = open_rows(cfg.data, "train") if lazy else load_dataset(cfg.data, "train")
        rows, key = (data if lazy else data.videos), "video"
    if method.captions == "required":
        _require_captions(cfg.method, data.captions, getattr(data, "paths", None))
    out.mkdir(parents=True, exist_ok=True)
    if launcher_rank() == 0:  # one writer
        save_yaml(cfg, out / "config.yaml")
    meta = {"method": cfg.method, "video_shape": list(video_shape(cfg.data)), "fps": data.fps}
    if method.codec is not None:  # the codec is rebuilt at load time: pin which one
        meta["codec_fingerprint"] = method.codec.fingerprint()
    if saved is not None and saved.meta.get("codec_fingerprint") != meta.get("codec_fingerprint"):
        raise ConfigError(f"--resume: the run in {out} was trained in another latent space: its codec now "
                          "loads different weights (was the codec's run retrained or replaced?)")
    if getattr(data, "paths", None) is not None:  # the user's files: pin which ones, as the codec is pinned
        meta["data_fingerprint"] = files_fingerprint(data.paths, data.captions)
        before = saved.meta.get("data_fingerprint") if saved is not None else None
        if before is not None and before != meta["data_fingerprint"]:
            raise ConfigError(
                f"--resume: the training videos of the run in {out} changed since it started ({before['videos']} "
                f"then, {meta['data_fingerprint']['videos']} now, or other files or captions): resume with the "
                "same files, or train the new set into another out_dir"
            )
    return Trainer(method, rows, data.captions, cfg.train, out, to_dict(cfg), meta, cfg.device, key,
                   num_workers=cfg.data.num_workers)


def files_fingerprint(paths: list[Path], captions: list[str] | None) -> dict:
    """What identifies a training set of files without reading them: their count and the SHA-256 of every
    (name, size, caption) — a file added, removed, replaced by another size or recaptioned changes it."""
    digest = hashlib.sha256()
    for i, path in enumerate(paths):
        size = path.stat().st_size if path.exists() else -1
        digest.update(json.dumps([path.name, size, captions[i] if captions is not None else None]).encode())
    return {"videos": len(paths), "sha256": digest.hexdigest()[:16]}


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


# A saved pipeline (save_pipeline) holds one set of weights (model.safetensors) and stores the paths of
# what it carries (codec run, text model) relative to its folder; its meta lists them.
PIPELINE = "pipeline"
RELATIVE_PATHS = "relative_paths"
INITIAL_FRAMES = "initial_frames.safetensors"  # a trajectory pipeline's roll-out starts (test split)
MAX_SAVED_STARTS = 256
PIPELINE_WEIGHTS = "weights"  # which of its run's weights a saved pipeline holds: "ema" or "raw"
# What load_run(weights=...) takes: the EMA weights (the default) or the trained ones.
WEIGHT_FILES = {"ema": EMA_WEIGHTS, "raw": WEIGHTS}
# Settings that name files a method is built from: what save_pipeline copies in.
PATH_SETTINGS = ("flow.codec_path", "vlfm.codec_path", "align.video_path", "text.path", "text.cache")


def _with_local_paths(ckpt: Checkpoint) -> dict:
    """The checkpoint's config with the paths a saved pipeline stores relative to its folder made absolute."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in ckpt.config.items()}
    for key in ckpt.meta.get(RELATIVE_PATHS, []):
        section, name = key.split(".")
        if isinstance(data.get(section), dict) and data[section].get(name):
            data[section][name] = str(ckpt.path / data[section][name])
    return data


def save_pipeline(method: Method, cfg: ExperimentConfig, ckpt: Checkpoint, folder: str | Path) -> Path:
    """Write a trained method as one self-contained folder that :func:`load_run` (and ``tempoflow.load``)
    reads in another process, on another machine: its weights (``model.safetensors``), ``config.json``
    with SHA-256s of every file, and copies of what it is built from — a trained codec's run (saved
    the same way, recursively, under ``codec/``), a local diffusers folder, a local text model and the
    caption-embedding cache. A hub id stays a hub id. Written beside ``folder`` and renamed into place.

    Raises:
        ConfigError: ``folder`` exists and is not empty.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not empty: choose a new folder to save the pipeline in")
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.tmp")  # ours alone, as files.write_atomic's
    tmp.mkdir(parents=True)
    try:
        data = to_dict(cfg)
        relative = []
        for key in PATH_SETTINGS:
            section, name = key.split(".")
            source = data[section][name]
            if section in ("flow", "vlfm", "align") and section != cfg.method or not source:
                continue
            if not Path(source).exists():
                continue  # a hub id: the loading machine resolves it as the run did
            target = {"text.path": "text_model", "text.cache": "text_cache.safetensors"}.get(key, "codec")
            trained_codec = key == "align.video_path" or data[section].get("codec") in ("autoencoder", "video_wae")
            if target == "codec" and trained_codec:  # a tempoflow run: saved the same way
                codec, codec_cfg, codec_ckpt = load_run(source, device="cpu")
                save_pipeline(codec, codec_cfg, codec_ckpt, tmp / target)
            elif Path(source).is_dir():
                shutil.copytree(source, tmp / target)
            else:
                shutil.copy2(source, tmp / target)
            data[section][name] = target
            relative.append(key)
        save_file(cpu_state(method), str(tmp / WEIGHTS))
        if method.task == "trajectory":  # the starts, so the folder rolls out without the run's data
            save_file({"frames": rollout_starts(cfg, ckpt)[:MAX_SAVED_STARTS].contiguous()}, str(tmp / INITIAL_FRAMES))
        meta = {k: v for k, v in ckpt.meta.items() if k != CHECKSUMS}
        meta.update({PIPELINE: True, PIPELINE_WEIGHTS: held_weights(ckpt), RELATIVE_PATHS: relative,
                     CHECKSUMS: checksums(tmp)})
        (tmp / CONFIG).write_text(json.dumps({"config": data, "meta": meta}, indent=2))
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def held_weights(ckpt: Checkpoint) -> str:
    """Which of its run's weights the method loaded from ``ckpt`` holds: "ema" or "raw" (a saved
    pipeline holds one of them, as recorded when it was saved).

    Raises:
        ValueError: no weights were loaded from ``ckpt``.
    """
    if ckpt.meta.get(PIPELINE):
        return ckpt.meta.get(PIPELINE_WEIGHTS, "ema")  # pipelines saved before the record: load_run's default
    if ckpt.loaded is None:
        raise ValueError(f"no weights were loaded from {ckpt.path}")
    return "ema" if ckpt.loaded == EMA_WEIGHTS else "raw"


def load_run(
    path: str | Path, device: str = "auto", weights: str = "ema", text: TextEncoder | None = None,
    overrides: dict | None = None,
) -> tuple[Method, ExperimentConfig, Checkpoint]:
    """Rebuild a trained method from a checkpoint, in eval mode, with its EMA weights (``weights="ema"``,
    ``ema.safetensors``) or its trained ones (``"raw"``, ``model.safetensors``). A saved pipeline holds
    one of the two (``model.safetensors``) and gives it only when asked for that one.

    Raises:
        ConfigError: ``weights`` is neither "ema" nor "raw"; a bad override.
        CheckpointError: no checkpoint; a file of it missing (the EMA: pass ``weights="raw"``), damaged
            (checked against the SHA-256s in its config.json) or unreadable; a saved pipeline that holds
            the other weights; or weights that do not fit the config's model.
    """
    if weights not in WEIGHT_FILES:
        raise ConfigError(f"weights must be 'ema' or 'raw' (the trained weights), got {weights!r}")
    ckpt = read_checkpoint(path)
    pipeline = ckpt.meta.get(PIPELINE)
    if pipeline and held_weights(ckpt) != weights:
        held = held_weights(ckpt)
        raise CheckpointError(f"{ckpt.path} is a saved pipeline holding its run's {held} weights only, not the "
                              f"{weights} ones: pass --weights {held} (weights='{held}' in tempoflow.load), or "
                              f"load the run it was saved from")
    ckpt.file(WEIGHTS)  # present and intact even when the EMA is loaded: a damaged run is named before use
    saved = _with_local_paths(ckpt)
    try:
        cfg = from_dict(ExperimentConfig, saved)
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {ckpt.path} has an unreadable config: {err}") from err
    if overrides:  # a bad override is the user's setting, not a fault of the checkpoint
        data = dict(saved)
        for section, values in overrides.items():
            data[section] = {**data.get(section, {}), **values}
        cfg = from_dict(ExperimentConfig, data)
    method = build_method(cfg, text)
    load_weights(method, ckpt.weights(ema=weights == "ema" and not pipeline), ckpt.path)
    pinned = ckpt.meta.get("codec_fingerprint")
    if pinned is not None and method.codec.fingerprint() != pinned:
        raise CheckpointError(
            f"checkpoint {ckpt.path} was trained in another latent space: its codec '{method.codec.name}' "
            "now loads different weights (was the codec's run retrained or moved?)"
        )
    return method.to(pick_device(device)).eval(), cfg, ckpt
