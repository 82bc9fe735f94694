"""Where ``scorer batch --engine local`` writes: a local directory, or a prefix in an object store.

Both are an :class:`OutputTree` of files named by their path relative to the output root, with the same
promises, kept differently:

* **Nothing partial under a final name.** An output is written under a hidden temporary name
  (``.<name>[.<tag>].scorer-tmp``, which no input walk reads) through a :class:`Pending`, then published:
  on disk ``fsync`` + ``rename``; in a store the temporary object is completed (a multipart upload becomes
  visible only when completed, atomically), copied server-side under its final key (one ``CopyObject``:
  atomic per object) and deleted. An object store has no rename, so the copy is the price of never
  showing a half-written object, which a failed writer's upload completed on close would otherwise do.
* **Small state files** (markers, ``job.json``, ``manifest.json``, ``_SUCCESS``) are written whole: a
  temp file renamed on disk, one ``PutObject`` in a store (atomic).
* **Clean-up on resume** (:meth:`OutputTree.clean`): temporary files a killed run left; in a store also
  temporary objects and incomplete multipart uploads (of temporary keys, and of final keys a large
  copy was writing), so abandoned parts stop costing storage.
* **One writer at a time** (:meth:`OutputTree.lock`): a lock file/object ``_scorer/lock[-<shard>]``
  holds its owner (host, pid, a run id) and an expiry ``lock_seconds`` ahead, renewed every third of
  that by a background thread. Another run is refused (exit 2) while the lock is live; a lock whose expiry passed,
  or whose owner was a process of this host that is gone (a ``kill -9``), is taken over. In a store the
  lock is created with ``If-None-Match: *`` and taken over with ``If-Match`` on its ETag, so two runs
  racing for it cannot both win.

The store's data path (streams, multipart uploads, listings) is pyarrow's filesystem
(:mod:`scorer.object_store`). What pyarrow does not offer, conditional writes, listing and aborting
multipart uploads, and server-side copies of any size, comes from boto3, the AWS SDK (the ``s3`` extra:
``pip install 'scorer[s3]'``; the images have it), which reads the same standard AWS variables.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
import pyarrow.fs as pafs

from scorer import object_store
from scorer.batch.files import HashingSink
from scorer.errors import StoreError, UsageError

STATE_DIR = "_scorer"
TEMP_SUFFIX = ".scorer-tmp"
COPY_PART_BYTES = 1 << 30  # a server-side copy larger than this goes in parts of this size (S3 caps one at 5 GiB)


def temp_name(rel: str, tag: str = "") -> str:
    """The hidden temporary name ``rel`` is written under before it is published."""
    path = PurePosixPath(rel)
    return str(path.with_name(f".{path.name}{'.' + tag if tag else ''}{TEMP_SUFFIX}"))


def is_temp(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


class Pending:
    """One output being written under its temporary name: :attr:`sink` takes the bytes; :meth:`finish`
    completes the temporary file (after which :attr:`size` and :attr:`sha256` are known), :meth:`publish`
    makes it the final file, :meth:`discard` removes it."""

    def __init__(self, tree: OutputTree, rel: str, tag: str) -> None:
        self.tree = tree
        self.rel = rel
        self.temp = temp_name(rel, tag)
        self.sink = HashingSink(tree._open_temp(self.temp, rel))
        self.finished = False

    @property
    def size(self) -> int:
        return self.sink.size

    @property
    def sha256(self) -> str:
        return self.sink.sha256()

    def finish(self) -> None:
        self.tree._finish_temp(self.sink.raw, self.temp)
        self.finished = True

    def publish(self) -> None:
        self.tree.check_lock()
        self.tree._publish(self.temp, self.rel)

    def discard(self) -> None:
        with contextlib.suppress(Exception):  # a half-written temp file we are deleting anyway
            if not self.finished:
                self.tree._abandon_temp(self.sink.raw)
        with contextlib.suppress(Exception):
            self.tree.delete(self.temp)


class OutputTree:
    """The output root: files by their path relative to it (``a/b.csv``, ``_scorer/job.json``)."""

    root: str  # the directory or the URI, as messages name it
    lost: str | None = None  # why this run's lock is no longer its own

    def uri(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def read(self, rel: str) -> bytes | None:
        raise NotImplementedError

    def read_json(self, rel: str) -> Any:
        """A small JSON state file, or None when it is absent (or unreadable: never written completely)."""
        data = self.read(rel)
        try:
            return None if data is None else orjson.loads(data)
        except orjson.JSONDecodeError:
            return None

    def put(self, rel: str, data: bytes, *, tag: str = "") -> None:
        """Write ``rel`` whole, atomically (``tag`` keeps the temp names of shards apart)."""
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    def size(self, rel: str) -> int | None:
        """The file's size, or None when it is absent."""
        raise NotImplementedError

    def names(self, rel_dir: str = "") -> list[str]:
        """The names of the files and folders directly under ``rel_dir`` (``""``: the root); none if absent."""
        raise NotImplementedError

    def remove_dir(self, rel_dir: str) -> None:
        raise NotImplementedError

    def pending(self, rel: str, tag: str = "") -> Pending:
        return Pending(self, rel, tag)

    def clean(self, rels: list[tuple[str, str]] | None) -> None:
        """Remove what a killed run left: every temporary file under the root (``rels`` None), or only the
        temporaries of ``rels``, pairs of a file and the tag of its temporary name (files shards share)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def lock(self, name: str, seconds: float) -> Iterator[None]:
        """Hold ``_scorer/<name>`` while the block runs, renewed every ``seconds`` / 3 (abandoned when not
        renewed for ``seconds``); refuse (UsageError) when another run holds it."""
        rel = f"{STATE_DIR}/{name}"
        me = {**_owner(), "seconds": seconds}
        self._acquire(rel, me)
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_loop, args=(rel, me, stop), daemon=True, name="scorer-lock")
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            with contextlib.suppress(Exception):  # a store gone at the end: the lock expires on its own
                self._release(rel, me)

    def _renew_loop(self, rel: str, me: dict[str, Any], stop: threading.Event) -> None:
        while not stop.wait(me["seconds"] / 3):
            try:
                if not self._renew(rel, me):
                    self.lost = (f"{self.uri(rel)}: this run's lock was taken over by another run (not renewed "
                                 f"within {me['seconds']:g} s?); stopping")
                    return
            except Exception:  # noqa: BLE001, S112 - a store down for a moment: renewed next time, or expired
                continue

    def check_lock(self) -> None:
        """Raise :class:`StoreError` if another run took this run's lock over: nothing more is published."""
        if self.lost:
            raise StoreError(self.lost)

    # what each kind of tree implements
    def _open_temp(self, temp: str, rel: str) -> Any:
        """A stream writing the temporary file ``temp`` of ``rel``."""
        raise NotImplementedError

    def _finish_temp(self, raw: Any, temp: str) -> None:
        raise NotImplementedError

    def _abandon_temp(self, raw: Any) -> None:
        raw.close()

    def _publish(self, temp: str, rel: str) -> None:
        raise NotImplementedError

    def _acquire(self, rel: str, me: dict[str, Any]) -> None:
        raise NotImplementedError

    def _renew(self, rel: str, me: dict[str, Any]) -> bool:
        """Push the lock's expiry on; False when the lock is no longer this run's."""
        raise NotImplementedError

    def _release(self, rel: str, me: dict[str, Any]) -> None:
        raise NotImplementedError


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "run": uuid.uuid4().hex}


def _abandoned(held: Any, me: dict[str, Any], now: float) -> bool:
    """A lock record nobody holds any more: unreadable, expired, or owned by a process of this host that
    is gone (or whose pid is now ours: a restarted container)."""
    if not isinstance(held, dict):
        return True
    if float(held.get("expires", 0)) < now:
        return True
    if held.get("host") == me["host"] and held.get("run") != me["run"]:
        pid = int(held.get("pid", 0))
        if pid == me["pid"] or not _alive(pid):
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _refusal(uri: str, held: dict[str, Any]) -> UsageError:
    until = time.strftime("%H:%M:%S", time.gmtime(float(held.get("expires", 0))))
    return UsageError(f"{uri}: another scorer batch is writing this output (host {held.get('host')}, pid "
                      f"{held.get('pid')}); refused. If it died, its lock expires at {until} UTC")


def _lock_record(me: dict[str, Any]) -> bytes:
    return orjson.dumps({"host": me["host"], "pid": me["pid"], "run": me["run"],
                         "expires": time.time() + me["seconds"]})


# --- a local directory --------------------------------------------------------------------------------


class LocalTree(OutputTree):
    def __init__(self, root: Path) -> None:
        self.path = root
        self.root = str(root)
        self._made: list[Path] = []  # folders the lock made

    def _p(self, rel: str) -> Path:
        return self.path / rel

    def read(self, rel: str) -> bytes | None:
        try:
            return self._p(rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put(self, rel: str, data: bytes, *, tag: str = "") -> None:
        path = self._p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._p(temp_name(rel, tag))
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def delete(self, rel: str) -> None:
        self._p(rel).unlink(missing_ok=True)

    def size(self, rel: str) -> int | None:
        try:
            return self._p(rel).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def names(self, rel_dir: str = "") -> list[str]:
        folder = self._p(rel_dir)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def remove_dir(self, rel_dir: str) -> None:
        shutil.rmtree(self._p(rel_dir), ignore_errors=True)

    def clean(self, rels: list[tuple[str, str]] | None) -> None:
        if rels is None:
            for stale in self.path.rglob(f".*{TEMP_SUFFIX}"):
                stale.unlink(missing_ok=True)
            return
        for rel, tag in rels:
            self._p(temp_name(rel, tag)).unlink(missing_ok=True)

    def _open_temp(self, temp: str, rel: str) -> Any:
        path = self._p(temp)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")  # noqa: SIM115 - closed by _finish_temp or _abandon_temp

    def _finish_temp(self, raw: Any, temp: str) -> None:
        raw.flush()
        os.fsync(raw.fileno())
        raw.close()

    def _publish(self, temp: str, rel: str) -> None:
        os.replace(self._p(temp), self._p(rel))

    def _acquire(self, rel: str, me: dict[str, Any]) -> None:
        path = self._p(rel)
        # folders made for the lock alone go with it when the run ends having written nothing (a load failure)
        self._made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.read_json(rel)
                if not _abandoned(held, me, time.time()):
                    raise _refusal(self.uri(rel), held) from None
                path.unlink(missing_ok=True)  # abandoned: taken over (O_EXCL again: one taker wins)
                continue
            with os.fdopen(fd, "wb") as fh:
                fh.write(_lock_record(me))
            return
        raise _refusal(self.uri(rel), self.read_json(rel) or {})

    def _renew(self, rel: str, me: dict[str, Any]) -> bool:
        held = self.read_json(rel)
        if not (isinstance(held, dict) and held.get("run") == me["run"]):
            return False
        self.put(rel, _lock_record(me), tag=me["run"])
        return True

    def _release(self, rel: str, me: dict[str, Any]) -> None:
        held = self.read_json(rel)
        if isinstance(held, dict) and held.get("run") == me["run"]:
            self.delete(rel)
        for folder in self._made:  # deepest first; one that holds anything stays
            try:
                folder.rmdir()
            except OSError:
                break


# --- a prefix in an object store ----------------------------------------------------------------------


class ObjectTree(OutputTree):
    """``s3://bucket/prefix``: data through pyarrow's filesystem, the rest through boto3's S3 client."""

    def __init__(self, uri: str) -> None:
        self.root = uri.rstrip("/")
        self.fs, path = object_store.filesystem(self.root)
        self.bucket, _, prefix = path.strip("/").partition("/")
        self.prefix = prefix.strip("/")
        if not self.bucket:
            raise UsageError(f"{uri}: no bucket in the output URI")
        self.client = _s3_client(uri)

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _path(self, rel: str) -> str:
        return f"{self.bucket}/{self.key(rel)}"

    @contextlib.contextmanager
    def _store(self, rel: str) -> Iterator[None]:
        """A store failure as a :class:`StoreError` naming the object."""
        try:
            yield
        except (StoreError, UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow's OSError, botocore's ClientError and transport errors
            raise StoreError(f"{self.uri(rel)}: {store_cause(exc)}") from exc

    def check(self) -> None:
        """The bucket exists and the credentials may list it: a UsageError (exit 2, nothing written)
        otherwise."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(""), MaxKeys=1)
        except Exception as exc:  # noqa: BLE001 - see store_cause
            raise UsageError(f"{self.root}: {store_cause(exc)}") from None

    def read(self, rel: str) -> bytes | None:
        with self._store(rel):
            try:
                return bytes(self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read())
            except self.client.exceptions.NoSuchKey:
                return None

    def put(self, rel: str, data: bytes, *, tag: str = "") -> None:
        with self._store(rel):
            self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data)

    def delete(self, rel: str) -> None:
        with self._store(rel):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))

    def size(self, rel: str) -> int | None:
        with self._store(rel):
            info = self.fs.get_file_info(self._path(rel))
        return info.size if info.type == pafs.FileType.File else None

    def names(self, rel_dir: str = "") -> list[str]:
        path = self._path(rel_dir).rstrip("/")
        with self._store(rel_dir):
            infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
        return sorted(PurePosixPath(i.path).name for i in infos)

    def remove_dir(self, rel_dir: str) -> None:
        with self._store(rel_dir):
            self.fs.delete_dir_contents(self._path(rel_dir), missing_dir_ok=True)

    def clean(self, rels: list[tuple[str, str]] | None) -> None:
        wanted = None if rels is None else \
            {self.key(temp_name(r, tag)) for r, tag in rels} | {self.key(r) for r, _ in rels}
        base = self.key("")
        with self._store(""):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if is_temp(key) and (wanted is None or key in wanted):
                        self.client.delete_object(Bucket=self.bucket, Key=key)
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=base):
                for upload in page.get("Uploads", []):
                    if wanted is None or upload["Key"] in wanted:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])

    def _open_temp(self, temp: str, rel: str) -> Any:
        with self._store(rel):
            return _Guarded(self, rel, self.fs.open_output_stream(self._path(temp)))

    def _finish_temp(self, raw: Any, temp: str) -> None:
        raw.close()  # completes the multipart upload (or puts a small object whole); a failure names the file

    def _abandon_temp(self, raw: Any) -> None:
        # pyarrow completes an upload on close; the temporary object is deleted right after (and a kill
        # before that leaves it to clean()): never under a final key
        raw.close()

    def _publish(self, temp: str, rel: str) -> None:
        from boto3.s3.transfer import TransferConfig

        with self._store(rel):
            self.client.copy({"Bucket": self.bucket, "Key": self.key(temp)}, self.bucket, self.key(rel),
                             Config=TransferConfig(multipart_threshold=4 * COPY_PART_BYTES,
                                                   multipart_chunksize=COPY_PART_BYTES))
            self.client.delete_object(Bucket=self.bucket, Key=self.key(temp))

    def _get_lock(self, rel: str) -> tuple[Any, str | None]:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))
        except self.client.exceptions.NoSuchKey:
            return None, None
        try:
            held = orjson.loads(got["Body"].read())
        except orjson.JSONDecodeError:
            held = None
        return held, got["ETag"]

    def _put_lock(self, rel: str, me: dict[str, Any], **condition: str) -> bool:
        """Write this run's lock record if ``condition`` (``IfNoneMatch``/``IfMatch``) holds; False when the
        store refused it (412: someone else's lock is there, or it changed)."""
        try:
            done = self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=_lock_record(me), **condition)
        except self.client.exceptions.ClientError as exc:
            if _precondition_failed(exc) or exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                return False
            raise
        me["etag"] = done["ETag"]
        return True

    def _acquire(self, rel: str, me: dict[str, Any]) -> None:
        with self._store(rel):
            for _ in range(3):
                if self._put_lock(rel, me, IfNoneMatch="*"):
                    return
                held, etag = self._get_lock(rel)
                if etag is None:
                    continue  # released meanwhile
                if not _abandoned(held, me, time.time()):
                    raise _refusal(self.uri(rel), held)
                if self._put_lock(rel, me, IfMatch=etag):  # taken over, unless another run was quicker
                    return
            held, _ = self._get_lock(rel)
            raise _refusal(self.uri(rel), held if isinstance(held, dict) else {})

    def _renew(self, rel: str, me: dict[str, Any]) -> bool:
        return self._put_lock(rel, me, IfMatch=me["etag"])

    def _release(self, rel: str, me: dict[str, Any]) -> None:
        held, etag = self._get_lock(rel)
        if isinstance(held, dict) and held.get("run") == me["run"]:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))


class _Guarded:
    """An object's output stream (of its temporary key) whose failures are :class:`StoreError` s naming the
    object it is written for."""

    def __init__(self, tree: ObjectTree, rel: str, raw: Any) -> None:
        self.tree, self.rel, self.raw = tree, rel, raw

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)

    def write(self, data: Any) -> None:
        with self.tree._store(self.rel):
            self.raw.write(data)

    def flush(self) -> None:
        with self.tree._store(self.rel):
            self.raw.flush()

    def close(self) -> None:
        with self.tree._store(self.rel):
            self.raw.close()


def _precondition_failed(exc: Any) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in ("PreconditionFailed", "412") or \
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412


def _s3_client(uri: str) -> Any:
    """boto3's S3 client, configured by the standard AWS variables and files only."""
    if not uri.lower().startswith("s3://"):
        raise UsageError(f"{uri}: batch output goes to a local directory or s3:// (other stores are read-only here)")
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise UsageError(f"{uri}: writing to an object store needs boto3: pip install 'scorer[s3]'") from None
    return boto3.client("s3", config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                            connect_timeout=5, read_timeout=60))


def store_cause(exc: BaseException) -> str:
    """One line for a store failure, from pyarrow's or boto3's error (never a credential)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        by_code = {"NoSuchBucket": "NO_SUCH_BUCKET", "InvalidAccessKeyId": "INVALID_ACCESS_KEY_ID",
                   "SignatureDoesNotMatch": "SIGNATURE_DOES_NOT_MATCH", "AccessDenied": "ACCESS_DENIED",
                   "NoSuchKey": "NO_SUCH_KEY"}
        if code in by_code:
            return object_store.cause(OSError(f"AWS Error {by_code[code]} during S3 operation"))[1]
        return f"the store answered {code or response.get('ResponseMetadata', {}).get('HTTPStatusCode')}"
    if type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                              "ConnectionClosedError"):
        return object_store.cause(OSError("AWS Error NETWORK_CONNECTION during S3 operation"))[1]
    if type(exc).__name__ == "NoCredentialsError":
        return f"no credentials: {object_store.CREDENTIALS_HINT}"
    return object_store.cause(exc)[1]


def tree(output: str) -> OutputTree:
    """The output tree ``output`` names: an object store URI, or a local directory (resolved)."""
    if object_store.is_object_uri(output):
        try:
            found = ObjectTree(output)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{output}: {object_store.cause(exc)[1]}") from None
        found.check()
        return found
    return LocalTree(Path(output).resolve())
