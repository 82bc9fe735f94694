"""Checking a ``pip install --target`` directory against the RECORD files of the distributions in it.

:func:`verify_install` trusts a directory only when every file in it is listed by the RECORD of
one of its ``*.dist-info`` directories with the size and hash found on disk. Exceptions: entries
inside a ``.dist-info`` directory that have no hash (RECORD itself, signatures). Everything else
is refused: a listed file that is missing or differs, a file no RECORD lists (an added module, a
``.pyc`` that Python would import instead of its source), a symlink, a special file, a RECORD
with an entry outside the directory. RECORD entries are read with :mod:`importlib.metadata`
(``PackagePath.hash``/``size``), the standard parser of that format.

Paths: pip installs ``--target`` with the home scheme (``lib/python`` for packages, the home
itself for scripts and data) and moves both into the target, so a RECORD entry is relative to
``<target>/lib/python``: ``pkg/mod.py`` is ``<target>/pkg/mod.py`` and ``../../bin/tool`` is
``<target>/bin/tool``. :func:`installed_path` maps one; pruning and checking use the same map.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import stat
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

_PURELIB = "lib/python"
_HASHES = {"sha256", "sha384", "sha512"}  # the wheel spec forbids md5 and sha1


def installed_path(entry: str) -> str | None:
    """A RECORD entry as a path relative to the target directory (``None`` when it points outside)."""
    if posixpath.isabs(entry):
        return None
    path = posixpath.normpath(posixpath.join(_PURELIB, entry))
    if path.startswith(_PURELIB + "/"):
        return path[len(_PURELIB) + 1:]
    if path in (".", "..") or path.startswith("../") or path.split("/")[0] == "lib":
        return None
    return path


def dist_infos(site: Path) -> list[tuple[Path, metadata.Distribution]]:
    """The ``*.dist-info`` directories directly in ``site``, sorted, with their distribution."""
    return [(info, metadata.PathDistribution(info)) for info in sorted(site.glob("*.dist-info"))]


def verify_install(site: Path, names: set[str]) -> str | None:
    """Why ``site`` cannot be trusted (the first problem, naming a file), or ``None`` when every file
    in it matches a RECORD and each of ``names`` (canonical) has a distribution there."""
    listed: dict[str, list[metadata.PackagePath]] = {}
    found: set[str] = set()
    for info, dist in dist_infos(site):
        files = dist.files
        if files is None or not (info / "RECORD").is_file():
            return f"{info.name} has no RECORD"
        found.add(canonicalize_name(dist.metadata["Name"] or ""))
        for entry in files:
            rel = installed_path(str(entry))
            if rel is None:
                return f"{info.name}/RECORD lists {entry}, outside the install"
            listed.setdefault(rel, []).append(entry)
    if missing := sorted(names - found):
        return f"no installed distribution for {missing[0]}"
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(site).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                return f"{rel} is a symlink"
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                return f"{rel} is not a regular file"
            entries = listed.pop(rel, None)
            if entries is None:
                return f"{rel} is not listed in any RECORD"
            if problem := _mismatch(path, rel, st.st_size, entries):
                return problem
    if listed:
        return f"{min(listed)} is listed in a RECORD but missing"
    return None


def _mismatch(path: Path, rel: str, size: int, entries: list[metadata.PackagePath]) -> str | None:
    problem = f"{rel} does not match its RECORD"
    for entry in entries:
        if entry.hash is None:
            if rel.split("/")[0].endswith(".dist-info"):
                return None
            problem = f"{rel} has no hash in its RECORD"
            continue
        if entry.hash.mode not in _HASHES:
            problem = f"{rel} has an unsupported hash ({entry.hash.mode}) in its RECORD"
            continue
        if entry.size is not None and entry.size != size:
            continue
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, entry.hash.mode).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == entry.hash.value:
            return None
    return problem
