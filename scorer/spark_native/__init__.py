"""Spark ML ``PipelineModel`` directories scored without Spark: read with pyarrow, run as numpy.

A saved pipeline is JSON metadata plus Parquet data (:mod:`.layout`). Each supported stage is
compiled into a :class:`~.base.Stage` (feature transformers in :mod:`.features`, predictors in
:mod:`.trees` and :mod:`.linear`) whose formulas are copied from Spark's own source; any stage
without a compiler makes the whole pipeline :class:`~.base.Unsupported`, and the caller keeps
Spark. :mod:`.pipeline` runs the stages over a batch of columns.

Columns (:data:`~.base.Columns`): a scalar column is a 1-D array (``float64`` for numbers, where
NaN is a missing value: scorer hands Spark pandas NaN as null, so native and Spark agree; ``object``
for strings, ``None`` missing); a vector column is a 2-D ``float64`` array (sparse vectors dense).
"""
