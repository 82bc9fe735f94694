"""The router: a scoring ``POST`` goes straight to the scoring endpoint (the fast path: no route
table walk, no request objects), everything else to Starlette's router over
:data:`scorer.serving.routes.ROUTES`, which names that same endpoint for those paths."""

from __future__ import annotations

from typing import Any

from starlette.routing import Router as StarletteRouter
from starlette.types import Receive, Scope, Send

from scorer.serving.inference import scoring_route
from scorer.serving.predict import score
from scorer.serving.routes import ROUTES, SCORING_PATHS


class Router:
    def __init__(self, lifespan: Any, routes: list[Any] | None = None) -> None:
        """``lifespan``: the app's start-up and shutdown, an async context manager factory (Starlette's);
        ``routes``: the route table (default :data:`~scorer.serving.routes.ROUTES`)."""
        self._routes = StarletteRouter(ROUTES if routes is None else routes, lifespan=lifespan)
        self.routes = self._routes.routes  # what it answers (the OpenAPI document is generated from it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path in SCORING_PATHS:
                await score(scope, receive, send)
                return
            if path.startswith(("/v2/", "/v1/")):
                found = scoring_route(path)
                if found is not None:
                    endpoint, scope["path_params"] = found
                    await endpoint(scope, receive, send)
                    return
        await self._routes(scope, receive, send)
