"""UNet on frames with FiLM conditioning on a label and an optional flow time (Stochastic Lifting, app. E).

The canonical encoder–decoder UNet (Ronneberger et al. 2015) as diffusion models use it (Ho et al. 2020):
GroupNorm, SiLU, residual blocks, stride-2 3×3 convolutions down, nearest or transposed-convolution
upsampling, a skip connection from every encoder stage to the decoder, and optional self-attention at the
lowest resolution. Seed 001 (appendix E) "repurposes the diffusion-time input": the label ``ξ ∈ R^d`` is
embedded by a 2-layer MLP of width 512 and the result modulates every residual block by FiLM (Perez et
al. 2018), a per-channel scale and shift after GroupNorm. The multi-step baseline ``ardm`` adds a flow time
``t ∈ [0, 1]`` (sin-cos features and an MLP) to the same conditioning vector; ``meanflow`` adds a second
time, the interval ``t − r`` of its average velocity (MeanFlow, arXiv 2505.13447 §4.3: ``net(·, t, t − r)``),
embedded the same way by its own MLP and summed in. DESIGN §5.

History frames are stacked on channels by the caller: ``C_in = m · C`` for a Markov window of ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tempoflow.errors import ConfigError
from tempoflow.nets.embeddings import TimestepEmbedder

__all__ = ["UNET_PRESETS", "UPSAMPLE_MODES", "UNet", "UNetConfig"]

UPSAMPLE_MODES = ("nearest", "transpose")


@dataclass(frozen=True)
class UNetConfig:
    """UNet architecture; level ``i`` has ``base_width · channel_mults[i]`` channels at resolution ``H / 2^i``."""

    base_width: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 4)  # seed 001 "medium": depths 128, 256, 512
    blocks_per_level: int = 2  # residual blocks per encoder level (the decoder has one more)
    groups: int = 32  # GroupNorm groups; must divide every level's width
    attention: bool = False  # self-attention between the two middle blocks (lowest resolution)
    heads: int = 4  # attention heads; must divide the lowest level's width
    cond_dim: int = 512  # width of the label MLP and of the conditioning vector (appendix E)
    upsample: str = "nearest"  # "nearest" (+ 3×3 conv) or "transpose" (4×4 stride-2 transposed conv)
    time_freq_dim: int = 256  # sin-cos features of the flow time and interval (ardm, meanflow)
    # Two input channels holding each pixel's x and y in [-1, 1] (CoordConv, Liu et al. 2018): with zero
    # padding on a black background a convolution sees where the walls are only through its padding.
    # Measured on long shapes roll-outs it made things worse (61 of 64 blank against 18: the net fits
    # positions, README "Long video roll-outs"); offered for data whose dynamics depend on position.
    # Off: the paper's net.
    coordinates: bool = False

    def __post_init__(self) -> None:
        for name in ("base_width", "blocks_per_level", "groups", "heads", "cond_dim", "time_freq_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"unet.{name} must be >= 1, got {getattr(self, name)}")
        if not self.channel_mults or any(mult < 1 for mult in self.channel_mults):
            raise ConfigError(
                f"unet.channel_mults must be a non-empty list of ints >= 1, got {self.channel_mults}"
            )
        for width in self.widths:
            if width % self.groups:
                raise ConfigError(f"unet.groups ({self.groups}) must divide every level width, not {width}")
        if self.attention and self.widths[-1] % self.heads:
            raise ConfigError(
                f"unet.heads ({self.heads}) must divide the lowest level width {self.widths[-1]}"
            )
        if self.upsample not in UPSAMPLE_MODES:
            raise ConfigError(
                f"unet.upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {self.upsample!r}"
            )

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level, finest first."""
        return tuple(self.base_width * mult for mult in self.channel_mults)

    @property
    def downsampling(self) -> int:
        """Factor by which the lowest level is coarser than the input; ``H`` and ``W`` must be multiples."""
        return 2 ** (len(self.channel_mults) - 1)


UNET_PRESETS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(base_width=16, channel_mults=(1, 2), blocks_per_level=1, groups=4, cond_dim=64),
    "medium": UNetConfig(),  # seed 001 Table 3: wave, flow, BAIR, CLEVRER
    "large": UNetConfig(channel_mults=(1, 2, 4, 8)),  # seed 001 Table 3: polar bear, 480×480
}


class ResBlock(nn.Module):
    """``x + conv(SiLU(FiLM(GN(conv(SiLU(GN(x)))))))``, with a 1×1 conv on the skip when widths differ.

    FiLM: ``h ← h · (1 + γ) + β`` after the second GroupNorm, ``(γ, β) = Linear(SiLU(c))`` per channel.
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int, cond_dim: int | None):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.film = None if cond_dim is None else nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * out_ch))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        """x: ``(B, C_in, H, W)``; c: ``(B, D)`` conditioning vector or None -> ``(B, C_out, H, W)``."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.norm2(h)  # (B, C_out, H, W)
        if self.film is not None:
            scale, shift = self.film(c)[:, :, None, None].chunk(2, dim=1)  # 2 x (B, C_out, 1, 1)
            h = h * (1 + scale) + shift  # (B, C_out, H, W)
        h = self.conv2(F.silu(h))  # (B, C_out, H, W)
        return self.skip(x) + h  # (B, C_out, H, W)


def pixel_coordinates(x: Tensor) -> Tensor:
    """``(B, 2, H, W)``: the x (channel 0, to the right) and y (channel 1, down) of each pixel centre,
    scaled so the image spans ``[-1, 1]`` (pixel ``j`` of ``W`` at ``(2j + 1) / W − 1``), in ``x``'s dtype."""
    B, _, H, W = x.shape
    ys = (2 * torch.arange(H, device=x.device, dtype=x.dtype) + 1) / H - 1
    xs = (2 * torch.arange(W, device=x.device, dtype=x.dtype) + 1) / W - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)  # (2, H, W)
    return grid.expand(B, 2, H, W)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map (fused SDPA), residual."""

    def __init__(self, channels: int, groups: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        height, width = x.shape[-2:]
        qkv = rearrange(
            self.qkv(self.norm(x)), "b (three h d) y x -> three b h (y x) d", three=3, h=self.heads
        )
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, H W, C / heads)
        out = rearrange(out, "b h (y x) d -> b (h d) y x", y=height, x=width)  # (B, C, H, W)
        return x + self.proj(out)  # (B, C, H, W)


class Downsample(nn.Module):
    """Stride-2 3×3 convolution (appendix E): ``(B, C, H, W)`` -> ``(B, C, H/2, W/2)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """``(B, C, H, W)`` -> ``(B, C, 2H, 2W)``: nearest neighbour then a 3×3 conv, or a transposed conv."""

    def __init__(self, channels: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode == "nearest":
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        else:
            self.conv = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        return self.conv(x)


class UNet(nn.Module):
    """Frame-to-frame map ``F_θ(x, ξ[, t])``: ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)`` (seed 001, app. E).

    ``H`` and ``W`` must be multiples of ``cfg.downsampling`` (``2^(levels − 1)``); other sizes raise a
    ``ValueError`` rather than being padded, so that no caller trains on silently padded frames.

    Args:
        cfg: architecture.
        in_channels: ``C_in = m · C``, the history window stacked on channels.
        out_channels: ``C_out``, usually ``C``.
        label_dim: ``d`` of the label ``ξ``; 0 disables the label input.
        time_input: whether ``forward`` takes a flow time ``t`` (the ``ardm`` baseline).
        interval_input: whether ``forward`` also takes an interval ``h = t − r`` (``meanflow``'s second time);
            needs ``time_input``. Off, the network and its parameters are exactly those without it.
    """

    def __init__(
        self,
        cfg: UNetConfig,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        time_input: bool = False,
        interval_input: bool = False,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value < 1:
                raise ConfigError(f"UNet {name} must be >= 1, got {value}")
        if label_dim < 0:
            raise ConfigError(f"label_dim must be >= 0 (0 disables the label), got {label_dim}")
        if interval_input and not time_input:
            raise ConfigError("a UNet with an interval input (t - r) needs the time input t as well")
        self.cfg = cfg
        self.in_channels, self.out_channels = in_channels, out_channels
        self.label_dim, self.time_input, self.interval_input = label_dim, time_input, interval_input
        d = cfg.cond_dim
        # Appendix E: the label goes straight into a 2-layer MLP (no sin-cos features, unlike a time).
        self.label_embed = (
            nn.Sequential(nn.Linear(label_dim, d), nn.SiLU(), nn.Linear(d, d)) if label_dim > 0 else None
        )
        self.time_embed = TimestepEmbedder(d, freq_dim=cfg.time_freq_dim) if time_input else None
        # MeanFlow's interval h = t − r: its own sin-cos features and MLP, summed with the time's (the paper's
        # best "(t, t − r)" conditioning). Registered only when used, so older checkpoints load unchanged.
        self.interval_embed = TimestepEmbedder(d, freq_dim=cfg.time_freq_dim) if interval_input else None
        cond_dim = d if (label_dim > 0 or time_input) else None

        widths, groups = cfg.widths, cfg.groups
        self.conv_in = nn.Conv2d(in_channels + (2 if cfg.coordinates else 0), widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        skip_widths = [widths[0]]
        ch = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.blocks_per_level):
                self.down.append(ResBlock(ch, width, groups, cond_dim))
                ch = width
                skip_widths.append(ch)
            if level < len(widths) - 1:
                self.down.append(Downsample(ch))
                skip_widths.append(ch)

        self.mid1 = ResBlock(ch, ch, groups, cond_dim)
        self.mid_attn = SelfAttention(ch, groups, cfg.heads) if cfg.attention else None
        self.mid2 = ResBlock(ch, ch, groups, cond_dim)

        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for _ in range(cfg.blocks_per_level + 1):
                self.up.append(ResBlock(ch + skip_widths.pop(), widths[level], groups, cond_dim))
                ch = widths[level]
            if level > 0:
                self.up.append(Upsample(ch, cfg.upsample))

        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """PyTorch defaults for convolutions, Xavier for the embedding MLPs; zero FiLM projections, attention
        output and output conv, so that at initialisation every FiLM is the identity (scale 1, shift 0), the
        label and time have no effect, and the network outputs 0."""
        for module in (self.label_embed, self.time_embed, self.interval_embed):
            if module is None:
                continue
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, ResBlock) and m.film is not None:
                nn.init.zeros_(m.film[-1].weight)
                nn.init.zeros_(m.film[-1].bias)
        if self.mid_attn is not None:
            nn.init.zeros_(self.mid_attn.proj.weight)
            nn.init.zeros_(self.mid_attn.proj.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def check_input(self, x: Tensor, label: Tensor | None, t: Tensor | None, interval: Tensor | None = None) -> None:
        """Raise ``ValueError`` naming the bad shape or the missing / unexpected input."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects frames (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        factor = self.cfg.downsampling
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"frame size {x.shape[2]}x{x.shape[3]} is not a multiple of {factor} = 2^(levels - 1) "
                f"for {len(self.cfg.channel_mults)} levels; crop or pad the frames, or use fewer levels"
            )
        batch = x.shape[0]
        if self.label_dim > 0:
            if label is None or label.shape != (batch, self.label_dim):
                got = None if label is None else tuple(label.shape)
                raise ValueError(f"label must have shape ({batch}, {self.label_dim}), got {got}")
        elif label is not None:
            raise ValueError(
                f"this UNet has no label input (label_dim=0) but got a label {tuple(label.shape)}"
            )
        if self.time_input:
            if t is None or t.shape not in ((), (batch,)):
                got = None if t is None else tuple(t.shape)
                raise ValueError(f"t must be a scalar or have shape ({batch},), got {got}")
        elif t is not None:
            raise ValueError("this UNet has no time input (time_input=False) but got t")
        if self.interval_input:
            if interval is None or interval.shape not in ((), (batch,)):
                got = None if interval is None else tuple(interval.shape)
                raise ValueError(f"interval must be a scalar or have shape ({batch},), got {got}")
        elif interval is not None:
            raise ValueError("this UNet has no interval input (interval_input=False) but got an interval")

    def conditioning(
        self, batch: int, label: Tensor | None, t: Tensor | None, interval: Tensor | None = None
    ) -> Tensor | None:
        """The vector every FiLM reads: ``MLP(ξ) + MLP(sincos(t)) + MLP'(sincos(t − r))`` -> ``(B, cond_dim)``,
        each term present when its input is, or None."""
        c = None
        if self.label_embed is not None:
            c = self.label_embed(label.to(self.label_embed[0].weight.dtype))  # (B, D)
        if self.time_embed is not None:
            c_t = self.time_embed(t.expand(batch))  # (B, D)
            c = c_t if c is None else c + c_t
        if self.interval_embed is not None:
            c = c + self.interval_embed(interval.expand(batch))  # (B, D)
        return c

    def forward(
        self, x: Tensor, label: Tensor | None = None, t: Tensor | None = None, interval: Tensor | None = None
    ) -> Tensor:
        """Next frame (or velocity, for ``ardm``; average velocity, for ``meanflow``) from the stacked history.

        Args:
            x: ``(B, C_in, H, W)`` history frames stacked on channels.
            label: ``(B, label_dim)`` label ``ξ``; required iff ``label_dim > 0``.
            t: flow time in ``[0, 1]``, a scalar or ``(B,)``; required iff ``time_input``.
            interval: ``h = t − r`` in ``[0, 1]``, a scalar or ``(B,)``; required iff ``interval_input``.

        Returns:
            ``(B, C_out, H, W)``.
        """
        self.check_input(x, label, t, interval)
        c = self.conditioning(x.shape[0], label, t, interval)  # (B, D) or None
        if self.cfg.coordinates:
            x = torch.cat([x, pixel_coordinates(x)], dim=1)  # (B, C_in + 2, H, W)
        h = self.conv_in(x)  # (B, w_0, H, W)
        skips = [h]
        for block in self.down:
            h = block(h, c) if isinstance(block, ResBlock) else block(h)  # (B, w_i, H / 2^i, W / 2^i)
            skips.append(h)
        h = self.mid1(h, c)  # (B, w_L, H / 2^L, W / 2^L)
        if self.mid_attn is not None:
            h = self.mid_attn(h)  # (B, w_L, H / 2^L, W / 2^L)
        h = self.mid2(h, c)  # (B, w_L, H / 2^L, W / 2^L)
        for block in self.up:
            if isinstance(block, ResBlock):
                h = block(torch.cat([h, skips.pop()], dim=1), c)  # (B, w_i, H / 2^i, W / 2^i)
            else:
                h = block(h)  # (B, w_i, H / 2^(i-1), W / 2^(i-1))
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_out, H, W)
