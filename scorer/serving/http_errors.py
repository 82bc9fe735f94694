"""How an exception becomes an HTTP error response: the one place.

Every error the server answers with, on every route, is built here: the status comes from
:func:`scorer.errors.http_status` (the router's own 404 and 405 keep theirs), the body is
``{"error", "message", "request_id"}`` (plus ``columns`` for a schema error), and the extra headers
follow from the status. :class:`scorer.serving.context.RequestContext` is the only caller: endpoints
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


def error_parts(exc: BaseException, *, echo: bool = False) -> tuple[int, bytes, dict[str, str] | None]:
    """Status, JSON body and extra headers for ``exc``. ``echo`` (``--echo-bad-values``) adds the
    error's data-bearing detail (an offending value, a model exception's text) to the body and the log line."""
    if isinstance(exc, HTTPException):  # the router's: no such route (404), not this method (405, with Allow)
        code = _ROUTER_CODES.get(exc.status_code, "http_error")
        routing = {"error": code, "message": exc.detail, "request_id": request_id.get()}
        return exc.status_code, orjson.dumps(routing), dict(exc.headers) if exc.headers else None
    status = http_status(exc)
    if isinstance(exc, ScorerError):
        code, message = exc.code, exc.describe(echo)
        if status >= 500:  # not loaded yet is what readiness probes are for: not worth a warning each time
            (log.debug if type(exc) is NotReady else log.warning)("%s: %s", code, message)
    else:
        _log_unexpected(exc, echo)
        code, message = "internal_error", f"internal error: {type(exc).__name__}"
    body: dict[str, Any] = {"error": code, "message": message, "request_id": request_id.get()}
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
