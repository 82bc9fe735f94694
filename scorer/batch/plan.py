"""Planning a ``scorer batch`` run: the checks both engines make before anything is written.

Each engine plans in its own shape (the local engine one job per file, mirrored under the output;
the Spark engine one dataset) from the same pieces, in this order: both paths given
(:func:`require_paths`), the output format known to the engine (:func:`check_output_format`), the
input found and walked by the one input walk (:func:`local_input`, :func:`input_files`). Every check
raises :class:`~scorer.errors.UsageError`: the command exits 2 with nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scorer.batch.walk import walk
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
