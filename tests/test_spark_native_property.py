"""Native Spark scoring against real Spark: random pipelines, and pipelines an older Spark saved.

* Random pipelines (built by ``tests/spark_pipelines.py`` from an integer seed) are fitted in real
  Spark, saved, and scored on a different random frame by Spark's ``PipelineModel.load(dir).transform``
  and by ``scorer.spark_native``: every column Spark adds agrees under the exactness contract, the same
  rows are dropped, and where Spark raises native raises ``InvalidData``. Two sets run in CI:

  - :data:`LIVE_SEEDS`: fitted, saved and scored by Spark in this run (about 4 s of Spark work each on
    2 cores, so only a few);
  - :data:`FROZEN`: 200 more, fitted and answered by the same Spark when the archive was made
    (``scripts/spark-native-soak --seed 20 --count 205 --freeze tests/fixtures/spark-random.tar.xz``):
    each case is the saved pipeline, the scoring frame and Spark's answer, replayed natively here
    without Spark. The archive names the Spark version that made it, and a test checks that the
    generator still builds the same pipelines from those seeds.

  Every generated stage is one native scoring claims, so every pipeline must match.
  ``scripts/spark-native-soak`` runs any number of live seeds.
* ``tests/fixtures/spark-legacy/``: pipelines saved by Spark 3.2.4 with that Spark's own answers
  (rebuilt by its ``make.py``): native equals them, and so does Spark 3.5 loading the same directory.
* The comparator itself (fast): it catches each kind of difference it is meant to.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import spark_pipelines as sp

#: Fitted live in CI: fixed seeds, so a failure names a seed that reproduces it (scripts/spark-native-soak --seed N).
LIVE_SEEDS = range(12)
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARCHIVE = FIXTURES / "spark-random.tar.xz"
#: The frozen cases' folder names (``s<seed>``), read from the archive's listing.
with tarfile.open(ARCHIVE) as _tar:
    FROZEN = sorted(name.split("/")[0] for name in _tar.getnames() if name.endswith("/case.json"))
LEGACY = FIXTURES / "spark-legacy"
LEGACY_NAMES = sorted(p.stem for p in LEGACY.glob("*.json"))


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """The process's SparkSession with small-frame settings for this module (restored after)."""
    session = sp._spark()
    before = sp.small_data_conf()
    yield session
    sp.restore_conf(before)


def _check(result: sp.Result) -> None:
    assert result.status == "match", sp.report(result)


# --- random pipelines, fitted live --------------------------------------------------------------


@pytest.fixture(scope="module")
def live(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[int, sp.Result]:
    """Every live seed, two pipelines at a time on the one session (results do not depend on it)."""
    return sp.run_cases(LIVE_SEEDS, threads=2, workdir=tmp_path_factory.mktemp("live"))


@pytest.mark.parametrize("seed", LIVE_SEEDS)
def test_random_pipeline_scores_natively_as_spark_does(live: dict[int, sp.Result], seed: int) -> None:
    """Pipeline ``seed``: native output equals Spark's transform (or both raise), same rows kept."""
    result = live[seed]
    if result.status == "fit-failed":
        pytest.skip(f"Spark could not fit the generated pipeline: {result.detail}")
    _check(result)


# --- random pipelines, frozen -------------------------------------------------------------------


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("frozen")
    assert [p.name for p in sp.unpack(ARCHIVE, root)] == FROZEN
    return root


@pytest.mark.fast
@pytest.mark.parametrize("name", FROZEN)
def test_frozen_pipeline_scores_natively_as_spark_did(frozen: Path, name: str) -> None:
    """A pipeline Spark fitted and answered when the archive was made: native gives Spark's answer."""
    result = sp.replay(frozen / name)
    _check(result)


@pytest.mark.fast
def test_the_frozen_set_is_200_cases_from_the_pinned_spark(frozen: Path) -> None:
    """At least 200 cases, disjoint from the live seeds, made by the Spark this project pins (another
    Spark may answer differently: regenerate the archive with the command in this module's docstring)."""
    import importlib.metadata

    metas = [json.loads((frozen / name / "case.json").read_text()) for name in FROZEN]
    assert len(metas) >= 200
    assert not {m["seed"] for m in metas} & set(LIVE_SEEDS)
    assert {m["spark_version"] for m in metas} == {importlib.metadata.version("pyspark")}


def test_the_generator_still_builds_the_frozen_pipelines(spark: Any, frozen: Path) -> None:
    """The frozen seeds are what ``make_case`` builds today (stages and their random parameters), so
    the live and frozen sets test the same generator; a change to it means regenerating the archive."""
    for name in FROZEN[::20]:
        meta = json.loads((frozen / name / "case.json").read_text())
        assert sp.make_case(meta["seed"]).describe == meta["describe"], name


@pytest.mark.fast
def test_a_changed_answer_in_the_archive_is_caught(frozen: Path, tmp_path: Path) -> None:
    """The replay can fail: one of Spark's numbers moved by 1e-8 relative makes a matching case a mismatch."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in FROZEN:
        meta = json.loads((frozen / name / "case.json").read_text())
        numeric = [c for c in meta["added"] if c not in meta["exact"] and c not in meta["vectors"]]
        if not meta["error"] and numeric:
            break
    case = tmp_path / name
    shutil.copytree(frozen / name, case)
    assert sp.replay(case).status == "match"
    table = pq.read_table(case / "spark.parquet")
    column = table.column(numeric[0]).to_numpy(zero_copy_only=False)
    moved = np.where(column == 0, 1e-300, column * (1 + 1e-8))
    pq.write_table(table.set_column(table.schema.get_field_index(numeric[0]), numeric[0], pa.array(moved)),
                   case / "spark.parquet")
    result = sp.replay(case)
    assert result.status == "mismatch" and numeric[0] in result.detail, sp.report(result)


def test_the_random_set_covers_what_it_claims(live: dict[int, sp.Result], frozen: Path) -> None:
    """Over both sets: every predictor family and every outcome (rows dropped, both raise) occurs,
    and Spark fits nearly every generated pipeline, so the set is not quietly testing less."""
    results = list(live.values()) + [sp.replay(frozen / name) for name in FROZEN]
    print(sp.summary(results))
    fitted = [r for r in results if r.status != "fit-failed"]
    assert len(fitted) >= 0.95 * len(results), [sp.report(r) for r in results if r.status == "fit-failed"]
    assert len(fitted) >= 200 + 0.9 * len(LIVE_SEEDS)
    assert sum(r.both_raised for r in fitted) >= 0.05 * len(fitted)
    assert sum(r.rows_dropped > 0 for r in fitted) >= 0.05 * len(fitted)
    last = {r.describe[-1].split("(")[0] if not r.describe[-1].startswith("IndexToString") else r.describe[-2].split("(")[0]
            for r in fitted}
    expected = {"LogisticRegression", "LinearRegression", "GeneralizedLinearRegression", "DecisionTreeClassifier",
                "DecisionTreeRegressor", "RandomForestClassifier", "RandomForestRegressor", "GBTClassifier",
                "GBTRegressor", "NaiveBayes"}
    assert expected <= last, expected - last


# --- pipelines saved by Spark 3.2.4 -------------------------------------------------------------


def legacy(name: str) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, set[str]]:
    """A fixture's document, its input frame (with a row id), Spark 3.2.4's output (with the row id)
    and the columns compared exactly."""
    doc = json.loads((LEGACY / f"{name}.json").read_text())
    frame = pd.DataFrame({"rid": np.arange(len(next(iter(doc["input"].values()))), dtype=float)})
    for c, values in doc["input"].items():
        if doc["types"][c] == "float":
            frame[c] = np.array([np.nan if v is None else v for v in values], dtype=float)
        else:
            frame[c] = pd.Series(values, dtype=object)
    reference = pd.DataFrame({"rid": frame["rid"], **doc["output"]})
    exact = {c for c in doc["output"] if c.endswith(("_idx", "_oh", "_bk", "_q")) or c in ("prediction", "predicted_y")}
    return doc, frame, reference, exact


def as_columns(reference: pd.DataFrame, vectors: set[str]) -> dict[str, np.ndarray]:
    """Reference output as native-shaped columns (vectors 2-D), to compare with a Spark output."""
    cols = {}
    for c in reference.columns:
        if c in vectors:
            cols[c] = np.array([np.asarray(v, dtype=float) for v in reference[c]])
        elif pd.api.types.is_numeric_dtype(reference[c]):
            cols[c] = reference[c].to_numpy(float)
        else:
            cols[c] = reference[c].to_numpy(object)
    return cols


@pytest.mark.fast
def test_legacy_fixtures_come_from_spark_3_2() -> None:
    """The older layout is what is tested: every stage's metadata says Spark 3.2.4."""
    from scorer.spark_native.layout import read_pipeline

    assert LEGACY_NAMES == ["binary_lr", "features_lr", "gbt", "random_forest", "regressors"]
    for name in LEGACY_NAMES:
        assert json.loads((LEGACY / f"{name}.json").read_text())["spark_version"] == "3.2.4"
        assert {s.spark_version for s in read_pipeline(LEGACY / name)} == {"3.2.4"}


@pytest.mark.parametrize("name", LEGACY_NAMES)
def test_spark_3_5_scores_a_spark_3_2_pipeline_as_3_2_did(spark: Any, name: str) -> None:
    """The reference is sound: Spark 3.5 loading the 3.2.4 directory gives 3.2.4's answers."""
    doc, frame, reference, exact = legacy(name)
    got, added, vectors, error = sp.spark_outcome(LEGACY / name, frame)
    assert not error and got is not None, error
    assert sorted(added) == sorted(doc["output"])
    problems = sp.compare(got, added, vectors, as_columns(reference, vectors), exact, set(frame.columns))
    assert not problems, problems


@pytest.mark.fast
@pytest.mark.parametrize("name", LEGACY_NAMES)
def test_native_scores_a_spark_3_2_pipeline_as_3_2_did(name: str) -> None:
    """Native scoring of the 3.2.4 layout equals Spark 3.2.4's own transform."""
    from scorer.spark_native.pipeline import compile_pipeline

    doc, frame, reference, exact = legacy(name)
    native = compile_pipeline(LEGACY / name).transform(sp.native_input(frame))
    problems = sp.compare(reference, list(doc["output"]), set(doc["vectors"]), native, exact, set(frame.columns))
    assert not problems, problems


# --- the comparator -----------------------------------------------------------------------------


def _spark_like() -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    spark = pd.DataFrame({"rid": [0.0, 2.0, 3.0], "idx": [0.0, 1.0, 2.0], "p": [0.25, np.nan, 1e300],
                          "v": [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], "lab": ["a", None, "b"]})
    native = {"rid": np.array([0.0, 2.0, 3.0]), "x": np.array([1.0, 2.0, 3.0]), "idx": np.array([0.0, 1.0, 2.0]),
              "p": np.array([0.25, np.nan, 1e300]), "v": np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]),
              "lab": np.array(["a", None, "b"], dtype=object)}
    return spark, native


@pytest.mark.fast
@pytest.mark.parametrize("change, expected", [
    (lambda n: None, None),
    (lambda n: n.update(p=n["p"] * (1 + 1e-8)), "p:"),
    (lambda n: n.update(idx=np.nextafter(n["idx"], 5)), "idx: not equal"),
    (lambda n: n.update(v=n["v"][:, :1]), "v: native shape"),
    (lambda n: n.update(lab=np.array(["a", None, "c"], dtype=object)), "lab: strings differ"),
    (lambda n: n.pop("p"), "p: missing"),
    (lambda n: n.update(extra=np.zeros(3)), "native adds columns"),
    (lambda n: n.update({k: v[[0, 2]] for k, v in n.items()}), "rows kept differ"),
])
def test_the_comparator_catches_each_kind_of_difference(change: Any, expected: str | None) -> None:
    """Equal outputs pass (NaN = NaN, 1e300 kept); a 1e-8 relative error, a 1-ulp index, a short
    vector, another string, a missing or extra column, other rows: each is reported."""
    spark, native = _spark_like()
    change(native)
    problems = sp.compare(spark, ["idx", "p", "v", "lab"], {"v"}, native, {"idx"}, {"rid", "x"})
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems
