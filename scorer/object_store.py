"""URIs of object stores (``s3://bucket/key``) as pyarrow filesystems, and their failures as one line.

pyarrow's filesystem layer is already a dependency (Parquet and Arrow IPC), is maintained with Arrow,
streams reads in ranges and writes with multipart uploads, so scorer talks to object stores through it
rather than through another SDK or hand-made HTTP. :func:`filesystem` is ``FileSystem.from_uri``: the
endpoint and credentials come only from the standard AWS environment and config files
(``AWS_ENDPOINT_URL`` for an S3-compatible store, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_PROFILE``, instance roles), never from flags, which would land in process listings.

``s3://`` is tested against a real S3-compatible server (SeaweedFS). ``gs://`` and ``abfs://`` go
through the same layer where the installed pyarrow supports them, and are untested.

:func:`cause` turns a pyarrow error into one line naming the problem (wrong credentials, access denied,
no such bucket or key, store unreachable) and a :data:`KINDS` word for callers to map to their own
error classes; the line never carries a secret (AWS's messages name keys and buckets, not credentials).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a store is opened: a local bundle's server never needs pyarrow
    import pyarrow.fs as pafs

SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss")
KINDS = ("credentials", "denied", "no_bucket", "no_key", "unreachable", "other")
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_AWS_ERROR = re.compile(r"AWS Error (?P<code>[A-Z_]+) during (?P<op>\w+) operation")
CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
_CAUSES = {
    "SIGNATURE_DOES_NOT_MATCH": ("credentials", f"the store refused the credentials (signature mismatch): {CREDENTIALS_HINT}"),
    "INVALID_ACCESS_KEY_ID": ("credentials", f"the store does not know the access key: {CREDENTIALS_HINT}"),
    "INVALID_ACCESS_KEY": ("credentials", f"the store does not know the access key: {CREDENTIALS_HINT}"),
    "ACCESS_DENIED": ("denied", f"access denied: {CREDENTIALS_HINT} and what the key may read"),
    "NO_SUCH_BUCKET": ("no_bucket", "no such bucket"),
    "NO_SUCH_KEY": ("no_key", "no such object"),
    "RESOURCE_NOT_FOUND": ("no_key", "no such object"),
    "NETWORK_CONNECTION": ("unreachable", "cannot reach the object store (check AWS_ENDPOINT_URL and the network)"),
}


def is_object_uri(text: str) -> bool:
    """``text`` names an object store (``s3://``, ``gs://``, ``abfs://`` ...), not a local path."""
    found = _URI.match(text)
    return bool(found) and found.group("scheme").lower() in SCHEMES  # type: ignore[union-attr]


def credentials_refused(uri: str) -> str | None:
    """The one line refusing ``uri`` when it carries credentials (``s3://key:secret@bucket``), else None: they
    would show in process listings. The URI itself is not repeated (it holds the secret)."""
    if "@" not in uri.split("://", 1)[1].split("/", 1)[0]:
        return None
    return (f"{uri.split('://', 1)[0]}://...: credentials in a URI are refused (they would show in process "
            "listings); use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``uri`` and the path in it (``bucket/key``). Raises :class:`OSError` or
    :class:`ValueError` (an unsupported scheme, a malformed URI): pass it to :func:`cause`."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def cause(exc: BaseException) -> tuple[str, str]:
    """``(kind, line)``: what went wrong, one of :data:`KINDS`, and one line saying so."""
    text = " ".join(str(exc).split())
    if isinstance(exc, FileNotFoundError):
        return "no_key", "no such object"
    found = _AWS_ERROR.search(text)
    if found and found.group("code") in _CAUSES:
        return _CAUSES[found.group("code")]
    if found:
        return "other", f"the store answered {found.group('code')} to {found.group('op')}"
    for code, (kind, line) in _CAUSES.items():
        if code in text:
            return kind, line
    return "other", (text.split(" (Request ID")[0] or type(exc).__name__)
