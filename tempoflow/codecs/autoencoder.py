"""The latent space of a trained ``autoencoder`` run: frame-wise, scaled to unit variance."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from tempoflow.codecs.pixel import Codec
from tempoflow.errors import ConfigError


class AutoencoderCodec(Codec):
    """Encodes each frame to the posterior mean of a trained frame autoencoder, times ``scaling``.

    ``scaling = 1 / latent_std`` comes from the autoencoder's checkpoint (its running estimate of
    the latent std), so latents have roughly unit variance as flow matching's noise does.
    Frames go through the networks in chunks of ``chunk`` so long videos fit in memory.
    """

    name = "autoencoder"

    def __init__(self, path: str | Path | torch.nn.Module, chunk: int = 256):
        """``path``: a trained ``autoencoder`` run or checkpoint folder, or a built ``FrameAutoencoder``."""
        super().__init__()
        from tempoflow.train.run import load_method  # runs import methods, which import codecs

        if isinstance(path, torch.nn.Module):
            ae, self.source = path, f"<{type(path).__name__} instance>"
        else:
            if not path:
                raise ConfigError("flow.codec=autoencoder needs flow.codec_path (a trained autoencoder run)")
            ae, cfg, ckpt = load_method(path, device="cpu")
            if cfg.method != "autoencoder":
                raise ConfigError(f"flow.codec_path {path} is a '{cfg.method}' run, not an autoencoder")
            self.source = str(ckpt.path)
        self.ae = ae.requires_grad_(False).eval()
        self.chunk = chunk

    @property
    def scaling(self) -> float:
        """1 / (the latent std measured while the autoencoder trained)."""
        return float(1.0 / self.ae.latent_std.clamp_min(1e-6))

    def latent_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        return self.ae.latent_shape

    def train(self, mode: bool = True) -> AutoencoderCodec:
        return super().train(False)  # frozen: batch statistics and dropout never change

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` in [0, 1] -> ``(B, T, z, h, w)``."""
        if video.ndim != 5:
            raise ValueError(f"expected a video batch (B, T, C, H, W), got shape {tuple(video.shape)}")
        B, T = video.shape[:2]
        frames = video.flatten(0, 1)
        out = torch.cat([self.ae.encode_frames(c)[0] for c in frames.split(self.chunk)])
        return (out / self.ae.latent_std.clamp_min(1e-6)).unflatten(0, (B, T))  # unit variance

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """``(B, T, z, h, w)`` -> ``(B, T, C, H, W)`` in [0, 1]."""
        B, T = latents.shape[:2]
        z = latents.flatten(0, 1) * self.ae.latent_std.clamp_min(1e-6)
        out = torch.cat([self.ae.decode_frames(c) for c in z.split(self.chunk)])
        return out.unflatten(0, (B, T))
