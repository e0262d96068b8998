"""Methods by name. Each is a ``Method`` with ``loss(batch, generator)`` and ``sample(...)``."""

from tempoflow.errors import ConfigError
from tempoflow.methods.autoencoder import FrameAutoencoder
from tempoflow.methods.base import Method, Samples
from tempoflow.methods.flow import FlowMatching

METHODS: dict[str, type[Method]] = {"flow": FlowMatching, "autoencoder": FrameAutoencoder}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}' (valid: {', '.join(sorted(METHODS))})")
    return METHODS[name]


__all__ = ["METHODS", "Method", "Samples", "method_class"]
