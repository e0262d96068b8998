"""Latent flow matching with a DiT (or UNet) velocity field and classifier-free guidance (DESIGN §3).

Training (Lipman et al. 2023, conditional OT):
    x_1 = codec.encode(video);  x_0 ~ N(0, I);  t ~ U[0, 1] or logit-normal (Esser et al. 2024)
    x_t = α_t x_1 + σ_t x_0;    target = α'_t x_1 + σ'_t x_0
    drop the caption with probability p (for guidance)
    loss = ‖v_θ(x_t, t, c) − target‖²   (v_θ = the net, or the velocity its data prediction implies)
Sampling: integrate dx/dt = v_θ from t = 0 (noise) to t = 1 (data) with guidance scale w:
    v = v_θ(x, t, ∅) + w (v_θ(x, t, c) − v_θ(x, t, ∅))        (Ho & Salimans 2022)
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tempoflow.codecs import Codec
from tempoflow.config import ExperimentConfig
from tempoflow.errors import ConfigError
from tempoflow.flows.guidance import guided, warn_if_unconditional_untrained
from tempoflow.flows.paths import make_path
from tempoflow.flows.solvers import FIXED_STEP_METHODS, solve_ode
from tempoflow.flows.time_sampling import FlowTimeSampler
from tempoflow.methods.base import Method, Samples, rand, randn
from tempoflow.methods.conditioning import encode_captions, training_captions
from tempoflow.nets.dit import DiT
from tempoflow.nets.video_unet import StackedFramesUNet
from tempoflow.text import TextEncoder


class FlowMatching(Method):
    """Text-to-video flow matching in a codec's latent space.

    Args:
        cfg: the experiment config (``flow``, ``model`` and ``sample`` sections are used).
        video_shape: ``(T, C, H, W)`` of the training videos.
        text: a frozen caption encoder.
    """

    name = "flow"
    captions = "optional"

    def __init__(self, cfg: ExperimentConfig, video_shape: tuple[int, int, int, int], text: TextEncoder,
                 codec: Codec):
        super().__init__()
        self.cfg = cfg
        self.text = text
        self.codec = codec
        self.num_frames, channels, height, width = video_shape
        self.latent_shape = self.codec.latent_shape(channels, height, width)
        self.path = make_path(cfg.flow.path, cfg.flow.sigma_min)
        self.time_sampler = FlowTimeSampler(cfg.flow.time_sampling, cfg.flow.logit_mean, cfg.flow.logit_std)
        if cfg.flow.backbone == "unet":
            self.net = StackedFramesUNet(cfg.flow.unet, self.num_frames, self.latent_shape[0], text.dim,
                                         frame_size=self.latent_shape[1:])
        else:
            self.net = DiT(cfg.model, self.latent_shape[0], text.dim)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """batch: ``video`` (B, T, C, H, W) in [0, 1] (or cached ``latents``) and ``caption`` (B strings)."""
        if "latents" in batch:  # from a latent cache (tempoflow.data.latent_cache)
            x_1 = batch["latents"]  # (B, T, *latent)
        else:
            with torch.no_grad():
                x_1 = self.codec.encode(batch["video"])  # (B, T, *latent)
        B = x_1.shape[0]
        x_0 = randn(x_1.shape, generator, x_1)  # (B, T, *latent)
        t = self.time_sampler.sample(B, generator, x_1)  # (B,)
        captions, uncaptioned = training_captions(batch["caption"], x_1.device)
        drop = (rand((B,), generator, x_1) < self.cfg.flow.caption_dropout) | uncaptioned  # (B,)
        ps = self.path.sample(x_0, x_1, t)
        v = self.velocity(ps.x_t, t, drop=drop, **encode_captions(self.text, captions, x_1.device))
        return {"loss": (v.float() - ps.dx_t.float()).square().mean()}

    def velocity(self, x_t: Tensor, t: Tensor, **cond) -> Tensor:
        """``v_θ(x_t, t, c)``: the network's output, or its data prediction turned into a velocity."""
        out = self.net(x_t, t, **cond)  # (B, T, *latent)
        if self.cfg.flow.prediction == "velocity":
            return out
        return self.path.x1_to_velocity(out.float(), x_t.float(), t.float(), self.cfg.flow.min_sigma)

    @torch.no_grad()
    def sample(
        self,
        captions: list[str],
        generator: torch.Generator | None = None,
        num_frames: int | None = None,
        solver: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        progress: bool = False,
    ) -> Samples:
        """Generate one video per caption: ``(B, T, C, H, W)`` in [0, 1] (a progress bar per NFE
        when ``progress``)."""
        sc = self.cfg.sample
        solver = solver or sc.solver
        steps = steps or sc.steps
        guidance = sc.guidance if guidance is None else guidance
        warn_if_unconditional_untrained(guidance, self.cfg.flow.caption_dropout, "flow.caption_dropout")
        num_frames = num_frames or self.num_frames
        if num_frames != self.num_frames and isinstance(self.net, StackedFramesUNet):
            raise ConfigError(f"this flow's UNet velocity field is built for {self.num_frames} frames and cannot "
                              f"sample {num_frames} (flow.backbone: dit can)")
        if isinstance(self.net, DiT) and num_frames % self.net.cfg.patch_t:
            raise ConfigError(f"{num_frames} frames do not tile into the DiT's patches of "
                              f"{self.net.cfg.patch_t} frames")
        param = next(self.net.parameters())
        cond = encode_captions(self.text, captions, param.device)
        B = len(captions)

        def model_fn(x: Tensor, t: Tensor, drop: Tensor) -> Tensor:
            reps = x.shape[0] // B  # guidance doubles the batch
            c = {k: v.repeat(reps, *([1] * (v.ndim - 1))) for k, v in cond.items()}
            return self.velocity(x, t.expand(x.shape[0]), drop=drop, **c)

        x_init = randn((B, num_frames, *self.latent_shape), generator, param.float())
        velocity = guided(model_fn, guidance)
        with tqdm(desc="sample", unit="nfe", disable=not progress, leave=False) as bar:

            def counted(x: Tensor, t: Tensor) -> Tensor:
                bar.update(1)
                return velocity(x, t)

            sol = solve_ode(
                counted,
                x_init,
                torch.tensor([0.0, 1.0], device=param.device),
                method=solver,
                steps=steps if solver in FIXED_STEP_METHODS else None,
                atol=sc.atol,
                rtol=sc.rtol,
                max_steps=sc.max_steps,
            )
        latents = sol.xs[-1]  # (B, T, *latent)
        return Samples(video=self.codec.decode(latents), latents=latents, nfe=sol.nfe, labels=captions)
