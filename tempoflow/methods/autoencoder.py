"""Method ``autoencoder``: a KL-regularised frame autoencoder, the latent space other methods use.

Training (Kingma & Welling 2014; Rombach et al. 2022): for frames x in [-1, 1],
    (μ, log σ²) = E(x);  z = μ + σ ε;  x̂ = D(z)
    loss = ‖x̂ − x‖₁ (and/or ‖x̂ − x‖²) + β KL(N(μ, σ²) ‖ N(0, I))
A running estimate of the std of μ is kept as a buffer, so the codec can scale latents to unit
variance with the factor stored in the checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tempoflow.config import ExperimentConfig
from tempoflow.errors import ConfigError
from tempoflow.methods.base import Method, Samples, randn
from tempoflow.nets.autoencoder import Decoder, Encoder
from tempoflow.text import TextEncoder


class FrameAutoencoder(Method):
    """Encodes every frame of ``(B, T, C, H, W)`` videos independently; captions are ignored."""

    name = "autoencoder"
    task = "reconstruction"

    def __init__(self, cfg: ExperimentConfig, video_shape: tuple[int, int, int, int], text: TextEncoder | None):
        super().__init__()
        self.cfg = cfg.autoencoder
        self.num_frames, channels, height, width = video_shape
        factor = 2 ** (len(self.cfg.multipliers) - 1)
        if height % factor or width % factor:
            raise ConfigError(f"frames of {height}x{width} do not divide by the autoencoder's factor {factor}")
        self.latent_shape = (self.cfg.z_channels, height // factor, width // factor)
        self.encoder = Encoder(self.cfg, channels)
        self.decoder = Decoder(self.cfg, channels)
        self.register_buffer("latent_std", torch.ones(()))  # running std of μ (for codec scaling)

    def encode_frames(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, C, H, W)`` in [0, 1] -> posterior mean and log-variance ``(N, *latent_shape)``."""
        return self.encoder(frames * 2 - 1)

    def decode_frames(self, z: Tensor) -> Tensor:
        """``(N, *latent_shape)`` -> ``(N, C, H, W)`` in [0, 1] (clamped)."""
        return ((self.decoder(z) + 1) / 2).clamp(0, 1)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        video = batch["video"]  # (B, T, C, H, W) in [0, 1]
        x = video.flatten(0, 1) * 2 - 1  # (N, C, H, W) in [-1, 1]
        mean, logvar = self.encoder(x)  # (N, z, h, w) each
        z = mean + (0.5 * logvar).exp() * randn(mean.shape, generator, mean)  # reparameterisation
        recon = self.decoder(z)  # (N, C, H, W)
        error = recon.float() - x.float()
        l1, l2 = error.abs().mean(), error.square().mean()
        rec = {"l1": l1, "l2": l2, "l1+l2": l1 + l2}[self.cfg.reconstruction]
        kl = 0.5 * (mean.float().square() + logvar.float().exp() - 1 - logvar.float()).sum((1, 2, 3)).mean()
        if self.training:
            with torch.no_grad():  # running latent std: no host sync, a buffer update on device
                m = self.cfg.scale_momentum
                self.latent_std.mul_(m).add_((1 - m) * mean.detach().float().std())
        return {"loss": rec + self.cfg.kl_weight * kl, "l1": l1.detach(), "l2": l2.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def reconstruct(self, videos: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` -> its reconstruction through the posterior mean, same shape."""
        B, T = videos.shape[:2]
        mean, _ = self.encode_frames(videos.flatten(0, 1))
        return self.decode_frames(mean).unflatten(0, (B, T))

    def sample(self, *args, **kwargs) -> Samples:
        raise NotImplementedError("an autoencoder does not generate: use reconstruct(videos)")
