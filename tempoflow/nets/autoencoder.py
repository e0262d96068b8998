"""Convolutional frame autoencoder (the KL-regularised autoencoder of latent diffusion, small).

Rombach et al. 2022 §3 / appendix: a ResNet encoder downsamples by 2 per level to a latent grid
with ``z_channels`` channels and outputs a diagonal Gaussian posterior; the decoder mirrors it.
"""

from __future__ import annotations

from torch import Tensor, nn

from tempoflow.config import AutoencoderConfig


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
