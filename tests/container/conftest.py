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


def _build(dockerfile: str, name: str) -> dict[str, object]:
    """Build ``dockerfile`` of the repository as ``<name>:test`` and ``<name>:<version>`` (once per run)."""
    problem = _engine_problem()
    if problem:
        message = f"container tests need a Docker engine and a base image ({problem}): run scripts/provision-docker"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from scorer import __version__

    tag = f"{name}:test"
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    cmd = [DOCKER, "build", "-f", str(REPO / dockerfile), "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
           "--build-arg", f"VERSION={__version__}", "--build-arg", f"REVISION={revision or 'unknown'}",
           "-t", tag, "-t", f"{name}:{__version__}", str(REPO)]
    if os.path.exists(CA_BUNDLE):
        cmd[2:2] = ["--secret", f"id=cacert,src={CA_BUNDLE}"]
    started = time.monotonic()
    result = subprocess.run(cmd, env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, text=True)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"docker build -f {dockerfile} failed:\n{result.stderr[-4000:]}"
    size = int(subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Size}}", tag], capture_output=True,
                              text=True, check=True).stdout)
    print(f"\nimage {tag}: built in {seconds:.1f}s, {size / 1e6:.0f} MB")
    return {"name": tag, "build_seconds": seconds, "size": size, "version": __version__, "revision": revision}


@pytest.fixture(scope="session")
def image() -> dict[str, object]:
    """The image, built once from the repository's Dockerfile (the same file users build)."""
    return _build("Dockerfile", "scorer")


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




@pytest.fixture(scope="session")
def spark_image() -> dict[str, object]:
    """The Spark image, built once from the repository's Dockerfile.spark (same rules as ``image``)."""
    return _build("Dockerfile.spark", "scorer-spark")
