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
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from scorer._cpu import affinity, cores, cpu_quota, openmp_threads, share_openmp
from scorer._memory import return_freed_memory
from scorer._version import __version__
from scorer.batch import chunks, shards, worker
from scorer.batch.files import FORMATS, Chunk, Writer, detect_format, input_schema, output_name, read_chunks
from scorer.batch.plan import check_output_format, input_files, local_input, require_paths
from scorer.batch.rejects import BadRowPolicy
from scorer.batch.shards import Shard
from scorer.bundle import hash_file
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.errors import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, KeepColumnsError, ReadError, UsageError
from scorer.jvm import jvm_started
from scorer.settings import Settings

log = logging.getLogger("scorer.batch")

STATE_DIR = "_scorer"
MANIFEST, SUCCESS = "manifest.json", "_SUCCESS"


@dataclass(frozen=True)
class Job:
    source: Path  # input file
    rel: Path  # its path relative to the input root
    in_fmt: str
    out_fmt: str
    output: Path  # final output path

    @property
    def label(self) -> str:
        return self.rel.as_posix()


# --- planning: every check before anything is written ---------------------------------------------


def plan(settings: Settings, shard: Shard = Shard(0, 1)) -> list[Job]:
    """One job per input file (every shard plans them all), its output mirroring its path under the
    output directory."""
    require_paths(settings)
    out_root = Path(settings.output).resolve()
    check_shard_count(out_root, shard, settings.overwrite)
    source, root = local_input(settings)
    if source.is_dir() and (out_root == root or out_root.is_relative_to(root)):
        raise UsageError(f"output {out_root} is inside the input {root}: choose an output outside it")
    files = input_files(source, root, FORMATS)
    check_output_format(settings.output_format, FORMATS)
    jobs = []
    for path in files:
        in_fmt = detect_format(path)
        if in_fmt is None:
            raise UsageError(f"{path}: unknown file type; expected one of {', '.join(FORMATS)}")
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: not readable")
        out_fmt = in_fmt if settings.output_format == "same" else settings.output_format
        rel = path.relative_to(root)
        output = out_root / output_name(rel, in_fmt, out_fmt)
        if output.resolve() == path or path.is_relative_to(out_root):
            raise UsageError(f"{path} is inside the output {out_root}: scoring would overwrite or mix with its input")
        jobs.append(Job(path, rel, in_fmt, out_fmt, output))
    seen: dict[Path, Job] = {}
    for job in jobs:
        if job.output in seen:
            raise UsageError(f"{seen[job.output].source} and {job.source} would both be written to {job.output}; "
                             "rename one, or choose an --output-format that keeps them apart")
        seen[job.output] = job
    return jobs


def check_shard_count(out_root: Path, shard: Shard, overwrite: bool) -> None:
    """An output written by runs split into another number of shards is refused unless ``--overwrite``:
    the shares would differ, and the parts could never add up."""
    previous = _read_json(out_root / STATE_DIR / "job.json")
    before = previous.get("shard_count", 1) if isinstance(previous, dict) else shard.count
    if before != shard.count and not overwrite:
        raise UsageError(f"{out_root} holds output of a run split into {before} shard(s), this run asks for "
                         f"{shard.count} (--shard-count): use --shard-count {before}, --overwrite, or another output")


# --- the job ----------------------------------------------------------------------------------------


@dataclass
class FileState:
    job: Job
    writer: Writer
    tmp: Path
    rejects_tmp: Path
    started: float = field(default_factory=time.perf_counter)
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    error: str | None = None
    rejects: Any = None


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
    def __init__(self, settings: Settings, jobs: list[Job], scorer: Scorer, shard: Shard = Shard(0, 1)) -> None:
        self.settings = settings
        self.jobs = jobs  # the whole input, as every shard plans it
        self.shard = shard
        self.mine = shard.share(jobs)  # what this run scores
        self.scorer = scorer
        self.out_root = Path(settings.output).resolve()
        self.state_dir = self.out_root / STATE_DIR
        self.parts_dir = self.state_dir / "shards"
        self.tag = f"shard-{shard.index}"  # in the temp names of files every shard writes
        self.key = self._job_key()
        self.listing = shards.listing_digest([job.label for job in jobs])
        self.entries: dict[Path, dict[str, Any]] = {}
        self.failed: set[Path] = set()
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
        job_file = self.state_dir / "job.json"
        previous = _read_json(job_file)
        if isinstance(previous, dict):
            if previous.get("key") != self.key and not self.settings.overwrite:
                if previous.get("bundle_digest") == self.scorer.bundle.digest:
                    what = "different settings"
                else:
                    before = previous.get("bundle") or f"sha256:{previous.get('bundle_digest', '?')[:12]}"
                    what = f"a different bundle digest, {before}; this run scores {worker.describe(self.scorer)}"
                raise UsageError(f"{self.out_root} holds output written with {what}; use --overwrite to replace it")
            if previous.get("key") != self.key and self.shard.count == 1:
                # alone, the old state goes; shards share it (markers and parts of another key never match)
                shutil.rmtree(self.state_dir)
        elif self.out_root.exists() and any(p.name != STATE_DIR for p in self.out_root.iterdir()) \
                and _read_json(job_file) is None and not self.settings.overwrite:
            # (a state folder alone, or files written since job.json appeared: another shard has just started)
            raise UsageError(f"{self.out_root} is not empty and was not written by scorer batch; use --overwrite")
        (self.state_dir / "commits").mkdir(parents=True, exist_ok=True)
        self.parts_dir.mkdir(exist_ok=True)
        _write_atomic(job_file, orjson.dumps({"key": self.key, "bundle_digest": self.scorer.bundle.digest,
                                              "bundle": worker.describe(self.scorer),
                                              "shard_count": self.shard.count}), tag=self.tag)
        # this shard's part first, then the combined files: a shard finishing meanwhile sees the part gone
        (self.parts_dir / self.shard.name).unlink(missing_ok=True)
        for name in (SUCCESS, MANIFEST):
            (self.out_root / name).unlink(missing_ok=True)
        for other in self.parts_dir.iterdir():  # parts of another shard count (--overwrite)
            if not other.name.endswith(f"-of-{self.shard.count}.json") and not other.name.startswith("."):
                other.unlink(missing_ok=True)
        for stale in self._stale_temps():
            stale.unlink(missing_ok=True)
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

    def _stale_temps(self) -> list[Path]:
        """Temp files a killed run may have left. Alone: every one under the output. A shard: only its own
        (its files' temps and markers' temps, and the temps of shared files tagged with its index), since
        the other shards may be writing theirs."""
        if self.shard.count == 1:
            return list(self.out_root.rglob(".*.scorer-tmp"))
        found = [_temp(self.state_dir / "job.json", self.tag), _temp(self.parts_dir / self.shard.name, self.tag),
                 _temp(self.out_root / MANIFEST, self.tag), _temp(self.out_root / SUCCESS, self.tag)]
        for job in self.mine:
            found += [_temp(job.output), _temp(_rejects_path(job)), _temp(self._marker(job))]
        return found

    def _marker(self, job: Job) -> Path:
        return self.state_dir / "commits" / (job.output.relative_to(self.out_root).as_posix() + ".json")

    def _committed(self, job: Job) -> dict[str, Any] | None:
        marker = self._marker(job)
        if not marker.exists() or not job.output.exists():
            return None
        data = orjson.loads(marker.read_bytes())
        stat = job.source.stat()
        if data.get("key") != self.key or data.get("input_fingerprint") != [stat.st_size, stat.st_mtime_ns]:
            return None
        if data["entry"]["output_bytes"] != job.output.stat().st_size:
            return None
        return dict(data["entry"], skipped=True)

    # the pipeline
    def run(self, todo: list[Job]) -> int:
        keep, first_only = self.settings.keep_columns, self.bad_rows.first_only
        states: dict[Path, FileState] = {}
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
        job.output.parent.mkdir(parents=True, exist_ok=True)
        tmp, rejects_tmp = _temp(job.output), _temp(_rejects_path(job))
        return FileState(job, Writer(tmp, job.out_fmt), tmp, rejects_tmp)

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
                state.rejects = open(state.rejects_tmp, "wb")  # noqa: SIM115 - closed at commit/fail
            for b in bad:
                state.rejects.write(orjson.dumps(b.as_json(state.job.label), default=str) + b"\n")
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
        for f in (state.writer, state.rejects):
            try:
                if f is not None:
                    f.close()
            except Exception:  # noqa: BLE001 - closing a half-written temp file we are deleting anyway
                pass
        for p in (state.tmp, state.rejects_tmp):
            p.unlink(missing_ok=True)
        self._marker(state.job).unlink(missing_ok=True)
        state.job.output.unlink(missing_ok=True)  # never leave a stale output of an earlier run
        self.entries[state.job.rel] = self._entry(state, status="failed")
        self.progress.file_done()

    def _commit(self, state: FileState) -> None:
        """Temp file complete -> marker (describing it) -> rename into place. A final-named output
        therefore always has its marker: a kill between the steps leaves either nothing final
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
        _fsync(state.tmp)
        rejects_out = _rejects_path(job)
        if state.rejects is not None:
            state.rejects.close()
            _fsync(state.rejects_tmp)
            os.replace(state.rejects_tmp, rejects_out)
        else:
            rejects_out.unlink(missing_ok=True)
        entry = self._entry(state, status="ok", written=state.tmp)
        stat = job.source.stat()
        marker = {"key": self.key, "input_fingerprint": [stat.st_size, stat.st_mtime_ns], "entry": entry}
        marker_path = self._marker(job)
        marker_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(marker_path, orjson.dumps(marker))
        os.replace(state.tmp, job.output)
        self.entries[job.rel] = entry
        self.progress.file_done()

    def _entry(self, state: FileState, *, status: str, written: Path | None = None) -> dict[str, Any]:
        job = state.job
        entry: dict[str, Any] = {
            "input": job.rel.as_posix(), "output": job.output.relative_to(self.out_root).as_posix(),
            "status": status, "rows_in": state.rows_in, "rows_out": state.rows_out if status == "ok" else 0,
            "rows_rejected": state.rejected, "seconds": round(time.perf_counter() - state.started, 3),
        }
        if written is not None:
            entry["sha256"] = hash_file(hashlib.sha256(), written).hexdigest()
            entry["output_bytes"] = written.stat().st_size
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
        _write_atomic(self.parts_dir / self.shard.name, orjson.dumps(part), tag=self.tag)
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
                      "manifest.json" if manifest is not None else f"{STATE_DIR}/shards/{self.shard.name}")
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
            data = _read_json(self.parts_dir / shard.name)
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
                    (self.out_root / name).unlink(missing_ok=True)
                if self._parts() is None:
                    return None
                continue
            manifest = shards.combine(parts)
            _write_atomic(self.out_root / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2), tag=self.tag)
            if manifest["totals"]["files_failed"]:
                (self.out_root / SUCCESS).unlink(missing_ok=True)
            else:
                _write_atomic(self.out_root / SUCCESS, b"", tag=self.tag)
            if self._parts() == parts:
                return manifest


def _rejects_path(job: Job) -> Path:
    return job.output.with_name(job.output.name + ".rejects.jsonl")


def _temp(path: Path, tag: str = "") -> Path:
    """The hidden temp name ``path`` is written under before its rename; ``tag`` (the shard) keeps apart the
    temps of files several shards write."""
    return path.with_name(f".{path.name}{'.' + tag if tag else ''}.scorer-tmp")


def _read_json(path: Path) -> Any:
    """A small JSON state file, or None when it is absent (or unreadable: never written completely)."""
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, *, tag: str = "") -> None:
    tmp = _temp(path, tag)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
    jobs = plan(settings, shard)  # before the bundle loads: a usage error costs nothing
    # before the bundle loads an OpenMP runtime into this process, which scores chunks too
    share_openmp(settings.workers or cores())
    scorer = Scorer.load(settings.bundle, LoadOptions.from_settings(settings))
    try:
        log.info("scoring with %s", worker.describe(scorer))
        batch = BatchRun(settings, jobs, scorer, shard)
        return batch.run(batch.prepare_output())
    finally:
        scorer.close()  # a registry download is not kept
