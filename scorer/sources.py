"""Where a model comes from: what the operator named, resolved to a local folder or ``.zip`` to open,
and a cheap revision key that changes when what it names may have changed (the reload watcher's).

Sources:

- a bundle folder or ``.zip``, or an MLflow model directory (an ``MLmodel`` file at its root): used
  where it is. A folder reached through symlinks is resolved first, so a ``current`` symlink moved to
  another version folder is another source revision, and a Kubernetes ConfigMap/Secret volume (files
  that are links into ``..data``, itself a link to a timestamped folder that is swapped atomically)
  is read from the folder ``..data`` points to (:func:`scorer.bundle.local_root`);
- ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/STAGE`` and ``runs:/RUN_ID/PATH``:
  resolved against the MLflow tracking server (``MLFLOW_TRACKING_URI``) with the optional ``mlflow``
  extra, and the version found downloaded into a private folder (:mod:`scorer.mlflow_registry`);
- ``s3://BUCKET/KEY.zip`` (one object) or ``s3://BUCKET/PREFIX/`` (a prefix holding a bundle folder's
  files), through pyarrow's filesystems with the standard AWS variables (:mod:`scorer.object_store`):
  streamed into a private folder (0700) of this process, then opened as a local bundle, so a pinned
  ``--bundle-digest`` is checked before anything of it is unpickled or imported. Its revision key is the
  object's ETag and size (a prefix: every object's key, ETag and size), one HEAD per object.
  ``gs://`` and ``abfs://`` take the same path where pyarrow supports them (untested).

Anything else (another scheme) is a :class:`~scorer.errors.BundleNotFound` naming what is supported.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from scorer import mlflow_registry, object_store
from scorer.bundle import local_root
from scorer.errors import BundleError, BundleNotFound, SourceUnavailable
from scorer.private_dir import download_dir, remove_download

if TYPE_CHECKING:  # imported for object store sources only: a local bundle loads without pyarrow
    import pyarrow.fs as pafs

SUPPORTED = ("a bundle folder or .zip, an MLflow model directory (with an MLmodel file), models:/NAME/VERSION, "
             "models:/NAME@ALIAS, models:/NAME/STAGE, runs:/RUN_ID/PATH, s3://BUCKET/KEY.zip or s3://BUCKET/PREFIX/")
CHUNK = 8 << 20  # an object is streamed to disk in ranged reads of this size (scorer.batch.files.OBJECT_READ_BYTES)
REGISTRY_SCHEMES = ("models:/", "runs:/")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Resolved:
    """A source resolved to something on this machine."""

    uri: str  # what the operator named
    path: Path  # the local folder or .zip to open
    info: dict[str, str] = field(default_factory=dict)  # what was resolved: kind, name, version, alias, run_id, source
    owned: bool = False  # ``path`` is a private download of ours: removed once that version is no longer used
    workdir: Path | None = None  # the private folder holding ``path`` when owned (``path`` may be a file in it)

    def discard(self) -> None:
        """Remove the private download (nothing for a source used where it is)."""
        if self.owned and self.workdir is not None:
            remove_download(self.workdir)
        elif self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def is_registry(uri: str) -> bool:
    return uri.startswith(REGISTRY_SCHEMES)


def resolve(uri: str | os.PathLike[str]) -> Resolved:
    """Resolve ``uri`` once (a registry alias to the version it points to now, and download it)."""
    text = os.fspath(uri)
    if is_registry(text):
        got = mlflow_registry.resolve(text)
        return Resolved(uri=text, path=got.path, info=got.info, owned=True, workdir=got.workdir)
    if object_store.is_object_uri(text):
        return _download_object(text)
    _refuse_scheme(text)
    path = Path(text)
    return Resolved(uri=text, path=path, info={"kind": "local", "path": str(local_root(path))})


def revision(uri: str | os.PathLike[str]) -> str:
    """A key that changes whenever what ``uri`` names may have changed; cheap enough to poll every second.

    Local: the resolved path (a moved ``current`` or ``..data`` link changes it) and every file's
    relative path, size, modification time and inode (a file replaced or rewritten changes it). The
    reload compares content digests before swapping, so a key that changes without the content changing
    costs a load, never a wrong swap. Raises :class:`BundleNotFound` when the source is gone.

    Object store: every object's key, size and ETag (one HEAD each); raises :class:`SourceUnavailable`
    when the store cannot be reached or refuses the credentials, :class:`BundleNotFound` when it is gone.

    Registry: ``models:/NAME/<version>`` an alias or stage points to now, by one registry call (raises
    :class:`~scorer.errors.SourceUnavailable` when the server cannot be reached); a fixed version or a
    run's artifact: the URI itself, without a call."""
    text = os.fspath(uri)
    if is_registry(text):
        return mlflow_registry.revision(text)
    if object_store.is_object_uri(text):
        fs, path_in_store, infos = _objects(text)
        with _translated(text):
            return "\n".join([text, *(f"{i.path}:{i.size}:{_etag(fs, i.path)}" for i in infos)])
    _refuse_scheme(text)
    path = Path(text)
    if not path.exists():
        raise BundleNotFound(f"bundle not found: {path}")
    root = local_root(path)
    parts = [str(root)]
    try:
        if root.is_file():
            parts.append(_stat_key(root.stat()))
        else:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    full = os.path.join(dirpath, name)
                    parts.append(f"{os.path.relpath(full, root)}:{_stat_key(os.lstat(full))}")
    except OSError as exc:  # changing under us: a different key each time until it settles
        parts.append(f"unreadable:{exc}")
    return "\n".join(parts)


def _stat_key(st: os.stat_result) -> str:
    kind = "l" if stat.S_ISLNK(st.st_mode) else "f"
    return f"{kind}{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _refuse_scheme(text: str) -> None:
    if _SCHEME.match(text) and not os.path.exists(text):
        scheme = text.split(":", 1)[0]
        raise BundleNotFound(f"{text}: unsupported source scheme {scheme!r}; scorer loads {SUPPORTED}")


# --- object stores ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _translated(uri: str) -> Iterator[None]:
    """A store's failure as one line naming ``uri``: gone -> BundleNotFound, anything else (credentials,
    access, an unreachable store) -> SourceUnavailable (a serving version keeps serving)."""
    try:
        yield
    except BundleError:
        raise
    except (OSError, ValueError) as exc:
        kind, line = object_store.cause(exc)
        error = BundleNotFound if kind in ("no_bucket", "no_key") else SourceUnavailable
        raise error(f"{uri}: {line}") from None


def _objects(uri: str) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    """What ``uri`` names in its store: one object, or every object under a prefix (sorted by key)."""
    import pyarrow.fs as pafs

    refused = object_store.credentials_refused(uri)
    if refused:
        raise BundleNotFound(refused)
    with _translated(uri):
        fs, path = object_store.filesystem(uri)
        path = path.rstrip("/")
        bucket = path.split("/", 1)[0]
        found = fs.get_file_info(path) if "/" in path else pafs.FileInfo(path, pafs.FileType.Directory)
        if found.type == pafs.FileType.File and not uri.endswith("/"):
            return fs, path, [found]
        if found.type == pafs.FileType.NotFound and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise BundleNotFound(f"{uri}: no such bucket {bucket!r}")
        if found.type == pafs.FileType.NotFound:
            raise BundleNotFound(f"{uri}: no such object or prefix")
        infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File]
    if not infos:
        raise BundleNotFound(f"{uri}: no objects under this prefix")
    return fs, path, sorted(infos, key=lambda i: i.path)


def _etag(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_file(path) as f:  # a HEAD: no body is read
        meta: Any = f.metadata()
    return bytes(meta.get("ETag", b"")).decode(errors="replace").strip('"')


def _download_object(uri: str) -> Resolved:
    """Stream what ``uri`` names into a new private folder (0700) and resolve it to the local copy."""
    fs, path, infos = _objects(uri)
    single = len(infos) == 1 and infos[0].path == path
    workdir = download_dir("scorer-object-")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(path).name).strip(".") or "bundle"
    local = workdir / name
    etags: list[str] = []
    try:
        with _translated(uri):
            for info in infos:
                rel = PurePosixPath(info.path).relative_to(path) if not single else PurePosixPath()
                if any(part in ("..", "") for part in rel.parts) or rel.is_absolute():
                    raise BundleNotFound(f"{uri}: refusing object {info.path!r} (its key leaves the prefix)")
                target = local.joinpath(*rel.parts) if rel.parts else local
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_file(info.path) as src, open(target, "wb") as dst:
                    meta: Any = src.metadata()
                    etags.append(bytes(meta.get("ETag", b"")).decode(errors="replace").strip('"'))
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
    except BaseException:
        remove_download(workdir)
        raise
    info_out = {"kind": "object", "uri": uri, "size": str(sum(i.size or 0 for i in infos))}
    if single:
        info_out["etag"] = etags[0]
    else:
        info_out["objects"] = str(len(infos))
    return Resolved(uri=uri, path=local, info=info_out, owned=True, workdir=workdir)

