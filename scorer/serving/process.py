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
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scorer.serving import metrics
from scorer._cpu import share_openmp
from scorer.serving.loading import LoadingResponder
from scorer._logging import configure
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.errors import EXIT_OK, ScorerError, exit_code
from scorer.jvm import jvm_started
from scorer.serving.app import create_app
from scorer.serving.state import ServerState
from scorer.settings import Settings

log = logging.getLogger(__name__)

_SWITCH_INTERVAL = 0.001  # seconds; see run_worker


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


def run_worker(settings: Settings, sock: socket.socket | None = None, *, scorer: Scorer | None = None) -> int:
    """Serve in this process until shut down; returns the exit code.

    Without ``scorer`` the port answers at once and the bundle loads in the background (``/ready``
    is 503 until it has). With ``scorer`` (a forked worker) it serves that already-loaded model.
    """
    configure(settings.log_level, settings.log_format)
    # Model code often releases the GIL in many short sections (HistGradientBoosting: once per tree).
    # Each time it wants the GIL back while a request thread decodes a big body, it waits up to one
    # switch interval: at Python's default 5 ms a 10,000-row call took ~3x its in-process time.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_error(exc: BaseException) -> None:
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, scorer=scorer, on_load_error=on_load_error)
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
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self._stop_accepting()
            self.should_exit = True
        return await super().on_tick(counter)

    def _stop_accepting(self) -> None:
        self._drain_until = None
        if not self.should_exit:
            self._state.shutdown_started = time.monotonic()
            log.info("shutting down: no new connections; finishing in-flight requests (grace %.0f s)",
                     self._state.settings.shutdown_grace_s)


def _worker_main(settings: Settings, sock: socket.socket, scorer: Scorer, openmp_threads: int) -> None:
    _limit_openmp(openmp_threads)
    sys.exit(run_worker(settings, sock, scorer=scorer))


def _limit_openmp(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return
    threadpool_limits(limits=threads, user_api="openmp")


class _StopRequested(Exception):
    pass


def serve(settings: Settings) -> int:
    if settings.workers <= 1:
        return run_worker(settings)
    configure(settings.log_level, settings.log_format)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    share_openmp(settings.workers)
    openmp_threads = int(os.environ["OMP_NUM_THREADS"])
    # The supervisor's OpenMP runtime must never start threads: a process forked from one that
    # has an OpenMP thread pool can hang in its first parallel region. Workers get their share back.
    os.environ["OMP_NUM_THREADS"] = "1"

    def stop_loading(signum: int, frame: Any) -> None:
        raise _StopRequested

    signal.signal(signal.SIGTERM, stop_loading)
    signal.signal(signal.SIGINT, stop_loading)
    try:
        with LoadingResponder(sock):
            loaded = Scorer.load(settings.bundle, LoadOptions.from_settings(settings))
    except ScorerError as exc:
        log.error("bundle failed to load: %s", exc.message)
        return exit_code(exc)
    except _StopRequested:
        log.warning("stopped while the bundle was still loading")
        return 0
    finally:
        os.environ["OMP_NUM_THREADS"] = str(openmp_threads)
    if jvm_started():
        # A process with a JVM cannot fork (the children would share its py4j connection): serve here,
        # with one process; Spark's local session already uses every core.
        log.info("the bundle runs on the JVM (Spark/H2O): serving with one process instead of %d", settings.workers)
        return run_worker(settings, sock, scorer=loaded)
    gc.collect()
    gc.freeze()  # the loaded model moves to the permanent generation: workers' collections never write to it
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=_worker_main, args=(settings, sock, loaded, openmp_threads), name=f"scorer-worker-{i}")
        for i in range(settings.workers)
    ]
    stopping: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stopping.append(signum)
        for w in workers:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    with metrics.shared_between_workers():
        return _supervise(settings, sock, workers, stopping, forward)


def _supervise(settings: Settings, sock: socket.socket, workers: Sequence[BaseProcess], stopping: list[int],
               forward: Callable[[int, Any], None]) -> int:
    for w in workers:
        w.start()
    # The workers hold the listening socket now: once each has closed its copy (end of its drain
    # window) the port refuses connections instead of queueing them where nobody accepts.
    sock.close()
    log.info("started %d workers on %s:%d (pids %s)", len(workers), settings.host, settings.port, [w.pid for w in workers])
    code = 0
    remaining = list(workers)
    while remaining:
        for w in list(remaining):
            w.join(timeout=0.2)
            if w.exitcode is None:
                continue
            remaining.remove(w)
            metrics.worker_exited(w.pid)
            stopped_by_us = w.exitcode < 0 and -w.exitcode in stopping
            if w.exitcode != 0 and not stopped_by_us and code == 0:
                code = w.exitcode if w.exitcode > 0 else 1
                log.error("worker %s exited with %s; stopping the others", w.pid, w.exitcode)
                forward(signal.SIGTERM, None)
    sock.close()
    return code
