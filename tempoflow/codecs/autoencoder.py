"""The latent space of a trained ``autoencoder`` run: frame-wise, scaled to unit variance."""

from __future__ import annotations

import torch
from torch import Tensor

from tempoflow.codecs.pixel import Codec, latent_unit


class AutoencoderCodec(Codec):
    """Encodes each frame to the posterior mean of a trained frame autoencoder, times ``scaling``.

    ``scaling = 1 / latent_std`` comes from the autoencoder's checkpoint (its running estimate of
    the latent std), so latents have roughly unit variance as flow matching's noise does.
    Frames go through the networks in chunks of ``chunk`` so long videos fit in memory.
    """

    name = "autoencoder"

    def __init__(self, ae: torch.nn.Module, source: str = "", chunk: int = 256):
        """``ae``: a trained ``FrameAutoencoder`` (``tempoflow.runs.build_codec`` loads one from its run);
        ``source``: where it came from, for messages."""
        super().__init__()
        self.source = source or f"<{type(ae).__name__} instance>"
        self.ae = ae.requires_grad_(False).eval()
        self.chunk = chunk

    @property
    def scaling(self) -> float:
        """1 / (the latent std measured while the autoencoder trained)."""
        return float(1.0 / latent_unit(self.ae))

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
        return (out / latent_unit(self.ae)).unflatten(0, (B, T))  # unit variance

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """``(B, T, z, h, w)`` -> ``(B, T, C, H, W)`` in [0, 1]."""
        B, T = latents.shape[:2]
        z = latents.flatten(0, 1) * latent_unit(self.ae)
        out = torch.cat([self.ae.decode_frames(c) for c in z.split(self.chunk)])
        return out.unflatten(0, (B, T))
