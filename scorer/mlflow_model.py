"""MLflow model directories: a folder (or ``.zip``) with an ``MLmodel`` file at its root, as
``mlflow.<flavor>.save_model`` / ``log_model`` write it and as a registry download holds it.

:func:`read_mlmodel` reads ``MLmodel`` into what a bundle's manifest would say (the input schema from
the signature, the sample input from the input example) and picks how to load the model:

- ``sklearn`` flavor: loaded natively, without importing MLflow, exactly as
  ``mlflow.sklearn._load_model_from_local_file`` does it: ``serialization_format`` ``pickle`` or
  ``cloudpickle`` with :func:`pickle.load` (cloudpickle output loads with plain pickle once cloudpickle is
  importable), ``skops`` with ``skops.io.load(path, trusted=skops_trusted_types)``
  (:func:`load_sklearn`); it then scores as any pickled estimator (:class:`scorer.model.DefaultModel`);
- ``spark`` flavor: the saved ``PipelineModel`` in ``model_data`` (default ``sparkml``) through
  :class:`scorer.spark_ml.SparkPipelineModel`, again without MLflow;
- only ``python_function`` (a custom pyfunc, ``loader_module`` ``mlflow.pyfunc.model`` or another module):
  ``mlflow.pyfunc.load_model`` when the optional ``scorer[mlflow]`` extra is installed
  (:class:`PyfuncModel`), else a one-line error naming the extra;
- any other flavor (``h2o``, ``pytorch``, ..., even with its own ``python_function`` entry): a
  :class:`~scorer.errors.BundleLayoutError` saying what loads.

Signature column types map to :data:`scorer.schema.COLUMN_TYPES` by :data:`SIGNATURE_TYPES`: ``double``
and ``float`` are ``float``, ``long`` and ``integer`` are ``int``, ``boolean`` is ``bool``, ``string`` is
``string``; ``binary``, ``datetime`` and ``any`` are ``any`` (values reach the model as the request sent
them: JSON has no bytes or timestamps). A tensor-based signature, an unnamed column, or a column of
type ``array``, ``object``, ``map`` or ``sparkml_vector`` (tables here hold scalars) cannot be mapped and
fails the load. ``required: false`` is not kept (every schema column is required), nor are ``params``.

``MLmodel`` is YAML: it is read with PyYAML's ``safe_load`` (no Python objects are built from it).
PyYAML is a dependency of ``uvicorn[standard]`` already and is listed explicitly in ``pyproject.toml``
since this module imports it directly. Nothing here imports MLflow at module level; only
:class:`PyfuncModel` does, when it loads.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scorer.errors import BundleCodeError, BundleLayoutError, RequirementsError
from scorer.preprocessor import CustomPreprocessor

log = logging.getLogger("scorer.mlflow_model")

MLMODEL = "MLmodel"
MLFLOW_EXTRA = "pip install 'scorer[mlflow]'"
#: The distributions MLflow itself lists in a model's requirements.txt; not needed to load a model natively.
MLFLOW_DISTRIBUTIONS = frozenset({"mlflow", "mlflow-skinny", "mlflow-tracing"})
#: MLflow signature column type -> scorer schema type.
SIGNATURE_TYPES = {
    "double": "float", "float": "float",
    "long": "int", "integer": "int",
    "boolean": "bool",
    "string": "string",
    "binary": "any", "datetime": "any", "any": "any",
}
PICKLE_FORMATS = ("pickle", "cloudpickle")
SKOPS_FORMAT = "skops"
NATIVE = {"sklearn": "mlflow.sklearn", "spark": "mlflow.spark"}  # flavor -> its pyfunc loader_module
PYFUNC = "python_function"


@dataclass(frozen=True)
class MLflowModel:
    """What ``MLmodel`` says, in scorer's terms."""

    root: Path
    loader: str  # "sklearn", "spark" or "pyfunc"
    conf: dict[str, Any]  # the configuration of the flavor that loads
    flavors: tuple[str, ...]
    input_schema: dict[str, str] | None = None
    sample_input: dict[str, Any] | None = None
    info: dict[str, str] = field(default_factory=dict)  # run_id, model_id, mlflow_version when present

    @property
    def native(self) -> bool:
        """Loaded without MLflow (sklearn, spark): MLflow's own pins in requirements.txt do not apply."""
        return self.loader in NATIVE

    def artifact(self) -> Path:
        """The serialized model (sklearn) or the saved pipeline folder (spark)."""
        key, default = ("pickled_model", None) if self.loader == "sklearn" else ("model_data", "sparkml")
        rel = self.conf.get(key) or default
        if not isinstance(rel, str) or not rel:
            raise BundleLayoutError(f"{self.root / MLMODEL}: the {self.loader} flavor names no {key}")
        path = self.root / rel
        if not path.exists():
            raise BundleLayoutError(f"{self.root}: {rel} not found (the MLmodel {self.loader} flavor's {key})")
        return path

    def code_dir(self) -> Path | None:
        """The flavor's ``code`` folder (MLflow's ``code_paths``), put on ``sys.path`` before loading."""
        code = self.conf.get("code")
        return self.root / code if isinstance(code, str) and code else None


def is_mlflow_dir(root: Path) -> bool:
    return (root / MLMODEL).is_file()


def read_mlmodel(root: Path) -> MLflowModel:
    """Parse ``root/MLmodel``: which flavor loads, the input schema, the sample input. Raises
    :class:`BundleLayoutError` (one line) when the flavor cannot be loaded or the signature mapped."""
    import yaml

    path = root / MLMODEL
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BundleLayoutError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict) or not doc["flavors"]:
        raise BundleLayoutError(f"{path}: has no flavors; not an MLflow model")
    flavors: dict[str, Any] = doc["flavors"]
    loader, conf = _choose_flavor(root, flavors)
    schema = _input_schema(path, doc.get("signature"))
    info = {k: str(doc[k]) for k in ("run_id", "model_id", "mlflow_version") if doc.get(k)}
    return MLflowModel(root=root, loader=loader, conf=conf, flavors=tuple(flavors), input_schema=schema,
                       sample_input=_sample_input(root, doc, schema), info=info)


def _choose_flavor(root: Path, flavors: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for name in NATIVE:
        if isinstance(flavors.get(name), dict):
            model_class = str(flavors[name].get("model_class") or "")
            if model_class.startswith("pyspark.ml.connect."):
                raise BundleLayoutError(f"{root}: a Spark Connect model ({model_class}) cannot be loaded; "
                                        "scorer loads saved Spark ML PipelineModels")
            return name, flavors[name]
    others = sorted(str(f) for f in flavors if f != PYFUNC)
    pyfunc = flavors.get(PYFUNC)
    if isinstance(pyfunc, dict) and not others:  # a custom pyfunc: python_function is its only flavor
        return "pyfunc", pyfunc
    # Another flavor's python_function entry (mlflow.h2o, mlflow.pytorch, ...) is not loaded either: it
    # would import that framework through MLflow, which this image does not promise.
    others = others or sorted(str(f) for f in flavors)
    raise BundleLayoutError(
        f"{root}: MLflow flavor(s) [{', '.join(others)}] cannot be loaded; "
        "scorer loads sklearn, spark and python_function (with scorer[mlflow]) models"
    )


def _input_schema(path: Path, signature: Any) -> dict[str, str] | None:
    """The signature's inputs as a scorer schema; None when the model has no signature."""
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return None
    try:
        inputs = json.loads(signature["inputs"]) if isinstance(signature["inputs"], str) else signature["inputs"]
    except json.JSONDecodeError as exc:
        raise BundleLayoutError(f"{path}: signature inputs are not valid JSON: {exc}") from None
    if not isinstance(inputs, list) or not all(isinstance(c, dict) for c in inputs):
        raise BundleLayoutError(f"{path}: signature inputs must be a list of column specs")
    schema: dict[str, str] = {}
    for i, spec in enumerate(inputs):
        kind = spec.get("type")
        if kind == "tensor":
            raise BundleLayoutError(f"{path}: the signature is tensor-based; scorer maps only column-based "
                                    "signatures (named columns) to an input schema")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise BundleLayoutError(f"{path}: signature input {i} has no column name; scorer maps only "
                                    "signatures of named columns to an input schema")
        if kind not in SIGNATURE_TYPES:
            raise BundleLayoutError(f"{path}: signature column {name!r} has type {kind!r}, which scorer cannot "
                                    f"map to an input schema (supported: {', '.join(SIGNATURE_TYPES)})")
        schema[name] = SIGNATURE_TYPES[kind]
    return schema


def _sample_input(root: Path, doc: dict[str, Any], schema: dict[str, str] | None) -> dict[str, Any] | None:
    """The input example as a split table ``{"columns": [...], "data": [[...]]}``: a ``dataframe``
    example (split orient, or ``values`` orient with the columns taken from the signature) or a
    ``json_object`` one holding a record or a list of records. Other kinds (ndarray, sparse) are
    not tables: no sample (the model is still loaded)."""
    meta = doc.get("saved_input_example_info")
    if not isinstance(meta, dict) or not isinstance(meta.get("artifact_path"), str):
        return None
    path = root / meta["artifact_path"]
    if not path.is_file():
        raise BundleLayoutError(f"{root}: input example {meta['artifact_path']} named in MLmodel is missing")
    try:
        example = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleLayoutError(f"{path}: not valid JSON: {exc}") from None
    if meta.get("params") and isinstance(example, dict) and "inputs" in example:
        example = example["inputs"]  # saved with params: {"inputs": ..., "params": ...}
    kind = meta.get("type")
    if kind == "dataframe" and isinstance(example, dict) and isinstance(example.get("data"), list):
        columns = example.get("columns") or (list(schema) if schema else None)
        if columns is None:
            log.debug("%s: input example has no column names and the model no signature: not used", path)
            return None
        return {"columns": list(columns), "data": example["data"]}
    records = [example] if isinstance(example, dict) else example
    if kind == "json_object" and isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
        columns = list(dict.fromkeys(c for r in records for c in r))
        return {"columns": columns, "data": [[r.get(c) for c in columns] for r in records]}
    log.debug("%s: input example of type %r is not a table: not used as the sample input", path, kind)
    return None


def load_sklearn(model: MLflowModel) -> Any:
    """The estimator of an ``sklearn`` flavor, deserialized as MLflow does (see the module docstring)."""
    path = model.artifact()
    fmt = model.conf.get("serialization_format", "pickle")
    if fmt == SKOPS_FORMAT:
        try:
            import skops.io
        except ImportError:
            raise RequirementsError(f"{path}: the model is saved in the skops format and the skops package is not "
                                    "installed here: pip install skops") from None
        return skops.io.load(path, trusted=model.conf.get("skops_trusted_types"))
    if fmt not in PICKLE_FORMATS:
        raise BundleLayoutError(f"{path}: unknown sklearn serialization_format {fmt!r}; "
                                f"scorer reads {', '.join((SKOPS_FORMAT, *PICKLE_FORMATS))}")
    with path.open("rb") as fh:
        return pickle.load(fh)


class PyfuncModel(CustomPreprocessor):
    """A custom ``python_function`` model, loaded and called through MLflow's own ``pyfunc``."""

    def __init__(self, model: MLflowModel) -> None:
        self.model = model
        self.pyfunc: Any = None

    def load(self, artifacts_dir: Path) -> None:
        try:
            import mlflow.pyfunc
        except ImportError as exc:
            raise RequirementsError(
                f"{self.model.root}: a python_function model (loader_module "
                f"{self.model.conf.get('loader_module')}) needs MLflow to load: {MLFLOW_EXTRA} ({exc})"
            ) from None
        try:
            self.pyfunc = mlflow.pyfunc.load_model(str(self.model.root))
        except Exception as exc:
            raise BundleCodeError(f"{self.model.root}: mlflow.pyfunc.load_model raised "
                                  f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc

    def predict(self, df: Any) -> Any:
        return self.pyfunc.predict(df)
