"""The bad-row policy (``--bad-rows``, ``--max-rejected-rows``), for both engines.

A bad row is a malformed record or a row the schema or the model refuses. With ``fail`` the first
one fails its file (the local engine) or the job (the Spark engine); with ``reject`` bad rows are
written to the rejects (``<output>.rejects.jsonl``, or ``<output>/_rejects/``) until more than
``max_rejected_rows`` of them fail the file (or the job) after all. The failure messages name the
file, the row where known and the reason, never the values (those are only in the rejects).
"""

from __future__ import annotations

from dataclasses import dataclass

from scorer.settings import Settings


@dataclass(frozen=True)
class BadRowPolicy:
    reject: bool  # --bad-rows reject; else fail
    max_rejected: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BadRowPolicy:
        return cls(settings.bad_rows == "reject", settings.max_rejected_rows)

    @property
    def first_only(self) -> bool:
        """Only the first bad row matters (scoring may stop looking at it)."""
        return not self.reject

    def failure(self, where: str, reason: str) -> str:
        """Why a file (or the job) fails on its first bad row under ``--bad-rows fail``."""
        return f"{where}: {reason}"

    def over_limit(self, rejected: int) -> bool:
        """Whether ``rejected`` rows (all so far) are more than may be rejected."""
        return rejected > self.max_rejected

    def limit_failure(self, where: str, reason: str) -> str:
        """Why a file (or the job) fails for rejecting too many rows; the first one named."""
        return f"more than {self.max_rejected} rejected rows (first: {where}: {reason})"
