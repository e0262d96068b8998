"""Evaluation of trained runs: ``evaluate`` one checkpoint, ``compare`` several (``tempoflow eval``)."""

from tempoflow.evaluate.record import flatten
from tempoflow.evaluate.run import EVALUATIONS, compare, evaluate

__all__ = ["EVALUATIONS", "compare", "evaluate", "flatten"]
