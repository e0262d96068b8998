"""Typed configuration: dataclasses, YAML files (packaged ones by name), dotted overrides on the CLI.

A YAML file mirrors the dataclass tree of :class:`ExperimentConfig`. Every key is checked against
the dataclass fields and every value against the field's type, so ``train.step=5`` (a typo) or
``train.steps=fast`` fails with one line that names the key, never a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tempoflow.configio import apply_overrides, from_dict, read_yaml, require
from tempoflow.configs import resolve_config
from tempoflow.data.digits import DigitsConfig
from tempoflow.data.folder import FolderConfig
from tempoflow.data.physics.porous import PorousConfig
from tempoflow.data.physics.sde import SDEConfig
from tempoflow.data.physics.wave import WaveConfig
from tempoflow.data.shapes import ShapesConfig
from tempoflow.errors import ConfigError
from tempoflow.flows.time_sampling import TIME_SAMPLINGS
from tempoflow.nets.unet import UNetConfig


@dataclass(frozen=True)
class PhysicsConfig:
    """Physics trajectories (seed 001 appendix D; ``tempoflow.data.physics``), used when ``data.name`` is
    "wave", "porous" or "sde" (the name is the kind). The kind's own settings — ``t_end`` in seconds, the
    medium, the SDE's rates — are its sub-section, e.g. ``data.physics.wave.t_end``. Defaults are sized for
    a CPU; the paper's sizes are in the comments."""

    n_trajectories: int = 128  # M, train + test (paper: 1024 wave, 1000 porous)
    size: int = 32  # grid side (paper: 64 wave, 100 porous)
    n_times: int = 32  # stored times evenly on (0, t_end] (paper: 64 wave, 50 porous)
    seed: int = 0  # trajectory i is a function of (seed, i) only
    test_fraction: float = 0.25  # share of the trajectories held out (the "test" split)
    split_seed: int = 0  # permutation that draws the test trajectories
    cache_dir: str = "data/physics"  # simulations are cached here; "" = simulate on every load
    # Prepend the fixed initial state u(0) (not stored by the simulators) as frame 0 at t = 0, so that a
    # roll-out starts from the one deterministic initial condition, as in the paper's Algorithm 2.
    include_initial: bool = True
    wave: WaveConfig = field(default_factory=WaveConfig)
    porous: PorousConfig = field(default_factory=PorousConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)

    def __post_init__(self) -> None:
        require(self.n_trajectories >= 2, f"data.physics.n_trajectories must be >= 2, got {self.n_trajectories}")
        require(self.size >= 4, f"data.physics.size must be >= 4, got {self.size}")
        require(self.n_times >= 1, f"data.physics.n_times must be >= 1, got {self.n_times}")
        require(self.seed >= 0, f"data.physics.seed must be >= 0, got {self.seed}")
        require(0.0 < self.test_fraction < 1.0,
                 f"data.physics.test_fraction must be in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to train on; ``name`` selects the sub-config that is used: "shapes" or "digits"
    (captioned video), "folder" (your videos: a folder or an Open-Sora-style CSV), or a physics kind
    "wave", "porous", "sde" (``physics``)."""

    name: str = "shapes"
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    digits: DigitsConfig = field(default_factory=DigitsConfig)  # used when name is "digits"
    folder: FolderConfig = field(default_factory=FolderConfig)  # used when name is "folder": your videos
    # Folder written by `tempoflow data encode`: train on its latents instead of encoding every batch.
    latent_cache: str = ""


@dataclass(frozen=True)
class TextConfig:
    """Caption encoder (``tempoflow.text``)."""

    # "minilm" (shipped, pretrained, offline), "hashing" (no weights) or "clip" (transformers CLIP, by path)
    encoder: str = "minilm"
    path: str = ""  # local path or hub id of a sentence-transformers (or CLIP) model; "" = the shipped MiniLM
    dim: int = 64  # embedding width of the hashing encoder (MiniLM is fixed at 384)
    max_tokens: int = 32  # captions are truncated to this many tokens
    cache: str = ""  # safetensors file of caption embeddings, reused across runs ("" = memory only)


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


RECONSTRUCTION_LOSSES = ("l1", "l2", "l1+l2")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Frame autoencoder (method ``autoencoder``; the ``autoencoder`` codec loads what it trains)."""

    width: int = 32  # channels of the first level
    multipliers: tuple[int, ...] = (1, 2, 2)  # one level per entry; the grid shrinks 2x per extra level
    z_channels: int = 4  # latent channels per cell
    kl_weight: float = 1e-6  # β of the KL term (latent diffusion's KL-f8 uses 1e-6)
    # Pixel reconstruction loss: "l1", "l2" or "l1+l2". L1 alone is median-seeking: on frames that
    # are mostly background it can settle on drawing background only; L2 keeps small objects.
    reconstruction: str = "l1+l2"
    scale_momentum: float = 0.99  # running estimate of the latent std, for the codec's scaling
    # "kl": stochastic encoder + β KL (above). "wae": deterministic encoder, wae_weight × a divergence
    # between the batch's latents and N(0, I) (Tolstikhin et al. 2018; seed 002 appendix A).
    regulariser: str = "kl"
    divergence: str = "feature_matching"  # WAE divergence: see WAE_DIVERGENCES
    wae_weight: float = 0.5  # λ_z / λ_pixel of seed 002 appendix C.3.2 (5 / 10)
    disc_weight: float = 0.0  # λ_f of the patch-discriminator feature matching; 0 = no discriminator
    disc_width: int = 32  # channels of the discriminator's first layer (doubling per layer)
    disc_layers: int = 3  # its stride-2 layers: patches of 2^layers pixels per logit (pix2pix default 3)
    latent_disc_width: int = 256  # hidden width of the latent discriminator D_z (feature_matching)

    def __post_init__(self) -> None:
        require(self.width >= 4 and len(self.multipliers) >= 1, "autoencoder.width >= 4 and >= 1 level")
        require(self.z_channels >= 1, f"autoencoder.z_channels must be >= 1, got {self.z_channels}")
        require(self.kl_weight >= 0, f"autoencoder.kl_weight must be >= 0, got {self.kl_weight}")
        require(self.reconstruction in RECONSTRUCTION_LOSSES,
                 f"autoencoder.reconstruction must be one of {RECONSTRUCTION_LOSSES}, got {self.reconstruction!r}")
        require(self.regulariser in ("kl", "wae"),
                 f"autoencoder.regulariser must be 'kl' or 'wae', got {self.regulariser!r}")
        _check_wae("autoencoder", self.divergence, self.disc_width, self.disc_layers, self.latent_disc_width,
                   {"wae_weight": self.wae_weight, "disc_weight": self.disc_weight})


# How a WAE measures the distance from the aggregate posterior of a batch's latents to N(0, I):
# "feature_matching" — the paper's latent feature matching (seed 002 eqs. A.3–A.5) through a latent
# discriminator D_z; "mmd" — unbiased MMD² with inverse-multiquadratic kernels (WAE-MMD).
WAE_DIVERGENCES = ("feature_matching", "mmd")


def _check_wae(section: str, divergence: str, disc_width: int, disc_layers: int, latent_disc_width: int,
               weights: dict[str, float]) -> None:
    """Validation shared by the two WAE configs (frame autoencoder and video WAE)."""
    require(divergence in WAE_DIVERGENCES,
             f"{section}.divergence must be one of {WAE_DIVERGENCES}, got {divergence!r}")
    require(disc_width >= 4, f"{section}.disc_width must be >= 4, got {disc_width}")
    require(disc_layers >= 1, f"{section}.disc_layers must be >= 1, got {disc_layers}")
    require(latent_disc_width >= 1, f"{section}.latent_disc_width must be >= 1, got {latent_disc_width}")
    for name, value in weights.items():
        require(value >= 0, f"{section}.{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class VideoWAEConfig:
    """Video WAE ``video_wae`` ("3DConv-Base", seed 002 appendix A and C.3.2): a 3-D conv encoder of a
    fixed-length clip to one latent vector of ``d_z`` numbers and its mirror decoder.

    Weights are the paper's λ's divided by λ_pixel (10, 10, 5 for pixel, feature, divergence); the
    perceptual term is a mean over VGG feature elements, not the paper's sum, so its λ_p does not carry over.
    """

    width: int = 32  # channels of the first level
    multipliers: tuple[int, ...] = (1, 2, 4, 8)  # one stride-2 level each (space always, time while even)
    d_z: int = 64  # latent vector size (3DConv-Base)
    pixel_weight: float = 1.0  # λ_pixel: pixel loss between clip and reconstruction
    # Pixel loss: the paper's "l1", or "l2" / "l1+l2" (L1 alone can settle on background only,
    # see autoencoder.reconstruction).
    reconstruction: str = "l1"
    feature_weight: float = 1.0  # λ_f: L1 feature matching through the 3-D discriminator; 0 = no D_v
    divergence_weight: float = 0.5  # λ_z: latent divergence to N(0, I)
    divergence: str = "feature_matching"  # see WAE_DIVERGENCES
    perceptual_weight: float = 0.1  # λ_p: VGG feature MSE, only when vgg_path is set
    vgg_path: str = ""  # local torchvision VGG16/VGG19 state dict (features.*); "" = no perceptual term
    disc_width: int = 32  # 3-D patch discriminator: first-layer channels, doubling per layer
    disc_layers: int = 3  # its stride-2 layers
    latent_disc_width: int = 256  # hidden width of D_z (the paper's D_z has 133K weights at d_z = 64)
    scale_momentum: float = 0.99  # running estimate of the latent std, for the codec's scaling

    def __post_init__(self) -> None:
        require(self.width >= 4 and len(self.multipliers) >= 1, "video_wae.width >= 4 and >= 1 level")
        require(all(m >= 1 for m in self.multipliers),
                 f"video_wae.multipliers must be >= 1, got {self.multipliers}")
        require(self.d_z >= 1, f"video_wae.d_z must be >= 1, got {self.d_z}")
        require(self.reconstruction in RECONSTRUCTION_LOSSES,
                 f"video_wae.reconstruction must be in {RECONSTRUCTION_LOSSES}, got {self.reconstruction!r}")
        require(0.0 <= self.scale_momentum < 1.0,
                 f"video_wae.scale_momentum must be in [0, 1), got {self.scale_momentum}")
        _check_wae("video_wae", self.divergence, self.disc_width, self.disc_layers, self.latent_disc_width,
                   {"pixel_weight": self.pixel_weight, "feature_weight": self.feature_weight,
                    "divergence_weight": self.divergence_weight, "perceptual_weight": self.perceptual_weight})


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
        require(self.min_sigma >= MIN_SIGMA_FLOOR,
                 f"flow.min_sigma must be >= {MIN_SIGMA_FLOOR:g}, got {self.min_sigma:g}: near t = 1 the velocity "
                 "(x̂ − x_t) / min_sigma multiplies the network's error by 1 / min_sigma, so samples overflow and "
                 "adaptive solvers stall")


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
        require(0.0 < self.sigma_min < 1.0, f"vlfm.sigma_min must be in (0, 1), got {self.sigma_min}")
        require(self.alpha > 0, f"vlfm.alpha must be > 0, got {self.alpha}")
        require(self.times_per_video >= 1, f"vlfm.times_per_video must be >= 1, got {self.times_per_video}")
        require(0.0 <= self.caption_dropout < 1.0, f"vlfm.caption_dropout must be in [0, 1), got {self.caption_dropout}")
        require(self.steps_per_frame >= 1, f"vlfm.steps_per_frame must be >= 1, got {self.steps_per_frame}")


LIFTING_LOSSES = ("auto", "l2", "bce")


@dataclass(frozen=True)
class LiftingConfig:
    """Stochastic Lifting ``lifting`` (seed 001 §2, Algorithms 1–2, appendices E–F; DESIGN §5). The window and
    the UNet are shared with ``ardm``, so that the two methods compare on the same backbone (Table 1)."""

    window: int = 3  # m, the Markov window: history frames stacked on channels (Table 3: 3 for wave, flow)
    label_dim: int = 64  # d of the fixed labels ξ ~ N(0, I_d) (Table 3: 64 for wave, flow)
    label_seed: int = 0  # ξ of a training pair is a function of (label_seed, trajectory, target frame)
    loss: str = "auto"  # "l2" (eq. 6), "bce" on logits (app. F, video in [0, 1]); "auto": bce for shapes
    residual: bool = False  # l2 only: the UNet predicts x_k − x_{k−1} (Corollary 1's F = x + dt R)
    pairs_per_video: int = 1  # training pairs drawn from each trajectory of a batch
    eval_trajectories: int = 64  # N trajectories rolled out by `tempoflow eval` (paper: 512)
    unet: UNetConfig = field(default_factory=UNetConfig)  # defaults: the paper's "medium" UNet

    def __post_init__(self) -> None:
        require(self.window >= 1, f"lifting.window must be >= 1, got {self.window}")
        require(self.label_dim >= 1, f"lifting.label_dim must be >= 1, got {self.label_dim}")
        require(self.loss in LIFTING_LOSSES, f"lifting.loss must be one of {LIFTING_LOSSES}, got {self.loss!r}")
        require(not (self.residual and self.loss == "bce"), "lifting.residual needs an l2 loss, not bce")
        require(self.pairs_per_video >= 1, f"lifting.pairs_per_video must be >= 1, got {self.pairs_per_video}")
        require(self.eval_trajectories >= 2,
                 f"lifting.eval_trajectories must be >= 2, got {self.eval_trajectories}")


@dataclass(frozen=True)
class ARDMConfig:
    """The multi-step baseline ``ardm``: ``lifting``'s window and UNet with a flow-time input, trained by
    conditional flow matching on the next frame, ``steps`` solver steps per frame (DESIGN §5)."""

    path: str = "condot"  # probability path (tempoflow.flows.paths)
    sigma_min: float = 0.0
    solver: str = "euler"  # fixed-step: euler | midpoint | heun | rk4
    steps: int = 10  # s, solver steps per frame (Table 1: 2, 5, 10, 20, 40)

    def __post_init__(self) -> None:
        require(self.solver in ("euler", "midpoint", "heun", "rk4"),
                 f"ardm.solver must be a fixed-step solver (euler, midpoint, heun, rk4), got {self.solver!r}")
        require(self.steps >= 1, f"ardm.steps must be >= 1, got {self.steps}")
        require(0.0 <= self.sigma_min < 1.0, f"ardm.sigma_min must be in [0, 1), got {self.sigma_min}")


# What trains the text-to-video mapping of ``align`` (seed 002 §3, Tables 2 and 3): ours, then the baselines.
ALIGN_OBJECTIVES = ("progressive_bucket", "direct_bucket", "direct_infonce", "clip_infonce", "imagebind",
                    "progressive_vicreg", "progressive_byol")


@dataclass(frozen=True)
class AlignConfig:
    """Text–video latent alignment ``align`` (seed 002 §3, appendix C.3.3; DESIGN §6). Weights are the
    paper's, on its norms: eq. (2)'s L1 terms are sums over a sample's elements (``reduction``)."""

    video_path: str = ""  # a trained video_wae run: the frozen video space E_v, G
    objective: str = "progressive_bucket"  # see ALIGN_OBJECTIVES
    shared_dim: int = 64  # d_{z_s} of the shared space (Table C.1: 64)
    hidden: int = 512  # width of M, E_s, G_s (appendix C.3.3)
    dropout: float = 0.1  # after the 2nd and 3rd layers of M, E_s, G_s
    shared_weight: float = 100.0  # λ_s: ‖z_1 − z_2‖₁ in the shared space, eq. (2)
    feature_weight: float = 10.0  # λ_feat: the three video-code terms through G_s, eq. (2)
    pixel_weight: float = 30.0  # λ^s_pixel: the two decoded-video terms through G, eq. (2)
    divergence_weight: float = 5.0  # λ_{z_s}: the divergence 𝒟_s (or a baseline's alignment loss), eq. (1)
    alpha: float = 2.0  # bucket loss: weight of the direct text–video pair, eq. (4)
    lambda_pos: float = 1.0
    lambda_neg: float = 1.0
    # eq. (2)'s ‖·‖₁: "sum" over each sample's elements (the paper) or "mean" over elements. With means the
    # 64-d shared term outweighs the 6,144-pixel term ~100x more than in the paper, and codes collapse.
    reduction: str = "sum"
    # inter-bucket term of eq. (4): "printed" (Σ / |B_i|, collapses: tempoflow.methods.contrastive) or "mean"
    bucket_negatives: str = "printed"
    noise_p: float = 0.15  # noise-word insertion probability per gap (appendix C.3.3); 0 = off
    disc_width: int = 256  # hidden width of D_s (the paper's D_s has 133K weights at d = 64)

    def __post_init__(self) -> None:
        require(self.objective in ALIGN_OBJECTIVES,
                 f"align.objective must be one of {ALIGN_OBJECTIVES}, got {self.objective!r}")
        require(self.reduction in ("sum", "mean"), f"align.reduction must be 'sum' or 'mean', got {self.reduction!r}")
        require(self.bucket_negatives in ("printed", "mean"),
                 f"align.bucket_negatives must be 'printed' or 'mean', got {self.bucket_negatives!r}")
        for name in ("shared_dim", "hidden", "disc_width"):
            require(getattr(self, name) >= 1, f"align.{name} must be >= 1, got {getattr(self, name)}")
        require(0.0 <= self.dropout < 1.0, f"align.dropout must be in [0, 1), got {self.dropout}")
        require(0.0 <= self.noise_p <= 1.0, f"align.noise_p must be in [0, 1], got {self.noise_p}")
        for name in ("shared_weight", "feature_weight", "pixel_weight", "divergence_weight", "alpha",
                     "lambda_pos", "lambda_neg"):
            require(getattr(self, name) >= 0, f"align.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class SampleConfig:
    """ODE sampling."""

    solver: str = "heun"  # euler | midpoint | heun | rk4 | dopri5
    steps: int = 16  # fixed-step solvers
    guidance: float = 2.0  # classifier-free guidance scale (1 = conditional model, no guidance)
    atol: float = 1e-4  # dopri5 tolerances
    rtol: float = 1e-4
    max_steps: int = 1000  # adaptive solvers: the most steps (accepted + rejected) before giving up
    num_per_prompt: int = 2
    seed: int = 1234

    def __post_init__(self) -> None:
        require(self.steps >= 1, f"sample.steps must be >= 1, got {self.steps}")
        require(self.num_per_prompt >= 1, f"sample.num_per_prompt must be >= 1, got {self.num_per_prompt}")
        require(self.atol > 0 and self.rtol > 0, "sample.atol and sample.rtol must be > 0")
        require(self.max_steps >= 1, f"sample.max_steps must be >= 1, got {self.max_steps}")


@dataclass(frozen=True)
class TrainConfig:
    """One trainer for every method (``tempoflow.train``)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine schedule decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "auto"  # "auto" (bf16 on GPU, none on CPU), "no", "bf16"
    compile: bool = False  # torch.compile the method's network (pays on GPU for long runs)
    # CPU only: 0 = choose between all cores and one by measured speed while training (degrades
    # gracefully when another job shares the cores; tempoflow.train.threads), N = exactly N threads
    # (bit-for-bit reproducible runs need a fixed count).
    cpu_threads: int = 0
    log_every: int = 25
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            require(getattr(self, name) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        require(self.cpu_threads >= 0, f"train.cpu_threads must be >= 0 (0 = adaptive), got {self.cpu_threads}")
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        require(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        require(self.grad_clip > 0, f"train.grad_clip must be > 0, got {self.grad_clip}")
        require(self.mixed_precision in ("auto", "no", "bf16", "fp16"),
                 f"train.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")


@dataclass(frozen=True)
class EvalConfig:
    """What ``tempoflow eval`` and the demo sample and score."""

    prompts: tuple[str, ...] = ()  # empty = a fixed selection of train and held-out captions
    num_prompts: int = 8
    lpips_backbone: str = ""  # local torchvision AlexNet weights (alexnet-owt-*.pth): enables B-LPIPS
    lpips_lin: str = ""  # local LPIPS v0.1 linear layers (lpips weights/v0.1/alex.pth)
    i3d_path: str = ""  # local Kinetics-400 I3D weights: enables FVD/KVD (needs clips of >= 16 frames)
    feature_size: int = 4  # thumbnail side of the offline "FD-thumb" features (not FVD)
    # Continuous-time methods (vlfm): frames at time_rate × the training fps over time_extent × T,
    # scored against the renderer at those times (interpolation and extrapolation).
    time_rate: int = 3
    time_extent: float = 2.0

    def __post_init__(self) -> None:
        require(self.time_rate >= 1, f"eval.time_rate must be >= 1, got {self.time_rate}")
        require(self.time_extent >= 1.0, f"eval.time_extent must be >= 1, got {self.time_extent}")


@dataclass(frozen=True)
class ExperimentConfig:
    method: str = "flow"
    out_dir: str = "runs/default"
    device: str = "auto"  # "auto", "cpu" or "cuda"
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: DiTConfig = field(default_factory=DiTConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    video_wae: VideoWAEConfig = field(default_factory=VideoWAEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    vlfm: VLFMConfig = field(default_factory=VLFMConfig)
    lifting: LiftingConfig = field(default_factory=LiftingConfig)
    ardm: ARDMConfig = field(default_factory=ARDMConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)























def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    ``path`` is a YAML file or a packaged config's name (``"demo"``; see
    :func:`tempoflow.configs.resolve_config`).

    Raises:
        ConfigError: no such file or packaged config, invalid YAML, an unknown key or a wrong value.
    """
    data = read_yaml(resolve_config(path)) if path is not None else {}
    return from_dict(ExperimentConfig, apply_overrides(data, list(overrides)))


def load_sections(path: str | Path, sections: tuple[str, ...]) -> dict:
    """The given sections of a partial YAML config, type-checked: ``{"sample": {"steps": 8}}``.

    For settings applied on top of a checkpoint's config (``tempoflow eval --config``). ``path`` is a
    YAML file or a packaged config's name (``"eval_flow"``).

    Raises:
        ConfigError: no such file or packaged config, invalid YAML, another section, a wrong value.
    """
    path = resolve_config(path)
    data = read_yaml(path)
    if set(data) - set(sections):
        extra = sorted(set(data) - set(sections))
        raise ConfigError(f"config file {path} may only set {', '.join(sections)}; it sets {extra}")
    cfg = from_dict(ExperimentConfig, data)  # type checks every key
    return {s: {k: getattr(getattr(cfg, s), k) for k in (data[s] or {})} for s in data}
