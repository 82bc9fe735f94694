"""The ASGI app of one server process, and its life: start-up (the bundle loads in a background
thread, so the port answers, and ``/health`` is 200, while a slow bundle loads) and shutdown (the
coalescer finishes what is queued within the grace period).

The stack, outermost first; each layer is one module of :mod:`scorer.serving`::

    ScorerApp             app.py       puts itself in scope["app"]; its ``state`` is the ServerState
    └─ RequestContext     context.py   request id, error responses (http_errors.py), metrics, drain
       └─ Router          router.py    scoring POST -> predict.py (fast path); the rest -> routes.py
                                       through Starlette's router (404, 405 with Allow)

Authentication is checked by the routes that need it (auth.py). Every error body is
``{"error", "message", "request_id"}``; its status comes from :func:`scorer.errors.http_status`
and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.types import Receive, Scope, Send

from scorer.core import Scorer

from scorer.load_options import LoadOptions
from scorer.errors import BundleError, ScorerError
from scorer.serving.coalescer import Coalescer, CoalescingPolicy
from scorer.serving.context import RequestContext
from scorer.serving.router import Router
from scorer.serving.state import ServerState
from scorer.settings import Settings

log = logging.getLogger(__name__)


class ScorerApp:
    """The ASGI app: :class:`RequestContext` around the :class:`Router`. ``state`` is its
    :class:`ServerState` (``app.state.scorer`` is the loaded Scorer)."""

    def __init__(self, state: ServerState, lifespan: Callable[[Any], Any]) -> None:
        self.state = state
        router = Router(lifespan)
        self.routes = router.routes
        self._stack = RequestContext(router, state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self._stack(scope, receive, send)


async def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread: unlike ``asyncio.to_thread``, shutting down does not wait
    for it, so a stop during a long bundle load is prompt (the load is abandoned)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not future.done():
            future.set_exception(exc) if exc is not None else future.set_result(result)

    def work() -> None:
        try:
            result, exc = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, exc = None, e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=work, name="scorer-load", daemon=True).start()
    return await future


def create_app(
    settings: Settings,
    *,
    scorer: Scorer | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> ScorerApp:
    """The ASGI app. Without ``scorer``, the bundle at ``settings.bundle`` loads in the background."""
    state = ServerState(settings=settings)
    policy = CoalescingPolicy(max_rows=settings.max_batch_rows, max_wait=settings.max_batch_wait_ms / 1000,
                              max_queue_rows=settings.max_queue_rows)

    def activate(loaded: Scorer) -> None:
        coalescer = Coalescer(loaded.predict, policy, state.metrics.observe_batch, state.metrics.observe_retries)
        coalescer.start()
        state.scorer, state.coalescer = loaded, coalescer
        state.metrics.load_seconds.set(loaded.load_seconds)
        state.metrics.ready.set(1)

    async def load_in_background() -> None:
        try:
            loaded = await _in_daemon_thread(Scorer.load, settings.bundle, LoadOptions.from_settings(settings))
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
        activate(loaded)

    @asynccontextmanager
    async def lifespan(app: ScorerApp) -> AsyncIterator[None]:
        loader = None
        if scorer is not None:
            activate(scorer)
        else:
            loader = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            state.metrics.ready.set(0)
            if loader is not None and not loader.done():
                log.warning("shutting down while the bundle is still loading: the load is abandoned")
                loader.cancel()
            left = settings.shutdown_grace_s - (time.monotonic() - state.shutdown_started if state.shutdown_started else 0)
            if state.coalescer is not None and not await state.coalescer.stop(timeout=max(left, 0.5)):
                log.error("a model call was still running %.0f s after shutdown began: abandoned, its requests "
                          "failed", settings.shutdown_grace_s)

    return ScorerApp(state, lifespan)
