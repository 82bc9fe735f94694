"""Sharded ``scorer batch`` (``--engine local``): N runs, for instance the pods of a Kubernetes Indexed Job,
each score a deterministic share of the input files into the same output directory, and the result is
the one run's result: the same files, byte for byte, one ``manifest.json`` and ``_SUCCESS``.

* **Which shard** (:func:`resolve`): ``--shard-index I --shard-count N``; with N > 1 and no index, the
  ``JOB_COMPLETION_INDEX`` variable a Kubernetes Indexed Job sets in each pod. An index without a count,
  outside 0..N-1, or N < 1 is a usage error (exit 2, nothing written).
* **Which files** (:meth:`Shard.share`): every shard walks the whole input (the one sorted walk, and every
  check of the plan) and takes the files at positions I, I + N, I + 2N, ... of it. The share depends on
  the file names only, never on sizes, timing or which shard runs first.
* **Completion** (:func:`part`, :func:`combine`): a shard that has finished its files commits a part (its
  manifest entries, the job key and a digest of the whole listing) under ``OUT/_scorer/shards/``, then
  looks for every part of the same job and listing; when all N are there it writes ``manifest.json`` and
  then ``_SUCCESS`` (if no file failed). The manifest is made from the parts alone (its header from shard
  0's part), so two shards finishing together write the same bytes, whichever renames last. A shard
  starting (or restarting) first removes its own part and then the combined files, and a writer checks
  the parts again after writing: ``_SUCCESS`` never stands while a shard is at work (the engine,
  :mod:`scorer.batch.local`, does the file system side of this).

One run without shards is the case N = 1: the same part, the same combination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from scorer.errors import UsageError
from scorer.settings import Settings

T = TypeVar("T")

#: The variable a Kubernetes Indexed Job sets in each of its pods (``completionMode: Indexed``).
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def share(self, items: Sequence[T]) -> list[T]:
        """This shard's items of ``items`` (in the order of the sorted input walk): positions index, index +
        count, index + 2 * count, ..."""
        return list(items[self.index :: self.count])

    @property
    def name(self) -> str:
        """The part file of this shard (``part-1-of-3.json``)."""
        return f"part-{self.index}-of-{self.count}.json"

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


def resolve(settings: Settings, environ: Mapping[str, str]) -> Shard:
    """The shard this run scores, from ``--shard-index``/``--shard-count`` and, with a count above 1 and no
    index, ``JOB_COMPLETION_INDEX`` in ``environ``."""
    count, index = settings.shard_count, settings.shard_index
    if count < 1:
        raise UsageError(f"--shard-count must be at least 1, not {count}")
    if count == 1:
        if index is not None:
            raise UsageError(f"--shard-index {index} needs --shard-count (the number of shards, more than 1)")
        return Shard(0, 1)
    if index is None:
        raw = environ.get(INDEX_VARIABLE)
        if raw is None:
            raise UsageError(f"--shard-count {count} needs --shard-index, or {INDEX_VARIABLE} (set in each pod of "
                             "a Kubernetes Indexed Job)")
        try:
            index = int(raw)
        except ValueError:
            raise UsageError(f"{INDEX_VARIABLE}={raw!r} is not a shard index (0 to {count - 1})") from None
        where = f"{INDEX_VARIABLE}={index}"
    else:
        where = f"--shard-index {index}"
    if not 0 <= index < count:
        raise UsageError(f"{where} is outside the shards of --shard-count {count}: use 0 to {count - 1}")
    return Shard(index, count)


def listing_digest(names: Sequence[str]) -> str:
    """What every shard must agree on: the whole input listing (relative paths, in walk order)."""
    return hashlib.sha256(orjson.dumps(list(names))).hexdigest()


def part(shard: Shard, *, key: str, listing: str, total: int, header: dict[str, Any],
         files: list[dict[str, Any]]) -> dict[str, Any]:
    """A shard's committed part: ``files`` (its manifest entries, in share order) of a listing of ``total``
    files, and ``header`` (what the manifest says besides its files)."""
    return {"shard": [shard.index, shard.count], "key": key, "listing": listing, "total": total, "header": header,
            "files": files}


def belongs(data: Any, shard: Shard, *, key: str, listing: str) -> bool:
    """Whether ``data`` (a part read back) is ``shard``'s part of this job (same key) and input listing."""
    if not isinstance(data, dict):
        return False
    expected_files = len(range(shard.index, data.get("total", 0), shard.count))
    return (data.get("shard") == [shard.index, shard.count] and data.get("key") == key
            and data.get("listing") == listing and len(data.get("files", ())) == expected_files)


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The manifest of the whole job from every shard's part (``parts[i]`` is shard i's): shard 0's header,
    the files back in the order of the input walk, and the totals."""
    count = len(parts)
    total = parts[0]["total"]
    files = [parts[k % count]["files"][k // count] for k in range(total)]
    totals = {k: sum(f[k] for f in files) for k in ("rows_in", "rows_out", "rows_rejected")}
    totals["files"] = len(files)
    totals["files_failed"] = sum(f["status"] == "failed" for f in files)
    return {**parts[0]["header"], "files": files, "totals": totals}
