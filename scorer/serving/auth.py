"""The optional bearer token (``auth_token`` / ``SCORER_AUTH_TOKEN``) and the routes it guards.

Guarded: scoring, ``/metadata``, ``/metrics`` and ``/openapi.json`` (it names the input columns and
their types, as ``/metadata`` does); ``/health``, ``/ready``, ``/ping`` and ``/execution-parameters`` stay open
for probes and SageMaker.
The check is made by the guarded endpoints (a Starlette endpoint through :func:`protected`), not by
the request-context layer: it applies to some routes only, after the router has matched the method
(``GET /predict`` is 405 with or without a token), and scoring says "not ready" (503) before it
asks for a token, as it always has.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from scorer.errors import Unauthorized


def check_token(expected: str | None, authorization: str | None, token: str | None) -> None:
    """With a token ``expected``, ``Authorization: Bearer <t>`` or the vendor's ``token: <t>`` header
    must carry it (compared in constant time); raises :class:`Unauthorized` otherwise."""
    if not expected:
        return
    given = token
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
    if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
        raise Unauthorized("missing or wrong token: send Authorization: Bearer <token> or a token header")


Endpoint = Callable[[Request], Awaitable[Response]]


def protected(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answered only with the token (when one is configured)."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        check_token(request.app.state.settings.auth_token, request.headers.get("authorization"),
                    request.headers.get("token"))
        return await endpoint(request)

    return guarded
