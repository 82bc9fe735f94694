"""The Spark image (Dockerfile.spark) against a real Docker engine: the Spark ML and H2O MOJO example
bundles served and batch-scored in a hardened container (non-root, read-only root filesystem, a
noexec tmpfs at /tmp, no capabilities) with the same answers as in-process scoring on the host; the
SparkSession starts while /ready is 503; the main image's sklearn example and entrypoint modes."""

from __future__ import annotations

import functools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from testcontainers.core.container import DockerContainer

from .conftest import DOCKER, REPO, assert_base_recorded, build_with_lock, lock_entry, publish
from .test_image import SPAM_ROW, free_port, logs, serving

JVM_FLAVORS = ("spark", "h2o")
OUTPUTS = ["prediction", "probability_no", "probability_yes"]
TMPFS = "size=256m"  # docker's default options: rw, noexec, nosuid, nodev


def hardened(container: DockerContainer, network: str = "host") -> DockerContainer:
    """The container as a locked-down host runs it: read-only root, a tmpfs at /tmp (Spark's scratch
    space and HOME), no capabilities, no privilege escalation; uid 10001 from the image."""
    return container.with_tmpfs_mount("/tmp", TMPFS).with_kwargs(
        network_mode=network, read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"])


@functools.cache
def in_process(flavor: str, scoring: str = "auto") -> tuple[pd.DataFrame, dict[str, Any]]:
    """The bundle's sample rows and what scoring them in this process (host Java, local Spark) answers,
    encoded as the server encodes it; ``scoring``: the --spark-scoring path."""
    from scorer import codecs
    from scorer.core import Scorer
    from scorer.load_options import LoadOptions

    scorer = Scorer.load(REPO / "bundles" / flavor, LoadOptions(spark_scoring=scoring))  # type: ignore[arg-type]
    sample = scorer.bundle.manifest.sample_input
    assert sample is not None, f"bundles/{flavor} has no sample_input"
    frame = pd.DataFrame(sample["data"], columns=sample["columns"])
    return frame, json.loads(codecs.json_predictions(scorer.score(frame)))


def poll_ready(container: DockerContainer, url: str, probe: str = "{}", timeout: float = 180) -> tuple[float, list[str]]:
    """Poll /ready from container start until the first 200: the seconds it took and every answer seen
    before it ("refused" or the status code). ``probe`` sent to /predict while not ready gets a 503."""
    started = time.monotonic()
    seen: list[str] = []
    probed = False
    while time.monotonic() - started < timeout:
        try:
            status = requests.get(url + "/ready", timeout=5).status_code
        except requests.ConnectionError:
            seen.append("refused")
            container.reload()
            if container.status == "exited":
                raise AssertionError(f"container exited:\n{logs(container)}") from None
            time.sleep(0.1)
            continue
        if status == 200:
            return time.monotonic() - started, seen
        seen.append(str(status))
        if status == 503 and not probed:
            early = requests.post(url + "/predict", data=probe, headers={"Content-Type": "application/json"}, timeout=5)
            assert early.status_code == 503 and "Retry-After" in early.headers, early.text
            probed = True
        time.sleep(0.1)
    raise AssertionError(f"not ready after {timeout}s (seen {sorted(set(seen))}):\n{logs(container)}")


def stop(container: DockerContainer) -> tuple[int, float]:
    """docker stop (SIGTERM through tini, 30 s grace): the exit code and how long it took."""
    wrapped = container.get_wrapped_container()
    started = time.monotonic()
    wrapped.stop(timeout=30)
    seconds = time.monotonic() - started
    wrapped.reload()
    return wrapped.attrs["State"]["ExitCode"], seconds


def test_spark_image_metadata(spark_image: dict[str, object]) -> None:
    """OCI labels carry the version and revision; the runtime is Java 17 with JAVA_HOME, loopback Spark,
    PYSPARK_PYTHON the image's python, uid 10001, a HEALTHCHECK, and the entrypoint script that runs the
    main image's `scorer` commands (and the Spark node modes, see test_spark_nodes.py)."""
    config = json.loads(subprocess.run([DOCKER, "image", "inspect", "-f", "{{json .Config}}", str(spark_image["name"])],
                                       capture_output=True, text=True, check=True).stdout)
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == spark_image["version"]
    assert labels["org.opencontainers.image.revision"] == spark_image["revision"]
    assert labels["org.opencontainers.image.title"] == "scorer-spark"
    assert_base_recorded(spark_image)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["PYSPARK_PYTHON"] == "/opt/scorer/bin/python"
    assert config["User"] == "10001"
    assert config["Entrypoint"] == ["tini", "--", "/opt/entrypoint.sh"] and config["Cmd"] == ["serve"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    java = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "sh", str(spark_image["name"]),
                           "-c", '"$JAVA_HOME/bin/java" -version 2>&1'], capture_output=True, text=True, check=True)
    assert 'version "17.' in java.stdout, java.stdout
    print(f"Spark image: {int(spark_image['size']) / 1e6:.0f} MB, built in {spark_image['build_seconds']:.1f}s")  # type: ignore[call-overload]


def test_spark_lock_entry_without_hash_fails_the_build(spark_image: dict[str, object], tmp_path: Path) -> None:
    """Dockerfile.spark installs its lock with --require-hashes too: a pin without hash fails the build."""
    version = lock_entry("docker/requirements-spark.lock", "py4j").split()[0]
    result = build_with_lock("Dockerfile.spark", "docker/requirements-spark.lock", version + "\n", tmp_path)
    assert result.returncode != 0, result.stderr[-2000:]
    assert "Hashes are required in --require-hashes mode" in result.stderr, result.stderr[-3000:]
    assert version in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("flavor", JVM_FLAVORS)
def test_serve_jvm_bundle_hardened(spark_image: dict[str, object], public_dir: Path, flavor: str) -> None:
    """A Spark ML / H2O MOJO bundle mounted read-only at /model is served by uid 10001 under --read-only
    with a noexec tmpfs at /tmp, with the default --spark-scoring auto: /ready answers 503 (or the port is
    not open yet) while the sample is scored on the JVM and natively, never 200 before; /metadata says
    native, verified on the sample's rows with no difference; then /predict and /invocations answer exactly
    what the same bundle answers in-process on the host; docker stop then ends it with exit 0 within seconds."""
    frame, expected = in_process(flavor)
    bundle = publish(REPO / "bundles" / flavor, public_dir / flavor)
    port = free_port()
    container = hardened(serving(str(spark_image["name"]), port).with_volume_mapping(str(bundle), "/model", "ro"))
    container.start()
    try:
        url = f"http://127.0.0.1:{port}"
        cold, seen = poll_ready(container, url, probe=frame.to_json(orient="split"))
        assert "503" in seen and set(seen) <= {"refused", "503"}, seen
        scoring = requests.get(url + "/metadata", timeout=10).json()["scoring"]
        assert scoring["path"] == "native" and scoring["verified"]["difference"] is None, scoring
        assert scoring["verified"]["rows"] == len(frame), scoring
        started = time.monotonic()
        first = requests.post(url + "/predict", data=frame.to_json(orient="split"),
                              headers={"Content-Type": "application/json"}, timeout=60)
        first_ms = (time.monotonic() - started) * 1000
        assert first.status_code == 200, first.text
        assert list(first.json()["predictions"][0]) == OUTPUTS
        assert first.json() == expected
        invocations = requests.post(url + "/invocations", data=frame.to_json(orient="split"),
                                    headers={"Content-Type": "application/json"}, timeout=60)
        assert invocations.status_code == 200 and invocations.json() == expected, invocations.text
        code, out = container.exec(["id", "-u"])
        assert code == 0 and out.decode().strip() == "10001"
        exit_code, stop_seconds = stop(container)
        print(f"{flavor} bundle in the Spark image: cold start to /ready {cold:.1f}s "
              f"({seen.count('503')} polls answered 503), first /predict {first_ms:.0f} ms, "
              f"docker stop {stop_seconds:.1f}s exit {exit_code}")
        assert exit_code == 0, logs(container)
        assert stop_seconds < 5 + 10, stop_seconds  # the 5 s drain window, then neither the 30 s grace nor a SIGKILL
    finally:
        container.stop()


def test_batch_spark_bundle(spark_image: dict[str, object], public_dir: Path) -> None:
    """`scorer batch --spark-scoring spark` (the JVM path) with the Spark ML bundle over a mounted directory
    of CSV files (hardened, no network): exit 0, one output per input plus _SUCCESS, the same predictions
    as the JVM path in-process."""
    frame, expected = in_process("spark", "spark")
    bundle = publish(REPO / "bundles" / "spark", public_dir / "spark")
    inp = public_dir / "in"
    (inp / "part").mkdir(parents=True)
    half = len(frame) // 2
    frame.iloc[:half].to_csv(inp / "a.csv", index=False)
    frame.iloc[half:].to_csv(inp / "part" / "b.csv", index=False)
    for p in (inp, inp / "part", inp / "a.csv", inp / "part" / "b.csv"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    out = public_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    container = hardened(DockerContainer(str(spark_image["name"])), network="none").with_volume_mapping(
        str(bundle), "/model", "ro").with_volume_mapping(str(inp), "/in", "ro").with_volume_mapping(
        str(out), "/out", "rw").with_command(
        "batch --input /in --output /out --output-format parquet --spark-scoring spark")
    started = time.monotonic()
    container.start()
    try:
        result = container.get_wrapped_container().wait(timeout=300)
        text = logs(container)
    finally:
        container.stop()
    print(f"batch with the spark bundle in the Spark image: exit {result['StatusCode']} "
          f"after {time.monotonic() - started:.1f}s")
    assert result["StatusCode"] == 0, text
    assert (out / "_SUCCESS").exists()
    scored = pd.concat([pd.read_parquet(out / "a.parquet"), pd.read_parquet(out / "part" / "b.parquet")])
    assert scored[OUTPUTS].to_dict("records") == [{k: row[k] for k in OUTPUTS} for row in expected["predictions"]]


def test_info_from_sagemaker_model_dir(spark_image: dict[str, object], public_dir: Path) -> None:
    """`scorer info` (read-only, no network) finds the H2O MOJO bundle at /opt/ml/model, SageMaker's
    model directory, loads it, and prints its metadata as JSON."""
    bundle = publish(REPO / "bundles" / "h2o", public_dir / "h2o")
    container = hardened(DockerContainer(str(spark_image["name"])), network="none").with_volume_mapping(
        str(bundle), "/opt/ml/model", "ro").with_env("SCORER_LOG_FORMAT", "text").with_command("info")
    container.start()
    try:
        result = container.get_wrapped_container().wait(timeout=180)
        out, err = container.get_logs()
    finally:
        container.stop()
    assert result["StatusCode"] == 0, (out + err).decode(errors="replace")
    assert json.loads(out)["name"] == json.loads((bundle / "manifest.json").read_text())["name"]


def test_embedded_sklearn_example_hardened(spark_image: dict[str, object]) -> None:
    """With nothing mounted, the Spark image serves the main image's embedded sklearn example (same
    entrypoint, same defaults), hardened like the JVM bundles."""
    port = free_port()
    with hardened(serving(str(spark_image["name"]), port)) as container:
        url = f"http://127.0.0.1:{port}"
        cold, _ = poll_ready(container, url, probe=json.dumps(SPAM_ROW))
        print(f"sklearn example in the Spark image: cold start to /ready {cold:.1f}s")
        response = requests.post(url + "/predict", json=SPAM_ROW, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["prediction"] == "spam"
