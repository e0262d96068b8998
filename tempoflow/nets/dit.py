"""DiT over space-time patches with adaLN-zero and text cross-attention.

Peebles & Xie, "Scalable Diffusion Models with Transformers" (2023) for the block and adaLN-zero;
cross-attention to caption tokens as in PixArt-alpha. Contract: ``forward(x, t, **cond)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tempoflow.configio import require
from tempoflow.errors import ConfigError
from tempoflow.nets.embeddings import TimestepEmbedder, pooled_or_null, sincos_3d


@dataclass(frozen=True)
class DiTConfig:
    """DiT backbone over space-time patches (Peebles & Xie 2023) with text cross-attention."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    patch_t: int = 1  # frames per patch
    patch_hw: int = 4  # pixels (or latent cells) per patch side
    cross_attention: bool = True  # token embeddings by cross-attention (pooled vector always in adaLN)

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads", "patch_t", "patch_hw"):
            require(getattr(self, name) >= 1, f"model.{name} must be >= 1, got {getattr(self, name)}")
        require(self.dim % self.heads == 0, f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        require(self.mlp_ratio > 0, f"model.mlp_ratio must be > 0, got {self.mlp_ratio}")
        hidden = int(self.dim * self.mlp_ratio)  # the MLP's width (DiTBlock)
        require(hidden >= 1, f"model.mlp_ratio {self.mlp_ratio} gives the MLP int(model.dim × mlp_ratio) = {hidden} "
                             f"units at model.dim {self.dim}: raise it to at least {1 / self.dim:g}")
        # sincos_3d gives each of the 3 axes dim // 6 sin-cos pairs: below 6 there is no position code
        require(self.dim >= 6, f"model.dim must be >= 6 for the 3-D position code, got {self.dim}")


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-sample ``(B, D)`` shift and scale over ``(B, N, D)``."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention on fused SDPA; self-attention when ``context`` is None."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"model.dim ({dim}) must be divisible by model.heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x: (B, N, D); context: (B, L, Dc); mask: (B, L) bool, True = attend."""
        context = x if context is None else context
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads)  # (B, h, N, d)
        k, v = rearrange(self.kv(context), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, N, d)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class DiTBlock(nn.Module):
    """Self-attention, optional cross-attention, MLP; adaLN-zero modulation from the vector ``c``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.cross = None
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross = Attention(dim, heads, context_dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None, mask: Tensor | None) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # 6 x (B, D)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))  # (B, N, D)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context, mask)  # (B, N, D)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)


class DiT(nn.Module):
    """Velocity field ``v(x, t, caption)`` on latent videos ``(B, T, C, H, W)``.

    Tokens are ``patch_t x patch_hw x patch_hw`` space-time patches with a fixed 3-D sin-cos
    position code (so other frame counts and sizes work at sampling time). The conditioning
    vector is ``embed(t) + proj(pooled caption)``; caption tokens enter by cross-attention after a
    learned null token that is always visible, so a dropped caption (classifier-free guidance)
    attends to the null token alone.
    """

    def __init__(self, cfg: DiTConfig, channels: int, text_dim: int, out_channels: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.channels = channels
        self.out_channels = out_channels or channels  # VLFM's data prediction outputs (x̂, dx̂/dt)
        pt, p, d = cfg.patch_t, cfg.patch_hw, cfg.dim
        self.patch = nn.Conv3d(channels, d, kernel_size=(pt, p, p), stride=(pt, p, p))
        self.t_embed = TimestepEmbedder(d)
        self.pooled_proj = nn.Sequential(nn.Linear(text_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.null_pooled = nn.Parameter(torch.zeros(text_dim))
        context_dim = None
        if cfg.cross_attention:
            context_dim = d
            self.context_proj = nn.Linear(text_dim, d)
            self.null_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, cfg.mlp_ratio, context_dim) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, pt * p * p * self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier for linears; zero adaLN and output layers so every block starts as the identity."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch.bias)
        nn.init.normal_(self.null_pooled, std=0.02)
        if self.cfg.cross_attention:
            nn.init.normal_(self.null_token, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final_ada[-1].weight)
        nn.init.zeros_(self.final_ada[-1].bias)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def check_fits(self, frames: int, height: int, width: int, where: str) -> None:
        """Refuse, when a method is built, a video size the patches cannot tile.

        Raises:
            ConfigError: ``frames`` not a multiple of ``patch_t`` or a side not of ``patch_hw``; the
                message names ``where`` the size comes from.
        """
        pt, p = self.cfg.patch_t, self.cfg.patch_hw
        if frames % pt or height % p or width % p:
            raise ConfigError(f"{where}: {frames} frames at {height}x{width} do not tile into the DiT's patches "
                              f"of {pt}x{p}x{p} (model.patch_t, model.patch_hw)")

    def check_input(self, x: Tensor) -> None:
        pt, p = self.cfg.patch_t, self.cfg.patch_hw
        if x.ndim != 5 or x.shape[2] != self.channels:
            raise ValueError(f"DiT expects (B, T, {self.channels}, H, W), got {tuple(x.shape)}")
        _, T, _, H, W = x.shape
        if T % pt or H % p or W % p:
            raise ValueError(
                f"video of {T} frames at {H}x{W} does not tile into patches of {pt}x{p}x{p}"
            )

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        tokens: Tensor | None = None,
        mask: Tensor | None = None,
        pooled: Tensor | None = None,
        drop: Tensor | None = None,
    ) -> Tensor:
        """Velocity at ``x``.

        Args:
            x: ``(B, T, C, H, W)`` latent video.
            t: ``(B,)`` flow time (or video time, for VLFM), any float range.
            tokens, mask, pooled: caption ``(B, L, Dt)``, ``(B, L)`` bool, ``(B, Dt)``.
            drop: ``(B,)`` bool; True replaces the caption by the learned null condition.
        Returns:
            ``(B, T, C, H, W)``.
        """
        self.check_input(x)
        B, T, _, H, W = x.shape
        pt, p = self.cfg.patch_t, self.cfg.patch_hw
        grid = (T // pt, H // p, W // p)
        h = self.patch(rearrange(x, "b t c h w -> b c t h w"))  # (B, D, T', H', W')
        h = rearrange(h, "b d t h w -> b (t h w) d")  # (B, N, D)
        h = h + sincos_3d(self.cfg.dim, grid, h.device, h.dtype)[None]  # (B, N, D)

        pooled = pooled_or_null(pooled, self.null_pooled, drop, B)  # (B, Dt)
        c = self.t_embed(t) + self.pooled_proj(pooled)  # (B, D)

        context = key_mask = None
        if self.cfg.cross_attention:
            null_tok = self.null_token.expand(B, 1, -1)  # (B, 1, D)
            if tokens is None:
                context, key_mask = null_tok, torch.ones(B, 1, dtype=torch.bool, device=x.device)
            else:
                context = torch.cat([null_tok, self.context_proj(tokens)], dim=1)  # (B, 1 + L, D)
                mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
                if drop is not None:
                    mask = mask & ~drop[:, None]  # dropped captions see only the null token
                key_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # (B, 1 + L)

        for block in self.blocks:
            h = block(h, c, context, key_mask)  # (B, N, D)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)  # 2 x (B, D)
        h = self.final(modulate(self.final_norm(h), shift, scale))  # (B, N, pt*p*p*C)
        return rearrange(
            h,
            "b (t h w) (pt ph pw c) -> b (t pt) c (h ph) (w pw)",
            t=grid[0], h=grid[1], w=grid[2], pt=pt, ph=p, pw=p, c=self.out_channels,
        )  # (B, T, C_out, H, W)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

