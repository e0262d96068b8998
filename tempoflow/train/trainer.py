"""One trainer for every method, on ``accelerate``: CPU, one GPU or several run the same code.

AdamW, linear warm-up + cosine decay, gradient clipping, EMA weights, bf16 autocast on GPU,
atomic checkpoints and exact resume. Noise comes from explicit generators whose states are part
of the checkpoint, so N steps straight and N/2 + resume + N/2 give identical weights (on CPU).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors import SafetensorError
from torch import Tensor
from tqdm.auto import tqdm

from tempoflow.configio import require
from tempoflow.data.rows import Rows, TensorRows
from tempoflow.devices import pick_device
from tempoflow.errors import CheckpointError, ConfigError, TrainingError
from tempoflow.files import write_text_atomic
from tempoflow.methods.base import Method
from tempoflow.report.html import read_log
from tempoflow.train.checkpoint import (
    EMA_WEIGHTS,
    STATE,
    WEIGHTS,
    commit_checkpoint,
    holds_checkpoints,
    learned_state,
    newest_finite_checkpoint,
    read_checkpoint,
    staging_dir,
)
from tempoflow.train.ema import EMA
from tempoflow.train.loader import RowLoader, batch_indices
from tempoflow.train.optimization import clip_groups, lr_lambda
from tempoflow.train.sharding import (
    ShardedOptimizer,
    full_state,
    full_tensors,
    load_full_state,
    local,
    shard,
)
from tempoflow.train.signals import Interrupted, StopSignals
from tempoflow.train.state import (
    TrainingState,
    capture_rng,
    read_training_state,
    restore_training_state,
    save_training_state,
)
from tempoflow.train.threads import thread_governor
from tempoflow.weights import first_line, load_weights


@dataclass(frozen=True)
class TrainConfig:
    """One trainer for every method (``tempoflow.train``)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine schedule decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "auto"  # "auto" (bf16 on GPU, none on CPU), "no", "bf16", "fp16" (GPU only)
    compile: bool = False  # torch.compile the method's network (pays on GPU for long runs)
    # Several processes: "ddp" keeps a whole replica per process and averages gradients; "fsdp" shards
    # parameters, gradients, optimizer moments and EMA over the processes (tempoflow.train.sharding),
    # for networks whose training state does not fit one device. Checkpoints are the same either way.
    distributed: str = "ddp"
    # CPU only: 0 = choose between all cores and one by measured speed while training (degrades
    # gracefully when another job shares the cores; tempoflow.train.threads), N = exactly N threads
    # (bit-for-bit reproducible runs need a fixed count).
    cpu_threads: int = 0
    log_every: int = 25
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            require(getattr(self, name) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        require(self.cpu_threads >= 0, f"train.cpu_threads must be >= 0 (0 = adaptive), got {self.cpu_threads}")
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        require(0.0 <= self.min_lr_ratio <= 1.0,
                f"train.min_lr_ratio must be in [0, 1] (the final learning rate is lr × min_lr_ratio), "
                f"got {self.min_lr_ratio}")
        require(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        require(self.grad_clip > 0, f"train.grad_clip must be > 0, got {self.grad_clip}")
        require(self.distributed in ("ddp", "fsdp"), f"train.distributed must be ddp or fsdp, got {self.distributed!r}")
        require(self.mixed_precision in ("auto", "no", "bf16", "fp16"),
                 f"train.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")


@dataclass
class TrainResult:
    step: int
    checkpoint: Path
    seconds: float
    steps_per_second: float
    last_loss: float
    log: list[dict] = field(default_factory=list)
    main_process: bool = True  # False on the other processes of a multi-process run: they report nothing


class TrainState:
    """Step counter and the explicit generators (saved in the checkpoint's ``state/``)."""

    def __init__(self, batch_gen: torch.Generator, noise_gen: torch.Generator):
        self.step = 0
        self.batch_gen, self.noise_gen = batch_gen, noise_gen


def accelerator_settings(device: str, mixed_precision: str) -> dict:
    """``Accelerator`` arguments for training on ``device`` with ``train.mixed_precision``: ``auto`` is
    bf16 autocast on a GPU and float32 on the CPU.

    Raises:
        ConfigError: a GPU that torch does not see (``pick_device``), or fp16 on the CPU, which
            accelerate ignores (it would train in float32).
    """
    dev = pick_device(device)
    if mixed_precision == "auto":
        mixed_precision = "bf16" if dev.type == "cuda" else "no"
    if mixed_precision == "fp16" and dev.type == "cpu":
        raise ConfigError(f"train.mixed_precision=fp16 needs a CUDA GPU but this run trains on the CPU (device="
                          f"{device}), where accelerate would train in float32: use train.mixed_precision=no, or bf16 "
                          "(bf16 autocast, which the CPU runs)")
    return {"cpu": dev.type == "cpu", "mixed_precision": mixed_precision}


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch running out of device or host memory (not another RuntimeError)."""
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


class Trainer:
    """Trains a ``Method`` on a video dataset: in memory (``videos (N, T, C, H, W)``) or read lazily.

    Args:
        method: the model; its ``loss(batch, generator)`` returns ``{"loss": ...}``.
        videos: ``(N, T, C, H, W)`` training videos (or fields), or ``Rows`` (``tempoflow.data.rows``):
            ``TensorRows`` are held on the device; other rows are read when a batch draws them, by
            ``num_workers`` DataLoader workers running ahead of training (``tempoflow.train.loader``).
        captions: N captions (or None for unconditional data).
        cfg: optimisation settings.
        out_dir: run folder: ``checkpoints/``, ``log.jsonl``, ``tb/``.
        config_dict, meta: written into every checkpoint's ``config.json``.
        device: "auto", "cpu", "cuda" or "cuda:N".
        key: the batch entry ``videos`` is served under: "video", or "latents" (from a latent cache).
        num_workers: processes reading lazy rows ahead (0: read in this process at each step).

    Raises:
        ConfigError: a GPU torch does not see, or fp16 on the CPU (:func:`accelerator_settings`).
        TrainingError: the method has no trainable parameters.
    """

    def __init__(
        self,
        method: Method,
        videos: Tensor,
        captions: list[str] | None,
        cfg: TrainConfig,
        out_dir: str | Path,
        config_dict: dict,
        meta: dict,
        device: str = "auto",
        key: str = "video",
        num_workers: int = 0,
    ):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.config_dict, self.meta = config_dict, meta
        self.accelerator = Accelerator(**accelerator_settings(device, cfg.mixed_precision))
        set_seed(cfg.seed + self.accelerator.process_index)
        dev = self.accelerator.device
        if cfg.compile:
            method.compile_networks()
        self.sharded = cfg.distributed == "fsdp" and self.accelerator.num_processes > 1
        if cfg.distributed == "fsdp" and not self.sharded:
            warnings.warn("train.distributed=fsdp with one process: there is nothing to shard over; training "
                          "unsharded")
        if self.sharded:  # before the optimizer is built: sharding replaces the parameters
            shard(method.to(dev))
        params = [p for p in method.parameters() if p.requires_grad]
        if not params:
            raise TrainingError(f"method '{method.name}' has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        # The schedule is not handed to accelerate: its wrapper steps a scheduler once per process per
        # step, which runs the warm-up and decay N times too fast on N processes.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        if self.sharded:  # a sharded method is not wrapped again (accelerate would add DDP)
            self.method, self.optimizer = method, self.accelerator.prepare(optimizer)
        else:
            self.method, self.optimizer = self.accelerator.prepare(method, optimizer)
        self.ema = EMA(self.unwrapped, cfg.ema_decay).to(dev)
        self.clip_groups = clip_groups(self.unwrapped)
        # One batch stream for all processes (each takes its slice: batch_indices), its own noise each.
        seed = cfg.seed * 1000
        self.state = TrainState(
            torch.Generator().manual_seed(seed),
            torch.Generator(device=dev).manual_seed(seed + 1 + self.accelerator.process_index),
        )
        self.threads = thread_governor(cfg.cpu_threads, dev.type == "cpu")
        rows = TensorRows(videos) if isinstance(videos, Tensor) else videos
        # In memory: the whole tensor on the device, indexed there. Lazy: a RowLoader, made at the first
        # batch (after a resume has restored the batch generator it replays).
        self.videos = rows.videos.to(dev) if isinstance(rows, TensorRows) else None
        self.rows: Rows = rows if self.videos is None else TensorRows(self.videos)  # no second copy on the host
        self.loader: RowLoader | None = None
        self.num_workers = num_workers
        self.key = key  # "video", or "latents" when training from a latent cache
        self.captions = captions
        self.resumed_from: Path | None = None  # the checkpoint fit(resume=True) continued from
        self.stopped_by: int | None = None  # the signal that ended fit, if one did

    def agree(self, finite: Tensor, stop: bool) -> tuple[bool, bool]:
        """(every process's losses stayed finite, some process was asked to stop by a signal): one
        collective, so all processes stop together, at the same step."""
        flags = torch.stack([(~finite).float(), torch.tensor(float(stop), device=finite.device)])
        bad, stopping = (self.accelerator.reduce(flags, "sum") > 0).tolist()
        return not bad, stopping

    @property
    def unwrapped(self) -> Method:
        return self.accelerator.unwrap_model(self.method)

    def row_loader(self) -> RowLoader:
        """A loader of this process's lazy rows from the current step to ``cfg.steps``."""
        acc = self.accelerator
        return RowLoader(self.rows, self.state.batch_gen, self.cfg.batch_size, acc.process_index, acc.num_processes,
                         max(self.cfg.steps - self.state.step, 0), self.state.step, self.num_workers,
                         pin_memory=acc.device.type == "cuda")

    def batch(self) -> dict:
        acc = self.accelerator
        if self.videos is None and (self.loader is None or self.loader.step != self.state.step):
            self.loader = self.row_loader()
        idx = batch_indices(self.state.batch_gen, len(self.rows), self.cfg.batch_size, acc.process_index,
                            acc.num_processes)
        if self.videos is not None:
            batch = {self.key: self.videos[idx.to(self.videos.device)]}
        else:
            batch = {self.key: self.loader.next(idx).to(acc.device, non_blocking=True)}
        # Row of each video in the training set (CPU): methods that key fixed per-sample values by
        # (video, frame), such as lifting's labels, read it; the rest ignore it.
        batch["index"] = idx
        if self.captions is not None:
            batch["caption"] = [self.captions[i] for i in idx.tolist()]  # CPU indices: no device sync
        return batch

    def weights_finite(self) -> bool:
        """Whether the weights and EMA weights are finite on every process (one collective)."""
        tensors = [*learned_state(self.unwrapped).values(), *self.ema.averaged().values()]
        bad = sum((~torch.isfinite(local(t))).sum() for t in tensors if t.is_floating_point())
        return not bool(self.accelerator.reduce(torch.as_tensor(bad, device=self.accelerator.device).float(), "sum") > 0)

    def stop_non_finite(self, what: str) -> TrainingError:
        """The error that stops training on a non-finite loss or weights, naming the newest checkpoint
        whose weights are all finite (searched back on disk: after a resume too)."""
        good = newest_finite_checkpoint(self.ckpt_dir)
        return TrainingError(
            f"{what} at or before step {self.state.step}; training stopped. Last good checkpoint: "
            f"{good if good is not None else 'none written yet'} (train again with a lower train.lr or "
            "train.grad_clip, or a longer train.warmup_steps)"
        )

    def save(self) -> Path:
        """Commit a checkpoint of the current step on the main process (``commit_checkpoint``).

        Raises:
            TrainingError: a weight is not finite on some process (nothing is written), or the checkpoint
                cannot be written (a full disk, a read-only folder; the earlier checkpoints are intact).
        """
        step = self.state.step
        if self.resumed_from is not None and self.resumed_from.name == f"step_{step:08d}":
            return self.resumed_from  # nothing trained since it was read: it is this state already
        if not self.weights_finite():
            raise self.stop_non_finite("the weights became non-finite")
        tmp = staging_dir(self.ckpt_dir, step)
        final = self.ckpt_dir / f"step_{step:08d}"
        try:
            if self.accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            self.accelerator.wait_for_everyone()
            self.save_state(tmp / STATE)
            self.accelerator.wait_for_everyone()
            weights, ema = self.unwrapped, self.ema.averaged()
            if self.sharded:  # gathered whole (collectives: every process takes part)
                weights, ema = full_state(self.unwrapped), full_tensors(ema)
            if self.accelerator.is_main_process:
                final = commit_checkpoint(self.ckpt_dir, step, weights, ema, self.config_dict, self.meta)
        except (OSError, SafetensorError) as err:  # safetensors reports a full disk as its own error
            shutil.rmtree(tmp, ignore_errors=True)
            earlier = newest_finite_checkpoint(self.ckpt_dir)
            raise TrainingError(
                f"cannot write the checkpoint of step {step} in {self.ckpt_dir} ({first_line(err)}); training "
                f"stopped. Last good checkpoint: {earlier if earlier is not None else 'none written yet'}"
            ) from err
        self.accelerator.wait_for_everyone()
        return final

    def save_state(self, folder: Path) -> None:
        """Optimizer, schedule, fp16 scaler, RNGs and step into ``folder`` (``tempoflow.train.state``)."""
        scaler = self.accelerator.scaler
        state = TrainingState(
            step=self.state.step,
            optimizer=ShardedOptimizer(self.unwrapped, self.optimizer.optimizer).state_dict() if self.sharded
            else self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            rng=capture_rng(self.state.batch_gen, self.state.noise_gen),
        )
        save_training_state(folder, state, self.accelerator.process_index, self.accelerator.num_processes)

    def resume(self) -> None:
        """Continue from the latest checkpoint: weights, EMA, optimizer, schedule, RNGs and step.

        Every file is checked against its recorded SHA-256 and read before anything is restored;
        nothing is unpickled (``tempoflow.train.state``).

        Raises:
            CheckpointError: no checkpoint, or one of its files missing, damaged or not fitting this run.
        """
        if not holds_checkpoints(self.ckpt_dir):
            raise CheckpointError(f"--resume: no checkpoint in {self.ckpt_dir}")
        ckpt = read_checkpoint(self.ckpt_dir)
        ckpt.verify()
        state = read_training_state(ckpt, self.accelerator.process_index, self.accelerator.scaler is not None,
                                    self.accelerator.num_processes)
        if self.sharded:
            load_full_state(self.unwrapped, ckpt.tensors(WEIGHTS), ckpt.path / WEIGHTS)
        else:
            load_weights(self.unwrapped, ckpt.tensors(WEIGHTS), ckpt.path / WEIGHTS)
        self.ema.load(ckpt.tensors(EMA_WEIGHTS), ckpt.path / EMA_WEIGHTS)
        optimizer = ShardedOptimizer(self.unwrapped, self.optimizer.optimizer) if self.sharded else self.optimizer
        restore_training_state(ckpt, state, optimizer, self.scheduler, self.accelerator.scaler,
                               self.state.batch_gen, self.state.noise_gen)
        self.state.step = state.step
        self.resumed_from = ckpt.path

    def truncate_log(self) -> None:
        """Drop ``log.jsonl`` records past the resumed step (and unreadable lines, e.g. one cut short by
        a crash, with a warning): those steps run again, and each step is logged once. Rewritten by rename."""
        path = self.out_dir / "log.jsonl"
        if not path.is_file():
            return
        kept = [record for record in read_log(path) if record["step"] <= self.state.step]
        write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))

    def fit(
        self, resume: bool = False, until: int | None = None, callback: Callable[[int], bool] | None = None
    ) -> TrainResult:
        """Train to ``cfg.steps`` (or stop early at step ``until``, with a checkpoint, as a
        preempted job would; the schedule still runs over ``cfg.steps``).

        ``callback(step)`` runs after every optimizer step; returning True stops training there,
        with a checkpoint, like ``until``. The time-to-quality benchmark uses it to snapshot the EMA
        weights and stop at a wall-clock budget. One process only: processes deciding to stop at
        different steps would wait for each other at the checkpoint forever.

        SIGTERM or Ctrl-C (``StopSignals``) checkpoints the current step and raises ``Interrupted``.

        Raises:
            ConfigError: ``until`` below 1 (there is no step 0 to stop at).
            TrainingError: a callback with several processes; a non-finite loss or weights (naming the
                newest finite checkpoint; nothing non-finite is written).
            Interrupted: stopped by SIGTERM or SIGINT, after saving a checkpoint.
        """
        if until is not None and until < 1:
            raise ConfigError(f"until must be a step >= 1 to stop at, got {until}")
        if callback is not None and self.accelerator.num_processes > 1:
            raise TrainingError("Trainer.fit(callback=...) runs on one process only")
        end = self.cfg.steps if until is None else min(until, self.cfg.steps)
        if resume:
            self.resume()
        main = self.accelerator.is_main_process
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and main:
            self.truncate_log()
        start_step = self.state.step
        with contextlib.ExitStack() as stack:
            log_file = writer = None
            if main:
                from torch.utils.tensorboard import SummaryWriter

                log_file = stack.enter_context(open(self.out_dir / "log.jsonl", "a"))
                writer = SummaryWriter(str(self.out_dir / "tb"))
                stack.callback(writer.close)
            bar = stack.enter_context(
                tqdm(total=end, initial=start_step, desc="train", disable=not main, dynamic_ncols=True)
            )
            signals = stack.enter_context(StopSignals())
            try:
                last_good, log, last_loss, seconds = self._loop(end, bar, log_file, writer, callback, signals)
            finally:
                if self.threads is not None:
                    self.threads.finish()
                if self.loader is not None:
                    self.loader.close()
                    self.loader = None
        if self.stopped_by is not None:
            raise Interrupted(
                f"stopped by {signal.Signals(self.stopped_by).name} at step {self.state.step}; checkpoint: "
                f"{last_good}. Continue with --resume", self.stopped_by
            )
        if last_good is None:  # resumed at or past the final step: nothing new to save
            last_good = self.save()
        return TrainResult(
            step=self.state.step,
            checkpoint=last_good,
            seconds=seconds,
            steps_per_second=(self.state.step - start_step) / max(seconds, 1e-9),
            last_loss=last_loss,
            log=log,
            main_process=self.accelerator.is_main_process,
        )

    def _loop(
        self, end: int, bar: tqdm, log_file, writer, callback: Callable[[int], bool] | None = None,
        signals: StopSignals | None = None,
    ) -> tuple[Path | None, list[dict], float, float]:
        """Training steps up to ``end``: (last checkpoint written, log records, last loss, seconds).

        A signal (``signals.received``) ends the loop at a checkpoint: after the current step on one
        process; with several, at the next log or checkpoint step, where the processes agree anyway."""
        cfg, acc = self.cfg, self.accelerator
        dev = acc.device
        loss_sum = torch.zeros((), device=dev)
        since_log = 0  # steps run since the last record (after a resume: not step % log_every)
        term_sums: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=dev)
        last_good: Path | None = None
        log: list[dict] = []
        last_loss = float("nan")
        t0 = tick = time.perf_counter()
        self.method.train()
        while self.state.step < end:
            batch = self.batch()
            try:
                # A sharded method is not wrapped by accelerate, whose wrapper brings the autocast.
                with self.accelerator.autocast() if self.sharded else contextlib.nullcontext():
                    terms = self.method(batch, self.state.noise_gen)
                loss = terms["loss"]
                finite &= torch.isfinite(loss.detach())  # checked at log/checkpoint steps: no sync here
                acc.backward(loss)
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not out_of_memory(err):
                    raise
                raise TrainingError(
                    f"out of memory in training step {self.state.step + 1} ({first_line(err)[:120]}): lower "
                    f"train.batch_size ({cfg.batch_size}), the frames or the resolution"
                ) from err
            # unscale once (fp16's GradScaler refuses a second unscale per step), then clip each player
            acc.unscale_gradients()
            for group in self.clip_groups:
                torch.nn.utils.clip_grad_norm_(group, cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.unwrapped)
            loss_sum += loss.detach().float()
            for k, v in terms.items():  # the method's other scalar terms (l2, kl, divergence...), on device
                if k != "loss" and isinstance(v, torch.Tensor) and v.ndim == 0:
                    term_sums[k] = term_sums.get(k, 0.0) + v.detach().float()
            self.state.step += 1
            since_log += 1
            if self.threads is not None:
                self.threads.step()
            bar.update(1)
            step = self.state.step
            if callback is not None and callback(step):
                end = step  # stop here, logging and checkpointing as at the last step
            received = signals is not None and signals.received is not None
            if received and acc.num_processes == 1:
                end = step
            at_log = step % cfg.log_every == 0 or step == end
            at_ckpt = step % cfg.checkpoint_every == 0 or step == end
            if at_log or at_ckpt:
                ok, stopping = self.agree(finite, received)
                if not ok:
                    raise self.stop_non_finite("the loss became non-finite")
                if stopping:  # checkpoint this step, then stop (fit raises Interrupted)
                    end, at_log, at_ckpt = step, True, True
                    self.stopped_by = signals.received if received else signal.SIGTERM
            if at_log:
                n, since_log = since_log, 0
                last_loss = float(self.accelerator.reduce(loss_sum, "mean")) / n  # the mean over processes
                loss_sum.zero_()
                now = time.perf_counter()
                rec = {
                    "step": step,
                    "loss": last_loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "steps_per_s": n / max(now - tick, 1e-9),
                    "time_s": now - t0,
                    **{k: float(self.accelerator.reduce(v, "mean")) / n for k, v in term_sums.items()},  # as the loss
                }
                term_sums.clear()
                tick = now
                log.append(rec)
                bar.set_postfix(loss=f"{last_loss:.4f}")
                if log_file is not None:
                    log_file.write(json.dumps(rec) + "\n")
                    log_file.flush()
                    writer.add_scalar("loss", last_loss, step)
                    writer.add_scalar("lr", rec["lr"], step)
                    for k in rec.keys() - {"step", "loss", "lr", "steps_per_s", "time_s"}:
                        writer.add_scalar(f"terms/{k}", rec[k], step)
            if at_ckpt:
                last_good = self.save()
        return last_good, log, last_loss, time.perf_counter() - t0
