"""Deterministically (re)build the model artifacts of the example bundles.

    python bundles/build.py [BUNDLE ...] [--out DIR] [--only BUNDLE] [--rows N]

BUNDLE is tabular, spam, text (the default: all three), spark or h2o (only when named:
they need Java 17 and the ``bundles`` extra -- pyspark, h2o -- which are imported lazily).

Committed per bundle: ``code/``, ``requirements.txt``, ``manifest.json``. Generated (and
gitignored): ``artifacts/*`` and ``spam/sample.csv``. The spark and h2o bundles are the
exception: their artifacts (tens of KB) and ``sample.csv`` are generated *and committed*, as is
``_reference/h2o_predictions.csv`` (H2O's own predictions), so tests need neither H2O nor
training. With the default ``--out`` (this directory) the artifacts are written next to the
committed sources; with another ``--out`` the committed sources are copied to ``DIR/<bundle>/``
first (and the reference file goes to ``DIR/_reference/``).

The build is byte-for-byte reproducible (same sha256 across runs, processes, hash seeds and
thread counts): fixed seeds everywhere, uncompressed ``joblib.dump``, and two bits of
run-time state sklearn would otherwise pickle are normalised before dumping --
``TfidfVectorizer._stop_words_id`` (an ``id()``, i.e. a memory address) and the OpenMP
thread count in ``HistGradientBoostingClassifier._bin_mapper.n_threads``. The saved Spark
pipeline and the H2O MOJO are rewritten after saving (:func:`normalise_spark_model`,
:func:`normalise_mojo`): random uids and part-file names, timestamps, checksum files and
machine details removed; both still load and score exactly like the models in memory.

Importable by path (tests, benchmarks)::

    spec = importlib.util.spec_from_file_location("bundles_build", "bundles/build.py")
    build = importlib.util.module_from_spec(spec); spec.loader.exec_module(build)
    df = build.make_spam_frame(1000, seed=1)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

BUNDLES_DIR = Path(__file__).resolve().parent
BUNDLE_NAMES = ("tabular", "spam", "text")  # built by default; artifacts gitignored
# Built only when named (Java 17 and the ``bundles`` extra); their tiny artifacts are committed.
JVM_BUNDLE_NAMES = ("spark", "h2o")
ALL_BUNDLE_NAMES = BUNDLE_NAMES + JVM_BUNDLE_NAMES
COMMITTED_SOURCES = ("code", "requirements.txt", "manifest.json")

# Seeds. The *world* seeds fix the data-generating process (effects, vocabulary weights);
# the sample seed only picks rows from it, so frames with different seeds are i.i.d.
# draws from the same distribution (e.g. training rows vs. a holdout).
TABULAR_WORLD_SEED = 20_240_601
SPAM_WORLD_SEED = 20_240_602
TRAIN_SEED = 0
SAMPLE_CSV_SEED = 123

# --------------------------------------------------------------------------------------
# tabular: synthetic data
# --------------------------------------------------------------------------------------

TABULAR_NUMERIC = [f"f{i}" for i in range(16)]
TABULAR_LEVELS = {"c0": 25, "c1": 5, "c2": 6, "c3": 200}
TABULAR_CATEGORICAL = list(TABULAR_LEVELS)
TABULAR_FEATURES = TABULAR_NUMERIC + TABULAR_CATEGORICAL
TABULAR_CLASSES = ("no", "yes")


def tabular_levels(column: str) -> list[str]:
    """Level names of a categorical column: ``c0_07``, ``c3_123``, ..."""
    n = TABULAR_LEVELS[column]
    width = max(2, len(str(n - 1)))
    return [f"{column}_{i:0{width}d}" for i in range(n)]


def _tabular_world() -> dict:
    w = np.random.default_rng(TABULAR_WORLD_SEED)
    world = {
        "mean": w.normal(0.0, 5.0, 16),
        "scale": np.exp(w.normal(0.0, 1.0, 16)),
    }
    for col, sd in (("c0", 0.9), ("c1", 0.6), ("c2", 0.7), ("c3", 0.5)):
        n = TABULAR_LEVELS[col]
        world[f"{col}_effect"] = w.normal(0.0, sd, n)
        # Unbalanced level frequencies (c3 long-tailed), floored so that every level shows up
        # in the 50,000 training rows and the encoder learns all of them.
        alpha = 0.7 if col == "c3" else 2.0
        world[f"{col}_p"] = 0.3 / n + 0.7 * w.dirichlet(np.full(n, alpha))
    world["c1_slope"] = w.normal(0.0, 0.8, TABULAR_LEVELS["c1"])  # c1 x f6 interaction
    return world


def make_tabular_frame(n: int, seed: int = TRAIN_SEED) -> pd.DataFrame:
    """``n`` rows: float columns f0..f15, object-dtype string columns c0..c3, ``label`` (no/yes).

    The label depends (non-linearly) on f0..f6 and on all four categoricals; f7..f15 are noise.
    """
    world = _tabular_world()
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 16))
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(TABULAR_NUMERIC):
        cols[name] = world["mean"][i] + world["scale"][i] * z[:, i]
    idx = {c: rng.choice(TABULAR_LEVELS[c], size=n, p=world[f"{c}_p"]) for c in TABULAR_CATEGORICAL}
    for c in TABULAR_CATEGORICAL:
        cols[c] = np.asarray(tabular_levels(c), dtype=object)[idx[c]]

    logit = (
        1.1 * z[:, 0]
        - 0.9 * z[:, 1]
        + 0.7 * z[:, 2] * z[:, 3]
        + 0.9 * np.sin(2.0 * z[:, 4])
        + 0.8 * (z[:, 5] > 0.5)
        + world["c1_slope"][idx["c1"]] * z[:, 6]
        + sum(world[f"{c}_effect"][idx[c]] for c in TABULAR_CATEGORICAL)
        - 0.3
    )
    yes = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    cols["label"] = np.where(yes, TABULAR_CLASSES[1], TABULAR_CLASSES[0]).astype(object)

    df = pd.DataFrame(cols)
    # pandas >= 3 infers its ``str`` dtype even from object ndarrays; keep plain objects.
    str_cols = TABULAR_CATEGORICAL + ["label"]
    df[str_cols] = df[str_cols].astype(object)
    return df


def make_tabular_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), TABULAR_NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), TABULAR_CATEGORICAL),
        ]
    )
    clf = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
    return Pipeline([("preprocess", pre), ("model", clf)])


# --------------------------------------------------------------------------------------
# spam: synthetic data
# --------------------------------------------------------------------------------------

SPAM_FEATURES = ["feature1", "feature2", "feature3"]
SPAM_CLASSES = ("ham", "spam")

_SPAM_WORDS = (
    "free win winner prize click offer cash urgent claim limited deal money credit guaranteed "
    "congratulations selected bonus discount reward loan casino exclusive voucher gift entry award "
    "ringtone mobile sale cheap subscribe unsubscribe txt reply stop spam"
).split()
_SPAM_PHRASES = (
    "this is spam",
    "this is spam",
    "click here",
    "claim your prize now",
    "you have won",
    "free entry",
    "limited time offer",
    "call now",
    "act now",
    "100% FREE",
    "win cash",
    "URGENT reply needed",
    "visit http://win-big.example.com/claim",
    "txt WIN to 80082",
    "cash bonus waiting",
    "you are a winner",
    "click the link www.free-offer.example.net",
    "exclusive deal for you",
    "$1000 prize",
    "reply STOP to unsubscribe",
)
_HAM_WORDS = (
    "meeting lunch tomorrow report thanks review project team dinner home later weekend mom office "
    "schedule notes draft deadline coffee tonight sorry late ok sure love game movie bus train "
    "doctor attached budget slides agenda week friday monday"
).split()
_HAM_PHRASES = (
    "are we still meeting for lunch tomorrow",
    "are we still meeting for lunch tomorrow",
    "thanks for the report",
    "see you at the meeting",
    "can you review the draft",
    "running late",
    "call me when you get home",
    "let me know what you think",
    "the slides are attached",
    "happy birthday",
    "see you tonight",
    "what time is dinner",
    "i will send the notes later",
    "can we move the meeting to friday",
    "thanks again",
    "the report is due at 5pm",
    "did that email go to spam",
)
_COMMON = (
    "the a to you your for is are we i and this it on in at with now today get just please call "
    "me my have be will can of that so what when there here our new time"
).split()


def _spam_world() -> dict:
    w = np.random.default_rng(SPAM_WORLD_SEED)
    vocab = {}
    # Word frequencies are skewed; phrase frequencies flatter, so that every phrase (the
    # manifest's examples included) is well represented. Phrases listed twice are boosted.
    for key, items in (
        ("spam_w", _SPAM_WORDS),
        ("spam_p", _SPAM_PHRASES),
        ("ham_w", _HAM_WORDS),
        ("ham_p", _HAM_PHRASES),
        ("common", _COMMON),
    ):
        alpha = 4.0 if key.endswith("_p") else 1.5
        vocab[key] = (np.asarray(items, dtype=object), w.dirichlet(np.full(len(items), alpha)))
    return vocab


# Per token slot: probability of drawing from [own phrases, own words, other class's words,
# other class's phrases, common words].
_MIX = {
    "spam": np.array([0.15, 0.31, 0.06, 0.02, 0.46]),
    "ham": np.array([0.13, 0.33, 0.05, 0.02, 0.47]),
}


def make_spam_frame(n: int, seed: int = TRAIN_SEED, spam_rate: float = 0.35) -> pd.DataFrame:
    """``n`` synthetic messages: feature1 (float), feature2 (text, object dtype), feature3
    (float), label (ham/spam). Text is the main signal; the numerics are weakly informative;
    3 % of the labels are flipped so that probabilities are not all 0/1."""
    world = _spam_world()
    rng = np.random.default_rng(seed)
    is_spam = rng.random(n) < spam_rate
    n_tokens = 3 + rng.poisson(4.0, n)
    total = int(n_tokens.sum())
    u_source = rng.random(total)
    u_item = rng.random(total)
    u_case = rng.random(total)
    u_bang = rng.random(n)

    # Vectorised draw of every token: which source list, then which item of that list.
    msg = np.repeat(np.arange(n), n_tokens)
    tok_spam = is_spam[msg]
    tokens = np.empty(total, dtype=object)
    for cls, mask in (("spam", tok_spam), ("ham", ~tok_spam)):
        other = "ham" if cls == "spam" else "spam"
        srcs = [
            world[f"{cls}_p"],
            world[f"{cls}_w"],
            world[f"{other}_w"],
            world[f"{other}_p"],
            world["common"],
        ]
        src = np.searchsorted(np.cumsum(_MIX[cls]), u_source, side="right").clip(0, len(srcs) - 1)
        for k, (items, p) in enumerate(srcs):
            sel = mask & (src == k)
            item = np.searchsorted(np.cumsum(p), u_item[sel], side="right").clip(0, len(items) - 1)
            tokens[sel] = items[item]
    upper = tok_spam & (u_case < 0.15)
    tokens[upper] = [t.upper() for t in tokens[upper]]
    cap = ~upper & (u_case > 0.97)
    tokens[cap] = [t.capitalize() for t in tokens[cap]]

    bounds = np.concatenate([[0], np.cumsum(n_tokens)])
    texts = []
    for i in range(n):
        text = " ".join(tokens[bounds[i] : bounds[i + 1]])
        if u_bang[i] < (0.35 if is_spam[i] else 0.05):
            text += "!!!"
        elif u_bang[i] > 0.8:
            text += "." if is_spam[i] else "?"
        texts.append(text)

    flip = rng.random(n) < 0.03
    label_spam = is_spam ^ flip
    # Weak numeric signal, driven by the true (unflipped) class.
    feature1 = rng.normal(np.where(is_spam, 0.4, 0.0), 1.0)
    feature3 = rng.normal(np.where(is_spam, 1.6, 1.3), 1.0)
    df = pd.DataFrame(
        {
            "feature1": np.round(feature1, 3),
            "feature2": np.asarray(texts, dtype=object),
            "feature3": np.round(feature3, 3),
            "label": np.where(label_spam, "spam", "ham").astype(object),
        }
    )
    df[["feature2", "label"]] = df[["feature2", "label"]].astype(object)
    return df


# --------------------------------------------------------------------------------------
# text: the spam messages alone, for a plain scikit-learn Pipeline (no custom code)
# --------------------------------------------------------------------------------------

TEXT_FEATURES = ["text"]
TEXT_CLASSES = SPAM_CLASSES


def make_text_frame(n: int, seed: int = TRAIN_SEED) -> pd.DataFrame:
    """``n`` short messages: ``text`` (object dtype) and ``label`` (ham/spam), drawn like
    :func:`make_spam_frame`'s ``feature2`` (same vocabulary, same 3 % label noise)."""
    df = make_spam_frame(n, seed=seed)
    out = pd.DataFrame(
        {"text": df["feature2"].to_numpy(dtype=object), "label": df["label"].to_numpy(dtype=object)}
    )
    out[["text", "label"]] = out[["text", "label"]].astype(object)
    return out


def make_text_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    # A bare TfidfVectorizer fed a DataFrame would iterate over its column names: select the
    # column (a scalar name, so the vectorizer gets a 1-D series of strings).
    pre = ColumnTransformer(
        [("tfidf", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), "text")]
    )
    return Pipeline([("preprocess", pre), ("model", LogisticRegression(C=4, max_iter=1000))])


def load_first_code():
    """The spam bundle's ``code/first_code.py`` as a module, without touching ``sys.path``."""
    path = BUNDLES_DIR / "spam" / "code" / "first_code.py"
    name = "_bundles_spam_first_code"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------
# spark and h2o: the tabular world on fewer columns, for models scored on the JVM
# --------------------------------------------------------------------------------------

JVM_NUMERIC = TABULAR_NUMERIC[:6]
JVM_CATEGORICAL = ["c1", "c2"]
JVM_FEATURES = JVM_NUMERIC + JVM_CATEGORICAL
JVM_CLASSES = TABULAR_CLASSES
JVM_REFERENCE_ROWS = 200
JVM_SAMPLE_ROWS = 20  # sample.csv: the reference rows before the first edge case


def make_jvm_frame(n: int, seed: int = TRAIN_SEED) -> pd.DataFrame:
    """``n`` rows of the tabular world, restricted to f0..f5 (float), c1 (5 levels), c2 (6 levels)
    (object-dtype strings) and ``label`` (no/yes)."""
    return make_tabular_frame(n, seed=seed)[[*JVM_FEATURES, "label"]].copy()


def unseen_level(column: str) -> str:
    """A level of categorical ``column`` that no training row has (``c1_99``)."""
    return f"{column}_99"


def jvm_reference_frame(n: int = JVM_REFERENCE_ROWS) -> pd.DataFrame:
    """Scoring rows (no label) for the spark and h2o bundles, numerics rounded to 3 decimals.

    Rows 0..19 are ordinary draws (``sample.csv``, the manifests' ``sample_input``). From row 20 on,
    every 25 rows: one with an unseen c1 level (row % 25 == 10), one with an unseen c2 level
    (== 15), one with f0 missing (== 20), one with f3 and f5 missing (== 5); the last row has
    every number missing and both levels unseen.
    """
    df = make_tabular_frame(n, seed=SAMPLE_CSV_SEED)[JVM_FEATURES].copy()
    df[JVM_NUMERIC] = df[JVM_NUMERIC].round(3)
    for i in range(JVM_SAMPLE_ROWS, n):
        k = i % 25
        if k == 10:
            df.loc[i, "c1"] = unseen_level("c1")
        elif k == 15:
            df.loc[i, "c2"] = unseen_level("c2")
        elif k == 20:
            df.loc[i, "f0"] = np.nan
        elif k == 5:
            df.loc[i, ["f3", "f5"]] = np.nan
    if n > JVM_SAMPLE_ROWS:
        df.loc[n - 1, JVM_NUMERIC] = np.nan
        df.loc[n - 1, JVM_CATEGORICAL] = [unseen_level(c) for c in JVM_CATEGORICAL]
    df[JVM_CATEGORICAL] = df[JVM_CATEGORICAL].astype(object)
    return df


# --------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dump(obj, path: Path) -> None:
    """Uncompressed joblib dump, written atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        joblib.dump(obj, tmp, compress=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(text.encode("utf-8"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_sources(name: str, dest: Path) -> None:
    """Copy a bundle's committed sources (code/, requirements.txt, manifest.json) to ``dest``."""
    src = BUNDLES_DIR / name
    if dest.resolve() == src.resolve():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for item in COMMITTED_SOURCES:
        s = src / item
        if s.is_dir():
            shutil.copytree(
                s, dest / item, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        elif s.is_file():
            shutil.copyfile(s, dest / item)


def _strip_machine_state(hgb) -> None:
    # HistGradientBoosting stores the OpenMP thread count it fitted with in its internal
    # _BinMapper, so the pickle differed between a 1-core and a 2-core machine (the trees
    # themselves are identical). The binner is only used to bin training data; None is its
    # constructor default ("use all available threads").
    bin_mapper = getattr(hgb, "_bin_mapper", None)
    if bin_mapper is not None and hasattr(bin_mapper, "n_threads"):
        bin_mapper.n_threads = None


def build_tabular(dest: Path, rows: int = 50_000) -> dict[str, str]:
    """Train the tabular pipeline and write ``dest/artifacts/model.joblib``. Returns {file: sha256}."""
    dest = Path(dest)
    df = make_tabular_frame(rows, seed=TRAIN_SEED)
    model = make_tabular_pipeline().fit(df[TABULAR_FEATURES], df["label"])
    if list(model.classes_) != list(TABULAR_CLASSES):
        raise RuntimeError(f"tabular model learned classes {list(model.classes_)}; use more --rows")
    _strip_machine_state(model[-1])
    out = dest / "artifacts" / "model.joblib"
    _dump(model, out)
    return {"artifacts/model.joblib": sha256_file(out)}


def make_spam_models(df: pd.DataFrame):
    """Fit (vectorizer, classifier) on a frame from :func:`make_spam_frame`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    fc = load_first_code()
    clean = df.assign(feature2=fc.clean_text(df["feature2"]))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    vectorizer.fit(clean["feature2"].tolist())
    model = LogisticRegression(C=4, max_iter=1000)
    model.fit(fc.build_features(clean, vectorizer), df["label"].to_numpy(dtype=object))
    if list(model.classes_) != list(SPAM_CLASSES):
        raise RuntimeError(f"spam model learned classes {list(model.classes_)}; use more --rows")
    return vectorizer, model


def _strip_process_state(vectorizer) -> None:
    # build_analyzer() (run by fit/transform) caches ``id(self.stop_words)`` -- a memory
    # address that differs between processes -- which would make the pickle bytes differ
    # (scikit-learn issue #18669). It is only a cache: sklearn recomputes it on first use.
    vectorizer.__dict__.pop("_stop_words_id", None)


def spam_sample_frame(n: int = 20) -> pd.DataFrame:
    """The rows of ``spam/sample.csv``: the vendor's curl example, a lunch message, then synthetic."""
    head = pd.DataFrame(
        {
            "feature1": [1.0, 0.2],
            "feature2": ["this is spam", "are we still meeting for lunch tomorrow"],
            "feature3": [2.0, 1.1],
        }
    )
    rest = make_spam_frame(max(n - 2, 0), seed=SAMPLE_CSV_SEED)[SPAM_FEATURES]
    df = pd.concat([head, rest], ignore_index=True).head(n)
    df["feature2"] = df["feature2"].astype(object)
    return df


def build_spam(dest: Path, rows: int = 20_000) -> dict[str, str]:
    """Train the spam models; write ``dest/artifacts/{first,second}_model.pkl`` and
    ``dest/sample.csv``. Returns {file: sha256}."""
    dest = Path(dest)
    df = make_spam_frame(rows, seed=TRAIN_SEED)
    vectorizer, model = make_spam_models(df)
    _strip_process_state(vectorizer)
    first, second = dest / "artifacts" / "first_model.pkl", dest / "artifacts" / "second_model.pkl"
    _dump(vectorizer, first)
    _dump(model, second)
    sample = dest / "sample.csv"
    _write_text(sample, spam_sample_frame().to_csv(index=False, lineterminator="\n"))
    return {
        "artifacts/first_model.pkl": sha256_file(first),
        "artifacts/second_model.pkl": sha256_file(second),
        "sample.csv": sha256_file(sample),
    }


def build_text(dest: Path, rows: int = 20_000) -> dict[str, str]:
    """Train the text pipeline and write ``dest/artifacts/model.joblib``. Returns {file: sha256}."""
    dest = Path(dest)
    df = make_text_frame(rows, seed=TRAIN_SEED)
    model = make_text_pipeline().fit(df[TEXT_FEATURES], df["label"].to_numpy(dtype=object))
    if list(model.classes_) != list(TEXT_CLASSES):
        raise RuntimeError(f"text model learned classes {list(model.classes_)}; use more --rows")
    _strip_process_state(model[0].named_transformers_["tfidf"])
    out = dest / "artifacts" / "model.joblib"
    _dump(model, out)
    return {"artifacts/model.joblib": sha256_file(out)}


# --------------------------------------------------------------------------------------
# spark and h2o builders (need the ``bundles`` extra: pyspark, h2o, Java 17; imported lazily)
# --------------------------------------------------------------------------------------

JVM_TRAIN_ROWS = 5_000
REFERENCE_DIR = "_reference"  # next to the bundles: expected outputs computed by the training tool

# Spark names every stage with a random uid (``StringIndexer_3f9c0e1a2b4d``) that ends up in
# directory names and metadata; the builder renames them to these.
SPARK_PIPELINE_UID = "PipelineModel_spark"
SPARK_STAGE_UIDS = (
    "StringIndexer_features",
    "StringIndexer_label",
    "VectorAssembler_features",
    "GBTClassifier_model",
)
_SPARK_PART_UUID = re.compile(r"^(part-\d{5})-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def jvm_spark_session():
    """The process's SparkSession for building (``local[1]``, via :func:`scorer.jvm.spark_session`).

    Spark writes one part file per partition, so a model saved from a session with more than one
    core has other files (and bytes): refuse that instead of writing a different artifact.
    """
    from scorer.jvm import spark_session

    spark = spark_session("local[1]", app_name="bundles-build")
    if spark.sparkContext.defaultParallelism != 1:
        raise RuntimeError(
            "bundles/build.py: build the spark and h2o bundles in a local[1] session (a fresh process)"
        )
    return spark


def make_spark_pipeline():
    """StringIndexer (c1, c2; unseen levels get their own index), StringIndexer on the label
    (alphabetical: index 0 = "no", 1 = "yes", the order of sklearn's ``classes_``; skipped when
    scoring rows have no label column), VectorAssembler (NaN kept), GBTClassifier."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import StringIndexer, VectorAssembler

    indexed = [f"{c}_idx" for c in JVM_CATEGORICAL]
    gbt = GBTClassifier(labelCol="label_idx", featuresCol="features", maxIter=20, maxDepth=3, seed=TRAIN_SEED)
    # pyspark's default seed is hash(class name): a different number in every process (hash
    # randomisation), and the saved metadata lists it among the defaults.
    gbt._setDefault(seed=TRAIN_SEED)
    return Pipeline(
        stages=[
            StringIndexer(inputCols=JVM_CATEGORICAL, outputCols=indexed, handleInvalid="keep"),
            StringIndexer(inputCol="label", outputCol="label_idx", stringOrderType="alphabetAsc"),
            VectorAssembler(inputCols=JVM_NUMERIC + indexed, outputCol="features", handleInvalid="keep"),
            gbt,
        ]
    )


def _canonical_spark_json(text: str, uids: dict[str, str]) -> str:
    """A Spark ML metadata record with stable uids, timestamp 0 and sorted keys. Spark writes the
    params in hash order, and the hash of a param includes its stage's (random) uid."""
    for old, new in uids.items():
        text = text.replace(old, new)
    record = json.loads(text)
    record["timestamp"] = 0
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def _rewrite_parquet(path: Path) -> None:
    """Rewrite a Parquet file Spark wrote, with pyarrow (same schema, Spark's row metadata kept).

    parquet-mr lists each column chunk's encodings from a hash set whose order changes from one
    JVM to the next, so the same rows give different footers. And each tree of an ensemble has
    its own random uid (``dtr_5a4d...``) and timestamp in its ``treesMetadata`` JSON.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if path.parent.name == "treesMetadata":
        records = []
        for tree_id, text in zip(table["treeID"].to_pylist(), table["metadata"].to_pylist(), strict=True):
            old = json.loads(text)["uid"]
            records.append(_canonical_spark_json(text, {old: f"{old.split('_')[0]}_tree{tree_id:03d}"}))
        i = table.schema.get_field_index("metadata")
        table = table.set_column(i, table.schema.field(i), pa.array(records, pa.string()))
    pq.write_table(table, path, compression="snappy", store_schema=False)


def normalise_spark_model(root: Path, uids: dict[str, str]) -> None:
    """Make a saved Spark ML model directory reproducible, byte for byte, and still loadable:
    stable uids (directory names and metadata), timestamps 0, sorted JSON keys, Parquet files
    rewritten by pyarrow, part files without their random UUID, no ``.crc`` checksums and no
    ``_SUCCESS`` markers (Spark's readers skip files starting with ``_`` or ``.``)."""
    stages = root / "stages"
    if stages.is_dir():
        for d in sorted(stages.iterdir()):
            index, _, uid = d.name.partition("_")
            d.rename(stages / f"{index}_{uids[uid]}")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name == "_SUCCESS" or (path.name.startswith(".") and path.name.endswith(".crc")):
            path.unlink()
            continue
        if path.parent.name == "metadata" and path.name.startswith("part-"):
            _write_text(path, _canonical_spark_json(path.read_text("utf-8"), uids) + "\n")
        elif path.suffix == ".parquet":
            _rewrite_parquet(path)
        stable = _SPARK_PART_UUID.sub(r"\1", path.name)
        if stable != path.name:
            path.rename(path.with_name(stable))


def _spark_outputs(model, sdf) -> pd.DataFrame:
    from pyspark.ml.functions import vector_to_array

    out = model.transform(sdf).select("prediction", vector_to_array("probability").alias("probability"))
    df = out.toPandas()
    df["probability"] = df["probability"].map(list)
    return df


def build_spark(dest: Path, rows: int = JVM_TRAIN_ROWS) -> dict[str, str]:
    """Train the Spark ML pipeline; write ``dest/artifacts/pipeline/`` (Spark's own format,
    normalised) and ``dest/sample.csv``. Returns {file: sha256}."""
    from pyspark.ml import PipelineModel

    dest = Path(dest)
    spark = jvm_spark_session()
    train = spark.createDataFrame(make_jvm_frame(rows, seed=TRAIN_SEED)).coalesce(1)
    model = make_spark_pipeline().fit(train)
    if list(model.stages[1].labels) != list(JVM_CLASSES):
        raise RuntimeError(f"spark label indexer learned {model.stages[1].labels}; use more --rows")

    reference = jvm_reference_frame()
    target = dest / "artifacts" / "pipeline"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pipeline.", dir=target.parent))
    try:
        saved = tmp / "pipeline"
        model.write().save(saved.as_uri())
        uids = {model.uid: SPARK_PIPELINE_UID} | {
            s.uid: u for s, u in zip(model.stages, SPARK_STAGE_UIDS, strict=True)
        }
        normalise_spark_model(saved, uids)
        # The normalised directory must load and score exactly like the model in memory,
        # including unseen levels, missing numbers and rows without a label column.
        sdf = spark.createDataFrame(reference)
        if not _spark_outputs(PipelineModel.load(saved.as_uri()), sdf).equals(_spark_outputs(model, sdf)):
            raise RuntimeError("the normalised Spark pipeline scores differently from the trained one")
        if target.exists():
            shutil.rmtree(target)
        saved.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    sample = dest / "sample.csv"
    _write_text(sample, reference.head(JVM_SAMPLE_ROWS).to_csv(index=False, lineterminator="\n"))
    hashes = {
        p.relative_to(dest).as_posix(): sha256_file(p) for p in sorted(target.rglob("*")) if p.is_file()
    }
    return hashes | {"sample.csv": sha256_file(sample)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrub_model_details(raw: bytes) -> bytes:
    """``experimental/modelDetails.json`` without run-time state: times and durations, model size,
    and the node/cluster tables (host, pid, memory, uptime). Sparkling Water needs the file (it
    reads parameters, metrics and histories from it) but none of these fields."""
    details = json.loads(raw)
    details["timestamp"] = 0
    output = details["output"]
    for key in ("start_time", "end_time", "run_time"):
        output[key] = 0
    for key in ("training_metrics", "validation_metrics", "cross_validation_metrics"):
        if isinstance(output.get(key), dict):
            output[key]["scoring_time"] = 0
    output["reproducibility_information_table"] = None
    for table, columns in (
        ("scoring_history", ("timestamp", "duration")),
        ("model_summary", ("model_size_in_bytes",)),
    ):
        tab = output.get(table)
        if not isinstance(tab, dict):
            continue
        names = [c["name"] for c in tab["columns"]]
        for col in columns:
            if col in names:
                j = names.index(col)
                tab["data"][j] = [0 if isinstance(v, int | float) else "" for v in tab["data"][j]]
    return json.dumps(details, separators=(",", ":")).encode()


def normalise_mojo(source: Path, out: Path) -> None:
    """Rewrite an H2O MOJO zip reproducibly: entries sorted, fixed dates and modes, the
    ``timestamp`` line of ``model.ini`` fixed, and ``experimental/modelDetails.json`` scrubbed."""
    with zipfile.ZipFile(source) as zin:
        entries = {info.filename: zin.read(info) for info in zin.infolist() if not info.is_dir()}
    ini = entries["model.ini"].decode("utf-8")
    entries["model.ini"] = re.sub(
        r"(?m)^timestamp = .*$", "timestamp = 1970-01-01T00:00:00.000Z", ini
    ).encode()
    details = "experimental/modelDetails.json"
    if details in entries:
        entries[details] = _scrub_model_details(entries[details])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w") as zout:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix
                info.external_attr = 0o644 << 16
                zout.writestr(info, entries[name])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _mojo_outputs(mojo: Path, reference: pd.DataFrame) -> pd.DataFrame:
    """``reference`` scored by the MOJO through Sparkling Water's scoring package (no H2O cluster):
    predict, no, yes. Unseen levels become NA, as H2O's own ``predict`` does."""
    from pysparkling.ml import H2OMOJOModel, H2OMOJOSettings

    spark = jvm_spark_session()
    settings = H2OMOJOSettings(convertUnknownCategoricalLevelsToNa=True)
    model = H2OMOJOModel.createFromMojo(mojo.resolve().as_uri(), settings)
    cols = ["detailed_prediction.label AS predict"] + [
        f"detailed_prediction.probabilities.{c} AS {c}" for c in JVM_CLASSES
    ]
    return model.transform(spark.createDataFrame(reference)).selectExpr(*cols).toPandas()


def build_h2o(dest: Path, rows: int = JVM_TRAIN_ROWS) -> dict[str, str]:
    """Train an H2O GBM on a local one-thread H2O cluster; write ``dest/artifacts/gbm.zip`` (the
    MOJO, normalised), ``dest/sample.csv`` and ``<out>/_reference/h2o_predictions.csv`` (the
    reference rows with H2O's own in-cluster predictions). Returns {file: sha256}."""
    import warnings

    os.environ["DO_NOT_TRACK"] = "1"  # the h2o package and its JVM report usage otherwise
    import h2o
    from h2o.estimators import H2OGradientBoostingEstimator

    dest = Path(dest)
    reference = jvm_reference_frame()
    types = {c: "real" for c in JVM_NUMERIC} | {c: "enum" for c in JVM_CATEGORICAL}
    mojo = dest / "artifacts" / "gbm.zip"
    with tempfile.TemporaryDirectory(prefix="h2o-build.", ignore_cleanup_errors=True) as tmp:
        # A port of our own (h2o.init() would otherwise join any H2O already listening on 54321)
        # and an ice root (logs, spill files) that goes away with the build.
        h2o.init(
            ip="127.0.0.1", port=_free_port(), nthreads=1, max_mem_size="1G", ice_root=tmp, verbose=False
        )
        server = h2o.connection().local_server
        try:
            h2o.no_progress()
            train = h2o.H2OFrame(
                make_jvm_frame(rows, seed=TRAIN_SEED),
                destination_frame="train",
                column_types=types | {"label": "enum"},
            )
            model = H2OGradientBoostingEstimator(
                model_id="gbm", ntrees=20, max_depth=3, learn_rate=0.1, seed=TRAIN_SEED, score_tree_interval=5
            )
            model.train(x=JVM_FEATURES, y="label", training_frame=train)
            csv = Path(tmp) / "reference.csv"
            csv.write_text(reference.to_csv(index=False, lineterminator="\n"))
            frame = h2o.upload_file(str(csv), destination_frame="reference", col_types=types)
            with warnings.catch_warnings():  # "levels not trained on": the unseen-level rows, on purpose
                warnings.simplefilter("ignore")
                predicted = model.predict(frame).as_data_frame(use_multi_thread=False)
            out = Path(tmp) / "mojo"
            out.mkdir()
            normalise_mojo(Path(model.download_mojo(path=str(out))), mojo)
        finally:
            h2o.cluster().shutdown()
            if server is not None:
                server.shutdown()  # waits for the JVM to exit, before its ice root is removed
                # The launcher puts the JVM's stdout/stderr files in a temp dir of its own and never
                # removes it.
                shutil.rmtree(getattr(server, "_tempdir", None) or tmp, ignore_errors=True)
    if list(predicted.columns) != ["predict", *JVM_CLASSES]:
        raise RuntimeError(f"H2O predicted columns {list(predicted.columns)}; use more --rows")

    scored = _mojo_outputs(mojo, reference)
    if scored["predict"].tolist() != predicted["predict"].tolist() or not np.allclose(
        scored[list(JVM_CLASSES)], predicted[list(JVM_CLASSES)], rtol=0, atol=1e-12
    ):
        raise RuntimeError("the normalised MOJO scores differently from H2O's own predict()")

    sample = dest / "sample.csv"
    _write_text(sample, reference.head(JVM_SAMPLE_ROWS).to_csv(index=False, lineterminator="\n"))
    ref = dest.parent / REFERENCE_DIR / "h2o_predictions.csv"
    ref.parent.mkdir(parents=True, exist_ok=True)
    _write_text(ref, pd.concat([reference, predicted], axis=1).to_csv(index=False, lineterminator="\n"))
    return {
        "artifacts/gbm.zip": sha256_file(mojo),
        "sample.csv": sha256_file(sample),
        f"../{REFERENCE_DIR}/h2o_predictions.csv": sha256_file(ref),
    }


BUILDERS = {
    "tabular": build_tabular,
    "spam": build_spam,
    "text": build_text,
    "spark": build_spark,
    "h2o": build_h2o,
}


def build(name: str, out: Path = BUNDLES_DIR, rows: int | None = None) -> dict[str, str]:
    """Copy sources (if ``out`` is not this directory) and build bundle ``name`` into ``out/name``."""
    dest = Path(out) / name
    copy_sources(name, dest)
    return BUILDERS[name](dest) if rows is None else BUILDERS[name](dest, rows=rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=BUNDLES_DIR, help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="BUNDLE",
        help=f"bundles to build: {', '.join(ALL_BUNDLE_NAMES)} (default: {' '.join(BUNDLE_NAMES)})",
    )
    parser.add_argument("--only", choices=ALL_BUNDLE_NAMES, help="build only this bundle")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="training rows (default: 50000 tabular, 20000 spam and text, 5000 spark and h2o)",
    )
    args = parser.parse_args(argv)
    if args.rows is not None and args.rows < 100:
        parser.error("--rows must be at least 100")
    unknown = [n for n in args.names if n not in ALL_BUNDLE_NAMES]
    if unknown:
        parser.error(f"unknown bundle {unknown[0]!r}; choose from {', '.join(ALL_BUNDLE_NAMES)}")
    names = list(dict.fromkeys(args.names + ([args.only] if args.only else []))) or list(BUNDLE_NAMES)
    # HistGradientBoosting's OpenMP threads spin-wait by default. On a small, busy machine
    # (tests, a server and benchmarks sharing 2 cores) that made the tabular build 4-8x
    # slower (~10 s -> 60-75 s); passive waiting costs ~30 % when the machine is idle but
    # keeps the busy case at ~15-20 s. Read when sklearn loads its OpenMP runtime, i.e. on
    # the first sklearn import below. Does not affect the artifacts' bytes.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    for name in names:
        t0 = time.perf_counter()
        hashes = build(name, args.out, args.rows)
        elapsed = time.perf_counter() - t0
        files = " ".join(f"{f}={h}" for f, h in hashes.items())
        print(f"{name}: {files} ({elapsed:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
