"""The ``tempoflow`` command: data, train, sample, eval, demo, configs.

Every user mistake (a wrong config key or type, a missing file or checkpoint, a bad caption, an
optional package a feature needs) prints one line naming it and exits with status 2; no traceback.
Under a launcher (torchrun, accelerate launch) every process exits 2 and the first process of each
machine prints the line; the launcher's own failure summary names it too (``report_error``).
A config argument is a YAML file or the name of a packaged config (``tempoflow configs`` lists them).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from tempoflow.errors import ConfigError, TempoflowError

DEMO_CONFIG = "demo"  # the packaged config ``tempoflow demo`` runs


def package_version() -> str:
    """The installed distribution's version; "unknown" when run from a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tempoflow")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _overrides_dict(overrides: list[str]) -> dict:
    """``['sample.steps=8']`` -> ``{'sample': {'steps': 8}}`` for settings applied to a checkpoint."""
    from tempoflow.configio import parse_override

    out: dict = {}
    for text in overrides:
        path, value = parse_override(text)
        if len(path) != 2:
            raise ConfigError(f"override '{text}' must be section.key=value (e.g. sample.steps=32)")
        out.setdefault(path[0], {})[path[1]] = value
    return out


def cmd_data(args: argparse.Namespace) -> int:
    from tempoflow.config import load_config
    from tempoflow.data import load_dataset
    from tempoflow.data.io import write_grid, write_video

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    if (out / "manifest.csv").exists():
        raise ConfigError(f"{out / 'manifest.csv'} exists: {out} already holds a dataset; choose another --out")
    rows = []
    for split in args.splits:
        data = load_dataset(cfg.data, split)
        folder = out / split
        from tqdm.auto import tqdm

        for i in tqdm(range(len(data)), desc=f"write {split}"):
            path = write_video(folder / f"{i:05d}.mp4", data.videos[i], fps=data.fps)
            T, _, H, W = data.videos[i].shape
            text = data.captions[i] if data.captions is not None else ""  # physics: unconditional
            rows.append({"path": str(path.relative_to(out)), "text": text, "num_frames": T,
                         "fps": data.fps, "height": H, "width": W, "split": split})
        write_grid(out / f"preview_{split}.png", data.videos[: min(8, len(data))])
    if cfg.text.cache:  # precompute caption embeddings once, for machines without the text model
        from tempoflow.runs import text_encoder

        text_encoder(cfg).encode(sorted({r["text"] for r in rows}))
        print(f"caption embeddings cached in {cfg.text.cache}")
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} videos and {out / 'manifest.csv'}")
    return 0


def cmd_well(args: argparse.Namespace) -> int:
    from tempoflow.config import load_config
    from tempoflow.data import export_the_well

    cfg = load_config(args.config, args.overrides)
    paths = export_the_well(cfg.data, args.out, tuple(args.splits))
    print(f"wrote {', '.join(str(p) for p in paths)}; train with data.name=the_well data.the_well.path={args.out}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from tempoflow.config import load_config
    from tempoflow.data import load_dataset
    from tempoflow.data.latent_cache import encode_dataset
    from tempoflow.devices import pick_device
    from tempoflow.runs import build_method, data_dict, text_encoder

    cfg = load_config(args.config, args.overrides)
    method = build_method(cfg)
    codec = method.codec
    if codec is None:
        raise ConfigError(f"method '{cfg.method}' has no codec: nothing to encode")
    datasets = {split: load_dataset(cfg.data, split) for split in args.splits}
    manifest = encode_dataset(codec, datasets, data_dict(cfg.data), args.out, device=pick_device(cfg.device))
    if cfg.text.cache:  # caption embeddings too, so training needs neither the codec nor the text model
        text_encoder(cfg).encode(sorted({c for d in datasets.values() for c in d.captions}))
        print(f"caption embeddings cached in {cfg.text.cache}")
    print(f"wrote {codec.name} latents of {', '.join(args.splits)} and {manifest}; "
          f"train with data.latent_cache={args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tempoflow.config import load_config
    from tempoflow.runs import train

    if args.until is not None and args.until < 1:
        raise ConfigError(f"--until must be a step >= 1 to stop at, got {args.until}")
    cfg = load_config(args.config, args.overrides)
    if args.until is not None and args.until > cfg.train.steps:
        raise ConfigError(f"--until {args.until} is past train.steps={cfg.train.steps}: raise train.steps to train "
                          "that long, or stop sooner")
    result = train(cfg, resume=args.resume, until=args.until)
    if not result.main_process:  # one report per run, from the main process of a launcher
        return 0
    if math.isnan(result.last_loss):  # nothing left to run: the run was at train.steps already
        print(f"the run is at step {result.step} already (train.steps={cfg.train.steps}): nothing to train; "
              f"checkpoint: {result.checkpoint}")
        return 0
    print(f"trained {result.step} steps ({result.steps_per_second:.2f} steps/s), "
          f"final loss {result.last_loss:.4f}; checkpoint: {result.checkpoint}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if secondary_process():
        return 0
    from tempoflow.api import Pipeline
    from tempoflow.data.io import write_video
    from tempoflow.runs import load_run
    from tempoflow.viewing import tile, upscale, viewable

    pipe = Pipeline(*load_run(args.checkpoint, device=args.device, weights=args.weights,
                              overrides=_overrides_dict(args.overrides)))
    # A bar per network evaluation (or frame), on stderr, only where someone watches it.
    progress = not args.quiet and sys.stderr.isatty()
    trajectories = pipe.method.task == "trajectory"  # lifting, ardm, meanflow, crps: unconditional roll-outs
    if trajectories and args.prompt:
        raise ConfigError(f"method '{pipe.method.name}' rolls out trajectories: it takes --num and --frames, "
                          "not --prompt")
    out = pipe.generate(None if trajectories else args.prompt, num=args.num, seed=args.seed, frames=args.frames,
                        fps=args.fps, duration=args.duration, progress=progress, view_scale=args.scale)
    video = out.video
    if not pipe.method.clamp:  # physics fields: their range mapped to [0, 1] for viewing
        video = viewable(video, float(video.min()), float(video.max()))
    rows = 1 if trajectories else len(args.prompt)
    path = write_video(args.out, upscale(tile(video, rows), args.scale), fps=args.fps or pipe.fps)
    what = f"{args.num} trajectories of {video.shape[1]} frames" if trajectories else f"{len(video)} samples"
    print(f"wrote {path} ({what}, NFE {out.nfe})")
    return 0


# Under a launcher, how long a process other than the first on its machine waits before printing its error
# (processes started together can drift a second apart on a loaded machine).
# The same mistake fails every process at once: the first prints it and exits, and the launcher ends the
# others meanwhile. An error only this process met (a damaged file among its rows) is printed after it.
LAUNCHER_ERROR_WAIT_S = 3.0


def report_error(line: str, shared: bool = False) -> None:
    """Print one error ``line`` to stderr — once, under a launcher — and leave it where the launcher
    reports a failed process.

    torchrun and ``accelerate launch`` (torchelastic) end a failed run with their own summary and a
    traceback of the launcher, and exit 1 whatever status the processes exit with; the summary's
    "Root Cause" shows the JSON error file a failed process leaves at ``TORCHELASTIC_ERROR_FILE``, so
    every process writes the line there. Only the first process of each machine (``LOCAL_RANK`` 0)
    prints at once; another waits ``LAUNCHER_ERROR_WAIT_S`` first (the launcher stops it when the first
    process exits with the same error) and prints only if it is still running — unless the error is
    ``shared``, known to be every process's (a stop all processes agreed on): the first alone prints it.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:  # torchelastic's error-file format; its summary shows "py_callstack" as the "traceback"
        record = {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}}
        with contextlib.suppress(OSError):
            Path(path).write_text(json.dumps(record))
    if first_on_machine():
        print(line, file=sys.stderr)
        return
    if not shared:
        time.sleep(LAUNCHER_ERROR_WAIT_S)
        print(line, file=sys.stderr)


# How torch.distributed's gloo backend reports, in the processes left, that another one exited mid-collective.
PEER_LOST = ("Connection closed by peer", "Connection reset by peer")


def peer_lost(err: RuntimeError) -> str | None:
    """Which ``PEER_LOST`` message ``err`` is, in a process of a launched run (else None): an error one
    process met alone (a damaged file among its rows) ends it, and a collective of every other process
    then fails with this — a consequence to name in one line, not a traceback to print."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    return next((marker for marker in PEER_LOST if marker in str(err)), None)


def first_on_machine() -> bool:
    """Not started by a launcher, or its first process on this machine (``LOCAL_RANK`` 0)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors reported once under a launcher (``report_error``)."""

    def error(self, message: str):
        if first_on_machine():
            self.print_usage(sys.stderr)
        report_error(f"{self.prog}: error: {message}")
        self.exit(2)


def secondary_process() -> bool:
    """Started by a launcher (torchrun, accelerate) as a process other than the first: sampling and
    evaluation run once, on the first, so the others do nothing."""
    from tempoflow.train.run_folder import launcher_rank

    return launcher_rank() != 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tempoflow.evaluate import compare, evaluate, flatten

    if secondary_process():
        return 0

    # positional words with "=" are overrides; the rest are checkpoints
    checkpoints = [a for a in args.overrides if "=" not in a]
    overrides = _overrides_dict([a for a in args.overrides if "=" in a])
    checkpoints = [args.checkpoint, *checkpoints]
    if args.config:  # an eval config: its sample/eval sections apply to every checkpoint
        from tempoflow.config import load_sections

        base = load_sections(args.config, ("sample", "eval"))
        overrides = {s: {**base.get(s, {}), **overrides.get(s, {})} for s in {*base, *overrides}}
    if len(checkpoints) == 1:
        record = evaluate(checkpoints[0], args.out, device=args.device, overrides=overrides, weights=args.weights)
        print(json.dumps(record["metrics"], indent=2))
        out = Path(args.out) if args.out else Path(record["run"]) / "eval"
        print(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")
        return 0
    out = Path(args.out or "eval_comparison")
    records = compare(checkpoints, out, device=args.device, overrides=overrides, weights=args.weights)
    for ckpt, record in zip(checkpoints, records):
        flat = flatten(record["metrics"])
        keys = [k for k in flat if k.endswith(("caption_accuracy", "psnr_db")) or k == "nfe"]
        print(ckpt + ": " + ", ".join(f"{k} {flat[k]:.4g}" for k in keys))
    print(f"wrote {out / 'comparison.json'} and {out / 'report.html'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tempoflow.configs import packaged_config
    from tempoflow.demo import run_demo

    # The packaged demo, whatever the working directory; never the built-in defaults.
    config = args.config or packaged_config(DEMO_CONFIG)
    run_demo(config, args.overrides)
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from tempoflow.configs import describe_config, list_configs, packaged_config

    if args.name:  # one config's YAML, to copy and edit: `tempoflow configs demo > mine.yaml`
        print(packaged_config(args.name).read_text(encoding="utf-8"), end="")
        return 0
    names = list_configs()
    width = max(map(len, names), default=0)
    columns = shutil.get_terminal_size().columns  # 80 when not a terminal
    for name in names:
        line = f"{name:{width}s}  {describe_config(name)}"
        print(line if len(line) <= columns else line[: columns - 3] + "...")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tempoflow", description="Flows in latent space for video and physics.")
    p.add_argument("--version", action="version", version=f"tempoflow {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def add_overrides(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"dotted overrides of {what}")

    def add_weights(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--weights", default="ema", metavar="ema|raw",
                        help="the checkpoint's EMA weights (default) or its trained ones (raw, model.safetensors)")

    data = sub.add_parser("data", help="render a dataset to videos, encode it to a latent cache, or write it in The Well's layout")
    data_sub = data.add_subparsers(dest="action", required=True)
    d = data_sub.add_parser("render", help="render a dataset to mp4 files with a manifest.csv")
    d.add_argument("config", help="YAML config or packaged name (its data section is used)")
    add_overrides(d, "the config, e.g. data.shapes.resolution=64")
    d.add_argument("--out", default="data/shapes", help="output folder")
    d.add_argument("--splits", nargs="+", default=["train", "test", "heldout"])
    d.set_defaults(func=cmd_data)
    e = data_sub.add_parser("encode", help="encode a dataset with the config's codec into a latent cache")
    e.add_argument("config",
                   help="YAML config or packaged name (its data section and its method's codec are used)")
    add_overrides(e, "the config, e.g. flow.codec_path=runs/shapes_autoencoder")
    e.add_argument("--out", required=True, help="cache folder (then train with data.latent_cache=FOLDER)")
    e.add_argument("--splits", nargs="+", default=["train"])
    e.set_defaults(func=cmd_encode)
    w = data_sub.add_parser("well", help="write a physics dataset (wave, porous, sde) in The Well's HDF5 layout")
    w.add_argument("config", help="YAML config or packaged name (its data section is used), e.g. wave_lifting")
    add_overrides(w, "the config, e.g. data.physics.size=64")
    w.add_argument("--out", required=True, help="dataset folder: writes OUT/data/<split>/<kind>_<split>.hdf5")
    w.add_argument("--splits", nargs="+", default=["train", "test"])
    w.set_defaults(func=cmd_well)

    t = sub.add_parser("train", help="train the method a config names")
    t.add_argument("config", help="YAML config file, or a packaged config's name, e.g. shapes_flow "
                                  "(tempoflow configs lists them)")
    add_overrides(t, "the config, e.g. train.steps=200")
    t.add_argument("--resume", action="store_true", help="continue the run in out_dir from its latest checkpoint")
    t.add_argument("--until", type=int, default=None, metavar="STEP",
                   help="stop at this step with a checkpoint (resume later with --resume)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate videos from captions with a trained checkpoint")
    s.add_argument("checkpoint", help="run folder or checkpoint folder")
    add_overrides(s, "sampling settings, e.g. sample.steps=32 sample.guidance=3")
    s.add_argument("--prompt", action="append", default=None,
                   help="caption (repeat for several); not used by trajectory methods (lifting, ardm, meanflow, crps)")
    s.add_argument("--frames", type=int, default=None,
                   help="frames per video (flow with the DiT) or per roll-out, given ones included (trajectory "
                        "methods); default: the training length")
    s.add_argument("--num", type=int, default=1, help="samples per prompt")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="samples.mp4", help=".mp4, .gif or .webm")
    s.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling for viewing")
    s.add_argument("--device", default="auto")
    add_weights(s)
    s.add_argument("--quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    s.add_argument("--fps", type=float, default=None,
                   help="continuous-time methods (vlfm): frame rate of the output (default: the training fps)")
    s.add_argument("--duration", type=float, default=None,
                   help="continuous-time methods (vlfm): seconds to generate; past the training duration extrapolates")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="sample a fixed evaluation set, write metrics.json and report.html; "
                                    "with several checkpoints, one side-by-side report")
    e.add_argument("checkpoint", help="run folder or checkpoint folder")
    e.add_argument("overrides", nargs="*", metavar="CHECKPOINT|KEY=VALUE",
                   help="more checkpoints to compare, and sampling/eval settings, e.g. sample.steps=32")
    e.add_argument("--out", default=None, help="output folder (default: <run>/eval)")
    e.add_argument("--config", default=None,
                   help="eval config (sample/eval sections): a file or a packaged name, e.g. eval_flow")
    e.add_argument("--device", default="auto")
    add_weights(e)
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("demo", help="the main job: data, a short training run, samples, metrics, report")
    m.add_argument("--config", default=None,
                   help=f"YAML config or packaged name (default: the packaged {DEMO_CONFIG})")
    add_overrides(m, "the demo config, e.g. train.steps=20000")
    m.set_defaults(func=cmd_demo)

    c = sub.add_parser("configs", help="list the packaged configs (train/data/demo/eval take them by name)")
    c.add_argument("name", nargs="?", default=None,
                   help="print this packaged config's YAML instead (to copy and edit)")
    c.set_defaults(func=cmd_configs)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"tempoflow: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides (key=value) may come after options too: `sample RUN --num 2 sample.steps=8`.
    args, extra = parser.parse_known_args(argv)
    takes_paths = args.command == "eval"  # eval's positionals are checkpoints as well as overrides
    stray = [e for e in extra if e.startswith("-") or ("=" not in e and not takes_paths)]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.command == "sample" and (args.num < 1 or args.scale < 1):
        report_error(f"tempoflow: error: --num and --scale must be >= 1, got {args.num} and {args.scale}")
        return 2
    try:
        with warnings.catch_warnings():  # a warning is one line too, like an error
            warnings.showwarning = _one_line_warning
            return args.func(args)
    except TempoflowError as err:
        # a signal's stop is agreed by every process (all stop at the same step, with the same line)
        report_error(f"tempoflow: error: {err}", shared=hasattr(err, "exit_code"))
        return getattr(err, "exit_code", 2)  # 2, or 128 + the signal that stopped training after a save
    except OSError as err:  # the machine's, not ours: a full disk, a path below a file, no permission
        where = f": {err.filename}" if err.filename else ""
        report_error(f"tempoflow: error: {err.strerror or err}{where}")
        return 2
    except RuntimeError as err:
        lost = peer_lost(err)
        if lost is None:
            raise
        report_error(f"tempoflow: error: another process of this run stopped ({lost}); the launcher's summary "
                     "names its error")
        return 1
    except KeyboardInterrupt:
        print("tempoflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
