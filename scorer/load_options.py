"""``LoadOptions``: the few settings that decide how a bundle is opened and its model loaded.

:meth:`scorer.core.Scorer.load` and :func:`scorer.model.load_model` read exactly these, so a caller
(the server, a batch engine, a test) states what loading depends on instead of passing every
setting. :meth:`LoadOptions.from_settings` picks them out of the full :class:`~scorer.settings.Settings`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from scorer.settings import ExtraColumns, MojoBackend, ScoringPlan, Settings, SparkScoring


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    bundle_digest: str = ""  # expected sha256 content digest, checked before any code or pickle is loaded
    check_requirements: bool = True
    install_requirements: bool = False
    requirements_cache: str = ""
    extra_columns: ExtraColumns = "drop"  # input columns not in the schema: drop or reject
    mojo_backend: MojoBackend = "genmodel"  # H2O MOJO bundles on the JVM: genmodel or spark
    spark_scoring: SparkScoring = "auto"  # Spark pipelines and MOJOs: native, spark (the JVM) or auto
    scoring_plan: ScoringPlan = "auto"  # scikit-learn pipelines: a compiled plan (auto, require) or off
    plan_cache: str = ""  # stored plans; empty: <tmp>/scorer-plans-<uid>

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadOptions:
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})
