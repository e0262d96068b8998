"""Latent spaces. ``make_codec(name)`` builds one by the name in a method's config."""

from tempoflow.codecs.pixel import Codec, PixelCodec
from tempoflow.errors import ConfigError


def make_codec(name: str) -> Codec:
    if name == "pixel":
        return PixelCodec()
    raise ConfigError(f"unknown codec '{name}' (valid: pixel)")


__all__ = ["Codec", "PixelCodec", "make_codec"]
