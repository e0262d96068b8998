"""Latent spaces. ``make_codec(name)`` builds one by the name in a method's config."""

from tempoflow.codecs.pixel import Codec, PixelCodec
from tempoflow.errors import ConfigError


def make_codec(name: str, path: str = "") -> Codec:
    """``pixel`` or ``autoencoder`` (the trained run at ``path``)."""
    if name == "pixel":
        return PixelCodec()
    if name == "autoencoder":
        from tempoflow.codecs.autoencoder import AutoencoderCodec

        return AutoencoderCodec(path)
    raise ConfigError(f"unknown codec '{name}' (valid: pixel, autoencoder)")


__all__ = ["Codec", "PixelCodec", "make_codec"]
