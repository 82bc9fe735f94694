"""What a compiled scikit-learn step is, how it is stored, and how a step that cannot be compiled says so.

A fitted step becomes an :class:`Op`: its fitted parameters as data (a JSON-able ``meta`` dict plus named
numpy arrays of numbers, booleans or fixed-width text, never objects) and an ``apply`` that does the step's
arithmetic with numpy. Ops are rebuilt from that data alone (:meth:`Op.from_state`), so a cached plan loads
without importing scikit-learn and without unpickling anything.

Compilers (one per supported scikit-learn class, registered with :func:`compiler`) run only at compile
time, when scikit-learn is imported anyway because the pipeline was unpickled. They dispatch on the exact
class: a subclass may override ``transform`` or ``predict``, so it is :class:`Unsupported`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from scorer.errors import ModelError

Array = NDArray[Any]
#: An op's stored form: JSON-able parameters and named arrays (no object dtype).
State = tuple[dict[str, Any], dict[str, Array]]


class Unsupported(Exception):
    """This step (or one of its parameters) has no compiled form: the pipeline keeps scikit-learn. The
    message names the step's class and the reason, e.g. ``OneHotEncoder(drop=...): ...``."""


class InvalidData(ModelError):
    """A value scikit-learn's own ``transform``/``predict`` raises on (an unknown category with
    ``handle_unknown='error'``, NaN where the step refuses it): the batch fails as it would in
    scikit-learn, with a message naming the step and the column, never the value."""


class Op:
    """A fitted step compiled to numpy.

    Transformers: ``apply`` takes a 2-D block, rows by the step's input features (float64 when every
    feature is numeric, else object, as scikit-learn's validation would hand it), and returns the
    transformed 2-D block exactly as the step's ``transform`` would (float64 unless the step outputs
    text, e.g. SimpleImputer on strings). Final estimators: see :class:`EstimatorOp`.
    """

    kind: ClassVar[str]  # the registry key of the stored form; unique per Op class

    def apply(self, X: Array) -> Array:
        raise NotImplementedError

    def state(self) -> State:
        raise NotImplementedError

    @classmethod
    def from_state(cls: type[OpT], meta: dict[str, Any], arrays: dict[str, Array]) -> OpT:
        raise NotImplementedError


OpT = TypeVar("OpT", bound=Op)


class EstimatorOp(Op):
    """A final estimator: ``apply`` takes the float64 feature matrix (n, k) and returns, for a classifier,
    ``predict_proba`` as float64 (n, n_classes) with ``classes`` its labels in scikit-learn's order (the
    label is ``classes[argmax]`` for the classes :mod:`scorer.model` knows to predict the argmax; an op
    whose ``predict`` differs overrides :meth:`predict`); for a regressor, ``predict`` as float64 (n,)
    and ``classes`` None."""

    classes: list[Any] | None = None

    def predict(self, proba: Array) -> Array:
        """The labels a classifier predicts from its probabilities (scikit-learn's argmax, first maximum)."""
        assert self.classes is not None
        labels: Array = np.asarray(self.classes, dtype=object if _mixed(self.classes) else None)
        chosen: Array = labels[proba.argmax(axis=1)]
        return chosen


def _mixed(values: list[Any]) -> bool:
    return len({type(v) for v in values}) > 1


#: kind -> Op class, for loading stored plans.
OPS: dict[str, type[Op]] = {}


def op(cls: type[OpT]) -> type[OpT]:
    """Class decorator: register an Op class under its ``kind``."""
    if cls.kind in OPS and OPS[cls.kind] is not cls:
        raise RuntimeError(f"two ops of kind {cls.kind!r}")
    OPS[cls.kind] = cls
    return cls


Compiler = Callable[[Any], Op]
#: "public.module.ClassName" -> compiler, resolved to class objects when compiling.
COMPILERS: dict[str, Compiler] = {}


def compiler(*class_paths: str) -> Callable[[Compiler], Compiler]:
    """Decorator: ``fn(fitted_step) -> Op`` compiles the scikit-learn classes named by their public import
    path (``"sklearn.preprocessing.StandardScaler"``); it raises :class:`Unsupported` for parameters it
    cannot honour."""

    def register(fn: Compiler) -> Compiler:
        for path in class_paths:
            COMPILERS[path] = fn
        return fn

    return register


def compiler_for(step: Any) -> Compiler:
    """The compiler for exactly this step's class (a subclass is Unsupported), or raise Unsupported."""
    klass = type(step)
    for path, fn in COMPILERS.items():
        module, _, name = path.rpartition(".")
        try:
            candidate = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if candidate is klass:
            return fn
    raise Unsupported(f"{klass.__name__}: no compiled form for this step")


def step_name(step: Any) -> str:
    return type(step).__name__
