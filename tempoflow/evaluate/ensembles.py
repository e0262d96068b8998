"""Probabilistic scores of a trajectory method's roll-out ensembles (issue 17 item 2; DESIGN §5), as
weather forecasts and The Well's emulators are scored: the CRPS per step (ensemble and fair estimators),
the spread/skill ratio, the radially averaged energy spectrum error, and VRMSE per step and over roll-out
windows (``tempoflow.metrics.probabilistic``).

An ensemble is ``M`` trajectories rolled out from the first frames of a verifying test trajectory; every
score compares it with that trajectory's true continuation, step by step, and averages over the verifying
trajectories. Where all of them start from one state (physics data from its fixed initial condition) one
ensemble verifies against every held-out simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tempoflow.metrics.probabilistic import (
    crps_ensemble,
    radial_energy_spectrum,
    spectrum_log_ratio,
    spread_skill,
    vrmse,
    well_windows,
    window_means,
)
from tempoflow.report.html import svg_curves


def distinct_starts(starts: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct initial conditions among ``starts`` ``(K, k, C, H, W)`` in order of first appearance,
    ``(U, k, C, H, W)``, and the ``(K,)`` index of each trajectory's one (trajectories with equal first
    frames share an ensemble)."""
    unique, inverse = torch.unique(starts.flatten(1), dim=0, return_inverse=True)
    rows = torch.arange(len(starts))
    first = torch.full((len(unique),), len(starts)).scatter_reduce(0, inverse, rows, "amin")  # (U,)
    order = first.argsort()  # unique rows by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return unique[order].reshape(-1, *starts.shape[1:]), rank[inverse]


@dataclass
class EnsembleScores:
    """What :func:`ensemble_scores` returns.

    Attributes:
        summary: scalars (and the window dicts) for ``metrics.json``'s ``ensemble``.
        curves: ``{"per_step": {score: [S values]}, "spectrum": {...}}``: per-step scores and the last
            step's spectra, for plots and ``metrics.json``'s ``ensemble_curves``.
    """

    summary: dict
    curves: dict


def ensemble_scores(
    ensembles: Tensor, truth: Tensor, which: Tensor, windows: tuple[int, ...] = ()
) -> EnsembleScores:
    """Score ensembles of generated steps against the true ones.

    Per step ``s`` (means over verifying trajectories, channels and pixels; float64):

    * ``crps`` / ``crps_fair``: the ensemble / fair CRPS of each pixel (:func:`crps_ensemble`), field units;
    * ``spread``, ``skill``, ``spread_skill_ratio``: ``sqrt(mean s²)`` (unbiased ensemble variance) over the
      RMSE of the ensemble mean; ``spread_skill_ratio_corrected`` multiplies by ``sqrt((M+1)/M)`` so that a
      reliable ensemble scores 1 (:class:`SpreadSkill`);
    * ``vrmse``: The Well's VRMSE of each member, averaged over members (a single forecast, as The Well's
      tables); ``vrmse_ensemble_mean``: of the ensemble mean;
    * ``spectrum_error``: ``mean_{k >= 1, channels} |ln(Ē_gen(k) / Ē_true(k))|``, the spectra averaged over
      members and trajectories (shell 0, the spatial mean, left out).

    The summary averages every per-step score over the steps (spread and skill as root mean squares, their
    ratio from those), plus the VRMSE over the roll-out ``windows`` (boundaries; empty = The Well's).

    Args:
        ensembles: ``(U, M, S, C, H, W)``: ``U`` ensembles of ``M >= 2`` members' generated steps.
        truth: ``(K, S, C, H, W)``: the true steps of the ``K`` verifying trajectories.
        which: ``(K,)`` long: the ensemble of each verifying trajectory.
        windows: step boundaries for :func:`window_means`.

    Returns:
        :class:`EnsembleScores`.
    """
    if ensembles.dim() != 6 or ensembles.shape[2:] != truth.shape[1:] or which.shape != truth.shape[:1]:
        raise ValueError(f"ensembles (U, M, S, C, H, W), truth (K, S, C, H, W) and which (K,) disagree: "
                         f"{tuple(ensembles.shape)}, {tuple(truth.shape)} and {tuple(which.shape)}")
    m, (k, steps) = ensembles.shape[1], truth.shape[:2]
    keep = (0, 1, 2, 3)  # of a step's (K, C, H, W): all
    per: dict[str, list[float]] = {name: [] for name in (
        "crps", "crps_fair", "spread", "skill", "spread_skill_ratio", "vrmse", "vrmse_ensemble_mean",
        "spectrum_error")}
    log_ratios, last = [], {}
    for s in range(steps):  # one step at a time: memory (M, K, C, H, W), whatever the roll-out length
        x = ensembles[which, :, s].transpose(0, 1).double()  # (M, K, C, H, W)
        y = truth[:, s].double()  # (K, C, H, W)
        per["crps"].append(float(crps_ensemble(x, y).mean()))
        per["crps_fair"].append(float(crps_ensemble(x, y, fair=True).mean()))
        ss = spread_skill(x, y, dim=keep)
        per["spread"].append(float(ss.spread))
        per["skill"].append(float(ss.skill))
        per["spread_skill_ratio"].append(float(ss.ratio))
        per["vrmse"].append(float(vrmse(x, y).mean()))
        per["vrmse_ensemble_mean"].append(float(vrmse(x.mean(0), y).mean()))
        e_gen = radial_energy_spectrum(x).energy.mean((0, 1))  # (C, B)
        e_true = radial_energy_spectrum(y).energy.mean(0)  # (C, B)
        log_ratio = spectrum_log_ratio(e_gen, e_true)  # (C, B)
        per["spectrum_error"].append(float(log_ratio[:, 1:].abs().mean()) if log_ratio.shape[1] > 1 else 0.0)
        log_ratios.append(log_ratio.mean(0))
        last = {"generated": e_gen.mean(0).tolist(), "true": e_true.mean(0).tolist()}

    def mean(name: str) -> float:
        return sum(per[name]) / steps

    spread = math.sqrt(sum(v * v for v in per["spread"]) / steps)
    skill = math.sqrt(sum(v * v for v in per["skill"]) / steps)
    bounds = windows or well_windows(steps)
    summary = {
        "members": m,
        "verifying_trajectories": k,
        "crps": mean("crps"),
        "crps_fair": mean("crps_fair"),
        "spread": spread,
        "skill": skill,
        "spread_skill_ratio": spread / skill if skill > 0 else float("inf"),
        "spread_skill_ratio_corrected": spread / skill * math.sqrt((m + 1) / m) if skill > 0 else float("inf"),
        "spectrum_error": mean("spectrum_error"),
        "vrmse": mean("vrmse"),
        "vrmse_ensemble_mean": mean("vrmse_ensemble_mean"),
        "vrmse_windows": window_means(torch.tensor(per["vrmse"]), bounds),
        "vrmse_ensemble_mean_windows": window_means(torch.tensor(per["vrmse_ensemble_mean"]), bounds),
    }
    curves = {
        "per_step": per,
        "spectrum": {"wavenumber": list(range(len(last["true"]))), **{f"last_step_{n}": v for n, v in last.items()},
                     "log_ratio_mean_over_steps": torch.stack(log_ratios).mean(0).tolist()},
    }
    return EnsembleScores(summary, curves)


def ensemble_plots(curves: dict, times: list[float], floor: dict | None = None) -> tuple[dict, dict]:
    """The report's per-step curves and the spectrum figure of :func:`ensemble_scores`' ``curves`` (and of
    the train-vs-test floor's, when given): ``(curves, figures)`` for :func:`write_report`."""
    per = curves["per_step"]

    def series(name: str, source: dict = per) -> list[tuple[float, float]]:
        return list(zip(times, source[name]))

    reference = floor["per_step"] if floor else None
    crps = {"generated (ensemble CRPS)": series("crps"), "generated (fair CRPS)": series("crps_fair")}
    if reference:
        crps["train simulations as the ensemble (fair CRPS)"] = series("crps_fair", reference)
    plots = {
        "CRPS per frame (field units)": ("seconds", crps),
        "Ensemble spread and RMSE of the ensemble mean per frame": (
            "seconds", {"spread": series("spread"), "skill (RMSE of the mean)": series("skill")}),
        "VRMSE per frame": ("seconds", {"members": series("vrmse"),
                                        "ensemble mean": series("vrmse_ensemble_mean")}),
        "Energy-spectrum error per frame (mean |ln E_gen / E_true| over k >= 1)": (
            "seconds", {"generated": series("spectrum_error")}),
    }
    spec = curves["spectrum"]
    figure = svg_curves(
        {name: [(float(k), e) for k, e in zip(spec["wavenumber"], spec[f"last_step_{name}"]) if k >= 1]
         for name in ("generated", "true")},
        log_y=True, x_label="wave number k",
    )
    return plots, {"Radially averaged energy spectrum of the last frame (k >= 1)": figure}
