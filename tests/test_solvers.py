"""ODE solvers against closed forms and scipy: exact answers, convergence orders, NFE, dense output."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from tempoflow.flows.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, ODESolution, solve_ode

F64 = torch.float64
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}  # evaluations per step
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
LAMBDA = -2.0


def cubic_velocity(x, t):
    return 3 * t**2 * torch.ones_like(x)


def linear_velocity(x, t):
    return LAMBDA * x


def damped_rotation(x, t):
    """A nonlinear, time-dependent 2-D field: damped rotation with a quadratic term and forcing."""
    a, b = x[..., 0], x[..., 1]
    da = -0.2 * a - 2.0 * b + 0.3 * a * b + 0.5 * torch.sin(3 * t)
    db = 2.0 * a - 0.2 * b - 0.1 * a**2
    return torch.stack([da, db], dim=-1)


def _one(dtype=F64):
    return torch.ones(1, dtype=dtype)


def test_cubic_integrand_exact_errors():
    # dx/dt = 3t², x(0) = 0: every method is a quadrature rule of ∫₀¹ 3t² dt = 1 with a known error.
    n = 10
    h = 1.0 / n
    expected = {
        "euler": 1 - 3 / (2 * n) + 1 / (2 * n**2),  # left Riemann sum of 3t²
        "midpoint": 1 - h**2 / 4,  # midpoint rule: −(b−a) h² f''/24, f'' = 6
        "heun": 1 + h**2 / 2,  # trapezoidal rule: +(b−a) h² f''/12
        "rk4": 1.0,  # Simpson's rule integrates cubics exactly
    }
    for method, value in expected.items():
        sol = solve_ode(cubic_velocity, torch.zeros(1, dtype=F64), [0.0, 1.0], method=method, steps=n)
        assert isinstance(sol, ODESolution)
        assert float(sol.x_final) == pytest.approx(value, abs=1e-12), method


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_convergence_order_on_linear_ode(method):
    # dx/dt = λx, x(0) = 1: error at t = 1 against exp(λ); halving h divides it by 2^order.
    errors = []
    for n in (8, 16, 32, 64):
        sol = solve_ode(linear_velocity, _one(), [0.0, 1.0], method=method, steps=n)
        errors.append(abs(float(sol.x_final) - math.exp(LAMBDA)))
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    assert abs(orders[-1] - ORDER[method]) < 0.3, (method, orders)


def test_dopri5_accuracy_and_dense_output():
    t_eval = torch.linspace(0, 2, 50, dtype=F64)
    sol = solve_ode(linear_velocity, _one(), t_eval, method="dopri5", atol=1e-8, rtol=1e-8)
    assert sol.xs.shape == (50, 1)
    torch.testing.assert_close(sol.xs[:, 0], torch.exp(LAMBDA * t_eval), atol=1e-6, rtol=0)
    two = solve_ode(linear_velocity, _one(), [0.0, 2.0], method="dopri5", atol=1e-8, rtol=1e-8)
    # Dense output is interpolated from the solver's own steps: 48 more times cost nothing (+2 slack).
    assert sol.nfe <= two.nfe + 2, (sol.nfe, two.nfe)
    torch.testing.assert_close(two.x_final, sol.x_final, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_every_adaptive_method_runs(method):
    sol = solve_ode(linear_velocity, _one(), [0.0, 0.5, 1.0], method=method, atol=1e-6, rtol=1e-6)
    # Local tolerances do not bound the global error of the 2nd-order pairs tightly: a loose check.
    torch.testing.assert_close(sol.xs[:, 0], torch.exp(LAMBDA * sol.t), atol=2e-3, rtol=0)
    assert sol.nfe > 0


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_nfe_counts_are_exact(method):
    calls = []

    def velocity(x, t):
        calls.append(float(t))
        return LAMBDA * x

    # Outputs only at the ends, or only on step boundaries: steps × stages.
    for t_eval in ([0.0, 1.0], torch.linspace(0, 1, 11, dtype=F64)):
        calls.clear()
        sol = solve_ode(velocity, _one(), t_eval, method=method, steps=10)
        assert sol.nfe == len(calls) == 10 * STAGES[method]
    # 48 outputs: interpolation reuses the stepper's evaluations; a time strictly inside the last step
    # costs Hermite methods one end-velocity evaluation, Euler's linear interpolation nothing.
    calls.clear()
    sol = solve_ode(velocity, _one(), torch.linspace(0, 1, 48, dtype=F64), method=method, steps=10)
    assert sol.nfe == len(calls) == 10 * STAGES[method] + (method != "euler")
    assert sol.xs.shape == (48, 1)
    # step_size picks the fewest uniform steps no longer than it: 0.3 over [0, 1] -> 4 steps.
    assert solve_ode(velocity, _one(), [0.0, 1.0], method=method, step_size=0.3).nfe == 4 * STAGES[method]
    assert solve_ode(velocity, _one(), [0.0, 1.0], method=method, step_size=0.1).nfe == 10 * STAGES[method]


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_outputs_on_step_boundaries_are_step_states(method):
    grid = torch.linspace(0, 1, 11, dtype=F64)
    dense = solve_ode(damped_rotation, torch.tensor([1.0, 0.0], dtype=F64), grid, method=method, steps=10)
    for k in (1, 4, 10):
        ends = solve_ode(damped_rotation, torch.tensor([1.0, 0.0], dtype=F64), [0.0, float(grid[k])],
                         method=method, steps=k)
        torch.testing.assert_close(dense.xs[k], ends.x_final, atol=1e-15, rtol=0)
    assert torch.equal(dense.xs[0], torch.tensor([1.0, 0.0], dtype=F64))


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_interpolated_outputs_as_accurate_as_steps(method):
    n = 10
    t_eval = torch.linspace(0, 1, 48, dtype=F64)
    sol = solve_ode(linear_velocity, _one(), t_eval, method=method, steps=n)
    error = (sol.xs[:, 0] - torch.exp(LAMBDA * t_eval)).abs()
    on_grid = solve_ode(linear_velocity, _one(), torch.linspace(0, 1, n + 1, dtype=F64), method=method,
                        steps=n)
    step_error = (on_grid.xs[:, 0] - torch.exp(LAMBDA * on_grid.t)).abs().max()
    # Measured ratios: euler 0.98, midpoint 1.01, heun 1.01, rk4 0.98 (the Hermite error is O(h⁴)).
    assert error.max() <= 1.5 * step_error, (method, float(error.max()), float(step_error))


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_against_scipy_on_nonlinear_ode(method):
    t_eval = np.array([0.0, 0.37, 1.0, 1.8, 2.5, 3.1, 4.0])
    x_init = np.array([1.0, -0.5])

    def f(t, y):
        return damped_rotation(torch.from_numpy(y), torch.tensor(t, dtype=F64)).numpy()

    ref = solve_ivp(f, (0.0, 4.0), x_init, method="RK45", t_eval=t_eval, rtol=1e-11, atol=1e-12).y.T
    kwargs = {"steps": 400} if method == "rk4" else {"atol": 1e-10, "rtol": 1e-10}
    sol = solve_ode(damped_rotation, torch.from_numpy(x_init), torch.from_numpy(t_eval), method=method,
                    **kwargs)
    np.testing.assert_allclose(sol.xs.numpy(), ref, atol=1e-8, rtol=0)


@pytest.mark.parametrize("method", ["rk4", "heun", "dopri5"])
def test_backward_integration_recovers_initial_condition(method):
    x_init = torch.tensor([1.0, -0.5], dtype=F64)
    kwargs = {"steps": 50} if method != "dopri5" else {"atol": 1e-10, "rtol": 1e-10}
    fwd = solve_ode(damped_rotation, x_init, [0.0, 1.0], method=method, **kwargs)
    bwd = solve_ode(damped_rotation, fwd.x_final, [1.0, 0.0], method=method, **kwargs)
    tol = {"rk4": 1e-7, "heun": 1e-3, "dopri5": 1e-8}[method]
    torch.testing.assert_close(bwd.x_final, x_init, atol=tol, rtol=0)


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_backward_dense_output(method):
    # Decreasing time with outputs between steps: dx/dt = λx from x(1) = e^λ back to x(0) = 1.
    t_eval = torch.linspace(1, 0, 23, dtype=F64)
    sol = solve_ode(linear_velocity, torch.full((1,), math.exp(LAMBDA), dtype=F64), t_eval, method=method,
                    steps=20)
    error = (sol.xs[:, 0] - torch.exp(LAMBDA * t_eval)).abs()
    on_grid = solve_ode(linear_velocity, sol.xs[0], torch.linspace(1, 0, 21, dtype=F64), method=method,
                        steps=20)
    step_error = (on_grid.xs[:, 0] - torch.exp(LAMBDA * on_grid.t)).abs().max()
    assert error.max() <= 1.5 * step_error, (method, float(error.max()), float(step_error))
    tol = {"euler": 0.3, "midpoint": 5e-3, "heun": 5e-3, "rk4": 5e-6}[method]  # error grows like e^{-λt}
    torch.testing.assert_close(sol.xs[:, 0], torch.exp(LAMBDA * t_eval), atol=tol, rtol=0)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["euler", "heun", "rk4", "dopri5"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_video_batch_shape_dtype_device(method, dtype, device):
    x_init = torch.randn(2, 3, 1, 4, 5, dtype=dtype, device=device)  # (B, T, C, H, W)

    def velocity(x, t):
        # The solver's side of the contract: a 0-dim time on x's device and dtype, x shaped like x_init.
        assert t.dim() == 0 and t.dtype == x.dtype and t.device == x.device
        assert x.shape == (2, 3, 1, 4, 5)
        return -x * (1 + t)

    kwargs = {"steps": 4} if method != "dopri5" else {}
    sol = solve_ode(velocity, x_init, torch.linspace(0, 1, 5), method=method, **kwargs)
    assert sol.xs.shape == (5, 2, 3, 1, 4, 5)
    assert sol.xs.dtype == dtype and sol.xs.device == x_init.device
    assert sol.t.dtype == dtype and sol.t.device == x_init.device
    assert torch.equal(sol.xs[0], x_init)
    # Exact solution exp(-(t + t²/2)) x_init; euler with 4 steps is the loosest.
    torch.testing.assert_close(sol.x_final, x_init * math.exp(-1.5), atol=0.3, rtol=0)


def test_errors_name_the_bad_value():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="euler, midpoint, heun, rk4, dopri5"):
        solve_ode(linear_velocity, x, [0.0, 1.0], method="rk45", steps=4)
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        solve_ode(linear_velocity, x, [0.0, 0.5, 0.2], method="euler", steps=4)
    with pytest.raises(ValueError, match="strictly"):
        solve_ode(linear_velocity, x, [0.0, 0.0, 1.0], method="dopri5")
    with pytest.raises(ValueError, match="at least 2"):
        solve_ode(linear_velocity, x, [0.0], method="euler", steps=4)
    with pytest.raises(ValueError, match="exactly one of steps and step_size"):
        solve_ode(linear_velocity, x, [0.0, 1.0], method="heun")
    with pytest.raises(ValueError, match="exactly one of steps and step_size"):
        solve_ode(linear_velocity, x, [0.0, 1.0], method="heun", steps=4, step_size=0.1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        solve_ode(linear_velocity, x, [0.0, 1.0], method="heun", steps=0)
    with pytest.raises(ValueError, match="adaptive"):
        solve_ode(linear_velocity, x, [0.0, 1.0], method="dopri5", steps=4)


# ---------------------------------------------------------------------------------------------
# Failures end as one line (issue 15 kind B): step cap, step-size underflow, unreachable tolerances.


def test_adaptive_step_cap_names_the_cap_and_the_time_reached():
    from tempoflow.errors import SolverError

    stiff = lambda x, t: -1e8 * (x - torch.cos(t))  # a stiff relaxation: explicit RK crawls
    with pytest.raises(SolverError, match=r"dopri5 stopped at the step cap \(max_steps=50, .*last evaluated near t=[0-9.e-]+, solving from t=0 to 1"):
        solve_ode(stiff, torch.zeros(3), [0.0, 1.0], method="dopri5", atol=1e-5, rtol=1e-5, max_steps=50)


def test_adaptive_step_size_underflow_is_a_solver_error():
    """v = 1 / (1 − t)² has no solution up to t = 1: the step shrinks to nothing near it."""
    from tempoflow.errors import SolverError

    blowup = lambda x, t: x * 0 + 1 / (1 - t).abs().clamp_min(1e-30) ** 2
    with pytest.raises(SolverError, match=r"step size underflowed .*near t=0\.99"):
        solve_ode(blowup, torch.zeros(3), [0.0, 1.0], method="dopri5", atol=1e-5, rtol=1e-5, max_steps=10**6)


def test_tolerances_below_the_dtype_are_refused_before_solving():
    from tempoflow.errors import SolverError

    calls = []

    def v(x, t):
        calls.append(1)
        return -x

    with pytest.raises(SolverError, match=r"atol=1e-12, rtol=1e-12 are below what torch.float32 can resolve"):
        solve_ode(v, torch.ones(3), [0.0, 1.0], method="dopri5", atol=1e-12, rtol=1e-12)
    assert not calls
    # float64 reaches them: exp(−1) to 1e-10 (closed form)
    sol = solve_ode(v, torch.ones(3, dtype=torch.float64), [0.0, 1.0], method="dopri5", atol=1e-12, rtol=1e-12)
    assert torch.allclose(sol.x_final, torch.full((3,), math.exp(-1), dtype=torch.float64), atol=1e-10)
    # one loose tolerance is enough in float32
    solve_ode(v, torch.ones(3), [0.0, 1.0], method="dopri5", atol=1e-12, rtol=1e-5)
