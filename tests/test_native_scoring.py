"""``--spark-scoring``: which path scores a Spark pipeline or an H2O MOJO, and how the choice is reported.

The native path itself is proven stage by stage and on random pipelines elsewhere (tests/test_spark_native_*,
tests/test_h2o_native.py); here: native loads never start a JVM, ``auto`` verifies the sample both ways and
falls back to the JVM naming the stage native scoring lacks, ``native`` refuses such a bundle with exit 3.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scorer.core import Scorer
from scorer.native_scoring import compare

REPO = Path(__file__).resolve().parent.parent
SPARK_BUNDLE = REPO / "bundles" / "spark"
H2O_BUNDLE = REPO / "bundles" / "h2o"


@pytest.mark.fast
def test_compare_holds_the_contract() -> None:
    """Labels must be equal, numbers within 1e-9 relative (NaN equal to NaN); the first difference is named."""
    a = pd.DataFrame({"prediction": ["no", "yes"], "probability_yes": [0.25, np.nan]})
    assert compare(a, a.copy()) is None
    close = a.assign(probability_yes=[0.25 * (1 + 5e-10), np.nan])
    assert compare(a, close) is None
    far = a.assign(probability_yes=[0.25 * (1 + 5e-9), np.nan])
    assert "row 0, column probability_yes" in (compare(a, far) or "")
    label = a.assign(prediction=["no", "no"])
    assert "row 1, column prediction" in (compare(a, label) or "")
    assert "columns" in (compare(a, a[["prediction"]]) or "")


@pytest.mark.parametrize("bundle", [SPARK_BUNDLE, H2O_BUNDLE], ids=["spark", "h2o"])
def test_native_scoring_never_starts_a_jvm(bundle: Path) -> None:
    """``--spark-scoring native``: the bundle loads and scores its sample in a process that never imports
    pyspark or py4j, and /metadata's ``scoring`` says native."""
    code = f"""
import json, sys
from scorer.core import Scorer
from scorer.load_options import LoadOptions
scorer = Scorer.load({str(bundle)!r}, LoadOptions(spark_scoring="native"))
jvm = sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j", "jpype"))
print(json.dumps({{"scoring": scorer.metadata()["scoring"], "jvm_modules": jvm}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["jvm_modules"] == []
    assert report["scoring"] == {"path": "native", "reason": "--spark-scoring native", "verified": None}


@pytest.mark.parametrize("bundle", [SPARK_BUNDLE, H2O_BUNDLE], ids=["spark", "h2o"])
def test_auto_scores_natively_once_the_sample_matches_the_jvm(bundle: Path) -> None:
    """``auto`` (the default) with the JVM path installed: the sample is scored both ways and agrees."""
    scorer = Scorer.load(bundle)
    scoring = scorer.metadata()["scoring"]
    assert scoring["path"] == "native", scoring
    assert scoring["verified"] == {"rows": 3, "difference": None}, scoring


@pytest.fixture(scope="module")
def unsupported_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Spark pipeline with a stage native scoring lacks (PCA) before a linear regression."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, VectorAssembler
    from pyspark.ml.regression import LinearRegression

    from scorer.jvm import spark_session

    spark = spark_session()
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    frame["y"] = frame["a"] * 2 - frame["b"] + rng.normal(scale=0.1, size=200)
    pipeline = Pipeline(stages=[VectorAssembler(inputCols=["a", "b", "c"], outputCol="v"),
                                PCA(k=2, inputCol="v", outputCol="features"),
                                LinearRegression(featuresCol="features", labelCol="y")])
    model = pipeline.fit(spark.createDataFrame(frame))
    bundle = tmp_path_factory.mktemp("pca") / "bundle"
    model.write().overwrite().save(str(bundle / "artifacts" / "pipeline"))
    sample = {"columns": ["a", "b", "c"], "data": frame[["a", "b", "c"]].head(3).values.tolist()}
    (bundle / "manifest.json").write_text(json.dumps({"name": "pca", "sample_input": sample}))
    return bundle


def test_auto_keeps_the_jvm_for_a_stage_native_scoring_lacks(unsupported_bundle: Path) -> None:
    scorer = Scorer.load(unsupported_bundle)
    scoring = scorer.metadata()["scoring"]
    assert scoring["path"] == "jvm" and "PCAModel" in scoring["reason"], scoring
    rows = pd.DataFrame({"a": [0.5, -1.0], "b": [2.0, 0.0], "c": [1.0, 3.0]})
    assert scorer.score(rows)["prediction"].notna().all()


def test_native_refuses_a_stage_it_lacks_with_exit_3(unsupported_bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(unsupported_bundle, tmp_path / "b")
    done = subprocess.run([sys.executable, "-m", "scorer.cli", "info", str(copy), "--spark-scoring", "native",
                           "--log-format", "text"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if "PCAModel" in ln]
    assert errors and "--spark-scoring native" in errors[0], done.stderr
