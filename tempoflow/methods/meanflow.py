"""Conditional MeanFlow ``meanflow``: a one-step next-frame model (Geng et al. 2025, "Mean Flows for One-step
Generative Modeling", arXiv 2505.13447; DESIGN §5).

The data, window and UNet of ``lifting`` and ``ardm``; the next frame ``x = x_j`` is generated from noise given
the window ``w = x_{j−m..j−1}`` by a network ``u_θ(z, r, t | w)`` of the *average* velocity of the flow over
``[r, t]``, so that one network call crosses the whole flow.

**Time convention: the paper's**, ``z_t = (1 − t) x + t ε`` with data at ``t = 0`` and noise at ``t = 1``
(§3: ``z_t = a_t x + b_t ε``, ``a_t = 1 − t``, ``b_t = t``) — the reverse of DESIGN §1's flow time in ``flow``
and ``ardm`` (``τ = 1 − t`` maps one to the other). The conditional velocity is ``v_t = dz_t/dt = ε − x``.

The average velocity (eq. 3) and the MeanFlow identity it satisfies (eq. 6), with the total derivative along
the flow expanded by the chain rule (eq. 8)::

    u(z_t, r, t) = 1/(t − r) ∫_r^t v(z_τ, τ) dτ
    u(z_t, r, t) = v(z_t, t) − (t − r) d/dt u(z_t, r, t),     d/dt u = v ∂_z u + ∂_t u

Algorithm 1 (training), for a batch of training pairs ``(w, x)``::

    ε ~ N(0, I);  (r, t) ~ logit-normal pairs, t ≥ r, a fraction with r = t       (§4.3 "sampling (r, t)")
    z = (1 − t) x + t ε;  v = ε − x
    u, du/dt = jvp(u_θ(·, ·, · | w), (z, r, t), (v, 0, 1))                         (eq. 8: tangent (v, 0, 1))
    u_tgt = v − (t − r) du/dt                                                      (eq. 11)
    Δ = u − sg(u_tgt);  loss = sg(ω) ‖Δ‖²,  ω = 1 / (‖Δ‖² + c)^p                    (eq. 9; §4.3 "loss metrics")

Algorithm 2 (sampling), ``n`` steps on ``t_0 = 1 > t_1 > … > t_n = 0`` (eq. 12)::

    z ← ε ~ N(0, I);   z ← z − (t_i − t_{i+1}) u_θ(z, t_{i+1}, t_i | w)             one network call per step

so one step is ``x = ε − u_θ(ε, 0, 1 | w)``. With ``r = t`` the target is plain flow matching's ``v``: the
pairs with ``r = t`` teach the instantaneous velocity, the others propagate it to wide intervals.

Network: ``u_θ(z, r, t | w) = UNet([w, z]; t, t − r)`` — the window and the noisy frame stacked on channels
(as ``ardm``), the time ``t`` and the interval ``t − r`` each through sin-cos features and an MLP, summed into
the FiLM vector (the paper's best conditioning, Table 1c: "(t, t − r)"). The JVP is always taken of
``u_θ(·, r, t)``, so the interval's tangent is ``dt/dt − dr/dt = 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from tempoflow.configio import require
from tempoflow.methods.base import randn
from tempoflow.methods.lifting import LiftingConfig
from tempoflow.methods.rollout import NextFrame, NextFrameMethod, Step, training_pairs
from tempoflow.nets.unet import UNet

# u(z, r, t): states (N, ...), start times r (N,), end times t (N,) -> average velocities (N, ...)
AverageVelocity = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class MeanFlowConfig:
    """One-step ``meanflow`` on ``lifting``'s window and UNet. Defaults: the paper's best ablation settings
    (arXiv 2505.13447, Table 1 and appendix A, MeanFlow-B/4 on ImageNet)."""

    r_equals_t: float = 0.75  # fraction of pairs with r = t (Table 1a: 25% r ≠ t is best; 100% = flow matching)
    time_mu: float = -0.4  # logit-normal sampler of r and t: sigmoid(N(μ, σ²)) (Table 1d: lognorm(−0.4, 1.0))
    time_sigma: float = 1.0
    norm_p: float = 1.0  # adaptive loss weight ω = 1/(‖Δ‖² + c)^p (Table 1e: p = 1 best; 0 = squared L2)
    norm_c: float = 1e-3  # c of the adaptive weight (§4.3: "c > 0 (e.g. 10^-3)")
    sample_steps: int = 1  # n network calls per frame on a uniform grid (1: Algorithm 2; 2: the paper's 2-NFE)

    def __post_init__(self) -> None:
        require(0.0 <= self.r_equals_t < 1.0,
                f"meanflow.r_equals_t must be in [0, 1) (1 would be flow matching only), got {self.r_equals_t}")
        require(self.time_sigma > 0, f"meanflow.time_sigma must be > 0, got {self.time_sigma}")
        require(self.norm_p >= 0, f"meanflow.norm_p must be >= 0, got {self.norm_p}")
        require(self.norm_c > 0, f"meanflow.norm_c must be > 0, got {self.norm_c}")
        require(self.sample_steps >= 1, f"meanflow.sample_steps must be >= 1, got {self.sample_steps}")


def _per_sample(s: Tensor, like: Tensor) -> Tensor:
    """``(N,)`` -> ``(N, 1, …, 1)``, broadcastable against ``like`` ``(N, ...)``."""
    return s.view(-1, *([1] * (like.dim() - 1)))


def sample_times(
    n: int, cfg: MeanFlowConfig, generator: torch.Generator | None, like: Tensor
) -> tuple[Tensor, Tensor]:
    """The paper's (r, t) sampler (§4.3): two independent logit-normal times ``sigmoid(μ + σ ξ)``, the larger
    one is ``t`` and the smaller ``r``; then ``round(r_equals_t · n)`` pairs, chosen at random, get ``r = t``.

    Args:
        n: pairs.
        cfg: ``time_mu``, ``time_sigma``, ``r_equals_t``.
        generator: draws the two normals ``(2, n)``, then the permutation choosing the ``r = t`` pairs.
        like: device and dtype of the result.

    Returns:
        ``(r, t)``, each ``(n,)`` in ``(0, 1)`` with ``r <= t``.
    """
    normal = randn((2, n), generator, like)  # (2, n)
    times = torch.sigmoid(cfg.time_mu + cfg.time_sigma * normal)  # (2, n) logit-normal
    t, r = times.max(0).values, times.min(0).values  # (n,), (n,)
    device = generator.device if generator is not None else like.device
    chosen = torch.randperm(n, generator=generator, device=device)[: round(cfg.r_equals_t * n)].to(like.device)
    equal = torch.zeros(n, dtype=torch.bool, device=like.device).index_fill(0, chosen, True)  # (n,)
    return torch.where(equal, t, r), t


def average_velocity_target(
    u: AverageVelocity, z: Tensor, r: Tensor, t: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """``u(z, r, t)`` and the regression target of eqs. 8 and 11, by one Jacobian–vector product.

    ``d/dt u = v ∂_z u + 0 ∂_r u + 1 ∂_t u`` is the JVP of ``u`` at ``(z, r, t)`` along the tangent ``(v, 0, 1)``
    (``torch.func.jvp``; forward-mode AD through the network, no second backward pass). The target is
    detached (the paper's stop-gradient: no double backpropagation). The attention kernels run on SDPA's math
    path, whose forward-mode derivatives exist on every device (the fused CUDA kernels may lack them).

    Args:
        u: the average-velocity field, ``(z (N, ...), r (N,), t (N,)) -> (N, ...)``.
        z: ``(N, ...)`` points ``z_t``.
        r, t: ``(N,)`` interval ends, ``r <= t``.
        v: ``(N, ...)`` the velocity along which ``z`` moves with ``t`` (the conditional ``ε − x`` in training).

    Returns:
        ``(u(z, r, t), u_tgt)``, both ``(N, ...)``: the first with its autograd graph, the second
        ``v − (t − r) d/dt u`` detached.
    """
    with sdpa_kernel([SDPBackend.MATH]):
        u_pred, du_dt = torch.func.jvp(u, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    u_tgt = v - _per_sample(t - r, z) * du_dt  # (N, ...)
    return u_pred, u_tgt.detach()


def adaptive_l2(delta: Tensor, p: float, c: float) -> Tensor:
    """The adaptively weighted squared L2 loss of §4.3: ``mean_i sg(ω_i) ‖Δ_i‖²``, ``ω_i = 1/(‖Δ_i‖² + c)^p``.

    Equivalent in gradient to ``‖Δ‖^{2γ}`` with ``γ = 1 − p`` (p = 0: squared L2; p = 0.5: about
    Pseudo-Huber; p = 1: the paper's best). ``delta`` ``(N, ...)``; the norm is over all but the first axis.
    """
    sq = delta.float().square().flatten(1).sum(1)  # (N,) ‖Δ_i‖²
    weight = (sq.detach() + c).pow(-p)  # (N,) sg(ω_i)
    return (weight * sq).mean()


def mean_flow_sample(u: AverageVelocity, noise: Tensor, steps: int) -> Tensor:
    """Algorithm 2 / eq. 12: ``z_r = z_t − (t − r) u(z_t, r, t)`` from ``z_1 = noise`` down to ``t = 0`` on a
    uniform grid of ``steps`` intervals (one call of ``u`` each). ``noise`` ``(N, ...)`` -> ``z_0`` ``(N, ...)``."""
    grid = torch.linspace(1.0, 0.0, steps + 1, device=noise.device, dtype=noise.dtype)  # t_0 = 1 > … > t_n = 0
    z, n = noise, noise.shape[0]
    for t, r in pairwise(grid):
        z = z - (t - r) * u(z, r.expand(n), t.expand(n))  # jump from t to r along the average velocity
    return z


class MeanFlow(NextFrameMethod):
    """``u_θ(z, r, t | x_{j−m..j−1})``: the average velocity of the flow from noise to the next frame.

    Args:
        cfg: the ``meanflow`` section.
        video_shape: ``(T, C, H, W)`` of the training trajectories.
        lifting: the shared window, UNet and pairs per trajectory.
        fields, fps, first_frame_at_zero: the data's kind and timing (:class:`NextFrameMethod`).
    """

    name = "meanflow"

    def __init__(self, cfg: MeanFlowConfig, video_shape: tuple[int, int, int, int], *, lifting: LiftingConfig,
                 fields: bool, fps: float, first_frame_at_zero: bool):
        super().__init__(lifting.window, video_shape, fields=fields, fps=fps, first_frame_at_zero=first_frame_at_zero)
        self.cfg, self.lifting = cfg, lifting
        # The noisy next frame z joins the window on channels; t and t − r go in by FiLM.
        self.net = UNet(lifting.unet, (self.window + 1) * self.channels, self.channels, time_input=True,
                        interval_input=True)

    def average_velocity(self, window: Tensor, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """``u_θ(z, r, t | w) = net([w, z]; t, t − r)``: window ``(N, m·C, H, W)``, state ``(N, C, H, W)``,
        ``r, t`` ``(N,)`` -> ``(N, C, H, W)``."""
        return self.net(torch.cat([window, z], dim=1), t=t, interval=t - r)

    def mean_flow_loss(
        self, window: Tensor, x: Tensor, noise: Tensor, r: Tensor, t: Tensor
    ) -> dict[str, Tensor]:
        """Algorithm 1 on given draws: windows ``(N, m·C, H, W)``, next frames ``x`` and noise ``ε``
        ``(N, C, H, W)``, times ``r, t`` ``(N,)``. Returns ``loss`` (adaptively weighted) and ``mse``
        (the unweighted mean of ``Δ²``, to watch: with p = 1 the loss itself stays near 1; it keeps the
        conditional target's own variance, about ``Var ε = 1`` per pixel, however well ``u_θ`` fits)."""
        tt = _per_sample(t, x)
        z = (1 - tt) * x + tt * noise  # (N, C, H, W) noise at t = 1 (§3)
        v = noise - x  # (N, C, H, W) conditional velocity (§3)
        u, u_tgt = average_velocity_target(lambda *times: self.average_velocity(window, *times), z, r, t, v)
        delta = u.float() - u_tgt.float()  # (N, C, H, W)
        loss = adaptive_l2(delta, self.cfg.norm_p, self.cfg.norm_c)
        return {"loss": loss, "mse": delta.detach().square().mean()}

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Algorithm 1, one step. batch: ``video`` ``(B, T, C, H, W)``, ``index`` ``(B,)``. The generator draws,
        in order: the pairs' target frames, ``ε``, then ``(r, t)`` (:func:`sample_times`)."""
        pairs = training_pairs(
            batch["video"], batch["index"], self.window, self.lifting.pairs_per_video, generator
        )
        x = pairs.target  # (N, C, H, W)
        noise = randn(tuple(x.shape), generator, x)  # (N, C, H, W)
        r, t = sample_times(x.shape[0], self.cfg, generator, x)  # (N,), (N,)
        return self.mean_flow_loss(pairs.window, x, noise, r, t)

    def next_frame(
        self, window: Tensor, generator: torch.Generator | None = None, steps: int | None = None
    ) -> Step:
        """One frame by Algorithm 2 with ``steps`` (default ``meanflow.sample_steps``) network calls.

        Args:
            window: ``(N, m·C, H, W)``.
            generator: the noise ``ε``.
            steps: ``n``, network calls for this frame.

        Returns:
            :class:`Step` with the frame ``(N, C, H, W)`` (clamped to [0, 1] for video) and ``n``.
        """
        steps = steps or self.cfg.sample_steps
        noise = randn((window.shape[0], self.channels, *window.shape[2:]), generator, window)  # (N, C, H, W)
        x = mean_flow_sample(lambda z, r, t: self.average_velocity(window, z, r, t), noise, steps)
        return Step(x.clamp(0.0, 1.0) if self.clamp else x, steps)

    def frame_sampler(self, sample_steps: int | None = None) -> tuple[NextFrame, dict]:
        """``sample_steps`` network calls per frame (default ``meanflow.sample_steps``)."""
        used = {"sample_steps": sample_steps or self.cfg.sample_steps}
        return (lambda window, gen: self.next_frame(window, gen, used["sample_steps"])), used
