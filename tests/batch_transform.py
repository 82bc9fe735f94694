"""SageMaker Batch Transform as a test harness: what a transform job does with one input file
(``SplitType=Line``, ``BatchStrategy=MultiRecord``, ``AssembleWith=Line``) against a running server, and
``scorer batch`` of the same file to compare its ``.out`` with.

A job reads ``GET /execution-parameters`` for the defaults it was not given, cuts the file into
mini-batches of whole lines of at most ``MaxPayloadInMB`` MiB, POSTs each to ``/invocations`` with its
``ContentType`` and ``Accept`` and joins the answers, a newline after each record. SageMaker's own local
mode (the Python SDK's ``LocalSession``) would do the same, but it starts the container with
docker-compose, which this machine's Docker lacks, and needs a boto3 session with an AWS region."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import requests

MIB = 1 << 20
#: ``scorer batch``'s options for a file comparable with a ``.out``, the output format last.
BATCH_ARGS = ("--keep-columns", "none", "--workers", "1", "--output-format")


def mini_batches(data: bytes, max_payload_mb: int) -> Iterator[bytes]:
    """``SplitType=Line`` with ``BatchStrategy=MULTI_RECORD``: as many whole lines (each with its newline)
    as fit in ``max_payload_mb`` MiB per request."""
    limit = max_payload_mb * MIB
    batch: list[bytes] = []
    size = 0
    for line in data.splitlines(keepends=True):
        if len(line) > limit:
            raise ValueError("a record larger than MaxPayloadInMB: Batch Transform fails the job")
        if size + len(line) > limit:
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield b"".join(batch)


def batch_transform(url: str, data: bytes, content_type: str, accept: str) -> tuple[bytes, list[tuple[int, int]]]:
    """One input file through a Batch Transform job: the ``.out`` (``AssembleWith=Line``: each answer ends
    in a newline, added when it lacks one) and, for each mini-batch, its lines and its answer's lines.
    Every answer must be 200."""
    params = requests.get(url + "/execution-parameters", timeout=10).json()
    assert params["BatchStrategy"] == "MULTI_RECORD"
    out = b""
    sizes = []
    for batch in mini_batches(data, params["MaxPayloadInMB"]):
        response = requests.post(url + "/invocations", data=batch, timeout=120,
                                 headers={"Content-Type": content_type, "Accept": accept})
        assert response.status_code == 200, response.text
        body = response.content
        out += body if body.endswith(b"\n") else body + b"\n"
        sizes.append((batch.count(b"\n"), body.count(b"\n")))
    return out, sizes


def scorer_batch(bundle: Path, src: Path, out_dir: Path, fmt: str) -> bytes:
    """``scorer batch`` of one file, prediction columns only (``--keep-columns none``): the output's bytes."""
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--input", str(src),
                           "--output", str(out_dir), *BATCH_ARGS, fmt], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (path,) = [p for p in out_dir.rglob(f"*.{fmt}")]
    return path.read_bytes()
