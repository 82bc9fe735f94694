"""The image run the way SageMaker and Azure ML run a custom container, against a real Docker engine.

SageMaker: ``docker run IMAGE serve`` with the model at /opt/ml/model, its ``SAGEMAKER_*`` variables and
port 8080; a Batch Transform job driven as :mod:`batch_transform` does (``/execution-parameters``,
mini-batches of lines, ``/invocations``), its ``.out`` compared with ``scorer batch`` run by the same
image. Azure ML: the image's own command, the model mounted at the deployment's ``model_mount_path``
(/model), the liveness, readiness and scoring routes of the README's ``inference_config`` on port 8080."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import requests
from testcontainers.core.container import DockerContainer

from batch_transform import BATCH_ARGS, MIB, batch_transform
from .conftest import publish
from .test_image import _port_free, free_port, logs, wait_ready

SLOW_LOAD = """
    import time
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def load(self, artifacts_dir):
            time.sleep(4)

        def predict(self, df):
            return pd.DataFrame({"total": df["a"] + 2 * df["b"]})
"""


def _port(container: DockerContainer) -> tuple[DockerContainer, int]:
    """Port 8080, as both platforms use it; a free one (SCORER_PORT) only if 8080 is taken on this machine."""
    if _port_free(8080):
        return container, 8080
    port = free_port()
    return container.with_env("SCORER_PORT", str(port)), port


def _batch_in_image(image: str, bundle: Path, inp: Path, out: Path, name: str, fmt: str) -> bytes:
    """``scorer batch`` of one mounted file by the image itself: the output's bytes."""
    out.mkdir()
    out.chmod(0o777)
    container = (DockerContainer(image).with_kwargs(network_mode="none")
                 .with_volume_mapping(str(bundle), "/model", "ro").with_volume_mapping(str(inp), "/in", "ro")
                 .with_volume_mapping(str(out), "/out", "rw")
                 .with_command(f"batch --input /in/{name} --output /out {' '.join(BATCH_ARGS)} {fmt}"))
    container.start()
    try:
        result = container.get_wrapped_container().wait(timeout=300)
        assert result["StatusCode"] == 0, logs(container)
    finally:
        container.stop()
    (path,) = list(out.rglob(f"*.{fmt}"))
    return path.read_bytes()


def test_sagemaker_batch_transform(image: dict[str, object], example_bundles: dict[str, Path], build_module: object,
                                   public_dir: Path) -> None:
    """`docker run IMAGE serve` as Batch Transform starts it (SAGEMAKER_BATCH and the job's parameters in
    the environment, the body limit set to 1 MiB in the model's environment): /ping, /execution-parameters,
    then a 2 MB file of the spam bundle (label and two probabilities per row) as headerless CSV and as JSON
    Lines in mini-batches: each .out equals the image's own `scorer batch` output; a bad JSON Lines body
    is a clear 400."""
    name = str(image["name"])
    bundle = publish(example_bundles["spam"], public_dir / "spam")
    frame = build_module.make_spam_frame(40_000, 11)[["feature1", "feature2", "feature3"]]  # type: ignore[attr-defined]
    inp = public_dir / "in"
    inp.mkdir()
    (inp / "in.csv").write_bytes(frame.to_csv(index=False).encode())
    (inp / "in.jsonl").write_bytes(frame.to_json(orient="records", lines=True).encode().rstrip(b"\n") + b"\n")
    for path in (inp, inp / "in.csv", inp / "in.jsonl"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    want_csv = _batch_in_image(name, bundle, inp, public_dir / "out-csv", "in.csv", "csv").partition(b"\n")[2]
    want_jsonl = _batch_in_image(name, bundle, inp, public_dir / "out-jsonl", "in.jsonl", "jsonl")

    container = (DockerContainer(name).with_kwargs(network_mode="host").with_command("serve")
                 .with_volume_mapping(str(bundle), "/opt/ml/model", "ro")
                 .with_env("SAGEMAKER_BATCH", "true").with_env("SAGEMAKER_MAX_PAYLOAD_IN_MB", "1")
                 .with_env("SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD")
                 .with_env("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "1")
                 .with_env("SCORER_MAX_BODY_BYTES", str(MIB)))
    container, port = _port(container)
    with container:
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        assert requests.get(url + "/ping", timeout=5).status_code == 200
        assert requests.get(url + "/execution-parameters", timeout=5).json() == {
            "MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}

        headerless = (inp / "in.csv").read_bytes().partition(b"\n")[2]
        out, sizes = batch_transform(url, headerless, "text/csv", "text/csv")
        assert len(sizes) >= 2 and all(lines == answered for lines, answered in sizes), sizes
        assert out == want_csv and out.count(b"\n") == len(frame)

        out, sizes = batch_transform(url, (inp / "in.jsonl").read_bytes(), "application/jsonlines",
                                     "application/jsonlines")
        assert len(sizes) >= 2 and all(lines == answered for lines, answered in sizes), sizes
        assert out == want_jsonl

        bad = requests.post(url + "/invocations", data=b'{"feature1": 1}\n{"feature1": \n', timeout=10,
                            headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"})
        assert bad.status_code == 400, bad.text
        assert "line 2 is not valid JSON" in bad.json()["message"]


def test_azure_ml_custom_container_routes(image: dict[str, object], bundle_factory, public_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """As an Azure ML online deployment runs it: no command (the image's `serve`), the model at
    model_mount_path /model, AZUREML_* variables set, port 8080. The liveness route /health is 200 while
    the bundle loads and the readiness route /ready 503; then /ready is 200 and the scoring route /predict
    answers JSON and CSV (with its header line); bad input is a clear 4xx."""
    bundle = publish(bundle_factory("slow", code=SLOW_LOAD), public_dir / "slow")
    container = (DockerContainer(str(image["name"])).with_kwargs(network_mode="host")
                 .with_volume_mapping(str(bundle), "/model", "ro")
                 .with_env("AZUREML_MODEL_DIR", "/model").with_env("AZUREML_ENTRY_SCRIPT", "")
                 .with_env("SCORER_LOG_FORMAT", "text"))
    container, port = _port(container)
    with container:
        url = f"http://127.0.0.1:{port}"
        seen_loading = False
        for _ in range(600):  # until the server answers at all
            try:
                live = requests.get(url + "/health", timeout=2)
            except requests.ConnectionError:
                container.reload()
                assert container.status != "exited", logs(container)
                time.sleep(0.05)
                continue
            assert live.status_code == 200 and live.json() == {"status": "ok"}
            ready = requests.get(url + "/ready", timeout=2)
            if ready.status_code == 503:
                seen_loading = True
                assert ready.json()["error"] == "not_ready"
            else:
                break
        assert seen_loading, "the 4 s load was never observed: /ready was 200 at the first answer"
        wait_ready(container, url)
        assert requests.get(url + "/health", timeout=2).status_code == 200

        response = requests.post(url + "/predict", json={"a": [1, 3], "b": [2, 4]}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [5.0, 11.0]}
        response = requests.post(url + "/predict", data="a,b\n1,2\n", timeout=10,
                                 headers={"Content-Type": "text/csv", "Accept": "text/csv"})
        assert response.text == "total\n5.0\n"
        frame = pd.DataFrame({"a": [1.0], "b": [2.0]})
        response = requests.post(url + "/predict", data=frame.to_json(orient="split"), timeout=10,
                                 headers={"Content-Type": "application/json"})
        assert response.json() == {"predictions": [5.0]}

        bad = requests.post(url + "/predict", data=b"<rows/>", headers={"Content-Type": "application/xml"}, timeout=10)
        assert bad.status_code == 415 and bad.json()["error"] == "unsupported_media_type"
        bad = requests.post(url + "/predict", json={"a": [1]}, timeout=10)
        assert bad.status_code == 422 and bad.json()["columns"] == ["b"]
