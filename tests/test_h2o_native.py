"""H2O GBM/DRF MOJOs scored natively (:mod:`scorer.h2o_native`) against h2o-genmodel itself.

The MOJOs in tests/fixtures/h2o/ were trained by ``scripts/h2o-mojo-fixtures`` (h2o 3.46.0.6, the
genmodel of the Sparkling Water scoring jar): GBM and DRF, binomial, multinomial and regression,
numeric-only and with categoricals (one of 150 levels, so large bitsets), NAs in training, several
distributions, DRF with and without binomial_double_trees, balance_classes, a DRF whose tied class
probabilities go through genmodel's tie-break. Each is scored on random rows (fixed seeds) with
NaN, None, unseen levels, non-numbers, values exactly on (and just below) the trees' thresholds and
extreme magnitudes, natively and by genmodel in the JVM of this process: through
``scorer.h2o_mojo.MojoModel`` (genmodel's ``PredictCsv`` over ``EasyPredictModelWrapper``), and
through ``score0`` on the raw rows for ±inf (the CSV path reads those as missing). Labels must be
equal, probabilities and regression values within 1e-12 relative.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scorer.h2o_native import NativeMojo, Unsupported
from scorer.h2o_native.trees import KIND_NUMERIC

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "h2o"
SUPPORTED = sorted(p for p in FIXTURES.glob("*.zip") if not p.name.startswith("unsupported_"))
EXAMPLE = REPO / "bundles" / "h2o" / "artifacts" / "gbm.zip"
REFERENCE = REPO / "bundles" / "_reference" / "h2o_predictions.csv"
ROWS = 600
RTOL = 1e-12


def native(path: Path) -> NativeMojo:
    model = NativeMojo(path)
    model.load(path.parent)
    return model


def thresholds(model: NativeMojo, column: int) -> np.ndarray:
    """The float32 thresholds the MOJO's trees compare ``column`` with (widened to float64)."""
    forest = model._forest
    mask = (forest.kind == KIND_NUMERIC) & ~forest.na_vs_rest & (forest.col == column) & (forest.left != np.arange(
        forest.col.size))
    return np.unique(forest.threshold[mask])


def random_frame(model: NativeMojo, seed: int, rows: int = ROWS, *, infinities: bool = False) -> pd.DataFrame:
    """Random rows for ``model``'s features: see the module docstring."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for j, name in enumerate(model.features):
        domain = model.mojo.domains[j]
        if domain is None:
            cuts = thresholds(model, j)
            pool = [rng.normal(0, 1, 64), rng.normal(0, 100, 32), cuts, np.nextafter(cuts, -np.inf),
                    np.array([0.0, -0.0, 1e300, -1e300, 1e-300, -5e-324, 3.4e38, -3.4e38, 1e6, -1e6])]
            if infinities:
                pool.append(np.array([np.inf, -np.inf]))
            values: list[Any] = list(rng.choice(np.concatenate(pool), rows))
            for i in rng.choice(rows, rows // 8, replace=False):
                values[i] = np.nan
            if not infinities:  # non-numbers arrive as strings in an object column: missing for both
                for i in rng.choice(rows, rows // 40, replace=False):
                    values[i] = "not a number"
            data[name] = values
        else:
            levels = list(domain) + ["unseen level", "zz", domain[0].upper() + "?"]
            column: list[Any] = [levels[i] for i in rng.integers(0, len(levels), rows)]
            for i in rng.choice(rows, rows // 10, replace=False):
                column[i] = None
            data[name] = column
    return pd.DataFrame(data)


def assert_same(got: pd.DataFrame, expected: pd.DataFrame, classifier: bool) -> None:
    assert list(got.columns) == list(expected.columns)
    if classifier:
        assert got["prediction"].dtype == pd.DataFrame({"p": np.array(["a"], dtype=object)})["p"].dtype
        assert list(got["prediction"]) == list(expected["prediction"])
        for c in got.columns[1:]:
            assert got[c].dtype == np.float64
            np.testing.assert_allclose(got[c], expected[c], rtol=RTOL, atol=0, err_msg=c)
    else:
        assert got["prediction"].dtype == np.float64
        np.testing.assert_allclose(got["prediction"], expected["prediction"], rtol=RTOL, atol=0)


@pytest.fixture(scope="module")
def jvm() -> Any:
    """The JVM of this process's SparkSession, with hex.genmodel on its classpath."""
    from scorer.jvm import spark_session

    return spark_session().sparkContext._jvm


def _csv_field(value: Any, numeric: bool) -> str:
    """One field as genmodel's PredictCsv (opencsv, backslash escapes) reads it: missing is an empty
    field, a number its shortest repr, a string quoted with backslash-escaped quotes/backslashes."""
    if numeric:
        number = pd.to_numeric(pd.Series([value], dtype=object), errors="coerce").iloc[0]
        return "" if pd.isna(number) else repr(float(number))
    if value is None:
        return ""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def genmodel_predict(jvm: Any, path: Path, frame: pd.DataFrame, tmp: Path, classes: list[str] | None) -> pd.DataFrame:
    """genmodel's own batch scorer (``hex.genmodel.tools.PredictCsv``, which reads each row through
    ``EasyPredictModelWrapper`` with unknown levels and invalid numbers as NA) on ``frame``."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    model = jvm.hex.genmodel.MojoModel.load(str(path))
    names = list(model.getNames())[: model.getNumCols()]
    numeric = [model.getDomainValues(i) is None for i in range(len(names))]
    source, target = tmp / f"{path.stem}.csv", tmp / f"{path.stem}.out.csv"
    lines = [",".join(names)] + [",".join(_csv_field(v, numeric[i]) for i, v in enumerate(row))
                                 for row in frame[names].itertuples(index=False)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["--mojo", str(path), "--input", str(source), "--output", str(target), "--decimal"]
    array = gateway.new_array(gateway.jvm.java.lang.String, len(args))
    for i, arg in enumerate(args):
        array[i] = arg
    jvm.hex.genmodel.tools.PredictCsv.make(array, model).run()
    out = pd.read_csv(target, dtype={"predict": str}, keep_default_na=False)
    if classes is None:
        return pd.DataFrame({"prediction": out["predict"].astype("float64")})
    result = {"prediction": out["predict"].to_numpy(dtype=object)}
    return pd.DataFrame(result | {f"probability_{c}": out.iloc[:, i + 1].astype("float64")
                                  for i, c in enumerate(classes)})


def score0(jvm: Any, path: Path, x: np.ndarray, classifier: bool, classes: list[str] | None) -> pd.DataFrame:
    """genmodel's ``MojoModel.score0`` on raw rows (doubles as :meth:`NativeMojo.rows` maps them)."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    model = jvm.hex.genmodel.MojoModel.load(str(path))
    width = int(model.getPredsSize())
    out = []
    for row in x:
        data = gateway.new_array(gateway.jvm.double, len(row))
        for i, v in enumerate(row):
            data[i] = float(v)
        preds = model.score0(data, gateway.new_array(gateway.jvm.double, width))
        out.append([preds[i] for i in range(width)])
    table = np.array(out)
    if not classifier:
        return pd.DataFrame({"prediction": table[:, 0]})
    assert classes is not None
    frame = {"prediction": [classes[int(i)] for i in table[:, 0]]}
    return pd.DataFrame(frame | {f"probability_{c}": table[:, i + 1] for i, c in enumerate(classes)})


@pytest.mark.parametrize("path", SUPPORTED, ids=[p.stem for p in SUPPORTED])
def test_fixture_equals_genmodel(path: Path, jvm: Any, tmp_path: Path) -> None:
    """Native predictions of a fixture MOJO equal genmodel's on the same random rows."""
    model = native(path)
    frame = random_frame(model, seed=len(path.stem) * 7919 + sum(map(ord, path.stem)))
    got = model.predict(frame)
    assert len(got) == ROWS
    assert_same(got, genmodel_predict(jvm, path, frame, tmp_path, model.classes), model.classes is not None)


@pytest.mark.parametrize("path", [*SUPPORTED, EXAMPLE], ids=[*(p.stem for p in SUPPORTED), "example"])
def test_infinities_equal_genmodel_score0(path: Path, jvm: Any) -> None:
    """±inf are numbers for genmodel's trees: compared with ``score0`` on the raw doubles."""
    model = native(path)
    frame = random_frame(model, seed=11, rows=30, infinities=True)
    x = model.rows(frame)
    expected = score0(jvm, path, x, model.classes is not None, model.classes)
    assert_same(model.predict(frame), expected, model.classes is not None)


def test_example_bundle_equals_h2o_and_genmodel(jvm: Any, tmp_path: Path) -> None:
    """bundles/h2o's GBM: equal to H2O's own in-cluster predictions recorded at build time, and to
    genmodel on random rows."""
    model = native(EXAMPLE)
    reference = pd.read_csv(REFERENCE, keep_default_na=False, na_values=[""])
    inputs = reference[model.features].astype({c: object for c in model.features if reference[c].dtype == object})
    got = model.predict(inputs.where(inputs.notna(), None))
    assert list(got["prediction"]) == list(reference["predict"].astype(str))
    for c in ("no", "yes"):
        np.testing.assert_allclose(got[f"probability_{c}"], reference[c], rtol=0, atol=1e-12)
    frame = random_frame(model, seed=5)
    assert_same(model.predict(frame), genmodel_predict(jvm, EXAMPLE, frame, tmp_path, model.classes), True)


def test_tie_break_is_exercised() -> None:
    """The ties fixture really has rows whose best class probability is tied (so genmodel's
    prior-weighted tie-break is what the comparison with genmodel checks), and not every tied row
    gets the first tied class."""
    model = native(FIXTURES / "drf_multinomial_ties.zip")
    frame = random_frame(model, seed=len("drf_multinomial_ties") * 7919 + sum(map(ord, "drf_multinomial_ties")))
    got = model.predict(frame)
    probs = got[[f"probability_{c}" for c in model.classes or []]].to_numpy()
    tied = (probs == probs.max(axis=1, keepdims=True)).sum(axis=1) > 1
    assert tied.sum() >= 20
    first = np.asarray(model.classes)[np.argmax(probs, axis=1)]
    assert (got["prediction"].to_numpy()[tied] != first[tied]).any()



@pytest.mark.fast
@pytest.mark.parametrize(("name", "reason"), [
    ("unsupported_glm", "algorithm 'glm' is not scored natively"),
    ("unsupported_gbm_offset", "offset column (off)"),
    ("unsupported_gbm_weights", "columns besides the features and the response"),
    ("unsupported_gbm_calibrated", "calibration (platt)"),
])
def test_unsupported_fixtures_are_refused(name: str, reason: str) -> None:
    """MOJOs the native scorer cannot reproduce are refused at load, naming why."""
    with pytest.raises(Unsupported, match=reason.replace("(", r"\(").replace(")", r"\)")):
        native(FIXTURES / f"{name}.zip")


def _rewrite_ini(source: Path, target: Path, old: str, new: str) -> Path:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "model.ini":
                text = data.decode()
                assert old in text
                data = text.replace(old, new).encode()
            zout.writestr(info, data)
    return target


@pytest.mark.fast
@pytest.mark.parametrize(("old", "new", "reason"), [
    ("mojo_version = 1.40", "mojo_version = 1.50", "gbm MOJO version 1.50 is not scored natively"),
    ("mojo_version = 1.40", "mojo_version = 1.30", "gbm MOJO version 1.30 is not scored natively"),
    ("distribution = gaussian", "distribution = custom", "GBM distribution 'custom'"),
    ("link_function = identity", "link_function = ologlog", "GBM link function 'ologlog'"),
    ("_genmodel_encoding = AUTO", "_genmodel_encoding = OneHotExplicit", "categorical encoding OneHotExplicit"),
])
def test_unknown_settings_are_refused(tmp_path: Path, old: str, new: str, reason: str) -> None:
    """A version, distribution, link or encoding the native scorer does not implement is refused."""
    path = _rewrite_ini(FIXTURES / "gbm_gaussian_cat.zip", tmp_path / "m.zip", old, new)
    with pytest.raises(Unsupported, match=reason):
        native(path)


@pytest.mark.fast
def test_interface_matches_the_genmodel_backend() -> None:
    """features, input_schema, classes and output_columns as scorer.h2o_mojo.MojoModel derives them."""
    model = native(EXAMPLE)
    assert model.features == ["f0", "f1", "f2", "f3", "f4", "f5", "c1", "c2"]
    assert model.input_schema == {**{f"f{i}": "float" for i in range(6)}, "c1": "string", "c2": "string"}
    assert model.classes == ["no", "yes"]
    assert model.output_columns == ["prediction", "probability_no", "probability_yes"]
    regression = native(FIXTURES / "drf_regression_cat.zip")
    assert regression.classes is None and regression.output_columns == ["prediction"]
    assert regression.input_schema == {"x0": "float", "x1": "float", "x2": "float", "x3": "float",
                                       "c_lo": "string", "c_hi": "string"}
