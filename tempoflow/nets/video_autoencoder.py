"""3-D convolutional video autoencoder ("3DConv-Base", seed 002 appendix A, C.3.2) and VGG features.

The paper extends DCGAN's guidelines (Radford et al. 2016) to 3-D: stride-2 convolutions instead of
pooling in the encoder, transposed convolutions in the decoder, no attention and no residual
blocks, "although we added skip connections to improve its convergence" — here an identity skip
around one 3×3×3 convolution per level. A fixed-length clip ``(B, C, T, H, W)`` becomes ONE latent
vector ``(B, d_z)`` through a linear layer on the flattened last grid; the decoder mirrors it.
Two deviations, both for batch independence (the codec chunks batches, evaluation runs one video at
a time): GroupNorm instead of DCGAN's BatchNorm, and no tanh at the output (decoders here return
roughly [-1, 1] and callers clamp).

Every level halves height and width; time is halved only while the frame count is even, so a
16-frame clip through four levels goes 16 → 8 → 4 → 2 → 1 and a 4-frame one 4 → 2 → 1 → 1.

``VGGFeatures`` is the torchvision VGG16/VGG19 ``features`` stack written out (no torchvision
import), so a local torchvision state dict loads as it is; it feeds the optional perceptual term of
eq. (A.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from tempoflow.configio import require
from tempoflow.errors import CheckpointError
from tempoflow.nets.autoencoder import RECONSTRUCTION_LOSSES, check_wae_settings, group_norm
from tempoflow.weights import load_weights, read_state_dict

LEAK = 0.2  # LeakyReLU slope of DCGAN's discriminator/encoder


@dataclass(frozen=True)
class VideoWAEConfig:
    """Video WAE ``video_wae`` ("3DConv-Base", seed 002 appendix A and C.3.2): a 3-D conv encoder of a
    fixed-length clip to one latent vector of ``d_z`` numbers and its mirror decoder.

    Weights are the paper's λ's divided by λ_pixel (10, 10, 5 for pixel, feature, divergence); the
    perceptual term is a mean over VGG feature elements, not the paper's sum, so its λ_p does not carry over.
    """

    width: int = 32  # channels of the first level
    multipliers: tuple[int, ...] = (1, 2, 4, 8)  # one stride-2 level each (space always, time while even)
    d_z: int = 64  # latent vector size (3DConv-Base)
    pixel_weight: float = 1.0  # λ_pixel: pixel loss between clip and reconstruction
    # Pixel loss: the paper's "l1", or "l2" / "l1+l2" (L1 alone can settle on background only,
    # see autoencoder.reconstruction).
    reconstruction: str = "l1"
    feature_weight: float = 1.0  # λ_f: L1 feature matching through the 3-D discriminator; 0 = no D_v
    divergence_weight: float = 0.5  # λ_z: latent divergence to N(0, I)
    divergence: str = "feature_matching"  # see WAE_DIVERGENCES
    perceptual_weight: float = 0.1  # λ_p: VGG feature MSE, only when vgg_path is set
    vgg_path: str = ""  # local torchvision VGG16/VGG19 state dict (features.*); "" = no perceptual term
    disc_width: int = 32  # 3-D patch discriminator: first-layer channels, doubling per layer
    disc_layers: int = 3  # its stride-2 layers
    latent_disc_width: int = 256  # hidden width of D_z (the paper's D_z has 133K weights at d_z = 64)
    scale_momentum: float = 0.99  # running estimate of the latent std, for the codec's scaling

    def __post_init__(self) -> None:
        require(self.width >= 4 and len(self.multipliers) >= 1, "video_wae.width >= 4 and >= 1 level")
        require(all(m >= 1 for m in self.multipliers),
                 f"video_wae.multipliers must be >= 1, got {self.multipliers}")
        require(self.d_z >= 1, f"video_wae.d_z must be >= 1, got {self.d_z}")
        require(self.reconstruction in RECONSTRUCTION_LOSSES,
                 f"video_wae.reconstruction must be in {RECONSTRUCTION_LOSSES}, got {self.reconstruction!r}")
        require(0.0 <= self.scale_momentum < 1.0,
                 f"video_wae.scale_momentum must be in [0, 1), got {self.scale_momentum}")
        check_wae_settings("video_wae", self.divergence, self.disc_width, self.disc_layers, self.latent_disc_width,
                   {"pixel_weight": self.pixel_weight, "feature_weight": self.feature_weight,
                    "divergence_weight": self.divergence_weight, "perceptual_weight": self.perceptual_weight})


def temporal_strides(num_frames: int, levels: int) -> tuple[int, ...]:
    """Time stride (2 or 1) of each of ``levels`` downsampling levels: 2 while the frame count is even."""
    strides, t = [], num_frames
    for _ in range(levels):
        s = 2 if t % 2 == 0 else 1
        strides.append(s)
        t //= s
    return tuple(strides)


class SkipConv3d(nn.Module):
    """``x + conv(act(norm(x)))`` with a 3×3×3 convolution: the paper's added skip connection."""

    def __init__(self, channels: int, act: nn.Module):
        super().__init__()
        self.body = nn.Sequential(group_norm(channels), act, nn.Conv3d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _down(c_in: int, c_out: int, stride_t: int) -> nn.Conv3d:
    """Kernel (3, 4, 4), stride (s_t, 2, 2), padding 1: exactly halves H, W (even) and T when s_t = 2."""
    return nn.Conv3d(c_in, c_out, (3, 4, 4), stride=(stride_t, 2, 2), padding=1)


def _up(c_in: int, c_out: int, stride_t: int) -> nn.ConvTranspose3d:
    """The exact inverse sizes of :func:`_down`: (t−1)s_t − 2 + 3 + (s_t − 1) = s_t t, (h−1)2 − 2 + 4 = 2h."""
    return nn.ConvTranspose3d(
        c_in, c_out, (3, 4, 4), stride=(stride_t, 2, 2), padding=1, output_padding=(stride_t - 1, 0, 0)
    )


class VideoEncoder(nn.Module):
    """Clips ``(B, C, T, H, W)`` in [-1, 1] -> latent vectors ``(B, d_z)`` (deterministic: a WAE encoder).

    Attributes:
        grid: ``(channels, t, h, w)`` of the last convolutional level, flattened into the linear layer.
        strides: time stride of each level (see :func:`temporal_strides`).
    """

    def __init__(self, cfg: VideoWAEConfig, video_shape: tuple[int, int, int, int]):
        super().__init__()
        frames, channels, height, width = video_shape
        widths = [cfg.width * m for m in cfg.multipliers]
        self.strides = temporal_strides(frames, len(widths))
        layers: list[nn.Module] = [nn.Conv3d(channels, widths[0], 3, padding=1)]
        c = widths[0]
        for w, s in zip(widths, self.strides):
            layers += [_down(c, w, s), group_norm(w), nn.LeakyReLU(LEAK), SkipConv3d(w, nn.LeakyReLU(LEAK))]
            c = w
        self.net = nn.Sequential(*layers)
        factor = 2 ** len(widths)
        self.grid = (c, frames // math.prod(self.strides), height // factor, width // factor)
        self.to_z = nn.Linear(math.prod(self.grid), cfg.d_z)

    def forward(self, x: Tensor) -> Tensor:
        h = self.net(x)  # (B, c, t, h, w)
        return self.to_z(h.flatten(1))  # (B, d_z)


class VideoDecoder(nn.Module):
    """Latent vectors ``(B, d_z)`` -> clips ``(B, C, T, H, W)`` in roughly [-1, 1]; mirrors the encoder."""

    def __init__(
        self, cfg: VideoWAEConfig, channels: int, grid: tuple[int, int, int, int], strides: tuple[int, ...]
    ):
        super().__init__()
        self.grid = grid
        widths = [cfg.width * m for m in cfg.multipliers]
        self.from_z = nn.Linear(cfg.d_z, math.prod(grid))
        layers: list[nn.Module] = []
        c = widths[-1]
        for w, s in zip(widths[-2::-1] + widths[:1], strides[::-1]):  # widths of the levels, top down
            layers += [SkipConv3d(c, nn.ReLU()), _up(c, w, s), group_norm(w), nn.ReLU()]
            c = w
        layers.append(nn.Conv3d(c, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.from_z(z).unflatten(1, self.grid)  # (B, c, t, h, w)
        return self.net(h)  # (B, C, T, H, W)


# --------------------------------------------------------------------------------------------
# VGG features for the perceptual term of eq. (A.2).

# torchvision's `cfgs` "D" (VGG16) and "E" (VGG19): conv widths, "M" = 2×2 max pool.
VGG_LAYOUTS = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
    ),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_MIN_SIZE = 16  # four 2×2 pools before block 5


class VGGFeatures(nn.Module):
    """torchvision's ``vgg16().features`` / ``vgg19().features`` (same indices, up to block 5's last
    ReLU), tapped after block4_conv3 and block 5's last conv: the paper's VGG19 layers (block4_conv3,
    block5_conv4), and block5_conv3 for VGG16. Frozen, always in eval mode."""

    def __init__(self, variant: str = "vgg16"):
        super().__init__()
        if variant not in VGG_LAYOUTS:
            raise ValueError(f"unknown VGG variant {variant!r} (valid: {', '.join(VGG_LAYOUTS)})")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        layers: list[nn.Module] = []
        c, block, conv, taps = 3, 1, 0, []
        for item in VGG_LAYOUTS[variant]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                block, conv = block + 1, 0
                continue
            layers += [nn.Conv2d(c, item, 3, padding=1), nn.ReLU(inplace=True)]
            c, conv = item, conv + 1
            if (block, conv) == (4, 3):
                taps.append(len(layers) - 1)
        taps.append(len(layers) - 1)  # block 5's last ReLU
        self.features = nn.Sequential(*layers)
        self.taps = tuple(taps)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """RGB ``(N, 3, H, W)`` in [0, 1] (H, W >= 16) -> ``[(N, 512, H/8, W/8), (N, 512, H/16, W/16)]``."""
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[-2:]) < VGG_MIN_SIZE:
            raise ValueError(
                f"VGG takes RGB images (N, 3, H, W) with H, W >= {VGG_MIN_SIZE}, "
                f"got shape {tuple(images.shape)}"
            )
        x = (images - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def load_vgg_features(path: str | Path) -> VGGFeatures:
    """:class:`VGGFeatures` from a local torchvision VGG16 or VGG19 state dict (``features.*`` keys, as
    in ``vgg16-397923af.pth``; ``classifier.*`` ignored; bare ``"0.weight"`` keys of a saved
    ``features`` module accepted). The variant is read from the number of conv layers (13 or 16)."""
    path = Path(path)
    weights = {}
    for key, value in read_state_dict(path, "VGG").items():
        if key.startswith("classifier."):
            continue
        weights[key.removeprefix("features.")] = value
    convs = sum(1 for k, v in weights.items() if k.endswith(".weight") and v.ndim == 4)
    variant = {13: "vgg16", 16: "vgg19"}.get(convs)
    if variant is None:
        raise CheckpointError(
            f"VGG weights {path} hold {convs} conv layers: expected 13 (VGG16) or 16 (VGG19)"
        )
    model = VGGFeatures(variant)
    load_weights(model.features, weights, path)
    return model.eval()
