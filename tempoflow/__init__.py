"""tempoflow: flows in latent space for video and stochastic physics trajectories.

``tempoflow.load(path)`` gives a :class:`~tempoflow.api.Pipeline` to sample a trained run;
``tempoflow.write_video`` writes what it returns. Attributes load lazily, so ``import tempoflow`` and
the command line stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"load": "tempoflow.api", "Pipeline": "tempoflow.api", "write_video": "tempoflow.data.io",
         "read_video": "tempoflow.data.video_reader"}

__all__ = ["Pipeline", "load", "read_video", "write_video"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tempoflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
