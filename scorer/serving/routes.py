"""What the server answers: the route table, and the small endpoints besides scoring.

``POST /predict`` and ``POST /invocations`` (the same endpoint, :mod:`scorer.serving.predict`),
the Open Inference Protocol's and KServe V1's routes (:mod:`scorer.serving.inference`),
``GET /health`` (process alive), ``GET /version`` (MLflow's), ``GET /ready`` and ``GET /ping`` (200 once the bundle is loaded,
else 503, and 503 again from SIGTERM on), ``GET /metadata``, ``GET /metrics``, ``GET /openapi.json``,
``GET /execution-parameters`` (SageMaker Batch Transform's, :mod:`scorer.serving.sagemaker`; open, like ``/ping``),
and, only when an auth token is configured, ``POST /admin/reload`` (check the model source now).
The router takes the scoring routes' POSTs straight to their endpoint and everything else through
this table with Starlette's router, which also answers other methods on these paths (405 with
``Allow``) and unknown paths (404). Endpoints raise; :mod:`scorer.serving.http_errors` turns what
they raise into the error response.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scorer import codecs
from scorer._version import __version__
from scorer.errors import NotReady
from scorer.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from scorer.serving.openapi import document as openapi_document
from scorer.serving.auth import protected
from scorer.serving import inference
from scorer.serving.predict import score
from scorer.serving.sagemaker import execution_parameters as sagemaker_execution_parameters
from scorer.serving.state import ServerState
from scorer.settings import Settings


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type=codecs.JSON)


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state
    return state


async def version(request: Request) -> Response:
    """``GET /version``: the server's version as plain text (MLflow's scoring server has this route; its
    client's ``get_version`` reads it)."""
    return Response(__version__, media_type="text/plain")


async def health(request: Request) -> Response:
    return _json({"status": "ok"})


async def ready(request: Request) -> Response:
    _state(request).ready()
    return _json({"status": "ready"})


@protected
async def metadata(request: Request) -> Response:
    state = _state(request)
    scorer, _ = state.loaded()
    body = scorer.metadata()
    body["reload"] = state.reload_info() if state.reload_info is not None else None
    return _json(body)


@protected
async def admin_reload(request: Request) -> Response:
    """Check the model source now; swap in a new version if it passed (see scorer.serving.reload)."""
    state = _state(request)
    state.loaded()
    if state.reload_now is None:
        raise NotReady("reloads are not available yet")
    status, body = await state.reload_now()
    return Response(orjson.dumps(body), status_code=status, media_type=codecs.JSON)


@protected
async def openapi(request: Request) -> Response:
    state = _state(request)
    columns = state.scorer.schema.columns if state.scorer is not None and state.scorer.schema else None
    return _json(openapi_document(request.app.routes, columns, auth=bool(state.settings.auth_token)))


@protected
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def execution_parameters(request: Request) -> Response:
    return _json(sagemaker_execution_parameters(_state(request).settings))


ROUTES = [
    Route("/predict", score, methods=["POST"]),
    Route("/invocations", score, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/version", version, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/ping", ready, methods=["GET"]),
    Route("/metadata", metadata, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/execution-parameters", execution_parameters, methods=["GET"]),
    *inference.ROUTES,
]
ADMIN_ROUTES = [Route("/admin/reload", admin_reload, methods=["POST"])]
SCORING_PATHS = frozenset({"/predict", "/invocations"})


def is_scoring_path(path: str) -> bool:
    """Whether a request to ``path`` is scored (its body is rows, its answer predictions): ``/predict``,
    ``/invocations``, and the protocols' inference routes (``/v2/models/{name}[/versions/{v}]/infer``,
    ``/v1/models/{name}:predict``)."""
    return path in SCORING_PATHS or inference.scoring_route(path) is not None


# A metrics label: any other path counts as "other".
KNOWN_PATHS = frozenset(route.path for route in (*ROUTES, *ADMIN_ROUTES))
_TEMPLATES = [route for route in ROUTES if "{" in route.path]


def path_label(path: str) -> str:
    """The metrics label of a request path: the route's path as the table writes it
    (``/v2/models/{name}/infer``), or "other" for a path no route has."""
    if path in KNOWN_PATHS and "{" not in path:
        return path
    for route in _TEMPLATES:
        if route.path_regex.match(path):
            return route.path
    return "other"


def routes_for(settings: Settings) -> list[Route]:
    """The route table of a server with these settings: the admin routes exist only with an auth token
    (without one, ``/admin/reload`` is an unknown path: 404)."""
    return [*ROUTES, *ADMIN_ROUTES] if settings.auth_token else list(ROUTES)
