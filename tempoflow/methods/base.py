"""The contract every method follows, so the trainer, CLI and evaluation stay method-agnostic."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Samples:
    """What ``Method.sample`` returns.

    Attributes:
        video: ``(B, T, C, H, W)`` in [0, 1] (physics fields are not clamped).
        latents: ``(B, T, *latent_shape)`` before decoding.
        nfe: network evaluations the sampler made for the whole batch (one batched call = 1).
        times: ``(T,)`` seconds of each frame, where the method knows them.
    """

    video: Tensor
    latents: Tensor
    nfe: int
    times: Tensor | None = None


class Method(nn.Module):
    """A generative method: ``loss(batch, generator) -> dict`` with a ``"loss"`` entry, and ``sample``.

    ``forward`` is ``loss`` so that distributed wrappers (DDP), which hook ``forward``, see the
    training step. ``generator`` is the trainer's explicit source of noise (DESIGN §1).
    """

    name: str = "method"
    task: str = "text-to-video"  # what evaluation does with it: "text-to-video" or "reconstruction"
    # What training does with captions: "optional" (an empty one is the null condition), "required"
    # (every video needs one) or "unused".
    captions: str = "unused"

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.loss(batch, generator)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def sample(self, *args, **kwargs) -> Samples:
        raise NotImplementedError


def randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise on ``like``'s device and dtype from an explicit generator."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) noise on ``like``'s device from an explicit generator."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)
