"""Typed configuration: dataclasses, YAML files in ``configs/``, dotted overrides on the CLI.

A YAML file mirrors the dataclass tree of :class:`ExperimentConfig`. Every key is checked against
the dataclass fields and every value against the field's type, so ``train.step=5`` (a typo) or
``train.steps=fast`` fails with one line that names the key, never a traceback.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tempoflow.data.shapes import ShapesConfig
from tempoflow.errors import ConfigError


def _require(ok: bool, message: str) -> None:
    """Config validation: a ValueError that ``from_dict`` turns into one ConfigError line."""
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to train on; ``name`` selects the sub-config that is used."""

    name: str = "shapes"
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    # Folder written by `tempoflow data encode`: train on its latents instead of encoding every batch.
    latent_cache: str = ""


@dataclass(frozen=True)
class TextConfig:
    """Caption encoder (``tempoflow.text``)."""

    encoder: str = "minilm"  # "minilm" (shipped, pretrained, offline) or "hashing" (no weights)
    path: str = ""  # local path or hub id of a sentence-transformers model; "" = the shipped MiniLM
    dim: int = 64  # embedding width of the hashing encoder (MiniLM is fixed at 384)
    max_tokens: int = 32  # captions are truncated to this many tokens
    cache: str = ""  # safetensors file of caption embeddings, reused across runs ("" = memory only)


@dataclass(frozen=True)
class DiTConfig:
    """DiT backbone over space-time patches (Peebles & Xie 2023) with text cross-attention."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    patch_t: int = 1  # frames per patch
    patch_hw: int = 4  # pixels (or latent cells) per patch side
    cross_attention: bool = True  # token embeddings by cross-attention (pooled vector always in adaLN)

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads", "patch_t", "patch_hw"):
            _require(getattr(self, name) >= 1, f"model.{name} must be >= 1, got {getattr(self, name)}")
        _require(self.dim % self.heads == 0, f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        _require(self.mlp_ratio > 0, f"model.mlp_ratio must be > 0, got {self.mlp_ratio}")


RECONSTRUCTION_LOSSES = ("l1", "l2", "l1+l2")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Frame autoencoder (method ``autoencoder``; the ``autoencoder`` codec loads what it trains)."""

    width: int = 32  # channels of the first level
    multipliers: tuple[int, ...] = (1, 2, 2)  # one level per entry; the grid shrinks 2x per extra level
    z_channels: int = 4  # latent channels per cell
    kl_weight: float = 1e-6  # β of the KL term (latent diffusion's KL-f8 uses 1e-6)
    # Pixel reconstruction loss: "l1", "l2" or "l1+l2". L1 alone is median-seeking: on frames that
    # are mostly background it can settle on drawing background only; L2 keeps small objects.
    reconstruction: str = "l1+l2"
    scale_momentum: float = 0.99  # running estimate of the latent std, for the codec's scaling

    def __post_init__(self) -> None:
        _require(self.width >= 4 and len(self.multipliers) >= 1, "autoencoder.width >= 4 and >= 1 level")
        _require(self.z_channels >= 1, f"autoencoder.z_channels must be >= 1, got {self.z_channels}")
        _require(self.kl_weight >= 0, f"autoencoder.kl_weight must be >= 0, got {self.kl_weight}")
        _require(self.reconstruction in RECONSTRUCTION_LOSSES,
                 f"autoencoder.reconstruction must be one of {RECONSTRUCTION_LOSSES}, got {self.reconstruction!r}")


@dataclass(frozen=True)
class FlowConfig:
    """Latent flow matching (DESIGN §3)."""

    path: str = "condot"  # "condot" or "cosine"
    sigma_min: float = 0.0
    caption_dropout: float = 0.1  # probability of training unconditionally, for guidance
    codec: str = "pixel"  # "pixel" or "autoencoder"
    codec_path: str = ""  # the autoencoder run (or checkpoint) the "autoencoder" codec loads
    # What the network outputs: "velocity" (v_θ directly) or "data" (x̂_1, turned into a velocity
    # through the path). The loss is on the velocity either way. Data prediction wins when a patch
    # holds more numbers than the network's width (Li & He 2025): the clean patch is low-dimensional,
    # the noise in it is not.
    prediction: str = "velocity"
    min_sigma: float = 0.05  # σ_t floor when converting a data prediction into a velocity

    def __post_init__(self) -> None:
        _require(self.prediction in ("velocity", "data"),
                 f"flow.prediction must be 'velocity' or 'data', got {self.prediction!r}")
        _require(0.0 <= self.caption_dropout < 1.0, f"flow.caption_dropout must be in [0, 1), got {self.caption_dropout}")
        _require(0.0 <= self.sigma_min < 1.0, f"flow.sigma_min must be in [0, 1), got {self.sigma_min}")
        _require(self.min_sigma > 0.0, f"flow.min_sigma must be > 0, got {self.min_sigma}")


@dataclass(frozen=True)
class SampleConfig:
    """ODE sampling."""

    solver: str = "heun"  # euler | midpoint | heun | rk4 | dopri5
    steps: int = 16  # fixed-step solvers
    guidance: float = 2.0  # classifier-free guidance scale (1 = conditional model, no guidance)
    atol: float = 1e-4  # dopri5 tolerances
    rtol: float = 1e-4
    num_per_prompt: int = 2
    seed: int = 1234

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"sample.steps must be >= 1, got {self.steps}")
        _require(self.num_per_prompt >= 1, f"sample.num_per_prompt must be >= 1, got {self.num_per_prompt}")
        _require(self.atol > 0 and self.rtol > 0, "sample.atol and sample.rtol must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    """One trainer for every method (``tempoflow.train``)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine schedule decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "auto"  # "auto" (bf16 on GPU, none on CPU), "no", "bf16"
    compile: bool = False  # torch.compile the method's network (pays on GPU for long runs)
    log_every: int = 25
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            _require(getattr(self, name) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        _require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _require(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        _require(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        _require(self.grad_clip > 0, f"train.grad_clip must be > 0, got {self.grad_clip}")
        _require(self.mixed_precision in ("auto", "no", "bf16", "fp16"),
                 f"train.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")


@dataclass(frozen=True)
class EvalConfig:
    """What ``tempoflow eval`` and the demo sample and score."""

    prompts: tuple[str, ...] = ()  # empty = a fixed selection of train and held-out captions
    num_prompts: int = 8
    lpips_backbone: str = ""  # local torchvision AlexNet weights (alexnet-owt-*.pth): enables B-LPIPS
    lpips_lin: str = ""  # local LPIPS v0.1 linear layers (lpips weights/v0.1/alex.pth)
    i3d_path: str = ""  # local Kinetics-400 I3D weights: enables FVD/KVD (needs clips of >= 16 frames)
    feature_size: int = 4  # thumbnail side of the offline "FD-thumb" features (not FVD)


@dataclass(frozen=True)
class ExperimentConfig:
    method: str = "flow"
    out_dir: str = "runs/default"
    device: str = "auto"  # "auto", "cpu" or "cuda"
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: DiTConfig = field(default_factory=DiTConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts with type checks.


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples; raise on mismatch."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}' must be null, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config key '{key}' must have {len(args)} entries, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):  # YAML 1.1 reads "5e-4" as a string
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the annotations used above exist in the configs
        raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{full}' (valid: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid config '{prefix or cls.__name__}': {err}") from err


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples become lists) for YAML/JSON."""

    def convert(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.steps=200'`` -> (['train', 'steps'], 200); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML") from err
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted overrides into a nested dict (a copy); type checks happen in ``from_dict``."""
    data = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def _deep_copy(d: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    return from_dict(ExperimentConfig, apply_overrides(data, list(overrides)))


def load_sections(path: str | Path, sections: tuple[str, ...]) -> dict:
    """The given sections of a partial YAML config, type-checked: ``{"sample": {"steps": 8}}``.

    For settings applied on top of a checkpoint's config (``tempoflow eval --config``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML") from err
    if not isinstance(data, dict) or set(data) - set(sections):
        extra = sorted(set(data) - set(sections)) if isinstance(data, dict) else data
        raise ConfigError(f"config file {path} may only set {', '.join(sections)}; it sets {extra}")
    cfg = from_dict(ExperimentConfig, data)  # type checks every key
    return {s: {k: getattr(getattr(cfg, s), k) for k in (data[s] or {})} for s in data}


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
