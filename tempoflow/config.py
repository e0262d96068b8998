"""Typed configuration: dataclasses, YAML files (packaged ones by name), dotted overrides on the CLI.

A YAML file mirrors the dataclass tree of :class:`ExperimentConfig`. Every key is checked against
the dataclass fields and every value against the field's type, so ``train.step=5`` (a typo) or
``train.steps=fast`` fails with one line that names the key, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tempoflow.configio import apply_overrides, from_dict, read_yaml, require
from tempoflow.configs import resolve_config
from tempoflow.data import DataConfig
from tempoflow.devices import DEVICE
from tempoflow.errors import ConfigError
from tempoflow.methods.align import AlignConfig
from tempoflow.methods.ardm import ARDMConfig
from tempoflow.methods.base import SamplingOptions
from tempoflow.methods.crps import CRPSConfig
from tempoflow.methods.flow import FlowConfig
from tempoflow.methods.lifting import LiftingConfig
from tempoflow.methods.meanflow import MeanFlowConfig
from tempoflow.methods.vlfm import VLFMConfig
from tempoflow.nets.autoencoder import AutoencoderConfig
from tempoflow.nets.dit import DiTConfig
from tempoflow.nets.video_autoencoder import VideoWAEConfig
from tempoflow.text import TextConfig
from tempoflow.train.trainer import TrainConfig


@dataclass(frozen=True)
class SampleConfig(SamplingOptions):
    """How a trained method is sampled (``SamplingOptions``, handed to ``Method.sample``) and how many
    samples evaluation draws per prompt, from which seed."""

    num_per_prompt: int = 2
    seed: int = 1234

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_per_prompt >= 1, f"sample.num_per_prompt must be >= 1, got {self.num_per_prompt}")


@dataclass(frozen=True)
class EvalConfig:
    """What ``tempoflow eval`` and the demo sample and score."""

    prompts: tuple[str, ...] = ()  # empty = a fixed selection of train and held-out captions
    num_prompts: int = 8
    lpips_backbone: str = ""  # local torchvision AlexNet weights (alexnet-owt-*.pth): enables B-LPIPS
    lpips_lin: str = ""  # local LPIPS v0.1 linear layers (lpips weights/v0.1/alex.pth)
    i3d_path: str = ""  # local Kinetics-400 I3D weights: enables FVD/KVD (needs clips of >= 16 frames)
    feature_size: int = 4  # thumbnail side of the offline "FD-thumb" features (not FVD)
    # Continuous-time methods (vlfm): frames at time_rate × the training fps over time_extent × T,
    # scored against the renderer at those times (interpolation and extrapolation).
    time_rate: int = 3
    time_extent: float = 2.0
    # Trajectory methods (lifting, ardm): probabilistic scores of ensembles of roll-outs (CRPS, spread/skill,
    # energy spectrum, VRMSE). ensemble_size roll-outs from each of the first ensemble_starts distinct first
    # frames of the test trajectories; every test trajectory that starts there verifies its ensemble.
    ensemble_size: int = 16  # M members per initial condition
    ensemble_starts: int = 8  # initial conditions rolled out (physics from its fixed state: 1 in all)
    # VRMSE window boundaries over the generated steps: "a:b" averages steps a+1 .. b (The Well's naming);
    # empty = The Well's log-spaced windows (0, 1, ..., S in 5 points).
    rollout_windows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        require(self.time_rate >= 1, f"eval.time_rate must be >= 1, got {self.time_rate}")
        require(self.time_extent >= 1.0, f"eval.time_extent must be >= 1, got {self.time_extent}")
        require(self.ensemble_size >= 2, f"eval.ensemble_size must be >= 2, got {self.ensemble_size}")
        require(self.ensemble_starts >= 1, f"eval.ensemble_starts must be >= 1, got {self.ensemble_starts}")
        w = list(self.rollout_windows)
        require(not w or (len(w) >= 2 and w[0] >= 0 and w == sorted(set(w))),
                f"eval.rollout_windows must be empty or >= 2 increasing steps >= 0, got {w}")


@dataclass(frozen=True)
class ExperimentConfig:
    method: str = "flow"
    out_dir: str = "runs/default"
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: DiTConfig = field(default_factory=DiTConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    video_wae: VideoWAEConfig = field(default_factory=VideoWAEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    vlfm: VLFMConfig = field(default_factory=VLFMConfig)
    lifting: LiftingConfig = field(default_factory=LiftingConfig)
    ardm: ARDMConfig = field(default_factory=ARDMConfig)
    meanflow: MeanFlowConfig = field(default_factory=MeanFlowConfig)
    crps: CRPSConfig = field(default_factory=CRPSConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        require(self.out_dir.strip() != "", f"out_dir must name a folder for the run, got {self.out_dir!r} "
                                            "(an empty one would write into the current folder)")
        require(DEVICE.fullmatch(self.device) is not None,
                f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    ``path`` is a YAML file or a packaged config's name (``"demo"``; see
    :func:`tempoflow.configs.resolve_config`).

    Raises:
        ConfigError: no such file or packaged config, invalid YAML, an unknown key or a wrong value.
    """
    data = read_yaml(resolve_config(path)) if path is not None else {}
    return from_dict(ExperimentConfig, apply_overrides(data, list(overrides)))


def load_sections(path: str | Path, sections: tuple[str, ...]) -> dict:
    """The given sections of a partial YAML config, type-checked: ``{"sample": {"steps": 8}}``.

    For settings applied on top of a checkpoint's config (``tempoflow eval --config``). ``path`` is a
    YAML file or a packaged config's name (``"eval_flow"``).

    Raises:
        ConfigError: no such file or packaged config, invalid YAML, another section, a wrong value.
    """
    path = resolve_config(path)
    data = read_yaml(path)
    if set(data) - set(sections):
        extra = sorted(set(data) - set(sections))
        raise ConfigError(f"config file {path} may only set {', '.join(sections)}; it sets {extra}")
    cfg = from_dict(ExperimentConfig, data)  # type checks every key
    return {s: {k: getattr(getattr(cfg, s), k) for k in (data[s] or {})} for s in data}
