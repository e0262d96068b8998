"""Config loading: strict keys and types, dotted overrides, one clear line per mistake."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tempoflow.config import ExperimentConfig, load_config
from tempoflow.configio import save_yaml
from tempoflow.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.steps=200", "model.patch_hw=2", "sample.guidance=1.5",
                             "data.shapes.heldout_pairs=[[red, circle]]"])
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.train.steps == 200 and cfg.model.patch_hw == 2 and cfg.sample.guidance == 1.5
    assert cfg.data.shapes.heldout_pairs == (("red", "circle"),)
    assert cfg.train.lr == ExperimentConfig().train.lr  # untouched fields keep their defaults


def test_int_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(None, ["train.steps=1.5"])


def test_exponent_without_dot_is_a_float():
    """YAML 1.1 reads ``5e-4`` as a string; a float field must still take it (``lr=abc`` must not)."""
    assert load_config(None, ["train.lr=5e-4"]).train.lr == 5e-4
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=abc"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.step=5", "unknown config key 'train.step'"),
        ("train.steps=fast", "config key 'train.steps' must be int"),
        ("model.cross_attention=3", "config key 'model.cross_attention' must be bool"),
        ("train=3", "config key 'train' must be a mapping"),
        ("nonsense", "must look like key.sub=value"),
        ("data.shapes.colours=[red, mauve]", "mauve"),
        ("train.steps=-3", "train.steps must be >= 1, got -3"),
        ("train.ema_decay=1.0", "train.ema_decay must be in [0, 1)"),
        ("train.min_lr_ratio=-1", ("train.min_lr_ratio must be in [0, 1] (the final learning rate is lr × "
                                   "min_lr_ratio), got -1.0")),
        ("train.min_lr_ratio=1.5", "train.min_lr_ratio must be in [0, 1]"),
        ("train.mixed_precision=fp32", "train.mixed_precision must be auto, no, bf16 or fp16, got 'fp32'"),
        ("out_dir=", "out_dir must name a folder for the run, got '' (an empty one would write into the current"),
        ("out_dir='  '", "out_dir must name a folder for the run, got '  '"),
        ("model.mlp_ratio=0.005", ("model.mlp_ratio 0.005 gives the MLP int(model.dim × mlp_ratio) = 0 units at "
                                   "model.dim 128: raise it to at least 0.0078125")),
        ("model.dim=4", "model.dim must be >= 6 for the 3-D position code, got 4"),
        ("model.heads=3", "model.dim (128) must be divisible by model.heads (3)"),
        ("sample.steps=0", "sample.steps must be >= 1"),
        ("flow.prediction=noise", "flow.prediction must be 'velocity' or 'data'"),
        ("vlfm.change_weight=0", "vlfm.change_weight must be > 0"),
        ("vlfm.hold_first_frame=maybe", "config key 'vlfm.hold_first_frame' must be bool"),
        ("align.reduction=max", "align.reduction must be 'sum' or 'mean'"),
        ("align.bucket_negatives=sum", "align.bucket_negatives must be 'printed' or 'mean'"),
        ("flow.time_sampling=beta", "flow.time_sampling must be one of uniform, logit_normal"),
        ("flow.logit_std=0", "flow.logit_std must be finite and > 0"),
        ("flow.logit_mean=.nan", "flow.logit_mean must be finite"),
        ("flow.backbone=mlp", "flow.backbone must be 'dit' or 'unet'"),
        ("flow.unet.groups=5", "unet.groups (5) must divide every level width"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_a_partial_section_overrides_the_fields_own_default():
    """flow.unet's default is a small UNet, not UNetConfig()'s: setting one key keeps the rest of it."""
    small = load_config(None, []).flow.unet
    cfg = load_config(None, ["flow.unet.base_width=16"])
    assert cfg.flow.unet.base_width == 16
    assert (cfg.flow.unet.channel_mults, cfg.flow.unet.blocks_per_level, cfg.flow.unet.groups) == (
        small.channel_mults, small.blocks_per_level, small.groups) == ((1, 2, 2), 1, 8)
    assert load_config(None, ["lifting.unet.base_width=64"]).lifting.unet.channel_mults == (1, 2, 4)


def test_yaml_round_trip_and_errors(tmp_path):
    cfg = load_config(None, ["train.steps=7", "out_dir=x"])
    path = tmp_path / "c.yaml"
    save_yaml(cfg, path)
    assert load_config(path) == cfg
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config(bad)


def test_every_shipped_config_loads():
    from tempoflow.configs import list_configs

    names = list_configs()
    assert "demo" in names and "shapes_flow" in names and "eval_flow" in names
    for name in names:
        load_config(name)


def test_cli_prints_one_line_not_a_traceback(tmp_path):
    root = Path(__file__).parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "tempoflow.cli", "train", "demo", "train.stepz=3"],
        capture_output=True, text=True, cwd=root, check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown config key 'train.stepz'" in lines[0]
    proc = subprocess.run([sys.executable, "-m", "tempoflow.cli", "train", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, cwd=root, check=False)
    assert proc.returncode == 2 and "config file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_config_sections(tmp_path):
    from tempoflow.config import load_sections

    got = load_sections("eval_flow", ("sample", "eval"))
    assert got["sample"]["steps"] == 16 and got["eval"]["num_prompts"] == 48
    bad = tmp_path / "e.yaml"
    bad.write_text("train:\n  steps: 3\n")
    with pytest.raises(ConfigError, match="may only set sample, eval"):
        load_sections(bad, ("sample", "eval"))
    bad.write_text("sample:\n  steps: many\n")
    with pytest.raises(ConfigError, match="sample.steps"):
        load_sections(bad, ("sample", "eval"))


@pytest.mark.parametrize("override, message", [
    ("device=tpu", "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("sample.solver=foo", "sample.solver must be one of euler, midpoint, heun, rk4, dopri5"),
    ("ardm.solver=dopri5", "ardm.solver must be a fixed-step solver (euler, midpoint, heun, rk4)"),
])
def test_names_the_code_cannot_run_are_refused_when_the_config_is_read(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])
    assert load_config(None, ["device=cuda:1"]).device == "cuda:1"


def test_a_device_torch_does_not_have_is_one_line(monkeypatch):
    import torch

    from tempoflow.devices import pick_device

    with pytest.raises(ConfigError, match="device must be"):
        pick_device("tpu")
    with pytest.raises(ConfigError, match="torch sees"):
        pick_device("cuda:99")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, wherever this runs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert pick_device("auto") == torch.device("cpu")
    for device in ("cuda", "cuda:0", "cuda:2"):
        with pytest.raises(ConfigError, match=rf"^device={device} but torch sees no CUDA GPU .*: use device=cpu, "
                                              "or device=auto, which takes the GPU when there is one$"):
            pick_device(device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=r"^device=cuda:1 but torch sees one CUDA GPU, cuda:0: use one of them"):
        pick_device("cuda:1")


def test_yaml_1_1_words_yes_no_on_off_keep_their_text_for_a_string_setting(tmp_path):
    """``train.mixed_precision=no`` (a documented value) arrived as False (YAML 1.1 reads no/yes/on/off as
    booleans) and was refused as not a string; a bool setting still takes the four words."""
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert load_config(None, ["eval.prompts=[no, On]"]).eval.prompts == ("no", "On")
    for word, truth in (("no", False), ("Off", False), ("yes", True), ("on", True), ("false", False)):
        assert load_config(None, [f"model.cross_attention={word}"]).model.cross_attention is truth
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  mixed_precision: no\nmodel:\n  cross_attention: off\n")
    cfg = load_config(file)
    assert cfg.train.mixed_precision == "no" and cfg.model.cross_attention is False
