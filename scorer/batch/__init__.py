"""``scorer batch``: score files offline, on this machine (``--engine local``) or on Spark (``--engine spark``).

The package is named after the command. Its engine-independent job model, shared by both engines:

* :mod:`~scorer.batch.plan`: the checks made before anything is written (usage errors, exit 2);
* :mod:`~scorer.batch.walk`: the one input walk, which files under a directory are scored;
* :mod:`~scorer.batch.files`: the file formats, streaming readers (chunks, bad records) and writers,
  and the output naming;
* :mod:`~scorer.batch.chunks`: scoring one chunk, and the shape of every output (kept columns, then
  predictions; an empty input's output still has its columns);
* :mod:`~scorer.batch.rejects`: the bad-row policy (``--bad-rows``, ``--max-rejected-rows``);
* :mod:`~scorer.batch.worker`: the scorer of a process that scores chunks, loaded once;
* :mod:`~scorer.batch.shards`: which share of the files a sharded run scores, and the one manifest
  made of every shard's part (``--engine local`` only: Spark shares the work between its own tasks);
* exit codes: :func:`scorer.errors.exit_code`, the same table as every other command's.

The engines, which differ only in how chunks are scheduled and written and never import each other:
:mod:`~scorer.batch.local` (this process and spawned workers, one committed output per input file) and
:mod:`~scorer.batch.spark` (Spark tasks, one dataset committed by Spark). :func:`run` picks one.
Nothing is imported here beyond the error table: spawned workers and Spark's Python workers import
this package to reach the modules they run.
"""

from __future__ import annotations

import logging
import sys

from scorer.errors import BundleError, ScorerError, UsageError, exit_code
from scorer.settings import Settings

log = logging.getLogger("scorer.batch")


def run(settings: Settings) -> int:
    """The whole ``scorer batch`` command, on the engine ``settings.engine`` names. Returns the exit code."""
    if settings.engine == "spark" and (settings.shard_count != 1 or settings.shard_index is not None):
        return fail(UsageError("--shard-count and --shard-index are for --engine local: Spark shares the input "
                               "between its own tasks (run one --engine spark job)"))
    if settings.engine == "spark":
        from scorer.batch import spark

        engine = spark.run
    else:
        from scorer.batch import local

        engine = local.run
    try:
        return engine(settings)
    except ScorerError as exc:
        return fail(exc)


def fail(exc: ScorerError) -> int:
    """Report the error that ends the command; its exit code."""
    report(exc)
    return exit_code(exc)


def report(exc: ScorerError) -> None:
    """One line for an error that ends the command: a usage error or a bundle that fails to load on
    stderr (before any work: the operator's mistake), a failed job in the log."""
    if isinstance(exc, UsageError):
        print(f"scorer batch: {exc.message}", file=sys.stderr)
    elif isinstance(exc, BundleError):
        print(f"scorer batch: bundle failed to load: {exc.message}", file=sys.stderr)
    else:
        log.error("batch failed: %s", exc.message)
