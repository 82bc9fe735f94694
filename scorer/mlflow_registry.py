"""MLflow registry and run URIs, resolved with MLflow's own client (the optional ``mlflow`` extra).

- ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/STAGE`` (Production, Staging,
  Archived, None; any case, as MLflow takes them): the version is looked up first, then exactly that
  version is downloaded (``models:/NAME/<version>``), so an alias moved during the download cannot
  mix two versions;
- ``runs:/RUN_ID/PATH``: that artifact path of the run (a bundle folder, a ``.zip``, an MLflow model).

The tracking server is ``MLFLOW_TRACKING_URI`` (the registry ``MLFLOW_REGISTRY_URI`` when set);
credentials are MLflow's own variables (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``, ...),
never shown: a tracking URI is named without its user info, query or fragment. MLflow's client retries
an unreachable server for minutes by default; unless the operator set them, :data:`CLIENT_DEFAULTS`
make it answer within seconds (the process keeps serving what it has; a reload watcher polls again).

Every failure is one line: :class:`~scorer.errors.SourceUnavailable` when the server or the artifact
store cannot be reached, :class:`~scorer.errors.BundleNotFound` when what the URI names does not exist
(or its artifacts are gone), :class:`~scorer.errors.RequirementsError` when MLflow is not installed.
``mlflow`` is imported inside the functions only: nothing else of scorer needs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scorer.errors import BundleError, BundleNotFound, RequirementsError, SourceUnavailable
from scorer.private_dir import download_dir, remove_download

#: MLflow client settings applied when the operator has not set them: one immediate retry (no backoff),
#: 5 s without an answer is a failure, no progress bars on stderr, MLflow's own log at warnings.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}
STAGES = {s.lower(): s for s in ("Production", "Staging", "Archived", "None")}
FORMS = "models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/STAGE (Production, Staging, Archived, None) or runs:/RUN_ID/PATH"
INSTALL = "pip install 'scorer[mlflow]'"
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND", "ENDPOINT_NOT_FOUND"}
_DENIED = {"PERMISSION_DENIED", "UNAUTHENTICATED", "UNAUTHORIZED"}
_USERINFO = re.compile(r"(?<=//)[^/@\s]*@")


@dataclass(frozen=True)
class Reference:
    """A registry or run URI taken apart. A model reference has exactly one of version, alias, stage."""

    uri: str
    name: str = ""  # registered model
    version: str = ""
    alias: str = ""
    stage: str = ""  # MLflow's spelling
    run_id: str = ""  # runs:/ only
    path: str = ""  # runs:/ only: the artifact path in the run

    @property
    def fixed(self) -> bool:
        """Names one thing for good (a version, a run's artifact): its revision is the URI itself."""
        return bool(self.version or self.run_id)


@dataclass(frozen=True)
class Download:
    path: Path  # the folder or file to open
    workdir: Path  # the private folder holding it (0700), removed once that version is no longer used
    info: dict[str, str]


def parse(uri: str) -> Reference:
    """``uri`` taken apart, or :class:`BundleNotFound` naming the forms scorer takes."""
    bad = BundleNotFound(f"{uri}: not a registry or run URI scorer takes; use {FORMS}")
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].lstrip("/").partition("/")
        path = path.strip("/")
        if not run_id or not path:
            raise bad
        return Reference(uri, run_id=run_id, path=path)
    if not uri.startswith("models:/"):
        raise bad
    body = uri[len("models:/"):].rstrip("/")
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        if not name or not alias or "/" in alias:
            raise bad
        return Reference(uri, name=name, alias=alias)
    name, _, suffix = body.rpartition("/")
    if not name:
        raise bad
    if suffix.isdigit():
        return Reference(uri, name=name, version=str(int(suffix)))
    if suffix.lower() in STAGES:
        return Reference(uri, name=name, stage=STAGES[suffix.lower()])
    raise bad


def public_uri(uri: str) -> str:
    """A tracking URI fit to show: without user info (``user:token@``), query or fragment."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return _USERINFO.sub("", uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def tracking_uri(uri: str) -> str:
    found = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not found:
        raise BundleNotFound(f"{uri}: MLFLOW_TRACKING_URI is not set; set it to the MLflow tracking server's URL")
    return found


def resolve(uri: str) -> Download:
    """Find what ``uri`` names now and download exactly that into a new private folder."""
    ref = parse(uri)
    tracking = tracking_uri(uri)
    client, artifacts = _mlflow(uri, tracking)
    where = public_uri(tracking)
    info: dict[str, str]
    if ref.run_id:
        artifact = ref.uri
        info = {"kind": "run", "run_id": ref.run_id, "path": ref.path, "tracking_uri": where}
    else:
        mv = _version(client, ref, public_uri(_registry(tracking)))
        artifact = f"models:/{ref.name}/{mv.version}"  # pinned: not the alias, which may move meanwhile
        info = {"kind": "registry", "name": ref.name, "version": str(mv.version)}
        if ref.alias:
            info["alias"] = ref.alias
        if ref.stage:
            info["stage"] = ref.stage
        info.update({"run_id": mv.run_id or "", "source": mv.source or "", "tracking_uri": where})
        info = {k: v for k, v in info.items() if v}
    workdir = download_dir("scorer-mlflow-")
    # a model's files go to a folder named after it (a bundle without a manifest name is named by its
    # folder); a run's artifact keeps its own name
    dst = workdir if ref.run_id else workdir / (re.sub(r"[^A-Za-z0-9._-]", "_", ref.name).strip(".") or "model")
    try:
        with _translated(uri, where, f"the artifacts of {artifact} on {where}"):
            local = Path(artifacts.download_artifacts(artifact_uri=artifact, dst_path=str(dst),
                                                      tracking_uri=tracking, registry_uri=_registry(tracking)))
        if not local.exists() or (local.is_dir() and not any(local.iterdir())):
            source = f" (its source {info['source']})" if info.get("source") else ""
            raise BundleNotFound(f"{uri}: no artifacts at {artifact}{source} on {where}; were they deleted?")
    except BaseException:
        remove_download(workdir)
        raise
    return Download(path=local, workdir=workdir, info=info)


def revision(uri: str) -> str:
    """What ``uri`` names now, by one cheap registry call: ``models:/NAME/<version>`` for an alias or a
    stage; the URI itself (no call) for a fixed version or a run's artifact."""
    ref = parse(uri)
    if ref.fixed:
        return ref.uri
    tracking = tracking_uri(uri)
    client, _ = _mlflow(uri, tracking)
    return f"models:/{ref.name}/{_version(client, ref, public_uri(_registry(tracking))).version}"


def _version(client: Any, ref: Reference, where: str) -> Any:
    """The model version ``ref`` names now (an MLflow ``ModelVersion``)."""
    with _translated(ref.uri, where, f"the MLflow registry at {where}"):
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        if ref.version:
            return client.get_model_version(ref.name, ref.version)
        with warnings.catch_warnings():  # stages are deprecated in MLflow, still served by it
            warnings.simplefilter("ignore")
            latest = client.get_latest_versions(ref.name, stages=[ref.stage])
    if not latest:
        raise BundleNotFound(f"{ref.uri}: model {ref.name!r} has no version in stage {ref.stage} on {where}")
    return latest[0]


def _registry(tracking: str) -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI", "").strip() or tracking


def _mlflow(uri: str, tracking: str) -> tuple[Any, Any]:
    """MLflow's client for ``tracking`` and its artifacts module, with :data:`CLIENT_DEFAULTS` applied."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        import mlflow.artifacts
        from mlflow import MlflowClient
    except ImportError:
        raise RequirementsError(f"{uri}: registry and run URIs need MLflow, which cannot be imported here: "
                                f"{INSTALL}") from None
    try:
        client = MlflowClient(tracking_uri=tracking, registry_uri=_registry(tracking))
    except Exception as exc:  # noqa: BLE001 - a tracking URI MLflow cannot use: one line
        raise SourceUnavailable(f"{uri}: MLflow cannot use tracking URI {public_uri(tracking)}: "
                                f"{_reason(exc)}") from None
    return client, mlflow.artifacts


@contextlib.contextmanager
def _translated(uri: str, where: str, what: str) -> Iterator[None]:
    """MLflow's and the network's exceptions as ours, each one line without credentials."""
    try:
        yield
    except BundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises MlflowException, requests' and OS errors
        code = str(getattr(exc, "error_code", "") or "")
        if code in _NOT_FOUND:
            raise BundleNotFound(f"{uri}: not found in {what}: {_reason(exc)}") from None
        if code in _DENIED:
            raise SourceUnavailable(f"{uri}: {where} refused access ({_reason(exc)}); MLflow reads credentials "
                                    "from MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or "
                                    "MLFLOW_TRACKING_TOKEN") from None
        raise SourceUnavailable(f"{uri}: {what} cannot be reached: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The cause in a few words: a refused connection or a timeout when the network failed (found along
    the exception chain), else the exception's own first line; no credentials, no URL user info."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        name = type(link).__name__
        text = str(link)
        if "Timeout" in name or "timed out" in text.lower():
            timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "")
            return f"no answer within {timeout}s (MLFLOW_HTTP_REQUEST_TIMEOUT)" if timeout else "timed out"
        if "Connection refused" in text or isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if "Name or service not known" in text or "nodename nor servname" in text or "NameResolution" in text:
            return "host name not resolved"
        if name in ("ConnectionError", "NewConnectionError", "MaxRetryError") and link is not exc:
            return "connection failed"
        link = link.__cause__ or link.__context__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^[A-Z_]+: ", "", text)  # RestException's "RESOURCE_DOES_NOT_EXIST: " prefix
    return _USERINFO.sub("", text)[:300]
