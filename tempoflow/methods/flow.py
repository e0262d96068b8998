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

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tempoflow.codecs import Codec
from tempoflow.configio import require
from tempoflow.errors import ConfigError
from tempoflow.flows.guidance import warn_if_unconditional_untrained
from tempoflow.flows.paths import make_path
from tempoflow.flows.solvers import FIXED_STEP_METHODS, solve_ode
from tempoflow.flows.time_sampling import TIME_SAMPLINGS, FlowTimeSampler
from tempoflow.methods.base import Method, Samples, SamplingOptions, batch_latents, rand, randn
from tempoflow.methods.conditioning import encode_captions, guided_field, progress_counted, training_captions
from tempoflow.nets.dit import DiT, DiTConfig
from tempoflow.nets.unet import UNetConfig
from tempoflow.nets.video_unet import StackedFramesUNet
from tempoflow.text import TextEncoder

# The smallest σ_t floor for data prediction: 1e-3 already amplifies the network error 1000-fold at t = 1.
MIN_SIGMA_FLOOR = 1e-3


@dataclass(frozen=True)
class FlowConfig:
    """Latent flow matching (DESIGN §3)."""

    path: str = "condot"  # "condot" or "cosine"
    sigma_min: float = 0.0
    caption_dropout: float = 0.1  # probability of training unconditionally, for guidance
    codec: str = "pixel"  # "pixel" or "autoencoder"
    codec_path: str = ""  # the autoencoder run (or checkpoint) the "autoencoder" codec loads
    # What the network outputs: "velocity" (v_θ directly) or "data" (x̂_1, turned into a velocity
    # through the path). The loss is on the velocity either way. Data prediction wins when a patch
    # holds more numbers than the network's width (Li & He 2025): the clean patch is low-dimensional,
    # the noise in it is not.
    prediction: str = "velocity"
    min_sigma: float = 0.05  # σ_t floor when converting a data prediction into a velocity
    # Training distribution of flow time (tempoflow.flows.time_sampling): "uniform" or
    # "logit_normal" (Esser et al. 2024): t = sigmoid(logit_mean + logit_std n), n ~ N(0, 1);
    # a negative mean skews training to the noisy end (t = 0).
    time_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # The velocity field: "dit" (the `model` section) or "unet" (frames stacked on channels, FiLM on
    # time + pooled caption, tempoflow.nets.video_unet; fixed frame count).
    backbone: str = "dit"
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        base_width=32, channel_mults=(1, 2, 2), blocks_per_level=1, groups=8, cond_dim=256))

    def __post_init__(self) -> None:
        require(self.backbone in ("dit", "unet"), f"flow.backbone must be 'dit' or 'unet', got {self.backbone!r}")
        require(self.time_sampling in TIME_SAMPLINGS,
                 f"flow.time_sampling must be one of {', '.join(TIME_SAMPLINGS)}, got {self.time_sampling!r}")
        require(math.isfinite(self.logit_mean), f"flow.logit_mean must be finite, got {self.logit_mean}")
        require(math.isfinite(self.logit_std) and self.logit_std > 0,
                 f"flow.logit_std must be finite and > 0, got {self.logit_std}")
        require(self.prediction in ("velocity", "data"),
                 f"flow.prediction must be 'velocity' or 'data', got {self.prediction!r}")
        require(0.0 <= self.caption_dropout < 1.0, f"flow.caption_dropout must be in [0, 1), got {self.caption_dropout}")
        require(0.0 <= self.sigma_min < 1.0, f"flow.sigma_min must be in [0, 1), got {self.sigma_min}")
        require(self.prediction != "data" or MIN_SIGMA_FLOOR <= self.min_sigma <= 1.0,
                f"flow.min_sigma must be in [{MIN_SIGMA_FLOOR:g}, 1] for data prediction, got {self.min_sigma:g}: near "
                "t = 1 the velocity (x̂ − x_t) / min_sigma multiplies the network's error by 1 / min_sigma, so samples "
                "overflow and adaptive solvers stall")


class FlowMatching(Method):
    """Text-to-video flow matching in a codec's latent space.

    Args:
        cfg: the ``flow`` section.
        video_shape: ``(T, C, H, W)`` of the training videos.
        text: a frozen caption encoder.
        codec: the latent space (``flow.codec``), built by ``tempoflow.runs.build_codec``.
        model: the DiT's settings (the ``model`` section; used when ``cfg.backbone`` is "dit").
    """

    name = "flow"
    captions = "optional"
    sampling_knobs = ("solver", "steps", "guidance", "atol", "rtol", "max_steps")

    def __init__(self, cfg: FlowConfig, video_shape: tuple[int, int, int, int], *, text: TextEncoder,
                 codec: Codec, model: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.text = text
        self.codec = codec
        self.num_frames, channels, height, width = video_shape
        self.latent_shape = self.codec.latent_shape(channels, height, width)
        self.path = make_path(cfg.path, cfg.sigma_min)
        self.time_sampler = FlowTimeSampler(cfg.time_sampling, cfg.logit_mean, cfg.logit_std)
        if cfg.backbone == "unet":
            self.net = StackedFramesUNet(cfg.unet, self.num_frames, self.latent_shape[0], text.dim,
                                         frame_size=self.latent_shape[1:])
        else:
            self.net = DiT(model, self.latent_shape[0], text.dim)
            self.net.check_fits(self.num_frames, *self.latent_shape[1:], f"the {codec.name} latents of the data")

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """batch: ``video`` (B, T, C, H, W) in [0, 1] (or cached ``latents``) and ``caption`` (B strings)."""
        x_1 = batch_latents(batch, self.codec)  # (B, T, *latent)
        B = x_1.shape[0]
        x_0 = randn(x_1.shape, generator, x_1)  # (B, T, *latent)
        t = self.time_sampler.sample(B, generator, x_1)  # (B,)
        captions, uncaptioned = training_captions(batch["caption"], x_1.device)
        drop = (rand((B,), generator, x_1) < self.cfg.caption_dropout) | uncaptioned  # (B,)
        ps = self.path.sample(x_0, x_1, t)
        v = self.velocity(ps.x_t, t, drop=drop, **encode_captions(self.text, captions, x_1.device))
        return {"loss": (v.float() - ps.dx_t.float()).square().mean()}

    def velocity(self, x_t: Tensor, t: Tensor, **cond) -> Tensor:
        """``v_θ(x_t, t, c)``: the network's output, or its data prediction turned into a velocity."""
        out = self.net(x_t, t, **cond)  # (B, T, *latent)
        if self.cfg.prediction == "velocity":
            return out
        return self.path.x1_to_velocity(out.float(), x_t.float(), t.float(), self.cfg.min_sigma)

    @torch.no_grad()
    def sample(
        self,
        captions: list[str],
        generator: torch.Generator | None = None,
        options: SamplingOptions | None = None,
        num_frames: int | None = None,
        progress: bool = False,
    ) -> Samples:
        """Generate one video per caption: ``(B, T, C, H, W)`` in [0, 1].

        Args:
            captions: B non-empty captions.
            generator: the initial noise.
            options: solver, steps, guidance, tolerances (default ``SamplingOptions()``).
            num_frames: frames per video (the DiT: any multiple of its temporal patch); default the
                training length.
            progress: a progress bar per network evaluation.

        Raises:
            ConfigError: a frame count the velocity field cannot make. SolverError: the solve fails or a
                sample comes out non-finite. DataError: an empty caption.
        """
        o = options or SamplingOptions()
        warn_if_unconditional_untrained(o.guidance, self.cfg.caption_dropout, "flow.caption_dropout")
        num_frames = num_frames or self.num_frames
        if num_frames != self.num_frames and isinstance(self.net, StackedFramesUNet):
            raise ConfigError(f"this flow's UNet velocity field is built for {self.num_frames} frames and cannot "
                              f"sample {num_frames} (flow.backbone: dit can)")
        if isinstance(self.net, DiT) and num_frames % self.net.cfg.patch_t:
            raise ConfigError(f"{num_frames} frames do not tile into the DiT's patches of "
                              f"{self.net.cfg.patch_t} frames")
        param = next(self.net.parameters())
        cond = encode_captions(self.text, captions, param.device)
        x_init = randn((len(captions), num_frames, *self.latent_shape), generator, param.float())
        fixed = o.solver in FIXED_STEP_METHODS
        with progress_counted(guided_field(self.velocity, cond, o.guidance), progress) as velocity:
            sol = solve_ode(velocity, x_init, torch.tensor([0.0, 1.0], device=param.device), method=o.solver,
                            steps=o.steps if fixed else None, atol=o.atol, rtol=o.rtol, max_steps=o.max_steps)
        latents = sol.xs[-1]  # (B, T, *latent)
        used = {"solver": o.solver, "guidance": o.guidance,
                **({"steps": o.steps} if fixed else {"atol": o.atol, "rtol": o.rtol})}
        return Samples(video=self.codec.decode(latents), latents=latents, nfe=sol.nfe, labels=captions,
                       settings=used)
