"""Contrastive losses: eq. (4) against a brute-force loop, InfoNCE against cross_entropy, VICReg and
BYOL against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tempoflow.methods.contrastive import bucket_loss, byol_loss, info_nce, vicreg


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bucket_loss_loop(text, video, bucket_ids, alpha, lambda_pos, lambda_neg, negatives="printed") -> float:
    """Eq. (4) of paper 002 typed term by term with Python loops over (i, j): the reference.
    ``negatives="mean"`` divides caption i's inter-bucket sum by its number of inter-bucket videos."""
    n = len(text)
    ids = bucket_ids.tolist()
    negative, positive = 0.0, 0.0
    for i in range(n):
        bucket = [j for j in range(n) if ids[j] == ids[i]]  # B_i
        others = n - len(bucket)
        for j in range(n):
            cos = float(torch.dot(text[i], video[j]) / (text[i].norm() * video[j].norm()))
            s_ij = (cos + 1.0) / 2.0
            if j in bucket:
                weight = alpha if i == j else 1.0
                positive += weight * s_ij / len(bucket)
            else:
                negative += s_ij / (len(bucket) if negatives == "printed" else others)
    return lambda_neg / n * negative + lambda_pos / n * (alpha - positive)


@pytest.mark.parametrize(
    "ids, alpha, lambda_pos, lambda_neg",
    [
        ([0, 0, 1, 2, 2, 2, 3, 1], 2.0, 1.0, 1.0),  # the paper's weights, buckets of sizes 1–3
        ([5, 5, 5, 5], 2.0, 1.0, 1.0),  # one bucket: no negatives
        ([0, 1, 2, 3, 4], 1.5, 0.7, 1.3),  # one-to-one
        ([3, 1, 3, 1, 3, 7], 3.0, 2.0, 0.5),
    ],
)
def test_bucket_loss_matches_the_double_loop_of_eq_4(ids, alpha, lambda_pos, lambda_neg):
    g = _generator(1)
    text = torch.randn(len(ids), 6, generator=g, dtype=torch.float64)
    video = torch.randn(len(ids), 6, generator=g, dtype=torch.float64)
    bucket_ids = torch.tensor(ids)
    got = bucket_loss(text, video, bucket_ids, alpha=alpha, lambda_pos=lambda_pos, lambda_neg=lambda_neg)
    want = _bucket_loss_loop(text, video, bucket_ids, alpha, lambda_pos, lambda_neg)
    assert float(got) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("ids", [[0, 0, 1, 2, 2, 2, 3, 1], [5, 5, 5, 5], [0, 1, 2, 3, 4]])
def test_bucket_loss_with_mean_negatives_matches_the_double_loop(ids):
    g = _generator(3)
    text = torch.randn(len(ids), 6, generator=g, dtype=torch.float64)
    video = torch.randn(len(ids), 6, generator=g, dtype=torch.float64)
    bucket_ids = torch.tensor(ids)
    got = bucket_loss(text, video, bucket_ids, alpha=2.0, negatives="mean")
    want = _bucket_loss_loop(text, video, bucket_ids, 2.0, 1.0, 1.0, negatives="mean")
    assert float(got) == pytest.approx(want, abs=1e-12)


def test_printed_bucket_loss_prefers_the_collapse_and_mean_negatives_do_not():
    # Eight captions of eight buckets. "Aligned": text i = video i = e_i (S_ii = 1, S_ij = 1/2).
    # "Collapsed": every video u, every text −u (S = 0 everywhere, the direct pairs included).
    # By hand, B = 8, α = 2: printed — aligned 7·½ − (16 − 2)/8 = 1.75, collapsed 2/8 = 0.25;
    # mean — aligned ½ − 1.75 = −1.25, collapsed 0.25. Training on digits found the printed collapse.
    eye = torch.eye(8, dtype=torch.float64)
    ids = torch.arange(8)
    u = torch.zeros(8, dtype=torch.float64)
    u[0] = 1.0
    collapsed_text, collapsed_video = -u.expand(8, 8), u.expand(8, 8)
    for negatives, aligned_want, collapsed_want in (("printed", 1.75, 0.25), ("mean", -1.25, 0.25)):
        aligned = float(bucket_loss(eye, eye, ids, alpha=2.0, negatives=negatives))
        collapsed = float(bucket_loss(collapsed_text, collapsed_video, ids, alpha=2.0, negatives=negatives))
        assert aligned == pytest.approx(aligned_want, abs=1e-12)
        assert collapsed == pytest.approx(collapsed_want, abs=1e-12)
    with pytest.raises(ValueError, match="negatives"):
        bucket_loss(eye, eye, ids, negatives="sum")


def test_bucket_loss_with_distinct_buckets_is_linear_not_infonce():
    # Reference: eq. (4) with |B_i| = 1 reduces by hand to
    #   L = λ_neg / B · Σ_{i≠j} S_ij + λ_pos / B · (α − α Σ_i S_ii),
    # a loss linear in the similarities — not the log-softmax of InfoNCE, whatever α.
    g = _generator(2)
    text = torch.randn(6, 5, generator=g, dtype=torch.float64)
    video = torch.randn(6, 5, generator=g, dtype=torch.float64)
    s = (F.cosine_similarity(text[:, None], video[None, :], dim=-1) + 1) / 2  # (6, 6)
    off_diagonal = s.sum() - s.trace()
    for alpha in (1.0, 2.0):
        got = bucket_loss(text, video, torch.arange(6), alpha=alpha)
        want = off_diagonal / 6 + (alpha - alpha * s.trace()) / 6
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    assert (
        abs(float(bucket_loss(text, video, torch.arange(6), alpha=1.0) - info_nce(text, video, 1.0))) > 1e-2
    )


def _rotated(theta: torch.Tensor) -> torch.Tensor:
    """A unit vector at angle θ from e_0 towards e_5, orthogonal to e_1..e_4 (differentiable in θ)."""
    zeros = torch.zeros(4, dtype=torch.float64)
    return torch.cat([theta.cos()[None], zeros, theta.sin()[None]])


def test_pulling_a_positive_closer_lowers_the_loss_alpha_times_more_for_the_direct_pair():
    # Texts 0 and 1 share bucket 0 but differ (e_0, e_3, as after noise-word augmentation); text 2 is
    # bucket 1 (e_1). Videos rotate in the (e_0, e_5) plane, orthogonal to e_1 and e_3, so rotating
    # video 0 moves only S_00 (direct, λ = α) and rotating video 1 only S_01 (λ = 1).
    # Reference: ∂L/∂S_ij = −λ_pos λ_ij / (B |B_i|) for positives, +λ_neg / (B |B_i|) for negatives.
    text = torch.zeros(3, 6, dtype=torch.float64)
    text[0, 0] = text[1, 3] = text[2, 1] = 1.0
    ids = torch.tensor([0, 0, 1])
    alpha, theta = 2.0, 0.8

    def loss_with(row: int, angle: torch.Tensor) -> torch.Tensor:
        angles = [torch.tensor(a, dtype=torch.float64) for a in (1.0, 1.2, 0.9)]
        angles[row] = angle
        video = torch.stack([_rotated(a) for a in angles])  # (3, 6)
        return bucket_loss(text, video, ids, alpha=alpha)

    grads = []
    for row in (0, 1, 2):
        angle = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        loss_with(row, angle).backward()
        grads.append(float(angle.grad))
    # dS_0j/dθ = −sin θ / 2 for text e_0; B = 3, |B_0| = 2.
    ds = -math.sin(theta) / 2
    assert grads[0] == pytest.approx(-alpha / (3 * 2) * ds, abs=1e-12)  # direct pair: weight α
    assert grads[1] == pytest.approx(-1.0 / (3 * 2) * ds, abs=1e-12)  # other positive: weight 1
    assert grads[2] == pytest.approx(+1.0 / (3 * 2) * ds, abs=1e-12)  # negative of text 0 (|B_0| = 2)
    # Decreasing θ pulls the video towards text 0: the loss falls for positives, rises for the negative.
    assert grads[0] > 0 and grads[1] > 0 and grads[2] < 0


def test_bucket_loss_rejects_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="bucket_ids"):
        bucket_loss(x, x, torch.zeros(4))  # float ids
    with pytest.raises(ValueError, match="bucket_ids"):
        bucket_loss(x, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="one shape"):
        bucket_loss(x, torch.randn(5, 3), torch.zeros(4, dtype=torch.long))


def test_info_nce_matches_cross_entropy():
    # Reference: F.cross_entropy on the logit matrix and its transpose, labels on the diagonal.
    g = _generator(3)
    text = torch.randn(7, 4, generator=g, dtype=torch.float64)
    video = torch.randn(7, 4, generator=g, dtype=torch.float64)
    for tau in (0.07, 0.5, 2.0):
        logits = F.normalize(text, dim=1) @ F.normalize(video, dim=1).T / tau
        labels = torch.arange(7)
        want = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        torch.testing.assert_close(info_nce(text, video, tau), want, atol=1e-12, rtol=0)
    # Perfect, well-separated pairs at a small temperature: the loss goes to 0.
    eye = torch.eye(5, dtype=torch.float64)
    assert float(info_nce(eye, 3.0 * eye, 0.01)) < 1e-30
    # All embeddings equal: every row is uniform, loss log B.
    ones = torch.ones(5, 3, dtype=torch.float64)
    assert float(info_nce(ones, ones, 0.1)) == pytest.approx(math.log(5), abs=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(text, video, 0.0)


def test_vicreg_terms_on_a_hand_computed_batch():
    # a = [[1, 2], [−1, −2]]: unbiased Var = (2, 8), so no variance hinge; Cov_01 = 4, c(a) = 2·16 / 2 = 16.
    # b = 0: std = sqrt(1e-4) = 0.01 per dimension, v(b) = 0.99; c(b) = 0.
    # s = mean((a − b)²) = (1 + 4 + 1 + 4) / 4 = 2.5.
    a = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    b = torch.zeros(2, 2, dtype=torch.float64)
    terms = vicreg(a, b)
    assert float(terms.invariance) == pytest.approx(2.5, abs=1e-12)
    assert float(terms.variance) == pytest.approx(0.99 / 2, abs=1e-12)
    assert float(terms.covariance) == pytest.approx(16.0, abs=1e-12)
    assert float(terms.loss) == pytest.approx(25 * 2.5 + 25 * 0.495 + 16.0, abs=1e-10)


def test_vicreg_covariance_against_numpy_cov():
    # Reference: numpy.cov (unbiased) for the off-diagonal sum; identical views have no invariance term.
    g = _generator(4)
    a = torch.randn(16, 5, generator=g, dtype=torch.float64)
    cov = torch.from_numpy(np.cov(a.numpy(), rowvar=False))
    off = (cov.square().sum() - cov.diagonal().square().sum()) / 5
    terms = vicreg(a, a.clone())
    assert float(terms.invariance) == 0.0
    torch.testing.assert_close(terms.covariance, 2 * off, atol=1e-12, rtol=0)
    want_var = torch.relu(1 - torch.sqrt(cov.diagonal() + 1e-4)).mean()
    torch.testing.assert_close(terms.variance, want_var, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        vicreg(a[:1], a[:1])


def test_byol_loss_on_identical_orthogonal_and_opposite_vectors():
    # Reference: 2 − 2 cos with cos = 1, 0, −1.
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert float(byol_loss(x, 3.0 * x)) == pytest.approx(0.0, abs=1e-7)
    assert float(byol_loss(x, x.flip(0))) == pytest.approx(2.0, abs=1e-7)
    assert float(byol_loss(x, -x)) == pytest.approx(4.0, abs=1e-7)
    pred = torch.randn(4, 3, generator=_generator(5), requires_grad=True)
    target = torch.randn(4, 3, generator=_generator(6), requires_grad=True)
    byol_loss(pred, target).backward()
    assert target.grad is None and pred.grad is not None and float(pred.grad.abs().sum()) > 0
