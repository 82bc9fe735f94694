"""A saved Spark ML model directory as data: each stage's class, params and Parquet tables.

``<dir>/metadata/part-00000`` holds one JSON line (class, uid, sparkVersion, ``paramMap`` and, since
Spark 2.4, ``defaultParamMap``); ``<dir>/data/`` (and ``treesMetadata/`` for ensembles) hold Parquet.
A ``PipelineModel`` keeps its stages under ``stages/<index>_<uid>``; nested pipelines are flattened.
Nothing here imports pyspark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scorer.errors import BundleCodeError

if TYPE_CHECKING:  # imported by the stages that read Parquet tables
    import pyarrow as pa


@dataclass
class StageFiles:
    """One saved stage (or model) directory."""

    path: Path
    meta: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)  # defaultParamMap overlaid with paramMap

    @property
    def cls(self) -> str:
        """The short class name: ``StringIndexerModel``, ``GBTClassificationModel``."""
        return str(self.meta.get("class", "")).rsplit(".", 1)[-1]

    @property
    def uid(self) -> str:
        return str(self.meta.get("uid", ""))

    @property
    def spark_version(self) -> str:
        return str(self.meta.get("sparkVersion", ""))

    def param(self, name: str, default: Any = None) -> Any:
        """A param's value as saved (set, else default), or ``default`` when neither was saved."""
        return self.params.get(name, default)

    def is_set(self, name: str) -> bool:
        """Whether the param was set explicitly (not only a default)."""
        return name in self.meta.get("paramMap", {})

    def table(self, sub: str = "data") -> pa.Table:
        """The Parquet table under ``<dir>/<sub>`` (all part files)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        where = self.path / sub
        files = sorted(p for p in where.glob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise BundleCodeError(f"{where}: no Parquet data")
        # ParquetFile, not read_table: the same table from one file, without pyarrow.dataset (which imports pandas)
        return pa.concat_tables([pq.ParquetFile(f).read() for f in files], promote_options="default")

    def rows(self, sub: str = "data") -> list[dict[str, Any]]:
        return self.table(sub).to_pylist()


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON line in ``<path>/metadata``."""
    where = Path(path) / "metadata"
    files = sorted(p for p in where.glob("part-*") if not p.name.endswith(".crc")) if where.is_dir() else []
    if not files:
        raise BundleCodeError(f"{path}: not a saved Spark ML model (no metadata/part-00000)")
    try:
        line = files[0].read_text("utf-8").splitlines()[0]
        meta = json.loads(line)
    except (OSError, ValueError, IndexError) as exc:
        raise BundleCodeError(f"{files[0]}: unreadable Spark ML metadata: {exc}") from exc
    if not isinstance(meta, dict) or "class" not in meta:
        raise BundleCodeError(f"{files[0]}: Spark ML metadata without a class")
    return meta


def read_stage(path: Path, meta: dict[str, Any] | None = None) -> StageFiles:
    meta = meta if meta is not None else read_metadata(path)
    params = {**(meta.get("defaultParamMap") or {}), **(meta.get("paramMap") or {})}
    return StageFiles(Path(path), meta, params)


def read_pipeline(path: Path) -> list[StageFiles]:
    """The stages of a saved ``PipelineModel`` in order (nested pipelines flattened); a saved single
    model (not a pipeline) is a pipeline of one stage."""
    path = Path(path)
    top = read_stage(path)
    if top.cls != "PipelineModel":
        return [top]
    uids = list(top.param("stageUids") or [])
    folder = path / "stages"
    found: dict[int, Path] = {}
    for d in folder.iterdir() if folder.is_dir() else ():
        index, _, _ = d.name.partition("_")
        if d.is_dir() and index.isdigit():
            found[int(index)] = d
    if sorted(found) != list(range(len(uids))):
        raise BundleCodeError(f"{path}: stages/ holds {len(found)} stage folders, metadata lists {len(uids)}")
    stages: list[StageFiles] = []
    for i, uid in enumerate(uids):
        saved = read_metadata(found[i]).get("uid")
        if saved != uid:
            raise BundleCodeError(f"{found[i]}: stage uid {saved!r}, pipeline metadata says {uid!r}")
        stages.extend(read_pipeline(found[i]))
    return stages
