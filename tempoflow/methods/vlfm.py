"""Video latent flow matching (VLFM paper §3; DESIGN §4): the flow's time is video time.

Training (one step, per video of N latent frames u_1..u_N at ``fps``, duration T = N / fps seconds):
    H = Proj_s(u_1..u_N)                       Legendre coefficients (d, s), HiPPO-LegS or lstsq
    t ~ U[0, T];  z ~ N(0, I_d)
    ψ_t = σ_t z + μ_t,   μ_t = (1 − e^{−αt}) μ̄(t),   μ̄(t) = Σ_n H_n g_n(max(t, 1/fps))
                                        (held at frame 1 before it: ``vlfm.hold_first_frame``, video_path)
    loss = ‖F_θ(ψ_t, c, t) − (σ'_t z + μ'_t)‖²          (caption dropped with prob. p, for guidance)
Sampling: x(0) = z ~ N(0, I); integrate dx/dt = F_θ(x, c, t) once and read x at ANY requested times —
another frame rate, between training frames, or past T (extrapolation) — then decode.
``prediction="data"`` (ours): F_θ outputs (μ̄(t), μ̄'(t)/fps) and sampling steps the path exactly:
    ẑ = (ψ_t − μ̂_t) / σ_t;   ψ_{t+h} = σ_{t+h} ẑ + (1 − e^{−α(t+h)}) (μ̄̂ + h μ̄̂')
where σ falls; where it rises (between frames) ``vlfm.rising_noise="fresh"`` (default) instead adds new
noise, ψ_{t+h} = σ_t ẑ + √(σ²_{t+h} − σ²_t) ε + μ_{t+h}, because σ_{t+h}/σ_t ≈ 1/σ_min there would
multiply the network's error. A frame at time τ is the denoised μ̄̂(τ) of the step that contains τ.
Ablation (paper Table 1): ``objective="direct"`` trains G_θ(c, t) → μ̄(t) by MSE on the same backbone.

Each is one readable piece: the objectives ``velocity_regression``, ``data_prediction`` and
``direct_regression`` (chosen once, in ``__init__``), the samplers ``sample_velocity``, ``sample_data``
(its exact step is ``VideoLatentPath.data_step``, with the path in ``tempoflow.flows``) and ``sample_direct``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tempoflow.codecs import Codec
from tempoflow.configio import require
from tempoflow.errors import ConfigError
from tempoflow.flows.guidance import warn_if_unconditional_untrained
from tempoflow.flows.legendre import MAX_CONDITION, design_condition, projection_matrix
from tempoflow.flows.solvers import FIXED_STEP_METHODS, solve_ode
from tempoflow.flows.video_path import VideoLatentPath, trajectory
from tempoflow.methods.base import Method, Samples, SamplingOptions, batch_latents, rand, randn
from tempoflow.methods.conditioning import encode_captions, guided_field, progress_counted, training_captions
from tempoflow.nets.dit import DiT, DiTConfig
from tempoflow.nets.unet import UNetConfig
from tempoflow.nets.video_unet import StackedFramesUNet
from tempoflow.text import TextEncoder


@dataclass(frozen=True)
class VLFMConfig:
    """Video latent flow matching (DESIGN §4): flow time is video time in seconds."""

    order: int = 8  # s, Legendre coefficients per latent feature (needs s <= frames per video)
    projection: str = "lstsq"  # "lstsq" (exact least squares) or "legs" (the paper's recurrence)
    schedule: str = "renoise"  # σ_t: "renoise" (paper, re-noises between frames) or "decay"
    sigma_min: float = 0.01
    alpha: float = 10.0  # per second, in σ_t and in μ_t = (1 − e^{−αt}) μ̄(t)
    objective: str = "flow"  # "flow", or "direct": the paper's ablation G_θ(c, t) → μ̄(t) by MSE
    # "velocity": F_θ regresses dψ_t/dt (the paper). "data": F_θ outputs the clean trajectory μ̄(t) and
    # its change per frame μ̄'(t)/fps, regressed directly; sampling then steps the path exactly
    # (ψ_{t+h} = σ_{t+h} ẑ + μ_{t+h}, ẑ = (ψ_t − μ_t)/σ_t), which stays stable where σ'_t/σ_t is
    # large next to every frame, and frames are read from the denoised μ̄(t) at any time.
    prediction: str = "velocity"
    times_per_video: int = 4  # training times t ~ U[0, T] drawn per video (amortises encode + projection)
    caption_dropout: float = 0.1
    codec: str = "pixel"
    codec_path: str = ""
    steps_per_frame: int = 8  # fixed-step solvers: steps per frame interval 1 / fps when sampling
    # prediction="data" only — what a sampling step does where σ_t rises (between frames, "renoise"):
    # "fresh" adds independent noise of variance σ²_{t+h} − σ²_t to the residual ψ_t − μ̂_t (ancestral,
    # the path's marginal at t+h); "ode" rescales the residual by σ_{t+h}/σ_t (the deterministic flow),
    # which multiplies the network's error by up to 1/σ_min next to every frame.
    rising_noise: str = "fresh"
    # prediction="data" only — weight of the change head's squared error against the mean's. The change
    # μ̄'(t)/fps is all the motion a sample gets (the state carries only the current frame); 10 was tried
    # on the paper's path and did not raise caption accuracy (README "VLFM").
    change_weight: float = 1.0
    # hold μ̄ at the first frame before it (t < 1/fps) instead of the Legendre fit's backward extrapolation,
    # which carries most of ‖μ̄'‖² there (tempoflow.flows.video_path). False = the paper's path.
    hold_first_frame: bool = True
    # F_θ on one latent frame: "dit" (the `model` section, patch_t = 1) or "unet" (tempoflow.nets.video_unet
    # with one frame: FiLM on video time + pooled caption).
    backbone: str = "dit"
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        base_width=32, channel_mults=(1, 2, 2), blocks_per_level=1, groups=8, cond_dim=256))

    def __post_init__(self) -> None:
        require(self.backbone in ("dit", "unet"), f"vlfm.backbone must be 'dit' or 'unet', got {self.backbone!r}")
        require(self.change_weight > 0, f"vlfm.change_weight must be > 0, got {self.change_weight}")
        require(self.rising_noise in ("fresh", "ode"),
                 f"vlfm.rising_noise must be 'fresh' or 'ode', got {self.rising_noise!r}")
        require(self.order >= 1, f"vlfm.order must be >= 1, got {self.order}")
        require(self.projection in ("lstsq", "legs"), f"vlfm.projection must be 'lstsq' or 'legs', got {self.projection!r}")
        require(self.schedule in ("renoise", "decay"), f"vlfm.schedule must be 'renoise' or 'decay', got {self.schedule!r}")
        require(self.prediction in ("velocity", "data"),
                 f"vlfm.prediction must be 'velocity' or 'data', got {self.prediction!r}")
        require(self.objective in ("flow", "direct"), f"vlfm.objective must be 'flow' or 'direct', got {self.objective!r}")
        require(not (self.objective == "direct" and self.prediction == "data"),
                "vlfm.objective=direct regresses the trajectory itself, it has no vlfm.prediction=data variant: "
                "add vlfm.prediction=velocity")
        require(0.0 < self.sigma_min < 1.0, f"vlfm.sigma_min must be in (0, 1), got {self.sigma_min}")
        require(self.alpha > 0, f"vlfm.alpha must be > 0, got {self.alpha}")
        require(self.times_per_video >= 1, f"vlfm.times_per_video must be >= 1, got {self.times_per_video}")
        require(0.0 <= self.caption_dropout < 1.0, f"vlfm.caption_dropout must be in [0, 1), got {self.caption_dropout}")
        require(self.steps_per_frame >= 1, f"vlfm.steps_per_frame must be >= 1, got {self.steps_per_frame}")


class VideoLatentFlow(Method):
    """Caption-guided VLFM over one latent frame at a time.

    Args:
        cfg: the ``vlfm`` section.
        video_shape: ``(N, C, H, W)`` of the training videos.
        text: a frozen caption encoder.
        codec: the latent space (``vlfm.codec``), built by ``tempoflow.runs.build_codec``.
        model: the DiT's settings (the ``model`` section; used when ``cfg.backbone`` is "dit").
        fps: the training videos' frame rate: frame k (1-based) is at t = k / fps seconds.
    """

    name = "vlfm"
    captions = "optional"
    # steps: per frame interval here (vlfm.steps_per_frame), not over the whole solve: set by that key
    sampling_knobs = ("solver", "guidance", "atol", "rtol", "max_steps")
    continuous_time = True  # sample(..., times=...) at any seconds: evaluation scores in-between/extrapolated frames

    def __init__(self, cfg: VLFMConfig, video_shape: tuple[int, int, int, int], *, text: TextEncoder,
                 codec: Codec, model: DiTConfig, fps: float):
        super().__init__()
        self.cfg = v = cfg
        self.text = text
        self.codec = codec
        self.num_frames, channels, height, width = video_shape
        if v.order > self.num_frames:
            raise ConfigError(f"vlfm.order={v.order} needs at least as many frames per video, got {self.num_frames}")
        self.fps = float(fps)
        self.duration = self.num_frames / self.fps  # T in seconds
        self.latent_shape = self.codec.latent_shape(channels, height, width)
        condition = design_condition(self.num_frames, v.order)
        if condition > MAX_CONDITION:
            largest = max(s for s in range(1, self.num_frames + 1) if design_condition(self.num_frames, s) <= MAX_CONDITION)
            raise ConfigError(
                f"vlfm.order={v.order} on {self.num_frames} frames is ill-conditioned (condition {condition:.1e} > "
                f"{MAX_CONDITION:g}: the float32 fit would miss the frames); use vlfm.order <= {largest}")
        # H = framesᵀ W (tempoflow.flows.legendre), computed in float64; W kept on the method's device
        W = projection_matrix(self.num_frames, v.order, v.projection)
        self.register_buffer("projection", W, persistent=False)
        self.path = VideoLatentPath(schedule=v.schedule, sigma_min=v.sigma_min, alpha=v.alpha,
                                    hold_first_frame=v.hold_first_frame)
        self.objective = (self.direct_regression if v.objective == "direct"
                          else self.data_prediction if v.prediction == "data" else self.velocity_regression)
        # F_θ sees one latent frame: a DiT over a one-frame clip (no temporal patching).
        C = self.latent_shape[0]
        out = 2 * C if v.prediction == "data" and v.objective == "flow" else C  # data: (μ̄, μ̄'/fps)
        if v.backbone == "unet":
            self.net = StackedFramesUNet(v.unet, 1, C, text.dim, out_channels=out, frame_size=self.latent_shape[1:])
        else:
            self.net = DiT(dataclasses.replace(model, patch_t=1), C, text.dim, out_channels=out)
            self.net.check_fits(1, *self.latent_shape[1:], f"the {codec.name} latents of the data")

    @property
    def frame_times(self) -> Tensor:
        """``(N,)`` seconds of the training frames, ``k / fps``."""
        return torch.arange(1, self.num_frames + 1, dtype=torch.float32) / self.fps

    def project(self, latents: Tensor) -> Tensor:
        """Latent videos ``(B, N, *latent_shape)`` → Legendre coefficients ``H`` ``(B, d, s)``."""
        return (latents.flatten(2).double().mT @ self.projection).float()  # (B, d, N) @ (N, s), fit in float64

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One training step of the configured objective (module docstring). batch: ``video``
        ``(B, N, C, H, W)`` in [0, 1] (or cached ``latents``) and ``caption`` (B strings)."""
        v = self.cfg
        latents = batch_latents(batch, self.codec)  # (B, N, *latent)
        if latents.shape[1] != self.num_frames:
            raise ValueError(f"vlfm was built for {self.num_frames}-frame videos, got {latents.shape[1]}")
        H = self.project(latents).repeat_interleave(v.times_per_video, 0)  # (BK, d, s): K times per video
        t = rand((H.shape[0],), generator, H) * self.duration  # (BK,) seconds
        x, target = self.objective(H, t, generator)  # the net's input state and its regression target
        captions, uncaptioned = training_captions([c for c in batch["caption"] for _ in range(v.times_per_video)],
                                                  H.device)
        drop = (rand((H.shape[0],), generator, H) < v.caption_dropout) | uncaptioned  # (BK,)
        out = self.net(x.view(-1, 1, *self.latent_shape), t, drop=drop,
                       **encode_captions(self.text, captions, H.device))
        error = (out.float().flatten(1) - target).square()  # (BK, d) or (BK, 2d)
        if self.objective != self.data_prediction:
            return {"loss": error.mean()}
        error = error.view(error.shape[0], 2, self.latent_shape[0], -1)  # channel halves: (μ̄, μ̄'/fps)
        mean_error, change_error = error[:, 0].mean(), error[:, 1].mean()
        return {"loss": (mean_error + v.change_weight * change_error) / 2, "mean_error": mean_error.detach(),
                "change_error": change_error.detach()}

    # The three objectives: (H (BK, d, s), t (BK,) s) -> (network input (BK, d), target).

    def velocity_regression(self, H: Tensor, t: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The paper's VLFM: at ``ψ_t = σ_t z + μ_t`` regress the path's velocity ``σ'_t z + μ'_t``."""
        ps = self.path.sample(H, randn(H.shape[:2], generator, H), t, self.duration, self.num_frames)
        return ps.psi_t, ps.d_psi_t

    def data_prediction(self, H: Tensor, t: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Ours: at ``ψ_t`` predict the clean trajectory and its change per frame ``(μ̄(t), μ̄'(t)/fps)``
        (channel halves, ``(BK, 2d)``); sampling then steps the path exactly (``VideoLatentPath.data_step``)."""
        mean, change = self.clean_trajectory(H, t)
        ps = self.path.sample(H, randn(H.shape[:2], generator, H), t, self.duration, self.num_frames)
        shape = (H.shape[0], *self.latent_shape)
        return ps.psi_t, torch.cat([mean.view(shape), change.view(shape)], 1).flatten(1)

    def direct_regression(self, H: Tensor, t: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The ablation (paper Table 1): ``G_θ(c, t) → μ̄(t)`` from caption and time alone, no state."""
        mean, _ = self.clean_trajectory(H, t)
        return torch.zeros_like(H[..., 0]), mean

    def clean_trajectory(self, H: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``μ̄(t)`` and its change per frame ``μ̄'(t) / fps``, each ``(BK, d)``."""
        T, N = self.duration, self.num_frames
        mean, change = trajectory(H, t[:, None], T, self.path.hold_until(T, N))  # (BK, 1, d) each
        return mean[:, 0], change[:, 0] / self.fps

    def check_times(self, times: Tensor | list[float] | None) -> Tensor:
        """Requested output times (seconds), 1-D, positive, strictly increasing; default: the frame times."""
        times = self.frame_times if times is None else torch.as_tensor(times, dtype=torch.float32).flatten()
        if times.numel() == 0 or not torch.isfinite(times).all() or (times <= 0).any():
            raise ValueError(f"sample times must be finite seconds > 0, got {times.tolist()}")
        if times.numel() > 1 and (times.diff() <= 0).any():
            raise ValueError("sample times must be strictly increasing")
        return times

    @torch.no_grad()
    def sample(
        self,
        captions: list[str],
        generator: torch.Generator | None = None,
        options: SamplingOptions | None = None,
        times: Tensor | list[float] | None = None,
        steps_per_frame: int | None = None,
        progress: bool = False,
    ) -> Samples:
        """One video per caption, its frames at ``times`` (seconds; default the training frame times).

        One ODE solve from t = 0 serves every requested time (dense output between solver steps), so
        frames at 48 fps cost no more network calls than the solver's steps. Returns
        ``video (B, M, C, H, W)`` in [0, 1] and ``times (M,)``.

        Args:
            captions: B non-empty captions.
            generator: the initial (and, for data prediction, the re-noising) noise.
            options: solver, guidance, tolerances (``options.steps`` is not used: fixed-step solvers
                take ``steps_per_frame`` per frame interval, default ``vlfm.steps_per_frame``).
            times: ``(M,)`` seconds > 0, strictly increasing.
            progress: a progress bar per network evaluation.

        Raises:
            ValueError: bad times. SolverError: the solve fails or a sample comes out non-finite.
        """
        o = options or SamplingOptions()
        warn_if_unconditional_untrained(o.guidance, self.cfg.caption_dropout, "vlfm.caption_dropout")
        steps_per_frame = steps_per_frame or self.cfg.steps_per_frame
        times = self.check_times(times)
        cond = encode_captions(self.text, captions, next(self.net.parameters()).device)
        if self.objective == self.direct_regression:
            return self.sample_direct(captions, cond, o, times)
        if self.objective == self.data_prediction:
            return self.sample_data(captions, cond, o.guidance, times, steps_per_frame, generator, progress)
        return self.sample_velocity(captions, cond, o, times, steps_per_frame, generator, progress)

    def sample_direct(self, captions: list[str], cond: dict[str, Tensor], o: SamplingOptions, times: Tensor) -> Samples:
        """The ablation: ``G_θ(c, t)`` at every requested time in one batched call."""
        B, M = len(captions), times.numel()
        device = next(self.net.parameters()).device
        cond = {k: val.repeat_interleave(M, 0) for k, val in cond.items()}  # (B M, ...)
        x = torch.zeros(B * M, 1, *self.latent_shape, device=device)
        latents = guided_field(self.net, cond, o.guidance)(x, times.to(device).repeat(B)).view(B, M, *self.latent_shape)
        return Samples(video=self.codec.decode(latents), latents=latents, nfe=1, times=times, labels=captions,
                       settings={"guidance": o.guidance})

    def sample_velocity(self, captions: list[str], cond: dict[str, Tensor], o: SamplingOptions, times: Tensor,
                        steps_per_frame: int, generator: torch.Generator | None, progress: bool) -> Samples:
        """The paper's sampler: one ODE solve of ``dψ/dt = F_θ(ψ, c, t)`` from ``ψ_0 = z``, read at ``times``."""
        param = next(self.net.parameters())
        x_init = randn((len(captions), 1, *self.latent_shape), generator, param.float())  # ψ_0 = z
        t_eval = torch.cat([torch.zeros(1), times]).to(param.device)
        step = 1.0 / (self.fps * steps_per_frame)  # σ_t re-noises once per frame interval
        fixed = o.solver in FIXED_STEP_METHODS
        with progress_counted(guided_field(self.net, cond, o.guidance), progress) as velocity:
            sol = solve_ode(velocity, x_init, t_eval, method=o.solver, step_size=step if fixed else None,
                            atol=o.atol, rtol=o.rtol, max_steps=o.max_steps)
        used = {"guidance": o.guidance, "solver": o.solver,
                **({"steps_per_frame": steps_per_frame} if fixed else {"atol": o.atol, "rtol": o.rtol})}
        latents = sol.xs[1:, :, 0].transpose(0, 1)  # (B, M, *latent)
        return Samples(video=self.codec.decode(latents), latents=latents, nfe=sol.nfe, times=times,
                       labels=captions, settings=used)

    def sample_data(self, captions, cond, guidance: float, times: Tensor, steps_per_frame: int,
                    generator: torch.Generator | None, progress: bool) -> Samples:
        """Data prediction: exact steps of the path between network calls (module docstring)."""
        param = next(self.net.parameters())
        B, C, M = len(captions), self.latent_shape[0], times.numel()
        net = guided_field(self.net, cond, guidance)
        h = 1.0 / (self.fps * steps_per_frame)
        n_steps = max(1, math.ceil(float(times[-1]) / h - 1e-6))
        grid = torch.linspace(0.0, n_steps * h, n_steps + 1)  # (n + 1,) seconds
        T, N = self.duration, self.num_frames
        sigma = self.path.sigma(grid, T, N).tolist()
        step_of = torch.searchsorted(grid, times, right=True).clamp(1, n_steps) - 1  # step holding each time
        fresh = self.cfg.rising_noise == "fresh"
        psi = randn((B, 1, *self.latent_shape), generator, param.float())  # ψ_0 = z
        frames = torch.zeros(B, M, *self.latent_shape, device=param.device)
        for i in tqdm(range(n_steps), desc="sample", unit="nfe", disable=not progress, leave=False):
            t = float(grid[i])
            out = net(psi, torch.tensor(t, device=param.device)).float()  # (B, 1, 2C, h, w)
            mean, change = out[:, :, :C], out[:, :, C:] * self.fps  # μ̄̂(t), μ̄̂'(t) per second
            for j in (step_of == i).nonzero().flatten().tolist():  # frames read inside this step
                frames[:, j] = (mean + (float(times[j]) - t) * change)[:, 0]
            rises = fresh and sigma[i + 1] > sigma[i]  # re-noise with new noise: ψ_{t+h} ~ the path's marginal
            noise = randn(psi.shape, generator, psi) if rises else None
            psi = self.path.data_step(psi, mean, change, t, float(grid[i + 1]), sigma[i], sigma[i + 1], noise)
        return Samples(video=self.codec.decode(frames), latents=frames, nfe=n_steps, times=times,
                       labels=captions, settings={"solver": "exact path steps (data prediction)",
                                                  "steps_per_frame": steps_per_frame, "guidance": guidance})
