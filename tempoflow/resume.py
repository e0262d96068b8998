"""What ``--resume`` may change: the rule comparing a run's saved config with the one it is resumed with."""

from __future__ import annotations

from tempoflow.config import ExperimentConfig
from tempoflow.configio import flatten, from_dict, to_dict
from tempoflow.errors import CheckpointError, ConfigError
from tempoflow.train.checkpoint import CONFIG, Checkpoint

# What a resumed run may change (dotted config keys; a trailing "." takes a whole section). Every other
# setting decides what is trained — the method, the network's shapes, the data, the text encoder, the
# objective, the optimizer (whose saved state would silently override a new lr, betas or weight decay)
# and the seed — so a resumed run keeps it.
RESUMABLE = (
    "out_dir", "device",  # where the run lives (a moved folder keeps its old out_dir) and what it runs on
    "train.steps",  # train longer (or stop sooner): the cosine schedule stretches to the new end
    "train.log_every", "train.checkpoint_every", "train.cpu_threads", "train.compile",  # how, not what
    "data.latent_cache", "data.physics.cache_dir", "text.cache",  # caches, checked against the data
    "data.loading", "data.num_workers",  # how rows are read: the same batches either way
    "flow.codec_path", "vlfm.codec_path",  # where the codec's run is: its fingerprint is checked instead
    "sample.", "eval.",  # how the trained model is sampled and evaluated
)


def resume_conflicts(saved: dict, new: dict) -> list[str]:
    """Settings that differ between a run's saved config and the one it is resumed with, and may not.

    Allowed to change (``RESUMABLE``): ``train.steps`` (to train longer), the logging, checkpoint,
    thread and compile settings, ``device``, ``out_dir``, cache paths (``data.latent_cache``,
    ``data.physics.cache_dir``, ``text.cache``), how data rows are read (``data.loading``,
    ``data.num_workers``: the same batches), the codec run's path (its fingerprint is compared
    instead) and the ``sample``/``eval`` sections. Everything else is a conflict: the method, any
    network size or shape, the data, the text encoder, the method's objective, the optimizer and
    schedule, the batch size, EMA decay, precision and seed.

    Args:
        saved: the checkpoint's config (``config.json``), completed with today's defaults.
        new: the config the run is resumed with.

    Returns:
        One ``key: saved -> new`` entry per conflicting setting, in config order.
    """
    old, now = flatten(saved), flatten(new)
    return [
        f"{key} {old.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}"
        for key in dict.fromkeys([*old, *now])
        if old.get(key) != now.get(key) and not any(
            key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in RESUMABLE
        )
    ]


def check_resumable(cfg: ExperimentConfig, ckpt: Checkpoint) -> None:
    """Refuse to resume ``ckpt`` with a config that changes what is trained (``resume_conflicts``).

    Raises:
        CheckpointError: the checkpoint's config is unreadable.
        ConfigError: the new config changes settings a resumed run must keep; all are named.
    """
    try:
        saved = to_dict(from_dict(ExperimentConfig, ckpt.config))
    except ConfigError as err:
        raise CheckpointError(f"{ckpt.path / CONFIG} holds a config this tempoflow cannot read: {err}") from err
    conflicts = resume_conflicts(saved, to_dict(cfg))
    if conflicts:
        raise ConfigError(
            f"--resume: this config changes settings the run in {cfg.out_dir} was trained with: "
            f"{'; '.join(conflicts)}. Resume with the run's own settings (its config.yaml, plus "
            "train.steps=N to train longer) or train into another out_dir"
        )
