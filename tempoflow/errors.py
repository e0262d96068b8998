"""Errors a user can fix. The CLI prints them as one line (no traceback)."""


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
