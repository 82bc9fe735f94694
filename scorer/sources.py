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
  extra, and the version found downloaded into a private folder (:mod:`scorer.mlflow_registry`).

Anything else (another scheme) is a :class:`~scorer.errors.BundleNotFound` naming what is supported.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from scorer import mlflow_registry
from scorer.bundle import local_root
from scorer.errors import BundleNotFound

SUPPORTED = ("a bundle folder or .zip, an MLflow model directory (with an MLmodel file), models:/NAME/VERSION, "
             "models:/NAME@ALIAS, models:/NAME/STAGE or runs:/RUN_ID/PATH")
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
            mlflow_registry.remove(self.workdir)
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
    _refuse_scheme(text)
    path = Path(text)
    return Resolved(uri=text, path=path, info={"kind": "local", "path": str(local_root(path))})


def revision(uri: str | os.PathLike[str]) -> str:
    """A key that changes whenever what ``uri`` names may have changed; cheap enough to poll every second.

    Local: the resolved path (a moved ``current`` or ``..data`` link changes it) and every file's
    relative path, size, modification time and inode (a file replaced or rewritten changes it). The
    reload compares content digests before swapping, so a key that changes without the content changing
    costs a load, never a wrong swap. Raises :class:`BundleNotFound` when the source is gone.

    Registry: ``models:/NAME/<version>`` an alias or stage points to now, by one registry call (raises
    :class:`~scorer.errors.SourceUnavailable` when the server cannot be reached); a fixed version or a
    run's artifact: the URI itself, without a call."""
    text = os.fspath(uri)
    if is_registry(text):
        return mlflow_registry.revision(text)
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
