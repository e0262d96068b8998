"""Contrastive and self-supervised losses on paired embeddings: the bucket loss and its baselines (DESIGN §6).

Every loss takes embeddings of one batch, rows paired by index: ``text[i]`` describes ``video[i]``.

- :func:`bucket_loss` — eq. (4) of the alignment paper (seed 002, §3): every video of the caption's
  bucket is a positive, the direct pair weighted by ``α``; similarities are rescaled cosines, no
  temperature and no softmax.
- :func:`info_nce` — CLIP's symmetric cross-entropy (Radford et al. 2021; van den Oord et al. 2018).
- :func:`vicreg` — invariance, variance and covariance terms (Bardes et al. 2022, eqs. (1)–(6)).
- :func:`byol_loss` — ``2 − 2 cos`` against a detached target (Grill et al. 2020, eq. (2)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["VICRegTerms", "bucket_loss", "byol_loss", "cosine_matrix", "info_nce", "vicreg"]

# Paper 002, appendix C.3: weights of the bucket loss.
BUCKET_ALPHA = 2.0  # weight of the direct text–video pair inside its bucket
BUCKET_LAMBDA_POS = 1.0
BUCKET_LAMBDA_NEG = 1.0
BUCKET_NEGATIVES = ("printed", "mean")  # normalisation of the inter-bucket term (bucket_loss)
CLIP_TEMPERATURE = 0.07  # CLIP's initial temperature (logit scale 1 / 0.07)
# Bardes et al. 2022, §4: λ = μ = 25, ν = 1, γ = 1, ε = 1e-4.
VICREG_SIM_COEFF = 25.0
VICREG_STD_COEFF = 25.0
VICREG_COV_COEFF = 1.0
VICREG_GAMMA = 1.0  # target standard deviation of every embedding dimension
VICREG_EPS = 1e-4  # keeps sqrt(Var) differentiable at zero variance
_NORM_EPS = 1e-8  # floor of the norm in cosine similarities (F.normalize's eps)


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor, min_rows: int = 1) -> None:
    """``a`` and ``b`` both float ``(B, D)`` of one shape with ``B >= min_rows``."""
    for name, x in ((name_a, a), (name_b, b)):
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a float (B, D) tensor, got {what}")
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < min_rows:
        raise ValueError(f"need at least {min_rows} rows, got {name_a} of shape {tuple(a.shape)}")


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """All pairwise cosines ``cos(a_i, b_j)``: ``(B, D), (B', D) → (B, B')``."""
    return F.normalize(a, dim=-1, eps=_NORM_EPS) @ F.normalize(b, dim=-1, eps=_NORM_EPS).T


def bucket_loss(
    text: Tensor,
    video: Tensor,
    bucket_ids: Tensor,
    alpha: float = BUCKET_ALPHA,
    lambda_pos: float = BUCKET_LAMBDA_POS,
    lambda_neg: float = BUCKET_LAMBDA_NEG,
    negatives: str = "printed",
) -> Tensor:
    """Bucket contrastive loss for the one-to-many case, paper 002 eq. (4)::

        L = λ_neg / N_t · Σ_i Σ_{j ∉ B_i} S_ij / |B_i|
          + λ_pos / N_t · (α − Σ_i Σ_{j ∈ B_i} λ_ij S_ij / |B_i|),

        S_ij = (cos(z_t(i), z_v(j)) + 1) / 2 ∈ [0, 1],   λ_ii = α,  λ_ij = 1 (i ≠ j).

    ``B_i`` is the set of videos of the batch whose bucket id equals the caption's (it holds ``i``),
    and ``N_t = N_v = B``. The loss is linear in the similarities: no temperature, no log-sum-exp.
    As printed, ``α`` stands once outside the sum over ``i``; reading it per caption,
    ``Σ_i (α − …)``, would add the constant ``λ_pos α (B − 1) / B`` and leave every gradient unchanged.

    ``negatives`` says how the inter-bucket term of each caption is normalised. ``"printed"`` divides its
    sum by ``|B_i|`` as eq. (4) is printed. With many buckets in a batch that sum has ~B terms against
    the ≤ α + |B_i| − 1 of the positives, and the loss is linear in cos: for caption ``i`` it is
    ``t̂_i · (Σ_{j∉B_i} v̂_j − Σ_{j∈B_i} λ_ij v̂_j) / (2|B_i|)``, minimised by collapsing every video code to one
    direction and every text code to the opposite one (then S = 0 for all pairs, positives included).
    Training on digits reaches exactly that (README "Align"). ``"mean"`` averages the inter-bucket
    similarities instead, Σ_{j∉B_i} S_ij / |{j ∉ B_i}|, so that the two terms weigh alike and aligned
    buckets beat the collapse.

    Args:
        text: ``(B, D)`` shared-space text embeddings ``z_t^s``.
        video: ``(B, D)`` shared-space video embeddings ``z_v^s``; row ``i`` is text ``i``'s direct match.
        bucket_ids: ``(B,)`` integer bucket (caption) ids of the rows.
        alpha: weight ``α`` of the direct pair (appendix C.3: 2).
        lambda_pos, lambda_neg: weights of the intra- and inter-bucket terms (appendix C.3: 1, 1).
        negatives: ``"printed"`` or ``"mean"`` (above).

    Returns:
        0-dim tensor.
    """
    _check_pair("text", text, "video", video)
    if bucket_ids.shape != (text.shape[0],) or bucket_ids.is_floating_point() or bucket_ids.is_complex():
        raise ValueError(
            f"bucket_ids must be an integer tensor of shape ({text.shape[0]},), "
            f"got {bucket_ids.dtype} {tuple(bucket_ids.shape)}"
        )
    batch = text.shape[0]
    s = (cosine_matrix(text, video) + 1.0) / 2.0  # (B, B) S_ij
    same = bucket_ids[:, None] == bucket_ids[None, :]  # (B, B) j ∈ B_i
    bucket_size = same.sum(dim=1).to(s.dtype)  # (B,) |B_i| ≥ 1, the diagonal is always in
    weight = torch.ones_like(s).fill_diagonal_(alpha)  # (B, B) λ_ij
    if negatives not in BUCKET_NEGATIVES:
        raise ValueError(f"negatives must be one of {BUCKET_NEGATIVES}, got {negatives!r}")
    if negatives == "printed":
        inter = (s * ~same).sum(dim=1) / bucket_size  # (B,)
    else:  # a caption whose bucket fills the batch has no negatives: its term is 0
        inter = (s * ~same).sum(dim=1) / (~same).sum(dim=1).clamp_min(1).to(s.dtype)  # (B,)
    positives = (weight * s * same).sum(dim=1) / bucket_size  # (B,)
    return lambda_neg / batch * inter.sum() + lambda_pos / batch * (alpha - positives.sum())


def info_nce(text: Tensor, video: Tensor, temperature: float | Tensor = CLIP_TEMPERATURE) -> Tensor:
    """Symmetric InfoNCE of CLIP: one positive per row (the direct pair), every other row a negative.

    With logits ``ℓ_ij = cos(text_i, video_j) / τ``::

        L = 1/2 · mean_i [logsumexp_j ℓ_ij − ℓ_ii] + 1/2 · mean_j [logsumexp_i ℓ_ij − ℓ_jj].

    Args:
        text: ``(B, D)`` text embeddings.
        video: ``(B, D)`` video embeddings, row ``i`` paired with text ``i``.
        temperature: ``τ > 0``, a float or a 0-dim tensor (learnable, as CLIP's logit scale).

    Returns:
        0-dim tensor.
    """
    _check_pair("text", text, "video", video)
    if not bool(torch.as_tensor(temperature > 0)):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = cosine_matrix(text, video) / temperature  # (B, B)
    matched = logits.diagonal()  # (B,)
    text_to_video = (torch.logsumexp(logits, dim=1) - matched).mean()
    video_to_text = (torch.logsumexp(logits, dim=0) - matched).mean()
    return (text_to_video + video_to_text) / 2.0


@dataclass(frozen=True)
class VICRegTerms:
    """VICReg's weighted ``loss`` and its three unweighted terms, all 0-dim tensors.

    Attributes:
        loss: ``sim_coeff · invariance + std_coeff · variance + cov_coeff · covariance``.
        invariance: mean squared difference of the two branches.
        variance: hinge on the per-dimension standard deviation, averaged over the two branches.
        covariance: squared off-diagonal covariances over ``D``, summed over the two branches.
    """

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def _variance_hinge(z: Tensor, gamma: float, eps: float) -> Tensor:
    """``v(Z) = 1/D Σ_d max(0, γ − sqrt(Var(z_d) + ε))`` with the unbiased variance (eq. (1))."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance_penalty(z: Tensor) -> Tensor:
    """``c(Z) = 1/D Σ_{d ≠ d'} C(Z)_{dd'}²`` with the unbiased covariance ``C(Z)`` (eqs. (3)–(4))."""
    centred = z - z.mean(dim=0)  # (B, D)
    cov = centred.T @ centred / (z.shape[0] - 1)  # (D, D)
    return (cov.square().sum() - cov.diagonal().square().sum()) / z.shape[1]


def vicreg(
    a: Tensor,
    b: Tensor,
    sim_coeff: float = VICREG_SIM_COEFF,
    std_coeff: float = VICREG_STD_COEFF,
    cov_coeff: float = VICREG_COV_COEFF,
    gamma: float = VICREG_GAMMA,
    eps: float = VICREG_EPS,
) -> VICRegTerms:
    """VICReg loss between two batches of embeddings (Bardes et al. 2022, eq. (6))::

        ℓ = λ s(A, B) + μ (v(A) + v(B)) / 2 + ν (c(A) + c(B)),   s = mean ‖a_i − b_i‖² / D.

    The variance term is averaged over the two branches and the covariance term summed, as in the
    authors' released code, for which the default weights ``λ = μ = 25, ν = 1`` were tuned (eq. (6)
    of the paper sums both; the two differ by a factor 2 in ``μ``).

    Args:
        a, b: ``(B, D)`` embeddings of two views, ``B >= 2`` (variances are unbiased).
        sim_coeff, std_coeff, cov_coeff: ``λ, μ, ν``.
        gamma: target standard deviation ``γ``.
        eps: ``ε`` inside the square root.

    Returns:
        :class:`VICRegTerms`.
    """
    _check_pair("a", a, "b", b, min_rows=2)
    invariance = F.mse_loss(a, b)
    variance = (_variance_hinge(a, gamma, eps) + _variance_hinge(b, gamma, eps)) / 2.0
    covariance = _covariance_penalty(a) + _covariance_penalty(b)
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return VICRegTerms(loss=loss, invariance=invariance, variance=variance, covariance=covariance)


def byol_loss(online_pred: Tensor, target: Tensor) -> Tensor:
    """BYOL regression loss ``2 − 2 cos(q_θ(z), z'_ξ)``, averaged over the batch (Grill et al. 2020, eq. (2)).

    The target branch is detached: gradients reach only the online network, the target follows it
    by an exponential moving average elsewhere.

    Args:
        online_pred: ``(B, D)`` predictions ``q_θ(z)`` of the online network.
        target: ``(B, D)`` projections ``z'_ξ`` of the target network.

    Returns:
        0-dim tensor in ``[0, 4]``.
    """
    _check_pair("online_pred", online_pred, "target", target)
    cos = F.cosine_similarity(online_pred, target.detach(), dim=-1, eps=_NORM_EPS)  # (B,)
    return (2.0 - 2.0 * cos).mean()
