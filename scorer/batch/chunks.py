"""Scoring one chunk of a file, and the shape of every output: what each process that scores runs.

With the scorer of its process (:mod:`scorer.batch.worker`), :func:`score_chunk` converts model
columns in Arrow where every value parses, isolates the rows the schema or the model refuse by
splitting the chunk in halves, and joins the kept input columns with the prediction columns
(:func:`output_table`; :func:`empty_output` when a file has no rows to score). Errors never escape:
a chunk that cannot be scored at all comes back with ``error`` set, which fails its file and only its
file (the local engine) or the job (the Spark engine, which scores its Arrow batches here too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scorer.batch import worker
from scorer.batch.files import BadRow, Chunk, decode_json_text, table_from_ipc, table_to_ipc
from scorer.core import Scorer
from scorer.errors import KeepColumnsError, SchemaError, ScorerError
from scorer.table import Table


@dataclass
class ChunkResult:
    table: pa.Table | None  # scored rows: kept input columns, then predictions
    bad: list[BadRow] = field(default_factory=list)
    error: str | None = None  # the whole chunk (so its file) cannot be scored

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "table": None if self.table is None else table_to_ipc(self.table)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, table=None if state["table"] is None else table_from_ipc(state["table"]))


def score_chunk(chunk: Chunk, keep: str, first_error_only: bool) -> ChunkResult:
    try:
        return _score_chunk(chunk, keep, first_error_only)
    except KeepColumnsError as exc:
        return ChunkResult(None, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported as this file's failure, with its class (text: opt-in)
        return ChunkResult(None, error=f"unexpected {type(exc).__name__}" + (f": {exc}" if worker.echo() else ""))


def _score_chunk(chunk: Chunk, keep: str, first_error_only: bool) -> ChunkResult:
    scorer, echo = worker.current()
    table = chunk.table
    decoded = decode_json_text(table) if chunk.json_columns else table
    frame = _model_frame(decoded, scorer, chunk.json_columns)
    good, outputs, bad = _score_bisect(scorer, frame, np.arange(len(frame)), first_error_only, echo)
    bad_rows = [BadRow(row=int(chunk.rows[p]), reason=reason, values=_row_values(decoded, p),
                       line=chunk.line_of(p)) for p, reason in bad]
    if not len(good):
        return ChunkResult(None, bad_rows)
    predictions = pd.concat(outputs, ignore_index=True) if len(outputs) > 1 else outputs[0]
    kept = table if len(good) == len(frame) else table.take(pa.array(good))
    if chunk.json_columns:
        kept = decode_json_text(kept)  # with the bad rows gone, numbers are numbers again
    return ChunkResult(output_table(kept, predictions, keep), bad_rows)


def _model_frame(table: pa.Table, scorer: Scorer, json_columns: frozenset[str] = frozenset()) -> pd.DataFrame:
    """The chunk as the frame ``scorer.score`` coerces: the schema's Arrow half first
    (:meth:`Schema.narrow_arrow`: dropped columns left out, text cast to numbers where every value
    parses as ``coerce`` would parse it), then numpy columns without a pandas conversion where the types allow."""
    if scorer.schema is not None:
        table = scorer.schema.narrow_arrow(table, json_columns)
    if len(set(table.column_names)) != table.num_columns:
        return table.to_pandas()  # the schema's coerce names the duplicate columns
    return Table.from_arrow(table).to_frame()


def _score_bisect(scorer: Scorer, frame: pd.DataFrame, positions: np.ndarray, first_only: bool, echo: bool,
                  ) -> tuple[np.ndarray, list[pd.DataFrame], list[tuple[int, str]]]:
    """Score ``frame``; if it fails, split it in halves until the failing rows are isolated."""
    if len(frame) == 0:
        return positions, [scorer.score(frame)] if frame.columns.size else [], []
    try:
        return positions, [scorer.score(frame)], []
    except ScorerError as exc:
        if len(frame) == 1:
            reason = exc.message
            if isinstance(exc, SchemaError) and exc.detail and exc.columns:
                reason = f"column {exc.columns[0]!r}: {exc.detail}"
            if echo and exc.data_detail:
                reason = f"{reason}: {exc.data_detail}"
            return positions[:0], [], [(int(positions[0]), reason)]
    mid = len(frame) // 2
    good_a, out_a, bad_a = _score_bisect(scorer, frame.iloc[:mid], positions[:mid], first_only, echo)
    if bad_a and first_only:
        return good_a, out_a, bad_a
    good_b, out_b, bad_b = _score_bisect(scorer, frame.iloc[mid:], positions[mid:], first_only, echo)
    return np.concatenate([good_a, good_b]), out_a + out_b, bad_a + bad_b


def _row_values(table: pa.Table, position: int) -> dict[str, Any]:
    return {k: v[0] for k, v in table.slice(position, 1).to_pydict().items()}


def output_table(kept: pa.Table, predictions: pd.DataFrame, keep: str) -> pa.Table:
    if keep == "none":
        columns: list[str] = []
    elif keep == "all":
        columns = [c for c in kept.column_names if c not in predictions.columns]
    else:
        columns = [c.strip() for c in keep.split(",") if c.strip()]
        missing = [c for c in columns if c not in kept.column_names]
        if missing:
            raise KeepColumnsError(f"--keep-columns names column(s) not in the input: {', '.join(missing)}")
    out = kept.select(columns)
    pred = pa.Table.from_pandas(predictions, preserve_index=False)
    for name in pred.column_names:
        out = out.append_column(name, pred.column(name))
    return out


def empty_predictions(output_columns: list[str] | None) -> pd.DataFrame:
    """The model's columns with no rows and no type yet (``prediction`` when the bundle names none)."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in output_columns or ["prediction"]})


def empty_output(schema: pa.Schema, output_columns: list[str] | None, keep: str,
                 predictions: pd.DataFrame | None = None) -> pa.Table:
    """The output of a file (or dataset) with no row to write: still its columns, the kept input columns
    with their types, then the model's (untyped unless ``predictions`` types them)."""
    if predictions is None:
        predictions = empty_predictions(output_columns)
    return output_table(schema.empty_table(), predictions, keep)


def kept_columns(names: list[str], output_columns: list[str], keep: str) -> list[str]:
    """The input columns (of ``names``) written beside the predictions: ``--keep-columns`` applied."""
    columns = empty_output(pa.schema([(n, pa.null()) for n in names]), output_columns, keep,
                           pd.DataFrame(columns=output_columns)).column_names
    return columns[: len(columns) - len(output_columns)]
