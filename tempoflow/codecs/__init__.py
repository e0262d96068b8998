"""Latent spaces. ``make_codec(name)`` builds one by the name in a method's config."""

from tempoflow.codecs.pixel import Codec, PixelCodec
from tempoflow.errors import ConfigError

CODECS = ("pixel", "autoencoder", "video_wae", "diffusers_vae", "ddim_inversion")


def make_codec(name: str, path: str = "") -> Codec:
    """Build the codec ``name`` (one of ``CODECS``); ``path`` is its source where it needs one.

    ``pixel``: none. ``autoencoder``: a trained autoencoder run. ``video_wae``: a trained video WAE run. ``diffusers_vae``: a diffusers VAE
    folder or hub id (a full pipeline folder's ``vae/`` is found too). ``ddim_inversion``: a diffusers
    image pipeline folder or hub id (``vae/ unet/ scheduler/``).
    """
    if name == "pixel":
        return PixelCodec()
    if name == "autoencoder":
        from tempoflow.codecs.autoencoder import AutoencoderCodec

        return AutoencoderCodec(path)
    if name == "video_wae":
        from tempoflow.codecs.video_wae import VideoWAECodec

        return VideoWAECodec(path)
    if name == "diffusers_vae":
        from tempoflow.codecs.diffusers_vae import DiffusersVAECodec, vae_subfolder

        return DiffusersVAECodec(path, subfolder=vae_subfolder(path))
    if name == "ddim_inversion":
        from tempoflow.codecs.ddim_inversion import DDIMInversionCodec

        return DDIMInversionCodec(path)
    raise ConfigError(f"unknown codec '{name}' (valid: {', '.join(CODECS)})")


__all__ = ["CODECS", "Codec", "PixelCodec", "make_codec"]
