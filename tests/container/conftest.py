"""Container test fixtures: a real Docker engine, the image built once per run from the repo's
Dockerfile, and containers run with host networking on 127.0.0.1 (testcontainers).

When a run holds other tests too, the container tests go last and the images they need start building at
once, in a background thread (:func:`pytest_collection_modifyitems`): the builds (mostly downloads and
installs inside the engine) overlap with the rest of the suite instead of adding their minutes to it. The
``image`` and ``spark_image`` fixtures take that build's result (a failed one is built again in the
fixture, which reports its error)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the ryuk image cannot be pulled here
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"  # Debian's client, with BuildKit support
BASE_IMAGE = os.environ.get("TEST_BASE_IMAGE", "scorer-base:bookworm")
# The tag of the images built here (<name>:<tag>); on a machine shared by several checkouts give each
# its own so that one run never tests another's image.
IMAGE_TAG = os.environ.get("TEST_IMAGE_TAG", "test")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _engine_problem() -> str | None:
    if not os.path.exists(DOCKER):
        return f"{DOCKER} not found"
    if subprocess.run([DOCKER, "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine answers"
    if subprocess.run([DOCKER, "image", "inspect", BASE_IMAGE], capture_output=True, check=False).returncode != 0:
        return f"base image {BASE_IMAGE} missing"
    return None


def _require_engine() -> None:
    problem = _engine_problem()
    if problem:
        message = f"container tests need a Docker engine and a base image ({problem}): run scripts/provision-docker"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def base_image_id() -> str:
    """The local base image's id (``sha256:...``): what the builds record as the base digest. A base made
    with debootstrap and ``docker import`` has no registry digest, and BuildKit resolves ``FROM
    name@sha256:...`` at the registry only, so the builds name it by tag and record its id."""
    return subprocess.run([DOCKER, "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE], capture_output=True,
                          text=True, check=True).stdout.strip()


def build_command(dockerfile: str, context: Path, *extra: str) -> list[str]:
    """``docker build`` of ``dockerfile`` in ``context`` with the arguments every test build uses (the
    base image by tag and its id as BASE_DIGEST, host network, the CA bundle as a BuildKit secret)."""
    cmd = [DOCKER, "build", "-f", str(context / dockerfile), "--network", "host",
           "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"BASE_DIGEST={base_image_id()}", *extra]
    if os.path.exists(CA_BUNDLE):
        cmd += ["--secret", f"id=cacert,src={CA_BUNDLE}"]
    return [*cmd, str(context)]


def docker_build(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, text=True, check=False)


def _build(dockerfile: str, name: str) -> dict[str, object]:
    """Build ``dockerfile`` of the repository as ``<name>:<IMAGE_TAG>`` (default ``test``), and as
    ``<name>:<version>`` with the default tag (once per run)."""
    _require_engine()
    from scorer import __version__

    tag = f"{name}:{IMAGE_TAG}"
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    tags = ["-t", tag] + (["-t", f"{name}:{__version__}"] if IMAGE_TAG == "test" else [])
    cmd = build_command(dockerfile, REPO, "--build-arg", f"VERSION={__version__}",
                        "--build-arg", f"REVISION={revision or 'unknown'}", *tags)
    started = time.monotonic()
    result = docker_build(cmd)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"docker build -f {dockerfile} failed:\n{result.stderr[-4000:]}"
    size = int(subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Size}}", tag], capture_output=True,
                              text=True, check=True).stdout)
    print(f"\nimage {tag}: built in {seconds:.1f}s, {size / 1e6:.0f} MB")
    return {"name": tag, "build_seconds": seconds, "size": size, "version": __version__, "revision": revision,
            "base_name": BASE_IMAGE, "base_digest": base_image_id()}


def build_with_lock(dockerfile: str, lock: str, lock_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Build the ``build`` stage of ``dockerfile`` from a copy of the build context whose ``lock`` (path
    in the repository) holds ``lock_text`` instead: the same Dockerfile and arguments as the real build,
    so everything before the lock's install comes from the cache."""
    _require_engine()
    context = tmp_path / "context"
    context.mkdir()
    for path in ("Dockerfile", "Dockerfile.spark", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / path, context / path)
    for path in ("docker", "scorer", "bundles"):  # BuildKit checks every COPY source before running a step
        shutil.copytree(REPO / path, context / path, ignore=shutil.ignore_patterns("__pycache__"))
    (context / lock).write_text(lock_text)
    return docker_build(build_command(dockerfile, context, "--target", "build"))


def lock_entry(lock: str, name: str) -> str:
    """The logical line of ``name`` in the repository's ``lock`` (``name==version --hash=... ...``)."""
    text = re.sub(r"\\\n", " ", (REPO / lock).read_text())
    line = next(line for line in text.splitlines() if line.lower().startswith(f"{name}=="))
    return " ".join(line.split("#")[0].split())


IMAGES = {"image": ("Dockerfile", "scorer"), "spark_image": ("Dockerfile.spark", "scorer-spark")}
_prebuilt: dict[str, dict[str, object]] = {}
_prebuilding: list[threading.Thread] = []


def _in_container_dir(item: pytest.Item) -> bool:
    return Path(str(item.path)).is_relative_to(Path(__file__).parent)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Container tests last; the images they use built meanwhile (see the module's docstring)."""
    inside = [item for item in items if _in_container_dir(item)]
    if not inside or len(inside) == len(items):
        return
    items[:] = [item for item in items if not _in_container_dir(item)] + inside
    if config.option.collectonly:
        return
    wanted = [name for name in IMAGES if any(name in getattr(item, "fixturenames", ()) for item in inside)]
    if wanted and _engine_problem() is None:
        thread = threading.Thread(target=_prebuild, args=(wanted,), name="image-prebuild", daemon=True)
        thread.start()
        _prebuilding.append(thread)


def _prebuild(wanted: list[str]) -> None:
    for name in wanted:  # one after the other: two builds at once would only compete for the same cores
        try:
            _prebuilt[name] = _build(*IMAGES[name])
        except BaseException:  # noqa: BLE001 - the fixture builds it again and reports the failure
            pass


def _image(name: str) -> dict[str, object]:
    for thread in _prebuilding:
        thread.join()
    return _prebuilt.get(name) or _build(*IMAGES[name])


@pytest.fixture(scope="session")
def image() -> dict[str, object]:
    """The image, built once from the repository's Dockerfile (the same file users build)."""
    return _image("image")


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
    return _image("spark_image")


def assert_base_recorded(image: dict[str, object]) -> None:
    """The OCI labels name the base image and its digest (here the local base's id), and the image
    really is built on that base: its filesystem layers start with the base's."""
    def inspect(ref: str, template: str) -> object:
        return json.loads(subprocess.run([DOCKER, "image", "inspect", "-f", template, ref], capture_output=True,
                                         text=True, check=True).stdout)

    labels = inspect(str(image["name"]), "{{json .Config.Labels}}")
    assert isinstance(labels, dict)
    assert labels["org.opencontainers.image.base.name"] == image["base_name"] == BASE_IMAGE
    assert labels["org.opencontainers.image.base.digest"] == image["base_digest"]
    assert str(image["base_digest"]).startswith("sha256:")
    base_layers = inspect(labels["org.opencontainers.image.base.digest"], "{{json .RootFS.Layers}}")
    layers = inspect(str(image["name"]), "{{json .RootFS.Layers}}")
    assert isinstance(base_layers, list) and isinstance(layers, list) and base_layers
    assert layers[:len(base_layers)] == base_layers, (base_layers, layers)


def wrong_hash(entry: str) -> str:
    """``entry`` (a lock line) with every sha256 changed in its last hex digit."""
    return re.sub(r"(--hash=sha256:[0-9a-f]{63})([0-9a-f])",
                  lambda m: m[1] + format((int(m[2], 16) + 1) % 16, "x"), entry)
