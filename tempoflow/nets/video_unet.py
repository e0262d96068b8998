"""A UNet velocity field for short videos: frames stacked on channels, caption and flow time by FiLM.

The ``flow`` method's convolutional alternative to the DiT (``flow.backbone: unet``), on the FiLM UNet
that ``lifting`` and ``ardm`` use (``tempoflow.nets.unet``): a fixed-length video ``(B, T, C, H, W)``
is read as one image with ``T · C`` channels, so every convolution sees all frames at once and motion
is learnt as a shift between channel groups. The conditioning vector is ``MLP(pooled caption) +
MLP(sincos(t))``; a dropped caption (classifier-free guidance) is replaced by a learned null vector.
Caption tokens are not used (no cross-attention). Same contract as the DiT:
``forward(x, t, tokens=None, mask=None, pooled=None, drop=None)``.

Why it exists: at the budgets of a laptop CPU, a convolutional network's locality makes one coherent
object per frame far sooner than patch tokens do (README, "Time to quality").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tempoflow.errors import ConfigError
from tempoflow.nets.embeddings import pooled_or_null
from tempoflow.nets.unet import UNet, UNetConfig


class StackedFramesUNet(nn.Module):
    """``v(x, t, caption)`` on videos of exactly ``num_frames`` frames.

    Args:
        cfg: the UNet architecture.
        num_frames: ``T``; the network is built for this many frames.
        channels: ``C`` of a (latent) frame.
        text_dim: width of the pooled caption embedding.
        out_channels: channels per output frame (default ``channels``; VLFM's data prediction
            outputs ``(μ̄, μ̄'/fps)``, ``2 C``).
        frame_size: ``(H, W)`` of the (latent) frames it will see, checked here against the UNet's
            downsampling so that a bad size is a config error, not a failure at the first step.

    Raises:
        ConfigError: ``frame_size`` sides that are not multiples of ``2^(levels − 1)``.
    """

    def __init__(self, cfg: UNetConfig, num_frames: int, channels: int, text_dim: int,
                 out_channels: int | None = None, frame_size: tuple[int, int] | None = None):
        super().__init__()
        if frame_size is not None and any(side % cfg.downsampling for side in frame_size):
            raise ConfigError(
                f"frames of {frame_size[0]}x{frame_size[1]} do not fit a UNet with {len(cfg.channel_mults)} "
                f"levels (sides must be multiples of {cfg.downsampling}): change unet.channel_mults or the size"
            )
        self.num_frames, self.channels = num_frames, channels
        self.out_channels = out_channels or channels
        self.unet = UNet(cfg, num_frames * channels, num_frames * self.out_channels, label_dim=text_dim,
                         time_input=True)
        self.null_pooled = nn.Parameter(torch.zeros(text_dim))
        nn.init.normal_(self.null_pooled, std=0.02)
        # Sentence embeddings are unit-norm (entries ~ 1/√D) and captions differ by a small part of
        # that; the label MLP's Xavier init expects unit-variance inputs. Normalising to unit RMS
        # makes one word's difference ("left" vs "right") a large input change from the first step.
        self.cond_norm = nn.LayerNorm(text_dim, elementwise_affine=False)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        tokens: Tensor | None = None,
        mask: Tensor | None = None,
        pooled: Tensor | None = None,
        drop: Tensor | None = None,
    ) -> Tensor:
        """Velocity (or data prediction) at ``x``.

        Args:
            x: ``(B, T, C, H, W)`` with ``T = num_frames``.
            t: ``(B,)`` or scalar flow time.
            tokens, mask: ignored (the caption enters pooled only).
            pooled: ``(B, Dt)`` caption embedding, or None for the null condition.
            drop: ``(B,)`` bool; True replaces the caption by the null vector.
        Returns:
            ``(B, T, C_out, H, W)``.
        Raises:
            ValueError: ``x`` is not ``(B, num_frames, channels, H, W)``.
        """
        if x.ndim != 5 or x.shape[1] != self.num_frames or x.shape[2] != self.channels:
            raise ValueError(
                f"this UNet velocity field takes videos (B, {self.num_frames}, {self.channels}, H, W) "
                f"(it is built for {self.num_frames} frames), got {tuple(x.shape)}"
            )
        B, T, C, H, W = x.shape
        cond = pooled_or_null(pooled, self.null_pooled, drop, B)  # (B, Dt)
        out = self.unet(x.reshape(B, T * C, H, W), label=self.cond_norm(cond), t=t)  # (B, T C, H, W)
        return out.view(B, T, self.out_channels, H, W)
