"""Locating a bundle on disk: folder or .zip, content digest, manifest.

A bundle is a folder (or its zip) with ``artifacts/``, ``code/`` or ``custom_preprocess.py``, or an
MLflow model directory (an ``MLmodel`` file at its root, :mod:`scorer.mlflow_model`), whose ``MLmodel``
stands in for the manifest: its signature is the input schema, its input example the sample input
(a ``manifest.json`` beside it still wins field by field).

Nothing in this module imports bundle code or unpickles anything: it is safe to run on an
untrusted bundle, and it runs before the operator-pinned digest is checked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from scorer.errors import BundleLayoutError, BundleNotFound, DigestMismatch
from scorer.mlflow_model import MLflowModel, is_mlflow_dir, read_mlmodel

log = logging.getLogger("scorer.bundle")

MANIFEST_NAME = "manifest.json"
CUSTOM_MODULE = "custom_preprocess"
ARTIFACT_SUFFIXES = (".pkl", ".pickle", ".joblib")
# What a bundle without custom code holds: "python" (a pickle/joblib model), "spark" (a saved Spark ML
# PipelineModel directory: metadata/ + stages/) or "h2o" (an H2O MOJO .zip, which contains model.ini).
FLAVORS = ("python", "spark", "h2o")


@dataclass(frozen=True)
class Manifest:
    """The optional ``manifest.json``. Every field may be absent."""

    name: str | None = None
    version: str | None = None
    description: str | None = None
    input_schema: dict[str, str] | None = None
    output_columns: list[str] | None = None
    sample_input: dict[str, Any] | None = None
    artifact: str | None = None
    flavor: str | None = None

    @classmethod
    def parse(cls, raw: bytes, path: Path) -> Manifest:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BundleLayoutError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BundleLayoutError(f"{path}: must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleLayoutError(f"{path}: unknown keys {unknown}; known keys: {sorted(known)}")
        schema = data.get("input_schema")
        if schema is not None:
            data["input_schema"] = _parse_schema(schema, path)
        outputs = data.get("output_columns")
        if outputs is not None and not (isinstance(outputs, list) and all(isinstance(c, str) for c in outputs)):
            raise BundleLayoutError(f"{path}: output_columns must be a list of column names")
        flavor = data.get("flavor")
        if flavor is not None and flavor not in FLAVORS:
            raise BundleLayoutError(f"{path}: flavor must be one of {list(FLAVORS)}, not {flavor!r}")
        return cls(**data)


def _parse_schema(schema: Any, path: Path) -> dict[str, str]:
    from scorer.schema import COLUMN_TYPES

    if isinstance(schema, dict):
        items = list(schema.items())
    elif isinstance(schema, list) and all(isinstance(c, dict) and "name" in c for c in schema):
        items = [(c["name"], c.get("type", "any")) for c in schema]
    else:
        raise BundleLayoutError(
            f'{path}: input_schema must be [{{"name": ..., "type": ...}}, ...] or {{"column": "type"}}'
        )
    bad = [f"{name}: {kind!r}" for name, kind in items if kind not in COLUMN_TYPES]
    if bad:
        raise BundleLayoutError(f"{path}: unknown column types ({'; '.join(bad)}); use one of {COLUMN_TYPES}")
    return {str(name): str(kind) for name, kind in items}


@dataclass(frozen=True)
class Bundle:
    """A bundle laid out on disk (a zip has already been extracted into ``root``)."""

    root: Path
    source: Path
    digest: str
    manifest: Manifest = field(default_factory=Manifest)
    mlflow: MLflowModel | None = None  # an MLflow model directory: what its MLmodel says

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def code_dir(self) -> Path:
        return self.root / "code"

    @property
    def name(self) -> str:
        return self.manifest.name or self.source.name.removesuffix(".zip")

    def custom_code(self) -> Path | None:
        """``custom_preprocess.py`` in ``code/`` or at the root; both present is ambiguous."""
        found = [p for p in (self.code_dir / f"{CUSTOM_MODULE}.py", self.root / f"{CUSTOM_MODULE}.py") if p.is_file()]
        if len(found) > 1:
            raise BundleLayoutError(f"{self.source}: both code/{CUSTOM_MODULE}.py and {CUSTOM_MODULE}.py exist; keep one")
        return found[0] if found else None

    def artifacts(self) -> list[Path]:
        """Pickle/joblib model files under ``artifacts/``."""
        if not self.artifacts_dir.is_dir():
            return []
        return sorted(p for p in self.artifacts_dir.rglob("*") if p.is_file() and p.suffix in ARTIFACT_SUFFIXES)

    def spark_pipelines(self) -> list[Path]:
        """Saved Spark ML pipelines under ``artifacts/``: directories with ``metadata/`` and ``stages/``."""
        if not self.artifacts_dir.is_dir():
            return []
        found = (p.parent for p in self.artifacts_dir.rglob("stages") if p.is_dir() and (p.parent / "metadata").is_dir())
        return sorted(p for p in found if not _hidden(p.relative_to(self.artifacts_dir)))

    def mojos(self) -> list[Path]:
        """H2O MOJOs under ``artifacts/``: zips holding ``model.ini``."""
        if not self.artifacts_dir.is_dir():
            return []
        found = (p for p in self.artifacts_dir.rglob("*.zip") if not _hidden(p.relative_to(self.artifacts_dir)))
        return sorted(p for p in found if p.is_file() and _is_mojo(p))

    def default_model(self) -> tuple[str, Path]:
        """The flavor and path of the one model a bundle without custom code holds.

        The manifest's ``artifact`` names it (and ``flavor`` says what it is when the name does
        not); otherwise exactly one model of any flavor must be present.
        """
        declared = self.manifest.flavor
        if self.manifest.artifact:
            path = self.artifacts_dir / self.manifest.artifact
            if not path.exists():
                raise BundleLayoutError(f"{self.source}: manifest artifact {self.manifest.artifact!r} not found in artifacts/")
            flavor = declared or ("spark" if path.is_dir() else "h2o" if path.suffix == ".zip" else "python")
            return flavor, path
        found = {"python": self.artifacts(), "spark": self.spark_pipelines(), "h2o": self.mojos()}
        candidates = [(f, p) for f, paths in found.items() if declared in (None, f) for p in paths]
        if not candidates:
            kinds = f"no {declared} model" if declared else "no model file (*.pkl, *.pickle, *.joblib), Spark pipeline or H2O MOJO"
            raise BundleLayoutError(f"{self.source}: no {CUSTOM_MODULE}.py and {kinds} in artifacts/")
        if len(candidates) > 1:
            names = ", ".join(p.relative_to(self.artifacts_dir).as_posix() for _, p in candidates)
            raise BundleLayoutError(
                f"{self.source}: no {CUSTOM_MODULE}.py and {len(candidates)} models in artifacts/ ({names}): "
                f'add code/{CUSTOM_MODULE}.py or name one with "artifact" in manifest.json'
            )
        return candidates[0]


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _is_mojo(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return "model.ini" in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def local_root(path: Path) -> Path:
    """Where a local source's content really is: ``path`` with its symlinks resolved (a ``current`` link
    to a version folder), and in a Kubernetes ConfigMap/Secret volume (whose entries are links into
    ``..data``, a link to a timestamped folder swapped atomically on update) the folder ``..data`` points
    to, which holds the files themselves: every file of one revision, never a mix of two."""
    real = path.resolve()
    data = real / "..data"
    if data.is_symlink() and data.is_dir():
        return data.resolve()
    return real


def open_bundle(path: str | os.PathLike[str], *, expected_digest: str = "", workdir: Path | None = None) -> Bundle:
    """Open a bundle folder or zip, compute its digest, check the pinned digest, read the manifest."""
    source = Path(path)
    if not source.exists():
        raise BundleNotFound(f"bundle not found: {source}")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise BundleNotFound(f"{source}: not a folder or a .zip file")
        root = _extract_zip(source, workdir)
    else:
        root = local_root(source)
    mlflow = is_mlflow_dir(root)
    if not mlflow and not any((root / d).is_dir() for d in ("artifacts", "code")) \
            and not (root / f"{CUSTOM_MODULE}.py").is_file():
        raise BundleNotFound(f"{source}: not a bundle (no artifacts/, code/, {CUSTOM_MODULE}.py or MLmodel)")
    digest = content_digest(root)
    if expected_digest and expected_digest.removeprefix("sha256:") != digest:
        raise DigestMismatch(f"{source}: content digest sha256:{digest} does not match the pinned {expected_digest}")
    manifest_path = root / MANIFEST_NAME
    manifest = Manifest.parse(manifest_path.read_bytes(), manifest_path) if manifest_path.is_file() else Manifest()
    if not mlflow:
        return Bundle(root=root, source=source, digest=digest, manifest=manifest)
    model = read_mlmodel(root)
    manifest = replace(manifest, input_schema=manifest.input_schema or model.input_schema,
                       sample_input=manifest.sample_input or model.sample_input)
    return Bundle(root=root, source=source, digest=digest, manifest=manifest, mlflow=model)


def bundle_files(root: Path) -> list[Path]:
    """Every file of the bundle: bytecode caches, hidden folders and all, since anything in it can be
    loaded. A symlink (to a file or a folder) or a special file is refused: what it points to is not
    the bundle's content, so no digest could vouch for it. This is deliberately not ``scorer batch``'s
    input walk (:mod:`scorer.batch.walk`), which picks data files out of a tree and skips hidden files,
    markers and links leaving it: a digest that skipped anything could not vouch for what gets loaded."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        for name in (*dirnames, *filenames):
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise BundleLayoutError(f"{root}: refusing symlink {path.relative_to(root).as_posix()!r} in the "
                                        "bundle (a link's target is not covered by its digest): copy the file in")
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise BundleLayoutError(f"{root}: refusing {path.relative_to(root).as_posix()!r}: not a regular file")
        dirnames.sort()
        files.extend(Path(dirpath, f) for f in sorted(filenames))
    return files


def _raise(error: OSError) -> None:
    raise BundleLayoutError(f"cannot read the bundle: {error}")


def content_digest(root: Path) -> str:
    """sha256 over every file's relative path, size and content: the same for a folder and its zip.

    Nothing is skipped (``__pycache__``, ``*.pyc``, hidden folders count too), so a file added to a
    pinned bundle, bytecode included, changes the digest; symlinks are refused (see :func:`bundle_files`)."""
    h = hashlib.sha256()
    for p in sorted(bundle_files(root), key=lambda p: p.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(8, "big") + rel)
        h.update(p.stat().st_size.to_bytes(8, "big"))
        hash_file(h, p)
    return h.hexdigest()


def hash_file(h: hashlib._Hash, path: Path) -> hashlib._Hash:
    """Feed a file's bytes into ``h`` in 1 MiB blocks (never the whole file in memory)."""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def _extract_zip(source: Path, workdir: Path | None) -> Path:
    """Extract into a fresh temp dir, refusing absolute paths, ``..`` and symlinks (zip-slip)."""
    dest = Path(tempfile.mkdtemp(prefix="scorer-bundle-", dir=workdir))
    with zipfile.ZipFile(source) as zf:
        for info in zf.infolist():
            name = PurePosixPath(info.filename)
            mode = info.external_attr >> 16
            if name.is_absolute() or ".." in name.parts or info.filename.startswith(("/", "\\")) or (name.parts and ":" in name.parts[0]):
                raise BundleLayoutError(f"{source}: refusing unsafe path in zip: {info.filename!r}")
            if stat.S_ISLNK(mode):
                raise BundleLayoutError(f"{source}: refusing symlink in zip: {info.filename!r}")
        zf.extractall(dest)
    # A zip made by zipping the folder itself has one top-level directory: use it as the root.
    entries = [p for p in dest.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("artifacts", "code"):
        return entries[0]
    return dest
