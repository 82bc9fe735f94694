"""One frozen settings object. Every field is an env var ``SCORER_<NAME>`` and a CLI flag ``--<name>``.

Precedence: CLI flag > environment > default. Unknown ``SCORER_*`` variables are rejected so
that a typo (``SCORER_PROT=9000``) is an error, not a silently ignored setting. Nothing here
reads the environment at import time: call :meth:`Settings.from_env`.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

ENV_PREFIX = "SCORER_"

# The settings with fixed choices: the type lists them (CLI and SCORER_* values are checked against it).
ExtraColumns = Literal["drop", "reject"]
OutputFormat = Literal["same", "csv", "csv.gz", "parquet", "jsonl", "arrow"]
BadRows = Literal["fail", "reject"]
MojoBackend = Literal["genmodel", "spark"]
SparkScoring = Literal["auto", "native", "spark"]
ScoringPlan = Literal["auto", "off", "require"]
Engine = Literal["local", "spark"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]
TracingMode = Literal["off", "otlp"]


def _setting(default: Any, doc: str, *, choices: object = None, kind: type[Any] | None = None) -> Any:
    """A field with its documentation; ``choices``: the field's ``Literal`` type, whose values alone are allowed;
    ``kind``: the type a value is parsed to when the default (None) does not say."""
    allowed = get_args(choices) if choices is not None else None
    return field(default=default, metadata={"doc": doc, "choices": allowed, "kind": kind or type(default)})


@dataclass(frozen=True, kw_only=True)
class Settings:
    bundle: str = _setting("/model", "Bundle folder or .zip to load (positional argument of the CLI).")
    host: str = _setting("127.0.0.1", "Interface to bind. The container image passes 0.0.0.0 explicitly.")
    port: int = _setting(8080, "TCP port to listen on.")
    workers: int = _setting(
        0, "Processes. serve: forked after one load, sharing the model's memory. 0: serve uses 1, batch uses every core "
        "this process may use (its CPU affinity, capped by its cgroup CPU quota)."
    )
    model_name: str = _setting(
        "", "serve: the model's name on the Open Inference Protocol and KServe V1 routes (/v2/models/{name}/...). "
        "Empty: the bundle's name."
    )
    max_batch_rows: int = _setting(
        4096, "Most rows coalesced into one model call. A bigger single request still runs alone."
    )
    max_batch_wait_ms: float = _setting(
        0.0,
        "How long a model call waits for more requests to join it. 0: never wait; requests that "
        "arrive while the model is busy are batched anyway, so idle latency costs nothing.",
    )
    max_queue_rows: int = _setting(
        100_000, "Most rows waiting for the model; beyond it requests get 503 with Retry-After at once."
    )
    request_timeout_s: float = _setting(
        60.0, "A request not answered within this many seconds gets 504 (and is not scored later)."
    )
    client_timeout_s: float = _setting(
        30.0, "A request's headers, and then its body, must arrive within this many seconds (slow clients are cut off)."
    )
    shutdown_grace_s: float = _setting(
        30.0, "After SIGTERM and the drain window, how long in-flight requests may take to finish; a model call hung "
        "longer is abandoned."
    )
    drain_s: float = _setting(
        5.0, "After SIGTERM, how long /predict keeps accepting (readiness is 503 at once) before the server stops "
        "accepting and finishes in-flight work; cover your load balancer's endpoint removal (or 0 with a preStop sleep).",
    )
    reload_interval: float = _setting(
        10.0, "serve: seconds between checks of the model source for a new version (a changed folder, .zip, "
        "symlink or registry alias), loaded beside the serving one and swapped in without downtime. 0: no polling "
        "(SIGHUP and POST /admin/reload still reload).",
    )
    auth_token: str = _setting(
        "", "If set, scoring, /metadata, /metrics, /openapi.json and POST /admin/reload (which exists only then) need Authorization: Bearer <token> (or a token header)."
    )
    max_body_bytes: int = _setting(
        64 * 1024 * 1024,
        "Largest request body accepted (413 above); a Parquet or Arrow body may not decode to more than this either.",
    )
    max_request_rows: int = _setting(
        1_000_000, "Most rows accepted in one request (413 above; CSV, Parquet, Arrow: checked before decoding)."
    )
    max_columns: int = _setting(
        10_000, "Most columns accepted in one request (413 above; CSV, Parquet, Arrow: checked before decoding)."
    )
    extra_columns: ExtraColumns = _setting(
        "drop", "What to do with input columns not in the schema.", choices=ExtraColumns
    )
    echo_bad_values: bool = _setting(
        False, "Development only: error bodies and logs also quote the offending value and a model exception's "
        "own text (off: they name the column, row, expected type and exception class, never request data).",
    )
    check_requirements: bool = _setting(True, "Check the bundle's requirements.txt at load time.")
    install_requirements: bool = _setting(
        False, "Install the bundle's unmet requirements at load time with pip (needs a reachable package index)."
    )
    requirements_cache: str = _setting(
        "", "Private directory (0700, this uid's) for install_requirements, reused across restarts once checked "
        "against pip's RECORD files; refused otherwise. Empty: <tmp>/scorer-requirements-<uid>."
    )
    bundle_digest: str = _setting(
        "", "Expected sha256 content digest of the bundle, checked before any code or pickle is loaded."
    )
    input: str = _setting("", "batch: input file, or a directory walked recursively.")
    output: str = _setting("", "batch: output directory (mirrors the input's relative paths).")
    output_format: OutputFormat = _setting(
        "same", "batch: output format.", choices=OutputFormat
    )
    chunk_rows: int = _setting(65536, "batch: rows per chunk (per model call); bounds memory.")
    max_inflight_mb: int = _setting(
        64, "batch: most MiB of chunks (Arrow size) read but not yet written while workers score them; "
        "with the per-process baselines this bounds memory (docs/batch-contract.md).",
    )
    keep_columns: str = _setting(
        "all", "batch: input columns kept beside the predictions: all, none, or a comma-separated list (ids)."
    )
    bad_rows: BadRows = _setting(
        "fail", "batch: a bad row fails its file, or is written to <output>.rejects.jsonl.",
        choices=BadRows,
    )
    max_rejected_rows: int = _setting(1000, "batch: with bad_rows=reject, a file with more rejected rows fails.")
    shard_count: int = _setting(
        1, "batch: split the input files into this many shards, each scored by its own `scorer batch` (a pod of a "
        "Kubernetes Indexed Job) into the same output; the last to finish writes manifest.json and _SUCCESS.",
    )
    shard_index: int | None = _setting(
        None, "batch: which shard this run scores, 0 to shard_count - 1. None: JOB_COMPLETION_INDEX (what an "
        "Indexed Job sets in each pod) when shard_count > 1.", kind=int,
    )
    overwrite: bool = _setting(False, "batch: replace an output written with another bundle or settings.")
    lock_seconds: float = _setting(
        60.0, "batch: the output's lock is abandoned (taken over by another run) when not renewed for this long; "
        "a run renews it every third of it.",
    )
    mojo_backend: MojoBackend = _setting(
        "genmodel", "H2O MOJO bundles: genmodel (the MOJO's Java predictor on the whole batch, lowest latency) "
        "or spark (pysparkling's H2OMOJOModel on a Spark DataFrame).", choices=MojoBackend,
    )
    spark_scoring: SparkScoring = _setting(
        "auto", "Spark ML pipelines and H2O MOJOs: native (numpy, no JVM; the load fails naming what native "
        "scoring lacks), spark (the JVM: a local SparkSession for pipelines, --mojo-backend for MOJOs) or auto "
        "(native when every stage is supported and, where the JVM path is installed, the bundle's sample scores "
        "the same on both; else the JVM, and the log and /metadata say why).", choices=SparkScoring,
    )
    scoring_plan: ScoringPlan = _setting(
        "auto", "scikit-learn pipelines: auto (compiled to a numpy scoring plan when every step compiles and the plan "
        "answers the bundle's sample and edge rows as scikit-learn does; else scikit-learn, and the log and /metadata "
        "say which step and why), require (the same, but no plan fails the load) or off (scikit-learn).",
        choices=ScoringPlan,
    )
    plan_cache: str = _setting(
        "", "Directory of stored scoring plans (data only: JSON and numpy arrays), keyed by bundle digest and "
        "versions; a stored plan loads without scikit-learn. Private (0700, this uid's) when written; one baked "
        "into an image is read when only root or this uid can change it. Empty: <tmp>/scorer-plans-<uid>."
    )
    engine: Engine = _setting(
        "local", "batch: local (this machine, a process per core) or spark (a Spark cluster; writes a Spark dataset).",
        choices=Engine,
    )
    spark_master: str = _setting(
        "", "batch --engine spark: master URL (spark://host:7077, k8s://..., yarn, local[4]). Empty: spark-submit's, "
        "else local[N], N the cores this process may use (CPU quota included)."
    )
    log_level: LogLevel = _setting("info", "Log level.", choices=LogLevel)
    log_format: LogFormat = _setting("json", "Log line format.", choices=LogFormat)
    payload_log: str = _setting(
        "", "serve: log scoring requests and responses (request data leaves the process). Empty: off; an http:// "
        "or https:// URL: CloudEvents POSTed to it as KServe's logger sends them; - : JSON Lines on stdout; else a "
        "file path, JSON Lines appended.",
    )
    payload_log_sample: float = _setting(
        1.0, "serve, with payload_log: the fraction of scoring requests logged (request and response both or neither)."
    )
    payload_log_queue: int = _setting(
        1000, "serve, with payload_log: most events waiting to be sent; beyond it (or payload_log_queue_mb) they "
        "are dropped and counted, never waited for.",
    )
    payload_log_queue_mb: int = _setting(
        64, "serve, with payload_log: most MiB of payloads waiting to be sent; beyond it events are dropped and counted."
    )
    payload_log_source: str = _setting(
        "", "serve, with payload_log: the events' source (ce-source). Empty: http://localhost:<port>/."
    )
    payload_log_service: str = _setting(
        "", "serve, with payload_log: the events' ce-inferenceservicename (KServe's InferenceService name)."
    )
    payload_log_namespace: str = _setting("", "serve, with payload_log: the events' ce-namespace.")
    tracing: TracingMode = _setting(
        "off", "serve: OpenTelemetry spans of scoring requests, exported over OTLP/HTTP to the collector the standard "
        "OTEL_* variables name (needs the scorer[tracing] extra).", choices=TracingMode
    )
    grpc_port: int = _setting(
        0, "serve: also serve the Open Inference Protocol over gRPC on this port (same host, same process; needs the "
        "scorer[grpc] extra and one worker). 0: off."
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}, not {getattr(self, f.name)!r}")
        positive = ("port", "max_batch_rows", "max_body_bytes", "max_request_rows", "chunk_rows", "max_queue_rows",
                    "request_timeout_s", "shutdown_grace_s", "client_timeout_s", "max_columns", "max_inflight_mb",
                    "lock_seconds")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("workers", "max_rejected_rows", "max_batch_wait_ms", "drain_s", "reload_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        _check_payload_log(self)
        if not 0 <= self.grpc_port <= 65535 or (self.grpc_port and self.grpc_port == self.port):
            raise ValueError(f"grpc_port must be 0 (off) or a port from 1 to 65535 other than port, not {self.grpc_port}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``SCORER_*`` variables, then ``overrides`` (e.g. parsed CLI flags) on top."""
        environ = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name not in fields:
                known = ", ".join(env_name(n) for n in fields)
                raise ValueError(f"unknown setting {key}; known settings: {known}")
            values[name] = parse_value(fields[name], raw, source=key)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def parse_value(f: dataclasses.Field[Any], raw: str, *, source: str) -> Any:
    kind: type[Any] = f.metadata.get("kind") or type(f.default)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ValueError(f"{source}={raw!r} is not a valid {kind.__name__}") from None


def describe() -> list[tuple[str, str, str, str]]:
    """(env var, flag, default, doc) for every setting: the README's configuration table."""
    rows = []
    for f in dataclasses.fields(Settings):
        flag = "BUNDLE (positional)" if f.name == "bundle" else "--" + f.name.replace("_", "-")
        rows.append((env_name(f.name), flag, repr(f.default), f.metadata["doc"]))
    return rows


def _check_payload_log(settings: Settings) -> None:
    """The payload-log settings: a sink that can be named (its reachability is not checked: a sink down
    at start is a sink down, counted), a fraction, bounds."""
    if not 0.0 <= settings.payload_log_sample <= 1.0:
        raise ValueError(f"payload_log_sample must be between 0 and 1, not {settings.payload_log_sample}")
    for name in ("payload_log_queue", "payload_log_queue_mb"):
        if getattr(settings, name) <= 0:
            raise ValueError(f"{name} must be positive, not {getattr(settings, name)}")
    sink = settings.payload_log
    if not sink or sink == "-":
        return
    if "://" in sink:
        parsed = urllib.parse.urlsplit(sink)
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"payload_log: a URL must be http:// or https://, not {parsed.scheme}://")
        try:
            port = parsed.port
        except ValueError:
            raise ValueError("payload_log: the URL's port is not a number from 0 to 65535") from None
        if not parsed.hostname or port == 0:
            raise ValueError("payload_log: the URL names no host (or port 0)")
        if parsed.username is not None or parsed.password is not None:
            raise ValueError("payload_log: the URL must not carry credentials")
        return
    if os.path.isdir(sink):
        raise ValueError(f"payload_log: {sink} is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(sink))
    if not os.path.isdir(folder):
        raise ValueError(f"payload_log: the directory of {sink} does not exist")
    if not os.access(sink if os.path.exists(sink) else folder, os.W_OK):
        raise ValueError(f"payload_log: {sink} is not writable by this user")
