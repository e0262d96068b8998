"""``tempoflow eval`` for trajectory methods (``lifting``, ``ardm``): seed 001 §3, appendices C and D.4.

Rolls out ``lifting.eval_trajectories`` trajectories from the test split's first frames (for physics data
the one fixed initial state), then scores them

* against the held-out simulations with Table 1's metrics: WCT, the W2 distance between the crossing-time
  distributions (times normalised to [0, 1] as in D.4), and WIM, the time-averaged W2 between the per-frame
  mass distributions — next to the same metrics between the training and the test simulations, the floor
  that finite sample sizes leave;
* with probabilistic scores of ensembles (``evaluate.ensembles``; issue 17): ``eval.ensemble_size`` roll-outs
  from each of the first ``eval.ensemble_starts`` distinct first frames of the test trajectories, scored
  against the true continuation of every test trajectory that starts there, per step — CRPS (ensemble and fair), spread/skill, energy-spectrum error, VRMSE per
  step and over roll-out windows; with one shared initial state the training simulations as the ensemble
  give the floor;
* against the training set by nearest-neighbour distances (appendix C: are samples copies?);
* by wall time per generated frame and network calls (NFE) per frame.

Writes ``metrics.json`` (config, checkpoint hash, hardware, timing), ``samples.safetensors`` and
``report.html`` with QoI histograms (generated vs true) and GIFs of held-out simulations above samples.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from tempoflow.config import ExperimentConfig
from tempoflow.data import PHYSICS_KINDS, is_field_data, load_dataset
from tempoflow.data.io import write_video
from tempoflow.evaluate.ensembles import EnsembleScores, distinct_starts, ensemble_plots, ensemble_scores
from tempoflow.evaluate.record import write_record
from tempoflow.methods.rollout import NextFrameMethod
from tempoflow.metrics.qoi import (
    crossing_time,
    crossing_time_w2,
    mass,
    mass_w2,
    memorisation_report,
    wasserstein_1d,
)
from tempoflow.report.html import VideoCell, read_log, svg_histograms, write_report
from tempoflow.runs import context_length, initial_frames
from tempoflow.viewing import tile, upscale, viewable

GIF_TRAJECTORIES = 4  # held-out simulations and samples shown in the report


@dataclass(frozen=True)
class CrossingQoI:
    """Crossing time ``τ = min{t : s(t) > threshold}``, ``s(t)`` the field reduced over a region (D.4).

    Attributes:
        region: "boundary" (the outer ring of grid points), "corner" (the bottom-right cell) or "right"
            (the right third of the columns).
        threshold: ``c``, in the field's units.
        reduce: how the region is summarised (:data:`tempoflow.metrics.qoi.CROSSING_REDUCTIONS`).
        interpolate: place the crossing on the straight line between the frames around it; without it a
            crossing time is a frame time, and on coarse time grids (a few dozen frames) the W2 of such
            quantised times is dominated by the frame spacing.
    """

    region: str
    threshold: float
    reduce: str = "max"
    interpolate: bool = True


# Section 3: "the time needed that the wave hits the boundary and the saturation reaches the right-bottom
# corner". The paper gives no thresholds; these were read off simulations (32×32 wave: every trajectory
# crosses near t/T ≈ 0.29; 16×16 porous: every one crosses in t/T ∈ [0.44, 0.69]). The SDE blob's QoI is
# ours: its peak entering the right third of the torus (about a third of the trajectories do by t_end).
CROSSING_QOI: dict[str, CrossingQoI] = {
    "wave": CrossingQoI("boundary", 0.03),
    "porous": CrossingQoI("corner", 0.1),
    "sde": CrossingQoI("right", 0.5),
}


def region_mask(region: str, height: int, width: int) -> Tensor:
    """The boolean ``(H, W)`` mask of a :class:`CrossingQoI` region."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    if region == "boundary":
        mask[0], mask[-1], mask[:, 0], mask[:, -1] = True, True, True, True
    elif region == "corner":
        mask[-1, -1] = True
    elif region == "right":
        mask[:, math.ceil(2 * width / 3) :] = True
    else:
        raise ValueError(f"unknown crossing region {region!r}; valid: boundary, corner, right")
    return mask


def crossing_times(videos: Tensor, times: Tensor, kind: str) -> Tensor:
    """``(M,)`` crossing times of ``kind``'s QoI in normalised time ``t / t_end`` (inf: never crossed)."""
    qoi = CROSSING_QOI[kind]
    mask = region_mask(qoi.region, videos.shape[-2], videos.shape[-1])
    return crossing_time(
        videos,
        times / times[-1],
        qoi.threshold,
        mask,
        reduce=qoi.reduce,
        channel=0,
        interpolate=qoi.interpolate,
    )


def trajectory_scores(generated: Tensor, truth: Tensor, times: Tensor, kind: str, context: int) -> dict:
    """Table 1's metrics of ``generated`` ``(N, T, C, H, W)`` against ``truth`` ``(M, T, C, H, W)``.

    Args:
        generated, truth: trajectories on the same frames ``times`` ``(T,)`` (seconds).
        kind: the data name; crossing times only for the physics kinds.
        context: leading frames that were given, not generated: left out of the mass average.

    Returns:
        ``wim`` (time-averaged mass W2 over the generated frames, field units), ``final_mass_w2``, and for
        physics ``wct`` (W2 of crossing times in normalised time, never-crossed censored at 1 + one frame)
        and the crossed fractions.
    """
    scores = {
        "wim": mass_w2(generated[:, context:], truth[:, context:]),
        "final_mass_w2": float(wasserstein_1d(mass(generated[:, -1:])[:, 0], mass(truth[:, -1:])[:, 0])),
    }
    if kind in PHYSICS_KINDS:
        tau_gen, tau_true = crossing_times(generated, times, kind), crossing_times(truth, times, kind)
        censor = 1.0 + float(times[-1] - times[-2]) / float(times[-1])
        scores["wct"] = float(crossing_time_w2(tau_gen, tau_true, censor))
        scores["crossed_generated"] = float(tau_gen.isfinite().float().mean())
        scores["crossed_true"] = float(tau_true.isfinite().float().mean())
    return scores


@torch.no_grad()
def timed_rollout(method: NextFrameMethod, initial: Tensor, steps: int, seed: int, next_frame=None) -> dict:
    """Roll out from ``initial`` ``(N, k, C, H, W)`` through ``method.sample``; the frames (CPU), NFE,
    wall seconds and the sampler's settings."""
    device = next(method.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    custom = {"next_frame": next_frame} if next_frame is not None else {}
    t0 = time.perf_counter()
    out = method.sample(initial, generator=gen, num_frames=initial.shape[1] + steps, progress=sys.stderr.isatty(),
                        **custom)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"frames": out.video.float().cpu(), "nfe": out.nfe, "seconds": time.perf_counter() - t0,
            "settings": out.settings}


def ensemble_evaluation(
    method: NextFrameMethod, test: Tensor, train: Tensor, context: int, cfg: ExperimentConfig
) -> EnsembleScores:
    """Roll out ``eval.ensemble_size`` members from each of the first ``eval.ensemble_starts`` distinct
    starts of the test trajectories, and score them against every test trajectory that begins there
    (:func:`ensemble_scores`; physics data from its fixed initial state: one ensemble, every held-out
    simulation verifies it).

    Args:
        test, train: ``(N, T, C, H, W)`` true trajectories of the two splits.
        context: given frames at the start of each trajectory.

    Returns:
        :class:`EnsembleScores` whose summary adds ``initial_conditions`` (the ensembles rolled out) and
        ``reference_train_vs_test``: the same scores of ``M`` training simulations as the ensemble, where
        every trajectory of both splits starts from one state (else a note), whose curves are under the
        curves' ``train_vs_test``.
    """
    size = cfg.eval.ensemble_size
    starts, which = distinct_starts(test[:, :context])  # (U, k, C, H, W), (N,)
    starts = starts[: cfg.eval.ensemble_starts]
    verifying = which < len(starts)
    truth, which = test[verifying], which[verifying]  # (K, T, C, H, W), (K,)
    steps = truth.shape[1] - context
    run = timed_rollout(method, starts.repeat_interleave(size, 0), steps, cfg.sample.seed)
    ensembles = run["frames"][:, context:].reshape(len(starts), size, steps, *truth.shape[2:])  # (U, M, S, ...)
    scores = ensemble_scores(ensembles, truth[:, context:], which, cfg.eval.rollout_windows)
    scores.summary["initial_conditions"] = len(starts)
    one_start = len(starts) == 1 and bool((train[:, :context] == starts[0]).all())
    if one_start and len(train) >= size:  # exchangeable with the truth: what a perfect emulator would score
        floor = ensemble_scores(train[None, :size, context:], truth[:, context:], which * 0,
                                cfg.eval.rollout_windows)
        scores.summary["reference_train_vs_test"] = {k: v for k, v in floor.summary.items() if "windows" not in k}
        scores.curves["train_vs_test"] = floor.curves
    else:
        scores.summary["reference_train_vs_test"] = (
            f"n/a: needs one initial state shared by all trajectories and >= {size} training trajectories"
        )
    return scores


def evaluate_trajectories(
    method: NextFrameMethod, cfg: ExperimentConfig, ckpt, out: Path, t_start: float
) -> dict:
    """Score a trajectory method's checkpoint; returns the record written to ``metrics.json``."""
    n, seed = cfg.lifting.eval_trajectories, cfg.sample.seed
    test, train = load_dataset(cfg.data, "test"), load_dataset(cfg.data, "train")
    context = context_length(cfg)
    steps = test.videos.shape[1] - context
    run = timed_rollout(method, initial_frames(cfg, n), steps, seed)
    generated, truth = run["frames"], test.videos
    times = method.frame_times(generated.shape[1])

    metrics: dict = {
        "trajectories": n,
        "held_out_trajectories": len(test),
        "frames": generated.shape[1],
        "given_frames": context,
        **trajectory_scores(generated, truth, times, cfg.data.name, context),
    }
    # The same metrics between two sets of true simulations: what finite samples alone cost.
    floor = trajectory_scores(train.videos[:n], truth, times, cfg.data.name, context)
    metrics["reference_train_vs_test"] = floor
    ensemble = ensemble_evaluation(method, truth, train.videos, context, cfg)
    metrics["ensemble"], ensemble_curves = ensemble.summary, ensemble.curves
    memo = memorisation_report(generated[:, context:], train.videos[:, context:])
    metrics["memorisation"] = {k: v for k, v in memo.items() if not isinstance(v, Tensor)}
    metrics.update(
        {
            "nfe_per_frame": run["nfe"] / max(steps, 1),
            "seconds_per_frame": run["seconds"] / max(steps, 1),  # one batched step for all trajectories
            "trajectory_frames_per_second": n * steps / run["seconds"],
            "rollout_seconds": run["seconds"],
        }
    )
    metrics.update({k: v for k, v in run["settings"].items() if k not in ("frames", "given_frames")})

    figures = {}
    if cfg.data.name in PHYSICS_KINDS:
        tau = {
            "held-out simulations": crossing_times(truth, times, cfg.data.name).tolist(),
            "generated": crossing_times(generated, times, cfg.data.name).tolist(),
        }
        figures["Crossing time t / t_end (generated vs held-out; never-crossed left out)"] = svg_histograms(
            tau, x_label="t / t_end"
        )
    final = {
        "held-out simulations": mass(truth[:, -1:])[:, 0].tolist(),
        "generated": mass(generated[:, -1:])[:, 0].tolist(),
    }
    figures["Mass of the last frame (mean |u|)"] = svg_histograms(final, x_label="mass")
    curves = {
        "Mean mass per frame": (
            "seconds",
            {
                "held-out simulations": list(zip(times.tolist(), mass(truth).mean(0).tolist())),
                "generated": list(zip(times.tolist(), mass(generated).mean(0).tolist())),
            },
        )
    }

    ensemble_steps, ensemble_figures = ensemble_plots(ensemble_curves, times[context:].tolist(),
                                                      ensemble_curves.get("train_vs_test"))
    curves.update(ensemble_steps)
    figures.update(ensemble_figures)

    lo, hi = float(truth.min()), float(truth.max())
    k = min(GIF_TRAJECTORIES, len(truth), n)
    both = torch.cat([truth[:k], generated[:k]])  # (2k, T, C, H, W)
    if is_field_data(cfg.data):  # fields: the held-out range mapped to [0, 1], first channel
        both = viewable(both, lo, hi)
    fps = ckpt.fps
    gif = write_video(out / "clips" / "truth_vs_samples.gif", upscale(tile(both, 2)), fps=fps)
    cells = [
        VideoCell(
            f"top: {k} held-out simulations; bottom: {k} samples (field range [{lo:.3g}, {hi:.3g}])", gif
        )
    ]

    # unconditional: no captions (evaluate.compare reads the "prompts" key)
    record = write_record(out, ckpt, cfg, t_start, metrics, seed=seed, prompts=[],
                          ensemble_curves={"time": times[context:].tolist(), **ensemble_curves})
    save_file(
        {"trajectories": generated.half().contiguous(), "times": times}, str(out / "samples.safetensors")
    )
    notes = (
        f"{n} trajectories rolled out from {context} given frame(s) of the test split, seed {seed}; "
        f"scored against {len(test)} held-out simulations. WCT in normalised time t / t_end (appendix D.4). "
        f"Ensemble scores: {metrics['ensemble']['members']} members from each of "
        f"{metrics['ensemble']['initial_conditions']} initial condition(s), verified against "
        f"{metrics['ensemble']['verifying_trajectories']} held-out trajectories; CRPS and spread in field "
        "units, VRMSE and the spectrum error dimensionless; per-step values are in metrics.json "
        "(ensemble_curves)."
    )
    write_report(
        out / "report.html",
        f"tempoflow {cfg.method}: {Path(cfg.out_dir).name} @ step {ckpt.step}",
        {"step": ckpt.step, "hardware": record["hardware"], **metrics},
        cells,
        read_log(ckpt.run_folder / "log.jsonl"),
        notes=notes,
        curves=curves,
        figures=figures,
    )
    return record
