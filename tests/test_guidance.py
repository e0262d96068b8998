"""Classifier-free guidance: the formula's exact cases, linearity, and one batched forward."""

import pytest
import torch

from tempoflow.flows.guidance import cfg_velocity, guided

B = 3


class TinyConditionalModel(torch.nn.Module):
    """A velocity with a per-sample condition that ``drop_mask`` removes; it records every call."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(4, 4, generator=g, dtype=torch.float64))
        self.cond = torch.randn(B, 4, generator=g, dtype=torch.float64)  # one condition per sample
        self.calls: list[tuple[int, torch.Tensor]] = []

    def forward(self, x, t, drop_mask):
        self.calls.append((x.shape[0], drop_mask.clone()))
        assert drop_mask.dtype == torch.bool and drop_mask.shape == (x.shape[0],)
        cond = self.cond.repeat(x.shape[0] // B, 1)  # (N, 4): repeated for a doubled batch
        cond = torch.where(drop_mask[:, None], torch.zeros_like(cond), cond)
        t = t.reshape(-1, 1) if t.dim() else t
        return torch.tanh(x @ self.weight) * (1 + t) + cond * x.sum(-1, keepdim=True)


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 4, generator=g, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)


def _separate(model, x, t):
    v_cond = model(x, t, torch.zeros(B, dtype=torch.bool))
    v_uncond = model(x, t, torch.ones(B, dtype=torch.bool))
    return v_cond, v_uncond


def test_cfg_velocity_exact_cases():
    g = torch.Generator().manual_seed(2)
    v_c, v_u = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    assert torch.equal(cfg_velocity(v_c, v_u, 1.0), v_c)
    assert torch.equal(cfg_velocity(v_c, v_u, 0.0), v_u)
    torch.testing.assert_close(cfg_velocity(v_c, v_u, 3.0), v_u + 3.0 * (v_c - v_u))
    with pytest.raises(ValueError, match="same shape"):
        cfg_velocity(v_c, v_u[:1], 2.0)


def test_scale_one_is_the_conditional_model_in_one_small_call():
    model = TinyConditionalModel()
    x, t = _inputs()
    v_cond, _ = _separate(model, x, t)
    model.calls.clear()
    v = guided(model, 1.0)(x, t)
    assert torch.equal(v, v_cond)
    assert len(model.calls) == 1
    size, mask = model.calls[0]
    assert size == B and not mask.any()


def test_scale_zero_is_unconditional_and_batched_equals_separate_calls():
    model = TinyConditionalModel()
    x, t = _inputs()
    v_cond, v_uncond = _separate(model, x, t)
    model.calls.clear()
    torch.testing.assert_close(guided(model, 0.0)(x, t), v_uncond, atol=1e-14, rtol=0)
    # One forward over [x; x] with the conditional half first.
    assert len(model.calls) == 1
    size, mask = model.calls[0]
    assert size == 2 * B and torch.equal(mask, torch.tensor([False] * B + [True] * B))
    for scale in (0.5, 2.0, 7.5):
        torch.testing.assert_close(guided(model, scale)(x, t), v_uncond + scale * (v_cond - v_uncond),
                                   atol=1e-13, rtol=0)


def test_linear_in_scale():
    model = TinyConditionalModel()
    x, t = _inputs()
    v0, v1 = guided(model, 0.0)(x, t), guided(model, 1.0)(x, t)
    for scale in (-1.0, 0.25, 4.0):
        torch.testing.assert_close(guided(model, scale)(x, t), v0 + scale * (v1 - v0), atol=1e-13, rtol=0)


def test_per_sample_time_is_repeated():
    model = TinyConditionalModel()
    x, _ = _inputs()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    v_cond, v_uncond = _separate(model, x, t)
    torch.testing.assert_close(guided(model, 2.0)(x, t), v_uncond + 2.0 * (v_cond - v_uncond),
                               atol=1e-13, rtol=0)


def test_guided_velocity_drives_a_solver():
    from tempoflow.flows.solvers import solve_ode

    model = TinyConditionalModel()
    x, _ = _inputs()
    sol = solve_ode(guided(model, 2.0), x, [0.0, 1.0], method="heun", steps=4)
    assert sol.xs.shape == (2, B, 4) and sol.nfe == 8
    with pytest.raises(ValueError, match="finite"):
        guided(model, float("nan"))
