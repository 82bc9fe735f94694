"""MLflow model directories (a folder with an ``MLmodel`` file), written by MLflow itself: the sklearn
flavor in its three serialization formats, a regressor, a model without signature or example, a custom
pyfunc, the spark flavor; scored in-process, served, zipped; and each bad MLmodel refused by
``scorer info`` with exit 3 and one line.

MLflow is imported only by the fixtures that write models (once per module); the loading side is
checked in processes where ``import mlflow`` fails, to show that the native flavors never need it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from scorer.bundle import open_bundle
from scorer.core import Scorer
from scorer.errors import BundleCodeError, BundleLayoutError, RequirementsError
from scorer.load_options import LoadOptions
from scorer.requirements import check_requirements

REPO = Path(__file__).resolve().parent.parent
SCORER = Path(sys.executable).parent / "scorer"
SPARK_PIPELINE = REPO / "bundles" / "spark" / "artifacts" / "pipeline"
CLASSIFIER_SCHEMA = {"city": "string", "age": "int", "income": "float"}


# scikit-learn models score through compiled plans (scorer.sklearn_plan): labels equal, numbers within 1e-12.
PLAN_CONTRACT: dict[str, Any] = {"check_exact": False, "rtol": 1e-12, "atol": 1e-12, "check_dtype": False}

def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "city": rng.choice(["oslo", "lima", "pune"], n),
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50.0, 12.0, n).round(3),
    })


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """Rows none of the models was trained on, one with a city never seen in training."""
    df = _frame(40, seed=2)
    df.loc[3, "city"] = "quito"
    return df


@pytest.fixture(scope="module")
def estimators() -> dict[str, Any]:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = _frame(200, seed=1)
    labels = np.where(train["income"] + (train["city"] == "oslo") * 8 > 52, "high", "low")
    classifier = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city"]), remainder="passthrough"),
        LogisticRegression(max_iter=500),
    ).fit(train, labels)
    numeric = train[["age", "income"]]
    regressor = Ridge().fit(numeric, numeric["income"] * 2 - numeric["age"])
    return {"classifier": classifier, "regressor": regressor, "train": train}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, estimators: dict[str, Any]) -> dict[str, Path]:
    """MLflow model directories, written by mlflow.sklearn / mlflow.pyfunc."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature

    root = tmp_path_factory.mktemp("mlflow-models")
    classifier, regressor, train = estimators["classifier"], estimators["regressor"], estimators["train"]
    example = train.head(3)
    signature = infer_signature(train, classifier.predict(train))
    reqs = ["scikit-learn", "pandas"]  # given, so MLflow does not infer them in a subprocess (slow)
    out: dict[str, Path] = {}
    # MLflow's default format (skops) with the requirements MLflow infers itself: as log_model writes it.
    out["skops"] = root / "skops"
    mlflow.sklearn.save_model(classifier, out["skops"], signature=signature, input_example=example)
    for fmt in ("pickle", "cloudpickle"):
        out[fmt] = root / fmt
        mlflow.sklearn.save_model(classifier, out[fmt], serialization_format=fmt, signature=signature,
                                  input_example=example, pip_requirements=reqs)
    out["bare"] = root / "bare"  # no signature, no input example
    mlflow.sklearn.save_model(classifier, out["bare"], serialization_format="pickle", pip_requirements=reqs)
    numeric = train[["age", "income"]]
    out["regressor"] = root / "regressor"
    mlflow.sklearn.save_model(regressor, out["regressor"], serialization_format="cloudpickle",
                              signature=infer_signature(numeric, regressor.predict(numeric)),
                              input_example=numeric.head(2), pip_requirements=reqs)
    # A custom pyfunc whose class lives in a code_paths module (the way MLflow ships custom code).
    code = root / "src"
    code.mkdir()
    (code / "scaled_sum.py").write_text(textwrap.dedent("""
        import mlflow.pyfunc
        import pandas as pd

        class ScaledSum(mlflow.pyfunc.PythonModel):
            def __init__(self, factor):
                self.factor = factor

            def predict(self, context, model_input, params=None):
                return pd.DataFrame({"total": (model_input["age"] + model_input["income"]) * self.factor})
    """))
    sys.path.insert(0, str(code))
    try:
        import scaled_sum

        out["pyfunc"] = root / "pyfunc"
        mlflow.pyfunc.save_model(out["pyfunc"], python_model=scaled_sum.ScaledSum(3.0),
                                 code_paths=[str(code / "scaled_sum.py")],
                                 signature=infer_signature(numeric), input_example=numeric.head(2),
                                 pip_requirements=["pandas"])
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("scaled_sum", None)
    return out


@pytest.fixture(scope="module")
def no_mlflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment for subprocesses in which ``import mlflow`` fails."""
    shadow = tmp_path_factory.mktemp("no-mlflow")
    (shadow / "mlflow").mkdir()
    (shadow / "mlflow" / "__init__.py").write_text('raise ImportError("No module named mlflow (hidden by the test)")\n')
    return {"PYTHONPATH": str(shadow)}


def _info(bundle: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")} | (env or {})
    return subprocess.run([str(SCORER), "info", str(bundle), "--log-level", "error"], capture_output=True, text=True,
                          env=full, timeout=120, check=False)


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _expected(estimator: Any, df: pd.DataFrame) -> pd.DataFrame:
    if not hasattr(estimator, "predict_proba"):
        return pd.DataFrame({"prediction": estimator.predict(df)})
    proba = estimator.predict_proba(df)
    return pd.DataFrame({"prediction": estimator.predict(df),
                         **{f"probability_{c}": proba[:, i] for i, c in enumerate(estimator.classes_)}})


# --- sklearn flavor -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["skops", "pickle", "cloudpickle"])
def test_sklearn_formats_score_like_the_estimator(models: dict[str, Path], estimators: dict[str, Any],
                                                  rows: pd.DataFrame, fmt: str) -> None:
    mlmodel = (models[fmt] / "MLmodel").read_text()
    assert f"serialization_format: {fmt}" in mlmodel
    scorer = Scorer.load(models[fmt])
    assert scorer.bundle.mlflow is not None and scorer.bundle.mlflow.loader == "sklearn"
    assert scorer.schema is not None and scorer.schema.as_json() == [{"name": n, "type": t} for n, t in CLASSIFIER_SCHEMA.items()]
    assert scorer.output_columns == ["prediction", "probability_high", "probability_low"]
    expected = _expected(estimators["classifier"], rows)
    pd.testing.assert_frame_equal(scorer.score(rows), expected, **PLAN_CONTRACT)
    assert scorer.metadata()["scoring"]["path"] == "plan"  # the pipeline compiled, verified, scored by its plan
    assert scorer.bundle.name == fmt  # the folder's name
    example = json.loads((models[fmt] / "input_example.json").read_text())
    assert scorer.bundle.manifest.sample_input == {"columns": example["columns"], "data": example["data"]}


def test_regressor(models: dict[str, Path], estimators: dict[str, Any], rows: pd.DataFrame) -> None:
    scorer = Scorer.load(models["regressor"])
    assert scorer.schema is not None and scorer.schema.as_json() == [{"name": "age", "type": "int"},
                                                                     {"name": "income", "type": "float"}]
    assert scorer.output_columns == ["prediction"]
    got = scorer.score(rows)  # the city column is not in the signature: dropped before the model
    np.testing.assert_allclose(got["prediction"].to_numpy(), estimators["regressor"].predict(rows[["age", "income"]]),
                               rtol=1e-12, atol=1e-12)


def test_without_signature_the_schema_is_inferred_from_the_estimator(models: dict[str, Path], estimators: dict[str, Any],
                                                                     rows: pd.DataFrame) -> None:
    scorer = Scorer.load(models["bare"])
    assert scorer.bundle.manifest.input_schema is None and scorer.bundle.manifest.sample_input is None
    assert scorer.schema is not None and [c["name"] for c in scorer.schema.as_json()] == list(CLASSIFIER_SCHEMA)
    pd.testing.assert_frame_equal(scorer.score(rows), _expected(estimators["classifier"], rows), **PLAN_CONTRACT)


def test_the_input_example_is_scored_at_load(models: dict[str, Path], tmp_path: Path) -> None:
    """The warm-up scores the input example: one the schema refuses fails the load."""
    broken = _copy(models["pickle"], tmp_path / "broken-example")
    example = json.loads((broken / "input_example.json").read_text())
    example["data"][1][example["columns"].index("age")] = "forty"
    (broken / "input_example.json").write_text(json.dumps(example))
    with pytest.raises(BundleCodeError, match="MLmodel input example failed.*age"):
        Scorer.load(broken)


def test_mlflow_pins_are_not_required_when_loaded_natively(models: dict[str, Path], tmp_path: Path) -> None:
    """requirements.txt pins mlflow; the sklearn flavor loads without it, so those pins are not checked,
    while any other unmet pin still fails the check (and a pyfunc model needs its mlflow pin met)."""
    native = _copy(models["skops"], tmp_path / "native")
    reqs = (native / "requirements.txt").read_text()
    assert "mlflow==" in reqs and "skops" in reqs  # as MLflow inferred them
    (native / "requirements.txt").write_text(reqs + "\nmlflow==0.0.1\nmlflow-skinny==0.0.1\nmlflow_tracing==0.0.1\n")
    check_requirements(open_bundle(native))
    (native / "requirements.txt").write_text(reqs + "\nmlflow==0.0.1\nscikit-learn==0.0.1\n")
    with pytest.raises(RequirementsError, match=r"1 requirement\(s\) not met.*scikit-learn==0\.0\.1 \(installed"):
        check_requirements(open_bundle(native))
    pyfunc = _copy(models["pyfunc"], tmp_path / "pyfunc")
    (pyfunc / "requirements.txt").write_text("mlflow==0.0.1\n")
    # Without mlflow itself, its pin is checked against mlflow-skinny (what scorer[mlflow] installs).
    with pytest.raises(RequirementsError, match=r"mlflow(-skinny)?==0\.0\.1 \(installed"):
        check_requirements(open_bundle(pyfunc))


def test_zipped_loads_the_same(models: dict[str, Path], estimators: dict[str, Any], rows: pd.DataFrame,
                               tmp_path: Path) -> None:
    """Zipped with its files at the root, or as the folder itself: same digest, same predictions."""
    folder = models["skops"]
    flat, nested = tmp_path / "flat.zip", tmp_path / "nested.zip"
    with zipfile.ZipFile(flat, "w") as zf, zipfile.ZipFile(nested, "w") as zn:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
                zn.write(path, f"model/{path.relative_to(folder).as_posix()}")
    digest = open_bundle(folder).digest
    for archive in (flat, nested):
        scorer = Scorer.load(archive)
        assert scorer.bundle.digest == digest
        assert scorer.bundle.mlflow is not None
        pd.testing.assert_frame_equal(scorer.score(rows), _expected(estimators["classifier"], rows), **PLAN_CONTRACT)
        scorer.close()


def test_native_flavor_loads_without_mlflow(models: dict[str, Path], no_mlflow: dict[str, str]) -> None:
    """The sklearn flavor (skops and cloudpickle) loads in a process where ``import mlflow`` fails."""
    for fmt in ("skops", "cloudpickle"):
        result = _info(models[fmt], no_mlflow)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["input_schema"] == [{"name": n, "type": t} for n, t in CLASSIFIER_SCHEMA.items()]


# --- python_function flavor -----------------------------------------------------------------------


def test_custom_pyfunc_is_called_through_mlflow(models: dict[str, Path], rows: pd.DataFrame) -> None:
    scorer = Scorer.load(models["pyfunc"])
    assert scorer.bundle.mlflow is not None and scorer.bundle.mlflow.loader == "pyfunc"
    assert scorer.output_columns == ["total"]
    got = scorer.score(rows)
    np.testing.assert_allclose(got["total"].to_numpy(), (rows["age"] + rows["income"]).to_numpy() * 3.0, rtol=0, atol=0)


def test_custom_pyfunc_without_mlflow_names_the_extra(models: dict[str, Path], no_mlflow: dict[str, str]) -> None:
    result = _info(models["pyfunc"], no_mlflow)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "python_function model (loader_module mlflow.pyfunc.model) needs MLflow" in lines[0]
    assert "pip install 'scorer[mlflow]'" in lines[0]


# --- bad MLmodel files: exit 3, one line ----------------------------------------------------------


def _one_line_exit_3(bundle: Path, *expected: str, env: dict[str, str] | None = None) -> None:
    result = _info(bundle, env)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_bad_mlflow_directories_exit_3_with_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    h2o = tmp_path / "h2o-model"
    h2o.mkdir()
    (h2o / "model.h2o").mkdir()
    (h2o / "MLmodel").write_text("flavors:\n  h2o:\n    data: model.h2o\n    h2o_version: 3.46.0.6\n"
                                 "  python_function:\n    loader_module: mlflow.h2o\n    data: model.h2o\n")
    _one_line_exit_3(h2o, "h2o-model: MLflow flavor(s) [h2o] cannot be loaded;",
                     "scorer loads sklearn, spark and python_function (with scorer[mlflow]) models")

    tensor = _copy(models["pickle"], tmp_path / "tensor")
    mlmodel = (tensor / "MLmodel").read_text()
    start = mlmodel.index("  inputs: ")
    end = mlmodel.index("  outputs: ")
    spec = '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}]'
    (tensor / "MLmodel").write_text(mlmodel[:start] + f"  inputs: '{spec}'\n" + mlmodel[end:])
    _one_line_exit_3(tensor, "MLmodel: the signature is tensor-based")

    missing = _copy(models["pickle"], tmp_path / "missing")
    (missing / "model.pkl").unlink()
    _one_line_exit_3(missing, "model.pkl not found (the MLmodel sklearn flavor's pickled_model)")

    shadow = tmp_path / "no-skops"  # skops installed (requirements.txt is met) but not importable
    (shadow / "skops").mkdir(parents=True)
    (shadow / "skops" / "__init__.py").write_text('raise ImportError("No module named skops (hidden by the test)")\n')
    # (a plan cache of its own: a stored plan of the same model would score it without unpickling it at all)
    _one_line_exit_3(models["skops"], "model.skops: the model is saved in the skops format", "pip install skops",
                     env={"PYTHONPATH": str(shadow), "SCORER_PLAN_CACHE": str(tmp_path / "plans")})


# --- MLmodel parsing, on hand-written files (no MLflow) --------------------------------------------


def _mlmodel(tmp_path: Path, inputs: list[dict[str, Any]] | None, *, flavors: str | None = None) -> Path:
    import pickle

    from sklearn.dummy import DummyRegressor

    root = tmp_path / "model"
    root.mkdir()
    with open(root / "model.pkl", "wb") as fh:
        pickle.dump(DummyRegressor().fit([[0.0], [1.0]], [0.0, 1.0]), fh)
    text = flavors or ("flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: pickle\n"
                       "  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n")
    if inputs is not None:
        text += f"signature:\n  inputs: '{json.dumps(inputs)}'\n  outputs: null\n"
    (root / "MLmodel").write_text(text)
    return root


@pytest.mark.fast
def test_signature_types_map_to_schema_types(tmp_path: Path) -> None:
    kinds = ["double", "float", "long", "integer", "boolean", "string", "binary", "datetime", "any"]
    root = _mlmodel(tmp_path, [{"type": k, "name": f"c_{k}", "required": True} for k in kinds])
    assert open_bundle(root).manifest.input_schema == {
        "c_double": "float", "c_float": "float", "c_long": "int", "c_integer": "int", "c_boolean": "bool",
        "c_string": "string", "c_binary": "any", "c_datetime": "any", "c_any": "any",
    }


@pytest.mark.fast
@pytest.mark.parametrize(("inputs", "message"), [
    ([{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}], "the signature is tensor-based"),
    ([{"type": "double"}], "signature input 0 has no column name"),
    ([{"type": "array", "items": {"type": "double"}, "name": "v"}], "signature column 'v' has type 'array'"),
    ([{"type": "sparkml_vector", "name": "features"}], "signature column 'features' has type 'sparkml_vector'"),
])
def test_unmappable_signatures_are_refused(tmp_path: Path, inputs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(BundleLayoutError, match=message):
        open_bundle(_mlmodel(tmp_path, inputs))


@pytest.mark.fast
def test_other_flavors_and_bad_formats_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    root = _mlmodel(tmp_path / "a", None, flavors="flavors:\n  pytorch:\n    model_data: data\n")
    with pytest.raises(BundleLayoutError, match=r"MLflow flavor\(s\) \[pytorch\] cannot be loaded"):
        open_bundle(root)
    (tmp_path / "b").mkdir()
    root = _mlmodel(tmp_path / "b", None, flavors="flavors:\n  sklearn:\n    pickled_model: model.pkl\n"
                                                  "    serialization_format: joblib-ish\n")
    with pytest.raises(BundleLayoutError, match="unknown sklearn serialization_format 'joblib-ish'"):
        Scorer.load(root)
    (tmp_path / "c").mkdir()
    root = _mlmodel(tmp_path / "c", None, flavors="flavors: [1, 2\n")
    with pytest.raises(BundleLayoutError, match="MLmodel: not valid YAML"):
        open_bundle(root)


@pytest.mark.fast
def test_records_input_example_becomes_the_sample(tmp_path: Path) -> None:
    root = _mlmodel(tmp_path, [{"type": "double", "name": "x"}])
    (root / "MLmodel").write_text((root / "MLmodel").read_text() + "saved_input_example_info:\n"
                                  "  artifact_path: input_example.json\n  type: json_object\n")
    (root / "input_example.json").write_text('[{"x": 1.5}, {"x": 2.5}]')
    bundle = open_bundle(root)
    assert bundle.manifest.sample_input == {"columns": ["x"], "data": [[1.5], [2.5]]}
    scorer = Scorer.load(root)
    assert scorer.score(pd.DataFrame({"x": [3.0]}))["prediction"].tolist() == [0.5]


# --- spark flavor ---------------------------------------------------------------------------------


def test_spark_flavor_equals_spark_transform(tmp_path: Path, build_module: Any) -> None:
    import mlflow.spark
    from mlflow.models import infer_signature
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from scorer.jvm import spark_session

    spark = spark_session()
    features = [c["name"] for c in json.loads((SPARK_PIPELINE.parent.parent / "manifest.json").read_text())["input_schema"]]
    df = build_module.make_tabular_frame(120, seed=31)[features].reset_index(drop=True)
    pipeline = PipelineModel.load(str(SPARK_PIPELINE))
    target = tmp_path / "spark-model"
    mlflow.spark.save_model(pipeline, str(target), signature=infer_signature(df), pip_requirements=["pyspark"])
    assert (target / "sparkml" / "metadata").is_dir()

    scorer = Scorer.load(target)  # auto: natively (no input example saved, so nothing to verify it on)
    assert scorer.bundle.mlflow is not None and scorer.bundle.mlflow.loader == "spark"
    assert scorer.metadata()["scoring"]["path"] == "native", scorer.metadata()["scoring"]
    got = scorer.score(df)
    on_spark = Scorer.load(target, LoadOptions(spark_scoring="spark")).score(df)

    labels = next(s.labelsArray[0] for s in pipeline.stages if type(s).__name__ == "StringIndexerModel"
                  and s.getOutputCol() == pipeline.stages[-1].getLabelCol())
    schema = ", ".join(f"`{c}` {'string' if df[c].dtype == object else 'double'}" for c in df.columns)
    own = pipeline.transform(spark.createDataFrame(df, schema=schema))
    ref = own.select(F.col("prediction"), vector_to_array("probability").alias("p")).toPandas()
    expected = pd.DataFrame({"prediction": [labels[int(i)] for i in ref["prediction"]],
                             **{f"probability_{c}": [p[i] for p in ref["p"]] for i, c in enumerate(labels)}})
    pd.testing.assert_frame_equal(on_spark, expected, check_exact=True, check_dtype=False)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-12, check_dtype=False)


# --- served ---------------------------------------------------------------------------------------


def test_served_predict_answers_like_in_process(models: dict[str, Path], estimators: dict[str, Any],
                                                 rows: pd.DataFrame, live_server: Any) -> None:
    expected = _expected(estimators["classifier"], rows)
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    with live_server(models["skops"]) as server:
        response = requests.post(server.url + "/predict", json=body, timeout=30)
        assert response.status_code == 200, response.text
        got = pd.DataFrame(response.json()["predictions"])
        metadata = requests.get(server.url + "/metadata", timeout=10).json()
    assert metadata["name"] == "skops" and metadata["digest"] == f"sha256:{open_bundle(models['skops']).digest}"
    assert metadata["mlflow"]["flavor"] == "sklearn" and metadata["mlflow"]["mlflow_version"], metadata["mlflow"]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, check_dtype=False)
