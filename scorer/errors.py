"""The one exception tree of scorer, and its two mappings: to HTTP status and to exit code.

::

    ScorerError
    ├── BundleError              the bundle cannot be loaded          (503 if ever served)  exit 3
    │   ├── BundleNotFound         path does not exist / is not a bundle
    │   ├── BundleLayoutError      ambiguous artifacts, bad manifest, unsafe zip, bad class
    │   ├── RequirementsError      requirements.txt pins the environment does not meet
    │   ├── DigestMismatch         operator-pinned digest differs from the bundle's
    │   ├── BundleCodeError        the bundle's own code raised while loading
    │   └── SourceUnavailable      the registry or artifact store cannot be reached
    ├── RequestError             the client sent something we cannot score   (4xx)
    │   ├── MalformedBody          400  not valid JSON / CSV / Parquet / Arrow, bad shape
    │   ├── NotAcceptable          406  Accept asks for a format we cannot produce
    │   ├── PayloadTooLarge        413  body or row count over the configured limit
    │   ├── UnsupportedMediaType   415  Content-Type we do not decode
    │   ├── SchemaError            422  missing columns, values that cannot be coerced
    │   ├── BodyTimeout            408  the body did not arrive within the client timeout
    │   └── ClientDisconnected     499  the client went away before its body arrived (nobody reads it)
    ├── Unauthorized             401  a token is configured and the request lacks it
    ├── ModelError               the model (or bundle code) raised while scoring   500
    │   └── ModelOutputError       output unusable: wrong row count, unsupported type
    ├── NotReady                 the bundle is not loaded (yet), or shutting down   503
    │   └── Overloaded             the queue is full: come back later              503
    ├── RequestTimeout           not answered within the request timeout           504
    ├── ReloadRejected           a new model version failed its checks: the old one serves on   409
    └── BatchError               ``scorer batch`` cannot do (part of) its job      exit 5
        ├── UsageError             the command cannot run as given; nothing written  exit 2
        ├── ReadError              a file (not a row) cannot be read: fails that file
        ├── KeepColumnsError       --keep-columns names a column the input lacks: fails that file
        └── BatchFailed            the (Spark) job fails with this one line, raised in a task or the driver

and, on the other side of the wire, what :class:`scorer.Client` raises (never a server: not in the tables)::

    ScorerError
    └── ScorerClientError        an error answer (status, the server's code, message, request id, body), or none
        └── ClientTimeout          no answer within the client's timeout

Transports never pick status codes themselves: they call :func:`http_status`; commands never pick
exit codes for an error themselves: they call :func:`exit_code` (a bundle that fails to load is a
:class:`BundleError`, so exit :data:`EXIT_LOAD_FAILED` wherever it happens).

``message`` never carries request data: it names the column, row and expected type, or the class of
what a model raised. Text that may carry data (the offending value, a model exception's own message)
is kept apart in ``data_detail`` and shown only through :meth:`ScorerError.describe` with the
operator's opt-in (``--echo-bad-values``, for development). The batch errors hold to it too: they
name files, flags, columns and rows; a bad row's values go to the rejects file, never to a message.
"""

from __future__ import annotations


class ScorerError(Exception):
    """Root of every error scorer raises on purpose. ``code`` is a stable machine-readable name."""

    code = "scorer_error"

    def __init__(self, message: str, *, data_detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data_detail = data_detail  # may carry request data: only ever shown by describe(echo=True)

    def describe(self, echo: bool = False) -> str:
        """The message, plus the data-bearing detail when ``echo`` (the operator's opt-in) is on."""
        return f"{self.message}: {self.data_detail}" if echo and self.data_detail else self.message


class BundleError(ScorerError):
    code = "bundle_error"


class BundleNotFound(BundleError):
    code = "bundle_not_found"


class BundleLayoutError(BundleError):
    code = "bundle_layout_error"


class RequirementsError(BundleError):
    code = "requirements_not_met"


class DigestMismatch(BundleError):
    code = "digest_mismatch"


class BundleCodeError(BundleError):
    code = "bundle_code_error"


class SourceUnavailable(BundleError):
    """The model's source cannot be reached (the MLflow tracking server, the artifact store): a serving
    version keeps serving; at start it is a load failure."""

    code = "source_unavailable"


class RequestError(ScorerError):
    code = "bad_request"


class MalformedBody(RequestError):
    code = "malformed_body"


class NotAcceptable(RequestError):
    code = "not_acceptable"


class PayloadTooLarge(RequestError):
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"


class SchemaError(RequestError):
    code = "schema_error"

    def __init__(self, message: str, *, columns: list[str] | None = None, detail: str | None = None,
                 data_detail: str | None = None) -> None:
        super().__init__(message, data_detail=data_detail)
        self.columns = columns or []
        self.detail = detail  # the problem without its row number, e.g. "a str value is not a number"


class BodyTimeout(RequestError):
    code = "body_timeout"


class ClientDisconnected(RequestError):
    code = "client_disconnected"


class ModelNotFound(RequestError):
    """A protocol route names a model (or a version) this server does not serve."""

    code = "model_not_found"


class ModelError(ScorerError):
    code = "model_error"

    @classmethod
    def wrap(cls, exc: BaseException, where: str = "predict") -> ModelError:
        """A ModelError naming the original exception's class; its own text (which may quote the data
        it choked on) is the ``data_detail``, shown only with the opt-in. Never its traceback."""
        err = cls(f"model raised {type(exc).__name__} in {where}", data_detail=str(exc) or None)
        err.__cause__ = exc
        return err


class ModelOutputError(ModelError):
    code = "model_output_error"


class NotReady(ScorerError):
    code = "not_ready"


class Overloaded(NotReady):
    code = "overloaded"


class RequestTimeout(ScorerError):
    code = "timeout"


class Unauthorized(ScorerError):
    code = "unauthorized"


class ReloadRejected(ScorerError):
    """A new version of the model was not swapped in (it failed to load, its smoke test, or was still
    changing): the serving version keeps serving. The message names the cause."""

    code = "reload_rejected"


class BatchError(ScorerError):
    """``scorer batch`` cannot do what it was asked: a file, or the whole job, fails."""

    code = "batch_error"


class UsageError(BatchError):
    """The command cannot run as given (flags, paths, the input's layout); nothing has been written."""

    code = "usage_error"


class ReadError(BatchError):
    """A file (not a row) cannot be read: not the format its name says, truncated, unreadable. The message
    carries the reader's own text: it describes the file's form (magic bytes, encoding, truncation),
    never a row's values (a malformed row is a bad row, not a ReadError)."""

    code = "read_error"


class KeepColumnsError(BatchError):
    """``--keep-columns`` names column(s) a file does not have: that file fails (or, for the Spark engine,
    which checks it before any job, the command: a :class:`UsageError`)."""

    code = "keep_columns_error"


class StoreError(BatchError):
    """The object store a batch job writes to failed while it wrote (unreachable, refused, or the job's lock
    taken over): the job stops, naming the object; what was committed stays committed and a rerun resumes."""

    code = "store_error"


class BatchFailed(BatchError):
    """The whole (Spark) job fails with this one-line message: raised on the driver, or in an executor's
    task. Spark passes only the text of a task's error to the driver, so ``str()`` starts with
    :attr:`MARKER`, by which the driver finds the line again in Spark's (multi-line, nested) error text."""

    code = "batch_failed"
    MARKER = "scorer batch failed: "

    def __str__(self) -> str:
        return self.MARKER + self.message


class ScorerClientError(ScorerError):
    """:class:`scorer.Client`'s call failed: the server answered ``status`` with its error ``code``,
    ``message`` and ``request_id`` (``body``: the answer's raw bytes), after ``attempts`` requests; or no
    answer came (``status`` None; ``code`` ``connection_refused``, ``connection_error`` or ``timeout``).
    ``code`` is the server's, per instance."""

    code = "client_error"

    def __init__(self, status: int | None, code: str, message: str, *, request_id: str | None = None,
                 body: bytes = b"", attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.body = body
        self.attempts = attempts

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        request = f" (request {self.request_id})" if self.request_id else ""
        return f"{where}{self.code}: {self.message}{request}"


class ClientTimeout(ScorerClientError):
    """No answer within :class:`scorer.Client`'s timeout (one socket operation took longer)."""

    code = "timeout"

    def __init__(self, message: str) -> None:
        super().__init__(None, "timeout", message)


#: The only place an error class meets an HTTP status. Looked up along the MRO.
HTTP_STATUS: dict[type[ScorerError], int] = {
    ScorerError: 500,
    BundleError: 503,
    RequestError: 400,
    MalformedBody: 400,
    NotAcceptable: 406,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    SchemaError: 422,
    ModelNotFound: 404,
    ClientDisconnected: 499,
    BodyTimeout: 408,
    ModelError: 500,
    NotReady: 503,
    RequestTimeout: 504,
    Unauthorized: 401,
    ReloadRejected: 409,
}


def http_status(exc: BaseException) -> int:
    """HTTP status for any exception: ours by the table above, anything else 500."""
    for klass in type(exc).__mro__:
        status = HTTP_STATUS.get(klass)
        if status is not None:
            return status
    return 500


#: Exit codes of the commands: every file scored; usage or input error (nothing written); the bundle
#: failed to load; every file committed but rows rejected (a result, not an error); the job failed.
EXIT_OK, EXIT_USAGE, EXIT_LOAD_FAILED, EXIT_REJECTED, EXIT_FAILED = 0, 2, 3, 4, 5

#: The only place an error class meets an exit code. Looked up along the MRO.
EXIT_CODE: dict[type[ScorerError], int] = {
    ScorerError: EXIT_FAILED,
    BundleError: EXIT_LOAD_FAILED,
    BatchError: EXIT_FAILED,
    UsageError: EXIT_USAGE,
}


def exit_code(exc: BaseException) -> int:
    """Exit code for any exception: ours by the table above, anything else :data:`EXIT_FAILED`."""
    for klass in type(exc).__mro__:
        code = EXIT_CODE.get(klass)
        if code is not None:
            return code
    return EXIT_FAILED
