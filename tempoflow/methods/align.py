"""Method ``align``: text-to-video by aligning a frozen text space with a frozen video space
(seed 002 §3 "progressive decoupling", appendix C.3.3; DESIGN §6).

Parts: the frozen text encoder ``E_t`` (pooled caption embedding ``z_t``); the frozen video WAE
``E_v, G`` of a trained ``video_wae`` run (``z_v = E_v(v)``, scaled to unit variance by its codec); the
mapping ``M: z_t → z_s``; the shared autoencoder ``E_s: z_v → z_s``, ``G_s: z_s → z_v``; a discriminator
``D_s`` on the shared space. With ``z_1 = E_s(z_v)`` (the "real" shared code) and ``z_2 = M(E_t(t̂))``
(``t̂`` the caption with noise words, appendix C.3.3), one training step minimises eq. (1)::

    c(z_1, z_2) = λ_s ‖z_1 − z_2‖₁ + λ_feat (‖G_s z_1 − G_s z_2‖₁ + ‖G_s z_1 − z_v‖₁ + ‖G_s z_2 − z_v‖₁)
                  + λ_pixel (‖G G_s z_1 − v‖₁ + ‖G G_s z_2 − v‖₁)                               (eq. 2)
    𝒟_s = L_{D_s} + L_bucket(z_2, z_1)                                                          (eqs. 3, 4)
    loss = c + λ_{z_s} 𝒟_s + BCE(D_s)

``L_{D_s}`` is feature matching through ``D_s`` (as the video WAE's eq. A.4: the paper removes the
min-max), ``BCE(D_s)`` trains ``D_s`` alone (eq. A.5; ``tempoflow.nets.discriminator`` keeps the two
gradients apart). Bucket ids come from the ORIGINAL captions of the batch: equal caption, same bucket.
Norms are the paper's sums over each sample's elements (``align.reduction="sum"``; "mean" averages over
elements instead, which tilts eq. (2) towards the shared term); pixels are compared in the decoder's
[-1, 1] range, before the clamp, so that a pixel predicted far outside [0, 1] still gets a gradient. Generation is deterministic, as
the paper's encoders are: ``v = G(G_s(M(E_t(t))))``.

Baselines on the same parts (``align.objective``, seed 002 Tables 2 and 3), all with the cost (2):

- ``direct_bucket`` / ``direct_infonce``: non-progressive; ``M: z_t → z_v`` directly, i.e. eq. (2)
  with ``E_s = G_s = identity`` and the divergence (bucket + D_s, or InfoNCE) in the video space;
- ``clip_infonce``: progressive, CLIP's InfoNCE with a learnable temperature instead of 𝒟_s;
- ``imagebind``: ``M`` and ``E_s`` are ImageBind's projection heads (LayerNorm + linear), InfoNCE;
- ``progressive_vicreg``: VICReg between ``z_2`` and ``z_1``;
- ``progressive_byol``: BYOL's predictor on the text branch regresses the video branch's code under a
  stop-gradient. The video branch ``E_s`` is itself the target network (SimSiam's form of BYOL,
  Chen & He 2021): an EMA copy cannot follow an online network of another modality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tempoflow.codecs.pixel import latent_unit
from tempoflow.codecs.video_wae import VideoWAECodec
from tempoflow.configio import require
from tempoflow.data.captioned import bucket_ids_of
from tempoflow.errors import ConfigError
from tempoflow.methods.base import Method, Samples, SamplingOptions
from tempoflow.methods.contrastive import CLIP_TEMPERATURE, bucket_loss, byol_loss, info_nce, vicreg
from tempoflow.nets.discriminator import LatentDiscriminator, adversarial_terms
from tempoflow.text import TextEncoder
from tempoflow.text.augment import NoiseWords

__all__ = ["Align", "AlignSpaces", "MappingMLP", "bucket_ids_of", "projection_head"]

MLP_LAYERS = 4  # appendix C.3.3: four linear layers
DROPOUT_AFTER = (2, 3)  # ...with dropout after the second and third (1-based)
MAX_LOGIT_SCALE = 100.0  # CLIP clips its learnable logit scale 1/τ at 100
EMBED_CHUNK = 256  # videos encoded / decoded at once in evaluation


@dataclass(frozen=True)
class Objective:
    """What trains ``align``'s text-to-video mapping, as three choices (seed 002 §3, Tables 2 and 3).

    Attributes:
        space: "progressive" (text and video meet in a learned shared space, then ``G_s`` decodes to
            the video space) or "direct" (text maps straight into the video WAE's space).
        heads: "mlp" (the paper's 4-layer MLPs) or "projection" (ImageBind's LayerNorm + linear heads).
        divergence: "bucket" (ours: 𝒟_s with the bucket loss and ``D_s``), "infonce" (CLIP's, with a
            learned temperature), "vicreg" or "byol".
    """

    space: str
    heads: str
    divergence: str


# Ours, then the baselines, by name (``align.objective``).
OBJECTIVES = {
    "progressive_bucket": Objective("progressive", "mlp", "bucket"),
    "direct_bucket": Objective("direct", "mlp", "bucket"),
    "direct_infonce": Objective("direct", "mlp", "infonce"),
    "clip_infonce": Objective("progressive", "mlp", "infonce"),
    "imagebind": Objective("progressive", "projection", "infonce"),
    "progressive_vicreg": Objective("progressive", "mlp", "vicreg"),
    "progressive_byol": Objective("progressive", "mlp", "byol"),
}
ALIGN_OBJECTIVES = tuple(OBJECTIVES)


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


class MappingMLP(nn.Module):
    """The network of ``M``, ``E_s`` and ``G_s`` (appendix C.3.3): four linear layers; each but the
    last is followed by LayerNorm and Swish (SiLU), and dropout follows the second and third.

    Args:
        d_in, d_out: input and output widths.
        hidden: width of the three hidden layers (512).
        dropout: rate of the two dropout layers (0.1).
    """

    def __init__(self, d_in: int, d_out: int, hidden: int = 512, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        width = d_in
        for i in range(1, MLP_LAYERS):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.SiLU()]
            if i in DROPOUT_AFTER:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(hidden, d_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, d_in) -> (B, d_out)


def projection_head(d_in: int, d_out: int) -> nn.Module:
    """ImageBind's modality head (Girdhar et al. 2023): LayerNorm, then a linear map without bias."""
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_out, bias=False))


def numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy generator seeded by one draw of the torch generator (the trainer's explicit noise)."""
    device = generator.device if generator is not None else "cpu"
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=device)
    return np.random.default_rng(int(seed))


@dataclass
class AlignSpaces:
    """Embeddings of ``N`` (caption, video) pairs in every space of the pipeline.

    Attributes:
        text: ``(N, d_t)`` ``z_t = E_t(t)``.
        text_shared: ``(N, d_a)`` ``M(z_t)``, the text side of the alignment space (``d_a = d_s``, or
            ``d_z`` for the direct objectives).
        video_shared: ``(N, d_a)`` ``E_s(z_v)``, the video side of it.
        video: ``(N, d_z)`` ``z_v = E_v(v)`` (unit variance).
        generated: ``(N, d_z)`` ``G_s(M(z_t))``, the video code generated from the caption.
        reconstructed: ``(N, d_z)`` ``G_s(E_s(z_v))``, the video code through the shared autoencoder.
    """

    text: Tensor
    text_shared: Tensor
    video_shared: Tensor
    video: Tensor
    generated: Tensor
    reconstructed: Tensor


class Align(Method):
    """Text-to-video by latent alignment; ``align.objective`` picks ours or a baseline (module doc).

    Args:
        cfg: the experiment config (``align`` section).
        video_shape: ``(T, C, H, W)`` of the training clips; the video WAE must have trained on it.
        text: the frozen caption encoder ``E_t``.
    """

    name = "align"
    captions = "required"
    task = "alignment"  # text-to-video scores plus alignment scores and latent figures

    def __init__(self, cfg: AlignConfig, video_shape: tuple[int, int, int, int], *, text: TextEncoder,
                 codec: VideoWAECodec, vocabulary: list[str]):
        """``codec``: the frozen video WAE (``E_v``, ``G``) of ``align.video_path``; ``vocabulary``: every
        caption of the data set, all splits (the noise words avoid them all)."""
        super().__init__()
        self.cfg = a = cfg
        self.text = text
        captions = vocabulary
        self.codec = codec
        if tuple(self.codec.wae.video_shape) != tuple(video_shape):
            raise ConfigError(
                f"align.video_path {a.video_path} encodes clips {tuple(self.codec.wae.video_shape)} "
                f"(T, C, H, W), the data are {tuple(video_shape)}"
            )
        self.video_shape = tuple(video_shape)
        self.latent_shape = (1, *self.codec.wae.latent_shape)  # one z_v per clip: (1, d_z)
        d_t, d_z = text.dim, self.codec.wae.latent_shape[0]
        self.objective = objective = OBJECTIVES[a.objective]
        self.direct = objective.space == "direct"
        d_a = d_z if self.direct else a.shared_dim  # the space the text is aligned in
        if objective.heads == "projection":
            self.mapping, self.shared_encoder = projection_head(d_t, d_a), projection_head(d_z, d_a)
        else:
            self.mapping = MappingMLP(d_t, d_a, a.hidden, a.dropout)
            self.shared_encoder = nn.Identity() if self.direct else MappingMLP(d_z, d_a, a.hidden, a.dropout)
        self.shared_decoder = nn.Identity() if self.direct else MappingMLP(d_a, d_z, a.hidden, a.dropout)
        uses_bucket = objective.divergence == "bucket"
        self.shared_disc = LatentDiscriminator(d_a, a.disc_width) if uses_bucket else None
        self.logit_scale = None
        if objective.divergence == "infonce":
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / CLIP_TEMPERATURE)))
        self.predictor = None
        if objective.divergence == "byol":  # BYOL's predictor q: Linear, norm, activation, Linear
            self.predictor = nn.Sequential(
                nn.Linear(d_a, a.hidden), nn.LayerNorm(a.hidden), nn.SiLU(), nn.Linear(a.hidden, d_a)
            )
        self.noise = NoiseWords(captions, a.noise_p) if a.noise_p > 0 else None

    # ---------------------------------------------------------------- encoders and decoders

    def caption_vectors(self, captions: list[str], device: torch.device) -> Tensor:
        """``z_t = E_t(t)``: pooled caption embeddings ``(B, d_t)`` on ``device``."""
        return self.text.lookup(captions, device).pooled.float()

    def noisy_caption_vectors(self, captions: list[str], noisy: list[str], device: torch.device) -> Tensor:
        """``E_t(t̂)`` ``(B, d_t)`` for augmented captions ``noisy`` of ``captions``. A caption with noise
        words is a new string nearly every step: it is encoded without entering the encoder's cache,
        which would otherwise grow (and be re-padded) by a batch each step."""
        z_t = self.caption_vectors(captions, device).clone()  # (B, d_t)
        changed = [i for i, (t, t_hat) in enumerate(zip(captions, noisy)) if t != t_hat]
        if changed:
            with torch.no_grad():
                fresh = self.text.pooled_uncached([noisy[i] for i in changed])  # (n, d_t)
            z_t[changed] = fresh.to(device, z_t.dtype)
        return z_t

    def encode_videos(self, videos: Tensor) -> Tensor:
        """``z_v = E_v(v)``: clips ``(B, T, C, H, W)`` in [0, 1] -> ``(B, d_z)`` (unit variance)."""
        return self.codec.encode(videos)[:, 0]

    def decode_raw(self, z_v: Tensor) -> Tensor:
        """``G(z_v)`` with gradients to ``z_v``: ``(B, d_z)`` -> ``(B, C, T, H, W)`` in about [-1, 1],
        not clamped (the codec's ``decode`` is gradient-free and clamps)."""
        wae = self.codec.wae
        return wae.decoder(z_v * latent_unit(wae))

    def text_to_video_code(self, captions: list[str]) -> Tensor:
        """``G_s(M(E_t(t)))``: the generated video codes ``(B, d_z)``."""
        device = next(self.mapping.parameters()).device
        return self.shared_decoder(self.mapping(self.caption_vectors(captions, device)))

    # ---------------------------------------------------------------- training

    def cost(self, z_1: Tensor, z_2: Tensor, z_v: Tensor, videos: Tensor) -> dict[str, Tensor]:
        """The terms of eq. (2), unweighted, each an L1 norm (:meth:`l1`): shared ``‖z_1 − z_2‖``, ``feature`` (the
        three ``G_s`` terms) and ``pixel`` (the two decoded videos against ``videos`` ``(B, T, C, H, W)``)."""
        l1 = self.l1
        v_1, v_2 = self.shared_decoder(z_1), self.shared_decoder(z_2)  # (B, d_z) each
        feature = l1(v_1, v_2) + l1(v_1, z_v) + l1(v_2, z_v)
        x = videos.transpose(1, 2) * 2 - 1  # (B, C, T, H, W) in [-1, 1], the decoder's range
        y_1, y_2 = self.decode_raw(torch.cat([v_1, v_2])).float().chunk(2)  # (B, C, T, H, W) each
        return {"shared": l1(z_1, z_2), "feature": feature, "pixel": l1(y_1, x) + l1(y_2, x)}

    def l1(self, a: Tensor, b: Tensor) -> Tensor:
        """``‖a − b‖₁`` of eq. (2) for batches ``(B, ...)``: summed over each sample's elements and averaged
        over the batch (``align.reduction="sum"``, the paper's norm), or averaged over every element
        ("mean"), which weighs a 64-d code as much as a 6,144-pixel clip and so shifts the balance the
        paper's λs set towards the shared term (README "Align")."""
        error = (a - b).abs()
        return error.flatten(1).sum(1).mean() if self.cfg.reduction == "sum" else error.mean()

    def alignment(self, z_1: Tensor, z_2: Tensor, bucket_ids: Tensor) -> dict[str, Tensor]:
        """The objective's alignment term ``divergence`` (𝒟_s of eq. 3, or a baseline's loss) and
        ``disc_loss``, the BCE that trains ``D_s`` alone (0 without ``D_s``)."""
        a, divergence = self.cfg, self.objective.divergence
        zero = z_2.new_zeros((), dtype=torch.float32)
        if divergence == "bucket":
            game = adversarial_terms(self.shared_disc, z_1.detach(), z_2, paired=False)  # L_{D_s}
            bucket = bucket_loss(z_2.float(), z_1.float(), bucket_ids, a.alpha, a.lambda_pos, a.lambda_neg,
                                 a.bucket_negatives)
            return {
                "divergence": game.generator_loss + bucket,
                "bucket": bucket.detach(),
                "disc_loss": game.disc_loss,
            }
        if divergence == "infonce":
            temperature = 1.0 / self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
            return {"divergence": info_nce(z_2.float(), z_1.float(), temperature), "disc_loss": zero}
        if divergence == "vicreg":
            return {"divergence": vicreg(z_2.float(), z_1.float()).loss, "disc_loss": zero}
        return {"divergence": byol_loss(self.predictor(z_2).float(), z_1.float()), "disc_loss": zero}

    def players(self) -> list[nn.Module]:
        """The discriminators, each clipped as its own gradient group by the trainer."""
        return [d for d in (self.shared_disc,) if d is not None]

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """batch: ``video`` ``(B, T, C, H, W)`` in [0, 1] and ``caption`` (B strings). Eq. (1)."""
        videos, captions = batch["video"], list(batch["caption"])
        if videos.ndim != 5 or tuple(videos.shape[1:]) != self.video_shape:
            raise ValueError(
                f"align takes clips (B, {', '.join(map(str, self.video_shape))}), "
                f"got shape {tuple(videos.shape)}"
            )
        a = self.cfg
        device = videos.device
        bucket_ids = bucket_ids_of(captions).to(device)  # from the original captions (appendix C.3.3)
        if self.training and self.noise is not None:
            z_t = self.noisy_caption_vectors(
                captions, self.noise.batch(captions, numpy_rng(generator)), device
            )
        else:
            z_t = self.caption_vectors(captions, device)
        z_v = self.encode_videos(videos)  # (B, d_z), frozen
        z_1 = self.shared_encoder(z_v)  # (B, d_a) "real" shared codes
        z_2 = self.mapping(z_t)  # (B, d_a) shared codes from text
        terms = {**self.cost(z_1, z_2, z_v, videos), **self.alignment(z_1, z_2, bucket_ids)}
        total = (
            a.shared_weight * terms["shared"]
            + a.feature_weight * terms["feature"]
            + a.pixel_weight * terms["pixel"]
            + a.divergence_weight * terms["divergence"]
            + terms["disc_loss"]
        )
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}

    # ---------------------------------------------------------------- generation and evaluation

    @torch.no_grad()
    def sample(
        self, captions: list[str], generator: torch.Generator | None = None, options: SamplingOptions | None = None,
        progress: bool = False,
    ) -> Samples:
        """One video per caption, ``G(G_s(M(E_t(t))))``: ``(B, T, C, H, W)`` in [0, 1].

        Deterministic given the caption (the paper's encoders and mapping are deterministic), so
        ``generator`` and ``options`` are accepted for the common sampling interface and not used.
        """
        z_v = self.text_to_video_code(list(captions))  # (B, d_z)
        latents = z_v[:, None]  # (B, 1, d_z): one chunk per clip
        return Samples(video=self.codec.decode(latents), latents=latents, nfe=1, labels=captions)

    @torch.no_grad()
    def embed(self, captions: list[str], videos: Tensor) -> AlignSpaces:
        """Every space of the pipeline for ``N`` pairs: ``captions`` and clips ``(N, T, C, H, W)``."""
        if len(captions) != len(videos):
            raise ValueError(f"{len(captions)} captions but {len(videos)} videos")
        device = next(self.mapping.parameters()).device
        z_v = torch.cat([self.encode_videos(v.to(device)) for v in videos.split(EMBED_CHUNK)])  # (N, d_z)
        z_t = self.caption_vectors(list(captions), device)  # (N, d_t)
        text_shared, video_shared = self.mapping(z_t), self.shared_encoder(z_v)
        return AlignSpaces(
            text=z_t,
            text_shared=text_shared,
            video_shared=video_shared,
            video=z_v,
            generated=self.shared_decoder(text_shared),
            reconstructed=self.shared_decoder(video_shared),
        )
