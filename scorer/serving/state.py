"""What one server process knows about itself: :class:`ServerState`.

It is the app's ``state`` (``app.state.scorer`` is the serving Scorer, ``app.state.coalescer`` its
request coalescer), and every endpoint finds it as ``scope["app"].state`` (``request.app.state``
in a Starlette endpoint).

The serving version is one :class:`Version` (a Scorer and its own Coalescer), replaced by one assignment
when a reload swaps a new version in (:mod:`scorer.serving.reload`). A scoring request holds the version it
started on (:meth:`ServerState.hold`) until its response: the old version's coalescer is stopped only once
no request holds it, so every request finishes on its version and no model call mixes versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from scorer.core import Scorer
from scorer.errors import NotReady
from scorer.serving.metrics import Metrics
from scorer.serving.coalescer import Coalescer
from scorer.settings import Settings


@dataclass(eq=False)
class Version:
    """One loaded version: its scorer, its coalescer, the response headers that name it, and how many
    requests hold it."""

    scorer: Scorer
    coalescer: Coalescer
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    holders: int = 0
    _idle: asyncio.Event | None = None

    def __post_init__(self) -> None:
        if not self.headers:
            # A header value is printable ASCII: a manifest's version with anything else (a line break
            # would split the response's headers) is sent with "?" in its place.
            label = "".join(c if " " <= c <= "~" else "?" for c in self.scorer.version_label)
            self.headers = [(b"x-model-version", label.encode("ascii")),
                            (b"x-model-digest", f"sha256:{self.scorer.bundle.digest}".encode())]

    def release(self) -> None:
        self.holders -= 1
        if self.holders == 0 and self._idle is not None:
            self._idle.set()

    async def idle(self, timeout: float) -> bool:
        """Wait until no request holds this version (it is not the serving one any more); False on timeout."""
        if self.holders == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


@dataclass
class ServerState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    active: Version | None = None
    load_error: BaseException | None = None
    # From SIGTERM on: readiness is 503 and scoring responses close their connection, but scoring
    # goes on (the drain window, then in-flight requests) until the coalescer is stopped.
    shutting_down: bool = False
    shutdown_started: float = 0.0  # when the server stopped accepting connections: the grace period starts
    # A worker retired by its supervisor (a new version's workers serve): still ready, but scoring responses
    # close their connection, so keep-alive clients reconnect (to a new worker) before this one stops accepting.
    retiring: bool = False
    # The reload side (scorer.serving.reload): what /metadata shows under "reload", and POST /admin/reload.
    reload_info: Callable[[], dict[str, Any]] | None = None
    reload_now: Callable[[], Awaitable[tuple[int, dict[str, Any]]]] | None = None

    @property
    def scorer(self) -> Scorer | None:
        return self.active.scorer if self.active is not None else None

    @property
    def coalescer(self) -> Coalescer | None:
        return self.active.coalescer if self.active is not None else None

    def loaded(self) -> tuple[Scorer, Coalescer]:
        """The serving scorer and its coalescer. Scoring does not stop at SIGTERM: a request that
        reached the app (during the drain window, or in flight) is served; the coalescer refuses once
        stopped."""
        version = self._version()
        return version.scorer, version.coalescer

    def hold(self) -> Version:
        """The serving version, held by the caller until it calls ``release()`` (a scoring request, until
        its response): that version's coalescer keeps running until every holder has released it."""
        version = self._version()
        version.holders += 1
        return version

    def ready(self) -> tuple[Scorer, Coalescer]:
        """Readiness: loaded and not shutting down (from SIGTERM on, load balancers must stop sending)."""
        if self.shutting_down:
            raise NotReady("the server is shutting down")
        return self.loaded()

    def _version(self) -> Version:
        if self.active is None:
            raise NotReady("the bundle is not loaded yet" if self.load_error is None else "the bundle failed to load")
        return self.active


def state_of(scope: Any) -> ServerState:
    """The state of the app serving ``scope`` (the app puts itself in ``scope["app"]``)."""
    state: ServerState = scope["app"].state
    return state
