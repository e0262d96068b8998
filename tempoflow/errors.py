"""Errors a user can fix. The CLI prints them as one line (no traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class TempoflowError(Exception):
    """Base for errors a user can fix; the CLI prints them as one line."""


class ConfigError(TempoflowError):
    """A wrong config key, type or value, or a missing config file."""


class DataError(TempoflowError):
    """Missing or corrupt video files, bad datasets, bad captions."""


class CheckpointError(TempoflowError):
    """A missing, incomplete or mismatched checkpoint."""


class TrainingError(TempoflowError):
    """Training cannot go on (e.g. a non-finite loss)."""


class SolverError(TempoflowError):
    """An ODE solve that cannot go on (step cap reached, step size underflow, unreachable tolerances)."""


class MissingExtraError(TempoflowError):
    """A feature needs an optional dependency that is not installed (``pip install 'tempoflow[EXTRA]'``)."""


# Import names whose pip distribution is named otherwise.
_PIP_NAMES = {"sklearn": "scikit-learn", "skimage": "scikit-image"}


@contextmanager
def needs_extra(module: str, extra: str, feature: str) -> Iterator[None]:
    """Imports of the optional package ``module`` inside the block fail as one line naming the extra.

    ``with needs_extra("diffusers", "diffusers", "the diffusers_vae codec"): from diffusers import ...``

    Raises:
        MissingExtraError: ``module`` (or a name from it) could not be imported. An ImportError of
            any other package is not ours to explain and propagates unchanged.
    """
    try:
        yield
    except ImportError as err:
        if (err.name or "").split(".")[0] != module:
            raise
        package = _PIP_NAMES.get(module, module)
        raise MissingExtraError(
            f"{feature} needs {package}: pip install 'tempoflow[{extra}]' ({err})"
        ) from err
