"""How an exception becomes an HTTP error response: the one place.

Every error the server answers with, on every route, is built here: the status comes from
:func:`scorer.errors.http_status` (the router's own 404 and 405 keep theirs), the body is
``{"error", "message", "error_code", "request_id"}`` (plus ``columns`` for a schema error), and the extra
headers follow from the status. ``error_code`` is MLflow's name for the status (:data:`MLFLOW_ERROR_CODES`:
a code MLflow's ``MlflowException`` maps back to the same status, or for a status MLflow has no code
for, the 4xx it treats as the client's fault: ``BAD_REQUEST``, or ``INVALID_PARAMETER_VALUE`` for a
schema error as MLflow's schema enforcement names it), so MLflow clients read our errors as MLflow's. On the Open Inference Protocol's and KServe V1's
paths (``/v2/...``, ``/v1/...``) the body is shaped as theirs: ``{"error": message}`` (plus ``code``
and ``request_id``), which their clients (``tritonclient``, KServe's) show as the error's message. :class:`scorer.serving.context.RequestContext` is the only caller: endpoints
just raise.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from scorer._logging import request_id
from scorer.errors import NotReady, ScorerError, http_status

log = logging.getLogger(__name__)

_ROUTER_CODES = {404: "not_found", 405: "method_not_allowed"}

#: HTTP status -> MLflow's error code for it (``mlflow.protos.databricks_pb2``).
MLFLOW_ERROR_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "ENDPOINT_NOT_FOUND",
    405: "BAD_REQUEST", 406: "BAD_REQUEST", 408: "BAD_REQUEST", 409: "ABORTED", 413: "BAD_REQUEST",
    415: "BAD_REQUEST", 422: "INVALID_PARAMETER_VALUE", 429: "REQUEST_LIMIT_EXCEEDED", 499: "CANCELLED",
    500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def is_protocol_path(path: str) -> bool:
    """Whether errors on ``path`` take the inference protocols' shape."""
    return path.startswith(("/v2/", "/v1/")) or path == "/v2"


def _body(status: int, code: str, message: str, protocol: bool) -> dict[str, Any]:
    if protocol:
        return {"error": message, "code": code, "request_id": request_id.get()}
    return {"error": code, "message": message, "error_code": MLFLOW_ERROR_CODES.get(status, "INTERNAL_ERROR"),
            "request_id": request_id.get()}


def error_parts(exc: BaseException, *, echo: bool = False, protocol: bool = False
                ) -> tuple[int, bytes, dict[str, str] | None]:
    """Status, JSON body and extra headers for ``exc``. ``echo`` (``--echo-bad-values``) adds the
    error's data-bearing detail (an offending value, a model exception's text) to the body and the log
    line; ``protocol``: the body in the inference protocols' shape (see the module's docstring)."""
    if isinstance(exc, HTTPException):  # the router's: no such route (404), not this method (405, with Allow)
        code = _ROUTER_CODES.get(exc.status_code, "http_error")
        routing = _body(exc.status_code, code, exc.detail, protocol)
        return exc.status_code, orjson.dumps(routing), dict(exc.headers) if exc.headers else None
    status = http_status(exc)
    if isinstance(exc, ScorerError):
        code, message = exc.code, exc.describe(echo)
        if status >= 500:  # not loaded yet is what readiness probes are for: not worth a warning each time
            (log.debug if type(exc) is NotReady else log.warning)("%s: %s", code, message)
    else:
        _log_unexpected(exc, echo)
        code, message = "internal_error", f"internal error: {type(exc).__name__}"
    body = _body(status, code, message, protocol)
    columns = getattr(exc, "columns", None)
    if columns:
        body["columns"] = columns
    extra = {"Retry-After": "1"} if status == 503 else {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status in (408, 413):  # the body may be unread (or still trickling in): do not keep the connection
        extra = {"Connection": "close"}
    return status, orjson.dumps(body), extra


def _log_unexpected(exc: BaseException, echo: bool) -> None:
    """A bug of ours: its traceback is logged, but an exception's text can quote the request's data, so
    without the opt-in the log gets the class and the frames only."""
    if echo:
        log.error("unexpected error", exc_info=exc)
        return
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-5:]))
    log.error("unexpected error %s at %s", type(exc).__name__, where or "?")
