"""Convolutional frame autoencoder (the KL-regularised autoencoder of latent diffusion, small).

Rombach et al. 2022 §3 / appendix: a ResNet encoder downsamples by 2 per level to a latent grid
with ``z_channels`` channels and outputs a diagonal Gaussian posterior; the decoder mirrors it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from tempoflow.configio import require

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
    # "kl": stochastic encoder + β KL (above). "wae": deterministic encoder, wae_weight × a divergence
    # between the batch's latents and N(0, I) (Tolstikhin et al. 2018; seed 002 appendix A).
    regulariser: str = "kl"
    divergence: str = "feature_matching"  # WAE divergence: see WAE_DIVERGENCES
    wae_weight: float = 0.5  # λ_z / λ_pixel of seed 002 appendix C.3.2 (5 / 10)
    disc_weight: float = 0.0  # λ_f of the patch-discriminator feature matching; 0 = no discriminator
    disc_width: int = 32  # channels of the discriminator's first layer (doubling per layer)
    disc_layers: int = 3  # its stride-2 layers: patches of 2^layers pixels per logit (pix2pix default 3)
    latent_disc_width: int = 256  # hidden width of the latent discriminator D_z (feature_matching)

    def __post_init__(self) -> None:
        require(self.width >= 4 and len(self.multipliers) >= 1, "autoencoder.width >= 4 and >= 1 level")
        require(self.z_channels >= 1, f"autoencoder.z_channels must be >= 1, got {self.z_channels}")
        require(self.kl_weight >= 0, f"autoencoder.kl_weight must be >= 0, got {self.kl_weight}")
        require(self.reconstruction in RECONSTRUCTION_LOSSES,
                 f"autoencoder.reconstruction must be one of {RECONSTRUCTION_LOSSES}, got {self.reconstruction!r}")
        require(self.regulariser in ("kl", "wae"),
                 f"autoencoder.regulariser must be 'kl' or 'wae', got {self.regulariser!r}")
        check_wae_settings("autoencoder", self.divergence, self.disc_width, self.disc_layers, self.latent_disc_width,
                   {"wae_weight": self.wae_weight, "disc_weight": self.disc_weight})


# How a WAE measures the distance from the aggregate posterior of a batch's latents to N(0, I):
# "feature_matching" — the paper's latent feature matching (seed 002 eqs. A.3–A.5) through a latent
# discriminator D_z; "mmd" — unbiased MMD² with inverse-multiquadratic kernels (WAE-MMD).
WAE_DIVERGENCES = ("feature_matching", "mmd")


def check_wae_settings(section: str, divergence: str, disc_width: int, disc_layers: int, latent_disc_width: int,
               weights: dict[str, float]) -> None:
    """Validation shared by the two WAE configs (frame autoencoder and video WAE)."""
    require(divergence in WAE_DIVERGENCES,
             f"{section}.divergence must be one of {WAE_DIVERGENCES}, got {divergence!r}")
    require(disc_width >= 4, f"{section}.disc_width must be >= 4, got {disc_width}")
    require(disc_layers >= 1, f"{section}.disc_layers must be >= 1, got {disc_layers}")
    require(latent_disc_width >= 1, f"{section}.latent_disc_width must be >= 1, got {latent_disc_width}")
    for name, value in weights.items():
        require(value >= 0, f"{section}.{name} must be >= 0, got {value}")


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of >= 4 channels: per-sample statistics, so results never depend
    on the batch (codecs chunk batches freely)."""
    return nn.GroupNorm(min(32, channels // 4) or 1, channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip (1x1 conv when the width changes)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            group_norm(c_in),
            nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            group_norm(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    """Frames ``(N, C, H, W)`` in [-1, 1] -> posterior ``mean, logvar`` each ``(N, z, H/2^L, W/2^L)``."""

    def __init__(self, cfg: AutoencoderConfig, channels: int):
        super().__init__()
        widths = [cfg.width * m for m in cfg.multipliers]
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1)]
        c = widths[0]
        for i, w in enumerate(widths):
            layers.append(ResBlock(c, w))
            c = w
            if i < len(widths) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # downsample x2
        layers += [ResBlock(c, c), group_norm(c), nn.SiLU(), nn.Conv2d(c, 2 * cfg.z_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """Latents ``(N, z, h, w)`` -> frames ``(N, C, h 2^L, w 2^L)`` in roughly [-1, 1]."""

    def __init__(self, cfg: AutoencoderConfig, channels: int):
        super().__init__()
        widths = [cfg.width * m for m in cfg.multipliers][::-1]
        c = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(cfg.z_channels, c, 3, padding=1), ResBlock(c, c)]
        for i, w in enumerate(widths):
            layers.append(ResBlock(c, w))
            c = w
            if i < len(widths) - 1:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        layers += [group_norm(c), nn.SiLU(), nn.Conv2d(c, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
