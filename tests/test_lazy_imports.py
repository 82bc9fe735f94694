"""A server whose model scores columns (the natively scored Spark pipeline and H2O MOJO) starts, warms
up, becomes ready and answers JSON on ``/predict``, ``/invocations`` and the Open Inference Protocol's
``/v2/.../infer`` without ever loading pandas (nor pyarrow, for the MOJO: the Spark pipeline's own files
are Parquet, read with pyarrow): read from the server process's memory map, so an import anywhere, by
anyone, counts. The answers are the in-process ``Scorer.score``'s. A custom-code bundle and a
scikit-learn bundle still serve, and do load pandas (the control that shows the map check can see it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from scorer import codecs
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from tests.conftest import LiveServer

REPO = Path(__file__).resolve().parent.parent
NATIVE = {"spark": REPO / "bundles" / "spark", "h2o": REPO / "bundles" / "h2o"}
PANDAS, ARROW = "pandas/_libs", "libarrow"


def mapped(pid: int) -> set[str]:
    """The files mapped into the process (its shared libraries and extension modules among them)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {parts[5] for parts in (line.split(maxsplit=5) for line in lines) if len(parts) == 6}


def loaded(server: LiveServer, marker: str) -> list[str]:
    return sorted(path for path in mapped(server.proc.pid) if marker in path)


def rows_of(bundle: Path) -> tuple[list[str], list[list[Any]]]:
    """The bundle's sample plus rows with a missing number, a missing level and an unseen level."""
    sample = json.loads((bundle / "manifest.json").read_text())["sample_input"]
    columns, data = sample["columns"], [list(row) for row in sample["data"]]
    extra = [list(data[i % len(data)]) for i in range(3)]
    extra[0][columns.index("f0")] = None
    extra[1][columns.index("c1")] = None
    extra[2][columns.index("c2")] = "never-seen"
    return columns, data + extra


def expected(bundle: Path, columns: list[str], rows: list[list[Any]], **options: Any) -> list[Any]:
    """The in-process answer's ``predictions``."""
    out = Scorer.load(bundle, LoadOptions(**options)).score(pd.DataFrame(rows, columns=columns))
    predictions: list[Any] = json.loads(codecs.json_predictions(out))["predictions"]
    return predictions


def post(server: LiveServer, path: str, body: Any) -> Any:
    answer = requests.post(server.url + path, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def v2_body(columns: list[str], rows: list[list[Any]], schema: dict[str, str]) -> dict[str, Any]:
    datatype = {"float": "FP64", "string": "BYTES"}
    return {"inputs": [{"name": c, "shape": [len(rows)], "datatype": datatype[schema[c]],
                        "data": [row[i] for row in rows]} for i, c in enumerate(columns)]}


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_columnar_model_serves_json_without_pandas(name: str, live_server: Callable[..., Any]) -> None:
    bundle = NATIVE[name]
    columns, rows = rows_of(bundle)
    want = expected(bundle, columns, rows, spark_scoring="native")
    schema = {c["name"]: c["type"] for c in json.loads((bundle / "manifest.json").read_text())["input_schema"]}
    with live_server(bundle, "--spark-scoring", "native") as server:
        assert post(server, "/predict", {"columns": columns, "data": rows})["predictions"] == want
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        assert post(server, "/invocations", {"dataframe_records": records})["predictions"] == want
        assert post(server, "/predict", records[0])["predictions"] == want[:1]  # one row, one flat object
        answer = post(server, f"/v2/models/{name}/infer", v2_body(columns, rows, schema))
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        assert [dict(zip(outputs, values, strict=True)) for values in zip(*outputs.values(), strict=True)] == want
        for _ in range(20):  # more requests, one row each: still nothing loads
            post(server, "/predict", records[-1])
        assert loaded(server, PANDAS) == [], server.log()
        if name == "h2o":
            assert loaded(server, ARROW) == [], server.log()
        assert server.proc.poll() is None


def test_dataframe_models_still_serve_and_load_pandas(example_bundles: dict[str, Path],
                                                      sum_bundle: Callable[..., Path],
                                                      live_server: Callable[..., Any], tmp_path: Path) -> None:
    """Custom code (it imports pandas itself) and a scikit-learn pipeline scored by scikit-learn
    (``--scoring-plan off``: it scores DataFrames) answer as before; their servers do map pandas, which
    shows the check above would see it. The same pipeline from a stored scoring plan maps neither pandas
    nor scikit-learn."""
    with live_server(sum_bundle()) as server:
        answer = post(server, "/predict", {"a": [1.5, 2.0], "b": [10, 20]})["predictions"]
        assert [p["sum"] for p in answer] == [11.5, 22.0]
        assert loaded(server, PANDAS)
    tabular = example_bundles["tabular"]
    sample = json.loads((tabular / "manifest.json").read_text())["sample_input"]
    want = expected(tabular, sample["columns"], sample["data"], scoring_plan="off")
    with live_server(tabular, env={"SCORER_SCORING_PLAN": "off"}) as server:
        assert post(server, "/predict", {"columns": sample["columns"], "data": sample["data"]})["predictions"] == want
        assert post(server, "/invocations", {"dataframe_split": sample})["predictions"] == want
        assert loaded(server, PANDAS)
    plans = {"SCORER_PLAN_CACHE": str(tmp_path / "plans")}
    with live_server(tabular, env=plans):  # compiles the plan (with scikit-learn, so pandas) and stores it
        pass
    with live_server(tabular, env=plans) as server:
        answer = post(server, "/predict", {"columns": sample["columns"], "data": sample["data"]})["predictions"]
        assert [a["prediction"] for a in answer] == [w["prediction"] for w in want]
        for a, w in zip(answer, want, strict=True):
            assert all(abs(a[k] - w[k]) <= 1e-12 for k in w if k != "prediction")
        assert not loaded(server, PANDAS) and not loaded(server, "sklearn/")
