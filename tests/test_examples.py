"""The shipped example bundles: rebuilt deterministically by bundles/build.py, and loadable."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scorer.core import Scorer

REPO = Path(__file__).resolve().parent.parent


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _all_examples(example_bundles: dict[str, Path], build_module: Any) -> dict[str, Path]:
    """Every bundle bundles/build.py makes (the fixture's build writes all of them side by side)."""
    root = next(iter(example_bundles.values())).parent
    return {name: root / name for name in build_module.BUNDLE_NAMES}


def test_build_is_byte_identical_across_processes(example_bundles: dict[str, Path], build_module: Any,
                                                  tmp_path: Path) -> None:
    """A second build in a fresh process (different hash seed, one thread) writes byte-identical files,
    for every bundle build.py knows (tabular, spam, text)."""
    env = {"PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(REPO / "bundles" / "build.py"), "--out", str(tmp_path)], check=True, env=env)
    bundles = _all_examples(example_bundles, build_module)
    assert {"tabular", "spam", "text"} <= set(bundles)
    for name, first in bundles.items():
        second = _hashes(tmp_path / name)
        assert any(k.startswith("artifacts/") for k in second)
        assert second == _hashes(first), name
        assert Scorer.load(first).bundle.digest == Scorer.load(tmp_path / name).bundle.digest


@pytest.mark.fast
def test_spam_bundle_has_the_vendor_layout(example_bundles: dict[str, Path]) -> None:
    """artifacts/first_model.pkl + second_model.pkl, code/first_code.py + custom_preprocess.py, requirements.txt."""
    root = example_bundles["spam"]
    for rel in ("artifacts/first_model.pkl", "artifacts/second_model.pkl", "code/first_code.py",
                "code/custom_preprocess.py", "requirements.txt"):
        assert (root / rel).is_file(), rel


@pytest.mark.fast
def test_example_predictions_make_sense(example_bundles: dict[str, Path]) -> None:
    """The vendor's curl row is spam, an ordinary message is ham; the tabular bundle (no custom code)
    gives prediction + one probability per class that sum to one."""
    spam = Scorer.load(example_bundles["spam"])
    out = spam.score(pd.DataFrame({"feature1": [1.0, 1.0], "feature2": ["this is spam", "are we still meeting for lunch tomorrow"],
                                   "feature3": [2.0, 2.0]}))
    assert out["prediction"].tolist() == ["spam", "ham"]
    tabular = Scorer.load(example_bundles["tabular"])
    assert tabular.bundle.custom_code() is None
    sample = tabular.bundle.manifest.sample_input
    assert sample is not None
    result = tabular.score(pd.DataFrame(sample["data"], columns=sample["columns"]))
    assert list(result.columns) == ["prediction", "probability_no", "probability_yes"]
    assert ((result["probability_no"] + result["probability_yes"]).round(9) == 1).all()


@pytest.mark.fast
def test_text_bundle_is_a_plain_pipeline(example_bundles: dict[str, Path], build_module: Any) -> None:
    """The text bundle (TF-IDF + LogisticRegression Pipeline, no custom code) scores its manifest's sample:
    prediction + probability_ham/probability_spam, spam for the vendor's row, ham for the lunch message."""
    text = Scorer.load(_all_examples(example_bundles, build_module)["text"])
    assert text.bundle.custom_code() is None
    sample = text.bundle.manifest.sample_input
    assert sample is not None and sample["columns"] == ["text"]
    result = text.score(pd.DataFrame(sample["data"], columns=sample["columns"]))
    assert list(result.columns) == ["prediction", "probability_ham", "probability_spam"]
    assert result["prediction"].tolist()[:2] == ["spam", "ham"]
    assert ((result["probability_ham"] + result["probability_spam"]).round(9) == 1).all()


def test_committed_spark_bundle_is_what_the_script_builds(tmp_path: Path) -> None:
    """bundles/spark is committed (rebuilding needs Spark); a rebuild in a fresh process writes the same bytes.
    (bundles/h2o is checked the same way by hand: training it needs the h2o package, not a test dependency.)"""
    env = {"PYTHONHASHSEED": "777", "PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items() if k == "JAVA_HOME"}}
    subprocess.run([sys.executable, str(REPO / "bundles" / "build.py"), "spark", "--out", str(tmp_path)], check=True,
                   env=env)
    committed = REPO / "bundles" / "spark"
    rebuilt = _hashes(tmp_path / "spark")
    assert any(k.startswith("artifacts/pipeline/stages/") for k in rebuilt)
    assert rebuilt == {k: v for k, v in _hashes(committed).items() if k in rebuilt}
    assert set(rebuilt) == {k for k in _hashes(committed) if not k.startswith("code/")}
