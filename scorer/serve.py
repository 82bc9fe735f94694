"""Running the server: one process, or N worker processes sharing one listening socket.

Why not ``uvicorn --workers``: its supervisor restarts a worker that exits, so a bundle
that fails to load would restart forever instead of failing the deployment; and in
multi-worker mode replies were seen waiting on delayed ACKs (no ``TCP_NODELAY``). Here a
worker whose bundle fails to load exits with :data:`EXIT_LOAD_FAILED`, and the supervisor
then stops the others and exits with that code. SIGTERM/SIGINT are forwarded to workers,
which finish in-flight requests (uvicorn's graceful shutdown) before exiting.

Readiness with N workers: worker 0 accepts at once and loads in the background (``/health``
answers while loading, ``/ready`` is 503 until it has loaded); workers 1..N-1 load before they
accept and also wait until worker 0 is ready, so a request never lands on a worker that is not.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
from multiprocessing.synchronize import Event as EventType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scorer._cpu import share_openmp
from scorer._logging import configure
from scorer.core import Scorer
from scorer.errors import ScorerError
from scorer.server import create_app
from scorer.settings import Settings

log = logging.getLogger("scorer.serve")

EXIT_LOAD_FAILED = 3


class _NoDelayHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY forced on every connection."""

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        super().connection_made(transport)


def run_worker(
    settings: Settings,
    sock: socket.socket | None = None,
    *,
    first_ready: EventType | None = None,
    preload: bool = False,
) -> int:
    """Serve in this process until shut down; returns the exit code.

    Without ``preload`` the port answers at once and the bundle loads in the background
    (``/ready`` is 503 until it has), then ``first_ready`` is set. With ``preload`` (the extra
    workers sharing a socket) the bundle loads first and the worker waits for ``first_ready``
    before accepting, so no request ever reaches a worker that is not ready.
    """
    configure(settings.log_level, settings.log_format)
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_error(exc: BaseException) -> None:
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    loaded = None
    if preload:
        try:
            loaded = Scorer.load(settings.bundle, settings)
        except ScorerError as exc:
            log.error("bundle failed to load: %s", exc.message)
            return EXIT_LOAD_FAILED
        while first_ready is not None and not first_ready.wait(1.0):
            if os.getppid() == 1:  # the supervisor is gone
                return 1
    on_ready = first_ready.set if first_ready is not None and not preload else None
    app = create_app(settings, scorer=loaded, on_load_error=on_load_error, on_ready=on_ready)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=_NoDelayHttpTools,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=25,
    )
    server = uvicorn.Server(config)
    # uvicorn restores the previous handlers after its graceful shutdown and re-raises the signal
    # it caught; with these no-op handlers in place that re-raise is harmless and we exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    server.run(sockets=[sock] if sock is not None else None)
    return EXIT_LOAD_FAILED if failed else 0


def _worker_main(settings: Settings, sock: socket.socket, first_ready: EventType, preload: bool) -> None:
    sys.exit(run_worker(settings, sock, first_ready=first_ready, preload=preload))


def serve(settings: Settings) -> int:
    if settings.workers <= 1:
        return run_worker(settings)
    configure(settings.log_level, settings.log_format)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    share_openmp(settings.workers)
    ctx = multiprocessing.get_context("spawn")
    # Worker 0 answers at once (health while loading); the others load in parallel and join
    # once both they and worker 0 are ready.
    first_ready = ctx.Event()
    workers = [
        ctx.Process(target=_worker_main, args=(settings, sock, first_ready, i > 0), name=f"scorer-worker-{i}")
        for i in range(settings.workers)
    ]
    for w in workers:
        w.start()
    log.info("started %d workers on %s:%d (pids %s)", len(workers), settings.host, settings.port, [w.pid for w in workers])

    stopping: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stopping.append(signum)
        for w in workers:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    remaining = list(workers)
    while remaining:
        for w in list(remaining):
            w.join(timeout=0.2)
            if w.exitcode is None:
                continue
            remaining.remove(w)
            # A worker still loading when asked to stop dies of the signal itself: that is a clean stop.
            stopped_by_us = w.exitcode < 0 and -w.exitcode in stopping
            if w.exitcode != 0 and not stopped_by_us and code == 0:
                code = w.exitcode if w.exitcode > 0 else 1
                log.error("worker %s exited with %s; stopping the others", w.pid, w.exitcode)
                forward(signal.SIGTERM, None)
    sock.close()
    return code
