"""Reloads in a server process: a new model version swapped in without downtime.

The triggers: a poll of the source's revision key every ``reload_interval`` seconds (the watcher),
``SIGHUP``, and ``POST /admin/reload`` (only with an auth token). One reload at a time; the new version
loads and is tested in a background thread (:func:`scorer.lifecycle.check`), beside the serving one,
while the event loop goes on serving. Only a version that passed is swapped in, by one assignment of
the state's :class:`~scorer.serving.state.Version` (a Scorer with its own Coalescer, so no model call
ever mixes versions). Requests that started on the old version finish on it; once none holds it (or
after the request and client timeouts), its coalescer stops and its scorer is closed.

A supervised worker (``--workers N``) does not reload itself: its supervisor loads the new version,
forks new workers with it and retires the old ones (:mod:`scorer.serving.process`). Such a worker's
``/metadata`` reads the supervisor's reload record, and ``POST /admin/reload`` signals the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from scorer._memory import settle_heap
from scorer.core import Scorer
from scorer.errors import NotReady, ReloadRejected, SourceUnavailable
from scorer.lifecycle import Outcome, ReloadLog, check
from scorer.load_options import LoadOptions
from scorer.serving.coalescer import Coalescer, CoalescingPolicy
from scorer.serving.state import ServerState, Version

log = logging.getLogger("scorer.serving.reload")

STATUS_FILE = "reload-status.json"  # in the workers' shared metrics directory: the supervisor's ReloadLog
ADMIN_REQUEST = "reload-requested-by-admin"  # beside it: the SIGHUP a worker sends comes from POST /admin/reload


async def in_daemon_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)`` in a daemon thread: unlike ``asyncio.to_thread``, shutting down does not wait
    for it, so a stop during a long bundle load is prompt (the load is abandoned)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not future.done():
            future.set_exception(exc) if exc is not None else future.set_result(result)

    def work() -> None:
        try:
            result, exc = fn(*args, **kwargs), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, exc = None, e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=work, name="scorer-load", daemon=True).start()
    return await future


def start_version(scorer: Scorer, state: ServerState, policy: CoalescingPolicy) -> Version:
    """``scorer`` with a coalescer of its own, started (on the running loop)."""
    coalescer = Coalescer(scorer.predict_table, policy, state.metrics.observe_batch, state.metrics.observe_retries)
    coalescer.start()
    return Version(scorer, coalescer)


def log_outcome(trigger: str, outcome: Outcome, serving: str, seconds: float, previous: str | None = None) -> None:
    """One log line per reload attempt; while the source stays unreachable, polls after the first log at
    debug level only (an outage at a 1 s interval would otherwise write a warning a second).
    ``previous``: the result of the attempt before this one."""
    if previous == "unavailable" and outcome.result != "unavailable":
        log.info("reload (%s): the source answers again", trigger)
    if outcome.result == "unavailable" and previous == "unavailable" and trigger == "watch":
        log.debug("reload (%s): the source still cannot be reached: %s", trigger, outcome.error)
        return
    if outcome.result == "loaded":
        assert outcome.scorer is not None
        log.info("reload (%s): version %s (sha256:%s) loaded in %.2fs; it replaces version %s", trigger,
                 outcome.scorer.version_label, outcome.scorer.bundle.digest[:12], seconds, serving)
    elif outcome.result == "rejected":
        log.error("reload (%s) rejected: %s; version %s keeps serving", trigger, outcome.error, serving)
    elif outcome.result == "unavailable":
        log.warning("reload (%s): the source cannot be reached: %s; version %s keeps serving", trigger,
                    outcome.error, serving)
    else:
        log.info("reload (%s): the source still holds version %s", trigger, serving)


def last_result(record: ReloadLog) -> str | None:
    return record.last_attempt["result"] if record.last_attempt else None


def answer(outcome: Outcome | None, serving: Scorer) -> tuple[int, dict[str, Any]]:
    """The admin endpoint's answer to an attempt: 200, or the error of a rejection or an outage."""
    if outcome is None:
        raise NotReady("the server is shutting down")
    if outcome.result == "rejected":
        raise ReloadRejected(f"reload rejected: {outcome.error}")
    if outcome.result == "unavailable":
        raise SourceUnavailable(f"the model source cannot be reached: {outcome.error}")
    return 200, {"result": outcome.result, "model_version": serving.version_label,
                 "digest": f"sha256:{serving.bundle.digest}"}


class Reloader:
    """The reloads of a server process that serves on its own (one process, or a JVM bundle)."""

    def __init__(self, state: ServerState, policy: CoalescingPolicy) -> None:
        self.state = state
        self.settings = state.settings
        self.options = LoadOptions.from_settings(state.settings)
        self.policy = policy
        self.record = ReloadLog(interval_s=state.settings.reload_interval)
        self._seen: str | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retiring: set[Version] = set()
        self._sighup = False

    def started(self, seen: str | None) -> None:
        """The first version serves (``state.active``), loaded at source revision ``seen``: start watching."""
        state = self.state
        assert state.active is not None
        self._seen = seen
        self.record.loaded()
        metrics = state.metrics.reload
        if metrics is not None:
            scorer = state.active.scorer
            metrics.serving(scorer.version_label, f"sha256:{scorer.bundle.digest}", time.time())
            state.metrics.before_render.append(self._refresh_stale)
        state.reload_info = lambda: self.record.as_json()
        state.reload_now = self._admin
        if self.settings.reload_interval > 0:
            self._spawn(self._watch())
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._sighup = True
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests), or no SIGHUP
            log.warning("SIGHUP cannot be handled here: reloads come from polling and POST /admin/reload only")

    async def stop(self) -> None:
        """At shutdown: no more reloads; versions being retired stop with the serving one."""
        if self._sighup:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)  # back to the default...
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # ...which would end the process mid-shutdown
        for task in list(self._tasks):
            task.cancel()
        for version in list(self._retiring):
            await version.coalescer.stop(timeout=1.0)

    async def attempt(self, trigger: str, *, force: bool) -> Outcome | None:
        """Check the source, and swap a new version in if it passed. None: nothing to do (a poll found the
        revision unchanged, or the server is shutting down)."""
        async with self._lock:
            state = self.state
            if state.shutting_down or state.active is None:
                return None
            current = state.active
            started = time.perf_counter()
            outcome: Outcome | None = await in_daemon_thread(
                check, self.settings.bundle, self.options, current.scorer, self._seen, force=force)
            seconds = time.perf_counter() - started
            if outcome is None:  # read, and unchanged
                self.record.reached()
                self._refresh_stale()
                return None
            if outcome.scorer is not None and state.shutting_down:
                outcome.scorer.close()
                return None
            if outcome.revision is not None:
                self._seen = outcome.revision
            log_outcome(trigger, outcome, current.scorer.version_label, seconds, last_result(self.record))
            now = time.time()
            if outcome.scorer is not None:
                state.metrics.heap_frozen.set(settle_heap())
                new = start_version(outcome.scorer, state, self.policy)
                state.active = new  # the swap: requests from here on are scored by the new version
                state.metrics.load_seconds.set(outcome.scorer.load_seconds)
                self._spawn(self._retire(current))
            self.record.record(trigger, outcome, seconds, now)
            metrics = state.metrics.reload
            if metrics is not None:
                metrics.attempt(outcome.result, now)
                if outcome.scorer is not None:
                    metrics.serving(outcome.scorer.version_label, f"sha256:{outcome.scorer.bundle.digest}", now)
                self._refresh_stale()
            return outcome

    async def _admin(self) -> tuple[int, dict[str, Any]]:
        outcome = await self.attempt("admin", force=True)
        assert self.state.active is not None
        return answer(outcome, self.state.active.scorer)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: checking the model source")
        self._spawn(self.attempt("sighup", force=True))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            try:
                await self.attempt("watch", force=False)
            except Exception:  # noqa: BLE001 - the watcher outlives any one attempt
                log.exception("reload check failed")

    async def _retire(self, old: Version) -> None:
        """Once no request holds ``old`` (bounded by the request and client timeouts), stop its coalescer
        and close its scorer."""
        self._retiring.add(old)
        try:
            limit = self.settings.request_timeout_s + self.settings.client_timeout_s
            if not await old.idle(limit):
                log.warning("%d request(s) still hold version %s after %.0f s: stopping it anyway", old.holders,
                            old.scorer.version_label, limit)
            if not await old.coalescer.stop(timeout=self.settings.shutdown_grace_s):
                log.error("a model call of the old version %s was still running: abandoned", old.scorer.version_label)
            await in_daemon_thread(old.scorer.close)
            log.info("version %s retired", old.scorer.version_label)
        finally:
            self._retiring.discard(old)

    def _refresh_stale(self) -> None:
        metrics = self.state.metrics.reload
        if metrics is not None:
            metrics.stale.set(self.record.stale_seconds() or 0.0)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def supervised(state: ServerState, status_dir: str | None) -> None:
    """A worker of a supervisor (``--workers N``): ``/metadata`` shows the supervisor's reload record and
    ``POST /admin/reload`` asks the supervisor (SIGHUP) to check the source: 202."""
    interval = state.settings.reload_interval
    path = os.path.join(status_dir, STATUS_FILE) if status_dir is not None else None

    def info() -> dict[str, Any]:
        record = ReloadLog.read(path, interval) if path is not None else ReloadLog(interval_s=interval)
        return record.as_json()

    async def ask_supervisor() -> tuple[int, dict[str, Any]]:
        if status_dir is not None:  # so the supervisor records the trigger as "admin", not "sighup"
            with contextlib.suppress(OSError), open(os.path.join(status_dir, ADMIN_REQUEST), "wb"):
                pass
        os.kill(os.getppid(), signal.SIGHUP)
        return 202, {"result": "requested"}

    state.reload_info = info
    state.reload_now = ask_supervisor
