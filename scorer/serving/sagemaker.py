"""SageMaker's hosting and Batch Transform contract, as far as the server has to know it.

SageMaker runs the image as ``docker run <image> serve`` (the image's entrypoint is ``scorer``, so that
is ``scorer serve``), with the model under ``/opt/ml/model``, and talks to port 8080: ``GET /ping``
(readiness), ``POST /invocations`` (scoring) and, before a Batch Transform job, ``GET
/execution-parameters``, which answers :func:`execution_parameters`.

Batch Transform with ``SplitType=Line`` cuts each input file into mini-batches of whole lines of at
most ``MaxPayloadInMB`` and POSTs each to ``/invocations`` with the job's ``ContentType`` and
``Accept``; with ``AssembleWith=Line`` it joins the answers line by line into ``<file>.out``. For that
``.out`` to hold one line per input record:

* the request is a bare ``text/csv`` (no ``header`` parameter) and only the first mini-batch of a file
  with a header line carries it: :mod:`scorer.codecs` tells a header line from a data row by the
  schema's column names;
* the answer to ``text/csv`` on ``/invocations`` (:data:`CSV_LINES_PATHS`) is one line per row with no
  header line, and ``application/jsonlines`` one JSON object per line. ``/predict`` keeps its header
  line; ``Accept: text/csv; header=present|absent`` chooses on either path.

A JSON answer (``{"predictions": [...]}``, the default) is one document per mini-batch: give the job an
``Accept`` of ``text/csv`` or ``application/jsonlines``.
"""

from __future__ import annotations

from typing import Any

from scorer.settings import Settings

#: Paths whose plain ``text/csv`` answer has no header line (SageMaker's scoring route).
CSV_LINES_PATHS = frozenset({"/invocations"})

MIB = 1 << 20
#: Batch Transform refuses MaxConcurrentTransforms × MaxPayloadInMB above this.
PAYLOAD_BUDGET_MB = 100


def execution_parameters(settings: Settings) -> dict[str, Any]:
    """``GET /execution-parameters``: the defaults this server asks a Batch Transform job for (the job's
    own settings win).

    ``MaxConcurrentTransforms``: the server's processes (``workers``; 0 means 1 for ``serve``).
    ``BatchStrategy``: ``MULTI_RECORD`` (a mini-batch of many lines is one request, coalesced with the
    others into model calls). ``MaxPayloadInMB``: the request body limit in whole MiB (``max_body_bytes``
    rounded down, so no mini-batch is refused as too large), at most 100 / MaxConcurrentTransforms (the
    job's limit on their product), and at least 1 (a body limit under 1 MiB cannot be told to Batch
    Transform: its larger mini-batches get 413)."""
    concurrency = max(1, settings.workers)
    payload = min(settings.max_body_bytes // MIB, PAYLOAD_BUDGET_MB // concurrency)
    return {"MaxConcurrentTransforms": concurrency, "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": max(1, payload)}
