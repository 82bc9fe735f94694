"""The ASGI app of one server process, and its life: start-up (the bundle loads in a background
thread, so the port answers, and ``/health`` is 200, while a slow bundle loads), reloads (a new version
swapped in without downtime, :mod:`scorer.serving.reload`) and shutdown (the coalescer finishes what is
queued within the grace period).

The stack, outermost first; each layer is one module of :mod:`scorer.serving`::

    ScorerApp             app.py       puts itself in scope["app"]; its ``state`` is the ServerState
    (TracingLayer)        tracing.py   with --tracing only: a server span per scoring request
    └─ RequestContext     context.py   request id, error responses (http_errors.py), metrics, drain,
       │                               payload log (payload_log.py, opt-in)
       └─ Router          router.py    scoring POST -> predict.py (fast path); the rest -> routes.py
                                       through Starlette's router (404, 405 with Allow)

Authentication is checked by the routes that need it (auth.py). Every error body is
``{"error", "message", "request_id"}``; its status comes from :func:`scorer.errors.http_status`
and nowhere else.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from scorer._memory import settle_heap
from scorer.core import Scorer

from scorer.load_options import LoadOptions
from scorer.errors import BundleError, ScorerError
from scorer.lifecycle import read_revision
from scorer.serving.coalescer import CoalescingPolicy
from scorer.serving.context import RequestContext
from scorer.serving.metrics import Metrics
from scorer.serving.payload_log import PayloadLog, PayloadLogOptions
from scorer.serving.reload import Reloader, in_daemon_thread, start_version, supervised
from scorer.serving.router import Router
from scorer.serving.routes import is_scoring_path, path_label, routes_for
from scorer.serving.state import ServerState
from scorer.serving.tracing import Tracing
from scorer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Supervisor:
    """What a worker of a multi-worker supervisor knows of it."""

    status_dir: str | None  # where the supervisor writes its reload record (the shared metrics directory)
    ready: Callable[[], None]  # tells the supervisor this worker serves


class ScorerApp:
    """The ASGI app: :class:`RequestContext` around the :class:`Router`. ``state`` is its
    :class:`ServerState` (``app.state.scorer`` is the loaded Scorer)."""

    def __init__(self, state: ServerState, lifespan: Callable[[Any], Any], routes: list[Any],
                 payload_log: PayloadLog | None = None, tracing: Tracing | None = None) -> None:
        self.state = state
        router = Router(lifespan, routes)
        self.routes = router.routes
        self._stack: ASGIApp = RequestContext(router, state, payload_log)
        if tracing is not None:
            self._stack = tracing.layer(self._stack, is_scoring_path, path_label)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self._stack(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    scorer: Scorer | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
    revision: str | None = None,
    supervisor: Supervisor | None = None,
) -> ScorerApp:
    """The ASGI app. Without ``scorer``, the bundle at ``settings.bundle`` loads in the background.

    ``revision``: the source revision ``scorer`` was loaded at (the reload watcher's starting point).
    ``supervisor``: this is a worker of a multi-worker supervisor, which does the reloads (see
    :mod:`scorer.serving.reload`); its ``ready()`` is called once this worker serves."""
    state = ServerState(settings=settings, metrics=Metrics(reloads=supervisor is None))
    policy = CoalescingPolicy(max_rows=settings.max_batch_rows, max_wait=settings.max_batch_wait_ms / 1000,
                              max_queue_rows=settings.max_queue_rows)
    reloader = Reloader(state, policy) if supervisor is None else None
    payload_options = PayloadLogOptions.from_settings(settings)
    payload_log = PayloadLog(payload_options, state.metrics) if payload_options is not None else None
    tracing = Tracing() if settings.tracing != "off" else None  # in this process: a forked worker makes its own

    def activate(loaded: Scorer, seen: str | None) -> None:
        state.active = start_version(loaded, state, policy)
        state.metrics.heap_frozen.set(gc.get_freeze_count())
        state.metrics.load_seconds.set(loaded.load_seconds)
        state.metrics.ready.set(1)
        if reloader is not None:
            reloader.started(seen)
        else:
            assert supervisor is not None
            supervised(state, supervisor.status_dir)
            supervisor.ready()

    def load() -> tuple[Scorer, str | None]:
        seen = read_revision(settings.bundle)  # before the load: a change during it is seen at the first poll
        return Scorer.load(settings.bundle, LoadOptions.from_settings(settings)), seen

    async def load_in_background() -> None:
        try:
            loaded, seen = await in_daemon_thread(load)
        except Exception as exc:
            message = exc.message if isinstance(exc, ScorerError) else f"{type(exc).__name__}: {exc}"
            log.error("bundle failed to load: %s", message, exc_info=not isinstance(exc, ScorerError))
            # Whatever the loader raised, the bundle failed to load: a BundleError (exit code by the table).
            error = exc
            if not isinstance(exc, BundleError):
                error = BundleError(f"loading raised {type(exc).__name__}")
                error.__cause__ = exc
            state.load_error = error
            if on_load_error is not None:
                on_load_error(error)
            return
        settle_heap()  # loaded in this process: the model's objects leave the collector's way (scorer._memory)
        activate(loaded, seen)

    @asynccontextmanager
    async def lifespan(app: ScorerApp) -> AsyncIterator[None]:
        loader = None
        grpc_server = None
        if payload_log is not None:
            payload_log.start()
        if settings.grpc_port:  # the optional gRPC server (its extra): imported only when on
            from scorer.serving import grpc_v2

            grpc_server = await grpc_v2.start(state)
        if scorer is not None:
            activate(scorer, revision)
        else:
            loader = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            state.metrics.ready.set(0)
            if loader is not None and not loader.done():
                log.warning("shutting down while the bundle is still loading: the load is abandoned")
                loader.cancel()
            if reloader is not None:
                await reloader.stop()
            left = settings.shutdown_grace_s - (time.monotonic() - state.shutdown_started if state.shutdown_started else 0)
            if grpc_server is not None:  # in-flight gRPC requests finish within what is left of the grace
                await grpc_server.stop(grace=max(left, 0.5))
                left = settings.shutdown_grace_s - (time.monotonic() - state.shutdown_started if state.shutdown_started else 0)
            if state.coalescer is not None and not await state.coalescer.stop(timeout=max(left, 0.5)):
                log.error("a model call was still running %.0f s after shutdown began: abandoned, its requests "
                          "failed", settings.shutdown_grace_s)
            if payload_log is not None:  # every request is answered: send what they queued, within the grace
                left = settings.shutdown_grace_s - (time.monotonic() - state.shutdown_started if state.shutdown_started else 0)
                await payload_log.close(timeout=max(left, 0.5))
            if tracing is not None:
                tracing.shutdown()

    return ScorerApp(state, lifespan, routes_for(settings), payload_log, tracing)
