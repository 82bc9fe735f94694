"""A bundle's ``requirements.txt`` against the running environment: check it, or install what is missing.

Default (the image already has everything): every unmet requirement is listed in one
:class:`RequirementsError` before anything in the bundle is imported. Opt-in
(``install_requirements``): the unmet requirements are installed with pip into a private cache
directory that is put first on ``sys.path``. Everything the environment already has is passed to
pip as a constraint, so an install never changes the version of a package the scorer uses, and
copies of those packages that pip puts in the cache are removed again. Index, proxy and CA
settings are pip's own (``PIP_INDEX_URL``, ``PIP_CERT``, ...); option lines in the bundle's
file (``-i``, ``--extra-index-url``) are ignored.

What is imported from the cache is what pip installed for this bundle, and nothing else:

- the cache directory is private (:func:`scorer.private_dir.private_dir`: 0700, ours, no symlink,
  safe parents) or the load fails;
- an install lives in ``<cache>/<key>``, the key a hash of the Python version and platform, the
  bundle's content digest, the requirements installed and the constraints (the environment's
  versions), so another bundle, another pin or another image never reuses it;
- pip runs with ``--no-compile`` and the install is imported source-only (:mod:`scorer._source_only`:
  no bytecode read or written there), so the install holds exactly what its RECORD files list; before an install is used
  (and right after it is made) every file in it is checked against them
  (:func:`scorer.record.verify_install`). One that fails is logged (naming the first bad file)
  and replaced by a fresh install.
- URL user info (index credentials) is masked in every log line and error this module writes.

An MLflow model directory's ``requirements.txt`` (MLflow writes one) is checked the same way, except
its ``mlflow``, ``mlflow-skinny`` and ``mlflow-tracing`` pins when the model loads natively (the
sklearn and spark flavors import no MLflow): :func:`bundle_requirements`. Likewise a Spark ML
pipeline's or H2O MOJO's pins on the JVM path's packages (pyspark, py4j, Sparkling Water) when
pyspark is not installed and ``spark_scoring`` is not ``spark``: such a bundle then scores natively
(:mod:`scorer.native_scoring`), as in the main image, which has no Java and no pyspark.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import metadata, util
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from scorer import _source_only
from scorer.bundle import Bundle
from scorer.errors import BundleLayoutError, RequirementsError
from scorer.mlflow_model import MLFLOW_DISTRIBUTIONS
from scorer.private_dir import UnsafeDirectory, private_dir
from scorer.record import dist_infos, installed_path, verify_install

log = logging.getLogger("scorer.requirements")

PIP_TIMEOUT_SECONDS = 600
_USERINFO = re.compile(r"(?<=://)[^/\s]+@")


def redact(text: str) -> str:
    """``text`` with the user info of every URL in it (``https://user:token@host``) masked."""
    return _USERINFO.sub("****@", text)


def read_requirements(req_file: Path) -> list[Requirement]:
    """The requirements in ``req_file`` that apply here (markers evaluated); options are skipped."""
    reqs: list[Requirement] = []
    for lineno, line in enumerate(req_file.read_text().splitlines(), 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            log.warning("requirements.txt:%d: option line ignored: %s", lineno, line.split()[0])
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(redact(f"{req_file}:{lineno}: cannot parse {line!r}: {exc}")) from None
        if req.marker is not None and not req.marker.evaluate():
            continue
        if req.url:
            log.warning("requirements.txt:%d: URL requirement cannot be checked: %s", lineno, redact(line))
        reqs.append(req)
    return reqs


def unmet(reqs: list[Requirement]) -> list[tuple[Requirement, str]]:
    """Each requirement the environment does not meet, with why (``not installed``/``installed X``)."""
    missing: list[tuple[Requirement, str]] = []
    for req in reqs:
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append((req, "not installed"))
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append((req, f"installed {installed}"))
    return missing


def _listing(req_file: Path, missing: list[tuple[Requirement, str]]) -> str:
    return redact(f"{req_file}: {len(missing)} requirement(s) not met by this environment: "
                  + "; ".join(f"{req} ({why})" for req, why in missing))


def _jvm_distribution(req: Requirement) -> bool:
    """pyspark, py4j and Sparkling Water (``h2o-pysparkling*``): what only the JVM path imports."""
    name = canonicalize_name(req.name)
    return name in ("pyspark", "py4j") or name.startswith("h2o-pysparkling")


def _jvm_flavor(bundle: Bundle) -> bool:
    """Whether the bundle's model is a Spark ML pipeline or an H2O MOJO (not custom code)."""
    if bundle.mlflow is not None:
        return bundle.mlflow.loader == "spark"
    try:
        return bundle.custom_code() is None and bundle.default_model()[0] in ("spark", "h2o")
    except BundleLayoutError:
        return False  # reported when the model loads


def bundle_requirements(bundle: Bundle, req_file: Path, spark_scoring: str = "auto") -> list[Requirement]:
    """The bundle's requirements that apply to how it is loaded: for an MLflow model loaded natively,
    all but MLflow's own distributions; for a Spark ML pipeline or H2O MOJO scored natively (pyspark not
    installed, ``spark_scoring`` not ``spark``), all but the JVM path's packages. Every other line counts."""
    reqs = read_requirements(req_file)
    if spark_scoring != "spark" and util.find_spec("pyspark") is None and _jvm_flavor(bundle):
        skipped = [str(r) for r in reqs if _jvm_distribution(r)]
        if skipped:
            log.info("%s: not checked (no pyspark here: the model scores natively): %s", req_file, ", ".join(skipped))
        reqs = [r for r in reqs if not _jvm_distribution(r)]
    if bundle.mlflow is None:
        return reqs
    if not bundle.mlflow.native:
        return [_met_by_skinny(r) for r in reqs]
    skipped = [str(r) for r in reqs if canonicalize_name(r.name) in MLFLOW_DISTRIBUTIONS]
    if skipped:
        log.debug("%s: not checked (the %s flavor loads without MLflow): %s", req_file, bundle.mlflow.loader,
                  ", ".join(skipped))
    return [r for r in reqs if canonicalize_name(r.name) not in MLFLOW_DISTRIBUTIONS]


def _met_by_skinny(req: Requirement) -> Requirement:
    """MLflow writes a pin on ``mlflow`` into every model's requirements; scorer[mlflow] installs
    ``mlflow-skinny``, the same ``mlflow`` package without the server and UI. Without ``mlflow`` itself,
    the pin is checked against ``mlflow-skinny`` (same version specifier)."""
    if canonicalize_name(req.name) != "mlflow":
        return req
    try:
        metadata.version("mlflow")
        return req
    except metadata.PackageNotFoundError:
        return Requirement(f"mlflow-skinny{req.specifier}")


def check_requirements(bundle: Bundle, spark_scoring: str = "auto") -> None:
    """Every pin in requirements.txt must be met by the running environment; list all that are not."""
    req_file = bundle.root / "requirements.txt"
    if req_file.is_file() and (missing := unmet(bundle_requirements(bundle, req_file, spark_scoring))):
        raise RequirementsError(_listing(req_file, missing))


def default_cache_dir() -> Path:
    """``<tmp>/scorer-requirements-<uid>``: per user, and in a read-only container (only /tmp is
    writable there, HOME may not exist) it is on the tmpfs."""
    return Path(tempfile.gettempdir()) / f"scorer-requirements-{os.geteuid()}"


def install_key(bundle_digest: str, wanted: list[str], constraints: list[str]) -> str:
    """The name of an install: a hash of everything that decides what pip puts there."""
    material = json.dumps({
        "python": sys.version, "platform": sysconfig.get_platform(), "cache_tag": sys.implementation.cache_tag,
        "bundle": bundle_digest, "requirements": sorted(wanted), "constraints": sorted(constraints),
    }, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def ensure_requirements(bundle: Bundle, cache_dir: str | Path = "", spark_scoring: str = "auto") -> None:
    """Install the bundle's unmet requirements into the private ``cache_dir`` (reused across restarts
    when it is a volume, once every file checks out against its RECORD) and put them first on
    ``sys.path``; raise with one line when the directory is unsafe or with pip's own error when the
    install fails. Its modules are compiled from source, never from bytecode (:mod:`scorer._source_only`)."""
    req_file = bundle.root / "requirements.txt"
    if not req_file.is_file() or not (missing := unmet(bundle_requirements(bundle, req_file, spark_scoring))):
        return
    loaded = _loaded_distributions()
    clash = [f"{req} (installed {why.removeprefix('installed ')}, already imported by the scorer)"
             for req, why in missing if canonicalize_name(req.name) in loaded]
    if clash:
        raise RequirementsError(redact(
            f"{req_file}: cannot change packages the scorer itself runs on: {'; '.join(clash)}. "
            "Build an image that has these versions instead."
        ))
    wanted = sorted(str(req) for req, _ in missing)
    names: set[str] = {canonicalize_name(req.name) for req, _ in missing}
    have = _installed_versions()
    constraints = [f"{n}=={v}" for n, v in sorted(have.items()) if n not in names]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache = private_dir(cache)
        target = cache / install_key(bundle.digest, wanted, constraints)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one installer per cache directory (workers, replicas)
            _discard_abandoned(cache)
            problem = _untrusted(target, names) if os.path.lexists(target) else None
            if problem:
                log.warning("requirements cache %s: %s; installing again", target, problem)
            if problem or not os.path.lexists(target):
                _install(wanted, constraints, have, names, cache, target, req_file)
    except UnsafeDirectory as exc:
        raise RequirementsError(f"requirements_cache {exc}; use a directory only this user can write (0700)") from None
    except OSError as exc:
        raise RequirementsError(
            f"{req_file}: cannot use {cache} to install missing requirements ({exc.strerror or exc}); "
            "point requirements_cache at a writable directory"
        ) from None
    _source_only.add([str(target)])  # no .pyc read or written there: it would be a file no RECORD lists
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    if still := unmet(read_requirements(req_file)):
        raise RequirementsError(_listing(req_file, still) + f" (after installing into {target})")


def _untrusted(target: Path, names: set[str]) -> str | None:
    if not stat.S_ISDIR(target.lstat().st_mode):
        return "not a directory"
    return verify_install(target, names)


def _discard_abandoned(cache: Path) -> None:
    """Staging directories left by an installer that died (only the lock holder makes them)."""
    for path in cache.glob(".staging-*"):
        shutil.rmtree(path, ignore_errors=True)


def _install(wanted: list[str], constraints: list[str], have: dict[str, str], names: set[str],
             cache: Path, target: Path, req_file: Path) -> None:
    shown = redact(" ".join(wanted))
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
    try:
        constraints_file = staging / "constraints.txt"
        constraints_file.write_text("".join(f"{c}\n" for c in constraints))
        site = staging / "site"
        cmd = [sys.executable, "-P", "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
               "--no-warn-script-location", "--no-compile", "--target", str(site),
               "--constraint", str(constraints_file), *wanted]
        log.info("installing %d missing requirement(s) into %s: %s", len(wanted), target, shown)
        started = time.monotonic()
        try:
            result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                                    timeout=PIP_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RequirementsError(
                f"{req_file}: installing {shown} did not finish in {PIP_TIMEOUT_SECONDS}s; "
                "is the package index reachable?"
            ) from None
        if result.returncode != 0:
            raise RequirementsError(
                f"{req_file}: could not install the missing requirement(s) {shown} (the versions "
                f"already installed here are constraints): pip said: {redact(_pip_error(result.stdout))} "
                "(is the package index reachable from here? pip reads PIP_INDEX_URL, PIP_FIND_LINKS, PIP_CERT "
                "and proxy variables)"
            )
        pruned = _prune_duplicates(site, have, names)
        if problem := verify_install(site, names):
            raise RequirementsError(
                f"{req_file}: installed {shown}, but {problem}: a package's RECORD does not describe "
                "what it installs, so the install cannot be checked later"
            )
        if os.path.lexists(target):
            os.rename(target, staging / "untrusted")  # removed with the staging directory
        os.rename(site, target)
        log.info("installed %s in %.1fs (%d copies of packages already present removed)",
                 shown, time.monotonic() - started, pruned)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pip_error(output: str) -> str:
    """pip's error lines (and the resolver's explanation under them), without its advice."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("ERROR")), max(len(lines) - 5, 0))
    kept: list[str] = []
    for line in lines[start:]:
        if line.startswith(("To fix this", "ERROR: ResolutionImpossible")):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept)[:2000]


def _installed_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(canonicalize_name(name), dist.version)
    return versions


def _loaded_distributions() -> set[str]:
    """Distributions with a module already imported in this process (they cannot be swapped now)."""
    top = {name.partition(".")[0] for name in list(sys.modules)}
    return {canonicalize_name(d) for mod, dists in metadata.packages_distributions().items() if mod in top for d in dists}


def _prune_duplicates(site: Path, have: dict[str, str], wanted: set[str]) -> int:
    """pip --target reinstalls dependencies the environment already has (same version, by the
    constraints); remove those copies, RECORD and dist-info included, so the environment's own stay
    in use and what remains is exactly what the other RECORDs list. Files another kept distribution
    also lists stay."""
    drop: list[tuple[Path, metadata.Distribution]] = []
    keep: list[tuple[Path, metadata.Distribution]] = []
    for info, dist in dist_infos(site):
        name = canonicalize_name(dist.metadata["Name"] or "")
        (keep if name in wanted or have.get(name) != dist.version else drop).append((info, dist))
    kept_files = {installed_path(str(f)) for _, dist in keep for f in dist.files or ()}
    for info, dist in drop:
        for entry in dist.files or ():
            rel = installed_path(str(entry))
            if rel is not None and rel not in kept_files and os.path.lexists(site / rel):
                (site / rel).unlink()
        shutil.rmtree(info, ignore_errors=True)
    for directory in sorted((p for p in site.rglob("*") if p.is_dir() and not p.is_symlink()),
                            key=lambda p: -len(p.parts)):
        if not any(directory.iterdir()):
            directory.rmdir()
    return len(drop)
