"""Deterministically (re)build the model artifacts of the example bundles.

    python bundles/build.py [--out DIR] [--only tabular|spam|text] [--rows N]

Committed per bundle: ``code/``, ``requirements.txt``, ``manifest.json``. Generated (and
gitignored): ``artifacts/*`` and ``spam/sample.csv``. With the default ``--out`` (this
directory) the artifacts are written next to the committed sources; with another ``--out``
the committed sources are copied to ``DIR/<bundle>/`` first.

The build is byte-for-byte reproducible (same sha256 across runs, processes, hash seeds and
thread counts): fixed seeds everywhere, uncompressed ``joblib.dump``, and two bits of
run-time state sklearn would otherwise pickle are normalised before dumping --
``TfidfVectorizer._stop_words_id`` (an ``id()``, i.e. a memory address) and the OpenMP
thread count in ``HistGradientBoostingClassifier._bin_mapper.n_threads``.

Importable by path (tests, benchmarks)::

    spec = importlib.util.spec_from_file_location("bundles_build", "bundles/build.py")
    build = importlib.util.module_from_spec(spec); spec.loader.exec_module(build)
    df = build.make_spam_frame(1000, seed=1)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

BUNDLES_DIR = Path(__file__).resolve().parent
BUNDLE_NAMES = ("tabular", "spam", "text")
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


BUILDERS = {"tabular": build_tabular, "spam": build_spam, "text": build_text}


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
    parser.add_argument("--only", choices=BUNDLE_NAMES, help="build only this bundle")
    parser.add_argument(
        "--rows", type=int, default=None, help="training rows (default: 50000 tabular, 20000 spam and text)"
    )
    args = parser.parse_args(argv)
    if args.rows is not None and args.rows < 100:
        parser.error("--rows must be at least 100")
    # HistGradientBoosting's OpenMP threads spin-wait by default. On a small, busy machine
    # (tests, a server and benchmarks sharing 2 cores) that made the tabular build 4-8x
    # slower (~10 s -> 60-75 s); passive waiting costs ~30 % when the machine is idle but
    # keeps the busy case at ~15-20 s. Read when sklearn loads its OpenMP runtime, i.e. on
    # the first sklearn import below. Does not affect the artifacts' bytes.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    for name in [args.only] if args.only else BUNDLE_NAMES:
        t0 = time.perf_counter()
        hashes = build(name, args.out, args.rows)
        elapsed = time.perf_counter() - t0
        files = " ".join(f"{f}={h}" for f, h in hashes.items())
        print(f"{name}: {files} ({elapsed:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
