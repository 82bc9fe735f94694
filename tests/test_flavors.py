"""Spark ML and H2O MOJO bundles (real local Spark, Java 17): detection, scoring equal to Spark's own
``transform`` and to H2O's own predictions, both MOJO backends, custom code wrapping a pipeline,
served online by a real server, and scored offline by ``scorer batch``.

One SparkSession serves every in-process test (the process's session, :func:`scorer.jvm.spark_session`).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from scorer.bundle import open_bundle
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.errors import BundleLayoutError

REPO = Path(__file__).resolve().parent.parent
SPARK_BUNDLE = REPO / "bundles" / "spark"
H2O_BUNDLE = REPO / "bundles" / "h2o"
H2O_REFERENCE = REPO / "bundles" / "_reference" / "h2o_predictions.csv"
OUTPUT = ["prediction", "probability_no", "probability_yes"]


def _features(bundle: Path) -> list[str]:
    return [c["name"] for c in json.loads((bundle / "manifest.json").read_text())["input_schema"]]


@pytest.fixture(scope="module")
def rows(build_module) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """300 rows of the tabular world with the JVM bundles' columns, some unseen levels and missing values."""
    features = _features(SPARK_BUNDLE)
    df = build_module.make_tabular_frame(300, seed=777)[features].reset_index(drop=True)
    strings = [c for c in features if df[c].dtype == object]
    numbers = [c for c in features if c not in strings]
    df.loc[::37, strings[0]] = "never-seen-level"
    df.loc[5::41, numbers[0]] = np.nan
    df.loc[7::43, strings[-1]] = None
    return df


@pytest.fixture(scope="module")
def spark_scorer() -> Scorer:
    """The Spark path (a local SparkSession): the reference the native path is compared with."""
    return Scorer.load(SPARK_BUNDLE, LoadOptions(spark_scoring="spark"))


@pytest.fixture(scope="module")
def mojo_scorers() -> dict[str, Scorer]:
    return {b: Scorer.load(H2O_BUNDLE, LoadOptions(mojo_backend=b, spark_scoring="spark")) for b in ("genmodel", "spark")}


def _jvm_answer(bundle: Path, rows: pd.DataFrame, spark_scorer: Scorer, mojo_scorers: dict[str, Scorer]) -> pd.DataFrame:
    return spark_scorer.score(rows) if bundle == SPARK_BUNDLE else mojo_scorers["genmodel"].score(rows)


def _assert_same(got: pd.DataFrame, expected: pd.DataFrame, scoring: str) -> None:
    """The JVM path's answers exactly; the native path's within the contract (labels equal, 1e-9 relative)."""
    if scoring == "jvm":
        pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)
    else:
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-12, check_dtype=False)


SCORING = [(SPARK_BUNDLE, "jvm"), (H2O_BUNDLE, "jvm"), (SPARK_BUNDLE, "native"), (H2O_BUNDLE, "native")]
SCORING_IDS = ["spark-jvm", "h2o-jvm", "spark-native", "h2o-native"]
FLAG = {"jvm": "spark", "native": "native"}


# --- detection ---------------------------------------------------------------------------------


@pytest.mark.fast
def test_flavor_detected_from_artifacts(tmp_path: Path) -> None:
    """A PipelineModel directory is "spark", a MOJO zip "h2o"; both at once need the manifest to choose."""
    assert open_bundle(SPARK_BUNDLE).default_model() == ("spark", SPARK_BUNDLE / "artifacts" / "pipeline")
    flavor, path = open_bundle(H2O_BUNDLE).default_model()
    assert flavor == "h2o" and path.suffix == ".zip"
    both = tmp_path / "both"
    shutil.copytree(SPARK_BUNDLE / "artifacts", both / "artifacts")
    shutil.copy(path, both / "artifacts" / path.name)
    with pytest.raises(BundleLayoutError, match="2 models in artifacts/"):
        open_bundle(both).default_model()
    (both / "manifest.json").write_text(json.dumps({"flavor": "h2o"}))
    assert open_bundle(both).default_model() == ("h2o", both / "artifacts" / path.name)
    (both / "manifest.json").write_text(json.dumps({"flavor": "onnx"}))
    with pytest.raises(BundleLayoutError, match="flavor must be one of"):
        open_bundle(both)


@pytest.mark.fast
def test_zip_that_is_not_a_mojo_is_not_a_model(tmp_path: Path) -> None:
    """Any other zip under artifacts/ is data, not a model."""
    (tmp_path / "b" / "artifacts").mkdir(parents=True)
    shutil.make_archive(str(tmp_path / "b" / "artifacts" / "data"), "zip", REPO / "bundles" / "spam" / "code")
    with pytest.raises(BundleLayoutError, match="no model file"):
        open_bundle(tmp_path / "b").default_model()


# --- Spark ML pipeline ---------------------------------------------------------------------------


def _spark_own(rows: pd.DataFrame) -> pd.DataFrame:
    """Spark's own PipelineModel.transform on the rows, labels mapped by the pipeline's label indexer."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from scorer.jvm import spark_session

    spark = spark_session()
    model = PipelineModel.load(str(SPARK_BUNDLE / "artifacts" / "pipeline"))
    labels = next(s.labelsArray[0] for s in model.stages if type(s).__name__ == "StringIndexerModel"
                  and s.getOutputCol() == model.stages[-1].getLabelCol())
    schema = ", ".join(f"`{c}` {'string' if rows[c].dtype == object else 'double'}" for c in rows.columns)
    out = model.transform(spark.createDataFrame(rows, schema=schema))
    got = out.select(F.col("prediction"), vector_to_array("probability").alias("p")).toPandas()
    return pd.DataFrame({
        "prediction": [labels[int(i)] for i in got["prediction"]],
        "probability_no": [p[0] for p in got["p"]],
        "probability_yes": [p[1] for p in got["p"]],
    })


def test_spark_bundle_has_the_sklearn_shape_and_equals_spark_transform(spark_scorer: Scorer, rows: pd.DataFrame) -> None:
    """Schema from the stages, output prediction + probability_<class>, values exactly Spark's own."""
    assert spark_scorer.output_columns == OUTPUT
    assert set(spark_scorer.model.input_schema) == set(rows.columns)  # type: ignore[attr-defined]
    got = spark_scorer.score(rows)
    assert list(got.columns) == OUTPUT and len(got) == len(rows)
    pd.testing.assert_frame_equal(got, _spark_own(rows), check_exact=True, check_dtype=False)
    assert set(got["prediction"]) <= {"no", "yes"}
    assert np.allclose(got["probability_no"] + got["probability_yes"], 1.0)


def test_spark_rows_scored_together_equal_rows_scored_alone(spark_scorer: Scorer, rows: pd.DataFrame) -> None:
    """Coalescing requests into one Spark call does not change any row's answer."""
    together = spark_scorer.score(rows.head(12))
    alone = pd.concat([spark_scorer.score(rows.iloc[[i]]) for i in range(12)], ignore_index=True)
    pd.testing.assert_frame_equal(together, alone, check_exact=True)


def test_custom_code_wraps_a_spark_pipeline(tmp_path: Path, rows: pd.DataFrame, spark_scorer: Scorer) -> None:
    """pandas feature engineering in a CustomPreprocessor, then the bundle's Spark pipeline."""
    bundle = tmp_path / "wrapped"
    shutil.copytree(SPARK_BUNDLE / "artifacts", bundle / "artifacts")
    first = _features(SPARK_BUNDLE)[0]
    schema = {c: ("string" if rows[c].dtype == object else "float") for c in rows.columns if c != first}
    (bundle / "code").mkdir()
    (bundle / "code" / "custom_preprocess.py").write_text(textwrap.dedent(f"""
        import scorer
        from scorer.spark_ml import SparkPipelineModel

        class CustomPreprocessor(scorer.CustomPreprocessor):
            input_schema = {{**{schema!r}, "{first}_percent": "float"}}

            def load(self, artifacts_dir):
                self.pipeline = SparkPipelineModel(artifacts_dir / "pipeline")
                self.pipeline.load(artifacts_dir)

            def preprocess(self, df):
                return df.assign({first}=df["{first}_percent"] / 100.0)

            def predict(self, df):
                return self.pipeline.predict(df)
    """))
    scorer = Scorer.load(bundle)
    sent = rows.assign(**{f"{first}_percent": rows[first] * 100.0}).drop(columns=[first])
    expected = spark_scorer.score(rows.assign(**{first: sent[f"{first}_percent"] / 100.0}))
    pd.testing.assert_frame_equal(scorer.score(sent), expected, check_exact=True)


# --- H2O MOJO -----------------------------------------------------------------------------------


def test_mojo_backends_agree_exactly(mojo_scorers: dict[str, Scorer], rows: pd.DataFrame) -> None:
    """The MOJO's own Java predictor on a whole batch and pysparkling's H2OMOJOModel give the same bits."""
    genmodel, spark = (mojo_scorers[b].score(rows) for b in ("genmodel", "spark"))
    assert list(genmodel.columns) == OUTPUT
    pd.testing.assert_frame_equal(genmodel, spark, check_exact=True, check_dtype=False)


@pytest.mark.parametrize("backend", ["genmodel", "spark"])
def test_mojo_equals_h2o_own_predictions(mojo_scorers: dict[str, Scorer], backend: str) -> None:
    """Against H2O's own in-cluster predict() on the same rows (recorded when the bundle was built),
    including unseen levels and missing values."""
    reference = pd.read_csv(H2O_REFERENCE, keep_default_na=False, na_values=[""])
    features = _features(H2O_BUNDLE)
    inputs = reference[features].astype({c: object for c in features if reference[c].dtype == object})
    inputs = inputs.where(inputs.notna(), None)
    got = mojo_scorers[backend].score(inputs)
    assert list(got["prediction"]) == list(reference["predict"].astype(str))
    for c in ("no", "yes"):
        np.testing.assert_allclose(got[f"probability_{c}"], reference[c], rtol=0, atol=1e-12)


def test_mojo_strings_with_quotes_commas_and_backslashes(mojo_scorers: dict[str, Scorer], rows: pd.DataFrame) -> None:
    """Hostile category values reach the genmodel backend intact (they are unseen levels: missing)."""
    strings = [c for c in rows.columns if rows[c].dtype == object]
    weird = rows.head(6).copy()
    weird[strings[0]] = ['a,"b\\', '"', "\\", "x\ny", ",", "é ü"]
    as_missing = rows.head(6).copy()
    as_missing[strings[0]] = None
    genmodel = mojo_scorers["genmodel"]
    pd.testing.assert_frame_equal(genmodel.score(weird), genmodel.score(as_missing), check_exact=True)
    pd.testing.assert_frame_equal(genmodel.score(weird), mojo_scorers["spark"].score(weird), check_exact=True,
                                  check_dtype=False)


def test_mojo_rows_encoded_in_numpy_equal_genmodels_own_conversion(mojo_scorers: dict[str, Scorer],
                                                                   rows: pd.DataFrame) -> None:
    """The genmodel backend's numpy encoding of a batch (level -> domain index, unseen level or text that is
    not a number -> NaN) scores exactly as H2O's EasyPredictModelWrapper converting each row itself
    (convertUnknownCategoricalLevelsToNa, convertInvalidNumbersToNa): the path MOJOs with other
    categorical encodings take."""
    from scorer.h2o_mojo import ArrayRows, RowDataRows
    from scorer.jvm import genmodel_jvm

    model = mojo_scorers["genmodel"].model
    assert isinstance(model._rows, ArrayRows)  # type: ignore[attr-defined]
    strings = [c for c in rows.columns if rows[c].dtype == object]
    numbers = [c for c in rows.columns if c not in strings]
    hostile = rows.astype({numbers[0]: object})
    hostile.loc[::5, numbers[0]] = "not a number"
    hostile.loc[1::5, numbers[0]] = " 2.5 "
    hostile.loc[::3, strings[0]] = f"{strings[0]}.{rows[strings[0]].iloc[0]}"  # not a level: genmodel tries <column>.<level>
    hostile.loc[2::7, strings[1]] = 3  # a number in a categorical column is looked up as text
    hostile.loc[4::9, strings[1]] = np.nan
    domains = [None if model.input_schema[c] == "float" else  # type: ignore[attr-defined]
               [str(v) for v in model.genmodel.getDomainValues(i)] for i, c in enumerate(model.features)]  # type: ignore[attr-defined]
    rowdata = RowDataRows(genmodel_jvm(), model.genmodel, model.features, domains, model.classes)  # type: ignore[attr-defined]
    for frame in (rows, hostile):
        pd.testing.assert_frame_equal(model.predict(frame), rowdata.predict(frame.reindex(columns=model.features)),
                                      check_exact=True)


def test_mojo_genmodel_scores_in_memory_without_spark(mojo_scorers: dict[str, Scorer], rows: pd.DataFrame,
                                                      tmp_path: Path) -> None:
    """In a fresh process a MOJO loads and scores with no SparkSession (pyspark is not even imported) and no
    file written: the JVM is in-process, the rows go to it as arrays. The process counts as having a JVM
    (it must not fork server workers). Its answers are pysparkling's."""
    script = textwrap.dedent(f"""
        import os, pickle, sys
        from scorer.core import Scorer
        from scorer.jvm import jvm_started

        from scorer.load_options import LoadOptions
        scorer = Scorer.load({str(H2O_BUNDLE)!r}, LoadOptions(spark_scoring="spark"))
        rows = pickle.load(sys.stdin.buffer)
        written = []

        def audit(event, args):
            if event == "open" and (any(m in str(args[1] or "") for m in "wax+")
                                    or (args[2] or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                written.append(str(args[0]))
            elif event in ("os.mkdir", "os.rename", "os.remove"):
                written.append(str(args[0]))

        sys.addaudithook(audit)
        scored = [scorer.score(rows.iloc[i:i + n]) for i, n in ((0, 1), (1, 299), (0, 300))]
        assert not written, written
        assert "pyspark" not in sys.modules, "pyspark was imported"
        assert jvm_started()
        sys.stdout.buffer.write(pickle.dumps(scored[-1]))
    """)
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    result = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(rows), capture_output=True,
                            timeout=300, env=env)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0, stderr[-3000:]
    assert "SLF4J" not in stderr, stderr
    assert not list((tmp_path / "tmp").iterdir())
    pd.testing.assert_frame_equal(pickle.loads(result.stdout), mojo_scorers["spark"].score(rows), check_exact=True,
                                  check_dtype=False)


def test_mojo_concurrent_calls_do_not_mix(mojo_scorers: dict[str, Scorer], rows: pd.DataFrame) -> None:
    """Calls from several threads into one genmodel model stay separate."""
    scorer = mojo_scorers["genmodel"]
    expected = {i: scorer.score(rows.iloc[i * 10:(i + 1) * 10]) for i in range(8)}
    got: dict[int, pd.DataFrame] = {}

    def call(i: int) -> None:
        got[i] = scorer.score(rows.iloc[i * 10:(i + 1) * 10])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        pd.testing.assert_frame_equal(got[i], expected[i], check_exact=True)


# --- online and offline --------------------------------------------------------------------------


def _ready_statuses(server, timeout: float = 240) -> list[int]:  # type: ignore[no-untyped-def]
    """Poll /ready from the moment the process starts until it answers 200: every status seen, in order
    (consecutive repeats collapsed; connection refused is not a status)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log()
        try:
            status = requests.get(server.url + "/ready", timeout=5).status_code
        except requests.ConnectionError:
            time.sleep(0.05)
            continue
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout}s: {seen}\n{server.log()}")


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name)


@pytest.mark.parametrize(("bundle", "scoring"), SCORING, ids=SCORING_IDS)
def test_served_online_coalesced_and_equal_to_in_process(bundle: Path, scoring: str, rows: pd.DataFrame,
                                                         live_server,  # type: ignore[no-untyped-def]
                                                         spark_scorer: Scorer, mojo_scorers: dict[str, Scorer]) -> None:
    """A real server: /ready is never 200 before the model is loaded; each of 64 concurrent one-row requests
    equals the in-process JVM answer. On the JVM they are coalesced into fewer calls and --workers 2 serves
    with one process (a JVM cannot be forked); natively there is no JVM, so the two workers are forked."""
    expected = _jvm_answer(bundle, rows, spark_scorer, mojo_scorers)
    with live_server(bundle, "--workers", "2", "--spark-scoring", FLAG[scoring], wait=False) as server:
        statuses = _ready_statuses(server)
        assert statuses[-1] == 200 and (503 in statuses or scoring == "native"), statuses  # native loads in ~1 s
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
        one = rows.head(64)
        answers: dict[int, dict] = {}

        def send(i: int) -> None:
            body = one.iloc[[i]].to_json(orient="split", index=False)
            answers[i] = requests.post(server.url + "/predict", data=body, timeout=120,
                                       headers={"Content-Type": "application/json"}).json()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(64):
            answer = answers[i]
            got = pd.DataFrame(answer["predictions"])
            _assert_same(got, expected.iloc[[i]].reset_index(drop=True), scoring)
        metadata = requests.get(server.url + "/metadata", timeout=10).json()
        assert metadata["scoring"]["path"] == scoring, metadata["scoring"]
        if scoring == "jvm":
            metrics = requests.get(server.url + "/metrics", timeout=10).text
            assert _metric(metrics, "scorer_batch_requests_sum") == 64
            assert _metric(metrics, "scorer_batch_requests_count") < 64, metrics
            assert "serving with one process" in server.log()
        else:
            assert "started 2 workers" in server.log(), server.log()


@pytest.mark.parametrize(("bundle", "scoring"), SCORING, ids=SCORING_IDS)
def test_scorer_batch_scores_jvm_bundles_like_any_other(bundle: Path, scoring: str, rows: pd.DataFrame, tmp_path: Path,
                                                        spark_scorer: Scorer, mojo_scorers: dict[str, Scorer]) -> None:
    """``scorer batch`` (engine local, --workers 2) over a CSV: ids kept, predictions equal to the JVM's
    in-process answers, on either path."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    rows.assign(id=range(len(rows))).to_csv(inputs / "part.csv", index=False)
    result = subprocess.run(
        [sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--input", str(inputs), "--output",
         str(tmp_path / "out"), "--output-format", "parquet", "--workers", "2", "--chunk-rows", "100",
         "--spark-scoring", FLAG[scoring]],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = pd.read_parquet(tmp_path / "out" / "part.parquet")
    assert list(out["id"]) == [str(i) for i in range(len(rows))]  # CSV columns are read as text
    _assert_same(out[OUTPUT], _jvm_answer(bundle, rows, spark_scorer, mojo_scorers), scoring)
    assert (tmp_path / "out" / "_SUCCESS").exists()


@pytest.mark.parametrize("bundle", [SPARK_BUNDLE, H2O_BUNDLE], ids=["spark", "h2o"])
def test_jvm_bundle_reloads_in_process(bundle: Path, rows: pd.DataFrame, tmp_path: Path, live_server,  # type: ignore[no-untyped-def]
                                       spark_scorer: Scorer, mojo_scorers: dict[str, Scorer]) -> None:
    """A JVM bundle (served by one process even with --workers 2) follows a moved ``current`` link: the new
    version loads in the same JVM beside the old one and is swapped in; answers name it and stay exact."""
    expected = spark_scorer.score(rows.head(20)) if bundle == SPARK_BUNDLE else mojo_scorers["genmodel"].score(rows.head(20))
    versions = {}
    for label in ("1.0.0", "2.0.0"):
        folder = shutil.copytree(bundle, tmp_path / label)
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "version": label}))
        versions[label] = f"sha256:{open_bundle(folder).digest}"
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "1.0.0")
    body = rows.head(20).to_json(orient="split", index=False)

    def ask(server) -> requests.Response:  # type: ignore[no-untyped-def]
        r = requests.post(server.url + "/predict", data=body, timeout=120, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        pd.testing.assert_frame_equal(pd.DataFrame(r.json()["predictions"]), expected, check_exact=True, check_dtype=False)
        return r

    with live_server(current, "--workers", "2", "--reload-interval", "0.5", "--spark-scoring", "spark") as server:
        assert ask(server).headers["X-Model-Digest"] == versions["1.0.0"]
        link = tmp_path / "current.tmp"
        link.symlink_to(tmp_path / "2.0.0")
        link.replace(current)
        deadline = time.monotonic() + 120
        while (r := ask(server)).headers["X-Model-Digest"] != versions["2.0.0"]:
            assert time.monotonic() < deadline, f"still {r.headers['X-Model-Digest']}\n{server.log()}"
            time.sleep(0.2)
        assert r.headers["X-Model-Version"] == "2.0.0"
        assert requests.get(server.url + "/ready", timeout=10).status_code == 200
        assert "serving with one process" in server.log()
