"""The transport-independent scoring core: one table in, one table out.

The HTTP server, the offline runner and the Spark engine all call :meth:`Scorer.score`
(or its two halves: :meth:`Scorer.prepare`, per request, then :meth:`Scorer.predict`, per
batch). Nothing here knows about HTTP.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from scorer._version import __version__
from scorer.bundle import Bundle, open_bundle
from scorer.errors import BundleCodeError, BundleError, BundleLayoutError, ModelError, ScorerError
from scorer.load_options import LoadOptions
from scorer.model import load_model, to_frame
from scorer.preprocessor import CustomPreprocessor
from scorer.requirements import check_requirements, ensure_requirements
from scorer.schema import Schema
from scorer.sources import Resolved, resolve
from scorer.table import ColumnarModel, Table

if TYPE_CHECKING:  # pandas is imported where a DataFrame is made: a columnar model's server never needs it
    import pandas as pd

log = logging.getLogger("scorer.core")


@dataclass
class Scorer:
    bundle: Bundle
    model: CustomPreprocessor
    schema: Schema | None
    output_columns: list[str] | None = None
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    origin: Resolved | None = None  # what the source named was resolved to (None: built from a Bundle directly)
    sample_output: Table | None = None  # the answer to the sample input at load (the outputs' types, by example)

    @classmethod
    def load(cls, source: str | Path, options: LoadOptions | None = None) -> Scorer:
        """Resolve the source, open, verify and load its bundle, then score its sample input once (if it has one)."""
        options = options or LoadOptions()
        started = time.perf_counter()
        origin = resolve(source)
        try:
            scorer = cls._load(origin, options)
        except BundleError as exc:
            _discard(origin)
            if origin.owned and str(origin.path) in exc.message:  # our private download: name what the operator named
                exc.message = exc.message.replace(str(origin.path), origin.uri)
                exc.args = (exc.message,)
            raise
        except BaseException:
            _discard(origin)
            raise
        scorer.load_seconds = time.perf_counter() - started
        log.info("loaded bundle %s (sha256:%s, version %s) in %.2fs", scorer.bundle.name, scorer.bundle.digest[:12],
                 scorer.version_label, scorer.load_seconds)
        return scorer

    @classmethod
    def _load(cls, origin: Resolved, options: LoadOptions) -> Scorer:
        bundle = open_bundle(origin.path, expected_digest=options.bundle_digest)
        if options.install_requirements:
            ensure_requirements(bundle, options.requirements_cache, options.spark_scoring)
        elif options.check_requirements:
            check_requirements(bundle, options.spark_scoring)
        model = load_model(bundle, options)
        columns = bundle.manifest.input_schema or getattr(model, "input_schema", None)
        schema = Schema(columns, extra_columns=options.extra_columns) if columns else None
        outputs = bundle.manifest.output_columns or getattr(model, "output_columns", None)
        scorer = cls(bundle=bundle, model=model, schema=schema, output_columns=list(outputs) if outputs else None,
                     origin=origin)
        scorer._warm_up()
        return scorer

    @property
    def version_label(self) -> str:
        """The version this scorer serves, as responses name it: the registry's version number when the
        source was resolved from a registry, else the manifest's version, else the digest's first 12 hex."""
        if self.origin is not None and self.origin.info.get("version"):
            return self.origin.info["version"]
        return self.bundle.manifest.version or f"sha256:{self.bundle.digest[:12]}"

    def close(self) -> None:
        """Forget this scorer's private files (a registry download); the process may keep its objects."""
        if self.origin is not None:
            _discard(self.origin)

    def _warm_up(self) -> None:
        sample = self.bundle.manifest.sample_input
        if not sample:
            return
        # A model that scores columns gets the sample as a JSON request reaches it (lists, no DataFrame).
        rows = _split_table(sample) if self.schema is not None and _scores_columns(self.model) else None
        try:
            if rows is not None:
                out = self.predict_table(self.prepare(rows))
            else:
                import pandas as pd

                out = Table.from_output(self.score(pd.DataFrame(sample["data"], columns=sample["columns"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleLayoutError(f"{self.bundle.source}: {self._sample_name()} is not a split table: {exc}") from exc
        except ScorerError as exc:
            raise BundleCodeError(f"{self.bundle.source}: scoring the {self._sample_name()} failed: "
                                  f"{exc.describe(echo=True)}") from exc
        self.sample_output = out
        if self.output_columns is None:
            self.output_columns = list(out.columns)
        elif list(out.columns) != self.output_columns:
            raise BundleLayoutError(
                f"{self.bundle.source}: model returned columns {list(out.columns)}, "
                f"but the bundle declares output_columns {self.output_columns}"
            )

    def _sample_name(self) -> str:
        """Where the sample input came from: the manifest, else an MLflow model's input example."""
        if self.bundle.mlflow is not None and self.bundle.manifest.sample_input == self.bundle.mlflow.sample_input:
            return "MLmodel input example"
        return "manifest sample_input"

    @functools.cached_property
    def takes_params(self) -> bool:
        """Whether the model's ``predict`` takes inference params (a ``params`` argument, as MLflow's
        pyfunc ``predict(model_input, params=None)``): a request's params reach it; else they are ignored."""
        try:
            return "params" in inspect.signature(self.model.predict).parameters
        except (TypeError, ValueError):
            return False

    def prepare(self, data: Table | pd.DataFrame) -> Table:
        """Check and coerce one request's table to the input schema (raises SchemaError); a Table's
        params stay with it."""
        if self.schema is None:
            prepared = Table.from_frame(data.to_frame() if isinstance(data, Table) else data)
        else:
            prepared = self.schema.coerce(data)
        if isinstance(data, Table) and data.params:
            return dataclasses.replace(prepared, params=data.params)
        return prepared

    def predict(self, data: Table | pd.DataFrame) -> pd.DataFrame:
        """Run the model on a prepared batch; one output row per input row. Zero rows never reach the model."""
        df = data.to_frame() if isinstance(data, Table) else data
        if len(df) == 0:
            import pandas as pd

            return pd.DataFrame({c: [] for c in self.output_columns or ["prediction"]})
        model = self.model
        params = data.params if isinstance(data, Table) and self.takes_params else None
        try:
            pre = model.preprocess(df)
            predict: Any = model.predict  # a subclass's predict with a params argument (takes_params)
            raw = predict(pre) if params is None else predict(pre, params=dict(params))
            out = to_frame(raw, len(df))
            out = model.postprocess(out, pre)
        except ScorerError:
            raise
        except Exception as exc:
            raise ModelError.wrap(exc) from exc
        if len(out) != len(df):
            raise ModelError(f"postprocess returned {len(out)} rows for {len(df)} input rows")
        return out

    def predict_table(self, data: Table) -> Table:
        """:meth:`predict` for the server's model thread, Table in and Table out. A model that scores
        columns (:class:`~scorer.table.ColumnarModel`) and keeps the default pre/postprocess hooks gets
        the Table's arrays directly; any other model goes through :meth:`predict`."""
        model = self.model
        if data.n_rows == 0 or data.params or not _scores_columns(model):
            return Table.from_output(self.predict(data))
        try:
            columns = cast(ColumnarModel, model).predict_columns({name: data[name] for name in data.columns}, data.n_rows)
        except ScorerError:
            raise
        except Exception as exc:
            raise ModelError.wrap(exc) from exc
        wrong = [name for name, values in columns.items() if len(values) != data.n_rows]
        if wrong:
            raise ModelError(f"model returned {len(columns[wrong[0]])} rows for {data.n_rows} input rows")
        return Table(columns, data.n_rows)

    def score(self, df: pd.DataFrame) -> pd.DataFrame:
        """The whole scoring function on a table: schema check, then the model."""
        return self.predict(self.prepare(df))

    def metadata(self) -> dict[str, Any]:
        m = self.bundle.manifest
        return {
            "name": self.bundle.name,
            "version": m.version,
            "description": m.description,
            "digest": f"sha256:{self.bundle.digest}",
            "custom_code": self.bundle.custom_code() is not None,
            "input_schema": self.schema.as_json() if self.schema else None,
            "output_columns": self.output_columns,
            "scorer_version": __version__,
            "load_seconds": round(self.load_seconds, 3),
            "model_version": self.version_label,
            "source": {"uri": self.origin.uri, **self.origin.info} if self.origin is not None else None,
            "scoring": getattr(self.model, "scoring", None),
            "mlflow": ({"flavor": self.bundle.mlflow.loader, **self.bundle.mlflow.info}
                       if self.bundle.mlflow is not None else None),
        }


def _scores_columns(model: CustomPreprocessor) -> bool:
    """Whether :meth:`Scorer.predict_table` hands ``model`` a Table's arrays directly: it scores columns
    (:class:`~scorer.table.ColumnarModel`) and keeps the default pre/postprocess hooks."""
    return (isinstance(model, ColumnarModel) and type(model).preprocess is CustomPreprocessor.preprocess
            and type(model).postprocess is CustomPreprocessor.postprocess)


def _split_table(sample: dict[str, Any]) -> Table | None:
    """A manifest's split-table sample as a Table of plain lists, as a JSON request's columns arrive;
    None unless it is a well-formed one (unique column names, every row as long), so that the
    DataFrame path reports whatever is wrong with it as it always has."""
    columns, data = sample.get("columns"), sample.get("data")
    if not (isinstance(columns, list) and isinstance(data, list) and data
            and all(isinstance(c, str) for c in columns) and len(set(columns)) == len(columns)
            and all(isinstance(row, list) and len(row) == len(columns) for row in data)):
        return None
    return Table({c: [row[i] for row in data] for i, c in enumerate(columns)}, len(data))


def _discard(origin: Resolved) -> None:
    origin.discard()
