"""Supply chain of the images, checked on the files (no Docker): every pin of each dependency lock
carries sha256 hashes, both Dockerfiles install their lock with ``--require-hashes`` and the scorer
package itself without fetching anything, and the two locks agree on the versions they share.
That pip then really refuses a missing or wrong hash is shown by a build in tests/container."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[1]
LOCKS = {"Dockerfile": "docker/requirements.lock", "Dockerfile.spark": "docker/requirements-spark.lock"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})(?=\s|$)")


def logical_lines(text: str) -> list[str]:
    """The lines pip reads: comments dropped, backslash continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in (re.sub(r"(^|\s)#.*$", "", raw) for raw in joined.splitlines()) if line.strip()]


def pins(lock: str) -> dict[str, tuple[str, list[str]]]:
    """``{normalized name: (version, [sha256, ...])}`` of a lock; fails on a line that is not an exact pin."""
    result: dict[str, tuple[str, list[str]]] = {}
    for line in logical_lines((REPO / lock).read_text()):
        match = PIN.match(line)
        assert match, f"{lock}: not an exact '==' pin: {line[:80]!r}"
        name = re.sub(r"[-_.]+", "-", match[1]).lower()
        assert name not in result, f"{lock}: {name} pinned twice"
        result[name] = (match[2], HASH.findall(line))
    return result


def dockerfile_commands(dockerfile: str) -> list[str]:
    return [line for line in logical_lines((REPO / dockerfile).read_text())]


@pytest.mark.parametrize("lock", sorted(set(LOCKS.values())))
def test_every_pin_has_hashes(lock: str) -> None:
    """Each requirement is ``name==version`` with at least one ``--hash=sha256:`` (pip-compile
    --generate-hashes writes one per file of that version, for every platform)."""
    locked = pins(lock)
    assert len(locked) >= 20, f"{lock}: only {len(locked)} pins"
    unhashed = sorted(name for name, (_, hashes) in locked.items() if not hashes)
    assert not unhashed, f"{lock}: pins without --hash=sha256: {unhashed}"
    # The scorer package's build backend is in the lock: it is built with --no-build-isolation.
    assert "setuptools" in locked, f"{lock}: setuptools (the build backend) is not locked"


def test_spark_lock_agrees_with_main_lock() -> None:
    """The Spark image has the main image's versions (and hashes) plus pyspark, py4j and pysparkling."""
    main, spark = pins(LOCKS["Dockerfile"]), pins(LOCKS["Dockerfile.spark"])
    missing = sorted(set(main) - set(spark))
    assert not missing, f"in the main lock only: {missing}"
    differ = sorted(name for name in main if main[name][0] != spark[name][0])
    assert not differ, f"versions differ between the locks: {differ}"
    assert {"pyspark", "py4j", "h2o-pysparkling-scoring-3-5"} <= set(spark)


@pytest.mark.parametrize("dockerfile", sorted(LOCKS))
def test_dockerfile_installs_lock_with_require_hashes(dockerfile: str) -> None:
    """Every ``pip install`` of the build either installs the lock with --require-hashes, or is the
    scorer package from /src with --no-deps --no-build-isolation --no-index (nothing fetched)."""
    installs = [re.sub(r"\s+", " ", part) for cmd in dockerfile_commands(dockerfile)
                for part in re.split(r"&&|;", cmd) if re.search(r"\bpip install\b", part)]
    lock_installs = [i for i in installs if " -r " in i]
    assert lock_installs, f"{dockerfile}: no 'pip install -r' of a lock"
    for install in lock_installs:
        assert "--require-hashes" in install, f"{dockerfile}: {install}"
        assert install.rstrip().endswith(f"-r /tmp/{Path(LOCKS[dockerfile]).name}"), \
            f"{dockerfile}: installs more than its lock: {install}"
    others = [i for i in installs if " -r " not in i]
    assert others, f"{dockerfile}: the scorer package is not installed"
    for install in others:
        for flag in ("--no-deps", "--no-build-isolation", "--no-index"):
            assert flag in install.split(), f"{dockerfile}: {flag} missing: {install}"
    assert f"COPY {LOCKS[dockerfile]} /tmp/" in (REPO / dockerfile).read_text()


@pytest.mark.parametrize("dockerfile", sorted(LOCKS))
def test_dockerfile_records_base_image(dockerfile: str) -> None:
    """The base image stays a build argument, and what was used lands in the standard OCI labels."""
    text = (REPO / dockerfile).read_text()
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS runtime$", text, re.MULTILINE)
    assert 'org.opencontainers.image.base.name="${BASE_IMAGE}"' in text
    assert 'org.opencontainers.image.base.digest="${BASE_DIGEST}"' in text


@pytest.mark.parametrize("dockerfile", sorted(LOCKS))
def test_digest_pinned_base_needs_matching_base_digest(dockerfile: str) -> None:
    """The build's check (the Dockerfile's own RUN line, run here by sh): a BASE_IMAGE pinned by digest
    builds only with BASE_DIGEST equal to that digest, so the label cannot be left out or be wrong;
    a base named by tag (a developer's or the tests' local base) builds with any BASE_DIGEST."""
    check = next(line for line in dockerfile_commands(dockerfile) if "BASE_DIGEST must be" in line)
    assert check.startswith("RUN ")
    pinned = "debian:bookworm-slim@sha256:" + "ab" * 32

    def run(base_image: str, base_digest: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", check.removeprefix("RUN ")], capture_output=True, text=True, check=False,
                              env={"BASE_IMAGE": base_image, "BASE_DIGEST": base_digest, "PATH": "/usr/bin:/bin"})

    assert run("debian:bookworm-slim", "").returncode == 0
    assert run("scorer-base:bookworm", "sha256:" + "cd" * 32).returncode == 0
    assert run(pinned, "sha256:" + "ab" * 32).returncode == 0
    for wrong in ("", "sha256:" + "cd" * 32):
        result = run(pinned, wrong)
        assert result.returncode == 1
        assert result.stderr.strip() == f"BASE_DIGEST must be the digest in BASE_IMAGE ({pinned}): got '{wrong}'"
