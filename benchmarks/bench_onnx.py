"""skl2onnx + onnxruntime in double precision against the pipelines' own answers: exactness, latency, cold start.

    python benchmarks/bench_onnx.py [--quick]

Issue 19 asks to evaluate the library route before writing our own numpy kernels ("scoring plans"). For
the example bundles ``bundles/tabular`` (ColumnTransformer(StandardScaler, OneHotEncoder(handle_unknown=
'ignore')) + HistGradientBoostingClassifier) and ``bundles/text`` (ColumnTransformer(TfidfVectorizer) +
LogisticRegression), and small synthetic pipelines for the known gaps (HistGradientBoosting with native
categorical features, OneHotEncoder with infrequent categories, RandomForest, multinomial
LogisticRegression, StandardScaler + LinearRegression), plus two float32 cases (the tabular bundle and the
native-categorical HistGradientBoosting model converted with ``FloatTensorType`` inputs: the precision
skl2onnx's tree converters are built for), this script

1. converts the fitted pipeline with ``skl2onnx.convert_sklearn`` in **double precision**: every numeric
   input declared ``DoubleTensorType`` (one ``[None, 1]`` input per DataFrame column, string columns
   ``StringTensorType([None, 1])``; array-fitted pipelines one ``DoubleTensorType([None, k])`` input
   ``X``), ``target_opset`` = skl2onnx's default (the newest opset it is tested with), and for classifiers
   the option ``{"zipmap": False}`` on the final estimator (probabilities as one double tensor, not a list
   of dicts). skl2onnx offers no other precision option: its tree converters emit ``TreeEnsembleClassifier``
   / ``TreeEnsembleRegressor`` of ``ai.onnx.ml`` opset 1, whose thresholds and leaf values are float32
   attributes whatever the input type (the double ``*_as_tensor`` attributes of opset 3 and the opset-5
   ``TreeEnsemble`` are never emitted, and a ``target_opset`` of ``{"ai.onnx.ml": 3}`` or ``5`` changes
   nothing); linear models with a double input become ``MatMul`` + ``Add`` on double initializers; the ``TfIdfVectorizer`` operator outputs float32. The text bundle is converted
   three times: with skl2onnx's defaults (its ``StringNormalizer`` asks for the locale ``en_US.UTF-8``,
   which a machine without that locale cannot construct), with the vectorizer option ``{"locale": "C"}``,
   and with ``{"locale": "C", "tokenexp": r"\b\w\w+\b"}`` (by default skl2onnx replaces scikit-learn's
   token pattern ``(?u)\b\w\w+\b`` by ``[a-zA-Z0-9_]+``). A conversion that raises or runs longer than
   ``CONVERT_TIMEOUT_S`` (skl2onnx's float32 threshold search ``find_switch_point`` loops forever on the
   ``+inf`` threshold scikit-learn's trees use for missing-value splits), or a session or run that fails,
   is recorded with its error, not fatal;
2. compares onnxruntime's answers with the pipeline's own ``predict`` + ``predict_proba`` (regressors:
   ``predict``) on the bundle's sample (``manifest.json``'s ``sample_input``), on generated rows (the
   rows timed below) and on edge rows (unknown and infrequent categories, NaN, values exactly on tree
   thresholds and their float64 neighbours, extreme values, odd texts): label mismatches, max abs and
   max relative difference (``|a-b| / max(1, |b|)``, the contract's measure) and the number of values
   outside the contract (labels equal, ``|a-b| <= 1e-12 * max(1, |b|)``). Edge rows on which scikit-learn
   raises (NaN into a linear model, ±inf into StandardScaler or a forest) are recorded as "raise checks":
   whether onnxruntime raises too or answers silently;
3. times one call at 1 row and 10,000 rows: ``InferenceSession.run`` on prepared numpy inputs
   (``SessionOptions``: ``intra_op_num_threads=1``, ``inter_op_num_threads=1``, sequential execution,
   default graph optimizations, CPUExecutionProvider) against the pipeline's own ``predict_proba``
   (regressors ``predict``) on the DataFrame/array, in this process pinned to one core (core 1, the
   servers' core, when ``os.sched_setaffinity`` and 2+ cores are available; set before scikit-learn is
   imported, so OpenMP uses one thread). The two ways' calls are taken in turn (``bench_client.
   time_interleaved``: the shared repeat policy of ``_harness``, medians);
4. for each bundle, in fresh subprocesses pinned to the same core (3 runs each, medians): the time of
   ``import onnxruntime``, of creating the session and of the first 1-row call, and the RSS after each,
   against ``import joblib, sklearn`` + ``joblib.load(model.joblib)`` + the first 1-row
   ``predict_proba`` (pandas imported for it).

skl2onnx and onnxruntime are **benchmark-only**: they are not scorer dependencies (not in
``pyproject.toml``). ``benchmarks/run onnx`` installs them into ``.venv`` with pip when missing (``pip
install skl2onnx onnxruntime``, newest versions); the versions used are recorded in the results. Nothing
here asserts on timings. Results: ``benchmarks/results/onnx.json`` (and ``onnx.md``, not committed),
rendered into benchmarks/README.md by ``render.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
DATA_SEED = 20_251_127  # request rows: not the bundles' training seed
TIMED_ROWS = (1, 10_000)
CONTRACT = 1e-12  # |a - b| <= CONTRACT * max(1, |b|), labels equal
COLD_RUNS = 3
CONVERT_TIMEOUT_S = 60


# ---------------------------------------------------------------------------------------
# a fresh process: import + load + first call, RSS after each (stdlib only until it imports)
# ---------------------------------------------------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kib / 1024, 1)


def _cold_child(way: str, model_path: str, row_json: str) -> None:
    """Print one JSON line: seconds and RSS (MiB) at start, after import, after load, after the first call."""
    row = json.loads(row_json)  # {"columns": [...], "data": [[...]], "kinds": [...]}
    out: dict[str, Any] = {"rss_start_mib": _rss_mib()}
    t0 = time.perf_counter()
    if way == "onnx":
        import onnxruntime as ort

        t1 = time.perf_counter()
        out["rss_after_import_mib"] = _rss_mib()
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        t2 = time.perf_counter()
        out["rss_after_load_mib"] = _rss_mib()
        import numpy as np

        types = {"double": np.float64, "float": np.float32, "string": object}
        feed = {c: np.array([[v]], dtype=types[k]) for c, v, k in zip(row["columns"], row["data"][0], row["kinds"])}
        sess.run(None, feed)
        t3 = time.perf_counter()
        out["what"] = "import onnxruntime; InferenceSession(model.onnx); run(1 row)"
    else:
        import joblib
        import sklearn  # noqa: F401

        t1 = time.perf_counter()
        out["rss_after_import_mib"] = _rss_mib()
        model = joblib.load(model_path)
        t2 = time.perf_counter()
        out["rss_after_load_mib"] = _rss_mib()
        import pandas as pd

        model.predict_proba(pd.DataFrame(row["data"], columns=row["columns"]))
        t3 = time.perf_counter()
        out["what"] = "import joblib, sklearn; joblib.load(model.joblib); import pandas; predict_proba(1 row)"
    out.update({"import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2, "total_s": t3 - t0,
                "rss_after_first_call_mib": _rss_mib()})
    print("COLD " + json.dumps(out), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["cold-child"]:
    _cold_child(sys.argv[2], sys.argv[3], sys.argv[4])
    sys.exit(0)


import _harness as h  # noqa: E402 - scripts run by path
from _harness import SERVER_CPUS, load_build_module  # noqa: E402


# ---------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    what: str
    kind: str  # "classifier" | "regressor"
    fit: Callable[[], Any]  # -> fitted pipeline
    rows: Callable[[int, int], Any]  # (n, seed) -> request rows (DataFrame or float64 array)
    edges: Callable[[Any, Any], list[tuple[str, Any]]]  # (pipeline, base rows) -> [(edge set name, rows)]
    sample: Callable[[], Any] | None = None  # the bundle's sample rows
    options: Callable[[Any], dict[Any, Any]] = field(default=lambda pipe: {})  # extra skl2onnx options
    bundle: str | None = None  # example bundle directory name (cold start measured for these)
    precision: str = "double"  # numeric inputs: "double" (DoubleTensorType) or "float" (FloatTensorType, float32)


def _final(pipe: Any) -> Any:
    return pipe.steps[-1][1] if hasattr(pipe, "steps") else pipe


def _is_frame(x: Any) -> bool:
    return hasattr(x, "columns")


def _sample_of(bundle: str) -> Callable[[], Any]:
    def sample() -> Any:
        import pandas as pd

        s = json.loads((REPO / "bundles" / bundle / "manifest.json").read_text())["sample_input"]
        df = pd.DataFrame(s["data"], columns=s["columns"])
        for c in df.columns:
            if df[c].dtype.kind != "f":
                df[c] = df[c].astype(object)
        return df
    return sample


def _replace(df: Any, rows: list[dict[str, Any]]) -> Any:
    """Copies of the first len(rows) rows of ``df`` with the given cells replaced."""
    import pandas as pd

    base = df.head(len(rows)).reset_index(drop=True).copy()
    out = pd.DataFrame({c: base[c].astype(object) if base[c].dtype.kind != "f" else base[c] for c in base.columns})
    for i, changes in enumerate(rows):
        for c, v in changes.items():
            out.at[i, c] = v
    return out


def _hgb_numeric_thresholds(hgb: Any) -> list[tuple[int, float]]:
    """(feature index, threshold) of every numeric split of a fitted HistGradientBoosting model."""
    found = []
    for per_iter in hgb._predictors:
        for pred in per_iter:
            nodes = pred.nodes
            split = ~nodes["is_leaf"].astype(bool) & ~nodes["is_categorical"].astype(bool)
            found += list(zip(nodes["feature_idx"][split].tolist(), nodes["num_threshold"][split].tolist()))
    return sorted(set(found))


def _forest_thresholds(forest: Any) -> list[tuple[int, float]]:
    found = []
    for est in forest.estimators_:
        t = est.tree_
        split = t.feature >= 0
        found += list(zip(t.feature[split].tolist(), t.threshold[split].tolist()))
    return sorted(set(found))


def _threshold_rows(base: Any, thresholds: list[tuple[int, float]], limit: int,
                    to_input: Callable[[int, float], tuple[int | str, float] | None]) -> Any:
    """Rows of ``base`` (array or frame) with one input set exactly on a threshold, and its float64 neighbours."""
    import numpy as np

    step = max(1, len(thresholds) // limit)
    picked = [t for t in thresholds[::step]][:limit]
    changes: list[tuple[int | str, float]] = []
    for feat, thr in picked:
        mapped = to_input(feat, thr)
        if mapped is None:
            continue
        col, x = mapped
        changes += [(col, x), (col, float(np.nextafter(x, -np.inf))), (col, float(np.nextafter(x, np.inf)))]
    if _is_frame(base):
        return _replace(base.iloc[np.arange(len(changes)) % len(base)], [{c: v} for c, v in changes])
    rows = base[np.arange(len(changes)) % len(base)].copy()
    for i, (col, x) in enumerate(changes):
        rows[i, int(col)] = x
    return rows


# tabular bundle ------------------------------------------------------------------------


def _tabular_edges(pipe: Any, base: Any) -> list[tuple[str, Any]]:
    build = load_build_module()
    num, cat = list(build.TABULAR_NUMERIC), list(build.TABULAR_CATEGORICAL)
    scaler = pipe.named_steps["preprocess"].named_transformers_["num"]
    hgb = _final(pipe)

    def to_input(feat: int, thr: float) -> tuple[str, float] | None:
        if feat >= len(num):
            return None  # a one-hot column: 0/1 only
        return num[feat], float(thr * scaler.scale_[feat] + scaler.mean_[feat])

    unknown = [{c: "zz_unknown"} for c in cat] + [{c: "" for c in cat}, {c: "c0_00" for c in cat}]
    nan = [{c: float("nan")} for c in num] + [{c: float("nan") for c in num}]
    inf = [{num[0]: float("inf")}, {num[3]: float("-inf")}]
    return [
        ("unknown categories", _replace(base, unknown)),
        ("NaN", _replace(base, nan)),
        ("on thresholds", _threshold_rows(base, _hgb_numeric_thresholds(hgb), 400, to_input)),
        ("extreme values", _replace(base, [{c: s * 1e12} for c in num for s in (1, -1)])),
        ("±inf", _replace(base, inf)),
    ]


# text bundle ---------------------------------------------------------------------------

ODD_TEXTS = [
    "", " ", "a", "I a m", "win a prize now", "WIN A PRIZE NOW!!!", "free-free free_free", "call 555-0100 now",
    "héllo wörld café", "naïve résumé", "東京 is big", "emoji 🎉 prize 🎉", "tab\tseparated\ttext", "new\nline",
    "don't won't can't", "www.win-big.example.com/claim", "a b c d e f g", "12 34 5678", "__init__ main_loop",
    "URGENT! You have won a $1000 prize, click www.win-big.example.com/claim",
    "are we still meeting for lunch tomorrow " * 40,
]


def _text_edges(pipe: Any, base: Any) -> list[tuple[str, Any]]:
    import pandas as pd

    return [("odd texts", pd.DataFrame({"text": pd.Series(ODD_TEXTS, dtype=object)}))]


def _text_options(**options: str) -> Callable[[Any], dict[Any, Any]]:
    def of(pipe: Any) -> dict[Any, Any]:
        return {id(pipe.named_steps["preprocess"].named_transformers_["tfidf"]): options}
    return of


# synthetic pipelines -------------------------------------------------------------------


def _hgb_cat_data(n: int, seed: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    x[:, 4] = rng.integers(0, 10, n)
    x[:, 5] = rng.integers(0, 30, n)
    effect4 = np.random.default_rng(1).normal(0, 1.0, 10)
    effect5 = np.random.default_rng(2).normal(0, 1.0, 30)
    x[rng.random((n, 6)) < 0.02] = np.nan
    c4 = np.nan_to_num(x[:, 4], nan=0).astype(int)
    c5 = np.nan_to_num(x[:, 5], nan=0).astype(int)
    logit = np.nan_to_num(x[:, 0]) - 0.7 * np.nan_to_num(x[:, 1]) + effect4[c4] + effect5[c5]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


def _fit_hgb_cat() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = _hgb_cat_data(5_000, 0)
    return HistGradientBoostingClassifier(categorical_features=[4, 5], max_iter=50, random_state=0).fit(x, y)


def _hgb_cat_edges(pipe: Any, base: Any) -> list[tuple[str, Any]]:
    import numpy as np

    def cats(c4: list[float], c5: list[float]) -> Any:
        rows = base[:len(c4)].copy()
        rows[:, 4], rows[:, 5] = c4, c5
        return rows

    nan = base[:6].copy()
    nan[np.arange(6), np.arange(6)] = np.nan
    inf = base[:4].copy()
    inf[0, 0], inf[1, 1], inf[2, 2], inf[3, 3] = np.inf, -np.inf, np.inf, -np.inf
    thr = _threshold_rows(base, _hgb_numeric_thresholds(pipe), 300, lambda f, t: (f, t))
    return [("known categories, every level", cats([i % 10 for i in range(30)], list(range(30)))),
            ("unknown categories", cats([10, 11, 99, 3], [30, 31, 100, 100])),
            ("negative category", cats([-1, 3], [5, -1])), ("fractional category", cats([2.5, 3], [5, 7.5])),
            ("NaN", nan), ("±inf", inf), ("on thresholds", thr)]


def _ohe_frame(n: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    p_a = np.random.default_rng(3).dirichlet(np.full(30, 0.4))
    a = rng.choice([f"a{i:02d}" for i in range(30)], size=n, p=p_a)
    b = rng.choice([f"b{i}" for i in range(8)], size=n, p=[0.4, 0.3, 0.15, 0.1, 0.02, 0.015, 0.01, 0.005])
    return pd.DataFrame({"a": pd.Series(a, dtype=object), "b": pd.Series(b, dtype=object),
                         "x0": rng.standard_normal(n), "x1": rng.normal(3, 2, n)})


def _fit_ohe_infrequent() -> Any:
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = _ohe_frame(3_000, 0)
    y = (np.random.default_rng(5).random(3_000) < 1 / (1 + np.exp(-(df["x0"] + (df["a"] < "a10") - 0.5)))).astype(int)
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(min_frequency=40, handle_unknown="infrequent_if_exist", sparse_output=False), ["a", "b"]),
        ("num", StandardScaler(), ["x0", "x1"]),
    ])
    return Pipeline([("preprocess", pre), ("model", LogisticRegression(max_iter=1000))]).fit(df, y)


def _ohe_edges(pipe: Any, base: Any) -> list[tuple[str, Any]]:
    ohe = pipe.named_steps["preprocess"].named_transformers_["cat"]
    rare_a, rare_b = (list(c) for c in ohe.infrequent_categories_)
    infrequent = [{"a": v} for v in rare_a] + [{"b": v} for v in rare_b]
    unknown = [{"a": "zz"}, {"b": "zz"}, {"a": "", "b": ""}, {"a": "A00"}]
    return [("infrequent categories", _replace(base, infrequent)), ("unknown categories", _replace(base, unknown)),
            ("NaN", _replace(base, [{"x0": float("nan")}]))]


def _forest_data(n: int, seed: int, nan: bool = False) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).round(2)  # rounded: many rows sit exactly on split points' neighbours
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int) + (x[:, 3] > 1).astype(int)
    if nan:
        x[rng.random((n, 8)) < 0.02] = np.nan
    return x, y


def _fit_forest(nan: bool) -> Callable[[], Any]:
    def fit() -> Any:
        from sklearn.ensemble import RandomForestClassifier

        x, y = _forest_data(3_000, 0, nan)
        return RandomForestClassifier(n_estimators=30, random_state=0, n_jobs=1).fit(x, y)
    return fit


def _array_edges(thresholds: Callable[[Any], list[tuple[int, float]]] | None) -> Callable[[Any, Any], list[tuple[str, Any]]]:
    def edges(pipe: Any, base: Any) -> list[tuple[str, Any]]:
        import numpy as np

        k = base.shape[1]
        nan = base[:k].copy()
        nan[np.arange(k), np.arange(k)] = np.nan
        inf = base[:2].copy()
        inf[0, 0], inf[1, 1] = np.inf, -np.inf
        big = base[:2 * k].copy()
        for i in range(k):
            big[2 * i, i], big[2 * i + 1, i] = 1e6, -1e6
        out = [("NaN", nan), ("±inf", inf), ("extreme values", big)]
        if thresholds is not None:
            out.append(("on thresholds", _threshold_rows(base, thresholds(_final(pipe)), 400, lambda f, t: (f, t))))
        return out
    return edges


def _linear_data(n: int, seed: int, classes: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 6)) * np.array([1, 10, 0.1, 5, 1, 100]) + np.array([0, 5, 0, -3, 1, 50])
    w = np.random.default_rng(7).normal(0, 1, (6, max(classes, 1)))
    z = (x - x.mean(0)) / x.std(0) @ w + rng.normal(0, 0.5, (n, max(classes, 1)))
    return x, (z.argmax(1) if classes > 1 else z[:, 0] * 3 + 10)


def _fit_logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _linear_data(3_000, 0, 4)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)


def _fit_linreg() -> Any:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _linear_data(3_000, 0, 1)
    return make_pipeline(StandardScaler(), LinearRegression()).fit(x, y)


def _load_bundle(name: str) -> Callable[[], Any]:
    def load() -> Any:
        import joblib

        return joblib.load(REPO / "bundles" / name / "artifacts" / "model.joblib")
    return load


def _bundle_rows(name: str) -> Callable[[int, int], Any]:
    def rows(n: int, seed: int) -> Any:
        build = load_build_module()
        df = h.make_frame(build, name, n, seed)
        for c in df.columns:
            if df[c].dtype.kind != "f":
                df[c] = df[c].astype(object)
        return df
    return rows


def cases() -> list[Case]:
    return [
        Case("tabular", "bundles/tabular: ColumnTransformer(StandardScaler, OneHotEncoder(handle_unknown='ignore')) "
             "+ HistGradientBoostingClassifier", "classifier", _load_bundle("tabular"), _bundle_rows("tabular"),
             _tabular_edges, sample=_sample_of("tabular"), bundle="tabular"),
        Case("text", "bundles/text: ColumnTransformer(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)) + "
             "LogisticRegression; skl2onnx default tokenizer", "classifier", _load_bundle("text"), _bundle_rows("text"),
             _text_edges, sample=_sample_of("text")),
        Case("text, locale C", "bundles/text with the vectorizer option locale='C'", "classifier",
             _load_bundle("text"), _bundle_rows("text"), _text_edges, sample=_sample_of("text"),
             options=_text_options(locale="C"), bundle="text"),
        Case("text, locale C + tokenexp", "bundles/text with the vectorizer options locale='C', "
             "tokenexp=r'\\b\\w\\w+\\b'", "classifier", _load_bundle("text"), _bundle_rows("text"), _text_edges,
             sample=_sample_of("text"), options=_text_options(locale="C", tokenexp=r"\b\w\w+\b")),
        Case("HGB native categorical", "HistGradientBoostingClassifier(categorical_features=[4, 5]), NaN in training",
             "classifier", _fit_hgb_cat, lambda n, s: _hgb_cat_data(n, s)[0], _hgb_cat_edges),
        Case("tabular, float32", "bundles/tabular converted with FloatTensorType numeric inputs (float32 path)",
             "classifier", _load_bundle("tabular"), _bundle_rows("tabular"), _tabular_edges,
             sample=_sample_of("tabular"), precision="float", bundle="tabular"),
        Case("HGB native categorical, float32", "the HGB native categorical case with FloatTensorType input",
             "classifier", _fit_hgb_cat, lambda n, s: _hgb_cat_data(n, s)[0], _hgb_cat_edges, precision="float"),
        Case("OneHotEncoder infrequent", "ColumnTransformer(OneHotEncoder(min_frequency=40, handle_unknown="
             "'infrequent_if_exist'), StandardScaler) + LogisticRegression", "classifier", _fit_ohe_infrequent,
             _ohe_frame, _ohe_edges),
        Case("RandomForest", "RandomForestClassifier(n_estimators=30), 3 classes", "classifier",
             _fit_forest(False), lambda n, s: _forest_data(n, s)[0], _array_edges(_forest_thresholds)),
        Case("RandomForest, NaN in training", "RandomForestClassifier(n_estimators=30), 3 classes, 2% NaN in "
             "training (missing-value splits)", "classifier", _fit_forest(True), lambda n, s: _forest_data(n, s, True)[0],
             _array_edges(_forest_thresholds)),
        Case("LogisticRegression multinomial", "StandardScaler + LogisticRegression (lbfgs, 4 classes)", "classifier",
             _fit_logreg, lambda n, s: _linear_data(n, s, 4)[0], _array_edges(None)),
        Case("LinearRegression", "StandardScaler + LinearRegression", "regressor", _fit_linreg,
             lambda n, s: _linear_data(n, s, 1)[0], _array_edges(None)),
    ]


# ---------------------------------------------------------------------------------------
# conversion, feeding, answers
# ---------------------------------------------------------------------------------------


def initial_types(x: Any, precision: str = "double") -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    num = DoubleTensorType if precision == "double" else FloatTensorType
    if _is_frame(x):
        return [(str(c), num([None, 1]) if x[c].dtype.kind in "fiub" else StringTensorType([None, 1]))
                for c in x.columns]
    return [("X", num([None, x.shape[1]]))]


def feed(x: Any, precision: str = "double") -> dict[str, Any]:
    import numpy as np

    dtype = np.float64 if precision == "double" else np.float32
    if _is_frame(x):
        return {str(c): (x[c].to_numpy(dtype=np.float64).astype(dtype) if x[c].dtype.kind in "fiub"
                         else x[c].to_numpy(dtype=object)).reshape(-1, 1) for c in x.columns}
    return {"X": np.ascontiguousarray(x, dtype=dtype)}


def convert(case: Case, pipe: Any, x: Any, work: Path) -> tuple[Path | None, dict[str, Any]]:
    """skl2onnx conversion in double precision; (model path or None, facts incl. the error)."""
    options: dict[Any, Any] = {id(_final(pipe)): {"zipmap": False}} if case.kind == "classifier" else {}
    options.update(case.options(pipe))
    types = initial_types(x, case.precision)
    facts: dict[str, Any] = {"initial_types": [[n, type(t).__name__, t.shape] for n, t in types],
                             "options": {type(_obj_by_id(pipe, k)).__name__: v for k, v in options.items()}}
    def give_up(signum: int, frame: Any) -> None:
        raise TimeoutError(f"conversion did not finish in {CONVERT_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(CONVERT_TIMEOUT_S)  # skl2onnx can loop forever (see the module docstring)
    try:
        from skl2onnx import convert_sklearn

        t0 = time.perf_counter()
        onx = convert_sklearn(pipe, initial_types=types, options=options)
        facts["conversion_s"] = round(time.perf_counter() - t0, 3)
    except Exception as e:  # noqa: BLE001 - any conversion failure is a result
        facts.update(converted=False, error=f"{type(e).__name__}: {_first_line(e)}")
        return None, facts
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    path = work / f"{case.name.replace(' ', '_').replace(',', '')}.onnx"
    path.write_bytes(onx.SerializeToString())
    ops = sorted({f"{n.domain or 'ai.onnx'}.{n.op_type}" for n in onx.graph.node})
    facts.update(converted=True, error=None, onnx_bytes=path.stat().st_size, ops=ops,
                 opsets={o.domain or "ai.onnx": o.version for o in onx.opset_import})
    return path, facts


def _obj_by_id(pipe: Any, key: Any) -> Any:
    stack = [pipe]
    while stack:
        o = stack.pop()
        if id(o) == key:
            return o
        stack += [s[1] for s in getattr(o, "steps", [])] + [t[1] for t in getattr(o, "transformers_", [])]
    return key


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:300]


def session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def sk_answer(case: Case, pipe: Any, x: Any) -> tuple[Any, Any]:
    """(labels or None, values): predict + predict_proba, or predict for a regressor."""
    import numpy as np

    if case.kind == "classifier":
        return np.asarray(pipe.predict(x)), np.asarray(pipe.predict_proba(x), dtype=np.float64)
    return None, np.asarray(pipe.predict(x), dtype=np.float64).reshape(len(x), -1)


def onnx_answer(case: Case, sess: Any, x: Any) -> tuple[Any, Any]:
    import numpy as np

    out = sess.run(None, feed(x, case.precision))
    if case.kind == "classifier":
        return np.asarray(out[0]).ravel(), np.asarray(out[1], dtype=np.float64)
    return None, np.asarray(out[0], dtype=np.float64).reshape(len(x), -1)


def compare(want: tuple[Any, Any], got: tuple[Any, Any]) -> dict[str, Any]:
    import numpy as np

    (wl, wv), (gl, gv) = want, got
    res: dict[str, Any] = {"rows": int(len(wv))}
    res["label_mismatches"] = 0 if wl is None else int((wl.astype(str) != gl.astype(str)).sum())
    if gv.shape != wv.shape:
        res.update(shape_mismatch=[list(gv.shape), list(wv.shape)], max_abs=None, max_rel=None,
                   contract_violations=int(wv.size))
        return res
    both_nan = np.isnan(gv) & np.isnan(wv)
    diff = np.where(both_nan, 0.0, np.abs(gv - wv))
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only: a violation
    rel = diff / np.maximum(1.0, np.abs(np.nan_to_num(wv)))
    res["max_abs"] = float(diff.max()) if diff.size else 0.0
    res["max_rel"] = float(rel.max()) if rel.size else 0.0
    res["contract_violations"] = int((rel > CONTRACT).sum())
    res["rows_with_violation"] = int((rel > CONTRACT).reshape(len(wv), -1).any(axis=1).sum())
    return res


def exactness(case: Case, pipe: Any, sess: Any, sets: list[tuple[str, Any]]) -> dict[str, Any]:
    by_set: dict[str, Any] = {}
    raise_checks: dict[str, Any] = {}
    for name, x in sets:
        try:
            want = sk_answer(case, pipe, x)
        except Exception as e:  # noqa: BLE001 - scikit-learn rejects these rows: does onnxruntime?
            check = {"rows": len(x), "sklearn": f"raises {type(e).__name__}"}
            try:
                onnx_answer(case, sess, x)
                check["onnx"] = "answers (no error)"
            except Exception as e2:  # noqa: BLE001
                check["onnx"] = f"raises {type(e2).__name__}"
            raise_checks[name] = check
            continue
        try:
            got = onnx_answer(case, sess, x)
        except Exception as e:  # noqa: BLE001
            by_set[name] = {"rows": len(x), "onnx_error": f"{type(e).__name__}: {_first_line(e)}",
                            "contract_violations": None}
            continue
        by_set[name] = compare(want, got)
    ok = [s for s in by_set.values() if s.get("max_abs") is not None]
    total = {
        "rows": sum(s["rows"] for s in by_set.values()),
        "label_mismatches": sum(s.get("label_mismatches", 0) for s in ok),
        "max_abs": max((s["max_abs"] for s in ok), default=None),
        "max_rel": max((s["max_rel"] for s in ok), default=None),
        "contract_violations": sum(s["contract_violations"] or 0 for s in ok),
        "rows_with_violation": sum(s.get("rows_with_violation", 0) for s in ok),
        "onnx_errors": sum(1 for s in by_set.values() if "onnx_error" in s),
        "silent_answers_where_sklearn_raises": sum(1 for c in raise_checks.values() if c["onnx"].startswith("answers")),
    }
    total["meets_contract"] = (total["label_mismatches"] == 0 and total["contract_violations"] == 0
                               and total["onnx_errors"] == 0 and len(ok) == len(by_set))
    return {"total": total, "by_set": by_set, "raise_checks": raise_checks}


# ---------------------------------------------------------------------------------------
# timing, cold start
# ---------------------------------------------------------------------------------------


def latency(case: Case, pipe: Any, sess: Any | None, frames: dict[int, Any], quick: bool) -> dict[str, Any]:
    from bench_client import time_interleaved

    out: dict[str, Any] = {}
    sk_call = pipe.predict_proba if case.kind == "classifier" else pipe.predict
    for n, x in frames.items():
        calls: dict[str, Callable[[], Any]] = {"sklearn": lambda x=x: sk_call(x)}
        if sess is not None:
            prepared = feed(x, case.precision)
            calls["onnx"] = lambda prepared=prepared: sess.run(None, prepared)
        reps, budget = h.repeat_policy(n, quick)
        timed = time_interleaved(calls, reps, budget)
        row: dict[str, Any] = {way: t for way, t in timed.items()}
        row["sklearn_ms"] = timed["sklearn"]["median_ms"]
        row["onnx_ms"] = timed["onnx"]["median_ms"] if "onnx" in timed else None
        row["sklearn_over_onnx"] = row["sklearn_ms"] / row["onnx_ms"] if row["onnx_ms"] else None
        out[str(n)] = row
        h.log(f"{case.name:<32} {n:>6,} rows  sklearn {row['sklearn_ms']:9.3f} ms  onnx "
              f"{h.f_ms(row['onnx_ms']):>8} ms ({timed['sklearn']['repeats']} calls each; others used "
              f"{timed['sklearn']['cpu'].get('foreign_cpu_pct', 0):.0f}% of a core)")
    return out


def cold(bundle: str, onnx_path: Path | None, row: dict[str, Any], pin: bool, sklearn: bool = True) -> dict[str, Any]:
    import statistics

    out: dict[str, Any] = {}
    ways = {"sklearn": REPO / "bundles" / bundle / "artifacts" / "model.joblib"} if sklearn else {}
    if onnx_path is not None:
        ways["onnx"] = onnx_path
    for way, path in ways.items():
        runs = []
        for _ in range(COLD_RUNS):
            cmd = [sys.executable, str(Path(__file__).resolve()), "cold-child", way, str(path), json.dumps(row)]
            t0 = time.perf_counter()
            proc = subprocess.run(h.pinned(SERVER_CPUS, cmd, pin), capture_output=True, text=True, cwd=REPO,
                                  timeout=300, check=False)
            wall = time.perf_counter() - t0
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("COLD ")), None)
            if proc.returncode != 0 or line is None:
                out[way] = {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
                break
            r = json.loads(line[5:])
            r["process_wall_s"] = wall
            runs.append(r)
        else:
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))}
            med["what"] = runs[0]["what"]
            med["runs"] = len(runs)
            med["rss_increase_mib"] = round(med["rss_after_first_call_mib"] - med["rss_start_mib"], 1)
            out[way] = med
            h.log(f"cold {bundle:<8} {way:<8} import {med['import_s']:.3f} s  load {med['load_s']:.3f} s  first call "
                  f"{med['first_call_s']:.3f} s  RSS {med['rss_start_mib']:.0f} -> {med['rss_after_first_call_mib']:.0f} MiB")
    return out


def _one_row(x: Any, precision: str) -> dict[str, Any]:
    return {"columns": [str(c) for c in x.columns], "data": [list(x.iloc[0].tolist())],
            "kinds": [precision if x[c].dtype.kind in "fiub" else "string" for c in x.columns]}


# ---------------------------------------------------------------------------------------
# run, figures, report
# ---------------------------------------------------------------------------------------


def run_case(case: Case, args: argparse.Namespace, work: Path, pin: bool) -> dict[str, Any]:
    import numpy as np

    h.log(f"{case.name}: fit/load, convert ...")
    pipe = case.fit()
    big = case.rows(max(TIMED_ROWS), DATA_SEED)
    path, conv = convert(case, pipe, big, work)
    res: dict[str, Any] = {"case": case.name, "what": case.what, "kind": case.kind, "conversion": conv}
    sess = None
    if path is not None:
        try:
            sess = session(path)
        except Exception as e:  # noqa: BLE001
            conv["session_error"] = f"{type(e).__name__}: {_first_line(e)}"
    if sess is not None:
        sets: list[tuple[str, Any]] = []
        if case.sample is not None:
            sets.append(("bundle sample", case.sample()))
        sets.append((f"generated ({len(big):,} rows)", big))
        sets += case.edges(pipe, big)
        res["exactness"] = exactness(case, pipe, sess, sets)
        t = res["exactness"]["total"]
        h.log(f"{case.name}: {t['rows']:,} rows compared, {t['label_mismatches']} label mismatches, max abs "
              f"{t['max_abs']}, {t['contract_violations']} values outside 1e-12"
              + ("" if "onnx_errors" not in t or not t["onnx_errors"] else f", {t['onnx_errors']} sets failed"))
    frames = {n: (big.head(n).reset_index(drop=True) if _is_frame(big) else np.ascontiguousarray(big[:n]))
              for n in TIMED_ROWS}
    res["latency"] = latency(case, pipe, sess, frames, args.quick)
    if case.bundle is not None:
        # the float32 case: onnxruntime only (scikit-learn's side is the same as the double case's)
        res["cold"] = cold(case.bundle, path if sess is not None else None, _one_row(big, case.precision), pin,
                           sklearn=case.precision == "double")
    return res


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("skl2onnx", "onnxruntime", "onnx", "scikit-learn", "numpy", "pandas", "scipy")}


def figures(raw: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for c in raw["cases"]:
        conv = c["conversion"]
        ex = c.get("exactness", {}).get("total")
        lat = c["latency"]
        row: dict[str, Any] = {
            "case": c["case"], "converted": conv["converted"] and "session_error" not in conv,
            "error": conv.get("error") or conv.get("session_error"),
            "rows_compared": ex["rows"] if ex else None,
            "label_mismatches": ex["label_mismatches"] if ex else None,
            "max_abs_diff": ex["max_abs"] if ex else None, "max_rel_diff": ex["max_rel"] if ex else None,
            "values_outside_contract": ex["contract_violations"] if ex else None,
            "silent_answers_where_sklearn_raises": ex["silent_answers_where_sklearn_raises"] if ex else None,
            "meets_contract": bool(ex and ex["meets_contract"]),
        }
        for n in TIMED_ROWS:
            t = lat[str(n)]
            row[f"sklearn_ms_{n}"] = round(t["sklearn_ms"], 4)
            row[f"onnx_ms_{n}"] = None if t["onnx_ms"] is None else round(t["onnx_ms"], 4)
        if "cold" in c:
            row["cold"] = {way: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()
                                 if k in ("import_s", "load_s", "first_call_s", "rss_increase_mib", "error")}
                           for way, d in c["cold"].items()}
        rows.append(row)
    return {"contract": f"labels equal, |a-b| <= {CONTRACT:g} * max(1, |b|)", "versions": raw["versions"],
            "cases": rows, "cases_meeting_contract": sum(r["meets_contract"] for r in rows), "cases_total": len(rows)}


def _g(x: float | None) -> str:
    return "–" if x is None else "0" if x == 0 else f"{x:.1e}"


def render(fig: dict[str, Any]) -> str:
    """The markdown table benchmarks/README.md shows (render.py calls this)."""
    v = fig["versions"]
    L = [(f"skl2onnx {v['skl2onnx']}, onnxruntime {v['onnxruntime']}, scikit-learn {v['scikit-learn']}: double-precision "
          f"inputs, `zipmap=False`. Contract: {fig['contract']}. Rows compared: the bundle's sample, generated rows and "
          "edge rows. Latency: medians per call, one core, onnxruntime with one thread on prepared inputs vs the "
          "pipeline's own `predict_proba` (`predict` for the regressor)."), "",
         ("| pipeline | converts | rows compared | label mismatches | max abs diff | max rel diff | values outside "
          "contract | answers where sklearn raises | answers meet contract | 1 row sklearn / ONNX ms | 10,000 rows sklearn / "
          "ONNX ms |"), "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in fig["cases"]:
        err = r["error"] if len(r["error"] or "") <= 160 else r["error"][:160] + " …"
        conv = "yes" if r["converted"] else f"no: {err}".replace("|", "\\|")
        def n(k: str, r: dict[str, Any] = r) -> str:
            return "–" if r[k] is None else f"{r[k]:,}"
        L.append(f"| {r['case']} | {conv} | {n('rows_compared')} | {n('label_mismatches')} | {_g(r['max_abs_diff'])} | "
                 f"{_g(r['max_rel_diff'])} | {n('values_outside_contract')} | {n('silent_answers_where_sklearn_raises')} | "
                 f"{'**yes**' if r['meets_contract'] else 'no'} | {h.f_ms(r['sklearn_ms_1'])} / {h.f_ms(r['onnx_ms_1'])} "
                 f"| {h.f_ms(r['sklearn_ms_10000'])} / {h.f_ms(r['onnx_ms_10000'])} |")
    cold_rows = [r for r in fig["cases"] if "cold" in r]
    if cold_rows:
        L += ["", ("Fresh process, one core, medians of 3: import, load (session / `joblib.load`), first 1-row call, and "
                   "the RSS increase over the bare interpreter after all three."), "",
              "| bundle | way | import s | load s | first call s | RSS increase MiB |", "|---|---|---:|---:|---:|---:|"]
        for r in cold_rows:
            for way, d in r["cold"].items():
                label = "onnxruntime" if way == "onnx" else "scikit-learn + joblib (+ pandas for the call)"
                if "error" in d:
                    L.append(f"| {r['case']} | {label} | {d['error']} | | | |")
                    continue
                L.append(f"| {r['case']} | {label} | {d['import_s']:.3f} | {d['load_s']:.3f} | {d['first_call_s']:.3f} "
                         f"| {d['rss_increase_mib']:.0f} |")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer calls, noisy numbers")
    parser.add_argument("--case", action="append", help="only these cases (by name; repeatable)")
    args = parser.parse_args(argv)
    pin = h.cpu_pinning_available()
    if pin:
        os.sched_setaffinity(0, {int(SERVER_CPUS)})  # before scikit-learn/OpenMP and onnxruntime load
    else:
        h.log("WARNING: cannot pin to core 1 (need taskset and >= 2 cores): timings are not comparable")
    for p in ("skl2onnx", "onnxruntime"):
        try:
            __import__(p)
        except ImportError:
            raise SystemExit(f"bench_onnx: {p} is not installed: `.venv/bin/python -m pip install skl2onnx onnxruntime` "
                             "(or run `benchmarks/run onnx`, which does it)")
    h.install_cleanup()
    started = time.perf_counter()
    facts = h.run_facts(pin)
    facts["pinning"] = {"pinned": pin, "server_cpus": SERVER_CPUS if pin else None, "client_cpus": None}
    for name in ("tabular", "text"):
        if not h.is_built(name, REPO / "bundles"):
            raise SystemExit(f"bench_onnx: bundles/{name} is not built: `.venv/bin/python bundles/build.py`")
    raw: dict[str, Any] = {"versions": versions(), "cases": [],
                           "config": {"data_seed": DATA_SEED, "timed_rows": list(TIMED_ROWS), "contract": CONTRACT,
                                      "cold_runs": COLD_RUNS,
                                      "session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1,
                                                          "execution_mode": "ORT_SEQUENTIAL",
                                                          "providers": ["CPUExecutionProvider"]}}}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        for case in cases():
            if args.case and case.name not in args.case:
                continue
            raw["cases"].append(run_case(case, args, Path(tmp), pin))
    fig = figures(raw)
    text = render(fig)
    print("\n" + text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "onnx.md").write_text(text)
    facts = h.finish_facts(facts, started)
    facts["mode"] = "quick" if args.quick else "full"
    foreign = [t[w]["cpu"].get("foreign_cpu_pct", 0) for c in raw["cases"] for t in c["latency"].values()
               for w in ("sklearn", "onnx") if w in t]
    facts["notes"] = (f"this process pinned to core {SERVER_CPUS}; other processes used up to "
                      f"{max(foreign, default=0):.0f}% of a core during a timing (each timing's cpu.foreign_cpu_pct)")
    h.write_results("onnx", facts, fig, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
