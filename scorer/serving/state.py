"""What one server process knows about itself: :class:`ServerState`.

It is the app's ``state`` (``app.state.scorer`` is the loaded Scorer, ``app.state.coalescer`` its
request coalescer), and every endpoint finds it as ``scope["app"].state`` (``request.app.state``
in a Starlette endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scorer.core import Scorer
from scorer.errors import NotReady
from scorer.serving.metrics import Metrics
from scorer.serving.coalescer import Coalescer
from scorer.settings import Settings


@dataclass
class ServerState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    scorer: Scorer | None = None
    coalescer: Coalescer | None = None
    load_error: BaseException | None = None
    # From SIGTERM on: readiness is 503 and scoring responses close their connection, but scoring
    # goes on (the drain window, then in-flight requests) until the coalescer is stopped.
    shutting_down: bool = False
    shutdown_started: float = 0.0  # when the server stopped accepting connections: the grace period starts

    def loaded(self) -> tuple[Scorer, Coalescer]:
        """The loaded scorer and its coalescer. Scoring does not stop at SIGTERM: a request that
        reached the app (during the drain window, or in flight) is served; the coalescer refuses once
        stopped."""
        if self.scorer is None or self.coalescer is None:
            raise NotReady("the bundle is not loaded yet" if self.load_error is None else "the bundle failed to load")
        return self.scorer, self.coalescer

    def ready(self) -> tuple[Scorer, Coalescer]:
        """Readiness: loaded and not shutting down (from SIGTERM on, load balancers must stop sending)."""
        if self.shutting_down:
            raise NotReady("the server is shutting down")
        return self.loaded()


def state_of(scope: Any) -> ServerState:
    """The state of the app serving ``scope`` (the app puts itself in ``scope["app"]``)."""
    state: ServerState = scope["app"].state
    return state
