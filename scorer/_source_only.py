"""Folders whose Python modules are compiled from source, never from bytecode: a bundle's code and the
packages installed for it at start (:mod:`scorer.requirements`).

A ``.pyc`` there is not what the operator vouched for (the bundle's pinned digest, the install's
RECORD files), so it is never read: :class:`_SourceOnlyLoader` compiles from the source every time,
and a bare ``.pyc`` is never imported (no sourceless loader). None is written either: a read-only
mount needs no cache, and a writable one is not changed by being imported from. The rest of the
process keeps Python's own import machinery.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from typing import Any

_roots: list[str] = []  # absolute folders (sys.path entries) served source-only, and everything under them


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles a module from its source every time: never reads or writes a ``.pyc``."""

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


_finder = importlib.machinery.FileFinder.path_hook(
    (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES),
    (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
)  # no SourcelessFileLoader: a bare .pyc is never imported


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(os.path.join(r, "")) for r in roots)


def _path_hook(path: str) -> Any:
    """``sys.path_hooks`` entry: folders under a registered root (packages included) get the
    source-only finder; every other path is left to Python's own hooks."""
    if _under(path, _roots):
        return _finder(path)
    raise ImportError(path)


def add(paths: list[str]) -> None:
    """Serve ``paths`` (absolute folders) and everything under them source-only from now on."""
    if _path_hook not in sys.path_hooks:
        sys.path_hooks.insert(0, _path_hook)
    _roots.extend(p for p in paths if p not in _roots)
    _forget_finders(paths)


def remove(paths: list[str]) -> None:
    """Stop serving ``paths`` source-only (their finders are dropped from the import cache)."""
    _roots[:] = [r for r in _roots if r not in paths]
    _forget_finders(paths)


def _forget_finders(paths: list[str]) -> None:
    for cached in list(sys.path_importer_cache):
        if _under(cached, paths):
            del sys.path_importer_cache[cached]
    importlib.invalidate_caches()
