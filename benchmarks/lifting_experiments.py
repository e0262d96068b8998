"""Stochastic Lifting vs the ARDM baseline: seed 001's experiments (§3, Table 1, Figures 4–5) at a CPU budget.

    OMP_NUM_THREADS=1 python benchmarks/lifting_experiments.py                  # the small CPU run (~20 min)
    python benchmarks/lifting_experiments.py --size 64 --trajectories 1280 --times 64 --steps 350000 \\
        --eval 512 --width 128 --device cuda                                      # towards the paper's size

Four experiments, each trained with the real trainer (``tempoflow.train``) and scored with the functions
``tempoflow eval`` uses (``tempoflow.evaluate.trajectories``):

1. Table 1 — on wave and porous data: lifting (1 network call per frame) against ARDM sampled with
   s = 2, 5, 10, 20, 40 Euler steps per frame, and against the one-step peers on the same UNet, data and
   training budget (issue 17): ``meanflow`` sampled with 1 and 2 calls per frame and ``crps`` (1 call):
   WCT (crossing-time W2, normalised time), WIM (time-averaged mass W2) over the sampled trajectories; the
   ensemble scores ``tempoflow eval`` reports (``evaluate.trajectories.ensemble_evaluation``: CRPS and fair
   CRPS, spread/skill ratio and its corrected form, energy-spectrum error, VRMSE per member and of the
   ensemble mean, VRMSE over The Well's roll-out windows; ``--ensemble`` members); network calls per frame;
   wall time per frame as a ratio to lifting, every setting timed on the same batch in one interleaved loop
   (median of ``--time-repeats``). The train-vs-test row is the floor that finite sample sizes leave (for the
   ensemble scores: ``--ensemble`` training simulations as the ensemble). ``--peers`` picks the methods
   besides lifting. Writes ``table1.md`` next to ``results.json``.
2. Figure 4 left/middle — label dimension d: final training loss and WCT (first kind only).
3. Figure 4 right — the direct jump x_0 → x_{T−1} without roll-out, against the roll-out's last frame:
   final-frame mass W2 and the distance of each generated last frame to its nearest held-out last frame
   (relative to that distance between held-out frames: about 1 for plausible frames, far above for noise).
4. Figure 5 — a long video roll-out (500 frames, 16-frame training videos, BCE): mean intensity and object
   pixel count per frame, plotted, to show that they stay bounded.

Prints the tables with the hardware and writes ``results.json`` (and ``long_rollout.png``) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor

from tempoflow.config import ExperimentConfig, load_config
from tempoflow.configio import to_dict
from tempoflow.data import load_dataset
from tempoflow.evaluate.record import hardware
from tempoflow.evaluate.trajectories import ensemble_evaluation, timed_rollout, trajectory_scores
from tempoflow.methods.lifting import StochasticLifting
from tempoflow.metrics.oracle import objects_per_frame
from tempoflow.metrics.qoi import mass, wasserstein_1d
from tempoflow.report.html import read_log
from tempoflow.runs import context_length, initial_frames, load_run, method_parts, train
from tempoflow.train.checkpoint import read_checkpoint
from tempoflow.train.trainer import Trainer

ARDM_STEPS = (2, 5, 10, 20, 40)  # Table 1
MEANFLOW_STEPS = (1, 2)  # MeanFlow's 1-NFE and 2-NFE sampling (arXiv 2505.13447)
PEERS = ("ardm", "meanflow", "crps")  # lifting's competitors on the same backbone (seed 001 Table 1; issue 17)
CALLS_KNOB = {"ardm": "steps", "meanflow": "sample_steps"}  # the config field setting calls per frame
LONG_VIDEOS_PER_CAPTION = 2  # the long roll-out's shapes data: one training video per caption
# The long roll-out's lifting settings beyond the shapes_lifting config (which already trains with noisy
# windows, lifting.window_noise=0.2: README "Long video roll-outs"; lifting.window_noise=0 is the paper's recipe).
LONG_OVERRIDES: tuple[str, ...] = ()
OBJECT_THRESHOLD = 0.25  # a shapes pixel belongs to an object when a channel exceeds this (background is 0)


def unet_and_budget(args: argparse.Namespace, logs: int) -> list[str]:
    """Overrides every model of a comparison shares: the UNet width (``--width``, two levels as packaged),
    steps, batch, lr and device; one checkpoint at the end and ``logs`` log lines."""
    return [
        f"lifting.unet.base_width={args.width}",
        f"lifting.unet.groups={max(1, args.width // 4)}",
        f"lifting.unet.cond_dim={4 * args.width}",
        f"train.steps={args.steps}",
        f"train.batch_size={args.batch}",
        f"train.lr={args.lr}",
        f"train.checkpoint_every={args.steps}",
        f"train.log_every={max(1, args.steps // logs)}",
        f"device={args.device}",
    ]


def experiment(args: argparse.Namespace, config: str, name: str, *overrides: str) -> ExperimentConfig:
    """A config of this run: the file's settings with the budget's sizes, output in ``--out/name``."""
    sizes = [
        f"data.physics.size={args.size}",
        f"data.physics.n_trajectories={args.trajectories}",
        f"data.physics.n_times={args.times}",
        "data.physics.test_fraction=0.5",  # many held-out simulations: the truth the W2s compare against
        f"data.physics.cache_dir={args.out / 'data'}",
        *unet_and_budget(args, logs=10),
        f"eval.ensemble_size={args.ensemble}",
        f"out_dir={args.out / name}",
    ]
    return load_config(config, [*sizes, *overrides])


def fresh_run(cfg: ExperimentConfig) -> None:
    """Remove this script's own earlier run of the same name, so that ``train`` starts afresh."""
    shutil.rmtree(cfg.out_dir, ignore_errors=True)


def finished(run: Path, cfg: ExperimentConfig) -> bool:
    """Whether ``run`` holds a finished training of exactly ``cfg``."""
    if not (run / "checkpoints" / "latest").is_file():
        return False
    ckpt = read_checkpoint(run)
    return ckpt.config == to_dict(cfg) and ckpt.step == cfg.train.steps


def train_and_load(cfg: ExperimentConfig, reuse: bool = False):
    """Train with ``tempoflow.train``; the EMA model back from its checkpoint and the final training loss.
    With ``reuse``, a finished run of the same config in ``cfg.out_dir`` is loaded instead of retrained."""
    run = Path(cfg.out_dir)
    if reuse and finished(run, cfg):
        method, _, _ = load_run(run, device=cfg.device)
        return method, read_log(run / "log.jsonl")[-1]["loss"]
    fresh_run(cfg)
    result = train(cfg)
    method, _, _ = load_run(result.checkpoint, device=cfg.device)
    return method, result.last_loss


def scores(method, cfg: ExperimentConfig, n: int, seed: int, ensemble: bool = False) -> dict:
    """Roll out ``n`` trajectories from the fixed initial state and score them against the test split; with
    ``ensemble``, also the probabilistic scores ``tempoflow eval`` reports (``ensemble_evaluation``:
    ``eval.ensemble_size`` members verified by every held-out simulation) under ``"ensemble"``."""
    test = load_dataset(cfg.data, "test")
    context = context_length(cfg)
    run = timed_rollout(method, initial_frames(cfg, n), test.videos.shape[1] - context, seed)
    steps = run["frames"].shape[1] - context
    times = method.frame_times(run["frames"].shape[1])
    out = trajectory_scores(run["frames"], test.videos, times, cfg.data.name, context)
    out.update(nfe_per_frame=run["nfe"] / steps, ms_per_frame=1e3 * run["seconds"] / steps)
    if ensemble:
        train_videos = load_dataset(cfg.data, "train").videos
        out["ensemble"] = ensemble_evaluation(method, test.videos, train_videos, context, cfg).summary
    return {**out, "frames": run["frames"]}


def relative_wall_time(
    models: dict[str, tuple], cfg: ExperimentConfig, n: int, frames: int, repeats: int, seed: int
) -> dict[str, dict]:
    """Wall time per generated frame of every (method, setting), measured in one run on the same batch: ``n``
    trajectories from the fixed initial state, ``frames`` generated frames, the settings interleaved
    (round-robin) ``repeats`` times; the median, and its ratio to ``"lifting"``'s (the machine is shared, so
    only measurements taken side by side compare).

    Args:
        models: ``{name: (method, config overrides)}`` with the overrides applied before each timing.
    """
    initial = initial_frames(cfg, n)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, (model, fields) in models.items():
            if fields:
                model.cfg = dataclasses.replace(model.cfg, **fields)
            run = timed_rollout(model, initial, frames, seed)
            times[name].append(run["seconds"] / frames)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {
        name: {"ms_per_frame_median": 1e3 * med[name], "ms_per_frame_runs": [1e3 * t for t in times[name]],
               "time_ratio_to_lifting": med[name] / med["lifting"]}
        for name in models
    }


def table1(args: argparse.Namespace, kind: str) -> tuple[list[dict], dict]:
    """Lifting vs ARDM at every s and the one-step peers (meanflow at 1 and 2 calls, crps) on ``kind``; the rows
    and the lifting run (reused by the other studies). Each row holds WCT/WIM, the ensemble scores of
    ``tempoflow eval`` and the wall time per frame relative to lifting, timed side by side at the end."""
    rows = []
    cfg = experiment(args, f"{kind}_lifting", f"{kind}_lifting")
    lifting, loss = train_and_load(cfg, args.reuse)
    res = scores(lifting, cfg, args.eval, args.seed, ensemble=True)
    rows.append(
        {"method": "lifting", "s": 1, "train_loss": loss, **{k: v for k, v in res.items() if k != "frames"}}
    )
    timed: dict[str, tuple] = {"lifting": (lifting, {})}
    # The peers, each on its own packaged config (the same data, window, UNet and budget as lifting's) and
    # swept over its network calls per frame: ardm's solver steps, meanflow's sampling steps.
    sweeps = {"ardm": args.ardm_steps, "meanflow": args.meanflow_steps, "crps": [1]}
    for peer in args.peers:
        cfg_p = experiment(args, f"{kind}_{peer}", f"{kind}_{peer}")
        model, loss_p = train_and_load(cfg_p, args.reuse)
        for s in sweeps[peer]:
            fields = {CALLS_KNOB[peer]: s} if peer in CALLS_KNOB else {}
            if fields:  # what `tempoflow eval RUN ardm.steps=s` (meanflow.sample_steps=s) sets
                model.cfg = dataclasses.replace(model.cfg, **fields)
            res_p = scores(model, cfg_p, args.eval, args.seed, ensemble=True)
            timed[f"{peer} s={s}"] = (model, fields)
            rows.append(
                {
                    "method": peer,
                    "s": s,
                    "train_loss": loss_p,  # each method's own objective: not comparable across methods
                    **{k: v for k, v in res_p.items() if k != "frames"},
                }
            )
    if args.time_repeats > 0:
        test_frames = load_dataset(cfg.data, "test").videos.shape[1] - context_length(cfg)
        wall = relative_wall_time(timed, cfg, args.eval, min(args.time_frames, test_frames), args.time_repeats,
                                  args.seed)
        for row, name in zip(rows, timed):
            row.update(wall[name])
    test, train_set = load_dataset(cfg.data, "test"), load_dataset(cfg.data, "train")
    floor = trajectory_scores(train_set.videos, test.videos, test.times, kind, context_length(cfg))
    ref = rows[0]["ensemble"].get("reference_train_vs_test")  # the same data for every method: kept once
    for row in rows:
        row["ensemble"].pop("reference_train_vs_test", None)
    rows.append({"method": "train vs test (floor)", "s": 0, **floor,
                 **({"ensemble": ref} if isinstance(ref, dict) else {})})
    main_run = {"cfg": cfg, "method": lifting, "frames": res["frames"], "loss": loss, "wct": res.get("wct")}
    return rows, {**main_run, "wim": res["wim"]}


def label_sweep(args: argparse.Namespace, kind: str, main_run: dict) -> list[dict]:
    """Final training loss and WCT against the label dimension d (the main run is d = 64)."""
    rows = [
        {
            "d": main_run["cfg"].lifting.label_dim,
            "train_loss": main_run["loss"],
            "wct": main_run["wct"],
            "wim": main_run["wim"],
        }
    ]
    for d in args.label_dims:
        cfg = experiment(
            args, f"{kind}_lifting", f"{kind}_lifting_d{d}", f"lifting.label_dim={d}"
        )
        method, loss = train_and_load(cfg, args.reuse)
        res = scores(method, cfg, args.eval, args.seed)
        rows.append({"d": d, "train_loss": loss, "wct": res.get("wct"), "wim": res["wim"]})
    return sorted(rows, key=lambda r: r["d"])


def nearest_distance(frames: Tensor, reference: Tensor, leave_one_out: bool = False) -> Tensor:
    """``(N,)`` L2 distance of each frame ``(N, C, H, W)`` to its nearest frame of ``reference``."""
    d = torch.cdist(frames.flatten(1)[None].double(), reference.flatten(1)[None].double())[0]  # (N, M)
    if leave_one_out:
        d.fill_diagonal_(float("inf"))
    return d.min(1).values


def direct_jump(args: argparse.Namespace, kind: str, main_run: dict) -> list[dict]:
    """Lifting trained on x_0 → x_{T−1} alone (window 1), against the roll-out's last frame.

    Scores of the generated last frames: mass W2 against the held-out last frames; the median distance to
    the nearest held-out last frame, over the same distance between held-out frames (``nn_test_ratio``:
    about 1 for plausible frames, far above for noise); and the same against the training last frames
    (``nn_train_ratio``: near 0 for copies of training frames).
    """
    cfg = experiment(
        args,
        f"{kind}_lifting",
        f"{kind}_direct_jump",
        "lifting.window=1",
        "lifting.pairs_per_video=1",
    )
    train_set, test = load_dataset(cfg.data, "train"), load_dataset(cfg.data, "test")
    jump = train_set.videos[:, [0, -1]]  # (M, 2, C, H, W): the initial state and the last frame only
    run = Path(cfg.out_dir)
    if args.reuse and finished(run, cfg):
        jump_loss = read_log(run / "log.jsonl")[-1]["loss"]
    else:
        fresh_run(cfg)
        _, C, H, W = jump.shape[1:]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            method = StochasticLifting(cfg.lifting, (2, C, H, W), **method_parts(cfg))
        meta = {"method": "lifting", "video_shape": [2, C, H, W], "fps": train_set.fps}
        jump_loss = (
            Trainer(method, jump, None, cfg.train, run, to_dict(cfg), meta, cfg.device).fit().last_loss
        )
    method, _, _ = load_run(run, device=cfg.device)
    direct = timed_rollout(method, initial_frames(cfg, args.eval), 1, args.seed)["frames"][:, -1]
    test_last, train_last = test.videos[:, -1], train_set.videos[:, -1]
    test_spread = nearest_distance(test_last, test_last, leave_one_out=True).median()
    train_spread = nearest_distance(train_last, train_last, leave_one_out=True).median()
    rows = []
    for name, last, loss in (
        ("direct jump x_0 -> x_T", direct, jump_loss),
        ("roll-out (main lifting run)", main_run["frames"][:, -1], main_run["loss"]),
    ):
        rows.append(
            {
                "model": name,
                "train_loss": loss,
                "last_frame_mass_w2": float(
                    wasserstein_1d(mass(last[:, None])[:, 0], mass(test_last[:, None])[:, 0])
                ),
                "nn_test_ratio": float(nearest_distance(last, test_last).median() / test_spread),
                "nn_train_ratio": float(nearest_distance(last, train_last).median() / train_spread),
            }
        )
    return rows


def long_rollout(args: argparse.Namespace) -> dict:
    """Figure 5: a 500-frame roll-out of a lifting model trained on 16-frame shapes videos (BCE)."""
    cfg = experiment(
        args,
        "shapes_lifting",
        "shapes_lifting",
        f"data.shapes.resolution={args.shapes_size}",
        f"data.shapes.videos_per_caption={args.long_videos_per_caption}",
        *args.long_overrides,
    )
    method, loss = train_and_load(cfg, args.reuse)
    train_videos = load_dataset(cfg.data, "train").videos
    run = timed_rollout(
        method, initial_frames(cfg, args.long_samples), args.long_frames - cfg.lifting.window, args.seed
    )
    frames = run["frames"]  # (N, F, 3, H, W)

    def stats(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # (N, F) mean intensity, objects, object pixels
        counts, pixels = objects_per_frame(v, OBJECT_THRESHOLD)
        return v.mean((2, 3, 4)), counts, pixels

    intensity, counts, pixels = stats(frames)
    train_intensity, train_counts, train_pixels = stats(train_videos)
    lit_first, lit_last = lit_channels(frames[:, 0]), lit_channels(frames[:, -1])  # (N, 3) each
    colour_kept = (lit_first == lit_last).all(-1) & (pixels[:, -1] > 0)

    def within(values: Tensor, ref: Tensor) -> float:  # share of generated frames inside the training range
        gen = values[:, cfg.lifting.window:]
        return float(((gen >= ref.min()) & (gen <= ref.max())).float().mean())

    out = {
        "train_loss": loss,
        "train_videos": train_videos.shape[0],
        "overrides": args.long_overrides,
        "frames": frames.shape[1],
        "samples": frames.shape[0],
        "ms_per_frame": 1e3 * run["seconds"] / (frames.shape[1] - cfg.lifting.window),
        "blank_at_end": int((pixels[:, -1] == 0).sum()),
        "colour_kept_at_end": int(colour_kept.sum()),  # the object's lit channels at the last frame = the first's
        "intensity_range_rollout": [float(intensity.min()), float(intensity.max())],
        "intensity_range_training": [float(train_intensity.min()), float(train_intensity.max())],
        "object_pixels_range_rollout": [float(pixels.min()), float(pixels.max())],
        "object_pixels_range_training": [float(train_pixels.min()), float(train_pixels.max())],
        "objects_range_rollout": [float(counts.min()), float(counts.max())],
        "objects_range_training": [float(train_counts.min()), float(train_counts.max())],
        "frames_within_training_range": {"intensity": within(intensity, train_intensity),
                                         "object_pixels": within(pixels, train_pixels),
                                         "objects": within(counts, train_counts)},
        "intensity_last_100_mean": float(intensity[:, -100:].mean()),
        "object_pixels_last_100_mean": float(pixels[:, -100:].mean()),
        "object_pixels_training_mean": float(train_pixels.mean()),
        "finite": bool(torch.isfinite(frames).all()),
    }
    plot_long_rollout({"mean intensity": (intensity, train_intensity),
                       f"object pixels (> {OBJECT_THRESHOLD})": (pixels, train_pixels),
                       "objects (8-connected)": (counts, train_counts)}, args.out / "long_rollout.png")
    return out


def lit_channels(frames: Tensor) -> Tensor:
    """``(N, 3)`` bool: which colour channels an object pixel of each frame ``(N, 3, H, W)`` lights (the palette's
    colours are the corners of the RGB cube, so red is (1, 0, 0) and magenta (1, 0, 1))."""
    on = frames.amax(1, keepdim=True) > OBJECT_THRESHOLD  # (N, 1, H, W) object pixels
    return ((frames > OBJECT_THRESHOLD) & on).flatten(2).any(-1)


def plot_long_rollout(panels: dict[str, tuple[Tensor, Tensor]], path: Path) -> None:
    """One panel per statistic: every roll-out's ``(N, F)`` curve over the training videos' range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2))
    for ax, (label, (values, ref)) in zip(axes, panels.items()):
        ax.axhspan(float(ref.min()), float(ref.max()), color="0.85", label="training videos' range")
        ax.plot(values.T.numpy(), lw=0.6)
        ax.set_xlabel("frame")
        ax.set_ylabel(label)
    axes[0].legend(loc="upper right", fontsize=8)
    values, ref = next(iter(panels.values()))
    fig.suptitle(f"{values.shape[0]} lifting roll-outs of {values.shape[1]} frames "
                 f"(trained on {ref.shape[1]}-frame videos)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


ENSEMBLE_COLUMNS = {  # table column: key of ``ensemble_scores``' summary
    "crps": "crps",
    "crps_fair": "crps_fair",
    "ssr": "spread_skill_ratio",
    "ssr_corr": "spread_skill_ratio_corrected",
    "spectrum_err": "spectrum_error",
    "vrmse": "vrmse",
    "vrmse_mean": "vrmse_ensemble_mean",
}
TABLE1_COLUMNS = ["method", "s", "nfe_per_frame", "wct", "wim", *ENSEMBLE_COLUMNS, "vrmse_windows",
                  "time_ratio_to_lifting", "ms_per_frame_median", "train_loss"]


def flat_row(row: dict) -> dict:
    """A Table 1 row with its ensemble scores as top-level columns (windows as ``a:b=v`` text)."""
    ens = row.get("ensemble", {})
    out = {k: v for k, v in row.items() if k != "ensemble"}
    out.update({col: ens[key] for col, key in ENSEMBLE_COLUMNS.items() if key in ens})
    if "vrmse_windows" in ens:
        out["vrmse_windows"] = " ".join(f"{w}={v:.3g}" for w, v in ens["vrmse_windows"].items())
    return out


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """``rows`` as a GitHub markdown table (4 significant digits)."""
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    first = max(len(str(r.get(columns[0], ""))) for r in rows) + 1
    print(" | ".join([f"{columns[0]:<{first}}", *(f"{c:>12}" for c in columns[1:])]))
    for r in rows:
        cells = [r.get(c, "") for c in columns[1:]]
        values = [f"{v:>12.4g}" if isinstance(v, float) else f"{v!s:>12}" for v in cells]
        print(" | ".join([f"{r.get(columns[0], '')!s:<{first}}", *values]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", nargs="+", default=["wave", "porous"])
    p.add_argument("--size", type=int, default=16, help="grid side of the physics data")
    p.add_argument("--trajectories", type=int, default=80, help="simulated trajectories (half held out)")
    p.add_argument("--times", type=int, default=12, help="stored times (plus the fixed initial state)")
    p.add_argument("--width", type=int, default=16, help="UNet base width (2 levels)")
    p.add_argument("--steps", type=int, default=800, help="training steps of every model")
    p.add_argument("--batch", type=int, default=8, help="trajectories per batch (x lifting.pairs_per_video)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval", type=int, default=64, help="sampled trajectories per score")
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS),
                   help="methods compared with lifting in Table 1 (same UNet, data and training budget)")
    p.add_argument("--ardm-steps", type=int, nargs="+", default=list(ARDM_STEPS))
    p.add_argument("--meanflow-steps", type=int, nargs="+", default=list(MEANFLOW_STEPS))
    p.add_argument("--ensemble", type=int, default=16, help="members per ensemble (eval.ensemble_size)")
    p.add_argument("--time-frames", type=int, default=3, help="generated frames per side-by-side timing")
    p.add_argument("--time-repeats", type=int, default=3,
                   help="interleaved timings of every setting (median; 0: skip the side-by-side timing)")
    p.add_argument("--label-dims", type=int, nargs="+", default=[1, 8], help="besides the configs' d = 64")
    p.add_argument("--shapes-size", type=int, default=16)
    p.add_argument("--long-frames", type=int, default=500)
    p.add_argument("--long-samples", type=int, default=8)
    p.add_argument("--long-videos-per-caption", type=int, default=LONG_VIDEOS_PER_CAPTION,
                   help="shapes videos per caption (one per caption is held out) for the long roll-out")
    p.add_argument("--long-overrides", nargs="*", default=list(LONG_OVERRIDES),
                   help="config overrides of the long roll-out's lifting model")
    p.add_argument("--skip", nargs="*", default=[], choices=["table1", "labels", "jump", "long"])
    p.add_argument("--reuse", action="store_true", help="load finished runs of the same config from --out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=1234, help="sampling seed")
    p.add_argument("--out", type=Path, default=Path("out/lifting_experiments"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict = {
        "hardware": hardware(),
        "threads": args.threads,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    print(f"hardware: {results['hardware']}, {args.threads} thread(s)")
    main_runs = {}
    markdown = f"hardware: {results['hardware']}, {args.threads} thread(s)\n\n"
    if "table1" not in args.skip:
        for kind in args.kinds:
            rows, main_runs[kind] = table1(args, kind)
            results[f"table1_{kind}"] = rows
            title = (f"Table 1 ({kind}, {args.size}x{args.size}, {args.eval} sampled trajectories, ensembles of "
                     f"{args.ensemble}, {args.steps} training steps)")
            flat = [flat_row(r) for r in rows]
            print_table(title, flat, [c for c in TABLE1_COLUMNS if c != "vrmse_windows"])
            print("VRMSE windows (members):")
            for r in flat:
                print(f"  {r['method']} s={r['s']}: {r.get('vrmse_windows', '')}")
            markdown += f"### {title}\n\n{markdown_table(flat, TABLE1_COLUMNS)}\n"
            (args.out / "table1.md").write_text(markdown)
    kind = args.kinds[0]
    if kind in main_runs and "labels" not in args.skip:
        results["label_sweep"] = label_sweep(args, kind, main_runs[kind])
        print_table(f"Label dimension ({kind})", results["label_sweep"], ["d", "train_loss", "wct", "wim"])
    if "jump" not in args.skip:
        for k, run in main_runs.items():
            results[f"direct_jump_{k}"] = direct_jump(args, k, run)
            print_table(
                f"Direct jump vs roll-out ({k}, last frame)",
                results[f"direct_jump_{k}"],
                ["model", "train_loss", "last_frame_mass_w2", "nn_test_ratio", "nn_train_ratio"],
            )
    if "long" not in args.skip:
        results["long_rollout"] = long_rollout(args)
        print("\nLong roll-out (shapes):", json.dumps(results["long_rollout"], indent=1))
    results["seconds"] = time.perf_counter() - t0
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{results['seconds'] / 60:.1f} min; wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
