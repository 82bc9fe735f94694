"""What a compiled stage is, and how a stage that cannot be compiled says so."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from scorer.errors import ModelError
from scorer.spark_native.layout import StageFiles

#: A batch: column name -> 1-D array (scalar column) or 2-D float64 array (vector column).
Columns = dict[str, np.ndarray]


class Unsupported(Exception):
    """This stage (or one of its params) has no native implementation: the pipeline keeps Spark."""


class InvalidData(ModelError):
    """A value Spark's own ``transform`` would fail on (``handleInvalid='error'``, an unseen label):
    the batch fails the same way, with a message naming the stage and column, never the value."""


class Stage(Protocol):
    uid: str
    inputs: list[str]  # columns read
    outputs: list[str]  # columns written (every output column Spark's transform adds, in order)

    def transform(self, cols: Columns) -> np.ndarray | None:
        """Add ``outputs`` to ``cols``. Return a boolean mask of the rows to keep when the stage drops
        rows as Spark does (``handleInvalid='skip'``), else None."""
        ...


#: A compiler turns a saved stage into a :class:`Stage` or raises :class:`Unsupported`.
Compiler = Callable[[StageFiles], Stage]


def output_names(stage: StageFiles, single: str = "outputCol", many: str = "outputCols") -> list[str]:
    """A stage's output columns: the multi-column param when set, else the single one."""
    several = stage.param(many)
    if stage.is_set(many) or (several and not stage.is_set(single)):
        return list(several or [])
    one = stage.param(single)
    return [one] if one else []


def input_names(stage: StageFiles) -> list[str]:
    return output_names(stage, "inputCol", "inputCols")
