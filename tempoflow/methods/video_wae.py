"""Method ``video_wae``: the video Wasserstein autoencoder of seed 002 appendix A ("3DConv-Base").

A fixed-length clip v ``(T, C, H, W)`` maps to ONE latent vector z_v ∈ R^{d_z} (DESIGN §6). With
x = 2v − 1 and y = G(E_v(x)), one training step minimises (eqs. A.1–A.3, weights of C.3.2 / λ_pixel)

    λ_pixel ‖x − y‖₁ + λ_f ‖f_{D_v}(x) − f_{D_v}(y)‖₁ + λ_p ‖f_VGG(x) − f_VGG(y)‖²   (c(x, y), eq. A.2)
      + λ_z 𝒟(q(z_v), N(0, I_{d_z}))                                                 (eq. A.1)
      + L_{D_v} + L_{D_z}                                                             (eq. A.5)

where 𝒟 is the latent feature matching through D_z (eq. A.4, ``divergence = "feature_matching"``)
or MMD² (``"mmd"``), and the last line trains the two discriminators inside the same loss; they
reach disjoint parameters (``tempoflow.nets.discriminator``). The paper puts L_{D_v}, L_{D_z} inside
𝒟 (eq. A.3) but also removes the autoencoder–D_z min-max: here they train only the discriminators,
with unit weight. ``reconstruction`` can swap the pixel L1 for L2 or L1 + L2: on sparse clips
(shapes: 5% object pixels) L1's median is the empty background. The VGG term needs local weights
(``vgg_path``); it is loaded on the first training step only, so evaluation and the codec never
need the file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tempoflow.errors import ConfigError
from tempoflow.methods.base import Method, Samples, randn
from tempoflow.nets.discriminator import (
    LatentDiscriminator,
    PatchDiscriminator,
    adversarial_terms,
    latent_divergence,
)
from tempoflow.nets.video_autoencoder import (
    VGG_MIN_SIZE,
    VGGFeatures,
    VideoDecoder,
    VideoEncoder,
    VideoWAEConfig,
    load_vgg_features,
)


class VideoWAE(Method):
    """Encodes whole clips ``(B, T, C, H, W)`` (T fixed by the config) to ``(B, d_z)``; captions are ignored."""

    name = "video_wae"
    task = "reconstruction"

    def __init__(self, cfg: VideoWAEConfig, video_shape: tuple[int, int, int, int]):
        super().__init__()
        self.cfg = c = cfg
        self.video_shape = tuple(video_shape)
        frames, channels, height, width = video_shape
        factor = 2 ** len(c.multipliers)
        if height % factor or width % factor:
            raise ConfigError(
                f"frames of {height}x{width} do not divide by the video WAE's factor {factor} "
                f"(2^len(video_wae.multipliers))"
            )
        self.latent_shape = (c.d_z,)
        self.encoder = VideoEncoder(c, video_shape)
        self.decoder = VideoDecoder(c, channels, self.encoder.grid, self.encoder.strides)
        self.register_buffer("latent_std", torch.ones(()))  # running std of z (for codec scaling)
        self.video_disc = None
        if c.feature_weight > 0:
            if min(height, width) < 2**c.disc_layers:
                raise ConfigError(
                    f"frames of {height}x{width} are smaller than the discriminator's patch grid "
                    f"(2^video_wae.disc_layers = {2**c.disc_layers})"
                )
            self.video_disc = PatchDiscriminator(
                channels, c.disc_width, c.disc_layers, (frames, height, width)
            )
        self.latent_disc = None
        if c.divergence == "feature_matching" and c.divergence_weight > 0:
            self.latent_disc = LatentDiscriminator(c.d_z, c.latent_disc_width)
        if c.vgg_path and c.perceptual_weight > 0:
            if channels not in (1, 3):
                raise ConfigError(
                    f"video_wae.vgg_path: VGG needs 1 or 3 channels, these videos have {channels}"
                )
            if min(height, width) < VGG_MIN_SIZE:
                raise ConfigError(
                    f"video_wae.vgg_path: VGG needs frames of at least {VGG_MIN_SIZE} pixels, "
                    f"these are {height}x{width}"
                )
        # A tuple hides the VGG from nn.Module: not a parameter, not in checkpoints, not in the EMA copy.
        self._vgg: tuple[VGGFeatures, ...] = ()

    def _check_videos(self, videos: Tensor) -> None:
        if videos.ndim != 5 or tuple(videos.shape[1:]) != self.video_shape:
            raise ValueError(
                f"video_wae takes clips (B, {', '.join(map(str, self.video_shape))}) "
                f"(B, T, C, H, W), got shape {tuple(videos.shape)}"
            )

    def encode_videos(self, videos: Tensor) -> Tensor:
        """Clips ``(B, T, C, H, W)`` in [0, 1] -> latent vectors ``(B, d_z)`` (unscaled)."""
        self._check_videos(videos)
        return self.encoder(rearrange(videos, "b t c h w -> b c t h w") * 2 - 1)

    def decode_videos(self, z: Tensor) -> Tensor:
        """Latent vectors ``(B, d_z)`` -> clips ``(B, T, C, H, W)`` in [0, 1] (clamped)."""
        if z.ndim != 2 or z.shape[1] != self.cfg.d_z:
            raise ValueError(f"video_wae decodes latents (B, {self.cfg.d_z}), got shape {tuple(z.shape)}")
        y = self.decoder(z)  # (B, C, T, H, W) in about [-1, 1]
        return ((rearrange(y, "b c t h w -> b t c h w") + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, videos: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` -> ``G(E_v(videos))``, same shape, in [0, 1]."""
        return self.decode_videos(self.encode_videos(videos))

    def perceptual(self, x: Tensor, y: Tensor) -> Tensor:
        """Eq. (A.2)'s ``‖f_VGG(x) − f_VGG(y)‖²`` as a mean squared error per tapped layer, summed, over
        all frames of clips ``(B, C, T, H, W)`` in [-1, 1]; ``x`` carries no gradient."""
        if not self._vgg:
            self._vgg = (load_vgg_features(self.cfg.vgg_path),)
        vgg = self._vgg[0].to(device=y.device)
        frames = torch.cat([x.detach(), y])  # (2B, C, T, H, W): one VGG pass for both
        frames = (rearrange(frames, "n c t h w -> (n t) c h w") + 1) / 2  # (2BT, C, H, W) in [0, 1]
        if frames.shape[1] == 1:
            frames = frames.expand(-1, 3, -1, -1)  # grey to RGB
        total = y.new_zeros((), dtype=torch.float32)
        for f in vgg(frames):
            f_x, f_y = f.float().chunk(2)
            total = total + F.mse_loss(f_y, f_x)
        return total

    def players(self) -> list[nn.Module]:
        """The discriminators, each clipped as its own gradient group by the trainer."""
        return [d for d in (self.video_disc, self.latent_disc) if d is not None]

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        videos = batch["video"]  # (B, T, C, H, W) in [0, 1]
        self._check_videos(videos)
        c = self.cfg
        x = rearrange(videos, "b t c h w -> b c t h w") * 2 - 1  # (B, C, T, H, W) in [-1, 1]
        z = self.encoder(x)  # (B, d_z)
        y = self.decoder(z)  # (B, C, T, H, W)
        error = y.float() - x.float()
        l1, l2 = error.abs().mean(), error.square().mean()
        total = c.pixel_weight * {"l1": l1, "l2": l2, "l1+l2": l1 + l2}[c.reconstruction]
        out = {"l1": l1.detach(), "l2": l2.detach()}
        if self.training:
            with torch.no_grad():  # running latent std: no host sync, a buffer update on device
                self.latent_std.mul_(c.scale_momentum).add_((1 - c.scale_momentum) * z.detach().float().std())
        if self.video_disc is not None:  # D_v: feature matching for the autoencoder, BCE for itself
            adv = adversarial_terms(self.video_disc, x, y, paired=True)
            total = total + c.feature_weight * adv.generator_loss + adv.disc_loss
            out.update(feature_matching=adv.generator_loss.detach(), video_disc=adv.disc_loss.detach())
        if c.divergence_weight > 0:  # λ_z 𝒟(q(z_v), p(z_v)) against draws of the prior N(0, I)
            prior = randn(z.shape, generator, z)  # (B, d_z)
            div = latent_divergence(z, prior, c.divergence, self.latent_disc)
            total = total + c.divergence_weight * div.generator_loss + div.disc_loss
            out.update(divergence=div.generator_loss.detach(), latent_disc=div.disc_loss.detach())
        if c.vgg_path and c.perceptual_weight > 0:
            perceptual = self.perceptual(x, y)
            total = total + c.perceptual_weight * perceptual
            out["perceptual"] = perceptual.detach()
        return {"loss": total, **out}

    def sample(self, *args, **kwargs) -> Samples:
        raise NotImplementedError("a video autoencoder does not generate: use reconstruct(videos)")
