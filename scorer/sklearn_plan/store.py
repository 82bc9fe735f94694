"""Plans stored as data: one folder per plan, ``plan.json`` and ``arrays.npz``, never a pickle.

The folder's name is the plan's key: a hash of the bundle's content digest and the versions that decide
what a plan computes (scorer, numpy, scikit-learn, the stored format), so a new scorer, numpy or
scikit-learn, or another bundle, never reuses a plan. ``checksum`` holds the sha256 of ``plan.json`` and
``arrays.npz``; a folder whose checksum, format, digest or versions differ, or that fails to load
(``numpy.load(allow_pickle=False)``: object arrays are refused), is ignored, and the plan is compiled
again. Loading needs numpy alone: no scikit-learn, no scipy, no pandas.

A folder is written beside its final name and renamed into place, so a reader sees a whole plan or
none. The cache directory is :func:`scorer.private_dir.private_dir` for writing; a directory baked into
an image (owned by root, read-only) is read when nobody but root or this user can change it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from scorer._version import __version__
from scorer.sklearn_plan.base import OPS, Array, EstimatorOp, Op
from scorer.sklearn_plan.pipeline import Branch, Plan
import scorer.sklearn_plan.steps  # noqa: F401  (registers every step)

FORMAT = 1


class StoredPlan:
    """A plan with what the model around it needs: the label array and the input schema, and the
    record of its verification."""

    def __init__(self, plan: Plan, labels: Array | None, input_schema: dict[str, str] | None,
                 verified: dict[str, Any]) -> None:
        self.plan, self.labels, self.input_schema, self.verified = plan, labels, input_schema, verified


def versions() -> dict[str, str]:
    """The versions a stored plan depends on (read from the installed distributions, importing nothing),
    and a fingerprint of this package's code (a changed op never reuses a plan an older one stored)."""
    found = {"format": str(FORMAT), "scorer": __version__, "code": _code_fingerprint(), "numpy": np.__version__}
    try:
        found["scikit-learn"] = metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        found["scikit-learn"] = "absent"
    return found


@functools.cache
def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def key(bundle_digest: str) -> str:
    text = json.dumps({"bundle": bundle_digest, **versions()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def save(cache: Path, bundle_digest: str, stored: StoredPlan) -> Path:
    """Write the plan under ``cache`` (which the caller made private) and return its folder."""
    arrays: dict[str, Array] = {}

    def ref(o: Op) -> dict[str, Any]:
        meta, named = o.state()
        names = {}
        for name, value in named.items():
            value = np.asarray(value)
            if value.dtype.kind == "O":
                raise TypeError(f"{o.kind}: array {name!r} has object dtype")
            slot = f"a{len(arrays)}"
            arrays[slot] = value
            names[name] = slot
        return {"kind": o.kind, "meta": meta, "arrays": names}

    plan = stored.plan
    document = {
        "bundle_digest": bundle_digest,
        "versions": versions(),
        "inputs": plan.inputs,
        "input_schema": stored.input_schema,
        "branches": [{"name": b.name, "columns": b.columns, "ops": [ref(o) for o in b.ops]} for b in plan.branches],
        "ops": [ref(o) for o in plan.ops],
        "estimator": ref(plan.estimator),
        "finite": plan.finite,
        "labels": None,
        "verified": stored.verified,
    }
    if stored.labels is not None:
        labels = np.asarray(stored.labels)
        if labels.dtype.kind == "O":
            labels = labels.astype(str) if all(isinstance(v, str) for v in labels.tolist()) else labels
        document["labels"] = ref_array(arrays, labels)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    data = json.dumps(document, sort_keys=True, allow_nan=True).encode()
    npz = buffer.getvalue()
    final = cache / key(bundle_digest)
    work = Path(tempfile.mkdtemp(prefix=".plan-", dir=cache))
    try:
        (work / "plan.json").write_bytes(data)
        (work / "arrays.npz").write_bytes(npz)
        (work / "checksum").write_text(_checksum(data, npz) + "\n")
        os.chmod(work, 0o755)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def ref_array(arrays: dict[str, Array], value: Array) -> str:
    if value.dtype.kind == "O":
        raise TypeError("labels have object dtype")
    slot = f"a{len(arrays)}"
    arrays[slot] = value
    return slot


def _checksum(data: bytes, npz: bytes) -> str:
    return hashlib.sha256(hashlib.sha256(data).digest() + hashlib.sha256(npz).digest()).hexdigest()


class Rejected(Exception):
    """A stored plan that is not used; the message says why (corrupt, another version, unsafe)."""


def readable(cache: Path) -> bool:
    """Whether ``cache`` is a directory only root or this user can change (a plan is data, but a
    changed one would answer wrongly)."""
    try:
        st = os.lstat(cache)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022)


def load(cache: Path, bundle_digest: str) -> StoredPlan | None:
    """The stored plan of this bundle under these versions, None when there is none; raise Rejected
    when one is there but cannot be used."""
    folder = cache / key(bundle_digest)
    if not folder.is_dir():
        return None
    try:
        data = (folder / "plan.json").read_bytes()
        npz = (folder / "arrays.npz").read_bytes()
        expected = (folder / "checksum").read_text().strip()
    except OSError as exc:
        raise Rejected(f"{folder}: unreadable: {exc.strerror or exc}") from None
    if _checksum(data, npz) != expected:
        raise Rejected(f"{folder}: checksum mismatch (a changed or partial file)")
    try:
        document = json.loads(data)
        if document.get("bundle_digest") != bundle_digest or document.get("versions") != versions():
            raise Rejected(f"{folder}: made for another bundle or other versions")
        with np.load(io.BytesIO(npz), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        return _rebuild(document, arrays)
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected(f"{folder}: cannot be read: {type(exc).__name__}: {exc}") from None


def _rebuild(document: dict[str, Any], arrays: dict[str, Array]) -> StoredPlan:
    def op_of(ref: dict[str, Any]) -> Op:
        cls = OPS[ref["kind"]]
        return cls.from_state(ref["meta"], {name: arrays[slot] for name, slot in ref["arrays"].items()})

    estimator = op_of(document["estimator"])
    if not isinstance(estimator, EstimatorOp):
        raise TypeError("the stored estimator is not an estimator op")
    plan = Plan(
        inputs=list(document["inputs"]),
        branches=[Branch(b["name"], list(b["columns"]), [op_of(r) for r in b["ops"]]) for b in document["branches"]],
        ops=[op_of(r) for r in document["ops"]],
        estimator=estimator,
        finite=bool(document["finite"]),
    )
    labels = arrays[document["labels"]] if document["labels"] is not None else None
    return StoredPlan(plan, labels, document["input_schema"], document["verified"])
