"""Embeddings shared by the networks: flow/video time, fixed sin-cos positions, the null caption."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sin-cos features of scalars (Vaswani et al. 2017): ``(B,)`` -> ``(B, dim)``, in float32 (float64 for
    float64 times, so that derivatives through them can be checked by finite differences)."""
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)  # never below float32: t is scaled by up to 1000
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = t.to(dtype)[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Scalar time -> vector: sin-cos features of ``scale * t`` then a 2-layer MLP (DiT).

    ``scale`` spreads flow time in [0, 1] over the sin-cos frequencies (as diffusion models do with
    integer steps 0..1000); VLFM's video time in seconds uses the same module.
    """

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        """t: ``(B,)`` -> ``(B, dim)``."""
        return self.mlp(sinusoidal(t * self.scale, self.freq_dim).to(self.mlp[0].weight.dtype))


def sincos_3d(dim: int, grid: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Fixed 3-D position code for a ``(T', H', W')`` token grid: ``(T'*H'*W', dim)``.

    Each axis gets an equal even share of the channels (the remainder is zero), so the code exists
    for any grid and frame counts other than the training one still get distinct positions.
    """
    share = 2 * (dim // 6)
    axes = [torch.arange(n, device=device, dtype=torch.float32) for n in grid]
    tt, hh, ww = torch.meshgrid(*axes, indexing="ij")
    parts = [sinusoidal(a.reshape(-1), share, max_period=100.0) for a in (tt, hh, ww)]
    emb = torch.cat(parts, dim=-1)  # (N, 3 * share)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dim - emb.shape[1])], dim=-1)
    return emb.to(dtype)


def pooled_or_null(pooled: Tensor | None, null: Tensor, drop: Tensor | None, batch: int) -> Tensor:
    """The pooled caption ``(B, Dt)``, or the learned null vector ``null`` ``(Dt,)`` where there is no
    caption (``pooled`` None) or ``drop`` ``(B,)`` is True (classifier-free guidance's ∅)."""
    null = null.expand(batch, -1)  # (B, Dt)
    pooled = null if pooled is None else pooled
    return pooled if drop is None else torch.where(drop[:, None], null, pooled)
