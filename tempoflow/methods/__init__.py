"""Methods by name. Each is a ``Method`` with ``loss(batch, generator)`` and ``sample(...)``."""

from tempoflow.errors import ConfigError
from tempoflow.methods.align import Align
from tempoflow.methods.ardm import AutoregressiveFlow
from tempoflow.methods.autoencoder import FrameAutoencoder
from tempoflow.methods.base import Method, Samples
from tempoflow.methods.flow import FlowMatching
from tempoflow.methods.lifting import StochasticLifting
from tempoflow.methods.video_wae import VideoWAE
from tempoflow.methods.vlfm import VideoLatentFlow

METHODS: dict[str, type[Method]] = {
    "flow": FlowMatching,
    "autoencoder": FrameAutoencoder,
    "vlfm": VideoLatentFlow,
    "video_wae": VideoWAE,
    "lifting": StochasticLifting,
    "ardm": AutoregressiveFlow,
    "align": Align,
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}' (valid: {', '.join(sorted(METHODS))})")
    return METHODS[name]


__all__ = ["METHODS", "Method", "Samples", "method_class"]
