"""Reloads without downtime, on real ``scorer serve`` processes (one process, and a supervisor with two
workers): a new version swapped in when its folder is replaced, a ``current`` symlink moves, a
ConfigMap-style ``..data`` link is swapped, a ``.zip`` is overwritten, on SIGHUP and on ``POST
/admin/reload``; a broken version rejected while the old one serves on.

While a swap happens, clients score in a loop: every answer must be 2xx, and its predictions must equal,
row for row, the in-process predictions of the version its ``X-Model-Digest`` names (the two versions of
a test give different predictions for the same rows)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from conftest import LiveServer, run_server
from reload_load import Load, Oracle  # type: ignore[import-not-found]
from scorer.core import Scorer

MODEL = """
    import time
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def load(self, artifacts_dir):
            if (artifacts_dir / "slow_load.txt").exists():  # "<seconds> <marker file to write first>"
                seconds, marker = (artifacts_dir / "slow_load.txt").read_text().split()
                open(marker, "w").close()
                time.sleep(float(seconds))
            text = (artifacts_dir / "offset.txt").read_text()
            if text == "raise-in-load":
                raise RuntimeError("this version cannot load")
            self.broken = text == "raise-in-predict"
            self.fails_on_3 = text == "raise-on-serving-sample"
            self.offset = 0.0 if self.broken or self.fails_on_3 else float(text)

        def predict(self, df):
            time.sleep(0.01)  # model calls that take a while: requests straddle every swap
            if self.broken or (self.fails_on_3 and (df["a"] == 3).any()):
                raise ValueError("this version cannot score")
            return pd.DataFrame({"y": df["a"] * 2 + df["b"] + self.offset})
"""

ROWS = pd.DataFrame({"a": [float(i) for i in range(8)], "b": [0.5 * i for i in range(8)]})
BODY = json.dumps({"columns": ["a", "b"], "data": ROWS.values.tolist()})
TOKEN = "reload-test-token"


def write_version(root: Path, version: str, offset: str) -> Path:
    """A bundle folder: y = 2a + b + offset. Broken versions (``offset``): "raise-in-load"; "raise-in-predict";
    "raise-on-serving-sample" (fails on rows with a == 3, which its own sample lacks but the others' has)."""
    sample = [[1.0, 2.0]] if offset == "raise-on-serving-sample" else [[1.0, 2.0], [3.0, 4.0]]
    (root / "artifacts").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(textwrap.dedent(MODEL))
    (root / "artifacts" / "offset.txt").write_text(offset)
    (root / "manifest.json").write_text(json.dumps({
        "name": "reload-test", "version": version,
        "sample_input": {"columns": ["a", "b"], "data": sample},
    }))
    return root


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return target


class Versions:
    """Version folders made in a work dir, and the in-process predictions of each, by content digest."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.expected: dict[str, list[float]] = {}
        self.oracles: dict[str, Oracle] = {}

    def make(self, version: str, offset: str) -> Path:
        root = write_version(self.work / f"{version}-{len(self.expected)}-{time.monotonic_ns()}", version, offset)
        return root

    def digest(self, path: Path) -> str:
        """Loads ``path`` in this process: its digest, and its predictions remembered."""
        scorer = Scorer.load(path)
        digest = f"sha256:{scorer.bundle.digest}"
        self.expected[digest] = [float(v) for v in scorer.score(ROWS)["y"]]
        self.oracles[digest] = scorer.score
        return digest


@pytest.fixture
def versions(tmp_path: Path) -> Versions:
    (tmp_path / "work").mkdir()
    return Versions(tmp_path / "work")


def move_link(link: Path, target: Path) -> None:
    """Point the symlink ``link`` at ``target`` in one step (a new link renamed over it), as deployments do."""
    tmp_link = link.with_name(link.name + ".tmp")
    tmp_link.symlink_to(target)
    os.replace(tmp_link, link)


def clients(url: str, **kwargs: Any) -> Load:
    """8 clients scoring ROWS (every other one sending its body slowly, so requests hold their version across
    a swap) and a readiness probe; ``wait_for`` lingers 0.5 s (answers from both sides of the swap)."""
    return Load(url, clients=8, max_seconds=60, rows=ROWS.values.tolist(), slow=True, probe_ready=True, linger=0.5,
                **kwargs)


def get_json(server: LiveServer, path: str, **headers: str) -> Any:
    r = requests.get(server.url + path, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text ``text``, or None."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def wait_until(condition: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    return int(request.param)


# How a change is detected is the same code in one process and in each worker of a supervisor: tests of one
# more kind of source run with 2 workers only (the case with more to go wrong); how a swap spreads across
# workers and what one process does alone are tested with both counts by the folder, SIGHUP, admin and
# broken-version tests.
TWO_WORKERS_ONLY = pytest.mark.parametrize("workers", [2], ids=["2-workers"])


@pytest.fixture
def serve(tmp_path: Path, workers: int) -> Callable[..., Any]:
    def start(source: Path, *args: str, **kwargs: Any) -> Any:
        return run_server(source, "--workers", str(workers), *args, log_dir=tmp_path, **kwargs)

    return start


def swap_dir(new: Path, target: Path) -> None:
    """Replace the folder ``target`` by ``new``: the old one renamed away, the new one renamed in."""
    old = target.with_name(target.name + f".old-{time.monotonic_ns()}")
    os.rename(target, old)
    os.rename(new, target)


def check_after_swap(server: LiveServer, digest: str, version: str, headers: dict[str, str] | None = None) -> None:
    """/metadata and /metrics show the new version (with workers, once the retired ones have stopped accepting)."""
    # 16 answers in a row: the kernel spreads connections between workers, so a few could all come from one
    wait_until(lambda: all(get_json(server, "/metadata", **(headers or {}))["digest"] == digest for _ in range(16)),
               what="every worker on the new version")
    meta = get_json(server, "/metadata", **(headers or {}))
    assert meta["digest"] == digest and meta["model_version"] == version
    assert meta["reload"]["attempts"].get("loaded", 0) >= 1
    metrics = requests.get(server.url + "/metrics", headers=headers or {}, timeout=10).text
    assert metric(metrics, "scorer_model_info", version=version, digest=digest) == 1.0
    assert len([ln for ln in metrics.splitlines() if ln.startswith("scorer_model_info{")]) == 1, metrics
    assert (metric(metrics, "scorer_reloads_total", result="loaded") or 0) >= 1
    assert (metric(metrics, "scorer_reload_last_success_timestamp_seconds") or 0) >= meta["reload"]["last_attempt"]["at"] - 1


# --- local sources -------------------------------------------------------------------------------


def test_folder_replaced_in_place(versions: Versions, serve: Callable[..., Any], tmp_path: Path) -> None:
    v1, v2 = versions.make("v1", "0"), versions.make("v2", "100")
    d1, d2 = versions.digest(v1), versions.digest(v2)
    live = tmp_path / "model"
    shutil.copytree(v1, live)
    with serve(live, "--reload-interval", "0.2") as server:
        with clients(server.url) as load:
            load.wait_for(d1)
            swap_dir(v2, live)
            load.wait_for(d2)
        load.check(versions.oracles)
        check_after_swap(server, d2, "v2")
        assert get_json(server, "/metadata")["reload"]["last_attempt"]["trigger"] == "watch"
        server.proc.terminate()  # after a swap, the server (and every worker, old and new) still stops cleanly
        assert server.proc.wait(timeout=30) == 0, server.log()
        assert "version v1 retired" in server.log() or "retired by the supervisor" in server.log()


@TWO_WORKERS_ONLY
def test_current_symlink_moved(versions: Versions, serve: Callable[..., Any], tmp_path: Path) -> None:
    v1, v2 = versions.make("v1", "0"), versions.make("v2", "7")
    d1, d2 = versions.digest(v1), versions.digest(v2)
    current = tmp_path / "current"
    current.symlink_to(v1)
    with serve(current, "--reload-interval", "0.2") as server:
        with clients(server.url) as load:
            load.wait_for(d1)
            move_link(current, v2)
            load.wait_for(d2)
        load.check(versions.oracles)
        check_after_swap(server, d2, "v2")


def configmap_volume(volume: Path, folder: Path, stamp: str) -> None:
    """The kubelet's layout: ``..<stamp>/`` holds the files, ``..data -> ..<stamp>``, each entry a link into ``..data``;
    an update writes a new ``..<stamp>``, points ``..data_tmp`` at it and renames that over ``..data``."""
    shutil.copytree(folder, volume / f"..{stamp}")
    tmp = volume / "..data_tmp"
    tmp.symlink_to(f"..{stamp}")
    os.replace(tmp, volume / "..data")
    for entry in os.listdir(volume / f"..{stamp}"):
        link = volume / entry
        if not link.is_symlink():
            link.symlink_to(f"..data/{entry}")


@TWO_WORKERS_ONLY
def test_configmap_data_symlink_swapped(versions: Versions, serve: Callable[..., Any], tmp_path: Path) -> None:
    v1, v2 = versions.make("v1", "0"), versions.make("v2", "-3.5")
    d1, d2 = versions.digest(v1), versions.digest(v2)
    volume = tmp_path / "volume"
    volume.mkdir()
    configmap_volume(volume, v1, "2026_11_27_01_00_00.1")
    with serve(volume, "--reload-interval", "0.2") as server:
        with clients(server.url) as load:
            load.wait_for(d1)
            configmap_volume(volume, v2, "2026_11_27_01_05_00.2")
            load.wait_for(d2)
        load.check(versions.oracles)
        check_after_swap(server, d2, "v2")


@TWO_WORKERS_ONLY
def test_zip_overwritten(versions: Versions, serve: Callable[..., Any], tmp_path: Path) -> None:
    z1 = zip_folder(versions.make("v1", "0"), tmp_path / "v1.zip")
    z2 = zip_folder(versions.make("v2", "42"), tmp_path / "v2.zip")
    d1, d2 = versions.digest(z1), versions.digest(z2)
    live = tmp_path / "model.zip"
    shutil.copy(z1, live)
    with serve(live, "--reload-interval", "0.2") as server:
        with clients(server.url) as load:
            load.wait_for(d1)
            os.replace(z2, live)
            load.wait_for(d2)
        load.check(versions.oracles)
        check_after_swap(server, d2, "v2")


# --- explicit triggers ---------------------------------------------------------------------------


def test_sighup_with_polling_off(versions: Versions, serve: Callable[..., Any], tmp_path: Path) -> None:
    v1, v2 = versions.make("v1", "0"), versions.make("v2", "1000")
    d1, d2 = versions.digest(v1), versions.digest(v2)
    current = tmp_path / "current"
    current.symlink_to(v1)
    with serve(current, "--reload-interval", "0") as server:
        move_link(current, v2)
        with clients(server.url) as load:
            load.wait_for(d1)
            time.sleep(0.5)  # no polling: still v1
            assert load.digests() == {d1}
            server.proc.send_signal(signal.SIGHUP)
            load.wait_for(d2)
        load.check(versions.oracles)
        check_after_swap(server, d2, "v2")
        reload = get_json(server, "/metadata")["reload"]
        assert reload["interval_s"] == 0 and reload["last_attempt"]["trigger"] == "sighup"
        # SIGHUP again with nothing new: unchanged, still v2
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: get_json(server, "/metadata")["reload"]["attempts"].get("unchanged") == 1, what="unchanged")
        assert get_json(server, "/metadata")["digest"] == d2


def test_admin_reload(versions: Versions, serve: Callable[..., Any], workers: int, tmp_path: Path) -> None:
    v1, v2 = versions.make("v1", "0"), versions.make("v2", "5")
    d1, d2 = versions.digest(v1), versions.digest(v2)
    current = tmp_path / "current"
    current.symlink_to(v1)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve(current, "--reload-interval", "0", env={"SCORER_AUTH_TOKEN": TOKEN}) as server:
        assert requests.post(server.url + "/admin/reload", timeout=10).status_code == 401
        wrong = requests.post(server.url + "/admin/reload", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        move_link(current, v2)
        with clients(server.url, headers=auth) as load:
            load.wait_for(d1)
            r = requests.post(server.url + "/admin/reload", headers=auth, timeout=60)
            if workers == 1:
                assert r.status_code == 200, r.text
                assert r.json() == {"result": "loaded", "model_version": "v2", "digest": d2}
            else:
                assert r.status_code == 202 and r.json() == {"result": "requested"}
            load.wait_for(d2)
        load.check(versions.oracles)
        check_after_swap(server, d2, "v2", auth)
        assert get_json(server, "/metadata", **auth)["reload"]["last_attempt"]["trigger"] == "admin"
        if workers == 1:
            again = requests.post(server.url + "/admin/reload", headers=auth, timeout=60)
            assert again.status_code == 200 and again.json()["result"] == "unchanged"


def test_admin_reload_absent_without_token(versions: Versions, serve: Callable[..., Any]) -> None:
    with serve(versions.make("v1", "0")) as server:
        r = requests.post(server.url + "/admin/reload", timeout=10)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        unknown = requests.post(server.url + "/admin/nothing", timeout=10)
        assert unknown.status_code == 404 and unknown.json()["error"] == r.json()["error"]


# --- rejected versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("broken", ["raise-in-load", "raise-in-predict", "raise-on-serving-sample"])
def test_broken_version_rejected(versions: Versions, serve: Callable[..., Any], tmp_path: Path, broken: str) -> None:
    v1 = versions.make("v1", "0")
    d1 = versions.digest(v1)
    bad = versions.make("v2", broken)
    current = tmp_path / "current"
    current.symlink_to(v1)
    with serve(current, "--reload-interval", "0.2") as server:
        with clients(server.url) as load:
            load.wait_for(d1)
            move_link(current, bad)
            wait_until(lambda: get_json(server, "/metadata")["reload"]["attempts"].get("rejected", 0) >= 1,
                       what="a rejected attempt")
            assert requests.get(server.url + "/ready", timeout=10).status_code == 200
            time.sleep(0.5)
        load.check(versions.oracles)
        assert load.digests() == {d1}
        meta = get_json(server, "/metadata")
        assert meta["digest"] == d1 and meta["model_version"] == "v1"
        last = meta["reload"]["last_attempt"]
        assert last["result"] == "rejected" and last["trigger"] == "watch"
        cause = {"raise-in-load": "load() raised RuntimeError", "raise-in-predict": "scoring the manifest sample_input",
                 "raise-on-serving-sample": "failed on the serving version's sample input"}[broken]
        assert cause in last["error"] and "\n" not in last["error"]
        time.sleep(1)  # a rejected revision is not retried at every poll
        assert get_json(server, "/metadata")["reload"]["attempts"]["rejected"] == 1
        metrics = requests.get(server.url + "/metrics", timeout=10).text
        assert metric(metrics, "scorer_reloads_total", result="rejected") == 1.0
        assert metric(metrics, "scorer_model_info", version="v1", digest=d1) == 1.0
        assert metric(metrics, "scorer_source_stale_seconds") == 0.0
        assert "reload (watch) rejected" in server.log()


def test_admin_reload_rejected_names_the_cause(versions: Versions, tmp_path: Path) -> None:
    v1 = versions.make("v1", "0")
    d1 = versions.digest(v1)
    current = tmp_path / "current"
    current.symlink_to(v1)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with run_server(current, "--reload-interval", "0", env={"SCORER_AUTH_TOKEN": TOKEN}, log_dir=tmp_path) as server:
        move_link(current, versions.make("v2", "raise-in-load"))
        r = requests.post(server.url + "/admin/reload", headers=auth, timeout=60)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "reload_rejected" and "load() raised RuntimeError" in r.json()["message"]
        assert requests.get(server.url + "/ready", timeout=10).status_code == 200
        assert get_json(server, "/metadata", **auth)["digest"] == d1


def test_folder_changing_during_the_load_is_not_swapped_in(versions: Versions, tmp_path: Path) -> None:
    """A folder written to while its new version loads is rejected as changing (its revision is read again
    after the load), then loaded whole at the next poll."""
    v1, v2 = versions.make("v1", "0"), versions.make("v2", "20")
    marker = tmp_path / "load-started"
    (v2 / "artifacts" / "slow_load.txt").write_text(f"1.5 {marker}")
    final = tmp_path / "final"
    shutil.copytree(v2, final)
    (final / "artifacts" / "late.txt").write_text("written while the load ran")
    d1, d_final = versions.digest(v1), versions.digest(final)
    marker.unlink()
    live = tmp_path / "model"
    shutil.copytree(v1, live)
    with run_server(live, "--reload-interval", "0.2", log_dir=tmp_path) as server:
        swap_dir(v2, live)
        wait_until(marker.exists, what="the new version's load to start")
        (live / "artifacts" / "late.txt").write_text("written while the load ran")
        wait_until(lambda: get_json(server, "/metadata")["digest"] == d_final, what="the settled version")
        reload = get_json(server, "/metadata")["reload"]
        assert reload["attempts"] == {"rejected": 1, "loaded": 1}, reload
        assert "the source changed while the new version loaded" in server.log()
        r = requests.post(server.url + "/predict", data=BODY, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.headers["X-Model-Digest"] == d_final and r.json()["predictions"] == versions.expected[d_final]
        assert d1 != d_final


def test_source_gone_is_unavailable_and_stale(versions: Versions, serve: Callable[..., Any], tmp_path: Path) -> None:
    """A source that cannot be read (here: the folder removed) is "unavailable", not a rejection: the
    serving version goes on and the staleness grows; when it comes back with the same content, nothing changes."""
    v1 = versions.make("v1", "0")
    d1 = versions.digest(v1)
    live = tmp_path / "model"
    shutil.copytree(v1, live)
    with serve(live, "--reload-interval", "0.2") as server:
        os.rename(live, tmp_path / "away")
        wait_until(lambda: get_json(server, "/metadata")["reload"]["attempts"].get("unavailable", 0) >= 2,
                   what="unavailable attempts")
        meta = get_json(server, "/metadata")
        assert meta["reload"]["last_attempt"]["result"] == "unavailable"
        assert meta["reload"]["registry_stale_s"] is not None and meta["reload"]["registry_stale_s"] > 0
        stale = metric(requests.get(server.url + "/metrics", timeout=10).text, "scorer_source_stale_seconds")
        assert stale is not None and stale > 0
        r = requests.post(server.url + "/predict", data=BODY, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 200 and r.headers["X-Model-Digest"] == d1
        assert r.json()["predictions"] == versions.expected[d1]
        os.rename(tmp_path / "away", live)
        wait_until(lambda: get_json(server, "/metadata")["reload"]["registry_stale_s"] is None, what="reachable again")
        assert metric(requests.get(server.url + "/metrics", timeout=10).text, "scorer_source_stale_seconds") == 0.0
        assert get_json(server, "/metadata")["digest"] == d1


def test_every_answer_names_its_version(versions: Versions, tmp_path: Path) -> None:
    """Every scoring answer names its version, on /predict and /invocations."""
    v1 = versions.make("v1", "0")
    d1 = versions.digest(v1)
    with run_server(v1, log_dir=tmp_path) as server:
        for path in ("/predict", "/invocations"):
            r = requests.post(server.url + path, data=BODY, headers={"Content-Type": "application/json"}, timeout=10)
            assert r.status_code == 200
            assert r.headers["X-Model-Version"] == "v1" and r.headers["X-Model-Digest"] == d1


def test_stop_during_a_reload(versions: Versions, serve: Callable[..., Any], tmp_path: Path) -> None:
    """SIGTERM while a new version is still loading: the server stops cleanly (exit 0), the load abandoned."""
    v1, v2 = versions.make("v1", "0"), versions.make("v2", "1")
    marker = tmp_path / "load-started"
    (v2 / "artifacts" / "slow_load.txt").write_text(f"30 {marker}")
    current = tmp_path / "current"
    current.symlink_to(v1)
    with serve(current, "--reload-interval", "0") as server:
        move_link(current, v2)
        server.proc.send_signal(signal.SIGHUP)
        wait_until(marker.exists, what="the new version's load to start")
        assert requests.get(server.url + "/ready", timeout=10).status_code == 200
        started = time.monotonic()
        server.proc.terminate()
        assert server.proc.wait(timeout=25) == 0, server.log()
        assert time.monotonic() - started < 20  # not waiting for the 30 s load


@pytest.mark.fast
def test_version_header_is_one_printable_line(tmp_path: Path) -> None:
    """A manifest version with a line break (or any non-printable character) cannot split the response's
    headers: X-Model-Version carries "?" in its place."""
    from scorer.serving.coalescer import Coalescer, CoalescingPolicy
    from scorer.serving.state import Version

    root = write_version(tmp_path / "odd-version", "1.0\r\nX-Injected: yes\u00e9", "0")
    scorer = Scorer.load(root)
    version = Version(scorer, Coalescer(scorer.predict, CoalescingPolicy()))
    headers = dict(version.headers)
    assert headers[b"x-model-version"] == b"1.0??X-Injected: yes?"
    assert all(32 <= b <= 126 for value in headers.values() for b in value)
