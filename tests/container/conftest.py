"""Container test fixtures: a real Docker engine, the image built once per run from the repo's
Dockerfile, and containers run with host networking on 127.0.0.1 (testcontainers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the ryuk image cannot be pulled here
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"  # Debian's client, with BuildKit support
IMAGE = "scorer:test"
BASE_IMAGE = os.environ.get("TEST_BASE_IMAGE", "scorer-base:bookworm")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _engine_problem() -> str | None:
    if not os.path.exists(DOCKER):
        return f"{DOCKER} not found"
    if subprocess.run([DOCKER, "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers"
    if subprocess.run([DOCKER, "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        return f"base image {BASE_IMAGE} missing"
    return None


@pytest.fixture(scope="session")
def image() -> dict[str, object]:
    """The image, built once from the repository's Dockerfile (the same file users build)."""
    problem = _engine_problem()
    if problem:
        message = f"container tests need a Docker engine and a base image ({problem}): run scripts/provision-docker"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from scorer import __version__

    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    cmd = [DOCKER, "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
           "--build-arg", f"VERSION={__version__}", "--build-arg", f"REVISION={revision or 'unknown'}",
           "-t", IMAGE, "-t", f"scorer:{__version__}", str(REPO)]
    if os.path.exists(CA_BUNDLE):
        cmd[2:2] = ["--secret", f"id=cacert,src={CA_BUNDLE}"]
    started = time.monotonic()
    result = subprocess.run(cmd, env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, text=True)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"docker build failed:\n{result.stderr[-4000:]}"
    size = int(subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Size}}", IMAGE], capture_output=True,
                              text=True, check=True).stdout)
    print(f"\nimage {IMAGE}: built in {seconds:.1f}s, {size / 1e6:.0f} MB")
    return {"name": IMAGE, "build_seconds": seconds, "size": size, "version": __version__, "revision": revision}


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A fresh directory the container's non-root user (uid 10001) can read and write."""
    path = Path(tempfile.mkdtemp(prefix="scorer-ct-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(src: Path, dest: Path) -> Path:
    """Copy a bundle or data folder to ``dest`` with world-readable permissions."""
    shutil.copytree(src, dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


SPARK_IMAGE = "scorer-spark:test"


@pytest.fixture(scope="session")
def spark_image() -> dict[str, object]:
    """The Spark image, built once from the repository's Dockerfile.spark (same rules as ``image``)."""
    problem = _engine_problem()
    if problem:
        message = f"container tests need a Docker engine and a base image ({problem}): run scripts/provision-docker"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from scorer import __version__

    revision = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True).stdout.strip()
    cmd = [DOCKER, "build", "-f", str(REPO / "Dockerfile.spark"), "--network", "host",
           "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"VERSION={__version__}",
           "--build-arg", f"REVISION={revision or 'unknown'}",
           "-t", SPARK_IMAGE, "-t", f"scorer-spark:{__version__}", str(REPO)]
    if os.path.exists(CA_BUNDLE):
        cmd[2:2] = ["--secret", f"id=cacert,src={CA_BUNDLE}"]
    started = time.monotonic()
    result = subprocess.run(cmd, check=False, env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, text=True)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"docker build -f Dockerfile.spark failed:\n{result.stderr[-4000:]}"
    size = int(subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Size}}", SPARK_IMAGE], capture_output=True,
                              text=True, check=True).stdout)
    print(f"\nimage {SPARK_IMAGE}: built in {seconds:.1f}s, {size / 1e6:.0f} MB")
    return {"name": SPARK_IMAGE, "build_seconds": seconds, "size": size, "version": __version__, "revision": revision}
