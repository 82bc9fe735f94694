"""Bundles from object storage, against a real S3-compatible server (SeaweedFS, :mod:`seaweed`) and real
``scorer info`` / ``scorer serve`` processes: a ``.zip`` object and a prefix holding a bundle folder load
and score exactly like the local bundle; a pinned digest refuses a tampered object; wrong credentials, a
missing bucket or key are exit 3 with one line that never shows the secret; a replaced object reloads."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from conftest import BundleFactory, run_server
from scorer.core import Scorer
from seaweed import Seaweed, seaweed  # noqa: F401 - the session fixture

BUCKET = "scorer-bundles"


def zip_bytes(folder: Path, change: tuple[str, bytes, bytes] | None = None) -> bytes:
    """``folder`` as a zip; ``change`` = (member, old, new) replaces bytes in one member (a tampered copy)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                data = path.read_bytes()
                if change and change[0] == name:
                    assert change[1] in data
                    data = data.replace(change[1], change[2], 1)
                zf.writestr(name, data)
    return out.getvalue()


def scorer_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scorer.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture(scope="module")
def store(seaweed: Seaweed, example_bundles: dict[str, Path]) -> dict[str, Any]:  # noqa: F811
    """The spam bundle in the store as ``spam.zip`` and as a prefix, its digest and in-process predictions."""
    folder = example_bundles["spam"]
    client = seaweed.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="models/spam.zip", Body=zip_bytes(folder))
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=BUCKET, Key=f"prefix/spam/{path.relative_to(folder).as_posix()}",
                              Body=path.read_bytes())
    local = Scorer.load(folder)
    rows = pd.DataFrame(local.bundle.manifest.sample_input["data"],
                        columns=local.bundle.manifest.sample_input["columns"])
    expected = local.score(rows).astype(object).to_dict(orient="records")
    return {"folder": folder, "digest": f"sha256:{local.bundle.digest}", "rows": rows, "expected": expected}


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_info_from_a_zip_object(seaweed: Seaweed, store: dict[str, Any]) -> None:  # noqa: F811
    """``scorer info s3://…/spam.zip`` loads the object with the local bundle's digest and names its source."""
    uri = f"s3://{BUCKET}/models/spam.zip"
    done = scorer_cli("info", uri, "--bundle-digest", store["digest"], env=seaweed.env())
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)
    assert meta["digest"] == store["digest"]
    source = meta["source"]
    assert source["kind"] == "object" and source["uri"] == uri and source["etag"] and int(source["size"]) > 0
    assert seaweed.secret_key not in done.stdout + done.stderr


def test_serve_from_a_zip_object_with_a_pinned_digest(seaweed: Seaweed, store: dict[str, Any],  # noqa: F811
                                                      tmp_path: Path) -> None:
    """``scorer serve s3://…/spam.zip --bundle-digest <right>`` answers /predict exactly like the local bundle."""
    with run_server(f"s3://{BUCKET}/models/spam.zip", "--bundle-digest", store["digest"], env=seaweed.env(),
                    log_dir=tmp_path) as server:
        rows = store["rows"]
        r = requests.post(server.url + "/predict", json={"columns": list(rows.columns), "data": rows.values.tolist()},
                          timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == store["expected"]
        assert seaweed.secret_key not in server.log()


def test_prefix_bundle(seaweed: Seaweed, store: dict[str, Any]) -> None:  # noqa: F811
    """A prefix holding the bundle folder's files loads as that folder (same digest)."""
    done = scorer_cli("info", f"s3://{BUCKET}/prefix/spam/", "--bundle-digest", store["digest"], env=seaweed.env())
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)
    assert meta["source"]["kind"] == "object" and int(meta["source"]["objects"]) == len(
        [p for p in store["folder"].rglob("*") if p.is_file()])


def test_tampered_object_is_refused(seaweed: Seaweed, store: dict[str, Any]) -> None:  # noqa: F811
    """The object re-uploaded with one byte changed does not load under the pinned digest: exit 3, one line."""
    client = seaweed.client()
    client.put_object(Bucket=BUCKET, Key="models/tampered.zip",
                      Body=zip_bytes(store["folder"], ("code/first_code.py", b"e", b"E")))
    done = scorer_cli("info", f"s3://{BUCKET}/models/tampered.zip", "--bundle-digest", store["digest"],
                      env=seaweed.env())
    assert done.returncode == 3, done.stdout + done.stderr
    line = one_line(done.stderr)
    assert "does not match the pinned" in line and done.stdout == ""
    assert f"s3://{BUCKET}/models/tampered.zip: content digest" in line and "/scorer-object-" not in line, line


@pytest.mark.parametrize(("uri", "env", "expected"), [
    (f"s3://{BUCKET}/models/spam.zip", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "access denied"),
    ("s3://no-such-bucket-here/models/spam.zip", {}, "no such bucket 'no-such-bucket-here'"),
    (f"s3://{BUCKET}/models/missing.zip", {}, "no such object or prefix"),
    (f"s3://{BUCKET}/models/spam.zip", {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, "cannot reach the object store"),
], ids=["wrong-credentials", "missing-bucket", "missing-key", "unreachable"])
def test_load_failures_are_one_line(seaweed: Seaweed, store: dict[str, Any], uri: str,  # noqa: F811
                                    env: dict[str, str], expected: str) -> None:
    """Each failure to fetch the bundle is exit 3 with one line naming the URI and the cause, and no secret."""
    done = scorer_cli("info", uri, env=seaweed.env(**env))
    assert done.returncode == 3, done.stdout + done.stderr
    line = one_line(done.stderr)
    assert line.startswith(f"scorer: {uri}: ") and expected in line, line
    assert seaweed.secret_key not in done.stdout + done.stderr and "not-the-secret" not in done.stderr


OFFSET_MODEL = """
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float"}

        def load(self, artifacts_dir):
            self.offset = float((artifacts_dir / "offset.txt").read_text())

        def predict(self, df):
            return pd.DataFrame({"y": df["a"] + self.offset})
"""


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_replaced_object_reloads(seaweed: Seaweed, store: dict[str, Any], bundle_factory: BundleFactory,  # noqa: F811
                                 tmp_path: Path, workers: int) -> None:
    """A server polling ``s3://…/offset.zip`` (one process, and a supervisor with two workers) swaps in the
    object put over it (its ETag changed)."""
    versions = []
    for offset in ("0", "100"):
        root = bundle_factory(f"offset-{offset}", code=OFFSET_MODEL,
                              manifest={"name": "offset", "version": offset,
                                        "sample_input": {"columns": ["a"], "data": [[1.0]]}},
                              files={"artifacts/offset.txt": offset})
        versions.append((zip_bytes(root), f"sha256:{Scorer.load(root).bundle.digest}"))
    client = seaweed.client()
    key = f"reload/{workers}/offset.zip"
    client.put_object(Bucket=BUCKET, Key=key, Body=versions[0][0])
    with run_server(f"s3://{BUCKET}/{key}", "--reload-interval", "0.2", "--workers", str(workers), env=seaweed.env(),
                    log_dir=tmp_path) as server:
        def predict() -> tuple[str, float]:
            r = requests.post(server.url + "/predict", json={"columns": ["a"], "data": [[1.0]]}, timeout=10)
            assert r.status_code == 200, r.text
            return r.headers["X-Model-Digest"], r.json()["predictions"][0]

        assert predict() == (versions[0][1], 1.0)
        client.put_object(Bucket=BUCKET, Key=key, Body=versions[1][0])
        deadline = time.monotonic() + 60
        # with workers, each polls on its own: 16 answers in a row from the new version (connections are spread by the
        # kernel, so 4 could all come from one worker while the other still serves the old one)
        while any(predict()[0] != versions[1][1] for _ in range(16)):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert predict() == (versions[1][1], 101.0)
        meta = requests.get(server.url + "/metadata", timeout=10).json()
        assert meta["reload"]["last_attempt"]["trigger"] == "watch" and meta["source"]["kind"] == "object"


def test_batch_with_a_bundle_object(seaweed: Seaweed, store: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    """``scorer batch s3://…/spam.zip`` writes the same scored file, byte for byte, as with the local folder."""
    (tmp_path / "in").mkdir()
    store["rows"].to_csv(tmp_path / "in" / "rows.csv", index=False)
    outputs = {}
    for name, bundle in (("local", str(store["folder"])), ("object", f"s3://{BUCKET}/models/spam.zip")):
        done = scorer_cli("batch", bundle, "--input", str(tmp_path / "in"), "--output", str(tmp_path / name),
                          "--bundle-digest", store["digest"], "--workers", "1", env=seaweed.env())
        assert done.returncode == 0, done.stderr
        outputs[name] = {p.relative_to(tmp_path / name).as_posix(): p.read_bytes()
                         for p in (tmp_path / name).glob("rows.csv*") if p.is_file()}
    assert outputs["object"] and outputs["object"] == outputs["local"]
