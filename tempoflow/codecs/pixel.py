"""The identity latent space: frames as they are, rescaled to [-1, 1]."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

# A trained codec's running latent std is floored here before latents are divided by it: a collapsed
# estimate would otherwise blow the unit-variance scaling up.
MIN_LATENT_STD = 1e-6


def latent_unit(net: nn.Module) -> Tensor:
    """The std a trained network's latents are divided by for unit variance: its ``latent_std`` buffer
    (the running estimate kept while it trained), floored at ``MIN_LATENT_STD``. 0-dim."""
    return net.latent_std.clamp_min(MIN_LATENT_STD)


class Codec(nn.Module):
    """A latent space: ``encode`` videos ``(B, T, C, H, W)`` in [0, 1] to latents ``(B, T, *latent_shape)``.

    Codecs are frozen (no gradients reach them from a method's loss) and ``decode`` maps back to
    ``(B, T, C, H, W)`` in [0, 1]. ``scaling`` is the factor that brings latents to roughly unit
    variance; it is stored with the codec.
    """

    name: str = "codec"
    scaling: float = 1.0

    def latent_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """SHA-256 of the codec's name, scaling and every weight and buffer: what a latent cache is
        checked against (two codecs with equal fingerprints produce equal latents)."""
        h = hashlib.sha256(f"{self.name}:{float(self.scaling)!r}".encode())
        for key, value in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(str(tuple(value.shape)).encode() + str(value.dtype).encode())
            h.update(value.detach().cpu().contiguous().flatten().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def encode(self, video: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        raise NotImplementedError


class PixelCodec(Codec):
    """Identity up to the affine map [0, 1] -> [-1, 1] (times ``scaling``)."""

    name = "pixel"

    def __init__(self, scaling: float = 1.0):
        super().__init__()
        self.scaling = scaling

    def latent_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        return channels, height, width

    def encode(self, video: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` in [0, 1] -> same shape, roughly in [-1, 1]."""
        if video.ndim != 5:
            raise ValueError(f"expected a video batch (B, T, C, H, W), got shape {tuple(video.shape)}")
        return (video * 2 - 1) * self.scaling

    def decode(self, latents: Tensor) -> Tensor:
        """Inverse of ``encode``, clamped to [0, 1]."""
        return ((latents / self.scaling + 1) / 2).clamp(0, 1)
