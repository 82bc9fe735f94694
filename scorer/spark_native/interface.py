"""What a saved pipeline reads and answers, read from its files: the same for Spark and native scoring.

The input schema comes from the stages: a ``StringIndexer``'s input is a string column, anything
else a stage reads is numeric; columns a stage produces are not inputs, nor is the label a label
indexer reads. The output has the scikit-learn shape: a classifier gives ``prediction`` (the class
label, taken from the ``StringIndexer`` that made its label column, or an ``IndexToString`` of its
prediction) and ``probability_<class>``; a regressor ``prediction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scorer.errors import BundleLayoutError
from scorer.spark_native.base import input_names, output_names
from scorer.spark_native.layout import StageFiles

_OUTPUT_PARAMS = ("predictionCol", "probabilityCol", "rawPredictionCol")


@dataclass
class PipelineInterface:
    input_schema: dict[str, str]
    prediction_col: str
    probability_col: str  # "": a regressor (or a classifier saved without probabilities)
    classes: list[Any] | None
    output_columns: list[str]


def labels_of(stage: StageFiles) -> list[list[str]]:
    """A ``StringIndexerModel``'s labels per column (``labelsArray`` since 3.0, ``labels`` before)."""
    row = stage.rows()[0]
    if row.get("labelsArray") is not None:
        return [list(x) for x in row["labelsArray"]]
    return [list(row["labels"])]


def num_classes(stage: StageFiles) -> int:
    """How many classes a classification model scores (from its metadata, else its data)."""
    if "numClasses" in stage.meta:
        return int(stage.meta["numClasses"])
    if stage.cls.startswith("GBTClassification"):
        return 2  # Spark's GBT classifier is binary only
    row = stage.rows()[0]
    if "numClasses" in row:
        return int(row["numClasses"])
    if "pi" in row:  # NaiveBayesModel
        pi = row["pi"]
        return len(pi["values"] if isinstance(pi, dict) else pi)
    raise BundleLayoutError(f"{stage.path}: cannot tell how many classes {stage.cls} scores")


def analyse(path: Path, stages: list[StageFiles]) -> PipelineInterface:
    predictors = [s for s in stages if "predictionCol" in s.params and "featuresCol" in s.params]
    if not predictors:
        raise BundleLayoutError(f"{path}: the pipeline has no prediction stage (a classifier or regressor)")
    final = predictors[-1]
    label_col = final.param("labelCol")
    prediction_col = final.param("predictionCol") or "prediction"
    probability_col = final.param("probabilityCol") or ""
    produced: set[str] = set()
    inputs: dict[str, str] = {}
    labels: list[str] | None = None
    for stage in stages:
        outputs = output_names(stage)
        if stage.cls == "StringIndexerModel" and label_col in outputs:
            labels = labels_of(stage)[outputs.index(label_col)]  # the label indexer: not an input
        elif stage.cls == "IndexToString" and stage.param("inputCol") == prediction_col:
            labels = labels or list(stage.param("labels") or [])
        else:
            reads = input_names(stage)
            if "featuresCol" in stage.params:
                reads.append(stage.param("featuresCol"))
            kind = "string" if stage.cls == "StringIndexerModel" else "float"
            for column in reads:
                if column and column not in produced and column not in inputs:
                    inputs[column] = kind
        produced.update(outputs)
        produced.update(stage.param(p) for p in _OUTPUT_PARAMS if stage.param(p))
    classes: list[Any] | None = None
    if probability_col:
        n = num_classes(final)
        classes = labels if labels and len(labels) == n else list(range(n))
        output_columns = ["prediction", *(f"probability_{c}" for c in classes)]
    else:
        output_columns = ["prediction"]
    return PipelineInterface(inputs, prediction_col, probability_col, classes, output_columns)
