"""Latent spaces: a ``Codec`` maps videos to latents and back. ``tempoflow.runs.build_codec`` builds one
by the name in a method's config (``CODECS``); codecs of trained runs take the loaded networks."""

from tempoflow.codecs.pixel import Codec, PixelCodec

CODECS = ("pixel", "autoencoder", "video_wae", "diffusers_vae", "ddim_inversion")

__all__ = ["CODECS", "Codec", "PixelCodec"]
