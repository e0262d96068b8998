"""ODE solvers for sampling flows: one signature, :func:`solve_ode`, for every method (DESIGN §3).

Fixed-step methods (``euler``, ``midpoint``, ``heun``, ``rk4``) are short loops written here; the
adaptive ones (``dopri5``, ``bosh3``, ...) are handed to ``torchdiffeq.odeint``. All of them return
the state at every requested time (dense output) and the number of velocity evaluations (NFE).

NFE accounting of the fixed-step methods, ``n`` steps:

* the velocity at the start of each step, ``v_n = v(x_n, t_n)``, is evaluated once and reused —
  Euler's only stage, and the first stage of midpoint, Heun and RK4. Each step therefore costs
  1 (euler), 2 (midpoint, heun) or 4 (rk4) evaluations: ``n · stages`` in all.
* outputs between two steps are interpolated with the method's own dense output, never by extra
  steps. Euler uses linear interpolation (the Euler polygon itself, exact for the method and free).
  Midpoint, Heun and RK4 use the cubic Hermite interpolant through ``(x_n, v_n)`` and
  ``(x_{n+1}, v_{n+1})``; ``v_{n+1}`` is the next step's first stage, already paid for, except after
  the last step: there it costs exactly **one** extra evaluation, and only when a requested time lies
  strictly inside the last step. The Hermite error is O(h⁴) per step, below the stepping error of
  every method here, so interpolated outputs are as accurate as step outputs.
* requested times on the step grid (to 1e-9 of the interval) return the step state itself.

Integration in decreasing time (``t_eval`` decreasing, e.g. for inversion) works for every method,
interpolation included: the step ``h`` is then negative and the formulas are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdiffeq import odeint

from tempoflow.errors import SolverError

__all__ = ["ADAPTIVE_METHODS", "FIXED_STEP_METHODS", "MAX_STEPS", "METHODS", "ODESolution", "solve_ode"]

Velocity = Callable[[Tensor, Tensor], Tensor]

# Outputs this close to a grid point (relative to the interval length) are taken as on it.
_GRID_SNAP = 1e-9

# Adaptive Runge–Kutta methods of torchdiffeq with dense output; all take atol and rtol.
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
# Default cap on an adaptive solve's steps (accepted and rejected): typical flows need tens.
MAX_STEPS = 1000
# The smallest tolerance an adaptive solver can meet is a few units of rounding of the state's dtype;
# below it the error estimate is rounding noise and the step shrinks forever.
TOLERANCE_ULPS = 4


@dataclass
class ODESolution:
    """Result of :func:`solve_ode`.

    Attributes:
        xs: states at the requested times, shape ``(len(t), *x_init.shape)``; ``xs[0]`` is ``x_init``.
        nfe: number of velocity evaluations actually made.
        t: the requested times, shape ``(len(t),)``, on ``x_init``'s device and dtype.
    """

    xs: Tensor
    nfe: int
    t: Tensor

    @property
    def x_final(self) -> Tensor:
        """The state at the last requested time, shape ``x_init.shape``."""
        return self.xs[-1]


# --------------------------------------------------------------------------------------------
# Fixed-step steppers. Each maps (x_n, t_n, h, v_n = v(x_n, t_n)) to x_{n+1} and the number of
# evaluations it made beyond v_n, which the caller has already paid for.


def _euler_step(velocity: Velocity, x: Tensor, t: Tensor, h: float, v: Tensor) -> tuple[Tensor, int]:
    # Euler step: x_{n+1} = x_n + h v(x_n, t_n).
    return x + h * v, 0


def _midpoint_step(velocity: Velocity, x: Tensor, t: Tensor, h: float, v: Tensor) -> tuple[Tensor, int]:
    # Half Euler step to the midpoint, then the full step with the midpoint velocity.
    v_mid = velocity(x + 0.5 * h * v, t + 0.5 * h)
    return x + h * v_mid, 1


def _heun_step(velocity: Velocity, x: Tensor, t: Tensor, h: float, v: Tensor) -> tuple[Tensor, int]:
    # Euler predictor, then the 2nd-order correction with the trapezoidal rule.
    v_pred = velocity(x + h * v, t + h)
    return x + 0.5 * h * (v + v_pred), 1


def _rk4_step(velocity: Velocity, x: Tensor, t: Tensor, h: float, v: Tensor) -> tuple[Tensor, int]:
    # Classical Runge–Kutta: k1 = v_n, two midpoint stages and one end stage, Simpson weights.
    k2 = velocity(x + 0.5 * h * v, t + 0.5 * h)
    k3 = velocity(x + 0.5 * h * k2, t + 0.5 * h)
    k4 = velocity(x + h * k3, t + h)
    return x + (h / 6.0) * (v + 2.0 * k2 + 2.0 * k3 + k4), 3


_STEPPERS = {"euler": _euler_step, "midpoint": _midpoint_step, "heun": _heun_step, "rk4": _rk4_step}
FIXED_STEP_METHODS = tuple(_STEPPERS)
METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS


def _hermite(x0: Tensor, v0: Tensor, x1: Tensor, v1: Tensor, h: float, s: float) -> Tensor:
    """Cubic Hermite interpolant on one step at fraction ``s ∈ (0, 1)``: matches states and slopes."""
    s2, s3 = s * s, s * s * s
    h00 = 2.0 * s3 - 3.0 * s2 + 1.0
    h10 = s3 - 2.0 * s2 + s
    h01 = -2.0 * s3 + 3.0 * s2
    h11 = s3 - s2
    return h00 * x0 + (h10 * h) * v0 + h01 * x1 + (h11 * h) * v1


def _check_times(t_eval: Tensor | Sequence[float]) -> list[float]:
    """The requested times as Python floats (one host transfer), checked strictly monotone."""
    times = torch.as_tensor(t_eval, dtype=torch.float64).detach().cpu()
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(f"t_eval must be a 1-D sequence of at least 2 times, got shape {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError(f"t_eval must be finite, got {times.tolist()}")
    diffs = times[1:] - times[:-1]
    if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
        raise ValueError(f"t_eval must be strictly increasing or strictly decreasing, got {times.tolist()}")
    return times.tolist()


def _num_steps(span: float, steps: int | None, step_size: float | None) -> int:
    """Number of uniform steps over an interval of length ``|span|``."""
    if (steps is None) == (step_size is None):
        raise ValueError(f"give exactly one of steps and step_size, got steps={steps}, step_size={step_size}")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return int(steps)
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    # The fewest uniform steps no longer than step_size (a grid that lands on both ends).
    return max(1, math.ceil(abs(span) / step_size - _GRID_SNAP))


def _solve_fixed(velocity: Velocity, x_init: Tensor, times: list[float], method: str,
                 n: int) -> tuple[list[Tensor], int, Tensor]:
    """Fixed-step integration over ``times[0] -> times[-1]`` in ``n`` steps: states at ``times``, NFE,
    and ``times`` as a device tensor."""
    stepper = _STEPPERS[method]
    t0, t1 = times[0], times[-1]
    h = (t1 - t0) / n
    # Step grid computed once on the host, then moved to the device with the output times in ONE
    # transfer: the stepping loop below makes none.
    grid = [t0 + (t1 - t0) * i / n for i in range(n + 1)]
    grid[-1] = t1
    grid_and_out = torch.tensor(grid + times, dtype=x_init.dtype).to(x_init.device)
    grid_t, t_out = grid_and_out[: n + 1], grid_and_out[n + 1 :]

    # Place every requested time: on grid node j, or inside step i at fraction s.
    at_node: dict[int, list[int]] = {}
    inside: dict[int, list[tuple[int, float]]] = {}
    for k, tau in enumerate(times):
        pos = (tau - t0) / h  # in [0, n]
        j = round(pos)
        if abs(pos - j) <= _GRID_SNAP * n:
            at_node.setdefault(j, []).append(k)
        else:
            i = min(math.floor(pos), n - 1)
            inside.setdefault(i, []).append((k, pos - i))
    interpolate = _hermite if method != "euler" else None

    out: list[Tensor | None] = [None] * len(times)
    for k in at_node.get(0, []):
        out[k] = x_init
    x = x_init
    v = velocity(x, grid_t[0])
    nfe = 1
    for i in range(n):
        x_next, extra = stepper(velocity, x, grid_t[i], h, v)
        nfe += extra
        # The next step's first stage doubles as this step's end slope for Hermite interpolation;
        # after the last step it is only worth an evaluation if an output lies inside that step.
        v_next = None
        if i < n - 1 or (interpolate is not None and i in inside):
            v_next = velocity(x_next, grid_t[i + 1])
            nfe += 1
        for k, s in inside.get(i, []):
            if interpolate is None:
                out[k] = torch.lerp(x, x_next, s)  # Euler's own continuous extension
            else:
                out[k] = interpolate(x, v, x_next, v_next, h, s)
        for k in at_node.get(i + 1, []):
            out[k] = x_next
        x, v = x_next, v_next
    return out, nfe, t_out  # type: ignore[return-value]


def _solve_adaptive(velocity: Velocity, x_init: Tensor, t_eval: Tensor, method: str, atol: float,
                    rtol: float, max_steps: int) -> tuple[Tensor, int]:
    """``torchdiffeq.odeint`` with an evaluation counter and a step cap; states at ``t_eval``, NFE.

    Raises:
        SolverError: the cap is reached or the step size underflows (torchdiffeq asserts both); the
            message names the solver, the time reached and what to change.
    """
    nfe = 0
    reached = float(t_eval[0])

    def func(t: Tensor, x: Tensor) -> Tensor:
        nonlocal nfe, reached
        nfe += 1
        reached = t  # a tensor: reading it here would sync the device every evaluation
        return velocity(x, t.to(dtype=x.dtype))

    # torchdiffeq interpolates its own steps at t_eval, so extra output times cost no evaluations.
    try:
        xs = odeint(func, x_init, t_eval, method=method, atol=atol, rtol=rtol,
                    options={"max_num_steps": max_steps})
    except AssertionError as err:  # torchdiffeq reports a failed integration by assert
        text = str(err)
        if "max_num_steps" in text:
            why = (f"stopped at the step cap (max_steps={max_steps}, {nfe} evaluations): loosen atol/rtol, raise "
                   "the cap or use a fixed-step solver")
        elif "underflow" in text:
            why = (f"step size underflowed after {nfe} evaluations: the velocity is too stiff there (e.g. a tiny "
                   "flow.min_sigma); use a fixed-step solver or loosen atol/rtol")
        else:
            raise
        t0, t1 = float(t_eval[0]), float(t_eval[-1])
        near = min(max(float(reached), min(t0, t1)), max(t0, t1))  # rejected trial steps may overshoot t1
        raise SolverError(f"{method} {why} (last evaluated near t={near:.7g}, solving from t={t0:g} to {t1:g})") from err
    return xs, nfe


def solve_ode(velocity: Velocity, x_init: Tensor, t_eval: Tensor | Sequence[float], method: str = "euler",
              steps: int | None = None, step_size: float | None = None, atol: float = 1e-5,
              rtol: float = 1e-5, max_steps: int = MAX_STEPS) -> ODESolution:
    """Integrate ``dx/dt = velocity(x, t)`` from ``x(t_eval[0]) = x_init``; return ``x`` at every ``t_eval``.

    Args:
        velocity: ``velocity(x, t)`` with ``x`` shaped like ``x_init`` and ``t`` a 0-dim tensor on
            ``x_init``'s device and dtype; returns ``dx/dt`` shaped like ``x``. Callers broadcast ``t``.
        x_init: the state at ``t_eval[0]``, any shape, e.g. ``(B, T, C, H, W)``.
        t_eval: 1-D strictly increasing or strictly decreasing times (tensor or floats).
        method: one of :data:`FIXED_STEP_METHODS` or :data:`ADAPTIVE_METHODS`.
        steps: fixed-step methods: number of uniform steps over ``[t_eval[0], t_eval[-1]]``.
        step_size: fixed-step methods, instead of ``steps``: the largest step; the interval is split
            into the fewest uniform steps no longer than it.
        atol: adaptive methods: absolute tolerance.
        rtol: adaptive methods: relative tolerance. ``max(atol, rtol)`` must be at least
            ``TOLERANCE_ULPS`` rounding units of ``x_init``'s dtype (4.8e-7 for float32).
        max_steps: adaptive methods: the most steps (accepted and rejected) before giving up.

    Returns:
        :class:`ODESolution` with ``xs`` of shape ``(len(t_eval), *x_init.shape)`` and the NFE. Fixed
        steps cost ``steps × (1, 2, 2, 4)`` evaluations for euler, midpoint, heun, rk4, plus one for
        midpoint/heun/rk4 when an output time lies strictly inside the last step (see module doc).

    Raises:
        ValueError: unknown method; ``t_eval`` not strictly monotone; for fixed-step methods, not
            exactly one of ``steps``/``step_size``; for adaptive methods, either of them given.
        SolverError: adaptive methods: tolerances below the dtype's reach, the step cap reached or
            the step size underflowing (one line naming the solver and the time reached).
    """
    times = _check_times(t_eval)
    if method in _STEPPERS:
        n = _num_steps(times[-1] - times[0], steps, step_size)
        out, nfe, t_out = _solve_fixed(velocity, x_init, times, method, n)
        return ODESolution(xs=torch.stack(out), nfe=nfe, t=t_out)
    if method in ADAPTIVE_METHODS:
        if steps is not None or step_size is not None:
            raise ValueError(f"{method} is adaptive (set atol, rtol); steps={steps} and step_size={step_size} "
                             f"are for the fixed-step methods {', '.join(FIXED_STEP_METHODS)}")
        floor = TOLERANCE_ULPS * torch.finfo(x_init.dtype).eps
        if max(atol, rtol) < floor:
            raise SolverError(f"{method}: tolerances atol={atol:g}, rtol={rtol:g} are below what {x_init.dtype} can "
                              f"resolve (at least one must be >= {floor:.2g}); the solver would shrink its step forever")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        t_out = torch.tensor(times, dtype=x_init.dtype, device=x_init.device)
        xs, nfe = _solve_adaptive(velocity, x_init, t_out, method, atol, rtol, max_steps)
        return ODESolution(xs=xs, nfe=nfe, t=t_out)
    raise ValueError(f"unknown ODE method {method!r}; valid methods: {', '.join(METHODS)}")
