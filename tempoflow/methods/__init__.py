"""Methods by name (``METHODS``). Each is a :class:`~tempoflow.methods.base.Method`, built as
``cls(section_config, video_shape, **parts)`` by ``tempoflow.runs.build_method``, with
``loss(batch, generator) -> {"loss": ...}`` and, per the ``task`` it declares:

- "text-to-video" (flow, vlfm) and "alignment" (align):
  ``sample(captions, generator=None, options=None, num_frames=None | times=None, progress=False)``
  (``num_frames``: flow; ``times`` in seconds: vlfm, ``continuous_time``);
- "trajectory" (lifting, ardm, meanflow, crps): ``sample(initial (N, k, C, H, W), generator=None, options=None,
  num_frames=None, progress=False)``;
- "reconstruction" (autoencoder, video_wae): ``reconstruct(videos)``; no sampling.

``options`` is a :class:`~tempoflow.methods.base.SamplingOptions`; a method reads only the fields it
lists in ``sampling_knobs``. Every ``sample`` returns :class:`~tempoflow.methods.base.Samples`.
"""

from tempoflow.errors import ConfigError
from tempoflow.methods.align import Align
from tempoflow.methods.ardm import AutoregressiveFlow
from tempoflow.methods.autoencoder import FrameAutoencoder
from tempoflow.methods.base import Method, Samples
from tempoflow.methods.crps import NoiseInjectedCRPS
from tempoflow.methods.flow import FlowMatching
from tempoflow.methods.lifting import StochasticLifting
from tempoflow.methods.meanflow import MeanFlow
from tempoflow.methods.video_wae import VideoWAE
from tempoflow.methods.vlfm import VideoLatentFlow

METHODS: dict[str, type[Method]] = {
    "flow": FlowMatching,
    "autoencoder": FrameAutoencoder,
    "vlfm": VideoLatentFlow,
    "video_wae": VideoWAE,
    "lifting": StochasticLifting,
    "ardm": AutoregressiveFlow,
    "meanflow": MeanFlow,
    "crps": NoiseInjectedCRPS,
    "align": Align,
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}' (valid: {', '.join(sorted(METHODS))})")
    return METHODS[name]


__all__ = ["METHODS", "Method", "Samples", "method_class"]
