"""DDIM inversion of a diffusers image model: the VLFM paper's "visual decoder" (seed 000, §2.1, §5.1).

VLFM takes a frame's latent to be ``u = D⁻¹(V)``, the initial noise from which a pretrained image
model's deterministic sampler ``D`` reproduces the frame (Stable Diffusion 1.5 + DDIM in the paper,
inverted as in Mokady et al. 2023). With the VAE latent ``x_0 = E(V)`` (scaled) and the scheduler's
timesteps ``τ_1 > … > τ_S`` with ``ᾱ_i = ᾱ(τ_i)`` and ``ᾱ_{S+1} = final_alpha_cumprod`` (the clean end),
one DDIM step (Song et al. 2021, eq. 12 with η = 0) moves ``x`` from level ``a`` to level ``a'``:

    x̂_0 = (x − √(1 − a) ε̂) / √a,        x' = √a' x̂_0 + √(1 − a') ε̂.

Sampling (decode) runs i = 1 … S from ``ᾱ_i`` to ``ᾱ_{i+1}`` with ``ε̂ = ε_θ(x, τ_i)``; inversion
(encode) runs i = S … 1 from ``ᾱ_{i+1}`` to ``ᾱ_i`` with ``ε̂ = ε_θ(x, τ_i)`` evaluated at the *current*
``x`` — the standard approximation ε_θ(x_{i+1}, τ_i) ≈ ε_θ(x_i, τ_i), exact as the steps shrink.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from tempoflow.codecs.diffusers_vae import (
    DiffusersVAECodec,
    cast,
    check_latents,
    check_video,
    load_pretrained,
)
from tempoflow.codecs.pixel import Codec
from tempoflow.errors import ConfigError, needs_extra


@dataclass
class DiffusionParts:
    """The parts of a diffusers image pipeline the codec needs.

    Attributes:
        vae: an ``AutoencoderKL``.
        unet: a ``UNet2DConditionModel`` (text-conditioned) or ``UNet2DModel`` (unconditional).
        scheduler: any diffusers scheduler; only its config (βs, prediction type, spacing) is used,
            through a ``DDIMScheduler`` built from it.
        text_encoder: a transformers CLIP text model, needed only for a conditional UNet when no
            prompt embedding is given.
        tokenizer: its tokenizer.
    """

    vae: nn.Module
    unet: nn.Module
    scheduler: object
    text_encoder: nn.Module | None = None
    tokenizer: object | None = None


def load_diffusion_parts(source: str | Path, dtype: torch.dtype | None = None) -> DiffusionParts:
    """Load ``vae/``, ``unet/``, ``scheduler/`` (and ``text_encoder/``, ``tokenizer/`` for a conditional
    UNet) from a pipeline folder or hub id, e.g. ``stable-diffusion-v1-5/stable-diffusion-v1-5``.

    Raises:
        ConfigError: no source, or a part that cannot be loaded from it.
        MissingExtraError: diffusers is not installed.
    """
    with needs_extra("diffusers", "diffusers", "codec ddim_inversion"):
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel

    if not str(source):
        raise ConfigError(
            "codec ddim_inversion needs flow.codec_path (a diffusers pipeline folder or hub id)"
        )
    unet_config = load_pretrained(UNet2DConditionModel, source, "unet", config_only=True)
    conditional = unet_config.get("_class_name", "UNet2DConditionModel") != "UNet2DModel"
    parts = DiffusionParts(
        vae=load_pretrained(AutoencoderKL, source, "vae", dtype),
        unet=load_pretrained(UNet2DConditionModel if conditional else UNet2DModel, source, "unet", dtype),
        scheduler=load_pretrained(DDIMScheduler, source, "scheduler"),
    )
    if conditional:
        from transformers import CLIPTextModel, CLIPTokenizer

        parts.text_encoder = load_pretrained(CLIPTextModel, source, "text_encoder", dtype)
        parts.tokenizer = load_pretrained(CLIPTokenizer, source, "tokenizer")
    return parts


def ddim_step(x: Tensor, eps: Tensor, alpha_bar: float, alpha_bar_next: float) -> Tensor:
    """Move ``x`` from noise level ``ᾱ = alpha_bar`` to ``alpha_bar_next`` along the η = 0 DDIM path.

    Song et al. 2021, eq. 12: ``x' = √ᾱ' x̂_0 + √(1 − ᾱ') ε̂`` with ``x̂_0 = (x − √(1 − ᾱ) ε̂) / √ᾱ``.
    The same update samples (ᾱ' > ᾱ) and inverts (ᾱ' < ᾱ). Shapes: ``x, eps`` ``(N, c, h, w)``.
    """
    x_0 = (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)  # predicted clean latent
    return math.sqrt(alpha_bar_next) * x_0 + math.sqrt(1 - alpha_bar_next) * eps


def encode_prompt(text_encoder: nn.Module, tokenizer, prompt: str) -> Tensor:
    """A caption to the UNet's cross-attention input ``(1, L, D)``, padded to the tokenizer's length as
    Stable Diffusion pipelines do (the UNet was trained on padded sequences)."""
    ids = tokenizer(
        prompt,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids  # (1, L)
    with torch.no_grad():
        return text_encoder(ids.to(next(text_encoder.parameters()).device))[0]  # (1, L, D)


class DDIMInversionCodec(Codec):
    """Frame latent = the DDIM-inverted initial noise of a pretrained image diffusion model.

    ``encode``: VAE posterior mean (scaled) -> ``steps`` inversion steps from ᾱ ≈ 1 to the noisiest
    timestep -> noise latent. ``decode``: ``steps`` DDIM sampling steps back -> VAE decode -> [0, 1].
    Deterministic; exact round trip only as ``steps`` grows (see the module docstring). Unlike the
    diffusers sampler, ``x̂_0`` is never clipped or thresholded: clipping would break invertibility.

    Args:
        source: a pipeline folder or hub id (``vae/ unet/ scheduler/`` and, for a text-conditioned
            UNet, ``text_encoder/ tokenizer/``), or ``DiffusionParts`` already built.
        steps: DDIM steps S, spaced by the scheduler's ``timestep_spacing``.
        guidance_scale: classifier-free guidance ``w``: ε̂ = ε(∅) + w (ε(c) − ε(∅)); 1 = none.
        prompt: the fixed caption every frame is inverted with (conditional UNets only).
        prompt_embeds: ``(1, L, D)`` its embedding, instead of running the text encoder.
        negative_prompt_embeds: ``(1, L, D)`` the unconditional embedding for guidance (default: ``""``).
        chunk: frames per network call.
        dtype: weights' dtype; the DDIM arithmetic runs in at least float32 whatever it is.
    """

    name = "ddim_inversion"

    def __init__(
        self,
        source: str | Path | DiffusionParts,
        steps: int = 50,
        guidance_scale: float = 1.0,
        prompt: str = "",
        prompt_embeds: Tensor | None = None,
        negative_prompt_embeds: Tensor | None = None,
        chunk: int = 16,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        with needs_extra("diffusers", "diffusers", "codec ddim_inversion"):
            from diffusers import DDIMScheduler, UNet2DConditionModel

        if steps < 1:
            raise ValueError(f"steps must be a positive number of DDIM steps, got {steps}")
        parts = source if isinstance(source, DiffusionParts) else load_diffusion_parts(source, dtype)
        self.source = str(source) if not isinstance(source, DiffusionParts) else "<DiffusionParts instance>"
        self.vae_codec = DiffusersVAECodec(parts.vae, chunk=chunk, dtype=dtype)
        self.unet = cast(parts.unet, dtype).requires_grad_(False).eval()
        self.conditional = isinstance(self.unet, UNet2DConditionModel)
        self.chunk, self.guidance_scale = chunk, float(guidance_scale)
        self._check_unet()

        scheduler = DDIMScheduler.from_config(parts.scheduler.config)
        scheduler.set_timesteps(steps)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(f"unsupported scheduler prediction_type {self.prediction_type!r}")
        # τ_1 > … > τ_S and their ᾱ, then the clean end ᾱ_{S+1}: plain floats, so casting the module
        # (e.g. .half()) cannot round them.
        self.timesteps = [int(t) for t in scheduler.timesteps]
        alphas = scheduler.alphas_cumprod[scheduler.timesteps].tolist() + [
            float(scheduler.final_alpha_cumprod)
        ]
        if min(alphas) <= 0:
            raise ConfigError("a timestep has ᾱ = 0 (zero-SNR schedule): DDIM inversion cannot divide by √ᾱ")
        self.alpha_bars = alphas

        if self.conditional:
            self.register_buffer(
                "prompt_embeds", self._embedding(parts, prompt, prompt_embeds, "prompt_embeds")
            )
            if self.guidance_scale != 1:
                uncond = self._embedding(parts, "", negative_prompt_embeds, "negative_prompt_embeds")
                self.register_buffer("negative_prompt_embeds", uncond)
        elif prompt_embeds is not None or negative_prompt_embeds is not None or self.guidance_scale != 1:
            raise ValueError("an unconditional UNet2DModel takes no prompt embeddings and no guidance_scale")

    def _check_unet(self) -> None:
        cfg, latent_channels = self.unet.config, self.vae_codec.vae.config.latent_channels
        if cfg.in_channels != latent_channels or cfg.out_channels != latent_channels:
            raise ConfigError(
                f"the UNet maps {cfg.in_channels} -> {cfg.out_channels} channels but the VAE latents have "
                f"{latent_channels}: only ε/v/x_0-predicting image UNets on the VAE's latents are supported"
            )
        if self.conditional and getattr(cfg, "addition_embed_type", None) is not None:
            raise ConfigError(
                f"UNets with added conditions ({cfg.addition_embed_type!r}, e.g. SDXL) are not supported"
            )

    def _embedding(self, parts: DiffusionParts, prompt: str, given: Tensor | None, what: str) -> Tensor:
        """``given`` checked, or ``prompt`` run through the pipeline's text encoder: ``(1, L, D)``."""
        if given is None:
            if parts.text_encoder is None or parts.tokenizer is None:
                raise ValueError(f"a conditional UNet needs {what} (1, L, D) or a text encoder and tokenizer")
            given = encode_prompt(parts.text_encoder, parts.tokenizer, prompt)
        dim = self.unet.config.cross_attention_dim
        if given.ndim != 3 or given.shape[0] != 1 or given.shape[2] != dim:
            raise ValueError(f"{what} must have shape (1, L, {dim}), got {tuple(given.shape)}")
        return given.detach().to(next(self.unet.parameters()).dtype).clone()

    @property
    def scaling(self) -> float:
        """1: the inverted noise is already ~ N(0, I) for a well-trained model."""
        return 1.0

    def latent_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        return self.vae_codec.latent_shape(channels, height, width)

    def fingerprint(self) -> str:
        """The base fingerprint (VAE, UNet, prompt embeddings) plus the sampler's settings."""
        extra = f"{self.timesteps}:{self.alpha_bars}:{self.prediction_type}:w={self.guidance_scale!r}"
        return f"{super().fingerprint()}:shift={self.vae_codec.shift!r}:{extra}"

    def train(self, mode: bool = True) -> DDIMInversionCodec:
        return super().train(False)  # frozen

    def predict_noise(self, x: Tensor, i: int) -> Tensor:
        """``ε̂ = ε_θ(x, τ_i)`` (guided), converted from the model's prediction type; ``(N, c, h, w)``."""
        param = next(self.unet.parameters())
        t = torch.tensor(self.timesteps[i], device=x.device)
        x_in = x.to(param.dtype)
        if not self.conditional:
            out = self.unet(x_in, t).sample
        elif self.guidance_scale == 1:
            out = self.unet(x_in, t, encoder_hidden_states=self.prompt_embeds.expand(len(x), -1, -1)).sample
        else:
            emb = torch.cat([self.negative_prompt_embeds, self.prompt_embeds]).repeat_interleave(len(x), 0)
            out_uncond, out_cond = self.unet(
                torch.cat([x_in, x_in]), t, encoder_hidden_states=emb
            ).sample.chunk(2)
            out = out_uncond + self.guidance_scale * (out_cond - out_uncond)
        out = out.to(x.dtype)  # (N, c, h, w)
        a = self.alpha_bars[i]  # the level the model is told x is at
        if self.prediction_type == "v_prediction":
            return math.sqrt(a) * out + math.sqrt(1 - a) * x
        if self.prediction_type == "sample":
            return (x - math.sqrt(a) * out) / math.sqrt(1 - a)
        return out

    @torch.no_grad()
    def invert(self, z_0: Tensor) -> Tensor:
        """Scaled VAE latents ``(N, c, h, w)`` -> the DDIM noise that ``sample`` maps back to them."""
        x = z_0.to(torch.promote_types(z_0.dtype, torch.float32))
        for i in reversed(range(len(self.timesteps))):
            # Inversion step: ε̂ at the current (less noisy) x, labelled with the next timestep τ_i.
            x = ddim_step(x, self.predict_noise(x, i), self.alpha_bars[i + 1], self.alpha_bars[i])
        return x.to(z_0.dtype)

    @torch.no_grad()
    def sample(self, noise: Tensor) -> Tensor:
        """DDIM noise ``(N, c, h, w)`` -> scaled VAE latents, η = 0 (deterministic)."""
        x = noise.to(torch.promote_types(noise.dtype, torch.float32))
        for i in range(len(self.timesteps)):
            # Sampling step from τ_i to τ_{i+1} (the clean end after τ_S).
            x = ddim_step(x, self.predict_noise(x, i), self.alpha_bars[i], self.alpha_bars[i + 1])
        return x.to(noise.dtype)

    def encode(self, video: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` in [0, 1] -> noise latents ``(B, T, c, h, w)``, frames in chunks."""
        check_video(video)
        self.latent_shape(*video.shape[2:])
        frames = video.flatten(0, 1)  # (B*T, C, H, W)
        z = torch.cat([self.invert(self.vae_codec.encode_frames(c)) for c in frames.split(self.chunk)])
        return z.unflatten(0, video.shape[:2])

    def decode(self, latents: Tensor) -> Tensor:
        """Noise latents ``(B, T, c, h, w)`` -> ``(B, T, C, H, W)`` in [0, 1], frames in chunks."""
        check_latents(latents, self.vae_codec.vae.config.latent_channels)
        noise = latents.flatten(0, 1)  # (B*T, c, h, w)
        x = torch.cat([self.vae_codec.decode_frames(self.sample(c)) for c in noise.split(self.chunk)])
        return x.unflatten(0, latents.shape[:2])
