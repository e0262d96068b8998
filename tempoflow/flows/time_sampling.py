"""Training distributions of flow time ``t`` on ``[0, 1]`` (DESIGN §3).

``uniform``: ``t ~ U[0, 1)`` (Lipman et al. 2023).
``logit_normal``: ``t = sigmoid(m + s n)``, ``n ~ N(0, 1)`` (Esser et al. 2024, "Scaling rectified
flow transformers for high-resolution image synthesis", §3.1), with density

    π(t; m, s) = 1 / (s √(2π)) · 1 / (t (1 − t)) · exp(−(logit(t) − m)² / (2 s²)).

Its mass is centred at ``sigmoid(m)``: ``m = 0`` spends the training signal on the middle of the
path, where the velocity target is hardest to predict; ``m < 0`` skews it to the noisy end, where
conditioning decides what the sample shows (near ``t = 1`` the input already shows the data).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class FlowTimeSampler:
    """Draws training flow times; ``mean``/``std`` are the logit-normal's ``m``/``s``.

    Raises:
        ValueError: an unknown ``kind`` or a ``std`` that is not positive.
    """

    kind: str = "uniform"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in TIME_SAMPLINGS:
            raise ValueError(f"time sampling must be one of {TIME_SAMPLINGS}, got {self.kind!r}")
        if not self.std > 0:
            raise ValueError(f"logit-normal std must be > 0, got {self.std}")

    def sample(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """``(n,)`` flow times on ``like``'s device and dtype, drawn from ``generator``."""
        device = generator.device if generator is not None else like.device
        if self.kind == "uniform":
            t = torch.rand((n,), generator=generator, device=device, dtype=like.dtype)
        else:
            z = torch.randn((n,), generator=generator, device=device, dtype=like.dtype)
            t = torch.sigmoid(self.mean + self.std * z)
        return t.to(like.device)
