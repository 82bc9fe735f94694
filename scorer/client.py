"""``scorer.Client``: score a pandas DataFrame on a running ``scorer serve`` (or an MLflow-protocol peer).

::

    import scorer

    with scorer.Client("http://127.0.0.1:8080", token="s3cret") as client:
        predictions = client.predict(frame)  # a DataFrame, one row per input row
        client.metadata()                    # GET /metadata: bundle, schema, versions

**Wire format.** Arrow IPC stream both ways by default (``format="arrow"``): the frame's columns go out
as Arrow buffers and come back as Arrow buffers, so nothing is printed to or parsed from text. If the
server answers 415 (it does not decode Arrow bodies) or 406 (it cannot answer in Arrow) the same frame is
sent again as JSON, and this client speaks JSON from then on (:attr:`Client.format` says which). JSON
(``format="json"``) is MLflow's ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``, which scorer
and MLflow's scoring server both read; floats are written by orjson in full (shortest round-trip form),
so both formats give the model the same values. A JSON reply of scalars (``{"predictions": [...]}``,
one output column) becomes the column the Arrow reply would name: the single entry of the server's
``output_columns`` (``GET /metadata``, asked once and remembered), else ``prediction`` (the name scorer
gives a model's 1-D output); rows of objects become one column per key, in the first row's order.

**Path.** ``POST /invocations`` by default: scorer answers it as ``/predict``, and it is the path every
MLflow-protocol (and SageMaker) scoring server has, so a fallback to a peer works unchanged.

**Retries** (:class:`RetryPolicy`): only when the request was certainly not scored, so a retry never
scores twice: a ``503`` (the bundle is still loading, or the queue is full), after the server's
``Retry-After`` (capped at ``max_wait_s``; exponential back-off from ``backoff_s`` without one), and a
refused connection (the server process is starting: nothing listens yet), after the back-off. At most
``retries`` retries, and none whose wait would end later than ``deadline_s`` after the call began; then
the last answer's :class:`ScorerClientError` is raised. Never a 4xx, a 500 or a 504: they would answer
the same again, or the model may be running still. A keep-alive connection the server closed while idle
is reopened and the request sent once more at once, not counted as a retry (the server never saw it).

**Errors**: one exception, :class:`scorer.errors.ScorerClientError`, with the HTTP status, the server's
error ``code``, ``message`` and ``request_id`` and the raw ``body``; ``status`` is ``None`` when no
answer came (``code`` ``connection_refused``, ``connection_error``, or ``timeout`` for
:class:`scorer.errors.ClientTimeout`, raised when one socket operation, connecting or waiting for the
answer, takes longer than ``timeout`` seconds; the connection is then closed).

**Why the standard library's http.client.** scorer's runtime dependencies hold no HTTP client (requests
and httpx are test dependencies only), and one keep-alive connection per thread, which is all a scoring
client needs, is a few lines over ``http.client``: a one-row call then costs a request and its answer on
an open connection, nothing else (no pool bookkeeping, no new dependency in the images). Connections
are per thread, so one Client may be shared by threads. ``http://`` and ``https://`` URLs.

Importing this module costs pyarrow's IPC and orjson; ``import scorer`` imports it only when
``scorer.Client`` is first used.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.client
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from scorer._version import __version__
from scorer.errors import ClientTimeout, ScorerClientError

JSON = "application/json"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: Answers that mean "this server does not speak Arrow" (the request body, the reply): resend as JSON.
FALLBACK_STATUSES = frozenset({406, 415})
#: The column scorer names a model's 1-D output (scorer.preprocessor's contract).
DEFAULT_OUTPUT = "prediction"

Format = Literal["arrow", "json"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When :class:`Client` sends a request again (see the module docstring): at most ``retries`` times,
    within ``deadline_s`` of the call's start, waiting ``Retry-After`` (at most ``max_wait_s``) or the
    back-off ``backoff_s * 2**n`` (at most ``max_wait_s``)."""

    retries: int = 3
    deadline_s: float = 30.0
    max_wait_s: float = 10.0
    backoff_s: float = 0.1

    def __post_init__(self) -> None:
        if self.retries < 0 or self.deadline_s < 0 or self.max_wait_s < 0 or self.backoff_s < 0:
            raise ValueError("RetryPolicy values must not be negative")

    def wait_s(self, retry: int, retry_after: str | None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based), from the server's ``Retry-After`` if any."""
        seconds = _retry_after_s(retry_after)
        if seconds is None:
            seconds = self.backoff_s * 2**retry
        return min(max(seconds, 0.0), self.max_wait_s)


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


@dataclasses.dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    attempts: int = 1  # requests sent for it (retries + 1)


class Client:
    """A scoring client of one server: ``predict(frame)``, ``metadata()``. Close it (or use ``with``)
    to close its connections.

    ``url``: the server's base URL (``http://host:port``, a path prefix allowed). ``token``: sent as
    ``Authorization: Bearer <token>``. ``timeout``: seconds for each socket operation (connecting,
    sending, waiting for the answer). ``retries``: a count or a :class:`RetryPolicy`. ``format``:
    ``"arrow"`` (falls back to JSON on 415/406) or ``"json"``. ``path``: the scoring route.
    ``headers``: more headers for every request (a proxy's, a request id).
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0,
                 retries: int | RetryPolicy = 3, format: Format = "arrow", path: str = "/invocations",
                 headers: Mapping[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http://host[:port] or https://host[:port], not {url!r}")
        if format not in ("arrow", "json"):
            raise ValueError(f"format must be 'arrow' or 'json', not {format!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self.path = path if path.startswith("/") else "/" + path
        self.timeout = timeout
        self.retry = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self.format: Format = format
        self._headers = {"User-Agent": f"scorer-client/{__version__}", **(headers or {})}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []  # every thread's, for close()
        self._lock = threading.Lock()
        self._single_output: str | None = None  # the one output column's name, once the server told it

    # --- the API ------------------------------------------------------------------------------

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score ``frame`` (one prediction row per row, the server's output columns, a fresh RangeIndex).
        Raises :class:`ScorerClientError` on an error answer or when no answer came."""
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"predict takes a pandas DataFrame, not {type(frame).__name__}")
        if self.format == "arrow":
            body = _arrow_body(frame)
            if body is not None:  # None: a column Arrow cannot hold (mixed objects); that frame goes as JSON
                answer = self._send("POST", self.path, body, {"Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM})
                if answer.status not in FALLBACK_STATUSES:
                    return self._frame(self._checked(answer))
                self.format = "json"  # this server does not speak Arrow: JSON from now on
        answer = self._send("POST", self.path, _json_body(frame), {"Content-Type": JSON, "Accept": JSON})
        return self._frame(self._checked(answer))

    def metadata(self) -> dict[str, Any]:
        """``GET /metadata``: the bundle's name, version, digest, input schema, output columns, versions."""
        answer = self._checked(self._send("GET", "/metadata", None, {"Accept": JSON}))
        meta = _json(answer)
        if not isinstance(meta, dict):
            raise ScorerClientError(answer.status, "bad_answer", "GET /metadata did not answer a JSON object",
                                    body=answer.body)
        return meta

    def close(self) -> None:
        """Close every thread's connection (a later call opens a new one)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        port = f":{self._port}" if self._port else ""
        return f"Client('{self._scheme}://{self._host}{port}{self._prefix}', format={self.format!r})"

    # --- replies to frames --------------------------------------------------------------------

    def _frame(self, answer: _Answer) -> pd.DataFrame:
        media = answer.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == ARROW_STREAM:
            try:
                table = pa.ipc.open_stream(answer.body).read_all()
            except (pa.ArrowException, OSError) as exc:
                raise ScorerClientError(answer.status, "bad_answer", f"the Arrow answer could not be read: {exc}",
                                        body=answer.body) from None
            return table.to_pandas()
        obj = _json(answer)
        predictions = obj.get("predictions") if isinstance(obj, dict) else obj
        if not isinstance(predictions, list):
            raise ScorerClientError(answer.status, "bad_answer", 'the answer holds no "predictions" list',
                                    body=answer.body)
        if predictions and all(isinstance(p, dict) for p in predictions):
            names = list(predictions[0])
            return pd.DataFrame({n: [p.get(n) for p in predictions] for n in names})
        return pd.DataFrame({self._output_name(): predictions})

    def _output_name(self) -> str:
        """The name the Arrow answer would give a single output column (asked of /metadata once)."""
        if self._single_output is not None:
            return self._single_output
        try:
            outputs = self.metadata().get("output_columns")
        except ScorerClientError as exc:
            if exc.status in (404, 405):  # no /metadata: a peer, whose 1-D output scorer would name so
                self._single_output = DEFAULT_OUTPUT
            return DEFAULT_OUTPUT
        if isinstance(outputs, list) and len(outputs) == 1:
            self._single_output = str(outputs[0])
            return self._single_output
        return DEFAULT_OUTPUT  # not known yet (no call scored on that worker): ask again next time

    # --- HTTP -----------------------------------------------------------------------------------

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it was used before (a stale keep-alive may be closed)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            return conn, True
        if conn is None:
            kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = kind(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn, False

    def _exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> _Answer:
        """One request and its answer; a reused connection the server had closed is reopened once."""
        for attempt in range(2):
            conn, reused = self._connection()
            try:
                if conn.sock is None:
                    conn.connect()
                    # One-row requests are a few hundred bytes: do not let Nagle hold them back.
                    if conn.sock is not None:
                        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.request(method, self._prefix + path, body=body, headers={**self._headers, **headers})
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError:
                conn.close()
                raise ClientTimeout(f"no answer within the timeout of {self.timeout:g} s ({method} {path})") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed the idle connection: it never saw this request
                raise ScorerClientError(None, "connection_error", f"the connection broke: {type(exc).__name__}") from None
            except ConnectionRefusedError:
                conn.close()
                raise
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise ScorerClientError(None, "connection_error",
                                        f"{method} {path} failed: {type(exc).__name__}: {exc}") from None
            if resp.will_close:
                conn.close()
            return _Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> _Answer:
        """``_exchange`` with the retry policy: 503 and refused connections are sent again."""
        start = time.monotonic()
        retry = 0
        while True:
            try:
                answer = self._exchange(method, path, body, headers)
            except ConnectionRefusedError:
                failure: ScorerClientError | _Answer = ScorerClientError(
                    None, "connection_refused", f"nothing listens at {self._host}:{self._port}", attempts=retry + 1)
                wait = self.retry.wait_s(retry, None)
            else:
                if retry:
                    answer = dataclasses.replace(answer, attempts=retry + 1)
                if answer.status != 503:
                    return answer
                failure = answer
                wait = self.retry.wait_s(retry, answer.headers.get("retry-after"))
            if retry >= self.retry.retries or time.monotonic() - start + wait > self.retry.deadline_s:
                raise failure if isinstance(failure, ScorerClientError) else _error(failure)
            time.sleep(wait)
            retry += 1

    def _checked(self, answer: _Answer) -> _Answer:
        if 200 <= answer.status < 300:
            return answer
        raise _error(answer)


def _error(answer: _Answer) -> ScorerClientError:
    """The exception for an error answer: scorer's JSON error body read, any other body kept as text."""
    code, message, request_id = f"http_{answer.status}", "", answer.headers.get("x-request-id")
    try:
        obj = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("message"), str):
        code = str(obj.get("error") or code)
        message = obj["message"]
        request_id = str(obj.get("request_id") or request_id or "") or None
    else:
        text = answer.body.decode("utf-8", "replace").strip()
        message = text if len(text) <= 500 else text[:500] + "..."
    return ScorerClientError(answer.status, code, message or http.client.responses.get(answer.status, "error"),
                             request_id=request_id, body=answer.body, attempts=answer.attempts)


def _json(answer: _Answer) -> Any:
    try:
        return orjson.loads(answer.body)
    except orjson.JSONDecodeError as exc:
        raise ScorerClientError(answer.status, "bad_answer", f"the answer is not JSON: {exc}", body=answer.body) from None


# --- frames to bodies ---------------------------------------------------------------------------


def _arrow_body(frame: pd.DataFrame) -> bytes | None:
    """The frame as an Arrow IPC stream (no pandas index or metadata), or None if Arrow cannot hold it.
    Column by column (``Table.from_pandas`` also builds the pandas metadata the server drops anyway), from
    the numpy array where the column is one (half the cost of converting the Series), else the Series."""
    try:
        arrays = []
        for _, column in frame.items():  # not iloc[:, i]: a third of the cost, duplicate names alike
            values = column.to_numpy() if isinstance(column.dtype, np.dtype) else column
            arrays.append(pa.array(values, from_pandas=True))
        table = pa.Table.from_arrays(arrays, names=[str(c) for c in frame.columns])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _json_value(value: Any) -> Any:
    """What orjson does not write itself: pandas' missing values, timestamps, numpy scalars."""
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _json_body(frame: pd.DataFrame) -> bytes:
    """MLflow's ``dataframe_split`` envelope, which scorer and MLflow's server both read. Missing values
    (NaN, None, NA) are ``null``; floats are written in full."""
    columns = [str(c) for c in frame.columns]
    values = [column.tolist() for _, column in frame.items()]
    rows = list(zip(*values)) if values else [() for _ in range(len(frame))]
    return orjson.dumps({"dataframe_split": {"columns": columns, "data": rows}}, default=_json_value)
