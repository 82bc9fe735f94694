"""The server's processes: one uvicorn process, or a supervisor and N worker processes sharing one
listening socket (``scorer serve``; the app each process serves is :mod:`scorer.serving.app`).

Why not ``uvicorn --workers``: its supervisor restarts a worker that exits, so a bundle
that fails to load would restart forever instead of failing the deployment; and in
multi-worker mode replies were seen waiting on delayed ACKs (no ``TCP_NODELAY``). Here a
worker whose bundle fails to load exits with the code :func:`scorer.errors.exit_code` gives a
:class:`~scorer.errors.BundleError` (3), and the supervisor
then stops the others and exits with that code. SIGTERM/SIGINT are forwarded to workers,
which drain and finish in-flight requests (see :class:`_Server`) before exiting.

Shutdown (each worker): SIGTERM makes ``/ready`` 503 at once but keeps serving for ``drain_s``
seconds, since in a rollout the load balancer removes the endpoint only after the signal and
keeps routing requests here meanwhile; then the listener closes (new connections are refused),
in-flight requests finish within ``shutdown_grace_s`` (uvicorn's graceful shutdown) and the
process exits 0. A second SIGTERM or a SIGINT skips what is left of the drain window; a server
whose bundle is still loading (never ready, so nothing is routed to it) stops at once.

With N workers the bundle is loaded once, in the supervisor, before the workers are forked:
they share the model's memory pages (copy-on-write; ``gc.freeze`` keeps the collector from
touching them) and are ready the moment they start. The port is bound before the load, so
while it loads a small responder in the supervisor answers ``/health`` 200 and everything else 503
(see :mod:`scorer.serving.loading`), as the one-worker server does while its bundle loads in the background.

Reloads (a new model version, :mod:`scorer.lifecycle`): one process reloads itself
(:mod:`scorer.serving.reload`). With N workers the supervisor does: it polls the source and takes
SIGHUP (a worker's ``POST /admin/reload`` sends it one), loads and checks the new version in a thread,
forks N workers with it and, once they all serve, retires the old ones with SIGUSR1 (``/ready`` stays
200 on them, unlike SIGTERM's drain: probes reach every worker through the shared socket; their
scoring answers close the connection for :data:`RETIRE_WINDOW_S`, then they stop accepting, finish
in-flight requests and exit 0). The supervisor keeps the listening socket open for the workers of
later versions until it stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scorer.serving import metrics
from scorer._cpu import share_openmp
from scorer._memory import settle_heap
from scorer.serving.loading import LoadingResponder
from scorer._logging import configure
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.errors import EXIT_OK, ScorerError, UsageError, exit_code
from scorer.jvm import jvm_started
from scorer.lifecycle import Outcome, ReloadLog, check, read_revision
from scorer.serving.app import Supervisor, create_app
from scorer.serving.reload import ADMIN_REQUEST, STATUS_FILE, last_result, log_outcome
from scorer.serving.state import ServerState
from scorer.serving import tracing
from scorer.settings import Settings

log = logging.getLogger(__name__)

_SWITCH_INTERVAL = 0.001  # seconds; see run_worker
#: How long a worker retired by a reload keeps answering with ``Connection: close`` before it stops accepting.
RETIRE_WINDOW_S = 1.0
#: Then how long it keeps its open connections after it has stopped accepting, before uvicorn's shutdown
#: closes the idle ones: a connection accepted just before the listener closed has its request answered
#: (with ``Connection: close``) instead of being cut before the request arrived.
RETIRE_LINGER_S = 1.0


class _NoDelayHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY forced on every connection, and a deadline for
    the request head: a client that connects and sends nothing, or trickles its headers, is cut
    off after ``header_timeout`` seconds (uvicorn itself only times out idle keep-alive connections)."""

    header_timeout = 30.0
    _head_timer: Any = None

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        self.transport.close()


def run_worker(settings: Settings, sock: socket.socket | None = None, *, scorer: Scorer | None = None,
               revision: str | None = None, supervisor: Supervisor | None = None) -> int:
    """Serve in this process until shut down; returns the exit code.

    Without ``scorer`` the port answers at once and the bundle loads in the background (``/ready``
    is 503 until it has). With ``scorer`` it serves that already-loaded model (loaded at source
    ``revision``). With ``supervisor`` this is a forked worker: its supervisor reloads, and SIGUSR1
    retires this worker (see :meth:`_Server.retire`).
    """
    configure(settings.log_level, settings.log_format)
    # Model code often releases the GIL in many short sections (HistGradientBoosting: once per tree).
    # Each time it wants the GIL back while a request thread decodes a big body, it waits up to one
    # switch interval: at Python's default 5 ms a 10,000-row call took ~3x its in-process time.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None
    # SIGHUP asks for a reload (scorer.serving.reload handles it once the first version serves); before
    # that, and in a supervised worker (its supervisor reloads), it must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def on_load_error(exc: BaseException) -> None:
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, scorer=scorer, on_load_error=on_load_error, revision=revision, supervisor=supervisor)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=type("_HttpProtocol", (_NoDelayHttpTools,), {"header_timeout": settings.client_timeout_s}),
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
    )
    server = _Server(config, app.state, settings.drain_s)
    # uvicorn restores the previous handlers after its graceful shutdown and re-raises the signal
    # it caught; with these no-op handlers in place that re-raise is harmless and we exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    if supervisor is not None:
        signal.signal(signal.SIGUSR1, lambda signum, frame: server.retire() if server is not None else None)
    server.run(sockets=[sock] if sock is not None else None)
    return exit_code(failed[0]) if failed else EXIT_OK


class _Server(uvicorn.Server):
    """uvicorn's server with a drain window. The first SIGTERM to a ready server tells the app at once
    (``/ready`` 503: load balancers stop sending) but keeps accepting and serving for ``drain_s``
    seconds; only then does uvicorn's graceful shutdown start (listener closed, in-flight requests
    finished). SIGINT, a second SIGTERM, ``drain_s == 0`` or a server still loading its bundle start
    the shutdown at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_s: float) -> None:
        super().__init__(config)
        self._state = state
        self._drain_s = drain_s
        self._drain_until: float | None = None
        self._retire_until: float | None = None
        self._linger_until: float | None = None

    def retire(self) -> None:
        """SIGUSR1 from the supervisor: workers of a new version serve now. Unlike SIGTERM, ``/ready`` stays
        200 (probes reach every worker through the shared socket); from now on its scoring responses carry
        ``Connection: close`` (keep-alive clients reconnect, to a new worker); after :data:`RETIRE_WINDOW_S`
        it stops accepting, answers what arrives on the connections it has for :data:`RETIRE_LINGER_S`
        more, then finishes its in-flight requests and exits 0."""
        state = self._state
        if state.retiring or state.shutting_down:
            return
        state.retiring = True
        self._retire_until = time.monotonic() + RETIRE_WINDOW_S
        log.info("retired by the supervisor: closing keep-alive connections for %.1f s, then finishing in-flight "
                 "requests", RETIRE_WINDOW_S)

    def handle_exit(self, sig: int, frame: Any) -> None:
        state = self._state
        if not state.shutting_down:
            state.shutting_down = True
            if sig == signal.SIGTERM and self._drain_s > 0 and state.coalescer is not None:
                self._drain_until = time.monotonic() + self._drain_s
                log.info("SIGTERM: not ready any more; still serving for %.1f s (drain), then finishing in-flight "
                         "requests (grace %.0f s)", self._drain_s, state.settings.shutdown_grace_s)
                return
        self._stop_accepting()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        now = time.monotonic()
        if self._drain_until is not None and now >= self._drain_until:
            self._stop_accepting()
            self.should_exit = True
        if self._retire_until is not None and now >= self._retire_until:
            self._retire_until = None
            for server in self.servers:  # this process's listener only: the socket stays open in the others
                server.close()
            self._linger_until = now + RETIRE_LINGER_S
        if self._linger_until is not None and now >= self._linger_until:
            self._linger_until = None
            self._stop_accepting()
            self.should_exit = True
        return await super().on_tick(counter)

    def _stop_accepting(self) -> None:
        self._drain_until = None
        if not self.should_exit:
            self._state.shutdown_started = time.monotonic()
            log.info("shutting down: no new connections; finishing in-flight requests (grace %.0f s)",
                     self._state.settings.shutdown_grace_s)


def _worker_main(settings: Settings, sock: socket.socket, scorer: Scorer, openmp_threads: int,
                 status_dir: str | None, ready: Any) -> None:
    _limit_openmp(openmp_threads)
    sys.exit(run_worker(settings, sock, scorer=scorer, supervisor=Supervisor(status_dir, ready.set)))


def _limit_openmp(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return
    threadpool_limits(limits=threads, user_api="openmp")


class _StopRequested(Exception):
    pass


def serve(settings: Settings) -> int:
    try:
        tracing.require(settings)  # before anything starts: tracing on without its extra is a usage error
        _require_grpc(settings)
    except ScorerError as exc:
        print(f"scorer: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    if settings.workers <= 1:
        share_openmp(1)  # before the bundle loads an OpenMP runtime: the cores this process may use
        return run_worker(settings)
    configure(settings.log_level, settings.log_format)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    share_openmp(settings.workers)
    openmp_threads = int(os.environ["OMP_NUM_THREADS"])

    def stop_loading(signum: int, frame: Any) -> None:
        raise _StopRequested

    signal.signal(signal.SIGTERM, stop_loading)
    signal.signal(signal.SIGINT, stop_loading)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the first load reads the source as it is now anyway
    seen = read_revision(settings.bundle)
    try:
        with LoadingResponder(sock):
            loaded = _load_in_supervisor(settings.bundle, LoadOptions.from_settings(settings), openmp_threads)
    except ScorerError as exc:
        log.error("bundle failed to load: %s", exc.message)
        sock.close()
        return exit_code(exc)
    except _StopRequested:
        log.warning("stopped while the bundle was still loading")
        sock.close()
        return 0
    if jvm_started():
        # A process with a JVM cannot fork (the children would share its py4j connection): serve here,
        # with one process (reloading in-process); Spark's local session already uses every core.
        log.info("the bundle runs on the JVM (Spark/H2O): serving with one process instead of %d", settings.workers)
        return run_worker(settings, sock, scorer=loaded, revision=seen)
    with metrics.shared_between_workers() as status_dir:
        return _Supervision(settings, sock, loaded, seen, openmp_threads, status_dir).run()


def _require_grpc(settings: Settings) -> None:
    """With ``grpc_port``: one worker, the extra installed, the port free; else :class:`UsageError` (exit 2).
    gRPC is served by the one process only: N forked workers would each need their own gRPC server on one
    port (SO_REUSEPORT) and a supervisor that never imports grpc before forking; scale with replicas instead."""
    if not settings.grpc_port:
        return
    if settings.workers > 1:
        raise UsageError(f"--grpc-port serves gRPC from one process: it cannot be combined with --workers "
                         f"{settings.workers} (run one worker per replica, or turn gRPC off)")
    try:
        import scorer.serving.grpc_v2  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--grpc-port needs the grpc extra (pip install 'scorer[grpc]'); missing: {exc.name}") from None
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.grpc_port))
        except OSError as exc:
            raise UsageError(f"--grpc-port {settings.grpc_port}: cannot listen on {settings.host}: "
                             f"{exc.strerror or exc}") from None


def _load_in_supervisor(source: str, options: LoadOptions, openmp_threads: int) -> Scorer:
    """``Scorer.load`` in the supervisor, whose OpenMP runtime must never start threads: a process forked
    from one that has an OpenMP thread pool can hang in its first parallel region. Workers get their share back."""
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        return Scorer.load(source, options)
    finally:
        os.environ["OMP_NUM_THREADS"] = str(openmp_threads)


def _check_in_supervisor(source: str, options: LoadOptions, current: Scorer, seen: str | None, force: bool,
                         openmp_threads: int) -> Outcome | None:
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        return check(source, options, current, seen, force=force)
    finally:
        os.environ["OMP_NUM_THREADS"] = str(openmp_threads)


class _Supervision:
    """The supervisor of N workers, and its reloads: a new version is loaded here (in a thread, beside the
    serving one), N new workers are forked with it and, once they serve, the old workers are retired
    (SIGUSR1: they stay ready, close keep-alive connections, then finish in-flight requests and exit).
    The listening socket stays open here for the workers of later versions until the server stops."""

    def __init__(self, settings: Settings, sock: socket.socket, loaded: Scorer, seen: str | None,
                 openmp_threads: int, status_dir: str | None) -> None:
        self.settings = settings
        self.sock = sock
        self.scorer = loaded
        self.seen = seen
        self.openmp_threads = openmp_threads
        self.status_dir = status_dir
        self.options = LoadOptions.from_settings(settings)
        self.ctx = multiprocessing.get_context("fork")
        self.serving: list[BaseProcess] = []
        self.retiring: list[BaseProcess] = []
        self.old_scorers: list[tuple[Scorer, list[BaseProcess]]] = []  # closed once their workers are gone
        self.stopping: list[int] = []
        self.sighup = False
        self.record = ReloadLog(interval_s=settings.reload_interval)
        self.reload_metrics = metrics.ReloadMetrics(CollectorRegistry())
        self.ready: dict[BaseProcess, Any] = {}  # each worker's Event, set once it serves
        self.job: threading.Thread | None = None
        self.job_result: list[tuple[str, Outcome | None, float]] = []

    # signals (main thread, between bytecodes)

    def _forward(self, signum: int, frame: Any) -> None:
        self.stopping.append(signum)
        for w in [*self.serving, *self.retiring]:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signum)

    def _on_sighup(self, signum: int, frame: Any) -> None:
        self.sighup = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        signal.signal(signal.SIGHUP, self._on_sighup)
        self.record.loaded()
        self.reload_metrics.serving(self.scorer.version_label, f"sha256:{self.scorer.bundle.digest}", time.time())
        self._save()
        self.serving = self._fork(self.scorer)
        log.info("started %d workers on %s:%d (pids %s)", len(self.serving), self.settings.host, self.settings.port,
                 [w.pid for w in self.serving])
        try:
            return self._supervise()
        finally:
            self.sock.close()

    def _fork(self, scorer: Scorer) -> list[BaseProcess]:
        settle_heap()  # the loaded model moves to the permanent generation: workers' collections never write to it
        workers: list[BaseProcess] = []
        for i in range(self.settings.workers):
            ready = self.ctx.Event()
            w = self.ctx.Process(target=_worker_main, name=f"scorer-worker-{i}",
                                 args=(self.settings, self.sock, scorer, self.openmp_threads, self.status_dir, ready))
            self.ready[w] = ready
            w.start()
            workers.append(w)
        return workers

    def _supervise(self) -> int:
        code = 0
        next_poll = time.monotonic() + self.settings.reload_interval
        while self.serving or self.retiring:
            live = [*self.serving, *self.retiring]
            multiprocessing.connection.wait([w.sentinel for w in live], timeout=0.2)
            for w in live:
                if w.exitcode is None:
                    continue
                metrics.worker_exited(w.pid)
                self.ready.pop(w, None)
                if w in self.retiring:
                    self.retiring.remove(w)
                    continue
                self.serving.remove(w)
                stopped_by_us = w.exitcode < 0 and -w.exitcode in self.stopping
                if w.exitcode != 0 and not stopped_by_us and code == 0:
                    code = w.exitcode if w.exitcode > 0 else 1
                    log.error("worker %s exited with %s; stopping the others", w.pid, w.exitcode)
                    self._forward(signal.SIGTERM, None)
            self._close_old_scorers()
            if self.stopping:
                self.sock.close()  # the workers hold copies until they stop accepting
                continue
            if self.record.unreachable:
                self.reload_metrics.stale.set(self.record.stale_seconds() or 0.0)
            if self.job is None:
                polled = self.settings.reload_interval > 0 and time.monotonic() >= next_poll
                if self.sighup or polled:
                    trigger = self._signalled_by() if self.sighup else "watch"
                    self.sighup = False
                    self._start_check(trigger)
            elif not self.job.is_alive():
                self.job.join()
                self.job = None
                if self.job_result:
                    self._finish_check(*self.job_result.pop())
                next_poll = time.monotonic() + self.settings.reload_interval
        return code

    def _signalled_by(self) -> str:
        """"admin" when a worker's POST /admin/reload sent the SIGHUP, else "sighup"."""
        if self.status_dir is not None:
            try:
                os.unlink(os.path.join(self.status_dir, ADMIN_REQUEST))
                return "admin"
            except OSError:
                pass
        return "sighup"

    def _start_check(self, trigger: str) -> None:
        if trigger != "watch":
            log.info("%s: checking the model source", "SIGHUP" if trigger == "sighup" else "POST /admin/reload")
        force = trigger != "watch"

        def work() -> None:
            started = time.perf_counter()
            try:
                outcome = _check_in_supervisor(self.settings.bundle, self.options, self.scorer, self.seen, force,
                                               self.openmp_threads)
            except Exception as exc:  # noqa: BLE001 - the supervisor outlives any one attempt
                log.exception("reload check failed")
                outcome = Outcome("rejected", error=f"the check raised {type(exc).__name__}")
            self.job_result.append((trigger, outcome, time.perf_counter() - started))

        self.job = threading.Thread(target=work, name="scorer-reload", daemon=True)
        self.job.start()

    def _finish_check(self, trigger: str, outcome: Outcome | None, seconds: float) -> None:
        if outcome is None:
            self.record.reached()
            self.reload_metrics.stale.set(0.0)
            self._save()
            return
        if outcome.scorer is not None and self.stopping:
            outcome.scorer.close()
            return
        if outcome.revision is not None:
            self.seen = outcome.revision
        log_outcome(trigger, outcome, self.scorer.version_label, seconds, last_result(self.record))
        if outcome.scorer is not None:
            failure = self._swap(outcome.scorer)
            if failure is not None:
                log.error("reload (%s) rejected: %s; version %s keeps serving", trigger, failure,
                          self.scorer.version_label)
                outcome = Outcome("rejected", error=failure, revision=outcome.revision)
        now = time.time()
        self.record.record(trigger, outcome, seconds, now)
        self.reload_metrics.attempt(outcome.result, now)
        if outcome.result == "loaded":
            self.reload_metrics.serving(self.scorer.version_label, f"sha256:{self.scorer.bundle.digest}", now)
        self.reload_metrics.stale.set(self.record.stale_seconds() or 0.0)
        self._save()
        if self.stopping:  # a stop signal arrived while the new workers were joining the served ones
            self._forward(self.stopping[0], None)

    def _swap(self, new: Scorer) -> str | None:
        """Fork workers of ``new``; once every one serves, retire the old ones. The reason it failed, or None."""
        workers = self._fork(new)
        deadline = time.monotonic() + max(60.0, self.settings.request_timeout_s)
        while not all(self.ready[w].is_set() for w in workers):
            failed = any(w.exitcode is not None for w in workers)
            if failed or self.stopping or time.monotonic() > deadline:
                for w in workers:
                    if w.is_alive() and w.pid is not None:
                        os.kill(w.pid, signal.SIGTERM)
                self.retiring.extend(workers)
                self.old_scorers.append((new, workers))
                return "the new version's workers did not start" if not self.stopping else "the server is stopping"
            time.sleep(0.02)
        old, self.serving = self.serving, workers
        for w in old:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signal.SIGUSR1)
        self.retiring.extend(old)
        self.old_scorers.append((self.scorer, old))
        self.scorer = new
        log.info("workers %s serve version %s; retiring workers %s", [w.pid for w in workers], new.version_label,
                 [w.pid for w in old])
        return None

    def _close_old_scorers(self) -> None:
        for entry in list(self.old_scorers):
            scorer, workers = entry
            if all(w.exitcode is not None for w in workers):
                scorer.close()
                self.old_scorers.remove(entry)

    def _save(self) -> None:
        if self.status_dir is not None:
            try:
                self.record.save(os.path.join(self.status_dir, STATUS_FILE))
            except OSError as exc:
                log.warning("cannot write the reload record for the workers: %s", exc)
