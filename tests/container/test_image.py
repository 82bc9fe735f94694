"""The scorer image against a real Docker engine: serve (mounted bundle, embedded example, the
SageMaker paths), batch over mounted directories, the hardened runtime, fail-fast requirements; the
Spark ML and H2O MOJO example bundles served natively (no Java, no pyspark in this image)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from testcontainers.core.container import DockerContainer

from seaweed import Seaweed, seaweed  # noqa: F401 - the session fixture

from .conftest import DOCKER, REPO, assert_base_recorded, build_with_lock, lock_entry, publish, wrong_hash

SPAM_ROW = {"feature1": 1.0, "feature2": "this is spam", "feature3": 2.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(image: str, port: int, *, command: str = "serve") -> DockerContainer:
    """A container on the host network (it binds 0.0.0.0:<port>; we only talk to 127.0.0.1)."""
    return (DockerContainer(image).with_kwargs(network_mode="host").with_env("SCORER_PORT", str(port))
            .with_env("SCORER_LOG_FORMAT", "text").with_command(command))


def wait_ready(container: DockerContainer, url: str, timeout: float = 90) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"container exited:\n{container.get_logs()}")
        try:
            if requests.get(url + "/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready after {timeout}s")


def logs(container: DockerContainer) -> str:
    out, err = container.get_logs()
    return (out + err).decode(errors="replace")


def test_image_is_labelled_and_small(image: dict[str, object]) -> None:
    """OCI labels carry the package version, the source revision and the base image (name and digest:
    the local base's id here); the image is well under 1 GB."""
    labels = json.loads(subprocess.run([DOCKER, "image", "inspect", "-f", "{{json .Config.Labels}}", str(image["name"])],
                                       capture_output=True, text=True, check=True).stdout)
    assert labels["org.opencontainers.image.version"] == image["version"]
    assert labels["org.opencontainers.image.revision"] == image["revision"]
    assert_base_recorded(image)
    assert int(image["size"]) < 1_000_000_000, image["size"]  # type: ignore[call-overload]


# A small package of the lock: what a tampered lock holds in the two tests below.
SMALL_PIN = "idna"


def test_lock_entry_without_hash_fails_the_build(image: dict[str, object], tmp_path: Path) -> None:
    """pip runs in --require-hashes mode: a lock with a pin that has no hash fails the build at the
    install of the lock, naming the requirement (without that mode pip would install it unchecked)."""
    version = lock_entry("docker/requirements.lock", SMALL_PIN).split()[0]
    result = build_with_lock("Dockerfile", "docker/requirements.lock", version + "\n", tmp_path)
    assert result.returncode != 0, result.stderr[-2000:]
    assert "Hashes are required in --require-hashes mode" in result.stderr, result.stderr[-3000:]
    assert version in result.stderr, result.stderr[-3000:]


def test_lock_entry_with_wrong_hash_fails_the_build(image: dict[str, object], tmp_path: Path) -> None:
    """A lock whose hashes do not match the index's files (as after a tampered upload) fails the build."""
    entry = lock_entry("docker/requirements.lock", SMALL_PIN)
    result = build_with_lock("Dockerfile", "docker/requirements.lock", wrong_hash(entry) + "\n", tmp_path)
    assert result.returncode != 0, result.stderr[-2000:]
    assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in result.stderr, result.stderr[-3000:]
    assert SMALL_PIN in result.stderr.split("DO NOT MATCH THE HASHES")[1], result.stderr[-3000:]


def test_serve_mounted_bundle_predict_and_invocations(image: dict[str, object], example_bundles: dict[str, Path],
                                                      public_dir: Path) -> None:
    """A bundle mounted read-only at /model is served on the configured port: /ping, /predict and the
    SageMaker /invocations path give the same predictions as the core in-process."""
    from scorer import codecs
    from scorer.core import Scorer

    bundle = publish(example_bundles["tabular"], public_dir / "tabular")
    sample = Scorer.load(bundle).bundle.manifest.sample_input
    assert sample is not None
    frame = pd.DataFrame(sample["data"], columns=sample["columns"])
    expected = json.loads(codecs.json_predictions(Scorer.load(bundle).score(frame)))
    port = free_port()
    with serving(str(image["name"]), port).with_volume_mapping(str(bundle), "/model", "ro") as container:
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        assert requests.get(url + "/ping").status_code == 200
        assert requests.get(url + "/metadata").json()["name"] == "tabular"
        for path in ("/predict", "/invocations"):
            response = requests.post(url + path, data=frame.to_json(orient="split"),
                                     headers={"Content-Type": "application/json"})
            assert response.status_code == 200, response.text
            assert response.json() == expected


def test_embedded_example_served_with_no_mount(image: dict[str, object]) -> None:
    """With nothing mounted, the image serves its embedded example bundle (the vendor spam layout)."""
    port = free_port()
    with serving(str(image["name"]), port) as container:
        url = f"http://127.0.0.1:{port}"
        seconds = wait_ready(container, url)
        print(f"cold start to /ready: {seconds:.2f}s")
        response = requests.post(url + "/predict", json=SPAM_ROW)
        assert response.json()["predictions"][0]["prediction"] == "spam"


def test_sagemaker_model_dir_is_used(image: dict[str, object], sum_bundle, public_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A bundle at /opt/ml/model (SageMaker's contract) is served when /model is absent."""
    bundle = publish(sum_bundle(), public_dir / "sum")
    port = free_port()
    with serving(str(image["name"]), port).with_volume_mapping(str(bundle), "/opt/ml/model", "ro") as container:
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        response = requests.post(url + "/invocations", data="a,b\n1,2\n", headers={"Content-Type": "text/csv"})
        assert response.json()["predictions"][0]["sum"] == 3


def test_hardened_runtime_non_root_read_only(image: dict[str, object]) -> None:
    """--read-only (tmpfs /tmp), --cap-drop ALL, no-new-privileges: it runs as uid 10001 and serves."""
    port = free_port()
    container = (serving(str(image["name"]), port).with_tmpfs_mount("/tmp", "size=64m").with_kwargs(
        network_mode="host", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"]))
    with container:
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        code, out = container.exec(["id", "-u"])
        assert code == 0 and out.decode().strip() == "10001"
        assert requests.post(url + "/predict", json=SPAM_ROW).status_code == 200


def test_docker_stop_exits_cleanly(image: dict[str, object]) -> None:
    """docker stop (SIGTERM through tini) shuts the server down gracefully with exit code 0."""
    port = free_port()
    container = serving(str(image["name"]), port)
    container.start()
    try:
        wait_ready(container, f"http://127.0.0.1:{port}")
        wrapped = container.get_wrapped_container()
        wrapped.stop(timeout=30)
        wrapped.reload()
        assert wrapped.attrs["State"]["ExitCode"] == 0, logs(container)
    finally:
        container.stop()


def test_batch_mounted_directories(image: dict[str, object], sum_bundle, public_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """`batch --input /in --output /out` scores a mounted read-only directory into a mounted output
    directory, with _SUCCESS and manifest.json, and exits 0."""
    bundle = publish(sum_bundle(), public_dir / "sum")
    inp = public_dir / "in"
    (inp / "nested").mkdir(parents=True)
    pd.DataFrame({"id": [1, 2, 3], "a": [1.0, 2.0, 3.0], "b": [0.5, 0.5, 0.5]}).to_csv(inp / "nested" / "x.csv", index=False)
    for p in (inp, inp / "nested", inp / "nested" / "x.csv"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    out = public_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    container = (DockerContainer(str(image["name"])).with_kwargs(network_mode="none")
                 .with_volume_mapping(str(bundle), "/model", "ro").with_volume_mapping(str(inp), "/in", "ro")
                 .with_volume_mapping(str(out), "/out", "rw").with_command("batch --input /in --output /out"))
    container.start()
    try:
        result = container.get_wrapped_container().wait(timeout=120)
        assert result["StatusCode"] == 0, logs(container)
    finally:
        container.stop()
    scored = pd.read_csv(out / "nested" / "x.csv")
    assert scored["sum"].tolist() == [1.5, 2.5, 3.5]
    assert (out / "_SUCCESS").exists() and json.loads((out / "manifest.json").read_text())["totals"]["rows_out"] == 3


def test_batch_between_object_store_prefixes(image: dict[str, object], sum_bundle, seaweed: Seaweed,  # type: ignore[no-untyped-def]  # noqa: F811
                                            public_dir: Path, tmp_path: Path) -> None:
    """The image scores ``s3://`` input into an ``s3://`` output (its AWS SDK writes the lock, publishes by
    copy) on a real SeaweedFS, configured by the standard AWS variables alone: the output object equals, byte
    for byte, what ``scorer batch`` on this machine writes for the same file on local disk."""
    bundle = publish(sum_bundle(), public_dir / "sum")
    frame = pd.DataFrame({"id": range(1000), "a": [i / 7 for i in range(1000)], "b": [0.25] * 1000})
    (tmp_path / "in" / "nested").mkdir(parents=True)
    frame.to_csv(tmp_path / "in" / "nested" / "x.csv", index=False)
    client = seaweed.client()
    client.create_bucket(Bucket="image-batch")
    client.upload_file(str(tmp_path / "in" / "nested" / "x.csv"), "image-batch", "in/nested/x.csv")
    aws = {k: v for k, v in seaweed.env().items() if k.startswith("AWS_")}
    container = (DockerContainer(str(image["name"])).with_kwargs(network_mode="host")
                 .with_volume_mapping(str(bundle), "/model", "ro").with_tmpfs_mount("/tmp", "size=64m")
                 .with_command("batch --input s3://image-batch/in --output s3://image-batch/out --workers 1"))
    for key, value in aws.items():
        container = container.with_env(key, value)
    container.start()
    try:
        result = container.get_wrapped_container().wait(timeout=120)
        assert result["StatusCode"] == 0, logs(container)
    finally:
        container.stop()
    local = subprocess.run([str(REPO / ".venv" / "bin" / "scorer"), "batch", str(bundle), "--input", str(tmp_path / "in"),
                            "--output", str(tmp_path / "out"), "--workers", "1"], capture_output=True, text=True,
                           check=False)
    assert local.returncode == 0, local.stderr[-2000:]
    got = client.get_object(Bucket="image-batch", Key="out/nested/x.csv")["Body"].read()
    assert got == (tmp_path / "out" / "nested" / "x.csv").read_bytes()
    assert pd.read_csv(tmp_path / "out" / "nested" / "x.csv")["sum"].tolist()[:3] == [0.25, 1 / 7 + 0.25, 2 / 7 + 0.25]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="image-batch", Prefix="out/")["Contents"]}
    assert {"out/_SUCCESS", "out/manifest.json", "out/nested/x.csv"} <= keys
    assert not any(k.endswith(".scorer-tmp") or k.endswith("/lock") for k in keys), keys


def test_unmet_requirements_fail_fast_with_the_list(image: dict[str, object], bundle_factory, public_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A bundle whose requirements.txt the image does not satisfy exits 3 (within the 60 s wait), listing
    each pin."""
    bundle = publish(bundle_factory("needy", code=SUM_CODE, requirements="not-a-real-package-xyz>=1\nscikit-learn==0.0.1\n"),
                     public_dir / "needy")
    container = (DockerContainer(str(image["name"])).with_kwargs(network_mode="none")
                 .with_volume_mapping(str(bundle), "/model", "ro").with_command("serve"))
    container.start()
    try:
        result = container.get_wrapped_container().wait(timeout=60)
        text = logs(container)
    finally:
        container.stop()
    assert result["StatusCode"] == 3, text
    assert "not-a-real-package-xyz>=1 (not installed)" in text and "scikit-learn==0.0.1 (installed" in text


SUM_CODE = """
    import scorer
    class CustomPreprocessor(scorer.CustomPreprocessor):
        def predict(self, df):
            return df["a"] + df["b"]
"""



SLOW_CODE = """
    import time
    import scorer
    class CustomPreprocessor(scorer.CustomPreprocessor):
        def predict(self, df):
            time.sleep(1.0)
            return df["a"] + df["b"]
"""


def test_docker_stop_with_requests_in_flight_loses_none(image: dict[str, object], bundle_factory,  # type: ignore[no-untyped-def]
                                                        public_dir: Path) -> None:
    """docker stop while 16 requests are in flight (one is in the model, the rest queued behind it):
    every accepted request is answered correctly, then the container exits 0."""
    from concurrent.futures import ThreadPoolExecutor

    bundle = publish(bundle_factory("slow", code=SLOW_CODE), public_dir / "slow")
    port = free_port()
    container = serving(str(image["name"]), port).with_volume_mapping(str(bundle), "/model", "ro")
    container.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(requests.post, url + "/predict", json={"a": i, "b": 1}, timeout=60) for i in range(16)]
            time.sleep(0.5)  # all 16 accepted; the first batch is inside the model
            wrapped = container.get_wrapped_container()
            wrapped.stop(timeout=30)
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses]
        assert [r.json()["predictions"][0] for r in responses] == [i + 1 for i in range(16)]
        wrapped.reload()
        assert wrapped.attrs["State"]["ExitCode"] == 0, logs(container)
    finally:
        container.stop()


SLOW_LOAD_CODE = """
    import time
    import scorer
    class CustomPreprocessor(scorer.CustomPreprocessor):
        def load(self, artifacts_dir):
            time.sleep(8)
        def predict(self, df):
            return df["a"] + df["b"]
"""


def test_docker_stop_while_loading_exits_promptly(image: dict[str, object], bundle_factory,  # type: ignore[no-untyped-def]
                                                  public_dir: Path) -> None:
    """While the bundle loads, the port already answers: /health 200, /ready 503, /predict 503 with
    Retry-After (not accepted, so nothing can be lost). docker stop then ends the container with exit 0
    well inside the grace period, without waiting for the load to finish or being killed."""
    bundle = publish(bundle_factory("slowload", code=SLOW_LOAD_CODE), public_dir / "slowload")
    port = free_port()
    container = serving(str(image["name"]), port).with_volume_mapping(str(bundle), "/model", "ro")
    container.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = requests.get(url + "/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, logs(container)
                time.sleep(0.1)
        assert health.status_code == 200
        assert requests.get(url + "/ready").status_code == 503
        early = requests.post(url + "/predict", json={"a": 1, "b": 2})
        assert early.status_code == 503 and "Retry-After" in early.headers, early.text
        wrapped = container.get_wrapped_container()
        started = time.monotonic()
        wrapped.stop(timeout=30)
        seconds = time.monotonic() - started
        wrapped.reload()
        print(f"docker stop during load: exit {wrapped.attrs['State']['ExitCode']} after {seconds:.2f}s")
        assert wrapped.attrs["State"]["ExitCode"] == 0, logs(container)
        assert seconds < 5, seconds  # neither waiting for the 8 s load nor for the 30 s grace period and SIGKILL
    finally:
        container.stop()


def test_zip_bundle_mounted_read_only(image: dict[str, object], sum_bundle, public_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A .zip bundle mounted at /model is extracted to the tmpfs and served under --read-only."""
    import shutil

    bundle = sum_bundle()
    archive = Path(shutil.make_archive(str(public_dir / "sum"), "zip", root_dir=bundle))
    archive.chmod(0o644)
    port = free_port()
    container = (serving(str(image["name"]), port).with_volume_mapping(str(archive), "/model", "ro")
                 .with_tmpfs_mount("/tmp", "size=64m")
                 .with_kwargs(network_mode="host", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"]))
    with container:
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        assert requests.get(url + "/metadata").json()["digest"].startswith("sha256:")
        response = requests.post(url + "/predict", json={"a": [1, 2], "b": [10, 20]})
        assert response.status_code == 200, response.text
        assert [p["sum"] for p in response.json()["predictions"]] == [11, 22]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sagemaker_hosting_contract(image: dict[str, object], sum_bundle, public_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """As SageMaker runs it: `docker run IMAGE serve` with its environment, the model at /opt/ml/model,
    port 8080 (the image default; a free port only if 8080 is taken on this machine), GET /ping and
    POST /invocations with CSV in and CSV or JSON out, as a SageMaker client sends them: a plain
    text/csv answer has no header line (one line per row, for Batch Transform's AssembleWith=Line),
    ``header=present`` asks for one."""
    bundle = publish(sum_bundle(), public_dir / "sum")
    container = (DockerContainer(str(image["name"])).with_kwargs(network_mode="host").with_command("serve")
                 .with_volume_mapping(str(bundle), "/opt/ml/model", "ro")
                 .with_env("SAGEMAKER_CONTAINER_LOG_LEVEL", "20").with_env("SAGEMAKER_REGION", "local")
                 .with_env("SAGEMAKER_PROGRAM", "").with_env("SAGEMAKER_SUBMIT_DIRECTORY", "/opt/ml/model/code")
                 .with_env("SAGEMAKER_MODEL_SERVER_TIMEOUT", "60").with_env("SAGEMAKER_BIND_TO_PORT", "8080"))
    port = 8080
    if not _port_free(port):
        port = free_port()
        container = container.with_env("SCORER_PORT", str(port))
    with container:
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        ping = requests.get(url + "/ping", timeout=2)
        assert ping.status_code == 200
        headers = {"Content-Type": "text/csv", "Accept": "text/csv",
                   "X-Amzn-SageMaker-Custom-Attributes": "trace=1"}
        response = requests.post(url + "/invocations", data="a,b\n1,2\n3,4\n", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/csv; header=absent"
        assert response.text.splitlines() == ["3,2", "7,2"]
        response = requests.post(url + "/invocations", data="a,b\n1,2\n3,4\n",
                                 headers={**headers, "Accept": "text/csv; header=present"})
        assert response.headers["content-type"] == "text/csv"
        assert response.text.splitlines() == ["sum,rows_in_call", "3.0,2", "7.0,2"]
        response = requests.post(url + "/invocations", data="a,b\n1,2\n", headers={"Content-Type": "text/csv",
                                                                                      "Accept": "application/json"})
        assert response.json()["predictions"][0]["sum"] == 3


EXTRA_CODE = """
    import scorer
    import scorer_test_extra
    class CustomPreprocessor(scorer.CustomPreprocessor):
        def predict(self, df):
            return (df["a"] + scorer_test_extra.VALUE).rename("prediction")
"""


def publish_needs_extra(bundle_factory, make_wheel, public_dir: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A wheelhouse (scorer-test-extra, which needs scorer-test-dep) and a bundle requiring it, both
    readable by the container's uid."""
    wheels = public_dir / "wheels"
    make_wheel(wheels, "scorer-test-extra", "1.0", code="from scorer_test_dep import BASE\nVALUE = BASE + 42\n",
               requires=("scorer-test-dep>=1",))
    make_wheel(wheels, "scorer-test-dep", "1.0", code="BASE = 1000\n")
    bundle = publish(bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                                    manifest={"input_schema": {"a": "float"}}), public_dir / "needs-extra")
    for p in [wheels, *wheels.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return wheels, bundle


def test_install_requirements_at_start(image: dict[str, object], bundle_factory, make_wheel,  # type: ignore[no-untyped-def]
                                       public_dir: Path) -> None:
    """Opt-in: with SCORER_INSTALL_REQUIREMENTS=true a read-only container installs the bundle's missing
    requirement (and its missing dependency) from the operator's index (here a mounted wheelhouse)
    into the tmpfs before loading, and serves with it. With no reachable index (network none, pip's
    default index) it exits 3 with pip's error and a hint about the index."""
    wheels, bundle = publish_needs_extra(bundle_factory, make_wheel, public_dir)
    port = free_port()
    container = (serving(str(image["name"]), port).with_volume_mapping(str(bundle), "/model", "ro")
                 .with_volume_mapping(str(wheels), "/wheels", "ro").with_tmpfs_mount("/tmp", "size=64m")
                 .with_env("SCORER_INSTALL_REQUIREMENTS", "true").with_env("PIP_NO_INDEX", "1")
                 .with_env("PIP_FIND_LINKS", "/wheels")
                 .with_kwargs(network_mode="host", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"]))
    with container:
        url = f"http://127.0.0.1:{port}"
        seconds = wait_ready(container, url)
        print(f"install at start + load: ready in {seconds:.2f}s")
        response = requests.post(url + "/predict", json={"a": [1, 2]})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == [1043, 1044]
        assert "installing 1 missing requirement(s)" in logs(container)

    offline = (DockerContainer(str(image["name"])).with_kwargs(network_mode="none", read_only=True)
               .with_tmpfs_mount("/tmp", "size=64m").with_volume_mapping(str(bundle), "/model", "ro")
               .with_env("SCORER_INSTALL_REQUIREMENTS", "true").with_env("SCORER_LOG_FORMAT", "text")
               .with_command("serve"))
    offline.start()
    try:
        started = time.monotonic()
        result = offline.get_wrapped_container().wait(timeout=180)
        seconds = time.monotonic() - started
        text = logs(offline)
    finally:
        offline.stop()
    print(f"install with no reachable index: exit {result['StatusCode']} after {seconds:.1f}s")
    assert result["StatusCode"] == 3, text
    assert "could not install the missing requirement(s) scorer-test-extra==1.0" in text
    assert "package index reachable" in text


def test_install_requirements_kept_in_a_named_volume(image: dict[str, object], bundle_factory, make_wheel,  # type: ignore[no-untyped-def]
                                                     public_dir: Path) -> None:
    """The README's recipe: a new named volume at /var/cache/scorer-requirements takes over that
    directory's owner and mode (uid 10001, 0700), so the scorer accepts it, installs once and reuses
    the install on the next start. A new volume anywhere else belongs to root: refused, exit 3."""
    wheels, bundle = publish_needs_extra(bundle_factory, make_wheel, public_dir)
    volume = f"scorer-test-pip-{public_dir.name.lower()}"

    def start(mount: str) -> tuple[DockerContainer, int]:
        port = free_port()
        return (serving(str(image["name"]), port).with_volume_mapping(str(bundle), "/model", "ro")
                .with_volume_mapping(str(wheels), "/wheels", "ro").with_volume_mapping(volume, mount, "rw")
                .with_tmpfs_mount("/tmp", "size=64m").with_env("SCORER_INSTALL_REQUIREMENTS", "true")
                .with_env("SCORER_REQUIREMENTS_CACHE", mount).with_env("PIP_NO_INDEX", "1")
                .with_env("PIP_FIND_LINKS", "/wheels")
                .with_kwargs(network_mode="host", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"])), port

    try:
        for run in range(2):
            container, port = start("/var/cache/scorer-requirements")
            with container:
                seconds = wait_ready(container, f"http://127.0.0.1:{port}")
                print(f"start {run + 1} with the volume: ready in {seconds:.2f}s")
                response = requests.post(f"http://127.0.0.1:{port}/predict", json={"a": [1, 2]})
                assert response.status_code == 200 and response.json()["predictions"] == [1043, 1044], response.text
                assert ("installing 1 missing requirement(s)" in logs(container)) == (run == 0), logs(container)
        subprocess.run([DOCKER, "volume", "rm", volume], capture_output=True, check=False)
        refused, _ = start("/tmp/scorer-requirements-10001")  # the old recipe: a root-owned mount point
        refused.start()
        try:
            status = refused.get_wrapped_container().wait(timeout=120)["StatusCode"]
            text = logs(refused)
        finally:
            refused.stop()
        assert status == 3, text
        assert "requirements_cache /tmp/scorer-requirements-10001 is owned by uid 0, not by this process's uid 10001" in text
    finally:
        subprocess.run([DOCKER, "volume", "rm", "-f", volume], capture_output=True, check=False)


# --- Spark ML and H2O MOJO bundles, natively (issue 15) --------------------------------------------

REFERENCE_ROWS = REPO / "bundles" / "_reference" / "h2o_predictions.csv"  # H2O's own predictions, 200 rows
FEATURES = ["f0", "f1", "f2", "f3", "f4", "f5", "c1", "c2"]  # the input schema of bundles/spark and bundles/h2o


def reference_answers(flavor: str) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """The 200 reference rows and what the real thing answers for them: for h2o, H2O's predictions
    committed with the bundle; for spark, the Spark path (a local SparkSession in this process)."""
    reference = pd.read_csv(REFERENCE_ROWS)
    rows = reference[FEATURES]
    if flavor == "h2o":
        return rows, [{"prediction": p, "probability_no": n, "probability_yes": y}
                      for p, n, y in zip(reference["predict"], reference["no"], reference["yes"], strict=True)]
    from scorer import codecs
    from scorer.core import Scorer
    from scorer.load_options import LoadOptions

    scorer = Scorer.load(REPO / "bundles" / flavor, LoadOptions(spark_scoring="spark"))
    assert scorer.model.scoring["path"] == "jvm"  # type: ignore[attr-defined]
    return rows, json.loads(codecs.json_predictions(scorer.score(rows)))["predictions"]


def assert_same_answers(got: list[dict[str, object]], want: list[dict[str, object]], rtol: float) -> None:
    """Labels equal, probabilities within ``rtol`` relative, row by row."""
    import numpy as np

    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert list(g) == list(w), (i, g, w)
        assert g["prediction"] == w["prediction"], (i, g, w)
        for key in ("probability_no", "probability_yes"):
            assert np.isclose(float(g[key]), float(w[key]), rtol=rtol, atol=0.0), (i, key, g, w)  # type: ignore[arg-type]


def test_main_image_has_no_jvm(image: dict[str, object]) -> None:
    """The main image has no Java and no pyspark: what it serves of Spark and H2O bundles is native."""
    def run(script: str) -> int:
        return subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "sh", str(image["name"]),
                               "-c", script], capture_output=True, check=False).returncode

    assert run("true") == 0
    assert run("command -v java") != 0
    assert run("python3 -c 'import pyspark'") != 0


@pytest.mark.parametrize("flavor", ["spark", "h2o"])
def test_main_image_serves_spark_and_h2o_bundles_natively(image: dict[str, object], public_dir: Path,
                                                          flavor: str) -> None:
    """The example Spark ML pipeline and H2O MOJO bundles, mounted at /model of the main image with its
    default settings, are served natively: /metadata says ``scoring.path == "native"``, and /predict
    answers the 200 reference rows as the real thing does (labels equal, probabilities within 1e-9
    relative): H2O's committed predictions, and the Spark path's answers computed in this process."""
    rows, want = reference_answers(flavor)
    bundle = publish(REPO / "bundles" / flavor, public_dir / flavor)
    port = free_port()
    with serving(str(image["name"]), port).with_volume_mapping(str(bundle), "/model", "ro") as container:
        url = f"http://127.0.0.1:{port}"
        seconds = wait_ready(container, url)
        print(f"{flavor}: main image cold start to /ready {seconds:.2f}s")
        scoring = requests.get(url + "/metadata").json()["scoring"]
        assert scoring["path"] == "native", (scoring, logs(container))
        response = requests.post(url + "/predict", data=rows.to_json(orient="split", index=False),
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        assert_same_answers(response.json()["predictions"], want, rtol=1e-9)
