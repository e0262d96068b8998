"""Packaging: configs shipped in the package and found by name from any directory, ``--version``,
optional extras that fail as one line, the progress bar of ``tempoflow sample``, and the wheel."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tempoflow import configs
from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.configs import list_configs, packaged_config, resolve_config
from tempoflow.errors import ConfigError, MissingExtraError

from .conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("diffusers", "sklearn", "skimage", "matplotlib", "h5py")  # what the extras install (pyproject)


def _env() -> dict:
    """The environment of a subprocess started elsewhere that must import this checkout's tempoflow."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _block(monkeypatch, module: str) -> None:
    """Make ``module`` and its submodules unimportable, as if its package were not installed."""
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)


def test_version_flag(capsys, monkeypatch):
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"tempoflow {importlib.metadata.version('tempoflow')}"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)  # a source tree, not installed
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("tempoflow unknown")


def test_config_listing_and_printing(capsys):
    names = list_configs()
    assert {"demo", "shapes_flow", "shapes_vlfm", "wave_lifting", "eval_flow"} <= set(names)
    assert main(["configs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == names
    assert any(line.startswith("demo ") and "main job" in line for line in out)
    assert main(["configs", "shapes_flow"]) == 0  # the YAML itself, to copy and edit
    text = capsys.readouterr().out
    assert text == packaged_config("shapes_flow").read_text() and "method: flow" in text
    assert main(["configs", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no packaged config named 'nope'" in err[0] and "shapes_flow" in err[0]


def test_config_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    demo = configs.CONFIG_DIR / "demo.yaml"
    assert demo.is_file() and demo.parent.parent.name == "tempoflow"  # inside the package
    for spec in ("demo", "demo.yaml", "configs/demo.yaml"):  # name, file name, the old repository path
        assert resolve_config(spec) == demo
    assert load_config("demo") == load_config(demo) != load_config(None)  # never the built-in defaults
    # a user's own file is used as given, and wins over a packaged name
    (tmp_path / "demo.yaml").write_text("train:\n  steps: 7\n")
    assert resolve_config("demo.yaml") == Path("demo.yaml") and load_config("demo.yaml").train.steps == 7
    assert resolve_config("demo") == demo
    for spec in ("nope", "sub/demo.yaml", str(tmp_path / "configs" / "demo.yaml")):  # not bare: a path
        with pytest.raises(ConfigError, match=r"config file not found: .* `tempoflow configs` lists them"):
            resolve_config(spec)


def test_demo_uses_the_packaged_config_from_any_directory(tmp_path, monkeypatch):
    import tempoflow.demo

    ran = []
    monkeypatch.setattr(tempoflow.demo, "run_demo", lambda config, overrides: ran.append(config))
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    assert ran == [configs.CONFIG_DIR / "demo.yaml"]
    assert load_config(ran[0]).flow.prediction == "data"  # the demo's recipe, not the defaults


def test_demo_without_its_packaged_config_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(configs, "CONFIG_DIR", tmp_path)  # an installation that lost its configs
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "packaged config 'demo' is missing" in err[0] and "reinstall" in err[0]


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys, tmp_path):
    from tempoflow.data import digits
    from tempoflow.evaluate.alignment import latent_figures
    from tempoflow.methods.align import AlignSpaces
    from tempoflow.runs import build_codec

    _block(monkeypatch, "diffusers")
    one_line = r"codec diffusers_vae needs diffusers: pip install 'tempoflow\[diffusers\]'"
    with pytest.raises(MissingExtraError, match=one_line):
        build_codec("diffusers_vae", str(tmp_path))
    assert main(["train", "demo", *TINY, "flow.codec=ddim_inversion", f"flow.codec_path={tmp_path}",
                 f"out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'tempoflow[diffusers]'" in err[0] and "Traceback" not in err[0]

    _block(monkeypatch, "sklearn")
    digits._sklearn_digits.cache_clear()  # a cached copy would hide the import
    try:
        with pytest.raises(MissingExtraError, match=r"needs scikit-learn: pip install 'tempoflow\[digits\]'"):
            digits._sklearn_digits()
    finally:
        digits._sklearn_digits.cache_clear()

    from tempoflow.data import camera

    _block(monkeypatch, "skimage")
    camera._photo_pixels.cache_clear()
    camera.working_image.cache_clear()
    try:
        with pytest.raises(MissingExtraError, match=r"needs scikit-image: pip install 'tempoflow\[camera\]'"):
            camera.working_image("cat", 16)
    finally:
        camera._photo_pixels.cache_clear()
        camera.working_image.cache_clear()

    _block(monkeypatch, "matplotlib")
    points = torch.randn(6, 4)
    spaces = AlignSpaces(*(points,) * 6)
    with pytest.raises(MissingExtraError, match=r"needs matplotlib: pip install 'tempoflow\[plots\]'"):
        latent_figures(spaces, torch.arange(6) % 3, tmp_path, "title")


def test_core_commands_need_no_optional_package(tmp_path):
    """train, sample and eval of the demo's method with every optional package unimportable."""
    script = (
        "import sys\n"
        f"for m in {OPTIONAL!r}: sys.modules[m] = None\n"
        "from tempoflow.cli import main\n"
        f"tiny = {TINY!r}\n"
        "assert main(['train', 'demo', *tiny, 'out_dir=run']) == 0\n"
        "assert main(['sample', 'run', '--prompt', 'a red circle moves left', '--out', 's.mp4']) == 0\n"
        "assert main(['eval', 'run', '--out', 'ev']) == 0\n"
        f"assert not [m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r} and sys.modules[m]]\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "s.mp4").is_file() and (tmp_path / "ev" / "report.html").is_file()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("packaging") / "run"
    assert main(["train", "demo", *TINY, f"out_dir={run}"]) == 0
    return run


def test_sample_shows_a_progress_bar_on_a_terminal(tiny_run, tmp_path, capsys, monkeypatch):
    args = ["sample", str(tiny_run), "--prompt", "a red circle moves left", "--out", str(tmp_path / "s.mp4"),
            "--device", "cpu", "sample.steps=3"]
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "sample" in err and "nfe" in err  # tqdm's bar over network evaluations, on stderr
    assert main([*args, "--quiet"]) == 0
    assert "nfe" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a log file: no bar
    assert main(args) == 0
    assert "nfe" not in capsys.readouterr().err


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_runs_outside_the_repo(tmp_path):
    """``pip wheel`` of a copy of the project; the wheel, unpacked elsewhere, runs the packaged demo."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "tempoflow", src / "tempoflow", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), "--quiet"], cwd=src, check=True)
    wheel = next((tmp_path / "dist").glob("tempoflow-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        shipped = sorted(Path(n).stem for n in names if re.fullmatch(r"tempoflow/configs/\w+\.yaml", n))
        assert shipped == list_configs()
        assert any(n.endswith((".dist-info/licenses/LICENSE", ".dist-info/LICENSE")) for n in names)
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        zf.extractall(tmp_path / "site")
    for extra in ("diffusers", "digits", "plots", "dev"):
        assert f"Provides-Extra: {extra}" in metadata
    assert "Requires-Dist: matplotlib" in metadata and 'extra == "plots"' in metadata

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**_env(), "PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run([sys.executable, "-c", "import tempoflow; print(tempoflow.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(tmp_path / "site"))
    proc = subprocess.run([sys.executable, "-m", "tempoflow.cli", "demo", *TINY, "out_dir=out"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (elsewhere / "out" / "eval" / "report.html").is_file()
    saved = load_config(elsewhere / "out" / "config.yaml")
    assert saved.flow.prediction == "data" and saved.flow.backbone == load_config("demo").flow.backbone
