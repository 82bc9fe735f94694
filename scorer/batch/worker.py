"""The scorer of this process: what every process that scores chunks holds, for both engines.

The command's own process hands over the scorer it loaded (:func:`use`); a local engine's spawned
worker (:func:`init_pool_worker`) and a Spark executor's Python worker (:func:`load_once`, per task:
Spark reuses its Python workers) load the bundle once and keep it. One bundle per process.

The command resolves its source once (a registry alias to one version, downloaded once): the others
load that local copy, pinned by its digest, so every process scores the same version (:func:`describe`
names it in messages).
"""

from __future__ import annotations

import dataclasses
import logging

from scorer._memory import return_freed_memory
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.settings import Settings

_scorer: Scorer | None = None
_key: str | None = None  # what _scorer was loaded from: the pinned digest, else the bundle path
_echo = False  # --echo-bad-values: reasons also quote the offending value / the model's own message


def use(scorer: Scorer, *, echo: bool = False, key: str | None = None) -> None:
    """Score chunks in this process with an already loaded scorer."""
    global _scorer, _key, _echo
    _scorer, _key, _echo = scorer, key, echo


def load_once(bundle: str, settings: Settings) -> Scorer:
    """This process's scorer for ``bundle``, loaded (quietly: only warnings are logged) on the first call;
    later calls for the same bundle (its pinned digest, else its path) return it."""
    key = settings.bundle_digest or bundle
    if _scorer is None or _key != key:
        logging.getLogger("scorer").setLevel(logging.WARNING)
        use(Scorer.load(bundle, LoadOptions.from_settings(settings)), echo=settings.echo_bad_values, key=key)  # checks a pinned digest
    assert _scorer is not None
    return _scorer


def pinned(settings: Settings, scorer: Scorer, bundle: str) -> Settings:
    """The settings another process loads this job's bundle with: ``bundle`` (the local copy) pinned by
    the digest this process loaded, and the scoring path this process chose (``--spark-scoring auto``
    verifies once, here, not in every worker; a scikit-learn model without a plan is not compiled again,
    and one with a plan is read from the plan cache this process stored it in)."""
    pinned = dataclasses.replace(settings, bundle=bundle, bundle_digest=scorer.bundle.digest)
    path = (getattr(scorer.model, "scoring", None) or {}).get("path")
    if path in ("native", "jvm"):
        pinned = dataclasses.replace(pinned, spark_scoring="native" if path == "native" else "spark")
    elif path == "scikit-learn":
        pinned = dataclasses.replace(pinned, scoring_plan="off")
    return pinned


def init_pool_worker(bundle: str, settings: Settings) -> None:
    """ProcessPoolExecutor initializer of the local engine: load the bundle once per worker process."""
    return_freed_memory()
    load_once(bundle, settings)


def describe(scorer: Scorer) -> str:
    """The bundle a job scores with, as messages name it: the registry version or run artifact it was
    resolved to, else its name and version; then its digest."""
    info = scorer.origin.info if scorer.origin is not None else {}
    if info.get("kind") == "registry":
        what = f"models:/{info['name']}/{info['version']}"
    elif info.get("kind") == "run":
        what = f"runs:/{info['run_id']}/{info['path']}"
    else:
        what = " ".join(filter(None, (scorer.bundle.name, scorer.bundle.manifest.version)))
    return f"{what} (sha256:{scorer.bundle.digest[:12]})"


def current() -> tuple[Scorer, bool]:
    """The scorer of this process and :func:`echo`."""
    assert _scorer is not None, "worker not initialised"
    return _scorer, _echo


def echo() -> bool:
    """Whether reasons may quote the offending value (``--echo-bad-values``)."""
    return _echo
