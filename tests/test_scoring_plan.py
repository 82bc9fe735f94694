"""Scoring plans end to end: chosen at load, verified, stored as data, loaded without scikit-learn.

Real bundles (the tabular example, and pipelines fitted here), real ``scorer`` processes for the CLI and
the server, the pipeline's own scikit-learn answers as the reference.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from conftest import BundleFactory, run_server
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.sklearn_plan import store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _options(cache: Path, mode: str = "auto") -> LoadOptions:
    return LoadOptions(plan_cache=str(cache), scoring_plan=mode)  # type: ignore[arg-type]


def _tabular_rows(build_module: Any, n: int, seed: int) -> pd.DataFrame:
    frame = build_module.make_tabular_frame(n, seed=seed)[build_module.TABULAR_FEATURES].reset_index(drop=True)
    frame.loc[::7, "f3"] = np.nan
    frame.loc[::11, "c3"] = "never-seen-level"
    return frame


def _assert_same(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    assert list(ours.columns) == list(theirs.columns)
    assert ours["prediction"].tolist() == theirs["prediction"].tolist()
    for column in ours.columns[1:]:
        np.testing.assert_allclose(ours[column].to_numpy(), theirs[column].to_numpy(), rtol=0, atol=1e-12)


def test_tabular_example_scores_through_a_verified_plan(example_bundles: dict[str, Path], build_module: Any,
                                                         tmp_path: Path) -> None:
    planned = Scorer.load(example_bundles["tabular"], _options(tmp_path / "plans"))
    plain = Scorer.load(example_bundles["tabular"], _options(tmp_path / "plans", "off"))
    scoring = planned.metadata()["scoring"]
    assert scoring["path"] == "plan", scoring
    assert scoring["verified"]["rows"] > 20 and scoring["verified"]["difference"] is None
    assert plain.metadata()["scoring"]["path"] == "scikit-learn"
    rows = _tabular_rows(build_module, 2000, seed=4242)
    _assert_same(planned.score(rows), plain.score(rows))
    # the server's columnar path gives the same columns, dtypes included, as the frame path
    table = planned.prepare(rows)
    columns = planned.predict_table(table).columns
    expected = plain.predict_table(plain.prepare(rows)).columns
    assert {k: np.asarray(v).dtype for k, v in columns.items()} == {k: np.asarray(v).dtype for k, v in expected.items()}
    assert type(columns["prediction"][0]) is type(expected["prediction"][0])


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


def _compile(bundle: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    return subprocess.run([sys.executable, "-m", "scorer.cli", "bundle", "compile", str(bundle),
                           "--plan-cache", str(cache), *args], capture_output=True, text=True, env=env, timeout=180)


LOAD_AND_SCORE = """
import json, sys
from scorer.core import Scorer
from scorer.load_options import LoadOptions
s = Scorer.load(sys.argv[1] if len(sys.argv) > 1 else {bundle!r}, LoadOptions(plan_cache={cache!r}))
import pandas as pd
rows = pd.read_json({rows!r}, orient="split")
out = s.score(rows)
heavy = sorted(m for m in ("sklearn", "scipy", "joblib") if m in sys.modules)
print(json.dumps({{"scoring": s.metadata()["scoring"], "heavy": heavy, "out": out.to_dict(orient="split")}}))
"""


def test_stored_plan_loads_without_scikit_learn(example_bundles: dict[str, Path], build_module: Any,
                                                tmp_path: Path) -> None:
    cache = tmp_path / "plans"
    done = _compile(example_bundles["tabular"], cache)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scoring"]["path"] == "plan" and Path(report["scoring"]["cache"]) == cache
    rows = _tabular_rows(build_module, 300, seed=99)
    rows_file = tmp_path / "rows.json"
    rows.to_json(rows_file, orient="split")
    run = _python(LOAD_AND_SCORE.format(bundle=str(example_bundles["tabular"]), cache=str(cache), rows=str(rows_file)))
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.splitlines()[-1])
    assert answer["scoring"]["reason"] == "stored plan"
    assert answer["heavy"] == [], answer["heavy"]  # neither scikit-learn nor scipy nor joblib was imported
    out = pd.DataFrame(answer["out"]["data"], columns=answer["out"]["columns"])
    expected = Scorer.load(example_bundles["tabular"], _options(tmp_path / "other", "off")).score(rows)
    _assert_same(out, expected)


def _plan_folder(cache: Path) -> Path:
    folders = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == 1, folders
    return folders[0]


def test_a_corrupted_stored_plan_is_ignored_and_compiled_again(example_bundles: dict[str, Path],
                                                               tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "plans"
    assert _compile(example_bundles["tabular"], cache).returncode == 0
    arrays = _plan_folder(cache) / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0x01
    arrays.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="scorer.scoring_plan"):
        scorer = Scorer.load(example_bundles["tabular"], _options(cache))
    assert "checksum mismatch" in caplog.text
    assert scorer.metadata()["scoring"]["reason"] == "every step compiled"  # compiled anew, and stored again
    assert store.load(cache, scorer.bundle.digest) is not None


class _Plant:
    """Unpickling this writes a file: proof that a pickle in the cache would run code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.marker).write_text, ("ran",))


def test_a_pickle_planted_in_the_cache_never_runs(example_bundles: dict[str, Path], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "plans"
    assert _compile(example_bundles["tabular"], cache).returncode == 0
    folder = _plan_folder(cache)
    marker = tmp_path / "pwned"
    payload = np.array([_Plant(str(marker))], dtype=object)
    pickle.loads(pickle.dumps(_Plant(str(marker))))  # the payload does run when unpickled...
    assert marker.exists()
    marker.unlink()
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    arrays[next(iter(arrays))] = payload
    with zipfile.ZipFile(folder / "arrays.npz", "w") as out:  # an object array is stored as a pickle
        for name, value in arrays.items():
            with out.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, value, allow_pickle=True)
    # a consistent checksum, as an attacker with write access to the folder would make it
    (folder / "checksum").write_text(store._checksum((folder / "plan.json").read_bytes(),
                                                     (folder / "arrays.npz").read_bytes()) + "\n")
    with caplog.at_level("WARNING", logger="scorer.scoring_plan"):
        scorer = Scorer.load(example_bundles["tabular"], _options(cache))
    assert not marker.exists()  # ...but loading the plan never unpickles it
    assert "stored plan ignored" in caplog.text and "cannot be read" in caplog.text
    assert scorer.metadata()["scoring"]["reason"] == "every step compiled"


def _unsupported_bundle(bundle_factory: BundleFactory) -> Path:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = np.where(X["a"] * X["b"] > 0, "same", "different")
    model = make_pipeline(PolynomialFeatures(2), LogisticRegression()).fit(X, y)
    return bundle_factory("poly", artifacts={"model.pkl": model},
                          manifest={"sample_input": {"columns": ["a", "b"], "data": [[0.5, -1.0], [1.0, 2.0]]}})


def test_a_step_without_a_plan_serves_through_scikit_learn_and_says_why(bundle_factory: BundleFactory,
                                                                         tmp_path: Path) -> None:
    bundle = _unsupported_bundle(bundle_factory)
    with run_server(bundle, env={"SCORER_PLAN_CACHE": str(tmp_path / "plans")}) as server:
        meta = requests.get(server.url + "/metadata", timeout=10).json()
        answer = requests.post(server.url + "/predict", json={"columns": ["a", "b"], "data": [[1.0, 1.0]]}, timeout=10)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["prediction"] == "same"
    assert meta["scoring"]["path"] == "scikit-learn"
    assert "PolynomialFeatures" in meta["scoring"]["reason"]
    assert "no plan: PolynomialFeatures" in server.log()
    refused = _compile(bundle, tmp_path / "plans")
    assert refused.returncode == 3
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("scorer: ") and "PolynomialFeatures" in last, refused.stderr


def _frozen_objects(server: Any) -> float:
    """The server's scorer_heap_frozen_objects: objects its garbage collector no longer scans."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    values = [float(line.split()[1]) for line in text.splitlines() if line.startswith("scorer_heap_frozen_objects ")]
    assert len(values) == 1, text
    return values[0]


def test_served_plan_answers_as_scikit_learn_does(example_bundles: dict[str, Path], build_module: Any,
                                                  tmp_path: Path) -> None:
    """Real servers with and without plans answer alike. Each, once loaded, has moved the objects of what it
    imported and loaded (scikit-learn and pandas: several hundred thousand) out of the collector's scans;
    a server from a stored plan imports far less."""
    rows = _tabular_rows(build_module, 64, seed=5)
    body = {"columns": list(rows.columns), "data": json.loads(rows.to_json(orient="values"))}
    answers = {}
    frozen = {}
    for mode in ("auto", "off", "stored"):
        env = {"SCORER_PLAN_CACHE": str(tmp_path / "plans"), "SCORER_SCORING_PLAN": "auto" if mode == "stored" else mode}
        with run_server(example_bundles["tabular"], env=env) as server:
            scoring = requests.get(server.url + "/metadata", timeout=10).json()["scoring"]
            assert scoring["path"] == ("scikit-learn" if mode == "off" else "plan")
            assert (scoring["reason"] == "stored plan") == (mode == "stored")
            frozen[mode] = _frozen_objects(server)
            if mode == "stored":
                continue
            one = [requests.post(server.url + "/predict", json={"columns": body["columns"], "data": [row]},
                                 timeout=10).json()["predictions"][0] for row in body["data"][:8]]
            answers[mode] = (requests.post(server.url + "/predict", json=body, timeout=10).json()["predictions"], one)
    ours, theirs = answers["auto"], answers["off"]
    _assert_same(pd.DataFrame(ours[0]), pd.DataFrame(theirs[0]))
    _assert_same(pd.DataFrame(ours[1]), pd.DataFrame(theirs[1]))
    assert frozen["auto"] > 100_000 and frozen["off"] > 100_000, frozen
    assert 0 < frozen["stored"] < frozen["auto"] / 2, frozen
