"""A saved ``PipelineModel`` compiled stage by stage and run over a batch of columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scorer.spark_native import features, linear, trees
from scorer.spark_native.base import Columns, Compiler, Stage, Unsupported
from scorer.spark_native.layout import StageFiles, read_pipeline

COMPILERS: dict[str, Compiler] = {**features.COMPILERS, **linear.COMPILERS, **trees.COMPILERS}


def compile_stage(stage: StageFiles) -> Stage:
    compiler = COMPILERS.get(stage.cls)
    if compiler is None:
        raise Unsupported(f"stage {stage.uid} ({stage.cls}): no native implementation")
    try:
        return compiler(stage)
    except Unsupported as exc:
        raise Unsupported(f"stage {stage.uid} ({stage.cls}): {exc}") from exc


@dataclass
class NativePipeline:
    path: Path
    files: list[StageFiles]
    stages: list[Stage]

    def transform(self, cols: Columns) -> Columns:
        """Every stage in order over ``cols`` (a copy is returned; inputs are not modified). Rows a
        stage drops (``handleInvalid='skip'``) are dropped from every column."""
        out = dict(cols)
        for stage in self.stages:
            keep = stage.transform(out)
            if keep is not None and not keep.all():
                out = {k: v[keep] for k, v in out.items()}
        return out


def compile_pipeline(path: Path, files: list[StageFiles] | None = None) -> NativePipeline:
    """Compile every stage; :class:`Unsupported` names the first stage that cannot be."""
    files = files if files is not None else read_pipeline(Path(path))
    return NativePipeline(Path(path), files, [compile_stage(f) for f in files])

