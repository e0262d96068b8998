"""The latent space of a pretrained diffusers ``AutoencoderKL`` (SD, SDXL, SD3, Flux VAEs), frame-wise.

Latents follow the convention of the pipelines the VAE ships with (Rombach et al. 2022, §3):
    z = (E(2 x − 1) − shift) · scaling,        x̂ = (D(z / scaling + shift) + 1) / 2
with ``E`` the posterior mean (or a sample) of the encoder, ``scaling = config.scaling_factor`` and
``shift = config.shift_factor`` (SD3/Flux; 0 for SD 1.x/2.x/XL).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from tempoflow.codecs.pixel import Codec
from tempoflow.errors import ConfigError, needs_extra

_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it only once, at import)."""
    import huggingface_hub.constants

    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE or bool(
        huggingface_hub.constants.HF_HUB_OFFLINE
    )


def looks_like_local_path(source: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; else (``./x``, ``/x``, ``~/x``, ``a/b/c``) is a path."""
    return (
        source.startswith((".", "/", "~", "\\")) or source.count("/") > 1 or "\\" in source or ":" in source
    )


def load_pretrained(
    cls: type,
    source: str | Path,
    subfolder: str | None = None,
    dtype: torch.dtype | None = None,
    config_only: bool = False,
):
    """``cls.from_pretrained(source, subfolder)`` with user-fixable failures turned into ``ConfigError``.

    Args:
        cls: a diffusers model/scheduler class or a transformers class (``from_pretrained`` API).
        source: a local directory, or a hub id (``owner/name``) looked up in the local cache only
            when ``HF_HUB_OFFLINE`` is set.
        subfolder: e.g. ``"vae"`` inside a full pipeline folder; None for a bare model folder.
        dtype: weights' dtype (``torch_dtype``); None keeps the stored one. Ignored for schedulers.
        config_only: return ``cls.load_config(...)`` (a dict) instead of loading weights.
    """
    source = str(source)
    local = Path(source).expanduser()
    if not local.exists() and looks_like_local_path(source):
        raise ConfigError(f"diffusers model path not found: {source}")
    where = f"{source!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    kwargs = {} if subfolder is None else {"subfolder": subfolder}
    load = cls.load_config if config_only else cls.from_pretrained
    if dtype is not None and not config_only and hasattr(cls, "dtype"):  # not schedulers, tokenizers
        kwargs["torch_dtype" if cls.__module__.startswith("diffusers") else "dtype"] = dtype
    try:
        if local.exists():
            return load(str(local), local_files_only=True, **kwargs)
        return load(source, local_files_only=hub_offline(), **kwargs)
    except (OSError, ValueError) as err:  # missing files, unreachable or offline hub, bad config
        hint = " (HF_HUB_OFFLINE is set: only the local hub cache was searched)" if hub_offline() else ""
        raise ConfigError(f"could not load {cls.__name__} from {where}{hint}: {err}") from err


def vae_subfolder(source: str | Path) -> str | None:
    """``"vae"`` when ``source`` is a whole pipeline (its VAE in ``vae/``), None for a bare VAE.

    A local folder is a pipeline when it has ``vae/config.json``; a hub repo when it has no root
    ``config.json`` (SD pipelines have ``model_index.json`` there instead).

    Raises:
        MissingExtraError: diffusers is not installed.
    """
    with needs_extra("diffusers", "diffusers", "codec diffusers_vae"):
        from diffusers import AutoencoderKL

    local = Path(str(source)).expanduser()
    if local.exists():
        return "vae" if (local / "vae" / "config.json").is_file() else None
    try:
        load_pretrained(AutoencoderKL, source, config_only=True)
    except ConfigError:
        return "vae"
    return None


def cast(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """``module`` in ``dtype`` (None or its own dtype: untouched, sparing diffusers' cast warning)."""
    if dtype is None or next(module.parameters()).dtype == dtype:
        return module
    return module.to(dtype=dtype)


class DiffusersVAECodec(Codec):
    """Encodes each frame to the scaled posterior mean of a diffusers ``AutoencoderKL``.

    Args:
        source: a local folder or hub id holding the VAE, or an ``AutoencoderKL`` already built.
        subfolder: the VAE's folder inside ``source`` (``"vae"`` for a full pipeline); None for a
            bare VAE folder. Only used when ``source`` is a path or hub id.
        chunk: frames per VAE call (memory bound, results do not depend on it).
        dtype: dtype of the VAE's weights and computation (e.g. ``torch.float16`` on GPU); None keeps
            the loaded one. ``encode``/``decode`` return their input's dtype. SD 1.x VAEs overflow in
            float16 (their config says ``force_upcast``): keep those in float32 or bfloat16.
        sample_posterior: encode to a sample of the posterior instead of its mean; ``encode`` then
            needs an explicit ``generator``.
    """

    name = "diffusers_vae"

    def __init__(
        self,
        source: str | Path | nn.Module,
        subfolder: str | None = None,
        chunk: int = 16,
        dtype: torch.dtype | None = None,
        sample_posterior: bool = False,
    ):
        super().__init__()
        with needs_extra("diffusers", "diffusers", "codec diffusers_vae"):
            from diffusers import AutoencoderKL

        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of frames, got {chunk}")
        if isinstance(source, AutoencoderKL):
            vae, self.source = source, f"<{type(source).__name__} instance>"
        elif isinstance(source, nn.Module):
            raise TypeError(
                f"source must be an AutoencoderKL, a path or a hub id, got a {type(source).__name__}"
            )
        else:
            if not str(source):
                raise ConfigError("codec diffusers_vae needs flow.codec_path (a VAE folder or hub id)")
            vae, self.source = load_pretrained(AutoencoderKL, source, subfolder, dtype), str(source)
        self.vae = cast(vae, dtype).requires_grad_(False).eval()
        self.chunk = chunk
        self.sample_posterior = sample_posterior

    @property
    def scaling(self) -> float:
        """``config.scaling_factor``: brings the VAE's latents to roughly unit variance."""
        return float(self.vae.config.scaling_factor)

    @property
    def shift(self) -> float:
        """``config.shift_factor`` (SD3/Flux), subtracted before scaling; 0 when the VAE has none."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def downsampling(self) -> int:
        """Spatial factor frame → latent: one halving per encoder block but the last."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        """``(latent_channels, H / f, W / f)`` with ``f = downsampling``."""
        if channels != self.vae.config.in_channels:
            raise ValueError(
                f"the VAE takes {self.vae.config.in_channels}-channel frames, got {channels} channels"
            )
        f = self.downsampling
        if height % f or width % f:
            raise ValueError(
                f"frame size {height}x{width} is not divisible by the VAE's downsampling factor {f}"
            )
        return self.vae.config.latent_channels, height // f, width // f

    def fingerprint(self) -> str:
        """The base fingerprint plus what changes latents but is not a weight."""
        extra = f"shift={self.shift!r}:sample_posterior={self.sample_posterior}"
        return f"{super().fingerprint()}:{extra}"

    def train(self, mode: bool = True) -> DiffusersVAECodec:
        return super().train(False)  # frozen

    @torch.no_grad()
    def encode_frames(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(N, C, H, W)`` in [0, 1] -> scaled latents ``(N, c, h, w)``, in one VAE call (no chunking)."""
        param = next(self.vae.parameters())
        posterior = self.vae.encode(frames.to(param.device, param.dtype) * 2 - 1).latent_dist
        z = posterior.sample(generator) if self.sample_posterior else posterior.mean  # (N, c, h, w)
        return ((z - self.shift) * self.scaling).to(frames.dtype)

    @torch.no_grad()
    def decode_frames(self, z: Tensor) -> Tensor:
        """Scaled latents ``(N, c, h, w)`` -> frames ``(N, C, H, W)`` in [0, 1], in one VAE call."""
        param = next(self.vae.parameters())
        x = self.vae.decode(z.to(param.device, param.dtype) / self.scaling + self.shift).sample  # [-1, 1]
        return ((x.to(z.dtype) + 1) / 2).clamp(0, 1)

    def encode(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, T, C, H, W)`` in [0, 1] -> ``(B, T, c, h, w)``, frames in chunks of ``chunk``.

        ``generator`` is required (and only used) with ``sample_posterior``.
        """
        check_video(video)
        self.latent_shape(*video.shape[2:])
        if self.sample_posterior and generator is None:
            raise ValueError("sample_posterior=True needs an explicit torch.Generator passed to encode")
        frames = video.flatten(0, 1)  # (B*T, C, H, W)
        z = torch.cat([self.encode_frames(c, generator) for c in frames.split(self.chunk)])
        return z.unflatten(0, video.shape[:2])

    def decode(self, latents: Tensor) -> Tensor:
        """``(B, T, c, h, w)`` -> ``(B, T, C, H, W)`` in [0, 1], frames in chunks of ``chunk``."""
        check_latents(latents, self.vae.config.latent_channels)
        z = latents.flatten(0, 1)  # (B*T, c, h, w)
        x = torch.cat([self.decode_frames(c) for c in z.split(self.chunk)])
        return x.unflatten(0, latents.shape[:2])


def check_video(video: Tensor) -> None:
    if video.ndim != 5:
        raise ValueError(f"expected a video batch (B, T, C, H, W), got shape {tuple(video.shape)}")


def check_latents(latents: Tensor, channels: int) -> None:
    if latents.ndim != 5 or latents.shape[2] != channels:
        raise ValueError(f"expected latents (B, T, {channels}, h, w), got shape {tuple(latents.shape)}")
