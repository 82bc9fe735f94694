"""The input walk: which files under an input directory ``scorer batch`` scores, for both engines.

One rule set, whatever lists the files (``os.walk`` for a local directory, Hadoop's file system for a
URI input of the Spark engine), applied to each file's path relative to the input root:

* a folder whose name starts with ``.`` is hidden: nothing under it is scored (silently);
* a file whose name starts with ``.`` or ``_`` is skipped silently: hidden files, temp files, and
  markers such as ``_SUCCESS`` (folders starting with ``_`` are walked);
* a file of an unknown type (see :func:`scorer.batch.files.detect_format`) is skipped and logged;
* on a local file system a symlinked file is scored only when it points inside the input root
  (otherwise skipped and logged), and symlinked folders are not followed.

Files come back in a sorted walk order: top-down, each folder's files sorted, then its sorted
subfolders. This is not the bundle's walk (:func:`scorer.bundle.bundle_files`): a bundle's digest
must cover every byte that can be loaded, so that walk skips nothing and refuses links, while an
input walk picks the data files out of a tree that also holds markers, notes and hidden files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from scorer.batch.files import FORMATS, detect_format

log = logging.getLogger("scorer.batch")


def skipped(rel: PurePosixPath) -> str | None:
    """Why the file at ``rel`` (relative to the input root) is not scored: ``""`` to skip it silently, a
    reason to log, or ``None`` to score it."""
    if any(part.startswith(".") for part in rel.parts[:-1]) or rel.name.startswith((".", "_")):
        return ""
    if detect_format(Path(rel.name)) is None:
        return f"not a {'/'.join(FORMATS)} file"
    return None


def walk(root: Path) -> list[Path]:
    """The data files under the local directory ``root`` (resolved), in sorted walk order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            reason = skipped(PurePosixPath(path.relative_to(root).as_posix()))
            if reason != "" and path.is_symlink() and not path.resolve().is_relative_to(root):
                reason = "symlink out of the input tree"
            if reason:
                log.warning("skipping %s: %s", path, reason)
            if reason is None:
                found.append(path)
    return found


def select(root: str, names: Iterable[str]) -> list[str]:
    """The data files among ``names``, every file under ``root`` as a URI listing gives them (Hadoop's
    recursive ``listFiles``): the same rule, sorted."""
    found = []
    for name in names:
        reason = skipped(PurePosixPath(name.removeprefix(root.rstrip("/") + "/")))
        if reason:
            log.warning("skipping %s: %s", name, reason)
        if reason is None:
            found.append(name)
    return sorted(found)
