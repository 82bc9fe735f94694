"""A model's life after its first load: a new version checked beside the serving one, and the record of
reload attempts. Transport-independent: the one-process server and the multi-worker supervisor share it.

:func:`check` (run in a background thread) reads the source's revision key and, when it changed (or when
asked to check anyway), loads the new version beside the serving one and tests it:

- ``Scorer.load`` resolves the source, checks the bundle's requirements and scores the bundle's own
  sample input (its warm-up);
- when both versions have the same input schema (same columns, same types), the new one also scores the
  serving version's sample input;
- for a local source, the revision key is read again after the load: a folder still being copied is
  not swapped in (rejected as changing; the next poll retries).

Its :class:`Outcome` is one of :data:`RESULTS`: ``loaded`` (a new version, ready to swap in),
``unchanged`` (the same content digest), ``rejected`` (the serving version keeps serving) or
``unavailable`` (the source cannot be reached: a registry outage, a folder that is gone; the serving
version keeps serving and :class:`ReloadLog` counts how stale the view of the source is).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from scorer.core import Scorer
from scorer.errors import ReloadRejected, ScorerError, SourceUnavailable
from scorer.load_options import LoadOptions
from scorer.sources import is_registry, revision

log = logging.getLogger("scorer.lifecycle")

TRIGGERS = ("watch", "sighup", "admin")
RESULTS = ("loaded", "rejected", "unchanged", "unavailable")


@dataclass
class Outcome:
    result: str  # one of RESULTS
    scorer: Scorer | None = None  # the new version (result "loaded"): its owner swaps it in or closes it
    error: str | None = None  # one line: why it was rejected, or why the source is unavailable
    revision: str | None = None  # the source revision this attempt settled (None: retry at the next poll)


def read_revision(source: str) -> str | None:
    """The source's revision key, or None when it cannot be read now (a reload check then reports it)."""
    try:
        return revision(source)
    except ScorerError as exc:
        log.debug("cannot read the revision of %s: %s", source, exc.message)
        return None


def check(source: str, options: LoadOptions, current: Scorer, seen: str | None, *, force: bool) -> Outcome | None:
    """Check ``source`` for a version other than ``current`` (blocking: call it in a background thread).

    ``seen``: the revision key the serving version was loaded at. Without ``force`` (a poll), an
    unchanged key means nothing to do: None. With ``force`` (SIGHUP, the admin endpoint) the source is
    loaded anyway and compared by content digest."""
    try:
        before = revision(source)
    except ScorerError as exc:
        return Outcome("unavailable", error=_line(exc))
    if not force and before == seen:
        return None
    try:
        candidate = Scorer.load(source, options)
    except SourceUnavailable as exc:
        return Outcome("unavailable", error=_line(exc))
    except ScorerError as exc:
        return Outcome("rejected", error=_line(exc), revision=before)
    except Exception as exc:  # noqa: BLE001 - whatever a bundle's code raised, the version is rejected
        return Outcome("rejected", error=f"loading raised {type(exc).__name__}: {_line(exc)}", revision=before)
    try:
        if candidate.bundle.digest == current.bundle.digest:
            candidate.close()
            return Outcome("unchanged", revision=before)
        _smoke_test_on(candidate, current)
        if not is_registry(source) and revision(source) != before:
            candidate.close()  # not settled: this revision is not remembered, so the next poll checks again
            return Outcome("rejected", error="the source changed while the new version loaded (still being "
                           "written?); checked again at the next poll")
    except ReloadRejected as exc:
        candidate.close()
        return Outcome("rejected", error=exc.message, revision=before)
    except ScorerError as exc:  # the source is gone again
        candidate.close()
        return Outcome("unavailable", error=_line(exc))
    return Outcome("loaded", scorer=candidate, revision=before)


def _smoke_test_on(candidate: Scorer, current: Scorer) -> None:
    """The new version scores the serving version's sample input, when both take the same columns and types."""
    import pandas as pd

    sample = current.bundle.manifest.sample_input
    if not sample or candidate.schema is None or current.schema is None:
        return
    if candidate.schema.as_json() != current.schema.as_json():
        return
    frame = pd.DataFrame(sample["data"], columns=sample["columns"])
    try:
        out = candidate.score(frame)
    except ScorerError as exc:
        raise ReloadRejected(f"the new version failed on the serving version's sample input: {exc.message}") from exc
    except Exception as exc:  # noqa: BLE001
        raise ReloadRejected(f"the new version raised {type(exc).__name__} on the serving version's sample input") from exc
    if len(out) != len(frame):
        raise ReloadRejected(f"the new version returned {len(out)} rows for the {len(frame)} rows of the serving "
                             "version's sample input")


def _line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, ScorerError) else str(exc) or type(exc).__name__
    return " ".join(text.split())


@dataclass
class ReloadLog:
    """What ``/metadata`` shows under ``"reload"``: attempts by result, the last attempt, when the serving
    version was loaded, and how stale the view of the source is while it cannot be reached."""

    interval_s: float
    attempts: dict[str, int] = field(default_factory=dict)
    last_attempt: dict[str, Any] | None = None
    last_loaded_at: float | None = None  # unix seconds: the first load, then each reload that swapped
    last_reached: float | None = None  # unix seconds: the last time the source answered
    unreachable: bool = False

    def loaded(self, at: float | None = None) -> None:
        self.last_loaded_at = self.last_reached = at if at is not None else time.time()

    def reached(self, at: float | None = None) -> None:
        """The source answered (a poll found it unchanged)."""
        self.unreachable = False
        self.last_reached = at if at is not None else time.time()

    def record(self, trigger: str, outcome: Outcome, seconds: float, at: float | None = None) -> None:
        at = at if at is not None else time.time()
        self.attempts[outcome.result] = self.attempts.get(outcome.result, 0) + 1
        self.last_attempt = {"at": round(at, 3), "trigger": trigger, "result": outcome.result,
                             "error": outcome.error, "seconds": round(seconds, 3)}
        if outcome.result == "unavailable":
            if not self.unreachable:
                self.unreachable = True
                self.last_reached = self.last_reached or at
        else:
            self.unreachable = False
            self.last_reached = at
        if outcome.result == "loaded":
            self.last_loaded_at = at

    def stale_seconds(self, now: float | None = None) -> float | None:
        """Seconds since the source last answered, while it does not; None while it does."""
        if not self.unreachable or self.last_reached is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - self.last_reached)

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        stale = self.stale_seconds(now)
        return {
            "interval_s": self.interval_s,
            "attempts": dict(self.attempts),
            "last_attempt": self.last_attempt,
            "last_loaded_at": round(self.last_loaded_at, 3) if self.last_loaded_at is not None else None,
            "registry_stale_s": round(stale, 3) if stale is not None else None,
        }

    def save(self, path: str) -> None:
        """Written whole, then renamed over ``path``: a reader never sees half of it."""
        import orjson

        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(self.__dict__))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str, interval_s: float) -> ReloadLog:
        import orjson

        try:
            with open(path, "rb") as fh:
                return cls(**orjson.loads(fh.read()))
        except (OSError, ValueError, TypeError):
            return cls(interval_s=interval_s)
