"""Discriminators and the WAE's adversarial terms, trained with the trainer's ONE optimizer.

Seed 002 appendix A trains an autoencoder against two discriminators: ``D_v`` on videos (its
intermediate features give the feature-matching part of the cost c(x, y), eq. A.2) and ``D_z`` on
latent vectors (the latent divergence, eqs. A.3–A.5). Each discriminator minimises the
non-saturating BCE of eq. (A.5), real against generated; the autoencoder never plays the min-max
("we found that removing the min-max ... led to a more stable training"): it only matches features.

One optimizer updates both sides, so the two terms are built to reach disjoint parameters:

* the discriminator's loss sees the generated sample detached: no gradient reaches the generator;
* the feature-matching term runs the discriminator through ``torch.func.functional_call`` with
  detached weights: gradient reaches the generated sample (and the generator behind it) but not D.

The sum of both is then one loss whose gradient is, per parameter, exactly the gradient of the game
term that parameter plays (tests check both zeros). ``imq_mmd`` is the discriminator-free
alternative of WAE-MMD (Tolstikhin et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from tempoflow.nets.autoencoder import group_norm
from tempoflow.nets.video_autoencoder import LEAK, temporal_strides

__all__ = [
    "IMQ_SCALES",
    "AdversarialTerms",
    "DiscriminatorOutput",
    "LatentDiscriminator",
    "PatchDiscriminator",
    "adversarial_terms",
    "call_frozen",
    "discriminator_bce",
    "imq_mmd",
    "latent_divergence",
]

# WAE-MMD's kernel scales (Tolstikhin et al. 2018, their reference code): the IMQ kernel is summed
# over C = 2 d σ² s for these s, so no single bandwidth has to fit both near and far samples.
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class DiscriminatorOutput:
    """What a discriminator returns.

    Attributes:
        features: the activations after each hidden layer, ``[(N, ...)]`` (the feature-matching space).
        logits: real-vs-generated logits, one per patch ``(N, 1, *grid)`` or per vector ``(N, 1)``.
    """

    features: list[Tensor]
    logits: Tensor


@dataclass
class AdversarialTerms:
    """The two sides of one discriminator game, to be added to one loss.

    Attributes:
        disc_loss: the discriminator's BCE (eq. A.5); its gradient reaches the discriminator only.
        generator_loss: what the autoencoder minimises (feature matching, or MMD²); its gradient never
            reaches the discriminator.
    """

    disc_loss: Tensor
    generator_loss: Tensor


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / pix2pixHD, Isola et al. 2017; Wang et al. 2018) on frames or on clips.

    ``layers`` convolutions of kernel 4, stride 2 (in 3-D: kernel 3 and stride 2 in time while the
    frame count is even), LeakyReLU(0.2), GroupNorm after all but the first; then a 3×3(×3)
    convolution to one logit per patch. pix2pixHD's multi-scale copies are left out.

    Args:
        channels: input channels ``C``.
        width: channels of the first layer, doubled per layer up to 8× (pix2pix's cap).
        layers: stride-2 layers; each input side must be >= 2^layers (the caller checks).
        size: ``(H, W)`` for a frame discriminator (inputs ``(N, C, H, W)``) or ``(T, H, W)`` for a
            clip discriminator (inputs ``(N, C, T, H, W)``).
    """

    def __init__(self, channels: int, width: int, layers: int, size: tuple[int, ...]):
        super().__init__()
        if len(size) not in (2, 3):
            raise ValueError(f"size must be (H, W) or (T, H, W), got {size}")
        video = len(size) == 3
        conv = nn.Conv3d if video else nn.Conv2d
        strides = temporal_strides(size[0], layers) if video else (None,) * layers
        self.blocks = nn.ModuleList()
        c = channels
        for i, s in enumerate(strides):
            w = width * min(2**i, 8)
            if video:
                step = conv(c, w, (3, 4, 4), stride=(s, 2, 2), padding=1)
            else:
                step = conv(c, w, 4, stride=2, padding=1)
            norm = nn.Identity() if i == 0 else group_norm(w)  # pix2pix: no norm on the first layer
            self.blocks.append(nn.Sequential(step, norm, nn.LeakyReLU(LEAK)))
            c = w
        self.to_logits = conv(c, 1, 3, padding=1)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        features = []
        for block in self.blocks:
            x = block(x)  # (N, w_i, [t_i,] H / 2^(i+1), W / 2^(i+1))
            features.append(x)
        return DiscriminatorOutput(features, self.to_logits(x))  # logits (N, 1, *grid)


class LatentDiscriminator(nn.Module):
    """``D_z`` of eq. (A.5): an MLP ``d -> width -> width -> 1`` with LeakyReLU(0.2) on latent vectors
    ``(N, d)``; its two hidden activations ``(N, width)`` are the feature space of eq. (A.4)."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.hidden = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(dim, width), nn.LeakyReLU(LEAK)),
                nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(LEAK)),
            ]
        )
        self.to_logits = nn.Linear(width, 1)

    def forward(self, z: Tensor) -> DiscriminatorOutput:
        features = []
        for layer in self.hidden:
            z = layer(z)  # (N, width)
            features.append(z)
        return DiscriminatorOutput(features, self.to_logits(z))  # logits (N, 1)


def call_frozen(disc: nn.Module, x: Tensor) -> DiscriminatorOutput:
    """``disc(x)`` with its weights detached: gradients reach ``x`` but none of ``disc``'s parameters."""
    weights = {name: p.detach() for name, p in disc.named_parameters()}
    return functional_call(disc, weights, (x,))


def discriminator_bce(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Eq. (A.5): ``−E log σ(D(real)) − E log(1 − σ(D(fake)))`` = ``E softplus(−real) + E softplus(fake)``."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def adversarial_terms(disc: nn.Module, real: Tensor, fake: Tensor, paired: bool) -> AdversarialTerms:
    """The discriminator's loss and the generator's feature matching for one batch.

    Args:
        disc: returns a :class:`DiscriminatorOutput`; per-sample layers only (GroupNorm, no
            BatchNorm), so running ``real`` and ``fake`` as one batch changes nothing.
        real: ``(N, ...)`` samples of the target distribution; they carry no gradient.
        fake: ``(M, ...)`` generated samples (with gradient to the generator); ``M = N`` when paired.
        paired: ``fake[n]`` reconstructs ``real[n]`` (videos, eq. A.2): the mean over layers of the
            per-pair L1 ``mean |f_l(real) − f_l(fake)|``. Otherwise (latents vs prior draws, eq. A.4)
            the two are independent samples and the features are matched in batch mean, as Salimans
            et al. 2016 §3.1 (which the paper cites): ``Σ_l ‖mean_n f_l(real) − mean_n f_l(fake)‖²``.
            Eq. (A.4) read literally — the expected distance over independent pairs — equals this plus
            the feature variances of both sides, and so is not zero when the distributions agree.

    Returns:
        ``disc_loss`` (gradient to ``disc`` only) and ``generator_loss`` (gradient to ``fake`` only).
    """
    if real.shape[1:] != fake.shape[1:] or (paired and len(real) != len(fake)):
        raise ValueError(
            f"real and fake must have the same shape{'' if paired else ' but for N'}, "
            f"got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    n = real.shape[0]
    both = disc(torch.cat([real, fake.detach()]))  # D's own pass: weights trained, generator cut off
    disc_loss = discriminator_bce(both.logits[:n], both.logits[n:])
    real_features = [f[:n].detach() for f in both.features]
    fake_features = call_frozen(disc, fake).features  # generator's pass: D's weights held fixed
    if paired:
        distances = [(r.float() - f.float()).abs().mean() for r, f in zip(real_features, fake_features)]
        matching = torch.stack(distances).mean()
    else:
        distances = [
            (r.float().mean(0) - f.float().mean(0)).square().sum()
            for r, f in zip(real_features, fake_features)
        ]
        matching = torch.stack(distances).sum()
    return AdversarialTerms(disc_loss=disc_loss, generator_loss=matching)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``‖x_i − y_j‖²`` for ``x (N, d)``, ``y (M, d)`` -> ``(N, M)``, through Gram matrices (smooth at 0,
    unlike ``cdist``'s square root), clamped at 0 against roundoff."""
    return (x.square().sum(1, keepdim=True) + y.square().sum(1) - 2 * x @ y.T).clamp_min(0)


def imq_mmd(x: Tensor, y: Tensor, sigma2: float = 1.0, scales: tuple[float, ...] = IMQ_SCALES) -> Tensor:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) between samples ``x (N, d)`` and ``y (M, d)``, with the
    inverse multiquadratic kernel ``k(a, b) = Σ_s C_s / (C_s + ‖a − b‖²)``, ``C_s = 2 d σ² s`` (WAE-MMD,
    Tolstikhin et al. 2018 §4, σ² the prior's variance).

    ``MMD² = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j)``: zero in
    expectation when ``x`` and ``y`` come from one distribution (it can dip below 0). Returns a 0-dim
    float32 tensor.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(
            f"imq_mmd needs (N, d) and (M, d) with N, M >= 2, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    with torch.autocast(x.device.type, enabled=False):  # Gram-matrix distances cancel badly in bf16
        x, y = x.float(), y.float()
        d_xx, d_yy, d_xy = squared_distances(x, x), squared_distances(y, y), squared_distances(x, y)
    n, m = len(x), len(y)
    off_x = 1 - torch.eye(n, device=x.device)  # the i = j terms k(x_i, x_i) bias the estimate
    off_y = 1 - torch.eye(m, device=y.device)
    total = x.new_zeros(())
    for s in scales:
        c = 2 * x.shape[1] * sigma2 * s
        k_xx = (c / (c + d_xx) * off_x).sum() / (n * (n - 1))
        k_yy = (c / (c + d_yy) * off_y).sum() / (m * (m - 1))
        k_xy = (c / (c + d_xy)).mean()
        total = total + k_xx + k_yy - 2 * k_xy
    return total


def latent_divergence(
    z: Tensor, prior: Tensor, kind: str, disc: LatentDiscriminator | None
) -> AdversarialTerms:
    """The WAE regulariser between the batch's latents ``z (N, d)`` and draws ``prior (N, d)`` of N(0, I).

    ``kind = "feature_matching"``: :func:`adversarial_terms` with ``D_z`` (eqs. A.4, A.5), prior draws
    as the real side. ``kind = "mmd"``: :func:`imq_mmd`, no discriminator (``disc_loss`` = 0).
    """
    if kind == "mmd":
        return AdversarialTerms(
            disc_loss=z.new_zeros((), dtype=torch.float32), generator_loss=imq_mmd(z, prior)
        )
    if kind == "feature_matching":
        if disc is None:
            raise ValueError("latent feature matching needs a latent discriminator, got None")
        return adversarial_terms(disc, prior, z, paired=False)
    raise ValueError(f"unknown latent divergence {kind!r} (valid: 'feature_matching', 'mmd')")
