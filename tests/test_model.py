"""Loading real bundles with scorer.core.Scorer: default model, custom code contract, outputs, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

import scorer
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.errors import (
    BundleCodeError,
    BundleLayoutError,
    ModelError,
    ModelOutputError,
    RequirementsError,
    SchemaError,
)

pytestmark = pytest.mark.fast

X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [5.0, 3.0, 4.0, 1.0, 2.0, 0.0]})
LABELS = ["ham", "ham", "ham", "spam", "spam", "spam"]


@pytest.fixture(scope="module")
def classifier() -> LogisticRegression:
    return LogisticRegression().fit(X, LABELS)


def custom(body: str, *, header: str = "") -> str:
    """custom_preprocess.py source: imports, optional header lines, then a class with ``body``."""
    return (
        "import numpy as np\nimport pandas as pd\nimport scorer\n" + header
        + "\nclass CustomPreprocessor(scorer.CustomPreprocessor):\n" + body
    )


ECHO = custom("    def predict(self, df):\n        return df['a'].to_numpy() * 2\n")


# --- default model ---------------------------------------------------------------------------


def test_default_classifier_gives_prediction_and_probabilities(bundle_factory, classifier) -> None:
    """One pickled classifier and no code: prediction plus probability_<class> per class."""
    s = Scorer.load(bundle_factory("clf", artifacts={"model.pkl": classifier}))
    out = s.score(X)
    assert list(out.columns) == ["prediction", "probability_ham", "probability_spam"]
    assert out["prediction"].tolist() == classifier.predict(X).tolist()
    np.testing.assert_allclose(out[["probability_ham", "probability_spam"]].to_numpy(), classifier.predict_proba(X))
    assert s.output_columns == ["prediction", "probability_ham", "probability_spam"]


def test_default_classifier_schema_is_inferred(bundle_factory, classifier) -> None:
    """The default model's schema comes from feature_names_in_: extra columns dropped, missing ones named."""
    s = Scorer.load(bundle_factory("clf", artifacts={"model.pkl": classifier}))
    assert s.schema is not None and s.schema.columns == {"a": "float", "b": "float"}
    shuffled = X[["b", "a"]].assign(note="x")
    assert s.score(shuffled)["prediction"].tolist() == classifier.predict(X).tolist()
    with pytest.raises(SchemaError, match="b"):
        s.score(X[["a"]])


def test_default_classifier_not_argmax_uses_predict(bundle_factory) -> None:
    """For a classifier outside the argmax list (k-NN), prediction is the estimator's own predict()."""
    knn = KNeighborsClassifier(n_neighbors=3).fit(X, LABELS)
    out = Scorer.load(bundle_factory("knn", artifacts={"model.joblib": knn})).score(X)
    assert out["prediction"].tolist() == knn.predict(X).tolist()
    np.testing.assert_allclose(out[["probability_ham", "probability_spam"]].to_numpy(), knn.predict_proba(X))


class LogisticRegression_(LogisticRegression):
    """A user's subclass with its own decision threshold (named like sklearn's class when pickled)."""

    def predict(self, X):  # type: ignore[no-untyped-def]
        return np.where(self.predict_proba(X)[:, 1] > 0.9, self.classes_[1], self.classes_[0])


LogisticRegression_.__name__ = LogisticRegression_.__qualname__ = "LogisticRegression"


class RandomForestClassifier:
    """Not scikit-learn's at all: only its name is, and its predict() is its own rule."""

    classes_ = np.array(["ham", "spam"])

    def predict_proba(self, X):  # type: ignore[no-untyped-def]
        p = np.clip(np.asarray(X["a"], dtype=float) / 5.0, 0, 1)
        return np.column_stack([1 - p, p])

    def predict(self, X):  # type: ignore[no-untyped-def]
        return np.where(np.asarray(X["a"]) >= 5.0, "spam", "ham")


@pytest.mark.parametrize("kind", ["sklearn subclass with a threshold", "unrelated class with a sklearn name"])
def test_argmax_shortcut_is_chosen_by_real_type_not_name(bundle_factory, kind: str) -> None:
    """The one-call shortcut (prediction = argmax of predict_proba) is taken only when predict() really is
    scikit-learn's argmax-consistent predict: a class merely named LogisticRegression or
    RandomForestClassifier, or a subclass overriding predict, gets its own predict()."""
    import sys

    original = LogisticRegression
    sys.modules[__name__].LogisticRegression = LogisticRegression_  # type: ignore[attr-defined]  # for pickle
    try:
        model = (LogisticRegression_().fit(X, LABELS) if kind.startswith("sklearn") else RandomForestClassifier())
        expected = model.predict(X).tolist()
        argmax = model.classes_[model.predict_proba(X).argmax(axis=1)].tolist()
        assert expected != argmax  # the data tells the two rules apart
        out = Scorer.load(bundle_factory("lookalike", artifacts={"model.pkl": model})).score(X)
    finally:
        sys.modules[__name__].LogisticRegression = original  # type: ignore[attr-defined]
    assert out["prediction"].tolist() == expected
    np.testing.assert_allclose(out[["probability_ham", "probability_spam"]].to_numpy(), model.predict_proba(X))


def test_sklearn_classifiers_keep_the_one_call_shortcut(bundle_factory, classifier) -> None:
    """scikit-learn's own LogisticRegression (bare and in a Pipeline) still answers with one model call
    when scikit-learn scores it (``--scoring-plan off``; by default it compiles to a scoring plan)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from scorer.model import DefaultModel

    for model in (classifier, make_pipeline(StandardScaler(), LogisticRegression()).fit(X, LABELS)):
        loaded = Scorer.load(bundle_factory(f"clf{id(model)}", artifacts={"model.pkl": model}),
                             LoadOptions(scoring_plan="off"))
        assert isinstance(loaded.model, DefaultModel) and loaded.model.one_call
        assert loaded.score(X)["prediction"].tolist() == model.predict(X).tolist()


def test_default_regressor_gives_prediction(bundle_factory) -> None:
    """One pickled regressor and no code: a single prediction column equal to predict()."""
    reg = LinearRegression().fit(X, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    s = Scorer.load(bundle_factory("reg", artifacts={"model.pkl": reg}))
    out = s.score(X)
    assert list(out.columns) == ["prediction"]
    np.testing.assert_allclose(out["prediction"].to_numpy(), reg.predict(X))


def test_two_artifacts_without_code_ambiguous(bundle_factory, classifier) -> None:
    """Two model files and no custom code is BundleLayoutError naming both files."""
    root = bundle_factory("two", artifacts={"first.pkl": classifier, "second.joblib": classifier})
    with pytest.raises(BundleLayoutError) as info:
        Scorer.load(root)
    assert "first.pkl" in info.value.message and "second.joblib" in info.value.message


def test_manifest_artifact_picks_one_of_two(bundle_factory, classifier) -> None:
    """manifest "artifact" resolves the ambiguity of two model files."""
    reg = LinearRegression().fit(X, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    root = bundle_factory("two", artifacts={"clf.pkl": classifier, "reg.pkl": reg}, manifest={"artifact": "reg.pkl"})
    assert list(Scorer.load(root).score(X).columns) == ["prediction"]


def test_no_artifacts_no_code(bundle_factory) -> None:
    """A bundle with neither code nor a model file is BundleLayoutError."""
    with pytest.raises(BundleLayoutError, match="no custom_preprocess.py and no model file"):
        Scorer.load(bundle_factory("empty"))


def test_artifact_without_predict(bundle_factory) -> None:
    """A pickled object with no predict method is BundleLayoutError naming the file."""
    with pytest.raises(BundleLayoutError, match=r"model\.pkl.*dict has no predict"):
        Scorer.load(bundle_factory("dict", artifacts={"model.pkl": {"not": "a model"}}))


def test_corrupt_artifact(bundle_factory) -> None:
    """A model file that cannot be unpickled is BundleCodeError naming it."""
    root = bundle_factory("bad", files={"artifacts/model.pkl": "not a pickle"})
    with pytest.raises(BundleCodeError, match=r"model\.pkl"):
        Scorer.load(root)


# --- custom code contract --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import scorer\nclass Model(scorer.CustomPreprocessor):\n    def predict(self, df):\n        return df\n",
         "defines no class CustomPreprocessor"),
        ("class CustomPreprocessor:\n    def predict(self, df):\n        return df\n",
         "must subclass scorer.CustomPreprocessor"),
        ("from scorer import CustomPreprocessor\n", "must subclass scorer.CustomPreprocessor"),
        ("import scorer\nclass CustomPreprocessor(scorer.CustomPreprocessor):\n    def load(self, d):\n        pass\n",
         "does not implement predict"),
    ],
    ids=["no-class", "not-subclass", "base-class-itself", "no-predict"],
)
def test_custom_class_contract(bundle_factory, source: str, message: str) -> None:
    """A custom_preprocess.py that breaks the class contract is BundleLayoutError naming the file."""
    with pytest.raises(BundleLayoutError) as info:
        Scorer.load(bundle_factory("bad", code=source))
    assert "custom_preprocess.py" in info.value.message and message in info.value.message


def test_load_raising_is_bundle_code_error(bundle_factory) -> None:
    """load() raising is BundleCodeError naming custom_preprocess.py and the exception."""
    source = custom(
        "    def load(self, artifacts_dir):\n        raise FileNotFoundError('weights.bin is missing')\n"
        "    def predict(self, df):\n        return df\n"
    )
    with pytest.raises(BundleCodeError) as info:
        Scorer.load(bundle_factory("bad", code=source))
    msg = info.value.message
    assert "custom_preprocess.py" in msg and "FileNotFoundError" in msg and "weights.bin is missing" in msg


def test_import_error_is_bundle_code_error(bundle_factory) -> None:
    """A custom_preprocess.py that fails to import is BundleCodeError naming the file."""
    with pytest.raises(BundleCodeError, match=r"custom_preprocess\.py.*ModuleNotFoundError"):
        Scorer.load(bundle_factory("bad", code="import not_a_module_xyz\n"))


def test_custom_code_at_bundle_root(bundle_factory) -> None:
    """custom_preprocess.py at the bundle root (not in code/) is used."""
    root = bundle_factory("rootcode", files={"custom_preprocess.py": ECHO})
    s = Scorer.load(root)
    assert s.bundle.custom_code() == root / "custom_preprocess.py"
    assert s.score(pd.DataFrame({"a": [1.0, 2.0]}))["prediction"].tolist() == [2.0, 4.0]


def test_custom_code_in_both_places_ambiguous(bundle_factory) -> None:
    """custom_preprocess.py both in code/ and at the root is BundleLayoutError."""
    root = bundle_factory("both", code=ECHO, files={"custom_preprocess.py": ECHO})
    with pytest.raises(BundleLayoutError, match="both"):
        Scorer.load(root)


def helper_bundle(bundle_factory, name: str, tag: str) -> Path:
    """A bundle whose code/first_code.py helper tags every row with ``tag``."""
    source = custom(
        "    def predict(self, df):\n        return pd.Series([tag(v) for v in df['a']], name='tag')\n",
        header="from first_code import tag\n",
    )
    return bundle_factory(name, code=source, files={"code/first_code.py": f"def tag(v):\n    return '{tag}' + str(v)\n"})


def test_helper_import_from_code_dir(bundle_factory) -> None:
    """``from first_code import tag`` resolves to the bundle's code/first_code.py."""
    s = Scorer.load(helper_bundle(bundle_factory, "one", "A"))
    assert s.score(pd.DataFrame({"a": [1]}))["tag"].tolist() == ["A1"]


def test_two_bundles_same_helper_name_do_not_leak(bundle_factory) -> None:
    """Two bundles with different code/first_code.py each use their own; the first still works after the second loads."""
    first = Scorer.load(helper_bundle(bundle_factory, "first", "A"))
    assert first.score(pd.DataFrame({"a": [1]}))["tag"].tolist() == ["A1"]
    second = Scorer.load(helper_bundle(bundle_factory, "second", "B"))
    assert second.score(pd.DataFrame({"a": [1]}))["tag"].tolist() == ["B1"]
    assert first.score(pd.DataFrame({"a": [2]}))["tag"].tolist() == ["A2"]


# --- predict outputs -------------------------------------------------------------------------

OUTPUTS = {
    "named-series": ("pd.Series(df['a'].to_numpy() * 2, name='score')", ["score"]),
    "unnamed-series": ("pd.Series(df['a'].to_numpy() * 2)", ["prediction"]),
    "1d-array": ("df['a'].to_numpy() * 2", ["prediction"]),
    "2d-one-column": ("(df['a'].to_numpy() * 2).reshape(-1, 1)", ["prediction"]),
    "2d-array": ("np.column_stack([df['a'].to_numpy() * 2, df['a'].to_numpy()])", ["prediction_0", "prediction_1"]),
    "list": ("[v * 2 for v in df['a']]", ["prediction"]),
    "list-of-dicts": ("[{'double': v * 2, 'same': v} for v in df['a']]", ["double", "same"]),
    "dataframe-odd-index": (
        "pd.DataFrame({'out': df['a'].to_numpy() * 2}, index=range(100, 100 + len(df)))", ["out"]),
}


@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_predict_output_shapes(bundle_factory, kind: str) -> None:
    """Each supported return type of predict becomes a frame with the documented columns, row-aligned."""
    expr, columns = OUTPUTS[kind]
    source = custom(f"    def predict(self, df):\n        return {expr}\n")
    s = Scorer.load(bundle_factory("out", code=source))
    out = s.score(pd.DataFrame({"a": [1.0, 2.0, 3.0]}))
    assert list(out.columns) == columns
    assert isinstance(out.index, pd.RangeIndex)
    assert out.iloc[:, 0].tolist() == [2.0, 4.0, 6.0]


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        ("df['a'].to_numpy()[:-1]", "2 rows for 3 input rows"),
        ("[1, 2, 3, 4]", "4 rows for 3 input rows"),
        ("42", "scalar"),
        ("np.zeros((3, 2, 2))", "shape"),
    ],
    ids=["too-few", "too-many", "scalar", "3d"],
)
def test_predict_unusable_output(bundle_factory, expr: str, match: str) -> None:
    """Output with the wrong number of rows, a scalar or a 3-d array is ModelOutputError saying which."""
    source = custom(f"    def predict(self, df):\n        return {expr}\n")
    s = Scorer.load(bundle_factory("out", code=source))
    with pytest.raises(ModelOutputError, match=match):
        s.score(pd.DataFrame({"a": [1.0, 2.0, 3.0]}))


def test_predict_raising_is_model_error(bundle_factory) -> None:
    """predict raising is ModelError: its message names the exception class only (the exception's own text
    can quote request data), and the text is kept apart as data_detail for the opt-in."""
    source = custom("    def predict(self, df):\n        raise KeyError('column gone')\n")
    s = Scorer.load(bundle_factory("boom", code=source))
    with pytest.raises(ModelError) as info:
        s.score(pd.DataFrame({"a": [1.0]}))
    assert type(info.value) is ModelError
    assert info.value.message == "model raised KeyError in predict"
    assert "column gone" in info.value.data_detail and "column gone" in info.value.describe(echo=True)
    assert info.value.describe() == info.value.message


def test_preprocess_and_postprocess_hooks(bundle_factory) -> None:
    """preprocess runs before predict, postprocess gets the predictions frame and the preprocessed input."""
    source = custom(
        "    def preprocess(self, df):\n        return df.assign(a=df['a'] + 1)\n"
        "    def predict(self, df):\n        return df['a'].to_numpy()\n"
        "    def postprocess(self, predictions, df):\n        return predictions.assign(seen=df['a'].to_numpy())\n"
    )
    out = Scorer.load(bundle_factory("hooks", code=source)).score(pd.DataFrame({"a": [1.0, 2.0]}))
    assert out.to_dict("list") == {"prediction": [2.0, 3.0], "seen": [2.0, 3.0]}


# --- load-time checks ------------------------------------------------------------------------


def test_unmet_requirement_fails_load(bundle_factory) -> None:
    """An unmet pin in requirements.txt is RequirementsError at load; check_requirements=False skips it."""
    root = bundle_factory("req", code=ECHO, requirements="scikit-learn==0.0.1\n")
    with pytest.raises(RequirementsError, match="scikit-learn==0.0.1"):
        Scorer.load(root)
    Scorer.load(root, LoadOptions(check_requirements=False))


def test_sample_input_scored_at_load(bundle_factory) -> None:
    """The manifest's sample_input is scored at load, which fixes output_columns when none are declared."""
    root = bundle_factory("sample", code=ECHO, manifest={"sample_input": {"columns": ["a"], "data": [[1.0]]}})
    assert Scorer.load(root).output_columns == ["prediction"]


def test_sample_input_failing_fails_load(bundle_factory) -> None:
    """A sample_input the model cannot score is BundleCodeError at load."""
    source = custom("    def predict(self, df):\n        raise ValueError('cannot score this')\n")
    root = bundle_factory("sample", code=source, manifest={"sample_input": {"columns": ["a"], "data": [[1.0]]}})
    with pytest.raises(BundleCodeError, match="cannot score this"):
        Scorer.load(root)


def test_declared_output_columns_must_match(bundle_factory) -> None:
    """Declared output_columns that differ from what the sample produces is BundleLayoutError naming both."""
    root = bundle_factory("sample", code=ECHO, manifest={
        "output_columns": ["score"], "sample_input": {"columns": ["a"], "data": [[1.0]]},
    })
    with pytest.raises(BundleLayoutError) as info:
        Scorer.load(root)
    assert "['prediction']" in info.value.message and "['score']" in info.value.message


def test_metadata(bundle_factory) -> None:
    """metadata() reports name, version, digest, the manifest schema, output columns and scorer version."""
    root = bundle_factory("meta", code=ECHO, manifest={
        "name": "doubler", "version": "1.2.3", "input_schema": {"a": "float"},
        "sample_input": {"columns": ["a"], "data": [[1.0]]},
    })
    s = Scorer.load(root)
    meta = s.metadata()
    assert meta["name"] == "doubler" and meta["version"] == "1.2.3"
    assert meta["digest"] == "sha256:" + s.bundle.digest and len(s.bundle.digest) == 64
    assert meta["input_schema"] == [{"name": "a", "type": "float"}]
    assert meta["output_columns"] == ["prediction"]
    assert meta["scorer_version"] == scorer.__version__
    assert meta["custom_code"] is True


def test_metadata_schema_from_class_attribute(bundle_factory) -> None:
    """Without a manifest, the custom class's input_schema is the schema and the folder name is the name."""
    source = custom("    input_schema = {'a': 'int'}\n    def predict(self, df):\n        return df['a']\n")
    s = Scorer.load(bundle_factory("plain", code=source))
    meta = s.metadata()
    assert meta["name"] == "plain"
    assert meta["input_schema"] == [{"name": "a", "type": "int"}]
    assert s.score(pd.DataFrame({"a": ["7"]}))["a"].tolist() == [7]
