"""The two images for benchmarks: built from this checkout, run with ``docker run``, timed to /ready.

``build(dockerfile, tag)`` builds ``Dockerfile`` (the main image: no Java, no pyspark) or
``Dockerfile.spark`` (the Spark image: Java 17, pyspark, Sparkling Water scoring) as the container
tests do (tests/container/conftest.py): the local Debian base image by tag (made with debootstrap
by scripts/provision-docker, which :func:`ensure_engine` runs when the engine or the base is
missing and we are root), host network for pip, the host CA bundle as a BuildKit secret.

``run_to_ready`` starts a container with host networking (it binds 0.0.0.0:<port>; we talk to
127.0.0.1 only) and times ``docker run`` to the first 200 on /ready, sampling the RSS of the
container's process tree (seen from the host through /proc: tini, scorer and a JVM if any) the
whole time. Only the Debian client at /usr/bin/docker is used (BuildKit secrets need it).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import _harness as h

DOCKER = "/usr/bin/docker"
BASE_IMAGE = os.environ.get("TEST_BASE_IMAGE", "scorer-base:bookworm")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
RUNNING: list[str] = []  # containers started here, removed on exit (also after an error or Ctrl-C)


@atexit.register
def _remove_running() -> None:
    for cid in list(RUNNING):
        subprocess.run([DOCKER, "rm", "-f", cid], capture_output=True)
        RUNNING.remove(cid)


def _docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def engine_problem() -> str | None:
    if not os.path.exists(DOCKER):
        return f"{DOCKER} not found"
    if subprocess.run([DOCKER, "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers"
    if subprocess.run([DOCKER, "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        return f"base image {BASE_IMAGE} missing"
    return None


def ensure_engine() -> None:
    """A Docker engine and the base image, provisioned by scripts/provision-docker when root; else an error."""
    problem = engine_problem()
    if problem and os.geteuid() == 0:
        h.log(f"images: {problem}: running scripts/provision-docker")
        code, out = h.run_foreground([str(h.REPO / "scripts" / "provision-docker")])
        if code != 0:
            raise RuntimeError(f"scripts/provision-docker failed (exit {code}):\n{out[-3000:]}")
        problem = engine_problem()
    if problem:
        raise RuntimeError(f"the image benchmarks need a Docker engine and a base image ({problem}): "
                           "run scripts/provision-docker as root, or pass --no-images")


def build(dockerfile: str, tag: str) -> dict[str, Any]:
    """``docker build -f dockerfile -t tag`` of this checkout; its build time and size."""
    base_id = _docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE)
    cmd = [DOCKER, "build", "-f", str(h.REPO / dockerfile), "--network", "host", "-t", tag,
           "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"BASE_DIGEST={base_id}",
           "--build-arg", f"REVISION={h.code_state()['git_head'] or 'unknown'}"]
    if os.path.exists(CA_BUNDLE):
        cmd += ["--secret", f"id=cacert,src={CA_BUNDLE}"]
    started = time.perf_counter()
    code, out = h.run_foreground([*cmd, str(h.REPO)], env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if code != 0:
        raise RuntimeError(f"docker build -f {dockerfile} failed (exit {code}):\n{out[-4000:]}")
    return {"tag": tag, "dockerfile": dockerfile, "build_s": time.perf_counter() - started,
            "size_mb": round(int(_docker("image", "inspect", "-f", "{{.Size}}", tag)) / 1e6)}


def has_jvm(tag: str) -> dict[str, bool]:
    """Whether the image has a ``java`` on PATH and an importable pyspark (the main image must have neither)."""
    script = ("command -v java >/dev/null && echo java; "
              "python3 -c 'import importlib.util as u; print(\"pyspark\" if u.find_spec(\"pyspark\") else \"\")'")
    out = _docker("run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c", script).split()
    return {"java": "java" in out, "pyspark": "pyspark" in out}


def publish(src: Path, dest: Path) -> Path:
    """A world-readable copy of a bundle for the container's user (uid 10001)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


class PeakRss(threading.Thread):
    """The largest RSS (MiB) of a process tree, sampled every 50 ms from construction until ``stop()``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_mib, self._done = pid, 0.0, threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_mib = max(self.peak_mib, h.tree_rss_mib(self.pid) or 0.0)
            self._done.wait(0.05)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak_mib


class Container:
    """``docker run -d`` of ``tag`` serving ``bundle`` (mounted read-only at /model) on the host network."""

    def __init__(self, tag: str, bundle: Path, env: dict[str, str], cpus: str | None) -> None:
        self.port = h.free_port()
        cmd = ["run", "-d", "--network", "host", "-v", f"{bundle}:/model:ro", "-e", f"SCORER_PORT={self.port}",
               "-e", "SCORER_LOG_FORMAT=text", "-e", "SCORER_LOG_LEVEL=warning"]
        cmd += [x for k, v in env.items() for x in ("-e", f"{k}={v}")]
        if cpus is not None:
            cmd += ["--cpuset-cpus", cpus]
        self.started = time.perf_counter()
        self.id = _docker(*cmd, tag, "serve")
        RUNNING.append(self.id)
        pid = int(_docker("inspect", "-f", "{{.State.Pid}}", self.id, check=False) or 0)
        self.sampler = PeakRss(pid) if pid else None

    def wait_ready(self, timeout: float) -> float:
        """Seconds from ``docker run`` to the first 200 on /ready."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            try:
                status, _ = h.http_request(self.port, "GET", "/ready", timeout=2)
                if status == 200:
                    return time.perf_counter() - self.started
            except OSError:
                state = _docker("inspect", "-f", "{{.State.Running}}", self.id, check=False)
                if state != "true":
                    raise RuntimeError(f"container of {self.id[:12]} exited before /ready:\n{self.logs()}") from None
            time.sleep(0.02)
        raise RuntimeError(f"container {self.id[:12]} not ready after {timeout}s:\n{self.logs()}")

    def metadata(self) -> dict[str, Any]:
        status, body = h.http_request(self.port, "GET", "/metadata")
        if status != 200:
            raise RuntimeError(f"GET /metadata -> {status}")
        result: dict[str, Any] = json.loads(body)
        return result

    def logs(self) -> str:
        done = subprocess.run([DOCKER, "logs", "--tail", "30", self.id], capture_output=True, text=True)
        return (done.stdout + done.stderr)[-3000:]

    def stop(self) -> float | None:
        """Stop the container; the peak RSS of its process tree (MiB) over its life."""
        peak = self.sampler.stop() if self.sampler else None
        subprocess.run([DOCKER, "stop", "-t", "10", self.id], capture_output=True)
        subprocess.run([DOCKER, "rm", "-f", self.id], capture_output=True)
        if self.id in RUNNING:
            RUNNING.remove(self.id)
        return peak
