"""Resumable training state, stored without pickle: safetensors files and JSON.

Layout of a checkpoint's ``state/`` (the weights a resume starts from are the checkpoint's own
``model.safetensors`` and ``ema.safetensors``)::

    trainer.json             format version, step, number of processes
    optimizer.safetensors    the optimizer's state dict
    scheduler.safetensors    the learning-rate schedule's state dict
    scaler.safetensors       the fp16 gradient scaler's state dict (train.mixed_precision=fp16 only)
    rng_<rank>.safetensors   per process: the python, numpy, torch CPU and CUDA RNGs and the trainer's
                             batch and noise generators

A state dict is a tree of dicts, lists, tuples, numbers, strings and tensors: its tensors are the
safetensors file's tensors and its skeleton is JSON in the file's metadata, so reading one never runs
code and every number comes back bit for bit.

Why not accelerate's ``save_state``/``load_state`` (DESIGN §8 names them): in accelerate 1.15
``load_state`` restores the objects registered with ``register_for_checkpointing`` from
``custom_checkpoint_<i>.pkl`` with ``torch.load(weights_only=False)``, so a pickle placed there runs
code on ``--resume``; it skips an unreadable ``random_states_<rank>.pkl`` without a word (a resume
that is silently not exact); and its errors do not say which file failed. (Its optimizer, scheduler
and RNG files it does read with ``weights_only=True``.)

Checkpoints written before this layout (accelerate's: ``optimizer.bin``, ``scheduler.bin``,
``random_states_<rank>.pkl``, and ``custom_checkpoint_1.pkl`` for the step and the generators) still
resume: those files are read with ``torch.load(weights_only=True)``, which builds nothing but
tensors, containers, numbers and numpy arrays. ``custom_checkpoint_0.pkl`` (the EMA) is never read:
the checkpoint's ``ema.safetensors`` holds the same values.
"""

from __future__ import annotations

import json
import pickle
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import load as torch_load_safe_numpy
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tempoflow.errors import CheckpointError, ConfigError
from tempoflow.train.checkpoint import STATE, Checkpoint, damaged
from tempoflow.weights import TORCH_LOAD_ERRORS, first_line

FORMAT = 1  # version of this layout, in trainer.json
TRAINER = "trainer.json"
OPTIMIZER = "optimizer.safetensors"
SCHEDULER = "scheduler.safetensors"
SCALER = "scaler.safetensors"
# What restoring a well-formed file into an object it does not fit raises (load_state_dict, set_state).
MISFIT_ERRORS = (KeyError, ValueError, TypeError, RuntimeError, IndexError)


def rng_file(rank: int) -> str:
    return f"rng_{rank}.safetensors"


@dataclass
class TrainingState:
    """What a resume restores besides the weights. ``rng`` is this process's (None: none was saved for
    it); ``files`` names the file each part came from, for errors."""

    step: int
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    rng: dict | None
    files: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Trees of containers and tensors <-> a safetensors file with the skeleton as JSON metadata.


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of ``obj``; its tensors are moved into ``tensors`` under numbered keys."""
    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"tensor": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"state dict keys must be str or int, got {[type(k).__name__ for k in obj]}")
        return {"dict": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"tuple": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a training state file")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``_encode``. Raises ValueError on a malformed skeleton."""
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if node.keys() == {"tensor"} and node["tensor"] in tensors:
        return tensors[node["tensor"]]
    if node.keys() == {"tuple"} and isinstance(node["tuple"], list):
        return tuple(_decode(v, tensors) for v in node["tuple"])
    if node.keys() == {"dict"} and isinstance(node["dict"], list) and all(
        isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int)) for kv in node["dict"]
    ):
        return {k: _decode(v, tensors) for k, v in node["dict"]}
    raise ValueError(f"malformed state entry {str(node)[:60]}")


def save_tree(path: Path, tree: Any) -> None:
    """Write a tree of dicts (str or int keys), lists, tuples, scalars and tensors to one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(tree, tensors)
    save_file(tensors, str(path), metadata={"tree": json.dumps(skeleton)})


def read_tree(ckpt: Checkpoint, name: str) -> Any:
    """The tree in ``state/<name>`` of a checkpoint (checked against its recorded SHA-256).

    Raises:
        CheckpointError: the file is missing, changed, or not a state file.
    """
    file = ckpt.file(f"{STATE}/{name}")
    try:
        with safe_open(str(file), "pt") as f:
            skeleton = (f.metadata() or {}).get("tree")
            names = f.keys()
            tensors = {k: f.get_tensor(k) for k in names}
        if skeleton is None:
            raise ValueError("no 'tree' entry in its metadata")
        return _decode(json.loads(skeleton), tensors)
    except (SafetensorError, OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON too
        raise damaged(ckpt.path, file, f"is not a readable state file ({first_line(err)})") from err


# --------------------------------------------------------------------------------------------
# Random number generators.


def capture_rng(batch_gen: torch.Generator, noise_gen: torch.Generator) -> dict:
    """This process's RNG states: python, numpy, torch CPU and CUDA, and the trainer's two generators."""
    numpy = np.random.get_state(legacy=False)
    numpy["state"]["key"] = numpy["state"]["key"].tolist()  # 624 uint32 words, exact as JSON
    return {
        "python": random.getstate(),
        "numpy": numpy,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batch_gen": batch_gen.get_state(),
        "noise_gen": noise_gen.get_state(),
        "device": noise_gen.device.type,
    }


def restore_rng(rng: dict, batch_gen: torch.Generator, noise_gen: torch.Generator) -> None:
    """Set the RNG states ``capture_rng`` took. A run saved on another kind of device (CPU vs CUDA)
    keeps this device's noise generator as seeded, with a warning: it cannot continue exactly.

    Raises:
        KeyError, ValueError, TypeError, RuntimeError: the states are malformed (``MISFIT_ERRORS``).
    """
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    batch_gen.set_state(rng["batch_gen"])
    if rng["device"] not in (None, noise_gen.device.type):
        warnings.warn(f"the run was saved on {rng['device']} and resumes on {noise_gen.device.type}: "
                      "its noise restarts from the seed, so it will not match a run that never stopped")
        return
    noise_gen.set_state(rng["noise_gen"])
    for i, state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, i)


# --------------------------------------------------------------------------------------------
# Saving and reading the state folder.


def save_training_state(folder: Path, state: TrainingState, rank: int, processes: int) -> None:
    """Write ``state`` into ``folder``: each process its RNG file, process 0 everything else."""
    folder.mkdir(parents=True, exist_ok=True)
    save_tree(folder / rng_file(rank), state.rng)
    if rank != 0:
        return
    save_tree(folder / OPTIMIZER, state.optimizer)
    save_tree(folder / SCHEDULER, state.scheduler)
    if state.scaler is not None:
        save_tree(folder / SCALER, state.scaler)
    info = {"format": FORMAT, "step": state.step, "processes": processes}
    (folder / TRAINER).write_text(json.dumps(info))


def _read_info(ckpt: Checkpoint) -> dict:
    """``state/trainer.json``, checked. Raises CheckpointError: missing, unreadable or malformed."""
    file = ckpt.file(f"{STATE}/{TRAINER}")
    try:
        info = json.loads(file.read_bytes())
    except (OSError, ValueError, RecursionError) as err:
        raise damaged(ckpt.path, file, f"is not readable JSON ({first_line(err)})") from err
    if not isinstance(info, dict) or not all(isinstance(info.get(k), int) for k in ("format", "step", "processes")):
        raise damaged(ckpt.path, file, "does not hold the integers format, step and processes")
    if info["format"] > FORMAT:
        raise CheckpointError(f"{file}: written by a newer tempoflow (state format {info['format']}); upgrade it")
    return info


def read_training_state(ckpt: Checkpoint, rank: int, scaler: bool, processes: int = 1) -> TrainingState:
    """Everything in the checkpoint's ``state/`` this process restores, read without running code.

    Args:
        ckpt: the checkpoint to resume from.
        rank: this process's index (its RNG file).
        scaler: whether the run has an fp16 gradient scaler to restore.
        processes: how many processes resume it: as many as saved it (``train.batch_size`` is per
            process, so another count would change the global batch, and each process's generators).

    Raises:
        CheckpointError: no ``state/``, or a file of it missing, changed or unreadable.
        ConfigError: resumed by another number of processes than trained it.
    """
    folder = ckpt.path / STATE
    if not folder.is_dir():
        raise CheckpointError(f"--resume: checkpoint {ckpt.path} has no training state ({STATE}/)")
    if not (folder / TRAINER).is_file() and not ckpt.checksums and (folder / "optimizer.bin").is_file():
        return _read_accelerate_state(ckpt, rank, scaler)
    info = _read_info(ckpt)
    files = {"optimizer": OPTIMIZER, "scheduler": SCHEDULER, "scaler": SCALER, "rng": rng_file(rank)}
    if info["processes"] != processes:
        saved = info["processes"]
        raise ConfigError(
            f"--resume: the run in {ckpt.run_folder} was trained by {saved} process{'es' * (saved != 1)} and is "
            f"resumed by {processes}: train.batch_size is per process, so the global batch would change from "
            f"{saved}× to {processes}× train.batch_size; resume it with {saved} process{'es' * (saved != 1)}"
            + (f" (torchrun --nproc_per_node {saved} -m tempoflow.cli train ... --resume)" if saved > 1 else
               " (no launcher)")
        )
    rng = read_tree(ckpt, files["rng"])
    return TrainingState(
        step=info["step"],
        optimizer=read_tree(ckpt, OPTIMIZER),
        scheduler=read_tree(ckpt, SCHEDULER),
        scaler=read_tree(ckpt, SCALER) if scaler else None,
        rng=rng,
        files={part: folder / name for part, name in files.items()},
    )


def _torch_load(ckpt: Checkpoint, name: str) -> Any:
    """``state/<name>`` through ``torch.load(weights_only=True)`` with numpy arrays allowed (accelerate's
    loader, as ``load_state`` reads these files). Raises CheckpointError: missing or unreadable."""
    file = ckpt.file(f"{STATE}/{name}")
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols is not for our users
            warnings.simplefilter("ignore")
            return torch_load_safe_numpy(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # objects that only a full unpickle could build: never run them
        raise damaged(ckpt.path, file, "holds pickled Python objects, which tempoflow never loads (they could "
                                       "run code)") from err
    except TORCH_LOAD_ERRORS as err:
        raise damaged(ckpt.path, file, f"is not a readable torch file ({first_line(err)})") from err


def _read_accelerate_state(ckpt: Checkpoint, rank: int, scaler: bool) -> TrainingState:
    """The state of a checkpoint written with accelerate's ``save_state`` (before this layout)."""
    folder = ckpt.path / STATE
    files = {"optimizer": "optimizer.bin", "scheduler": "scheduler.bin", "scaler": "scaler.pt",
             "rng": f"random_states_{rank}.pkl", "trainer": "custom_checkpoint_1.pkl"}
    trainer, rng = _torch_load(ckpt, files["trainer"]), _torch_load(ckpt, files["rng"])
    try:
        step = int(trainer["step"])
        generators = {"batch_gen": trainer["batch_gen"], "noise_gen": trainer["noise_gen"]}
    except (*MISFIT_ERRORS, AttributeError) as err:
        raise damaged(ckpt.path, folder / files["trainer"], "holds no step and generators") from err
    try:
        rng = {"python": rng["random_state"], "numpy": rng["numpy_random_seed"], "torch": rng["torch_manual_seed"],
               "cuda": rng.get("torch_cuda_manual_seed", []), **generators, "device": None}
    except (*MISFIT_ERRORS, AttributeError) as err:
        raise damaged(ckpt.path, folder / files["rng"], "holds no random states") from err
    return TrainingState(
        step=step,
        optimizer=_torch_load(ckpt, files["optimizer"]),
        scheduler=_torch_load(ckpt, files["scheduler"]),
        scaler=_torch_load(ckpt, files["scaler"]) if scaler else None,
        rng=rng,
        files={part: folder / name for part, name in files.items()},
    )


def restore_training_state(
    ckpt: Checkpoint, state: TrainingState, optimizer, scheduler, scaler, batch_gen: torch.Generator,
    noise_gen: torch.Generator,
) -> None:
    """Load ``state`` into the optimizer, the schedule, the fp16 scaler (or None) and the RNGs.

    Raises:
        CheckpointError: a part does not fit (another optimizer or schedule, malformed RNG states).
    """
    def load_scheduler() -> None:
        saved = state.scheduler
        if not isinstance(saved, dict) or not saved.keys() <= scheduler.state_dict().keys():
            raise ValueError("not this run's learning-rate schedule")
        scheduler.load_state_dict(saved)

    def load_scaler() -> None:
        if scaler is not None:
            scaler.load_state_dict(state.scaler)

    def load_rng() -> None:
        if state.rng is not None:
            restore_rng(state.rng, batch_gen, noise_gen)

    def load_optimizer() -> None:
        if not isinstance(state.optimizer, dict):
            raise TypeError("not an optimizer's state dict")
        optimizer.load_state_dict(state.optimizer)

    parts = {"optimizer": load_optimizer, "scheduler": load_scheduler,
             "scaler": load_scaler, "rng": load_rng}
    for part, load in parts.items():
        try:
            load()
        except MISFIT_ERRORS as err:
            raise damaged(ckpt.path, state.files[part], f"does not fit this run ({first_line(err)})") from err
