"""Method ``autoencoder``: a frame autoencoder, the latent space other methods use.

``regulariser = "kl"`` (default; Kingma & Welling 2014; Rombach et al. 2022): for frames x in [-1, 1],
    (μ, log σ²) = E(x);  z = μ + σ ε;  x̂ = D(z)
    loss = rec(x̂, x) + β KL(N(μ, σ²) ‖ N(0, I))
``regulariser = "wae"`` (Wasserstein autoencoder, Tolstikhin et al. 2018; seed 002 eq. A.1):
    z = μ (deterministic encoder);  x̂ = D(z)
    loss = rec(x̂, x) + λ_z 𝒟(q(z), N(0, I))
with 𝒟 computed over the frames of the batch as flattened latent vectors: the latent feature
matching of seed 002 eqs. A.3–A.5 (a latent discriminator D_z trained in the same loss) or MMD².
With ``disc_weight`` = λ_f > 0 either variant adds λ_f × the L1 feature matching of a 2-D patch
discriminator between frames and reconstructions (eq. A.2) plus that discriminator's own loss; see
``tempoflow.nets.discriminator`` for how one optimizer trains both without mixing their gradients.

A running estimate of the std of μ is kept as a buffer, so the codec can scale latents to unit
variance with the factor stored in the checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tempoflow.errors import ConfigError
from tempoflow.methods.base import Method, Samples, randn
from tempoflow.nets.autoencoder import AutoencoderConfig, Decoder, Encoder
from tempoflow.nets.discriminator import (
    LatentDiscriminator,
    PatchDiscriminator,
    adversarial_terms,
    latent_divergence,
)


class FrameAutoencoder(Method):
    """Encodes every frame of ``(B, T, C, H, W)`` videos independently; captions are ignored."""

    name = "autoencoder"
    task = "reconstruction"

    def __init__(self, cfg: AutoencoderConfig, video_shape: tuple[int, int, int, int], *, fields: bool = False):
        super().__init__()
        self.cfg = c = cfg
        self.num_frames, channels, height, width = video_shape
        factor = 2 ** (len(c.multipliers) - 1)
        if height % factor or width % factor:
            raise ConfigError(
                f"frames of {height}x{width} do not divide by the autoencoder's factor {factor}"
            )
        self.latent_shape = (c.z_channels, height // factor, width // factor)
        self.encoder = Encoder(c, channels)
        self.decoder = Decoder(c, channels)
        self.register_buffer("latent_std", torch.ones(()))  # running std of μ (for codec scaling)
        # Physics fields (DESIGN §1) are O(1) and signed: they enter as they are and are never clamped;
        # video in [0, 1] is mapped to [-1, 1] and back.
        self.fields = fields
        # Discriminators exist only when used, so KL checkpoints keep their exact set of weights.
        self.frame_disc = None
        if c.disc_weight > 0:
            if min(height, width) < 2**c.disc_layers:
                raise ConfigError(
                    f"frames of {height}x{width} are smaller than the discriminator's patch grid "
                    f"(2^autoencoder.disc_layers = {2**c.disc_layers})"
                )
            self.frame_disc = PatchDiscriminator(channels, c.disc_width, c.disc_layers, (height, width))
        self.latent_disc = None
        if c.regulariser == "wae" and c.divergence == "feature_matching":
            self.latent_disc = LatentDiscriminator(math.prod(self.latent_shape), c.latent_disc_width)

    def encode_frames(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, C, H, W)`` in [0, 1] -> posterior mean and log-variance ``(N, *latent_shape)``.

        A WAE's encoder is deterministic: its latent is the mean (its log-variance is not trained).
        """
        return self.encoder(self.to_network(frames))

    def to_network(self, frames: Tensor) -> Tensor:
        return frames if self.fields else frames * 2 - 1

    def decode_frames(self, z: Tensor) -> Tensor:
        """``(N, *latent_shape)`` -> ``(N, C, H, W)`` in [0, 1] (clamped), or fields as they are."""
        out = self.decoder(z)
        return out if self.fields else ((out + 1) / 2).clamp(0, 1)

    def players(self) -> list[nn.Module]:
        """The discriminators, each clipped as its own gradient group by the trainer."""
        return [d for d in (self.frame_disc, self.latent_disc) if d is not None]

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        video = batch["video"]  # (B, T, C, H, W) in [0, 1]
        x = self.to_network(video.flatten(0, 1))  # (N, C, H, W) in [-1, 1] (video) or fields
        mean, logvar = self.encoder(x)  # (N, z, h, w) each
        if self.cfg.regulariser == "kl":
            z = mean + (0.5 * logvar).exp() * randn(mean.shape, generator, mean)  # reparameterisation
        else:
            z = mean  # WAE: deterministic encoder
        recon = self.decoder(z)  # (N, C, H, W)
        error = recon.float() - x.float()
        l1, l2 = error.abs().mean(), error.square().mean()
        rec = {"l1": l1, "l2": l2, "l1+l2": l1 + l2}[self.cfg.reconstruction]
        if self.training:
            with torch.no_grad():  # running latent std: no host sync, a buffer update on device
                m = self.cfg.scale_momentum
                self.latent_std.mul_(m).add_((1 - m) * mean.detach().float().std())
        if self.cfg.regulariser == "kl":
            kl = (
                0.5
                * (mean.float().square() + logvar.float().exp() - 1 - logvar.float()).sum((1, 2, 3)).mean()
            )
            total = rec + self.cfg.kl_weight * kl
            out = {"l1": l1.detach(), "l2": l2.detach(), "kl": kl.detach()}
        else:
            flat = z.flatten(1)  # (N, z h w): the aggregate posterior's samples
            prior = randn(flat.shape, generator, flat)  # (N, z h w) ~ N(0, I)
            div = latent_divergence(flat, prior, self.cfg.divergence, self.latent_disc)
            total = rec + self.cfg.wae_weight * div.generator_loss + div.disc_loss
            out = {
                "l1": l1.detach(),
                "l2": l2.detach(),
                "divergence": div.generator_loss.detach(),
                "latent_disc": div.disc_loss.detach(),
            }
        if self.frame_disc is not None:
            adv = adversarial_terms(self.frame_disc, x, recon, paired=True)
            total = total + self.cfg.disc_weight * adv.generator_loss + adv.disc_loss
            out.update(feature_matching=adv.generator_loss.detach(), disc=adv.disc_loss.detach())
        return {"loss": total, **out}

    @torch.no_grad()
    def reconstruct(self, videos: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` -> its reconstruction through the posterior mean, same shape."""
        B, T = videos.shape[:2]
        mean, _ = self.encode_frames(videos.flatten(0, 1))
        return self.decode_frames(mean).unflatten(0, (B, T))

    def sample(self, *args, **kwargs) -> Samples:
        raise NotImplementedError("an autoencoder does not generate: use reconstruct(videos)")
