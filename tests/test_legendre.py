"""Scaled Legendre bases and LegS / least-squares projections (VLFM §3.1, DESIGN §4).

References: scipy's ``eval_legendre`` for basis values, Gauss–Legendre quadrature (numpy ``leggauss``)
for orthonormality and for the exact continuous projection coefficients, central finite differences
for derivatives, and a literal loop of the paper's recurrence as the oracle for the batched ``legs``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import eval_legendre

from tempoflow.flows.legendre import (
    legendre_basis,
    legendre_basis_derivative,
    legs_matrices,
    legs_projection,
    projection_matrix,
    reconstruct,
    reconstruct_derivative,
)

F64 = torch.float64


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """A smooth unit-amplitude test signal of ``x = t / T``."""
    return torch.sin(2 * math.pi * x + 0.3)


def _frames(signal, N: int, T: float = 1.0) -> torch.Tensor:
    """``(N, 1)`` frames of ``signal(t / T)`` at ``t_k = k T / N`` (DESIGN §1)."""
    t = torch.arange(1, N + 1, dtype=F64) * T / N
    return signal(t / T).unsqueeze(-1)


def _exact_coefficients(signal, s: int) -> torch.Tensor:
    """Continuous projection ``∫ f g_n (1/T) dt`` on ``[0, T]`` by 200-point Gauss–Legendre, ``(s,)``."""
    x, w = np.polynomial.legendre.leggauss(200)
    t = torch.tensor((x + 1) / 2, dtype=F64)  # nodes on [0, 1], T = 1
    w = torch.tensor(w / 2, dtype=F64)  # weights of the probability measure dt on [0, 1]
    return (legendre_basis(t, 1.0, s) * (w * signal(t)).unsqueeze(-1)).sum(0)


def _legs_loop(frames: torch.Tensor, s: int) -> torch.Tensor:
    """The paper's recurrence written literally, one frame at a time: ``(N, d)`` -> ``(d, s)``."""
    A, B = legs_matrices(s)
    H = torch.zeros(frames.shape[1], s, dtype=F64)
    for k in range(1, frames.shape[0] + 1):
        H = H @ (torch.eye(s, dtype=F64) - A / k).T + torch.outer(frames[k - 1], B) / k
    return H


def _max_error_on_interval(H: torch.Tensor, signal) -> float:
    t = torch.linspace(0, 1, 2001, dtype=F64)
    return float((reconstruct(H, t, 1.0)[..., 0] - signal(t)).abs().max())


def test_legs_matrices_entries():
    # Reference: the definition of paper §3.1 evaluated entry by entry; A's eigenvalues are 1..s.
    s = 6
    A, B = legs_matrices(s)
    for n in range(s):
        assert float(B[n]) == pytest.approx(math.sqrt(2 * n + 1), abs=1e-15)
        for k in range(s):
            expected = math.sqrt((2 * n + 1) * (2 * k + 1)) if n > k else (n + 1 if n == k else 0.0)
            assert float(A[n, k]) == pytest.approx(expected, abs=1e-14)
    eig = torch.linalg.eigvals(A).real.sort().values
    torch.testing.assert_close(eig, torch.arange(1, s + 1, dtype=F64), atol=1e-10, rtol=0)


def test_basis_matches_scipy_inside_and_outside_interval():
    # Reference: √(2n+1) scipy.special.eval_legendre(n, 2t/T − 1); t beyond [0, T] is not clamped.
    T, s = 2.5, 12
    t = torch.linspace(-1.0, 4.0, 101, dtype=F64)
    expected = np.stack(
        [math.sqrt(2 * n + 1) * eval_legendre(n, 2 * t.numpy() / T - 1) for n in range(s)], axis=-1
    )
    torch.testing.assert_close(legendre_basis(t, T, s), torch.from_numpy(expected), atol=1e-9, rtol=1e-12)
    # A tensor duration broadcasts against t (one duration per row).
    T_rows = torch.tensor([[1.0], [3.0]], dtype=F64)
    got = legendre_basis(t[:5].expand(2, 5), T_rows, s)
    assert got.shape == (2, 5, s)
    torch.testing.assert_close(got[1], legendre_basis(t[:5], 3.0, s))


def test_basis_is_orthonormal_under_uniform_probability_measure():
    # Reference: 40-point Gauss–Legendre quadrature is exact for the degree ≤ 2(s−1) products here.
    T, s = 3.0, 20
    x, w = np.polynomial.legendre.leggauss(40)
    t = torch.tensor((x + 1) * T / 2, dtype=F64)
    w = torch.tensor(w / 2, dtype=F64)  # (1/T) dt: the weights of [0, T] divided by T
    G = legendre_basis(t, T, s)  # (40, s)
    gram = G.T @ (w.unsqueeze(-1) * G)
    torch.testing.assert_close(gram, torch.eye(s, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("T", [1.0, 0.4, torch.tensor(2.0, dtype=F64)])
def test_basis_derivative_matches_finite_differences(T):
    # Reference: central differences, O(eps²) ≈ 1e-10 relative in float64; also outside [0, T].
    s, eps = 10, 1e-6
    t = torch.linspace(-0.2, 1.3, 37, dtype=F64) * (float(T))
    fd = (legendre_basis(t + eps, T, s) - legendre_basis(t - eps, T, s)) / (2 * eps)
    torch.testing.assert_close(legendre_basis_derivative(t, T, s), fd, atol=1e-5, rtol=1e-7)


def test_reconstruct_derivative_matches_finite_differences():
    # Reference: central differences of reconstruct; per-video durations of shape (B,).
    g = torch.Generator().manual_seed(0)
    H = torch.randn(3, 4, 7, dtype=F64, generator=g)
    T = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    t = torch.linspace(0, 2.5, 23, dtype=F64)
    eps = 1e-6
    fd = (reconstruct(H, t + eps, T) - reconstruct(H, t - eps, T)) / (2 * eps)
    got = reconstruct_derivative(H, t, T)
    assert got.shape == (3, 23, 4)
    torch.testing.assert_close(got, fd, atol=1e-4, rtol=1e-7)


@pytest.mark.parametrize("s", [1, 4, 9])
def test_lstsq_reproduces_polynomials_of_degree_below_s(s):
    # Reference: the polynomial itself, evaluated between frames and past T (exact up to roundoff).
    g = torch.Generator().manual_seed(s)
    coeffs = torch.randn(s, 3, dtype=F64, generator=g)  # degree s − 1 in each of 3 features
    T, N = 1.7, 24

    def poly(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([(t / T) ** j for j in range(s)], dim=-1) @ coeffs  # (..., 3)

    frames = poly(torch.arange(1, N + 1, dtype=F64) * T / N)  # (N, 3)
    t = torch.linspace(-0.2, 1.2 * T, 57, dtype=F64)
    H = legs_projection(frames, s, method="lstsq")
    torch.testing.assert_close(reconstruct(H, t, T), poly(t), atol=1e-9, rtol=0)
    # Float32 frames give float32 coefficients, accurate to ~1e-5.
    H32 = legs_projection(frames.float(), s, method="lstsq")
    assert H32.dtype == torch.float32
    assert float((reconstruct(H32, t.float(), T) - poly(t).float()).abs().max()) < 5e-5


def test_legs_matches_literal_recurrence_for_a_batch():
    # Reference: the paper's recurrence H_k = H_{k−1}(I − A/k)^T + u_k B^T / k as a plain loop.
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(2, 3, 20, 5, dtype=F64, generator=g)  # (2, 3) videos of N = 20 frames, d = 5
    H = legs_projection(frames, 8, method="legs")
    assert H.shape == (2, 3, 5, 8)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(H[i, j], _legs_loop(frames[i, j], 8), atol=1e-12, rtol=1e-10)


def test_legs_exact_identities():
    # Reference, exact: the n = 0 row of the recurrence is a running mean, and once N >= s the
    # product Π_j (I − A/j) vanishes (each eigenvalue n+1 meets its zero factor), so constants are
    # reproduced exactly.
    g = torch.Generator().manual_seed(2)
    frames = torch.randn(30, 4, dtype=F64, generator=g)
    H = legs_projection(frames, 6, method="legs")
    torch.testing.assert_close(H[:, 0], frames.mean(0), atol=1e-12, rtol=0)
    const = torch.full((6, 1), 0.7, dtype=F64)
    torch.testing.assert_close(
        legs_projection(const, 6, method="legs")[0],
        torch.tensor([0.7, 0, 0, 0, 0, 0], dtype=F64),
        atol=1e-12,
        rtol=0,
    )


def test_legs_error_shrinks_like_one_over_N():
    # Reference: the true signal on [0, T] and its exact continuous LegS coefficients (quadrature).
    # s = 12 makes the truncation error (~1e-6) negligible next to the O(1/N) Euler bias.
    s = 12
    exact = _exact_coefficients(_smooth, s)
    errors, coeff_errors = [], []
    for N in (16, 64, 256):
        H = legs_projection(_frames(_smooth, N), s, method="legs")
        errors.append(_max_error_on_interval(H, _smooth))
        coeff_errors.append(float((H[0] - exact).abs().max()))
    for e, N in zip(errors, (16, 64, 256)):
        assert 0.5 < e * N < 10.0, errors  # measured N·err ≈ 7.5, 6.4, 6.1
    for ratios in (np.divide(errors[:-1], errors[1:]), np.divide(coeff_errors[:-1], coeff_errors[1:])):
        assert np.all((ratios > 3.0) & (ratios < 5.5)), (errors, coeff_errors)  # 1/N: a factor 4


def test_design_numbers_at_32_frames():
    # DESIGN §4 claims for a smooth unit-amplitude signal, N = 32. Measured max errors on [0, T]:
    # legs 0.73 / 0.21 / 0.21 and lstsq 0.27 / 1.6e-3 / 4e-9 for s = 4 / 8 / 16.
    legs = {
        s: _max_error_on_interval(legs_projection(_frames(_smooth, 32), s, "legs"), _smooth) for s in (8, 16)
    }
    lstsq8 = _max_error_on_interval(legs_projection(_frames(_smooth, 32), 8, "lstsq"), _smooth)
    assert 0.15 < legs[8] < 0.3 and 0.15 < legs[16] < 0.3, legs
    assert abs(legs[8] - legs[16]) < 0.01  # the Euler bias, not truncation, dominates past s = 8
    assert lstsq8 < 3e-3


def test_timescale_equivariance():
    # Paper Lemma 4.4: sampling u(t/λ) over λT with the same N gives the same frames, hence the same
    # H, and the reconstruction of the dilated video is the dilation of the reconstruction.
    lam, T, N, s = 2.5, 1.0, 40, 10
    for method in ("legs", "lstsq"):
        H = legs_projection(_frames(_smooth, N, T), s, method)
        H_dilated = legs_projection(_frames(_smooth, N, lam * T), s, method)
        torch.testing.assert_close(H_dilated, H, atol=1e-14, rtol=0)
        t = torch.linspace(0, T, 9, dtype=F64)
        torch.testing.assert_close(reconstruct(H, lam * t, lam * T), reconstruct(H, t, T), atol=1e-12, rtol=0)
    # Resampling the same video at twice the frame rate changes H only by discretisation:
    # O(1/N) for legs (measured 0.022 at N = 64), far less for lstsq (measured 1e-6).
    for method, tol in (("legs", 0.03), ("lstsq", 1e-5)):
        H64 = legs_projection(_frames(_smooth, 64), s, method)
        H128 = legs_projection(_frames(_smooth, 128), s, method)
        assert float((H64 - H128).abs().max()) < tol, method


def test_projection_matrices_shapes_and_dtype():
    W = projection_matrix(10, 4, "lstsq")
    assert W.shape == (10, 4) and W.dtype == F64
    frames = torch.randn(7, 10, 3)
    H = legs_projection(frames, 4)  # default: lstsq
    assert H.shape == (7, 3, 4) and H.dtype == torch.float32
    torch.testing.assert_close(H, frames.mT @ W.float())
    out = reconstruct(H, torch.linspace(0, 1, 5), torch.full((7,), 2.0))
    assert out.shape == (7, 5, 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: legs_matrices(0), "s must be an integer >= 1"),
        (lambda: legendre_basis(torch.zeros(3), 1.0, 2.5), "s must be an integer"),
        (lambda: legendre_basis(torch.zeros(3), 0.0, 2), "duration T"),
        (lambda: legendre_basis(torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]), 2), "duration T"),
        (lambda: legendre_basis(torch.zeros(3, dtype=torch.long), 1.0, 2), "float tensor"),
        (lambda: legs_projection(torch.zeros(5), 2), r"shape \(\.\.\., N, d\)"),
        (lambda: legs_projection(torch.zeros(5, 2, dtype=torch.long), 2), "float tensor"),
        (lambda: legs_projection(torch.zeros(5, 2), 3, method="euler"), "unknown projection method 'euler'"),
        (lambda: legs_projection(torch.zeros(3, 2), 4, method="lstsq"), "at least s = 4 frames, got N = 3"),
        (lambda: legs_projection(torch.zeros(3, 2), 4, method="legs"), "at least s = 4 frames, got N = 3"),
        (lambda: reconstruct(torch.zeros(2, 3), torch.tensor(0.5), 1.0), "shape"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_ill_conditioned_orders_are_refused_and_accepted_ones_fit_in_float32():
    """Field case 12: against numpy's float64 least squares (legvander + QR), every order VLFM accepts
    fits 32 frames to 1e-4 relative after H is stored in float32; orders past MAX_CONDITION are refused."""
    import numpy as np

    from tempoflow.config import load_config
    from tempoflow.errors import ConfigError
    from tempoflow.flows.legendre import MAX_CONDITION, design_condition
    from tempoflow.flows.video_path import trajectory
    from tempoflow.runs import build_method

    N, fps = 32, 8.0
    base = ["method=vlfm", "text.encoder=hashing", "text.dim=16", "data.shapes.resolution=8",
            f"data.shapes.num_frames={N}", "model.dim=16", "model.depth=1", "model.heads=2", "device=cpu"]
    video = torch.rand(2, N, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for order in (8, 16, 19):
        method = build_method(load_config(None, [*base, f"vlfm.order={order}"]))
        latents = method.codec.encode(video)
        H = method.project(latents)
        assert H.dtype == torch.float32
        got = trajectory(H, torch.arange(1, N + 1) / fps, N / fps)[0].double().numpy()
        Q = np.linalg.qr(np.polynomial.legendre.legvander(2 * np.arange(1, N + 1) / N - 1, order - 1))[0]
        y = latents.double().flatten(2).numpy()
        exact = np.einsum("ij,bjd->bid", Q @ Q.T, y)
        assert np.abs(got - exact).max() / np.abs(exact).max() < 1e-4
    assert design_condition(N, 19) <= MAX_CONDITION < design_condition(N, 20)
    for order in (20, 32):
        with pytest.raises(ConfigError, match=r"ill-conditioned .* use vlfm.order <= 19"):
            build_method(load_config(None, [*base, f"vlfm.order={order}"]))
