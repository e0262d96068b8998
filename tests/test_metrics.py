"""Video and distribution metrics against independent references.

References: scikit-image's ``structural_similarity`` (SSIM), numpy formulas (PSNR, Gaussian fits),
``scipy.linalg.sqrtm`` and the diagonal closed form (Fréchet distance), a numpy double loop over
pairs (unbiased polynomial MMD²), and hand-made buckets whose best match is known.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from tempoflow.metrics import (
    error_vs_time,
    frechet_distance,
    frechet_distance_features,
    gaussian_fit,
    nearest_in_bucket,
    polynomial_mmd,
    psnr,
    psnr_per_frame,
    ssim,
    ssim_per_frame,
    video,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_pair(shape, seed=0):
    """Uniform noise and a noisy copy: SSIM ≈ 0.8."""
    a = torch.rand(shape, generator=_gen(seed), dtype=torch.float64)
    return a, (a + 0.2 * torch.randn(shape, generator=_gen(seed + 1), dtype=torch.float64)).clamp(0, 1)


def _smooth_pair(shape, seed=0):
    """Bicubic upsampling of a 4x4 grid and a slightly noisy copy: smooth frames, high mean, low variance."""
    B, T, C, H, W = shape
    coarse = torch.rand(B * T, C, 4, 4, generator=_gen(seed), dtype=torch.float64)
    a = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1).view(shape)
    return a, (a + 0.05 * torch.randn(shape, generator=_gen(seed + 1), dtype=torch.float64)).clamp(0, 1)


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5) -> np.ndarray:
    """Reference ``(B, T)``: skimage per frame, channels on axis 0. skimage blurs with reflect padding
    and then averages the SSIM map only over pixels at least the window radius from the border
    (``crop(S, pad)``); those pixels never see the padding, which is the region ssim_per_frame computes
    with an unpadded convolution, so the two are the same quantity."""
    a, b = a.double().numpy(), b.double().numpy()
    return np.array([
        [
            structural_similarity(
                fa, fb, gaussian_weights=True, sigma=sigma, use_sample_covariance=False,
                data_range=1.0, channel_axis=0,
            )
            for fa, fb in zip(va, vb)
        ]
        for va, vb in zip(a, b)
    ])


# --- SSIM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_random_pair, _smooth_pair])
@pytest.mark.parametrize("shape", [(2, 3, 3, 11, 11), (1, 2, 1, 16, 16), (2, 2, 3, 24, 40), (1, 1, 3, 64, 48)])
def test_ssim_matches_skimage(make, shape):
    a, b = make(shape)
    ref = _skimage_ssim(a, b)
    # float64 is the same arithmetic as skimage: measured max error 1.2e-15.
    np.testing.assert_allclose(ssim_per_frame(a, b).numpy(), ref, rtol=0, atol=1e-12)
    # float32 loses digits in E[x²] − E[x]² on smooth frames: measured max error 7.4e-6.
    got32 = ssim_per_frame(a.float(), b.float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.double().numpy(), ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ssim(a, b).numpy(), ref.mean(1), rtol=0, atol=1e-12)


def test_ssim_in_chunks_equals_one_pass(monkeypatch):
    a, b = _random_pair((2, 3, 3, 12, 12), seed=4)
    whole = ssim_per_frame(a, b)
    monkeypatch.setattr(video, "_SSIM_CHUNK_PIXELS", 2 * 3 * 12 * 12)  # two frames per chunk
    assert torch.equal(ssim_per_frame(a, b), whole)


def test_ssim_smaller_window_matches_skimage():
    # sigma = 0.5 gives a 5x5 window (2 int(3.5 * 0.5 + 0.5) + 1), as skimage's own rule.
    a, b = _random_pair((2, 2, 3, 8, 8), seed=3)
    np.testing.assert_allclose(ssim_per_frame(a, b, sigma=0.5).numpy(), _skimage_ssim(a, b, 0.5), atol=1e-12)


def test_ssim_of_identical_videos_is_one_and_of_unrelated_near_zero():
    a, _ = _smooth_pair((2, 3, 3, 16, 16))
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ssim(a.float(), a.float()), torch.ones(2), atol=1e-6)
    flat = torch.full((1, 2, 1, 12, 12), 0.7)  # zero variance: SSIM is (C1, C2)-stabilised, still 1
    assert torch.allclose(ssim(flat, flat), torch.ones(1), atol=1e-6)
    noise = torch.rand(2, 3, 3, 16, 16, generator=_gen(9), dtype=torch.float64)
    assert ssim(a, noise).abs().max() < 0.1


def test_ssim_rejects_small_frames_and_bad_arguments():
    a = torch.rand(1, 2, 3, 10, 10)
    with pytest.raises(ValueError, match="11x11.*10x10"):
        ssim(a, a)
    with pytest.raises(ValueError, match="sigma"):
        ssim(a, a, sigma=0.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(a, a, sigma=0.5, data_range=0.0)


# --- PSNR and error against time -------------------------------------------------------------------


def test_psnr_per_frame_matches_numpy():
    a, b = _random_pair((2, 4, 3, 8, 8), seed=5)
    an, bn = a.numpy(), b.numpy()
    ref = 10 * np.log10(1.0 / (((an - bn) ** 2).reshape(2, 4, -1).mean(-1) + 1e-12))  # (B, T)
    np.testing.assert_allclose(psnr_per_frame(a, b).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(psnr_per_frame(a, b, data_range=2.0).numpy(), ref + 20 * np.log10(2), rtol=1e-12)
    # One frame per video: the per-frame PSNR is the per-video PSNR.
    np.testing.assert_allclose(psnr_per_frame(a[:, :1], b[:, :1])[:, 0], psnr(a[:, :1], b[:, :1]), rtol=1e-6)


def test_error_vs_time_grows_where_later_frames_are_corrupted_more():
    T = 6
    truth, _ = _smooth_pair((3, T, 3, 16, 16), seed=7)
    levels = torch.linspace(0.0, 0.25, T, dtype=torch.float64).view(1, T, 1, 1, 1)  # noise std per frame
    noise = torch.randn(truth.shape, generator=_gen(8), dtype=torch.float64)
    samples = (truth + levels * noise).clamp(0, 1)
    times = torch.arange(1, T + 1, dtype=torch.float64) / 8  # frame k at k / fps, fps = 8
    err = error_vs_time(samples, truth, times)
    for field in (err.times, err.mse, err.psnr, err.ssim):
        assert field.shape == (T,)
    assert torch.equal(err.times, times)
    assert err.mse[0] == 0 and err.ssim[0] == 1 and err.psnr[0] == pytest.approx(120.0)  # 10 log10(1/eps)
    assert (err.mse.diff() > 0).all() and (err.psnr.diff() < 0).all() and (err.ssim.diff() < 0).all()
    # Batch means of the per-frame values.
    assert torch.allclose(err.psnr, psnr_per_frame(samples, truth).mean(0))
    assert torch.allclose(err.ssim, ssim_per_frame(samples, truth).mean(0))
    with pytest.raises(ValueError, match=r"\(6,\)"):
        error_vs_time(samples, truth, times[:-1])
    small = error_vs_time(samples[..., :8, :8], truth[..., :8, :8], times, sigma=0.5)  # 5x5 window
    assert torch.allclose(small.ssim, ssim_per_frame(samples[..., :8, :8], truth[..., :8, :8], sigma=0.5).mean(0))


# --- bucket metrics --------------------------------------------------------------------------------


def _buckets():
    """Three samples; buckets of sizes 3, 1, 4. Bucket 0 holds sample 0 itself at position 1; the
    others hold noisy copies whose least noisy one is known."""
    samples, _ = _smooth_pair((3, 2, 3, 12, 12), seed=11)
    noise = torch.randn(4, *samples.shape[1:], generator=_gen(12), dtype=torch.float64)

    def copies(x, stds):
        return torch.stack([(x + s * n).clamp(0, 1) for s, n in zip(stds, noise)])

    buckets = [
        torch.cat([copies(samples[0], [0.3]), samples[:1], copies(samples[0], [0.1])]),
        copies(samples[1], [0.2]),
        copies(samples[2], [0.3, 0.2, 0.05, 0.1]),
    ]
    return samples, buckets


@pytest.mark.parametrize("metric", ["psnr", "ssim"])
def test_nearest_in_bucket_picks_the_known_best(metric):
    samples, buckets = _buckets()
    match = nearest_in_bucket(samples, buckets, metric=metric)
    assert match.index.tolist() == [1, 0, 2]
    if metric == "psnr":
        assert match.score[0] == pytest.approx(120.0)  # the sample itself: 10 log10(1 / eps)
        # brute force: the best PSNR over each bucket, one pair at a time
        brute = [max(float(psnr(s[None], v[None])) for v in b) for s, b in zip(samples, buckets)]
        assert torch.allclose(match.score, torch.tensor(brute, dtype=match.score.dtype))
    else:
        assert match.score[0] == pytest.approx(1.0, abs=1e-12)
        assert torch.allclose(match.score[1:], ssim(samples[1:], torch.stack([buckets[1][0], buckets[2][2]])))


def test_nearest_in_bucket_rejects_bad_input():
    samples, buckets = _buckets()
    with pytest.raises(ValueError, match="metric"):
        nearest_in_bucket(samples, buckets, metric="lpips")
    with pytest.raises(ValueError, match="3 samples but 2 buckets"):
        nearest_in_bucket(samples, buckets[:2])
    with pytest.raises(ValueError, match="bucket 1"):
        nearest_in_bucket(samples, [buckets[0], buckets[1][:0], buckets[2]])
    with pytest.raises(ValueError, match="bucket 2 holds"):
        nearest_in_bucket(samples, [buckets[0], buckets[1], buckets[2][:, :1]])
    with pytest.raises(ValueError, match="samples must be"):
        nearest_in_bucket(samples[0], buckets)
    bad = samples.clone()
    bad[2, 0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        nearest_in_bucket(bad, buckets)


def test_video_metrics_reject_bad_input():
    a = torch.rand(2, 3, 3, 12, 12)
    with pytest.raises(ValueError, match=r"\(3, 3, 12, 12\)"):
        ssim(a[0], a[0])
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_per_frame(a, a[:, :2])
    with pytest.raises(ValueError, match="float"):
        ssim_per_frame(a, (a * 255).to(torch.uint8))
    bad = a.clone()
    bad[1, 2, 0, 5, 5] = math.nan
    for fn in (ssim, ssim_per_frame, psnr_per_frame):
        with pytest.raises(ValueError, match="non-finite"):
            fn(a, bad)


# --- Fréchet distance ------------------------------------------------------------------------------


def _sqrtm_frechet(mu1, s1, mu2, s2) -> float:
    """Reference: the direct formula with scipy's matrix square root of Σ1 Σ2 (real part)."""
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))


def _random_gaussians(dim: int, rank: int):
    """Means and covariances ``Σ1 = A Aᵀ`` (rank ``rank``, with its factor ``A``) and a full-rank ``Σ2``."""
    rng = np.random.default_rng(dim * 100 + rank)
    factor = rng.normal(size=(dim, rank))
    root = rng.normal(size=(dim, dim))
    return rng.normal(size=dim), factor @ factor.T, rng.normal(size=dim), root @ root.T / dim, factor


@pytest.mark.parametrize("dim,rank", [(1, 1), (2, 2), (5, 5), (16, 16), (2, 1), (5, 2), (16, 8)])
@pytest.mark.filterwarnings("ignore:Matrix is singular")  # sqrtm on the rank-deficient cases
def test_frechet_matches_scipy_sqrtm(dim, rank):
    mu1, s1, mu2, s2, _ = _random_gaussians(dim, rank)
    got = frechet_distance(*(torch.from_numpy(x) for x in (mu1, s1, mu2, s2))).item()
    # Measured relative difference ≤ 3e-14 at full rank. Rank-deficient: 4e-9, which is sqrtm's own
    # error (the square root of a singular matrix; see the 50-digit check below, where ours is exact).
    assert got == pytest.approx(_sqrtm_frechet(mu1, s1, mu2, s2), rel=1e-12 if rank == dim else 1e-7)
    swapped = frechet_distance(*(torch.from_numpy(x) for x in (mu2, s2, mu1, s1))).item()
    assert swapped == pytest.approx(got, rel=1e-12)  # symmetric


@pytest.mark.parametrize("dim,rank", [(5, 2), (16, 8)])
def test_frechet_rank_deficient_matches_high_precision(dim, rank):
    # Reference in 50-digit arithmetic: with Σ1 = A Aᵀ, Tr (Σ1 Σ2)^{1/2} = Tr (Aᵀ Σ2 A)^{1/2}, an r x r
    # SPD matrix, so no square root of a singular matrix is needed.
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    mu1, s1, mu2, s2, factor = _random_gaussians(dim, rank)
    a, s2_mp = mpmath.matrix(factor.tolist()), mpmath.matrix(s2.tolist())
    trace_sqrt = sum(mpmath.sqrt(e) for e in mpmath.eigsy(a.T * s2_mp * a)[0])
    s1_mp = a * a.T
    exact = float(sum((x - y) ** 2 for x, y in zip(mu1, mu2)) + sum(s1_mp[i, i] + s2[i, i] for i in range(dim))
                  - 2 * trace_sqrt)
    got = frechet_distance(*(torch.from_numpy(x) for x in (mu1, s1, mu2, s2))).item()
    assert got == pytest.approx(exact, rel=1e-12)  # measured 1e-16


def test_frechet_commuting_covariances_closed_form():
    # Diagonal covariances commute: d² = ‖μ1 − μ2‖² + Σ_i (√a_i − √b_i)².
    a = torch.tensor([0.5, 2.0, 0.0, 3.0], dtype=torch.float64)  # one zero variance (singular)
    b = torch.tensor([1.5, 2.0, 4.0, 0.1], dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0, 3.0]).double(), torch.tensor([1.0, 1.0, 0.0, 3.5]).double()
    expected = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    assert frechet_distance(mu1, a.diag(), mu2, b.diag()).item() == pytest.approx(expected.item(), rel=1e-14)


def test_frechet_features_zero_for_identical_sets_and_gaussian_fit_matches_numpy():
    f = torch.randn(40, 8, generator=_gen(20))
    fit = gaussian_fit(f)
    np.testing.assert_allclose(fit.mu.numpy(), f.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(fit.sigma.numpy(), np.cov(f.double().numpy(), rowvar=False), rtol=1e-12, atol=1e-15)
    assert fit.sigma.dtype == torch.float64
    assert frechet_distance_features(f, f).item() < 1e-12
    few = torch.randn(5, 12, generator=_gen(21), dtype=torch.float64)  # N < D: singular covariance
    assert frechet_distance_features(few, few).item() < 1e-12
    assert frechet_distance_features(few, few + 1.0).item() == pytest.approx(12.0, rel=1e-10)  # mean shift only


def test_frechet_rejects_bad_input():
    eye = torch.eye(3, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        frechet_distance(zero, eye, zero, torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(zero, eye + torch.triu(eye.roll(1, 1)), zero, eye)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(zero, eye, zero, -eye)
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(zero, eye, zero + math.nan, eye)
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance_features(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="differ"):
        frechet_distance_features(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gaussian_fit(torch.randn(5))


# --- polynomial MMD --------------------------------------------------------------------------------


def _loop_mmd(x: np.ndarray, y: np.ndarray, degree=3, gamma=None, coef0=1.0) -> float:
    """Reference: the unbiased MMD² estimator written as explicit sums over pairs."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma

    def k(u, v):
        return (gamma * float(u @ v) + coef0) ** degree

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("kwargs", [{}, {"degree": 2, "gamma": 0.3, "coef0": 0.5}])
def test_polynomial_mmd_matches_double_loop(kwargs):
    x = torch.randn(7, 4, generator=_gen(30))
    y = 0.5 + torch.randn(9, 4, generator=_gen(31))
    # One subset at least as large as both sets: the full-sample estimate, whatever the permutation.
    got = polynomial_mmd(x, y, num_subsets=1, subset_size=50, **kwargs)
    assert got.subset_sizes == (7, 9) and got.std.item() == 0
    ref = _loop_mmd(x.double().numpy(), y.double().numpy(), **kwargs)
    assert got.mean.item() == pytest.approx(ref, rel=1e-12)


def test_polynomial_mmd_separates_distributions_and_is_seeded():
    x = torch.randn(400, 8, generator=_gen(40))
    y = torch.randn(400, 8, generator=_gen(41))
    same = polynomial_mmd(x, y, num_subsets=5, subset_size=300)
    shifted = polynomial_mmd(x, y + 0.5, num_subsets=5, subset_size=300)
    # Measured: same -0.004 (std over subsets 0.007; |mean| <= 0.021 over 30 other data seeds),
    # shifted by 0.5 per coordinate 1.05 (std 0.04).
    assert abs(same.mean.item()) < 0.05
    assert shifted.mean.item() > 0.5 and shifted.mean > 10 * shifted.std
    again = polynomial_mmd(x, y, num_subsets=5, subset_size=300)
    assert torch.equal(same.mean, again.mean) and same.std > 0
    assert not torch.equal(polynomial_mmd(x, y, num_subsets=5, subset_size=300, seed=1).mean, same.mean)


def test_polynomial_mmd_rejects_bad_input():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="subset_size"):
        polynomial_mmd(x, x, subset_size=1)
    with pytest.raises(ValueError, match="non-finite"):
        polynomial_mmd(x, torch.full((10, 3), math.inf))
    with pytest.raises(ValueError, match="differ"):
        polynomial_mmd(x, torch.randn(10, 2))


def test_thumbnail_features_see_appearance_and_motion():
    """Closed forms: a static video has zero motion features; a constant frame's thumbnail is its value."""
    from tempoflow.metrics.features import thumbnail_features

    static = torch.full((2, 5, 3, 16, 16), 0.25)
    f = thumbnail_features(static, size=4)
    assert f.shape == (2, 2 * 3 * 16)
    assert torch.allclose(f[:, :48], torch.full((2, 48), 0.25)) and torch.all(f[:, 48:] == 0)
    moving = static.clone()
    moving[:, 1::2] = 0.75  # flickers by 0.5 every frame
    assert torch.allclose(thumbnail_features(moving, 4)[:, 48:], torch.full((2, 48), 0.5))
    with pytest.raises(ValueError, match="thumbnail size"):
        thumbnail_features(static, size=32)


def test_bucket_scores_prefer_real_videos_over_noise():
    from tempoflow.data.shapes import ShapesConfig, make_shapes
    from tempoflow.evaluate.scores import bucket_scores

    data = make_shapes(ShapesConfig(videos_per_caption=4, test_per_bucket=0), "train")
    buckets = data.buckets()
    caps = data.unique_captions[:24]
    refs = [data.videos[buckets[c]] for c in caps]
    real = torch.stack([r[0] for r in refs])  # one member of each bucket
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0))
    good, bad = bucket_scores(real, refs, 4), bucket_scores(noise, refs, 4)
    assert good["nearest_bucket_ssim"] == pytest.approx(1.0) and good["nearest_bucket_psnr_db"] > 100
    assert bad["nearest_bucket_ssim"] < 0.2 and bad["fd_thumb"] > 10 * good["fd_thumb"]
    assert bad["kd_thumb"] > good["kd_thumb"]
