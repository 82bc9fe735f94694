"""Whether a scikit-learn bundle scores through a compiled plan (:mod:`scorer.sklearn_plan`), and why.

``--scoring-plan``:

* ``auto`` (default): the pipeline is compiled at load; when every step compiles and the plan answers
  the bundle's sample, the edge rows and a tree model's split points (:mod:`scorer.sklearn_plan.verify`)
  as scikit-learn does, the plan scores, else scikit-learn does, and the log, ``/metadata`` and
  ``scorer info`` name the step and the reason.
* ``require``: the same, but a step that does not compile or a difference fails the load (exit 3) with
  one line naming it.
* ``off``: scikit-learn scores, as before plans existed.

A verified plan is stored (:mod:`scorer.sklearn_plan.store`) in ``--plan-cache`` (default
``<tmp>/scorer-plans-<uid>``, a private directory), keyed by the bundle's digest and the versions that
matter; the next load of the same bundle takes it from there without unpickling the pipeline or
importing scikit-learn. ``scorer bundle compile`` stores it ahead of time (into an image).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scorer.bundle import Bundle
from scorer.errors import BundleLayoutError, ScorerError
from scorer.load_options import LoadOptions
from scorer.preprocessor import CustomPreprocessor
from scorer.private_dir import UnsafeDirectory, private_dir
from scorer.schema import Schema
from scorer.sklearn_plan import store
from scorer.sklearn_plan.base import InvalidData, Unsupported
from scorer.sklearn_plan.model import PlanModel
from scorer.table import frame_from_arrays

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("scorer.scoring_plan")

Reference = Callable[["pd.DataFrame"], "pd.DataFrame"]


def cache_dir(options: LoadOptions) -> Path:
    return Path(options.plan_cache or os.path.join(tempfile.gettempdir(), f"scorer-plans-{os.geteuid()}"))


def cached(bundle: Bundle, options: LoadOptions) -> PlanModel | None:
    """The bundle's stored plan, if a usable one is there (a rejected one is logged and ignored)."""
    if options.scoring_plan == "off":
        return None
    folder = cache_dir(options)
    if not store.readable(folder):
        return None
    try:
        found = store.load(folder, bundle.digest)
    except store.Rejected as exc:
        log.warning("stored plan ignored: %s", exc)
        return None
    if found is None:
        return None
    model = PlanModel(found.plan, found.labels, found.input_schema)
    model.scoring = {"path": "plan", "reason": "stored plan", "verified": found.verified, "cache": str(folder)}
    log.info("scoring path: plan (stored, %s)", folder)
    return model


def choose(model: Any, reference: Reference, bundle: Bundle, options: LoadOptions, where: Path) -> CustomPreprocessor:
    """``model`` (a loaded :class:`scorer.model.DefaultModel`), or the plan compiled from it when the
    mode allows and the plan answers as ``reference`` (the model's own answer as a frame) does."""
    mode = options.scoring_plan
    if mode == "off":
        return _report(model, "scikit-learn", "--scoring-plan off")
    try:
        plan_model = compiled(model)
    except Unsupported as exc:
        return _fallback(model, mode, where, f"{exc}")
    from scorer.sklearn_plan import verify  # compile time only: pandas, as scikit-learn is loaded anyway
    from scorer.sklearn_plan.pipeline import final_step

    schema = Schema(_schema(bundle, plan_model))
    groups = verify.edge_frames(_sample(bundle, plan_model), schema.columns, plan_model.plan)

    def ours(rows: pd.DataFrame) -> pd.DataFrame:  # each side gets the columns a request's rows become
        table = schema.coerce(rows)
        out = plan_model.predict_columns({name: table[name] for name in table.columns}, table.n_rows)
        return frame_from_arrays(list(out), list(out.values()), table.n_rows)

    def theirs(rows: pd.DataFrame) -> pd.DataFrame:
        return reference(schema.coerce(rows).to_frame())

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # unknown categories and the like, on purpose
        rows, difference = verify.difference(ours, theirs, groups)
        if difference is None:
            at_splits, difference = verify.split_difference(plan_model.plan, final_step(model.estimator),
                                                            _features(plan_model, schema, groups[0]))
            rows += at_splits
    if difference is not None:
        return _fallback(model, mode, where, f"the plan and scikit-learn differ: {difference}")
    checked = {"rows": rows, "difference": None}
    plan_model.scoring = {"path": "plan", "reason": "every step compiled", "verified": checked}
    log.info("scoring path: plan (every step compiled; %d rows verified)", rows)
    _save(bundle, options, plan_model, checked)
    return plan_model


def _features(model: PlanModel, schema: Schema, rows: pd.DataFrame) -> Any:
    """The estimator's input for the sample's rows; None where the schema or the plan refuses them (a
    sample the schema refuses fails the load later, at the warm-up, with its own message)."""
    try:
        table = schema.coerce(rows)
        return model.plan.features({name: table[name] for name in table.columns}, table.n_rows)
    except (InvalidData, ScorerError):
        return None


def compiled(model: Any) -> PlanModel:
    """The plan of a loaded DefaultModel's estimator (raise Unsupported naming the step)."""
    from scorer.sklearn_plan.pipeline import compile_pipeline

    plan = compile_pipeline(model.estimator)
    labels = None
    if model.classes is not None:
        if not model.one_call:
            raise Unsupported(f"{type(model.estimator).__name__}: predict is not the argmax of predict_proba")
        if plan.estimator.classes is None or list(plan.estimator.classes) != list(model.classes):
            raise Unsupported(f"{type(plan.estimator).__name__}: its classes differ from the model's")
        labels = np.asarray(model._class_array)
    elif plan.estimator.classes is not None:
        raise Unsupported(f"{type(model.estimator).__name__}: the plan has classes the model does not report")
    return PlanModel(plan, labels, model.input_schema)


def _fallback(model: Any, mode: str, where: Path, reason: str) -> CustomPreprocessor:
    if mode == "require":
        raise BundleLayoutError(f"{where}: --scoring-plan require: {reason}")
    log.warning("scoring path: scikit-learn (no plan: %s)", reason)
    return _report(model, "scikit-learn", f"no plan: {reason}")


def _report(model: Any, path: str, reason: str) -> CustomPreprocessor:
    model.scoring = {"path": path, "reason": reason, "verified": None}
    result: CustomPreprocessor = model
    return result


def _schema(bundle: Bundle, model: PlanModel) -> dict[str, str]:
    return dict(bundle.manifest.input_schema or model.input_schema or dict.fromkeys(model.plan.inputs, "any"))


def _sample(bundle: Bundle, model: PlanModel) -> pd.DataFrame:
    """The bundle's sample rows as a request would bring them, or one made-up row."""
    import pandas as pd

    rows = bundle.manifest.sample_input
    if rows:
        return pd.DataFrame(rows["data"], columns=rows["columns"])
    defaults = {"float": 0.0, "int": 0, "bool": False, "string": "a"}
    return pd.DataFrame({c: [defaults.get(kind, 0.0)] for c, kind in _schema(bundle, model).items()})


def _save(bundle: Bundle, options: LoadOptions, model: PlanModel, checked: dict[str, Any]) -> None:
    try:
        folder = private_dir(cache_dir(options))
        store.save(folder, bundle.digest, store.StoredPlan(model.plan, model.labels, model.input_schema, checked))
    except (OSError, UnsafeDirectory, TypeError) as exc:
        log.warning("the plan is not stored: %s", exc)
        return
    assert model.scoring is not None
    model.scoring["cache"] = str(folder)
