"""Where a run computes: the ``device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) checked against
what torch sees, so that asking for a GPU never quietly runs on the CPU."""

from __future__ import annotations

import re

import torch

from tempoflow.errors import ConfigError

# What torch.device takes and tempoflow supports.
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def pick_device(device: str) -> torch.device:
    """``"auto"`` (a GPU when torch sees one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a ``torch.device``.

    Raises:
        ConfigError: another name, or CUDA asked for where torch sees none (or not that many).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if DEVICE.fullmatch(device) is None:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device={device} but torch sees no CUDA GPU (torch {torch.__version__}): use device=cpu, "
                              "or device=auto, which takes the GPU when there is one")
        if index >= count:
            seen = "one CUDA GPU, cuda:0" if count == 1 else f"{count} CUDA GPUs, cuda:0 to cuda:{count - 1}"
            raise ConfigError(f"device={device} but torch sees {seen}: use one of them, or device=auto")
    return torch.device(device)
