"""Planning a ``scorer batch`` run: the checks both engines make before anything is written.

Each engine plans in its own shape (the local engine one job per file, mirrored under the output;
the Spark engine one dataset) from the same pieces, in this order: both paths given
(:func:`require_paths`), the output format known to the engine (:func:`check_output_format`), the
input found and walked by the one input walk (:func:`local_input`, :func:`input_files`). Every check
raises :class:`~scorer.errors.UsageError`: the command exits 2 with nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from scorer import object_store
from scorer.batch.files import InputFile
from scorer.batch.walk import select, walk
from scorer.errors import UsageError
from scorer.settings import Settings


def require_paths(settings: Settings) -> None:
    if not settings.input:
        raise UsageError("--input is required")
    if not settings.output:
        raise UsageError("--output is required")


def check_output_format(fmt: str, supported: Sequence[str], *, engine: str = "") -> None:
    """``fmt`` is ``same`` or one of ``supported`` (``engine`` names the engine that cannot write it)."""
    if fmt not in ("same", *supported):
        by = f" by --engine {engine}" if engine else ""
        raise UsageError(f"output format {fmt!r} is not supported{by}; use one of: same, {', '.join(supported)}")


def local_input(settings: Settings) -> tuple[Path, Path]:
    """The input as given and its root (the directory itself, or a single file's folder), resolved."""
    source = Path(settings.input)
    if not source.exists():
        raise UsageError(f"input not found: {source}")
    return source, source.resolve() if source.is_dir() else source.resolve().parent


def input_files(source: Path, root: Path, formats: Sequence[str]) -> list[Path]:
    """The files to score: a directory walked (:mod:`scorer.batch.walk`), or the one file given; ``formats``
    (what the engine reads) name what was looked for when nothing is found."""
    files = walk(root) if source.is_dir() else [source.resolve()]
    if not files:
        raise UsageError(f"no input files ({', '.join(formats)}) under {source}")
    return files


def object_input(uri: str, formats: Sequence[str]) -> tuple[list[tuple[InputFile, PurePosixPath]], str]:
    """The objects to score under ``uri`` (one object, or a prefix walked by the one input walk's rules), each
    with its path relative to the input root, and that root (``bucket/prefix``). A store that cannot be
    listed (credentials, a missing bucket, unreachable) or holds no input is a UsageError naming it."""
    refused = object_store.credentials_refused(uri)
    if refused:
        raise UsageError(refused)
    try:
        fs, path = object_store.filesystem(uri)
        path = path.rstrip("/")
        bucket = path.split("/", 1)[0]
        one = fs.get_file_info(path) if "/" in path else None
        if one is not None and one.type == pafs.FileType.File and not uri.endswith("/"):
            root = path.rsplit("/", 1)[0]
            return [(_object(fs, one), PurePosixPath(one.base_name))], root
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise UsageError(f"{uri}: no such bucket {bucket!r}")
        infos = {i.path: i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
                 if i.type == pafs.FileType.File}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{uri}: {object_store.cause(exc)[1]}") from None
    found = [(_object(fs, infos[name]), PurePosixPath(name.removeprefix(path + "/")))
             for name in select(path, list(infos))]
    if not found:
        raise UsageError(f"no input files ({', '.join(formats)}) under {uri}")
    return found, path


def _object(fs: pafs.FileSystem, info: pafs.FileInfo) -> InputFile:
    return InputFile(info.path, info.size or 0, info.mtime_ns or 0, fs)
