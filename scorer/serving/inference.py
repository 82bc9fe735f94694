"""The Open Inference Protocol (KServe V2) and KServe V1 over HTTP.

Open Inference Protocol (REST; the messages are :mod:`scorer.open_inference`'s):

* ``GET /v2`` server metadata; ``GET /v2/health/live``, ``GET /v2/health/ready`` (as ``/health`` and ``/ready``);
* ``GET /v2/models/{name}[/versions/{version}]`` model metadata, ``.../ready`` (200 once loaded, else 503);
* ``POST /v2/models/{name}[/versions/{version}]/infer``.

KServe V1: ``GET /v1/models`` (the model list), ``GET /v1/models/{name}`` (``{"name", "ready"}``) and
``POST /v1/models/{name}:predict`` with ``{"instances": [...]}`` (rows as lists in the input schema's
order, or as objects; ``inputs`` is taken too), answered ``{"predictions": [...]}``.

``{name}`` is the served model's name: ``--model-name``, else the bundle's name; another name is 404.
``{version}``, when given, must be the version serving now (``X-Model-Version``): a version that was
replaced by a reload is 404 too. Inference requests are scored by the same endpoint as ``/predict``
(:class:`scorer.serving.predict.ScoringEndpoint`, with this module's wires), so they queue with the
same coalescer and are micro-batched with ``/predict`` requests. Errors on these paths are shaped as
both protocols shape them, ``{"error": message}`` (:mod:`scorer.serving.http_errors`).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scorer import codecs, open_inference
from scorer._version import __version__
from scorer.core import Scorer
from scorer.errors import MalformedBody, ModelNotFound
from scorer.serving.auth import protected
from scorer.serving.predict import Decoded, Head, ScoringEndpoint, Wire, check_size, with_params
from scorer.serving.state import ServerState
from scorer.settings import Settings
from scorer.table import Table


def model_name(settings: Settings, scorer: Scorer) -> str:
    """The name the protocols serve the model under."""
    return settings.model_name or scorer.bundle.name


def check_model(state: ServerState, scorer: Scorer, name: str, version: str | None) -> str:
    """The served model's name, if ``name`` (and ``version``, when given) is what this server serves;
    :class:`ModelNotFound` otherwise (the HTTP routes and gRPC's, :mod:`scorer.serving.grpc_v2`)."""
    served = model_name(state.settings, scorer)
    if name != served:
        raise ModelNotFound(f"model {name!r} is not served here; this server serves {served!r}")
    if version is not None and version != scorer.version_label:
        raise ModelNotFound(f"version {version!r} of model {name!r} is not served; the serving version is "
                            f"{scorer.version_label!r}")
    return served


def _path_model(head: Head, scorer: Scorer, state: ServerState) -> str:
    params = head.path_params or {}
    return check_model(state, scorer, params.get("name", ""), params.get("version"))


def _header_length(head: Head) -> int | None:
    if head.header_length is None:
        return None
    if not head.header_length.isdigit():
        raise MalformedBody("Inference-Header-Content-Length must be a byte count")
    return int(head.header_length)


def read_infer(body: bytes, header_length: int | None, scorer: Scorer, settings: Settings
               ) -> tuple[Table, open_inference.InferRequest, list[tuple[bytes, bytes]]]:
    """An inference request (REST form: JSON header and binary data) as prepared rows, what its answer must
    look like, and the extra response headers (ignored params); over HTTP and gRPC (:mod:`scorer.serving.grpc_v2`)."""
    columns = list(scorer.schema.columns) if scorer.schema else None
    rows, request = open_inference.read_request(body, header_length, columns, scorer.output_columns)
    check_size(rows, settings)
    prepared, extra = with_params(scorer.prepare(rows), request.params, scorer)
    return prepared, request, extra


def metadata_of(scorer: Scorer, name: str) -> dict[str, Any]:
    """The model's metadata as the protocol gives it (HTTP and gRPC): inputs by the input schema, outputs by
    the answer to the bundle's sample input."""
    inputs = scorer.schema.columns if scorer.schema else None
    sample = scorer.sample_output
    outputs = {c: open_inference.datatype_of(sample[c]) for c in sample.columns} if sample is not None else None
    return open_inference.model_metadata(name, scorer.version_label, inputs, outputs)


def _read_v2(body: bytes, head: Head, name: str, scorer: Scorer, settings: Settings) -> Decoded:
    prepared, request, extra = read_infer(body, _header_length(head), scorer, settings)
    version = scorer.version_label

    def reply(result: Any) -> tuple[bytes, str, list[tuple[bytes, bytes]]]:
        payload, length = open_inference.write_response(result, request, name, version)
        if length is None:
            return payload, codecs.JSON, extra
        return payload, "application/octet-stream", [(b"inference-header-content-length", str(length).encode()), *extra]

    return Decoded(prepared, reply)


def _read_v1(body: bytes, head: Head, name: str, scorer: Scorer, settings: Settings) -> Decoded:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the request is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not ({"instances", "inputs"} & obj.keys()):
        raise MalformedBody('a V1 predict request is {"instances": [...]}')
    columns = list(scorer.schema.columns) if scorer.schema else None
    rows = codecs.table_from_json(obj, columns)
    check_size(rows, settings)
    prepared, extra = with_params(scorer.prepare(rows), rows.params, scorer)
    return Decoded(prepared, lambda result: (codecs.json_predictions(result), codecs.JSON, extra))


V2 = Wire(check=_path_model, read=_read_v2, heavy=lambda body, head: False)
V1 = Wire(check=_path_model, read=_read_v1, heavy=lambda body, head: False)
infer_v2 = ScoringEndpoint(V2)
predict_v1 = ScoringEndpoint(V1)

_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_PREDICT = re.compile(r"/v1/models/([^/:]+):predict")


def scoring_route(path: str) -> tuple[ScoringEndpoint, dict[str, str]] | None:
    """The protocol endpoint and path parameters of a scoring POST to ``path`` (the router's fast path)."""
    match = _INFER.fullmatch(path)
    if match is not None:
        params = {"name": match.group(1)}
        if match.group(2) is not None:
            params["version"] = match.group(2)
        return infer_v2, params
    match = _PREDICT.fullmatch(path)
    if match is not None:
        return predict_v1, {"name": match.group(1)}
    return None


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=codecs.JSON)


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state
    return state


async def server_metadata(request: Request) -> Response:
    return _json({"name": "scorer", "version": __version__, "extensions": list(open_inference.EXTENSIONS)})


async def live(request: Request) -> Response:
    return _json({"live": True})


async def ready(request: Request) -> Response:
    _state(request).ready()
    return _json({"ready": True})


def _loaded_model(request: Request) -> tuple[Scorer, str]:
    state = _state(request)
    scorer, _ = state.loaded()
    params = request.path_params
    return scorer, check_model(state, scorer, params["name"], params.get("version"))


@protected
async def model_metadata(request: Request) -> Response:
    scorer, name = _loaded_model(request)
    return _json(metadata_of(scorer, name))


async def model_ready(request: Request) -> Response:
    """V2's ``.../ready`` and, behind the token, V1's ``GET /v1/models/{name}``: ``{"name", "ready"}``."""
    _state(request).ready()
    _, name = _loaded_model(request)
    return _json({"name": name, "ready": True})


@protected
async def v1_models(request: Request) -> Response:
    scorer, _ = _state(request).loaded()
    return _json({"models": [model_name(_state(request).settings, scorer)]})


v1_model = protected(model_ready)


def _v1_model_route() -> Route:
    """``GET /v1/models/{name}``, whose name has no colon: ``/v1/models/{name}:predict`` is another route,
    so a GET to it is 405 (Starlette's ``str`` convertor would take ``x:predict`` as a name)."""
    route = Route("/v1/models/{name}", v1_model, methods=["GET"])
    route.path_regex = re.compile(r"^/v1/models/(?P<name>[^/:]+)$")
    return route


ROUTES = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2/models/{name}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/infer", infer_v2, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", infer_v2, methods=["POST"]),
    Route("/v1/models", v1_models, methods=["GET"]),
    _v1_model_route(),
    Route("/v1/models/{name}:predict", predict_v1, methods=["POST"]),
]
