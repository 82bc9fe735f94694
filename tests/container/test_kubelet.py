"""The chart's pods, run as a kubelet would run them (tests/kubelet.py) on the real Docker engine from the
objects Helm renders (tests/helm_chart.py): a rolling update under continuous load through a load
balancer loses no request; the time from pod start to Ready under the chart's probes for the sklearn
and the Spark ML bundles; the batch Job, and the Indexed Job whose 3 pods together write what one
`scorer batch` writes; the baked-image pattern (examples/bundle-image/Dockerfile built FROM the image);
and why the chart turns Service links off."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from helm_chart import merge, one, render, values_file
from kubelet import Cluster, Deployment, JobRun, LoadBalancer, Pod, pod_from_template, run_job

from .conftest import DOCKER, IMAGE_TAG, REPO, docker_build, publish
from .test_image import SPAM_ROW

TOKEN = "kubelet-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AUTH_SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "scorer-auth"}, "stringData": {"token": TOKEN}}
# Small pods for the 2-core machine: one core each, and short probe periods (the Ready times quoted
# come from test_time_to_ready_*, which keeps the chart's own probes).
LEAN = {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "tmp": {"sizeLimit": "256Mi"}}
QUICK_PROBES = {"probes": {"startup": {"periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 120},
                           "readiness": {"periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 1},
                           "liveness": {"periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 3}}}

OFFSET_MODEL = """\
import pandas as pd
import scorer


class CustomPreprocessor(scorer.CustomPreprocessor):
    input_schema = {"a": "float", "b": "float"}

    def load(self, artifacts_dir):
        self.offset = float((artifacts_dir / "offset.txt").read_text())

    def predict(self, df):
        return pd.DataFrame({"score": df["a"] + df["b"] + self.offset})
"""


def write_bundle(root: Path, offset: float) -> Path:
    """A bundle scoring ``a + b + offset``, readable by the image's user (uid 10001)."""
    (root / "code").mkdir(parents=True)
    (root / "artifacts").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(OFFSET_MODEL)
    (root / "artifacts" / "offset.txt").write_text(str(offset))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def digest_of(bundle: Path) -> str:
    from scorer.bundle import content_digest

    return f"sha256:{content_digest(bundle)}"


def image_values(image: dict[str, object]) -> dict[str, Any]:
    repository, tag = str(image["name"]).rsplit(":", 1)
    return {"image": {"repository": repository, "tag": tag}}


def private_dir() -> Path:
    """A fresh directory uid 10001 can write (a claim's stand-in)."""
    path = Path(tempfile.mkdtemp(prefix=f"{IMAGE_TAG}-kubelet-"))
    path.chmod(0o777)
    return path


class Load:
    """Keep-alive clients POSTing /predict through the load balancer without pause until stopped. Every
    answer is checked: 200, and the value the version named by its X-Model-Digest computes."""

    def __init__(self, url: str, offsets: dict[str, float], clients: int = 4) -> None:
        self.url, self.offsets = url, offsets
        self.answers: list[tuple[float, float]] = []  # (when, offset of the version that answered)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as session:
            while not self._stop.is_set():
                a, b = rng.randint(-1000, 1000) / 8, rng.randint(-1000, 1000) / 8
                try:
                    answer = session.post(self.url + "/predict", json={"a": a, "b": b}, headers=AUTH, timeout=30)
                except requests.RequestException as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                offset = self.offsets.get(answer.headers.get("X-Model-Digest", ""))
                if answer.status_code != 200 or offset is None:
                    self.failures.append(f"{answer.status_code} {answer.headers.get('X-Model-Digest')} {answer.text[:200]}")
                elif answer.json()["predictions"] != [a + b + offset]:
                    self.failures.append(f"a={a} b={b}: {answer.json()} from the version with offset {offset}")
                else:
                    self.answers.append((time.monotonic(), offset))


def test_rolling_update_under_load_fails_no_request(image: dict[str, object]) -> None:
    """Two pods serving v1 of a bundle from a claim are rolled over to v2 while 4 keep-alive clients score
    through a kube-proxy-like load balancer: each new pod is Ready before an old one is deleted, the old
    one leaves the endpoints (1 s later, as kube-proxy learns it), its preStop pause runs, then SIGTERM
    and the drain. Not one request fails, every answer has the value of the version that gave it, the
    old pods exit 0 within their grace period, and at the end only v2 answers. The token comes from a
    Secret (a request without it is refused)."""
    claim = private_dir()
    try:
        offsets = {digest_of(write_bundle(claim / f"v{v}", offset)): offset for v, offset in ((1, 0.0), (2, 1000.0))}
        base = merge(values_file("pvc-bundle-values.yaml"), image_values(image), LEAN, QUICK_PROBES,
                     {"preStopSleepSeconds": 2, "server": {"drainSeconds": 1, "shutdownGraceSeconds": 5}})
        v1_objects = render(merge(base, {"bundle": {"pvc": {"path": "v1"}}}))
        v2 = one(render(merge(base, {"bundle": {"pvc": {"path": "v2"}}}), revision=2), "Deployment")
        grace = v2["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        with Cluster([*v1_objects, AUTH_SECRET], claims={"scorer-bundles": claim}, prefix=f"{IMAGE_TAG}-kubelet") as cluster:
            deployment = Deployment(cluster, one(v1_objects, "Deployment"))
            ready_v1 = deployment.create()
            balancer = LoadBalancer(lambda: deployment.every_pod, "http", endpoint_lag_s=1.0)
            try:
                assert requests.post(balancer.url + "/predict", json={"a": 1, "b": 2}).status_code == 401
                with Load(balancer.url, offsets) as load:
                    time.sleep(1.5)  # v1 under load
                    rollout_started = time.monotonic()
                    deployment.roll(v2)
                    terminations = deployment.wait_terminated()
                    rollout_done = time.monotonic()
                    time.sleep(1.5)  # v2 under load
            finally:
                balancer.close()
            ready_v2 = [p.ready_at - p.started_at for p in deployment.pods]
        print(f"\nrolling update: {len(load.answers)} answers, {len(load.failures)} failed, "
              f"pods Ready after v1 {[round(s, 1) for s in ready_v1]} s, v2 {[round(s, 1) for s in ready_v2]} s; "
              f"{rollout_done - rollout_started:.1f}s from the first new pod to the last old one gone; "
              f"terminations {[round(t.seconds, 1) for _, t in terminations]} s (grace {grace} s); "
              f"connections per pod {sorted(balancer.connections.values())}")
        assert not load.failures, f"{len(load.failures)} failed requests, e.g. {load.failures[:5]}"
        assert len(terminations) == 2
        assert [p.restarts for p in deployment.every_pod] == [0] * 4, "a probe restarted a pod"
        for name, termination in terminations:
            assert termination.exit_code == 0 and not termination.killed, (name, termination)
            assert termination.seconds < grace
        during = [offset for when, offset in load.answers if rollout_started <= when <= rollout_done]
        assert {0.0, 1000.0} <= set(during), "both versions answered during the rollout"
        after = [offset for when, offset in load.answers if when > rollout_done]
        assert after and set(after) == {1000.0}
    finally:
        shutil.rmtree(claim, ignore_errors=True)


def serve_once(image: dict[str, object], claim: Path, path: str) -> tuple[Cluster, Deployment, float]:
    """One pod of the chart's defaults (its probes, resources) serving the bundle at ``path`` of a claim."""
    values = merge(values_file("pvc-bundle-values.yaml"), image_values(image),
                   {"replicas": 1, "auth": {"existingSecret": ""}, "bundle": {"pvc": {"path": path}}})
    objects = render(values)
    cluster = Cluster(objects, claims={"scorer-bundles": claim}, prefix=f"{IMAGE_TAG}-kubelet")
    deployment = Deployment(cluster, one(objects, "Deployment"), ready_timeout=300)
    (seconds,) = deployment.create()
    return cluster, deployment, seconds


def test_time_to_ready_sklearn_bundle(image: dict[str, object], example_bundles: dict[str, Path]) -> None:
    """The sklearn example (spam) from a claim, under the chart's own probes and resources: the time from
    the container's start to the kubelet's Ready (startup probe on /ready every 2 s, then readiness)."""
    claim = private_dir()
    try:
        publish(example_bundles["spam"], claim / "spam")
        cluster, deployment, seconds = serve_once(image, claim, "spam")
        with cluster:
            pod = deployment.pods[0]
            answer = requests.post(pod.url() + "/predict", json=SPAM_ROW)
            assert answer.json()["predictions"][0]["prediction"] == "spam"
            # The container is what the chart's pod spec says (defaults: 2 CPUs, 2 GiB, a 1 GiB /tmp).
            host = pod.container.attrs["HostConfig"]
            assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
            assert (host["NanoCpus"], host["Memory"], host["CpuShares"]) == (2 * 10**9, 2 * 2**30, 1024)
            code, out = pod.container.exec_run(["sh", "-c", "id -u; id -g; touch /tmp/x && echo tmp ok; touch /x 2>&1; "
                                                "env | grep '^SCORER_' | cut -d= -f1 | sort | tr '\\n' ' '"])
            uid, gid, tmp, root, names = out.decode().strip().splitlines()
            assert (uid, gid, tmp) == ("10001", "10001", "tmp ok")
            assert "Read-only file system" in root
            # The chart's settings and the image's, none injected by Service links (the Service is `scorer`).
            chart = {e["name"] for e in pod.c["env"] if e["name"].startswith("SCORER_")}
            assert set(names.split()) == chart | {"SCORER_HOST", "SCORER_PORT"}
        print(f"\nsklearn bundle (spam), main image: pod start to Ready {seconds:.2f}s under the chart's probes")
    finally:
        shutil.rmtree(claim, ignore_errors=True)


def test_time_to_ready_spark_bundle(spark_image: dict[str, object]) -> None:
    """The Spark ML example on the Spark image (the JVM checks the native path on the sample) from a
    claim, under the chart's own probes and resources: the time to Ready, and the answers equal native
    scoring in this process (within the native contract's 1e-9)."""
    from scorer import codecs
    from scorer.core import Scorer
    from scorer.load_options import LoadOptions

    claim = private_dir()
    try:
        bundle = publish(REPO / "bundles" / "spark", claim / "spark")
        scorer = Scorer.load(bundle, LoadOptions(spark_scoring="native"))
        sample = scorer.bundle.manifest.sample_input
        assert sample is not None
        frame = pd.DataFrame(sample["data"], columns=sample["columns"])
        expected = json.loads(codecs.json_predictions(scorer.score(frame)))["predictions"]
        cluster, deployment, seconds = serve_once(spark_image, claim, "spark")
        with cluster:
            answer = requests.post(deployment.pods[0].url() + "/predict", data=frame.to_json(orient="split"),
                                   headers={"Content-Type": "application/json"})
            assert answer.status_code == 200, answer.text
            got = answer.json()["predictions"]
            assert [g["prediction"] for g in got] == [e["prediction"] for e in expected]
            for g, e in zip(got, expected):
                assert g["probability_yes"] == pytest.approx(e["probability_yes"], rel=1e-9)
        print(f"\nSpark ML bundle, Spark image: pod start to Ready {seconds:.2f}s under the chart's probes")
    finally:
        shutil.rmtree(claim, ignore_errors=True)


# --- batch -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch_claims() -> Iterator[dict[str, Path]]:
    """Claims for the batch tests: bundles (a + b + 0.5), data (incoming/: 7 CSV files in 3 folders)."""
    bundles, data = private_dir(), private_dir()
    write_bundle(bundles / "sum", 0.5)
    rng = random.Random(16)
    for i in range(7):
        path = data / "incoming" / f"part-{i % 3}" / f"file-{i}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = rng.randint(50, 400)
        pd.DataFrame({"id": [f"{i}-{r:04d}" for r in range(rows)],
                      "a": [rng.randint(-500, 500) / 4 for _ in range(rows)],
                      "b": [rng.randint(-500, 500) / 4 for _ in range(rows)]}).to_csv(path, index=False)
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        yield {"scorer-bundles": bundles, "data": data}
    finally:
        shutil.rmtree(bundles, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


def run_batch(image: dict[str, object], claims: dict[str, Path], values_name: str, **batch: Any) -> tuple[JobRun, Path]:
    """The Job of ``values_name`` (bundle: sum; input: incoming/) run to completion; its run and output."""
    out = private_dir()
    values = merge(values_file(values_name), image_values(image), LEAN,
                   {"bundle": {"pvc": {"path": "sum"}}, "batch": {"args": [], **batch}})
    job = one(render(values), "Job")
    with Cluster([job], claims={**claims, "data-out": out}, prefix=f"{IMAGE_TAG}-kubelet") as cluster:
        run = run_job(cluster, job, timeout=180)
    return run, out / "scored"


@pytest.fixture(scope="module")
def single_run(image: dict[str, object], batch_claims: dict[str, Path]) -> Iterator[tuple[JobRun, Path]]:
    """The chart's batch Job (one pod, one `scorer batch` run) over the input."""
    run, out = run_batch(image, batch_claims, "batch-job-values.yaml")
    try:
        yield run, out
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def outputs(root: Path) -> dict[str, bytes]:
    """Every file a run wrote under ``root`` but its bookkeeping (``_scorer/``, hidden temporaries)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith((".", "_scorer")) for part in p.relative_to(root).parts)}


def test_batch_job_scores_the_input(single_run: tuple[JobRun, Path], batch_claims: dict[str, Path]) -> None:
    """The Job's pod (non-root, read-only root, the claims mounted as the chart says) scores every input
    file: ids kept, a + b + 0.5 for every row, manifest.json and _SUCCESS."""
    run, out = single_run
    assert run.succeeded, (run.reason, run.logs)
    assert [code for _, _, code in run.pods] == [0]
    inputs = sorted((batch_claims["data"] / "incoming").rglob("*.csv"))
    for source in inputs:
        rel = source.relative_to(batch_claims["data"] / "incoming")
        given, scored = pd.read_csv(source, dtype=str), pd.read_csv(out / rel, dtype=str)
        assert scored["id"].tolist() == given["id"].tolist()
        assert scored["score"].astype(float).tolist() == (given["a"].astype(float) + given["b"].astype(float) + 0.5).tolist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["files"] == len(inputs) and (out / "_SUCCESS").exists()
    print(f"\nbatch Job, 1 pod: {run.seconds:.1f}s for {len(inputs)} files")


def test_indexed_job_writes_what_one_run_writes(image: dict[str, object], batch_claims: dict[str, Path],
                                                single_run: tuple[JobRun, Path]) -> None:
    """The chart's Indexed Job with 3 completions (each pod gets JOB_COMPLETION_INDEX and runs `scorer
    batch --shard-count 3`) writes into one output exactly the files one `scorer batch` run writes, byte
    for byte, and the combined manifest.json (per-file entries but timings) and _SUCCESS."""
    single, single_out = single_run
    run, out = run_batch(image, batch_claims, "indexed-job-values.yaml")
    try:
        assert run.succeeded, (run.reason, run.logs)
        assert sorted(index for _, index, _ in run.pods) == [0, 1, 2]
        assert outputs(out) .keys() == outputs(single_out).keys()
        for name, data in outputs(single_out).items():
            if name != "manifest.json":
                assert outputs(out)[name] == data, name
        def entries(root: Path) -> list[dict[str, Any]]:
            files = json.loads((root / "manifest.json").read_text())["files"]
            return sorted(({k: v for k, v in f.items() if k not in ("seconds", "skipped")} for f in files),
                          key=lambda f: f["input"])
        assert entries(out) == entries(single_out)
        print(f"\nbatch Job wall time: 1 pod {single.seconds:.1f}s, Indexed Job of 3 pods {run.seconds:.1f}s")
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


# --- the baked image, Service links --------------------------------------------------------------

def test_baked_image_pattern_serves_its_bundle(image: dict[str, object]) -> None:
    """examples/bundle-image/Dockerfile built FROM the image with a bundle, deployed with the chart's
    baked-image values (no volume but /tmp; the inline token kept in the Secret the chart makes): the pod
    serves the baked bundle (a + b + 7), not the image's embedded example."""
    context = private_dir()
    tag = f"scorer-bundle-example:{IMAGE_TAG}"
    try:
        write_bundle(context / "bundle", 7.0)
        result = docker_build([DOCKER, "build", "-f", str(REPO / "examples" / "bundle-image" / "Dockerfile"),
                               "--build-arg", f"SCORER_IMAGE={image['name']}", "-t", tag, str(context)])
        assert result.returncode == 0, result.stderr[-3000:]
        values = merge(values_file("baked-image-values.yaml"), image_values({"name": tag}), LEAN, QUICK_PROBES,
                       {"replicas": 1})
        objects = render(values)
        with Cluster(objects, prefix=f"{IMAGE_TAG}-kubelet") as cluster:
            deployment = Deployment(cluster, one(objects, "Deployment"))
            deployment.create()
            url = deployment.pods[0].url()
            answer = requests.post(url + "/predict", json={"a": 1.5, "b": 2.0}, headers={"Authorization": "Bearer change-me"})
            assert answer.status_code == 200 and answer.json()["predictions"] == [10.5], answer.text
            assert requests.post(url + "/predict", json={"a": 1.5, "b": 2.0}).status_code == 401
    finally:
        subprocess.run([DOCKER, "image", "rm", "-f", tag], capture_output=True, check=False)
        shutil.rmtree(context, ignore_errors=True)


def test_service_links_would_break_a_release_named_scorer(image: dict[str, object]) -> None:
    """Why the chart sets enableServiceLinks: false. A release named `scorer` has a Service `scorer`, for
    which Kubernetes' default injects SCORER_SERVICE_HOST, SCORER_PORT=tcp://..., ... into every pod of the
    namespace: scorer refuses them as settings and exits 2 at once. (The other tests run the chart's own
    pods, links off, in a release named `scorer`.)"""
    objects = render(merge(image_values(image), LEAN, {"replicas": 1}))
    assert one(objects, "Service")["metadata"]["name"] == "scorer"
    pod = pod_from_template(one(objects, "Deployment"), "scorer-with-links")
    assert pod["spec"]["enableServiceLinks"] is False
    pod["spec"]["enableServiceLinks"] = True  # Kubernetes' default
    with Cluster(objects, prefix=f"{IMAGE_TAG}-kubelet") as cluster:
        linked = Pod(cluster, pod).start()
        code = linked.wait_exit(60)
        linked.stop_probes()
        log = linked.logs()
    assert code == 2, log
    assert re.search(r"unknown setting SCORER_\w+|SCORER_PORT='tcp://", log), log


def test_failing_liveness_probe_restarts_the_container(image: dict[str, object]) -> None:
    """The harness acts on probe thresholds as a kubelet does: a liveness probe that keeps failing (here
    pointed at a path that answers 404) restarts the container after failureThreshold tries, and the
    restarted container goes through its startup probe to Ready again."""
    values = merge(image_values(image), LEAN, QUICK_PROBES,
                   {"replicas": 1, "preStopSleepSeconds": 0, "server": {"drainSeconds": 0, "shutdownGraceSeconds": 2}})
    objects = render(values)
    deployment = one(objects, "Deployment")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["httpGet"]["path"], probe["failureThreshold"] = "/no-such-path", 2
    with Cluster(objects, prefix=f"{IMAGE_TAG}-kubelet") as cluster:
        pods = Deployment(cluster, deployment)
        pods.create()
        pod = pods.pods[0]

        def started() -> int:
            return sum(ok for _, kind, ok in pod.probe_log if kind == "startupProbe")

        deadline = time.monotonic() + 60
        while started() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        pod.stop_probes()
    assert pod.restarts >= 1 and started() >= 2, pod.probe_log
    # Started, then 2 failed liveness probes (the threshold), then the new container's startup probe.
    seen = [(kind, ok) for _, kind, ok in pod.probe_log if kind != "readinessProbe"]
    first = seen.index(("startupProbe", True))
    assert seen[first + 1:first + 3] == [("livenessProbe", False)] * 2, seen
    assert ("startupProbe", True) in seen[first + 3:], seen
