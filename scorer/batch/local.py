"""``scorer batch`` (``--engine local``): score a file or a directory of files into an output directory.

Guarantees:

* **Bounded memory**: files stream through in chunks of ``chunk_rows``; at most ``2 * workers``
  chunks, and no more than ``max_inflight_mb`` of them, are in flight. Memory depends on the
  process count and the chunk size, never on the file size (docs/batch-contract.md, "Memory").
* **Every core**: chunks (of one file or the next) are scored by this process and ``workers - 1``
  spawned workers, each loading the bundle once; this process also reads and writes in order.
  ``workers`` defaults to :func:`scorer._cpu.cores` (the CPU quota included), and each process's
  OpenMP pool gets its share of those cores.
* **Nothing partial**: each output is written under a hidden temporary name and renamed into
  place when complete, then a commit marker is written; ``manifest.json`` and ``_SUCCESS``
  come last. A ``kill -9`` at any moment leaves only complete files under final names.
* **Resume**: a re-run skips files committed for the same bundle digest, input file and
  settings; output bytes do not depend on scheduling, so the result equals a clean run. An
  output written with another bundle (a registry alias promoted since) is refused, naming both,
  unless ``--overwrite``.
* **One version**: the source is resolved once (a registry alias to the version it names, downloaded
  once); every worker loads that local copy, pinned by its digest, so a promotion mid-job never mixes
  versions. ``manifest.json`` names what was resolved (``source``).
* **Shards**: ``--shard-count N`` splits the files between N runs into the same output
  (:mod:`scorer.batch.shards`); whichever finishes last writes ``manifest.json`` and ``_SUCCESS``.
* **Bad input**: malformed records and rows the schema or model refuse fail their file
  (``--bad-rows fail``) or go to ``<output>.rejects.jsonl`` with file, row, line and reason
  (``--bad-rows reject``, up to ``--max-rejected-rows``). Other files still complete.

What is particular to this engine is how chunks are scheduled (this process reads, writes and scores,
spawned workers score) and written (one output per input file, committed one by one). What both
engines share is in :mod:`scorer.batch` (plan, walk, chunk scoring, bad-row policy, the scorer of a
process). Exit codes: :func:`scorer.errors.exit_code` for errors, else :data:`~scorer.errors.EXIT_OK`,
:data:`~scorer.errors.EXIT_REJECTED` or :data:`~scorer.errors.EXIT_FAILED` (a file failed).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
import pyarrow as pa

from scorer._cpu import affinity, cores, cpu_quota, openmp_threads, share_openmp
from scorer._memory import return_freed_memory
from scorer._version import __version__
from scorer import object_store
from scorer.batch import chunks, outputs, shards, worker
from scorer.batch.files import FORMATS, Chunk, InputFile, Writer, detect_format, input_schema, output_name, read_chunks
from scorer.batch.outputs import STATE_DIR, OutputTree, Pending
from scorer.batch.plan import check_output_format, input_files, local_input, object_input, require_paths
from scorer.batch.rejects import BadRowPolicy
from scorer.batch.shards import Shard
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.errors import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, KeepColumnsError, ReadError, UsageError
from scorer.jvm import jvm_started
from scorer.settings import Settings

log = logging.getLogger("scorer.batch")

MANIFEST, SUCCESS = "manifest.json", "_SUCCESS"
JOB_FILE, PARTS_DIR = f"{STATE_DIR}/job.json", f"{STATE_DIR}/shards"


@dataclass(frozen=True)
class Job:
    source: InputFile  # input file (local, or an object)
    rel: PurePosixPath  # its path relative to the input root
    in_fmt: str
    out_fmt: str
    output: str  # its output's path relative to the output root

    @property
    def label(self) -> str:
        return self.rel.as_posix()


# --- planning: every check before anything is written ---------------------------------------------


def plan(settings: Settings, shard: Shard = Shard(0, 1)) -> tuple[list[Job], OutputTree]:
    """One job per input file (every shard plans them all), its output mirroring its path under the
    output (a directory or an object prefix), and the output tree."""
    require_paths(settings)
    check_output_format(settings.output_format, FORMATS)
    out = outputs.tree(settings.output)
    check_shard_count(out, shard, settings.overwrite)
    found: list[tuple[InputFile, PurePosixPath]]
    if object_store.is_object_uri(settings.input):
        found, in_root = object_input(settings.input, FORMATS)
        _check_apart(in_root, [src.path for src, _ in found], out.root, settings.input)
    else:
        found = _local_files(settings, out)
    jobs = []
    for src, rel in found:
        in_fmt = detect_format(Path(rel.name))
        if in_fmt is None:
            raise UsageError(f"{src.uri}: unknown file type; expected one of {', '.join(FORMATS)}")
        out_fmt = in_fmt if settings.output_format == "same" else settings.output_format
        jobs.append(Job(src, rel, in_fmt, out_fmt, output_name(rel, in_fmt, out_fmt).as_posix()))
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.output in seen:
            raise UsageError(f"{seen[job.output].source.uri} and {job.source.uri} would both be written to "
                             f"{out.uri(job.output)}; rename one, or choose an --output-format that keeps them apart")
        seen[job.output] = job
    return jobs, out


def _local_files(settings: Settings, out: OutputTree) -> list[tuple[InputFile, PurePosixPath]]:
    source, root = local_input(settings)
    out_root = Path(out.root) if isinstance(out, outputs.LocalTree) else None
    if out_root is not None and source.is_dir() and (out_root == root or out_root.is_relative_to(root)):
        raise UsageError(f"output {out_root} is inside the input {root}: choose an output outside it")
    found = []
    for path in input_files(source, root, FORMATS):
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: not readable")
        if out_root is not None and path.is_relative_to(out_root):
            raise UsageError(f"{path} is inside the output {out_root}: scoring would overwrite or mix with its input")
        found.append((InputFile.local(path), PurePosixPath(path.relative_to(root).as_posix())))
    return found


def _check_apart(in_root: str, objects: list[str], out_uri: str, given: str) -> None:
    """An object input prefix and an object output prefix must not contain one another; one object (its
    ``in_root`` is only its folder) may have its output beside it, as a local file may, but not under it."""
    if not object_store.is_object_uri(out_uri):
        return
    a, b = in_root.rstrip("/") + "/", out_uri.split("://", 1)[1].rstrip("/") + "/"
    one = len(objects) == 1 and objects[0] == given.split("://", 1)[1].rstrip("/")
    if (one and objects[0].startswith(b)) or (not one and (a.startswith(b) or b.startswith(a))):
        raise UsageError(f"input {given} and output {out_uri} overlap: choose an output prefix outside the input")


def check_shard_count(out: OutputTree, shard: Shard, overwrite: bool) -> None:
    """An output written by runs split into another number of shards is refused unless ``--overwrite``:
    the shares would differ, and the parts could never add up."""
    previous = out.read_json(JOB_FILE)
    before = previous.get("shard_count", 1) if isinstance(previous, dict) else shard.count
    if before != shard.count and not overwrite:
        raise UsageError(f"{out.root} holds output of a run split into {before} shard(s), this run asks for "
                         f"{shard.count} (--shard-count): use --shard-count {before}, --overwrite, or another output")


# --- the job ----------------------------------------------------------------------------------------


@dataclass
class FileState:
    job: Job
    pending: Pending  # the output, under its temporary name
    writer: Writer
    started: float = field(default_factory=time.perf_counter)
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    error: str | None = None
    rejects: Pending | None = None


@dataclass
class _Slot:
    """One event of the pipeline, in input order; a chunk's ``future`` is set once a worker or this process
    takes it."""

    job: Job
    event: str
    payload: Any
    size: int  # a chunk's Arrow bytes
    future: concurrent.futures.Future[chunks.ChunkResult] | None = None


class BatchRun:
    def __init__(self, settings: Settings, jobs: list[Job], out: OutputTree, scorer: Scorer,
                 shard: Shard = Shard(0, 1)) -> None:
        self.settings = settings
        self.jobs = jobs  # the whole input, as every shard plans it
        self.out = out
        self.shard = shard
        self.mine = shard.share(jobs)  # what this run scores
        self.scorer = scorer
        self.tag = f"shard-{shard.index}"  # in the temp names of files every shard writes
        self.key = self._job_key()
        self.listing = shards.listing_digest([job.label for job in jobs])
        self.entries: dict[PurePosixPath, dict[str, Any]] = {}
        self.failed: set[PurePosixPath] = set()
        self.progress = Progress(len(self.mine))
        self.bad_rows = BadRowPolicy.from_settings(settings)

    def _job_key(self) -> str:
        s = self.settings
        material = {"bundle": self.scorer.bundle.digest, "scorer": __version__, "format": s.output_format,
                    "keep": s.keep_columns, "bad_rows": s.bad_rows, "max_rejected": s.max_rejected_rows,
                    "chunk_rows": s.chunk_rows}
        return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()

    # state: refuse to mix, resume what is committed
    def prepare_output(self) -> list[Job]:
        """Check the output (refuse to mix bundles or settings), then make it this run's: the job recorded,
        this shard's part and the combined files removed (until it finishes again), stale temp files of its
        own removed. Returns the files still to score: the share's files not committed already."""
        out = self.out
        previous = out.read_json(JOB_FILE)
        if isinstance(previous, dict):
            if previous.get("key") != self.key and not self.settings.overwrite:
                if previous.get("bundle_digest") == self.scorer.bundle.digest:
                    what = "different settings"
                else:
                    before = previous.get("bundle") or f"sha256:{previous.get('bundle_digest', '?')[:12]}"
                    what = f"a different bundle digest, {before}; this run scores {worker.describe(self.scorer)}"
                raise UsageError(f"{out.root} holds output written with {what}; use --overwrite to replace it")
            if previous.get("key") != self.key and self.shard.count == 1:
                # alone, the old state goes (not the lock); shards share it (markers and parts of another key
                # never match)
                out.remove_dir(f"{STATE_DIR}/commits")
                out.remove_dir(PARTS_DIR)
        elif any(name != STATE_DIR for name in out.names()) and out.read_json(JOB_FILE) is None \
                and not self.settings.overwrite:
            # (a state folder alone, or files written since job.json appeared: another shard has just started)
            raise UsageError(f"{out.root} is not empty and was not written by scorer batch; use --overwrite")
        out.put(JOB_FILE, orjson.dumps({"key": self.key, "bundle_digest": self.scorer.bundle.digest,
                                        "bundle": worker.describe(self.scorer), "shard_count": self.shard.count}),
                tag=self.tag)
        # this shard's part first, then the combined files: a shard finishing meanwhile sees the part gone
        out.delete(f"{PARTS_DIR}/{self.shard.name}")
        for name in (SUCCESS, MANIFEST):
            out.delete(name)
        for other in out.names(PARTS_DIR):  # parts of another shard count (--overwrite)
            if not other.endswith(f"-of-{self.shard.count}.json") and not other.startswith("."):
                out.delete(f"{PARTS_DIR}/{other}")
        out.clean(self._own_files())
        todo = []
        for job in self.mine:
            entry = self._committed(job)
            if entry is None:
                todo.append(job)
            else:
                self.entries[job.rel] = entry
        if self.shard.count > 1:
            log.info("%s: %d of the %d input files", self.shard, len(self.mine), len(self.jobs))
        if len(todo) < len(self.mine):
            log.info("resuming: %d of %d files already committed for this bundle and settings, skipped",
                     len(self.mine) - len(todo), len(self.mine))
        return todo

    def _own_files(self) -> list[tuple[str, str]] | None:
        """What a killed run of this shard may have left half-written, as (file, temp tag). Alone: anything
        under the output (None). A shard: only its own files and markers, and the shared files under its tag,
        since the other shards may be writing theirs."""
        if self.shard.count == 1:
            return None
        found = [(rel, self.tag) for rel in (JOB_FILE, f"{PARTS_DIR}/{self.shard.name}", MANIFEST, SUCCESS)]
        for job in self.mine:
            found += [(job.output, ""), (_rejects_path(job), ""), (self._marker(job), "")]
        return found

    def _marker(self, job: Job) -> str:
        return f"{STATE_DIR}/commits/{job.output}.json"

    def _committed(self, job: Job) -> dict[str, Any] | None:
        data = self.out.read_json(self._marker(job))
        if not isinstance(data, dict):
            return None
        if data.get("key") != self.key or data.get("input_fingerprint") != [job.source.size, job.source.mtime_ns]:
            return None
        if data["entry"]["output_bytes"] != self.out.size(job.output):
            return None
        return dict(data["entry"], skipped=True)

    # the pipeline
    def run(self, todo: list[Job]) -> int:
        keep, first_only = self.settings.keep_columns, self.bad_rows.first_only
        states: dict[PurePosixPath, FileState] = {}
        for job, event, payload in self._pipeline(todo, keep, first_only):
            if event == "start":
                states[job.rel] = self._start(job)
            elif job.rel in self.failed:
                continue
            elif event == "error":
                self._fail(states[job.rel], str(payload))
            elif event == "chunk":
                self._consume(states[job.rel], payload)
            elif event == "end":
                self._commit(states[job.rel])
        self.progress.done()
        return self._finish()

    def _pipeline(self, todo: list[Job], keep: str, first_only: bool) -> Iterator[tuple[Job, str, Any]]:
        """Events in input order; chunk events carry their scored result.

        ``workers`` processes score: this one (which has the bundle loaded already) and ``workers - 1``
        spawned workers. Workers are kept fed (one chunk running, one queued each); this process reads and
        writes first and scores a chunk itself when it would otherwise wait. In flight (read, not yet handed
        back) are at most ``2 * workers`` chunks, and no chunk is read while those hold ``max_inflight_mb``
        or more (at least one always may be): memory is bounded by the process count and these two, never
        by the file size (docs/batch-contract.md, "Memory")."""
        workers = self.settings.workers or cores()
        if workers > 1 and jvm_started():
            log.info("the bundle runs on the JVM (Spark/H2O): scoring in this process; Spark uses the cores")
            workers = 1
        quota = cpu_quota()
        log.info("scoring with %d process%s: %d core(s) to use (CPU affinity %d, CPU quota %s); "
                 "OMP_NUM_THREADS=%s, OpenMP threads here: %s", workers, "" if workers == 1 else "es", cores(),
                 affinity(), "none" if quota is None else f"{quota:g}", os.environ.get("OMP_NUM_THREADS", "unset"),
                 openmp_threads() or "no OpenMP runtime loaded")
        return_freed_memory()
        events = self._read_events(todo)
        worker.use(self.scorer, echo=self.settings.echo_bad_values)
        if workers == 1:
            for job, event, payload in events:
                if event == "chunk":
                    payload = (payload, chunks.score_chunk(payload, keep, first_only))
                yield job, event, payload
            return
        window, budget, helpers = 2 * workers, self.settings.max_inflight_mb << 20, workers - 1
        ctx = multiprocessing.get_context("spawn")
        # the workers load this process's local copy (a registry download included), pinned by its digest
        local = str(self.scorer.bundle.source)
        pinned = worker.pinned(self.settings, self.scorer, local)
        with concurrent.futures.ProcessPoolExecutor(helpers, mp_context=ctx, initializer=worker.init_pool_worker,
                                                    initargs=(local, pinned)) as pool:
            pending: collections.deque[_Slot] = collections.deque()
            in_flight = in_flight_bytes = 0
            exhausted = False

            def room() -> bool:
                return not exhausted and in_flight < window and (in_flight == 0 or in_flight_bytes < budget)

            def feed_workers() -> None:  # each worker: one chunk running, one queued
                busy = sum(1 for slot in pending if slot.future is not None and not slot.future.done())
                for slot in pending:
                    if busy >= 2 * helpers:
                        return
                    if slot.event == "chunk" and slot.future is None:
                        slot.future = pool.submit(chunks.score_chunk, slot.payload, keep, first_only)
                        busy += 1

            def score_here(slot: _Slot) -> None:
                slot.future = concurrent.futures.Future()
                slot.future.set_result(chunks.score_chunk(slot.payload, keep, first_only))

            while pending or not exhausted:
                if room():
                    try:
                        job, event, payload = next(events)
                    except StopIteration:
                        exhausted = True
                    else:
                        size = payload.table.nbytes if event == "chunk" else 0
                        pending.append(_Slot(job, event, payload, size))
                        in_flight += event == "chunk"
                        in_flight_bytes += size
                feed_workers()
                # hand back, in order, everything at the head that is ready; when there is no room to read,
                # score a chunk no worker has taken here rather than wait
                while pending:
                    head = pending[0]
                    if head.event == "chunk" and head.future is None:
                        score_here(head)
                    elif head.future is not None and not head.future.done():
                        if room():
                            break
                        spare = next((s for s in pending if s.event == "chunk" and s.future is None), None)
                        if spare is not None:
                            score_here(spare)
                            continue
                    pending.popleft()
                    in_flight -= head.event == "chunk"
                    in_flight_bytes -= head.size
                    result = head.payload if head.future is None else (head.payload, head.future.result())
                    yield head.job, head.event, result
                    feed_workers()

    def _read_events(self, todo: list[Job]) -> Iterator[tuple[Job, str, Any]]:
        for job in todo:
            yield job, "start", None
            try:
                for chunk in read_chunks(job.source, job.in_fmt, self.settings.chunk_rows):
                    if job.rel in self.failed:
                        break
                    yield job, "chunk", chunk
            except ReadError as exc:
                yield job, "error", exc
                continue
            yield job, "end", None

    def _start(self, job: Job) -> FileState:
        pending = self.out.pending(job.output)
        return FileState(job, pending, Writer(pending.sink, job.out_fmt))

    def _consume(self, state: FileState, payload: tuple[Chunk, chunks.ChunkResult]) -> None:
        chunk, result = payload
        if result.error is not None:
            self._fail(state, f"{state.job.label}: {result.error}")
            return
        bad = sorted(chunk.bad + result.bad, key=lambda b: b.row)
        state.rows_in += chunk.table.num_rows + len(chunk.bad)
        if bad and not self.bad_rows.reject:
            first = bad[0]
            where = f"row {first.row}" + (f" (line {first.line})" if first.line else "")
            self._fail(state, self.bad_rows.failure(f"{state.job.label}: {where}", first.reason))
            return
        if bad:
            state.rejected += len(bad)
            if self.bad_rows.over_limit(state.rejected):
                self._fail(state, f"{state.job.label}: "
                                  + self.bad_rows.limit_failure(f"row {bad[0].row}", bad[0].reason))
                return
            if state.rejects is None:
                state.rejects = self.out.pending(_rejects_path(state.job))
            for b in bad:
                state.rejects.sink.write(orjson.dumps(b.as_json(state.job.label), default=str) + b"\n")
        if result.table is not None:
            try:
                state.writer.write(result.table)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                self._fail(state, f"{state.job.label}: columns changed type between chunks: {exc}")
                return
            state.rows_out += result.table.num_rows
        self.progress.rows(chunk.table.num_rows + len(chunk.bad))

    def _fail(self, state: FileState, error: str) -> None:
        log.error("file failed: %s", error)
        self.failed.add(state.job.rel)
        state.error = error
        for pending in (state.pending, state.rejects):
            if pending is not None:
                pending.discard()
        self.out.delete(self._marker(state.job))
        self.out.delete(state.job.output)  # never leave a stale output of an earlier run
        self.entries[state.job.rel] = self._entry(state, status="failed")
        self.progress.file_done()

    def _commit(self, state: FileState) -> None:
        """Temp file complete -> marker (describing it) -> published under its final name. A final-named
        output therefore always has its marker: a kill between the steps leaves either nothing final
        (rescored on resume) or a committed file (skipped on resume)."""
        job = state.job
        if state.writer.schema is None:  # no row was written: still give the file its columns
            try:
                empty = chunks.empty_output(input_schema(job.source, job.in_fmt), self.scorer.output_columns,
                                            self.settings.keep_columns)
            except (KeepColumnsError, ReadError) as exc:
                self._fail(state, f"{job.label}: {exc}")
                return
            state.writer.write(empty)
        state.writer.close()
        state.pending.finish()
        if state.rejects is not None:
            state.rejects.finish()
            state.rejects.publish()
        else:
            self.out.delete(_rejects_path(job))
        entry = self._entry(state, status="ok", written=state.pending)
        marker = {"key": self.key, "input_fingerprint": [job.source.size, job.source.mtime_ns], "entry": entry}
        self.out.put(self._marker(job), orjson.dumps(marker))
        state.pending.publish()
        self.entries[job.rel] = entry
        self.progress.file_done()

    def _entry(self, state: FileState, *, status: str, written: Pending | None = None) -> dict[str, Any]:
        job = state.job
        entry: dict[str, Any] = {
            "input": job.rel.as_posix(), "output": job.output,
            "status": status, "rows_in": state.rows_in, "rows_out": state.rows_out if status == "ok" else 0,
            "rows_rejected": state.rejected, "seconds": round(time.perf_counter() - state.started, 3),
        }
        if written is not None:
            entry["sha256"] = written.sha256
            entry["output_bytes"] = written.size
            if state.rejects is not None:
                entry["rejects"] = entry["output"] + ".rejects.jsonl"
        else:
            entry["error"] = state.error
        return entry

    def _finish(self) -> int:
        """Commit this shard's part, then the combined ``manifest.json`` and ``_SUCCESS`` if every shard's
        part is there. The exit code says how this shard's files went."""
        files = [self.entries[j.rel] for j in self.mine if j.rel in self.entries]
        header = {
            "scorer_version": __version__,
            "bundle": {"name": self.scorer.bundle.name, "digest": f"sha256:{self.scorer.bundle.digest}",
                       "version": self.scorer.version_label},
            "source": self.scorer.metadata()["source"],
            "settings": {k: v for k, v in asdict(self.settings).items()
                         if k in ("input", "output", "output_format", "chunk_rows", "keep_columns", "bad_rows",
                                  "max_rejected_rows", "workers", "shard_count")},
        }
        part = shards.part(self.shard, key=self.key, listing=self.listing, total=len(self.jobs), header=header,
                           files=files)
        self.out.put(f"{PARTS_DIR}/{self.shard.name}", orjson.dumps(part), tag=self.tag)
        manifest = self._complete()
        failed = sum(f["status"] == "failed" for f in files)
        rejected = sum(f["rows_rejected"] for f in files)
        mine = "" if self.shard.count == 1 else f"{self.shard}: "
        if manifest is None:
            log.info("%s%d file(s) done; manifest.json and _SUCCESS come once every shard is done "
                     "(written by the last)", mine, len(files))
        elif self.shard.count > 1:
            failed_all = manifest["totals"]["files_failed"]
            log.info("all %d shards done: manifest.json written, %s", self.shard.count,
                     f"no _SUCCESS ({failed_all} file(s) failed)" if failed_all else "then _SUCCESS")
        if failed:
            log.error("%s%d of %d files failed; see %s", mine, failed, len(files),
                      "manifest.json" if manifest is not None else f"{PARTS_DIR}/{self.shard.name}")
            return EXIT_FAILED
        if rejected:
            log.warning("%sall files committed; %d rows rejected (see *.rejects.jsonl)", mine, rejected)
            return EXIT_REJECTED
        log.info("%sall %d files committed: %d rows scored", mine, len(files), sum(f["rows_out"] for f in files))
        return EXIT_OK

    def _parts(self) -> list[dict[str, Any]] | None:
        """Every shard's part of this job and input listing, or None while one is missing."""
        parts = []
        for index in range(self.shard.count):
            shard = Shard(index, self.shard.count)
            data = self.out.read_json(f"{PARTS_DIR}/{shard.name}")
            if not shards.belongs(data, shard, key=self.key, listing=self.listing):
                return None
            parts.append(data)
        return parts

    def _complete(self) -> dict[str, Any] | None:
        """Once every part is here: ``manifest.json`` made from them, then ``_SUCCESS`` if no file failed;
        returns the manifest (None: a shard is not done). The parts are read again after writing: a shard
        that restarted meanwhile (its part removed) would otherwise find ``_SUCCESS`` standing while it works,
        so the combined files go again, and come back if it finished in between."""
        while True:
            parts = self._parts()
            if parts is None:
                for name in (SUCCESS, MANIFEST):
                    self.out.delete(name)
                if self._parts() is None:
                    return None
                continue
            manifest = shards.combine(parts)
            self.out.check_lock()
            self.out.put(MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2), tag=self.tag)
            if manifest["totals"]["files_failed"]:
                self.out.delete(SUCCESS)
            else:
                self.out.put(SUCCESS, b"", tag=self.tag)
            if self._parts() == parts:
                return manifest


def _rejects_path(job: Job) -> str:
    return job.output + ".rejects.jsonl"


class Progress:
    """A progress line on a terminal; a log line every ~10 s otherwise."""

    def __init__(self, files: int) -> None:
        self.files_total = files
        self.files_done = 0
        self.rows_done = 0
        self.started = time.monotonic()
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def rows(self, n: int) -> None:
        self.rows_done += n
        self._maybe_report()

    def file_done(self) -> None:
        self.files_done += 1
        self._maybe_report(force=self.tty)

    def _maybe_report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.5 if self.tty else 10.0):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.rows_done / elapsed
        eta = ""
        if 0 < self.files_done < self.files_total:
            eta = f", ETA {elapsed / self.files_done * (self.files_total - self.files_done):.0f}s"
        line = f"{self.files_done}/{self.files_total} files, {self.rows_done:,} rows, {rate:,.0f} rows/s{eta}"
        if self.tty:
            sys.stderr.write("\r" + line + " " * 8)
            sys.stderr.flush()
        else:
            log.info("progress: %s", line)

    def done(self) -> None:
        if self.tty:
            self._maybe_report(force=True)
            sys.stderr.write("\n")


def run(settings: Settings) -> int:
    """The local engine: plan and check, resolve and load the bundle once, score, commit. Returns the exit
    code; raises what :func:`scorer.errors.exit_code` maps (a usage error, a bundle that fails to load)."""
    shard = shards.resolve(settings, os.environ)
    jobs, out = plan(settings, shard)  # before the bundle loads: a usage error costs nothing
    # before the bundle loads an OpenMP runtime into this process, which scores chunks too
    share_openmp(settings.workers or cores())
    # the lock too: an output another run is writing is refused before a bundle is loaded for nothing
    lock = "lock" if shard.count == 1 else f"lock-shard-{shard.index}-of-{shard.count}"
    with out.lock(lock, settings.lock_seconds):
        scorer = Scorer.load(settings.bundle, LoadOptions.from_settings(settings))
        try:
            log.info("scoring with %s", worker.describe(scorer))
            batch = BatchRun(settings, jobs, out, scorer, shard)
            return batch.run(batch.prepare_output())
        finally:
            scorer.close()  # a registry download is not kept
