"""The server's columnar path (``Scorer.predict_table``): natively scored Spark pipelines and H2O MOJOs
get a batch's numpy columns without a DataFrame round trip, and answer exactly what the DataFrame path
(``Scorer.predict``) answers, on the same prepared rows, including missing values, unseen levels and
text that is not a number; a model with its own pre/postprocess hook keeps going through the hooks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.table import ColumnarModel, Table

REPO = Path(__file__).resolve().parent.parent
BUNDLES = {"spark": REPO / "bundles" / "spark", "h2o": REPO / "bundles" / "h2o"}


def _edge_rows(scorer: Scorer) -> pd.DataFrame:
    """The sample, plus rows with a missing number, a missing and an unseen level, and extreme values."""
    sample = scorer.bundle.manifest.sample_input
    assert sample is not None
    frame = pd.DataFrame(sample["data"], columns=sample["columns"])
    extra = frame.iloc[[0, 1, 2, 0]].reset_index(drop=True).astype(object)
    extra.loc[0, "f0"] = None
    extra.loc[1, "c1"] = None
    extra.loc[2, "c2"] = "never-seen"
    extra.loc[3, "f3"] = 1e300
    return pd.concat([frame.astype(object), extra], ignore_index=True)


def _tables_equal(a: Table, b: Table) -> None:
    assert list(a.columns) == list(b.columns)
    assert a.n_rows == b.n_rows
    for name in a.columns:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype, name
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=name)  # bit for bit, NaN where NaN
        else:
            assert x.tolist() == y.tolist(), name


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def native(request: pytest.FixtureRequest) -> Scorer:
    return Scorer.load(BUNDLES[request.param], LoadOptions(spark_scoring="native"))


@pytest.mark.fast
def test_columnar_path_answers_what_the_dataframe_path_answers(native: Scorer) -> None:
    assert isinstance(native.model, ColumnarModel)
    table = native.prepare(_edge_rows(native))
    fast = native.predict_table(table)
    slow = Table.from_output(native.predict(table))
    _tables_equal(fast, slow)
    assert fast.n_rows == 7 and fast["prediction"].tolist()[:3] == slow["prediction"].tolist()[:3]


@pytest.mark.fast
def test_columnar_inputs_are_the_dataframe_inputs_bit_for_bit(native: Scorer) -> None:
    """What the model computes on: the native columns (Spark) or the feature matrix (H2O) built from a
    Table's arrays equal those built from the DataFrame of the same Table, including int and text
    columns that the DataFrame path parses with pandas."""
    table = native.prepare(_edge_rows(native))
    columns = {name: table[name] for name in table.columns}
    columns["f1"] = np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.int64)
    columns["f2"] = np.array(["1.5", "x", None, "-0", "1e5", " 2", "nan"], dtype=object)
    frame = Table(columns, table.n_rows).to_frame()
    model: Any = native.model
    if hasattr(model, "rows"):
        np.testing.assert_array_equal(model.rows(columns, table.n_rows), model.rows(frame))
    else:
        from scorer.spark_native.model import columns_of

        a, b = columns_of(columns, model.input_schema), columns_of(frame, model.input_schema)
        assert list(a) == list(b)
        for name in a:
            if a[name].dtype.kind == "f":
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
            else:
                assert a[name].tolist() == b[name].tolist(), name
        assert np.isnan(a["f2"][1]) and a["f2"][4] == 1e5


@pytest.mark.fast
def test_columnar_path_takes_json_lists_as_the_server_decodes_them(native: Scorer) -> None:
    """A one-row request decoded from JSON (plain lists), prepared as the server prepares it."""
    frame = _edge_rows(native).iloc[[4]].reset_index(drop=True)
    body = json.loads(frame.to_json(orient="split", index=False))
    table = native.prepare(Table({c: [row[i] for row in body["data"]] for i, c in enumerate(body["columns"])}, 1))
    _tables_equal(native.predict_table(table), Table.from_output(native.predict(table)))


@pytest.mark.fast
def test_a_model_with_its_own_postprocess_keeps_its_hook(native: Scorer) -> None:
    """The columnar path skips DataFrames, so it must not skip a subclass's hooks: those models go
    through ``predict`` and their postprocess runs."""
    base = type(native.model)

    class Tagged(base):  # type: ignore[misc, valid-type]
        def postprocess(self, predictions: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
            return predictions.assign(tagged=1)

    model: Any = Tagged.__new__(Tagged)
    model.__dict__.update(native.model.__dict__)
    tagged = dataclasses.replace(native, model=model)
    table = tagged.prepare(_edge_rows(tagged))
    out = tagged.predict_table(table)
    assert out["tagged"].tolist() == [1] * table.n_rows
