"""The contract every method follows, so the trainer, CLI and evaluation stay method-agnostic."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tempoflow.configio import require
from tempoflow.errors import SolverError
from tempoflow.flows.solvers import METHODS as SOLVERS


@dataclass(frozen=True)
class SamplingOptions:
    """How ``Method.sample`` integrates its flow (the ``sample`` section of a config; callers hand it in).

    Attributes:
        solver: an ODE method of :func:`tempoflow.flows.solvers.solve_ode` (``METHODS``).
        steps: fixed-step solvers: steps over the whole solve (flow).
        guidance: classifier-free guidance scale (1 = the conditional model, no guidance).
        atol, rtol: adaptive solvers' tolerances.
        max_steps: adaptive solvers: the most steps (accepted and rejected) before giving up.
    """

    solver: str = "heun"
    steps: int = 16
    guidance: float = 2.0
    atol: float = 1e-4
    rtol: float = 1e-4
    max_steps: int = 1000

    def __post_init__(self) -> None:
        require(self.solver in SOLVERS, f"sample.solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        require(self.steps >= 1, f"sample.steps must be >= 1, got {self.steps}")
        require(self.atol > 0 and self.rtol > 0, "sample.atol and sample.rtol must be > 0")
        require(self.max_steps >= 1, f"sample.max_steps must be >= 1, got {self.max_steps}")


@dataclass
class Samples:
    """What ``Method.sample`` returns.

    Attributes:
        video: ``(B, T, C, H, W)`` in [0, 1] (physics fields are not clamped).
        latents: ``(B, T, *latent_shape)`` before decoding.
        nfe: network evaluations the sampler made for the whole batch (one batched call = 1).
        times: ``(T,)`` seconds of each frame, where the method knows them.
        labels: what each sample is (its caption), used to name non-finite samples.
        settings: the sampling settings the method actually used, for reports.

    Raises:
        SolverError: some sample holds NaN or inf.
    """

    video: Tensor
    latents: Tensor
    nfe: int
    times: Tensor | None = None
    labels: list[str] | None = None  # one per sample (its caption), to name a bad sample
    settings: dict = field(default_factory=dict)  # what the sampler actually used (solver, steps, guidance...)

    def __post_init__(self) -> None:
        """Raises SolverError naming the samples with NaN or inf values (one host sync per batch)."""
        finite = torch.isfinite(self.video.flatten(1)).all(1)  # (B,)
        if bool(finite.all()):
            return
        bad = (~finite).nonzero().flatten().tolist()
        names = [f"{i} ({self.labels[i]!r})" if self.labels else str(i) for i in bad[:3]]
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise SolverError(
            f"sample{'s' if len(bad) > 1 else ''} {', '.join(names)}{more} of {len(finite)} came out NaN or inf: "
            "the model or the solver diverged (check the run's loss; try a fixed-step solver, more steps or a "
            "lower sample.guidance)"
        )


class Method(nn.Module):
    """A generative method: ``loss(batch, generator) -> dict`` with a ``"loss"`` entry, and ``sample``.

    ``forward`` is ``loss`` so that distributed wrappers (DDP), which hook ``forward``, see the
    training step. ``generator`` is the trainer's explicit source of noise (DESIGN §1).
    """

    name: str = "method"
    # What evaluation does with it (tempoflow.evaluate.EVALUATIONS): "text-to-video", "alignment"
    # (text-to-video plus alignment scores), "reconstruction" or "trajectory".
    task: str = "text-to-video"
    continuous_time: bool = False  # sample(captions, times=seconds): frames at any times (vlfm)
    clamp: bool = True  # samples are video in [0, 1]; False for physics fields (signed, unclamped)
    # The SamplingOptions fields sample() reads; the API refuses the others rather than ignore them.
    sampling_knobs: tuple[str, ...] = ()
    # What training does with captions: "optional" (an empty one is the null condition), "required"
    # (every video needs one) or "unused".
    captions: str = "unused"

    def __init__(self) -> None:
        super().__init__()
        # The latent space the method generates in (a Codec, frozen), where it has one. An instance
        # attribute, not a class one: nn.Module keeps sub-modules apart and a class attribute would hide it.
        self.codec: nn.Module | None = None

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.loss(batch, generator)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def sample(self, *args, **kwargs) -> Samples:
        """Per task (the ``tempoflow.methods`` package docstring): text-to-video and alignment methods take
        ``(captions, generator, options, num_frames | times, progress)``, trajectory methods
        ``(initial, generator, options, num_frames, progress)``; reconstruction methods do not sample."""
        raise NotImplementedError

    def compile_networks(self) -> None:
        """``torch.compile`` every trained sub-network in place (``train.compile``); the frozen codec is
        left as it is."""
        for name, child in self.named_children():
            if name != "codec":
                child.compile()

    def players(self) -> list[nn.Module]:
        """Adversaries trained in the same step (discriminators). The trainer clips each one's gradient
        as its own group, apart from the rest of the method (``tempoflow.train.trainer.clip_groups``)."""
        return []


def batch_latents(batch: dict, codec: nn.Module) -> Tensor:
    """A training batch's latents ``(B, T, *latent_shape)``: its cached ``latents`` (``data.latent_cache``),
    else ``codec.encode(batch["video"])`` without gradients (the codec is frozen)."""
    if "latents" in batch:
        return batch["latents"]
    with torch.no_grad():
        return codec.encode(batch["video"])


def randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise on ``like``'s device and dtype from an explicit generator."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) noise on ``like``'s device from an explicit generator."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)
