"""Two-phase (water/oil) flow in a random porous medium (Stochastic Lifting, seed 001 appendix D.2).

Incompressible, immiscible, no gravity or capillarity (Aarnes, Gimse & Lie 2007, eqs. (42)–(43))::

    −∇·(K λ(s) ∇p) = q,        φ ∂_t s + ∇·(f(s) v) = q_w,        v = −K λ(s) ∇p,

with Corey quadratic relative permeabilities ``k_rw = s²``, ``k_ro = (1 − s)²``, mobilities
``λ_w = k_rw / μ_w``, ``λ_o = k_ro / μ_o``, total mobility ``λ = λ_w + λ_o`` and fractional flow
``f = λ_w / λ``. Domain: the unit square in ``size × size`` cells; array index ``[i, j]`` is (row from
the top, column from the left). Water is injected at rate ``rate`` in the upper-left cell ``[0, 0]``
and fluid is produced at the same rate in the lower-right cell ``[-1, -1]`` (``q_w = q`` at the
injector, ``f(s) q`` at the producer); no-flow boundaries; zero initial saturation. The defaults are
the paper's (end time 0.7, time step 0.007) on top of Aarnes et al.'s listing 9 (unit porosity,
``μ_w = μ_o = 1``, unit rate), so time is in pore volumes injected.

**Discretisation (IMPES).** Every ``pressure_dt`` the pressure is solved by two-point flux
approximation: 5-point stencil, transmissibilities the harmonic means of ``K λ(s)`` of the two cells
(square cells: ``T = 2 / (1/(Kλ)_a + 1/(Kλ)_b)``), one sparse direct solve (SuperLU on the
block-diagonal system of the whole batch). Between solves the saturation takes explicit first-order
upwind finite-volume steps, each trajectory its own CFL step (see :class:`UpwindTransport`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import spsolve
from torch import Tensor

from tempoflow.data.physics.common import (
    cfl_counts,
    check_sizes,
    output_times,
    simulate_in_chunks,
    substep_dts,
)
from tempoflow.data.physics.permeability import MaternField, sample_log_permeability

__all__ = [
    "PorousConfig",
    "PorousSolution",
    "Pressure",
    "UpwindTransport",
    "flux_divergence",
    "fractional_flow",
    "max_fractional_flow_slope",
    "simulate_porous",
    "solve_porous",
    "solve_pressure",
    "total_mobility",
    "well_rates",
]

POROUS_STREAM = 2  # random stream of the permeability fields
F_PRIME_SAMPLES = 100_001  # grid on [0, 1] on which max f'(s) is taken
F_PRIME_MARGIN = 1.001  # covers the grid missing the exact maximiser (the error is O(grid step²))


@dataclass(frozen=True)
class PorousConfig:
    """Porous-flow data set (appendix D.2); time in pore volumes injected at the default rate."""

    t_end: float = 0.7  # paper's end time
    pressure_dt: float = 0.007  # paper's time step: the pressure is re-solved this often
    porosity: float = 1.0  # φ, Aarnes et al. listing 9
    mu_w: float = 1.0  # water viscosity
    mu_o: float = 1.0  # oil viscosity
    rate: float = 1.0  # injection = production rate (volume per time)
    cfl: float = 0.9  # fraction of the monotone explicit saturation step (1 = the bound itself)
    permeability: MaternField = field(default_factory=MaternField)
    with_pressure: bool = False  # also return the pressure as a second channel
    chunk: int = 16  # trajectories solved at once (memory only; results do not depend on it)

    def __post_init__(self) -> None:
        for name in ("t_end", "pressure_dt", "porosity", "mu_w", "mu_o", "rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        if not 0 < self.cfl <= 1:
            raise ValueError(f"cfl must lie in (0, 1], got {self.cfl}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")


@dataclass
class Pressure:
    """A pressure solve: ``p`` ``(M, H, W)`` (0 at the producer) and the Darcy fluxes through the
    faces, ``flux_x`` ``(M, H, W−1)`` positive to the right, ``flux_y`` ``(M, H−1, W)`` positive down."""

    p: Tensor
    flux_x: Tensor
    flux_y: Tensor


@dataclass
class PorousSolution:
    """Saturation and pressure at the stored times.

    Attributes:
        saturation: ``(M, T, H, W)`` water saturation in [0, 1].
        pressure: ``(M, T, H, W)`` pressure consistent with the stored saturation.
        times: ``(T,)`` float64.
        produced_water: ``(M, T)`` water volume produced by then.
        log_permeability: ``(M, H, W)`` the media.
    """

    saturation: Tensor
    pressure: Tensor
    times: Tensor
    produced_water: Tensor
    log_permeability: Tensor


def total_mobility(s: Tensor, mu_w: float, mu_o: float) -> Tensor:
    """``λ(s) = s² / μ_w + (1 − s)² / μ_o`` (Corey quadratic relative permeabilities)."""
    return s**2 / mu_w + (1 - s) ** 2 / mu_o


def fractional_flow(s: Tensor, mu_w: float, mu_o: float) -> Tensor:
    """``f(s) = (s² / μ_w) / λ(s)``, the water fraction of the total flux."""
    return s**2 / mu_w / total_mobility(s, mu_w, mu_o)


def max_fractional_flow_slope(mu_w: float, mu_o: float) -> float:
    """``max_{s ∈ [0, 1]} f'(s)`` with ``f' = 2 s (1 − s) / (μ_w μ_o λ(s)²)``, on a fine grid, times
    ``F_PRIME_MARGIN``."""
    s = torch.linspace(0, 1, F_PRIME_SAMPLES, dtype=torch.float64)
    slope = 2 * s * (1 - s) / (mu_w * mu_o * total_mobility(s, mu_w, mu_o) ** 2)
    return F_PRIME_MARGIN * float(slope.max())


def well_rates(size: int, rate: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """Source term ``q`` ``(size, size)``: ``+rate`` in the upper-left cell, ``−rate`` in the lower-right."""
    q = torch.zeros(size, size, dtype=dtype)
    q[0, 0], q[-1, -1] = rate, -rate
    return q


def _harmonic(a: Tensor, b: Tensor) -> Tensor:
    return 2.0 / (1.0 / a + 1.0 / b)


def solve_pressure(conductivity: Tensor, q: Tensor) -> Pressure:
    """Solve the TPFA system ``Σ_faces T_ab (p_a − p_b) = q_a`` for every trajectory at once.

    The no-flow Neumann problem fixes ``p`` only up to a constant; adding ``T_kk`` to the diagonal of
    the producer cell ``k`` makes it non-singular, and because ``Σ q = 0`` (the rows of the unmodified
    matrix sum to zero) its solution has ``p_k = 0`` and solves the unmodified system exactly.

    Args:
        conductivity: ``(M, H, W)`` positive ``K λ(s)`` per cell.
        q: ``(H, W)`` sources with zero sum, producer in the last cell.

    Returns:
        :class:`Pressure` in float64 on the device of ``conductivity``.
    """
    if conductivity.dim() != 3 or not bool((conductivity > 0).all()):
        raise ValueError(f"conductivity must be a positive (M, H, W) tensor, got {tuple(conductivity.shape)}")
    if abs(float(q.sum())) > 1e-12 * float(q.abs().sum()):
        raise ValueError(f"sources must sum to zero for no-flow boundaries, got sum {float(q.sum())}")
    device = conductivity.device
    kl = conductivity.detach().double().cpu()
    m, h, w = kl.shape
    t_x = _harmonic(kl[:, :, :-1], kl[:, :, 1:])  # (M, H, W−1)
    t_y = _harmonic(kl[:, :-1, :], kl[:, 1:, :])  # (M, H−1, W)
    index = torch.arange(m * h * w).reshape(m, h, w)
    a_x, b_x = index[:, :, :-1].reshape(-1), index[:, :, 1:].reshape(-1)
    a_y, b_y = index[:, :-1, :].reshape(-1), index[:, 1:, :].reshape(-1)
    diagonal = F.pad(t_x, (0, 1)) + F.pad(t_x, (1, 0)) + F.pad(t_y, (0, 0, 0, 1)) + F.pad(t_y, (0, 0, 1, 0))
    diagonal[:, -1, -1] *= 2  # pin the producer: p = 0 there
    rows = torch.cat([a_x, b_x, a_y, b_y, index.reshape(-1)]).numpy()
    cols = torch.cat([b_x, a_x, b_y, a_y, index.reshape(-1)]).numpy()
    values = torch.cat(
        [-t_x.reshape(-1), -t_x.reshape(-1), -t_y.reshape(-1), -t_y.reshape(-1), diagonal.reshape(-1)]
    ).numpy()
    matrix = sp.csc_matrix((values, (rows, cols)), shape=(m * h * w,) * 2)
    rhs = np.tile(q.double().cpu().reshape(-1).numpy(), m)
    # Symmetric matrix: a minimum-degree ordering of A + Aᵀ keeps SuperLU's fill-in low.
    p = torch.from_numpy(np.asarray(spsolve(matrix, rhs, permc_spec="MMD_AT_PLUS_A"))).reshape(m, h, w)
    flux_x = t_x * (p[:, :, :-1] - p[:, :, 1:])  # Darcy flux a → b: T (p_a − p_b)
    flux_y = t_y * (p[:, :-1, :] - p[:, 1:, :])
    return Pressure(p.to(device), flux_x.to(device), flux_y.to(device))


def flux_divergence(flux_x: Tensor, flux_y: Tensor) -> Tensor:
    """Net outflow of every cell ``(M, H, W)`` from face fluxes ``(M, H, W−1)`` and ``(M, H−1, W)``."""
    return (
        F.pad(flux_x, (0, 1))
        - F.pad(flux_x, (1, 0))
        + F.pad(flux_y, (0, 0, 0, 1))
        - F.pad(flux_y, (0, 0, 1, 0))
    )


@dataclass
class UpwindTransport:
    """Explicit first-order upwind transport for the Darcy fluxes of one pressure solve.

    With the fluxes frozen between pressure solves, the water balance of cell ``a`` is linear in
    ``f = f(s)``: ``pv ∂_t s_a = q⁺_a + Σ_b F_{b→a} f_b − (Σ_b F_{a→b} + q⁻_a) f_a``, the upwind cell's
    ``f`` on every face (Aarnes et al. 2007, listing 8). The face flux parts are taken once here.

    Attributes:
        rightward, leftward: ``(M, H, W−1)`` ``≥ 0`` flux through each x-face to the right / left.
        downward, upward: ``(M, H−1, W)`` ``≥ 0`` flux through each y-face down / up.
        outflow: ``(M, H, W)`` all flux leaving each cell, production included.
        injection: ``(H, W)`` ``q⁺``.
        production: ``(H, W)`` ``q⁻ = max(−q, 0)``.
    """

    rightward: Tensor
    leftward: Tensor
    downward: Tensor
    upward: Tensor
    outflow: Tensor
    injection: Tensor
    production: Tensor

    @classmethod
    def from_pressure(cls, pressure: Pressure, q: Tensor) -> UpwindTransport:
        rightward, leftward = pressure.flux_x.clamp_min(0), (-pressure.flux_x).clamp_min(0)
        downward, upward = pressure.flux_y.clamp_min(0), (-pressure.flux_y).clamp_min(0)
        production = (-q).clamp_min(0)
        outflow = (
            F.pad(rightward, (0, 1))
            + F.pad(leftward, (1, 0))
            + F.pad(downward, (0, 0, 0, 1))
            + F.pad(upward, (0, 0, 1, 0))
            + production
        )
        return cls(rightward, leftward, downward, upward, outflow, q.clamp_min(0), production)

    def inflow(self) -> Tensor:
        """``(M, H, W)`` all flux entering each cell, injection included."""
        return (
            F.pad(self.rightward, (1, 0))
            + F.pad(self.leftward, (0, 1))
            + F.pad(self.downward, (0, 0, 1, 0))
            + F.pad(self.upward, (0, 0, 0, 1))
            + self.injection
        )

    def stable_dt(self, pore_volume: float, slope: float, cfl: float) -> Tensor:
        """Per-trajectory step ``(M,)`` that keeps ``s`` in [0, 1].

        The update is monotone when ``dt · max f' · (flux through the cell) ≤ pv`` for every cell; the
        flux through a cell is its inflow (= its outflow up to the solver's residual; the larger is used).
        """
        through = torch.maximum(self.inflow(), self.outflow).amax(dim=(1, 2))  # (M,)
        return cfl * pore_volume / (slope * through)

    def step(
        self, s: Tensor, dt: Tensor, pore_volume: float, mu_w: float, mu_o: float
    ) -> tuple[Tensor, Tensor]:
        """One step of ``φ ∂_t s + ∇·(f(s) v) = q_w`` for ``s`` ``(M, H, W)``, ``dt`` ``(M,)``.

        Returns:
            The new ``s`` and the water produced during the step ``(M,)``.
        """
        f = fractional_flow(s, mu_w, mu_o)  # (M, H, W)
        gain = self.injection - self.outflow * f  # (M, H, W)
        gain[:, :, 1:] += self.rightward * f[:, :, :-1]  # from the left neighbour
        gain[:, :, :-1] += self.leftward * f[:, :, 1:]  # from the right neighbour
        gain[:, 1:, :] += self.downward * f[:, :-1, :]  # from the cell above
        gain[:, :-1, :] += self.upward * f[:, 1:, :]  # from the cell below
        produced = dt * (self.production * f).sum((1, 2))
        return s + (dt / pore_volume).view(-1, 1, 1) * gain, produced


def solve_porous(log_permeability: Tensor, times: Tensor, cfg: PorousConfig) -> PorousSolution:
    """IMPES integration from zero saturation for the media ``log K`` ``(M, H, W)`` (float64 inside).

    Args:
        log_permeability: ``(M, H, W)``; its device is where the saturation steps run.
        times: ``(T,)`` increasing positive output times.
        cfg: fluid, wells and steps.

    Returns:
        A :class:`PorousSolution`.
    """
    times = times.to(torch.float64)
    if times.dim() != 1 or not bool((times > 0).all()) or not bool((times.diff() > 0).all()):
        raise ValueError(f"times must be an increasing (T,) tensor of positive times, got {times}")
    device = log_permeability.device
    k = torch.exp(log_permeability.double())
    m, size = k.shape[0], k.shape[-1]
    q = well_rates(size, cfg.rate).to(device)
    pore_volume = cfg.porosity / size**2
    slope = max_fractional_flow_slope(cfg.mu_w, cfg.mu_o)
    s = torch.zeros_like(k)
    produced = torch.zeros(m, dtype=torch.float64, device=device)
    pressure = solve_pressure(k * total_mobility(s, cfg.mu_w, cfg.mu_o), q)
    saturations, pressures, productions = [], [], []
    for interval in torch.diff(times, prepend=times.new_zeros(1)).tolist():
        n_pressure = math.ceil(interval / cfg.pressure_dt * (1 - 1e-9))
        for _ in range(n_pressure):
            transport = UpwindTransport.from_pressure(pressure, q)
            max_dt = transport.stable_dt(pore_volume, slope, cfg.cfl).cpu()
            for dt in substep_dts(interval / n_pressure, cfl_counts(interval / n_pressure, max_dt)):
                s, step_production = transport.step(s, dt.to(device), pore_volume, cfg.mu_w, cfg.mu_o)
                produced = produced + step_production
            # The next step's pressure, which is also the one consistent with the saturation stored now.
            pressure = solve_pressure(k * total_mobility(s, cfg.mu_w, cfg.mu_o), q)
        saturations.append(s)
        pressures.append(pressure.p)
        productions.append(produced)
    return PorousSolution(
        torch.stack(saturations, 1),
        torch.stack(pressures, 1),
        times,
        torch.stack(productions, 1),
        log_permeability,
    )


def simulate_porous(
    n: int,
    size: int,
    n_times: int,
    seed: int,
    cfg: PorousConfig | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` porous-flow trajectories on ``size × size`` cells at ``n_times`` times evenly on ``(0, t_end]``.

    Trajectory ``i`` depends only on ``(seed, i)`` (its permeability), not on ``n`` or ``cfg.chunk``.

    Returns:
        ``(n, n_times, C, size, size)`` float32 on the CPU: ``C = 1`` saturation, or ``C = 2``
        (saturation, pressure) with ``cfg.with_pressure``.
    """
    cfg = cfg or PorousConfig()
    check_sizes(n, size, n_times, min_size=2)
    times = output_times(cfg.t_end, n_times)

    def simulate(generators: list[torch.Generator]) -> Tensor:
        log_k = sample_log_permeability(generators, size, cfg.permeability).to(device)
        solution = solve_porous(log_k, times, cfg)
        fields = [solution.saturation, solution.pressure] if cfg.with_pressure else [solution.saturation]
        return torch.stack(fields, 2).float().cpu()  # (m, T, C, H, W)

    return simulate_in_chunks(POROUS_STREAM, seed, n, cfg.chunk, simulate)
