"""The latent space of a trained ``video_wae`` run: a VIDEO codec, one vector per fixed-length chunk."""

from __future__ import annotations

import torch
from torch import Tensor

from tempoflow.codecs.pixel import Codec, latent_unit


class VideoWAECodec(Codec):
    """Encodes whole chunks of ``T_c`` frames (the clip length the video WAE trained on) to one latent
    vector ``z_v ∈ R^{d_z}`` each (seed 002 appendix A), times ``scaling``.

    Convention (DESIGN §1, ``(B, T', *latent_shape)``): a video of ``T = k T_c`` frames is cut into
    ``k`` consecutive chunks and encodes to ``(B, k, d_z)``; ``latent_shape`` is ``(d_z,)``. For the
    usual one-chunk clip that is ``(B, 1, d_z)``: take ``[:, 0]`` for the ``(B, d_z)`` vectors the
    ``align`` method consumes. ``decode`` inverts it, ``(B, k, d_z) -> (B, k T_c, C, H, W)``.

    ``scaling = 1 / latent_std`` comes from the checkpoint (the running std of the latents measured in
    training), so latents have roughly unit variance. Chunks go through the networks ``chunk`` at a
    time; the networks normalise per sample (GroupNorm), so the chunking does not change the result.
    """

    name = "video_wae"

    def __init__(self, wae: torch.nn.Module, source: str = "", chunk: int = 64):
        """``wae``: a trained ``VideoWAE`` (``tempoflow.runs.build_codec`` loads one from its run);
        ``source``: where it came from, for messages."""
        super().__init__()
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.wae = wae.requires_grad_(False).eval()
        self.chunk = chunk
        self.source = source or f"<{type(wae).__name__} instance>"
        self.clip_frames = wae.video_shape[0]

    @property
    def scaling(self) -> float:
        """1 / (the latent std measured while the video WAE trained)."""
        return float(1.0 / latent_unit(self.wae))

    def latent_shape(self, channels: int, height: int, width: int) -> tuple[int]:
        return self.wae.latent_shape

    def train(self, mode: bool = True) -> VideoWAECodec:
        return super().train(False)  # frozen

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """``(B, k T_c, C, H, W)`` in [0, 1] -> ``(B, k, d_z)``, unit variance."""
        if video.ndim != 5 or video.shape[1] % self.clip_frames:
            raise ValueError(
                f"expected videos (B, T, C, H, W) with T a multiple of the codec's "
                f"{self.clip_frames}-frame chunks, got shape {tuple(video.shape)}"
            )
        B, k = video.shape[0], video.shape[1] // self.clip_frames
        clips = video.unflatten(1, (k, self.clip_frames)).flatten(0, 1)  # (B k, T_c, C, H, W)
        z = torch.cat([self.wae.encode_videos(c) for c in clips.split(self.chunk)])  # (B k, d_z)
        return (z / latent_unit(self.wae)).unflatten(0, (B, k))

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """``(B, k, d_z)`` -> ``(B, k T_c, C, H, W)`` in [0, 1]."""
        if latents.ndim != 3:
            raise ValueError(f"expected latents (B, k, d_z), got shape {tuple(latents.shape)}")
        B, k = latents.shape[:2]
        z = latents.flatten(0, 1) * latent_unit(self.wae)  # (B k, d_z)
        clips = torch.cat([self.wae.decode_videos(c) for c in z.split(self.chunk)])  # (B k, T_c, C, H, W)
        return clips.unflatten(0, (B, k)).flatten(1, 2)
