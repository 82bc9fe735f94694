"""Turning a bundle into a callable model: its custom code, or the default for one artifact.

Custom code: ``custom_preprocess.py`` is imported with ``code/`` and the bundle root at the
front of ``sys.path``, so helpers import the way users write them (``from first_code import
clean``). Bundle modules are compiled from their source, never from bytecode, and no bytecode is
written into the bundle (:mod:`scorer._source_only`). One bundle is active per process: loading another evicts the previous bundle's
modules from ``sys.modules`` and its folders from ``sys.path``, so same-named helpers of two
bundles never mix. Objects already loaded keep working.

Default (no custom code): exactly one model (:meth:`Bundle.default_model`): a pickle/joblib file
(loaded with joblib, which also reads plain pickles), a saved Spark ML pipeline or an H2O MOJO
(scored natively or on the JVM: :mod:`scorer.native_scoring` chooses). Whatever the flavor, classifiers
give ``prediction`` plus ``probability_<class>`` per class; regressors give ``prediction``.

MLflow model directories (:mod:`scorer.mlflow_model`): the ``sklearn`` flavor's estimator is
deserialized as MLflow does and then scores as :class:`DefaultModel`; the ``spark`` flavor's pipeline is
scored as a default Spark pipeline is; a custom ``python_function`` model is called through
MLflow's ``pyfunc`` (:class:`~scorer.mlflow_model.PyfuncModel`). The flavor's ``code`` folder, if any,
is made importable the way custom code is.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from scorer import _source_only, native_scoring, scoring_plan
from scorer.bundle import CUSTOM_MODULE, Bundle
from scorer.errors import BundleCodeError, BundleError, BundleLayoutError, ModelOutputError
from scorer.load_options import LoadOptions
from scorer.mlflow_model import MLflowModel, PyfuncModel, load_sklearn
from scorer.preprocessor import CustomPreprocessor
from scorer.table import frame_from_arrays

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("scorer.model")

_active_paths: list[str] = []  # absolute sys.path entries of the active bundle


def _activate(bundle: Bundle, *extra: Path) -> None:
    """Make this bundle's code importable and forget the previously active bundle's modules."""
    for path in _active_paths:
        while path in sys.path:
            sys.path.remove(path)
    prefixes = tuple(os.path.join(p, "") for p in _active_paths)
    if prefixes:
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if file and file.startswith(prefixes):
                del sys.modules[name]
    _source_only.remove(_active_paths)
    root = bundle.root.resolve()
    _active_paths[:] = dict.fromkeys([*(str(p.resolve()) for p in extra), str(root / "code"), str(root)])
    _source_only.add(_active_paths)
    sys.path[:0] = _active_paths
    sys.modules.pop(CUSTOM_MODULE, None)
    importlib.invalidate_caches()


def load_model(bundle: Bundle, options: LoadOptions | None = None) -> CustomPreprocessor:
    """Instantiate and ``load`` the bundle's model; every failure names the file at fault."""
    code = None if bundle.mlflow is not None else bundle.custom_code()
    if bundle.mlflow is not None:
        model = mlflow_model(bundle, bundle.mlflow, options or LoadOptions())
    elif code is None:
        model = default_model(bundle, options or LoadOptions())
    else:
        model = _instantiate_custom(bundle, code)
    where = code if code is not None else bundle.root if bundle.mlflow is not None else bundle.artifacts_dir
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load(bundle.artifacts_dir)
        for w in caught:
            if issubclass(w.category, ResourceWarning):  # py4j's sockets, not the bundle's business
                continue
            log.warning("while loading %s: %s: %s", where, w.category.__name__, w.message)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleCodeError(f"{where}: load() raised {type(exc).__name__}: {exc}") from exc
    if type(model) is DefaultModel:
        return scoring_plan.choose(model, lambda df: to_frame(model.predict(df), len(df)), bundle,
                                   options or LoadOptions(), model.artifact)
    return model


def default_model(bundle: Bundle, options: LoadOptions) -> CustomPreprocessor:
    """The model for a bundle without custom code, by flavor (Spark and H2O are imported only when used)."""
    flavor, path = bundle.default_model()
    if flavor == "spark":
        return native_scoring.spark_pipeline(path, options.spark_scoring, _sample(bundle))
    if flavor == "h2o":
        return native_scoring.h2o_mojo(path, options.spark_scoring, options.mojo_backend, _sample(bundle))
    return scoring_plan.cached(bundle, options) or DefaultModel(path)


def _sample(bundle: Bundle) -> native_scoring.Sample:
    return native_scoring.Sample(bundle.manifest.sample_input, bundle.manifest.input_schema)


def mlflow_model(bundle: Bundle, mlflow: MLflowModel, options: LoadOptions) -> CustomPreprocessor:
    """The model of an MLflow model directory, by the flavor its MLmodel says loads it."""
    code = mlflow.code_dir()
    if code is not None:  # MLflow's code_paths: importable as MLflow makes them (first on sys.path)
        _activate(bundle, code)
    if mlflow.loader == "sklearn":
        return scoring_plan.cached(bundle, options) or DefaultModel(mlflow.artifact(), loader=lambda: load_sklearn(mlflow))
    if mlflow.loader == "spark":
        return native_scoring.spark_pipeline(mlflow.artifact(), options.spark_scoring, _sample(bundle))
    return PyfuncModel(mlflow)


def _instantiate_custom(bundle: Bundle, code: Path) -> CustomPreprocessor:
    _activate(bundle)
    try:
        module = importlib.import_module(CUSTOM_MODULE)
    except Exception as exc:
        raise BundleCodeError(f"{code}: import failed: {type(exc).__name__}: {exc}") from exc
    if Path(module.__file__ or "").resolve() != code.resolve():
        raise BundleCodeError(f"{code}: imported {module.__file__} instead; is another {CUSTOM_MODULE} on sys.path?")
    klass = getattr(module, "CustomPreprocessor", None)
    if klass is None:
        raise BundleLayoutError(f"{code}: defines no class CustomPreprocessor")
    if not (isinstance(klass, type) and issubclass(klass, CustomPreprocessor)) or klass is CustomPreprocessor:
        raise BundleLayoutError(f"{code}: CustomPreprocessor must subclass scorer.CustomPreprocessor")
    if klass.predict is CustomPreprocessor.predict:
        raise BundleLayoutError(f"{code}: CustomPreprocessor does not implement predict(self, df)")
    try:
        return klass()
    except Exception as exc:
        raise BundleCodeError(f"{code}: CustomPreprocessor() raised {type(exc).__name__}: {exc}") from exc


# scikit-learn classifiers whose predict() is exactly classes_[argmax(predict_proba())]: one model call
# gives both. Named by module and class, but matched against the real class objects (see _argmax_consistent).
_ARGMAX_CONSISTENT = {
    "sklearn.linear_model._logistic": ("LogisticRegression", "LogisticRegressionCV"),
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting": ("HistGradientBoostingClassifier",),
    "sklearn.ensemble._gb": ("GradientBoostingClassifier",),
    "sklearn.ensemble._forest": ("RandomForestClassifier", "ExtraTreesClassifier"),
    "sklearn.tree._classes": ("DecisionTreeClassifier", "ExtraTreeClassifier"),
    "sklearn.naive_bayes": ("GaussianNB", "MultinomialNB", "BernoulliNB", "ComplementNB", "CategoricalNB"),
    "sklearn.neural_network._multilayer_perceptron": ("MLPClassifier",),
    "sklearn.discriminant_analysis": ("LinearDiscriminantAnalysis", "QuadraticDiscriminantAnalysis"),
}


def _same_methods(klass: type, base: type, names: tuple[str, ...] = ("predict", "predict_proba")) -> bool:
    """``klass`` resolves each method to the very attribute ``base`` defines (static lookup: scikit-learn's
    ``available_if`` descriptors make a new object on every ordinary access)."""
    return all(inspect.getattr_static(klass, n, None) is inspect.getattr_static(base, n, None) for n in names)


def _argmax_consistent(estimator: Any) -> bool:
    """True only when ``predict`` and ``predict_proba`` resolve to scikit-learn's own methods of a class
    known to predict the argmax: decided from the real class objects (already imported, since the
    unpickled estimator is one), never from a name, so a look-alike or a subclass with its own
    ``predict`` (a threshold) keeps its own answer."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        if not _same_methods(type(estimator), Pipeline):
            return False
        estimator = estimator.steps[-1][1]
    klass = type(estimator)
    for base in klass.__mro__:
        module = sys.modules.get(base.__module__)
        if (base.__qualname__ in _ARGMAX_CONSISTENT.get(base.__module__, ())
                and getattr(module, base.__qualname__, None) is base):
            return _same_methods(klass, base)
    return False


class DefaultModel(CustomPreprocessor):
    """The model used when a bundle has no custom code: one joblib/pickle artifact (or an estimator
    another ``loader`` deserializes: an MLflow sklearn model)."""

    def __init__(self, artifact: Path, loader: Callable[[], Any] | None = None) -> None:
        self.artifact = artifact
        self.loader = loader
        self.estimator: Any = None
        self.classes: list[Any] | None = None
        self.one_call = False

    def load(self, artifacts_dir: Path) -> None:
        import joblib

        try:
            self.estimator = self.loader() if self.loader is not None else joblib.load(self.artifact)
        except BundleError:
            raise
        except Exception as exc:
            raise BundleCodeError(f"{self.artifact}: cannot load: {type(exc).__name__}: {exc}") from exc
        if not callable(getattr(self.estimator, "predict", None)):
            raise BundleLayoutError(f"{self.artifact}: {type(self.estimator).__name__} has no predict method")
        classes = getattr(self.estimator, "classes_", None)
        if classes is not None and callable(getattr(self.estimator, "predict_proba", None)):
            self.classes = list(np.asarray(classes).tolist())
            self._class_array = np.asarray(classes)
            self.one_call = _argmax_consistent(self.estimator)
        from scorer.schema import infer_schema

        self.input_schema = infer_schema(self.estimator)
        self.output_columns = (
            ["prediction"] + [f"probability_{c}" for c in self.classes] if self.classes is not None else None
        )

    def predict(self, df: pd.DataFrame) -> Any:
        if self.classes is None:
            return self.estimator.predict(df)
        proba = np.asarray(self.estimator.predict_proba(df))
        if self.one_call:
            prediction = self._class_array[proba.argmax(axis=1)]
        else:
            prediction = np.asarray(self.estimator.predict(df))
        arrays = [prediction, *(np.ascontiguousarray(proba[:, i]) for i in range(proba.shape[1]))]
        return frame_from_arrays(self.output_columns or [], arrays, len(prediction))


def to_frame(result: Any, n_rows: int) -> pd.DataFrame:
    """Normalise what ``predict`` returned to a DataFrame with one row per input row."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        frame = result
        if not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1):
            frame = frame.reset_index(drop=True)
        if not all(isinstance(c, str) for c in frame.columns):
            frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    elif isinstance(result, pd.Series):
        frame = pd.DataFrame({str(result.name) if result.name is not None else "prediction": result.to_numpy()})
    else:
        if hasattr(result, "toarray"):
            result = result.toarray()
        if isinstance(result, list) and result and isinstance(result[0], dict):
            frame = pd.DataFrame(result)
        else:
            try:
                arr = np.asarray(result)
            except Exception as exc:
                raise ModelOutputError(f"predict returned an unusable {type(result).__name__}",
                                       data_detail=str(exc)) from exc
            if arr.ndim == 0:
                raise ModelOutputError(f"predict returned a scalar ({type(result).__name__}), expected one row per input row")
            if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
                frame = pd.DataFrame({"prediction": arr.reshape(len(arr))})
            elif arr.ndim == 2:
                frame = pd.DataFrame(arr, columns=[f"prediction_{i}" for i in range(arr.shape[1])])
            else:
                raise ModelOutputError(f"predict returned an array of shape {arr.shape}; expected 1 or 2 dimensions")
    if len(frame) != n_rows:
        raise ModelOutputError(f"predict returned {len(frame)} rows for {n_rows} input rows")
    return frame
