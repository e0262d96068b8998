"""The configs shipped inside the package (``tempoflow/configs/*.yaml``), found by name from any directory.

A config argument (``tempoflow train demo``, ``tempoflow eval RUN --config eval_flow``,
``load_config("shapes_flow")``) is resolved by :func:`resolve_config`:

1. an existing file is used as given (a user's own YAML, relative to the working directory);
2. otherwise a bare name — ``demo``, ``demo.yaml`` — names a packaged config;
3. so does the old in-repository path ``configs/NAME.yaml``, where no such file exists, so that
   commands and recorded results written before the configs moved into the package still run.

``tempoflow configs`` lists the packaged names (:func:`list_configs`).
"""

from __future__ import annotations

from pathlib import Path

from tempoflow.errors import ConfigError

__all__ = ["CONFIG_DIR", "describe_config", "list_configs", "packaged_config", "resolve_config"]

# The folder of this file: the YAML files are package data beside it (pyproject's package-data).
CONFIG_DIR = Path(__file__).resolve().parent

# Where the configs lived in the repository before they were packaged; still accepted as a prefix.
_OLD_FOLDER = "configs"
_SUFFIXES = (".yaml", ".yml")


def list_configs() -> list[str]:
    """The names of the packaged configs, sorted: ``["demo", "digits_align", ...]``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def packaged_config(name: str) -> Path:
    """The file of the packaged config ``name`` (``"demo"`` or ``"demo.yaml"``).

    Raises:
        ConfigError: no packaged config has that name; a missing ``demo`` means a broken installation.
    """
    stem = name[: -len(suffix)] if (suffix := Path(name).suffix) in _SUFFIXES else name
    path = CONFIG_DIR / f"{stem}.yaml"
    if not path.is_file():
        names = list_configs()
        if not names:
            raise ConfigError(f"the packaged config '{stem}' is missing: {CONFIG_DIR} holds no configs "
                              f"(a broken installation; reinstall tempoflow, or pass a config file)")
        raise ConfigError(f"no packaged config named '{stem}' (packaged: {', '.join(names)})")
    return path


def resolve_config(spec: str | Path) -> Path:
    """The YAML file a config argument means: an existing file, else a packaged config's name.

    Args:
        spec: a path to a YAML file (relative to the working directory or absolute), a packaged
            name (``"demo"``, ``"demo.yaml"``) or the old in-repository path ``"configs/demo.yaml"``.

    Returns:
        The path of the file to read.

    Raises:
        ConfigError: neither a file nor a packaged config; the message says how to list the names.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    bare = len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == _OLD_FOLDER)
    stem = path.stem if path.suffix in _SUFFIXES else path.name
    if bare and (CONFIG_DIR / f"{stem}.yaml").is_file():
        return CONFIG_DIR / f"{stem}.yaml"
    raise ConfigError(
        f"config file not found: {spec} (nor a packaged config; `tempoflow configs` lists them)"
    )


def describe_config(name: str) -> str:
    """The first clause of a packaged config's leading comment (up to ``:`` or ``.``), for ``tempoflow configs``.

    Raises:
        ConfigError: no packaged config has that name.
    """
    lines = []
    for line in packaged_config(name).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    return text.split(". ")[0].split(": ")[0].rstrip(".:")
