"""A bundle's ``requirements.txt`` against the running environment: check it, or install what is missing.

Default (the image already has everything): every unmet requirement is listed in one
:class:`RequirementsError` before anything in the bundle is imported. Opt-in
(``install_requirements``): the unmet requirements are installed with pip into a writable cache
directory that is put first on ``sys.path``. Everything the environment already has is passed to
pip as a constraint, so an install never changes the version of a package the scorer uses, and
copies of those packages that pip puts in the cache are removed again. Index, proxy and CA
settings are pip's own (``PIP_INDEX_URL``, ``PIP_CERT``, ...); option lines in the bundle's
file (``-i``, ``--extra-index-url``) are ignored.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from scorer.bundle import Bundle
from scorer.errors import RequirementsError

log = logging.getLogger("scorer.requirements")

PIP_TIMEOUT_SECONDS = 600
_COMPLETE = ".complete"


def read_requirements(req_file: Path) -> list[Requirement]:
    """The requirements in ``req_file`` that apply here (markers evaluated); options are skipped."""
    reqs: list[Requirement] = []
    for lineno, line in enumerate(req_file.read_text().splitlines(), 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            log.warning("requirements.txt:%d: option line ignored: %s", lineno, line)
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(f"{req_file}:{lineno}: cannot parse {line!r}: {exc}") from None
        if req.marker is not None and not req.marker.evaluate():
            continue
        if req.url:
            log.warning("requirements.txt:%d: URL requirement cannot be checked: %s", lineno, line)
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
    return (f"{req_file}: {len(missing)} requirement(s) not met by this environment: "
            + "; ".join(f"{req} ({why})" for req, why in missing))


def check_requirements(bundle: Bundle) -> None:
    """Every pin in requirements.txt must be met by the running environment; list all that are not."""
    req_file = bundle.root / "requirements.txt"
    if req_file.is_file() and (missing := unmet(read_requirements(req_file))):
        raise RequirementsError(_listing(req_file, missing))


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "scorer-requirements"


def ensure_requirements(bundle: Bundle, cache_dir: str | Path = "") -> None:
    """Install the bundle's unmet requirements into ``cache_dir`` (reused across restarts when it is
    a volume) and put them first on ``sys.path``; raise with pip's own error when that fails."""
    req_file = bundle.root / "requirements.txt"
    if not req_file.is_file() or not (missing := unmet(read_requirements(req_file))):
        return
    loaded = _loaded_distributions()
    clash = [f"{req} (installed {why.removeprefix('installed ')}, already imported by the scorer)"
             for req, why in missing if canonicalize_name(req.name) in loaded]
    if clash:
        raise RequirementsError(
            f"{req_file}: cannot change packages the scorer itself runs on: {'; '.join(clash)}. "
            "Build an image that has these versions instead."
        )
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    wanted = sorted(str(req) for req, _ in missing)
    key = hashlib.sha256("\n".join([sys.version, sys.platform, *wanted]).encode()).hexdigest()[:16]
    target = cache / key
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one installer per cache directory (workers, replicas)
            if not (target / _COMPLETE).exists():
                _install(wanted, cache, target, req_file)
    except OSError as exc:
        raise RequirementsError(
            f"{req_file}: cannot use {cache} to install missing requirements ({exc.strerror or exc}); "
            "point requirements_cache at a writable directory"
        ) from None
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    if still := unmet(read_requirements(req_file)):
        raise RequirementsError(_listing(req_file, still) + f" (after installing into {target})")


def _install(wanted: list[str], cache: Path, target: Path, req_file: Path) -> None:
    names = {canonicalize_name(Requirement(w).name) for w in wanted}
    have = _installed_versions()
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
    try:
        constraints = staging / "constraints.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(have.items()) if n not in names))
        site = staging / "site"
        cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
               "--no-warn-script-location", "--target", str(site), "--constraint", str(constraints), *wanted]
        log.info("installing %d missing requirement(s) into %s: %s", len(wanted), target, " ".join(wanted))
        started = time.monotonic()
        try:
            result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                                    timeout=PIP_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RequirementsError(
                f"{req_file}: installing {' '.join(wanted)} did not finish in {PIP_TIMEOUT_SECONDS}s; "
                "is the package index reachable?"
            ) from None
        if result.returncode != 0:
            raise RequirementsError(
                f"{req_file}: could not install the missing requirement(s) {' '.join(wanted)} (the versions "
                f"already installed here are constraints): pip said: {_pip_error(result.stdout)} "
                "(is the package index reachable from here? pip reads PIP_INDEX_URL, PIP_FIND_LINKS, PIP_CERT "
                "and proxy variables)"
            )
        pruned = _prune_duplicates(site, have, names)
        (site / _COMPLETE).write_text(" ".join(wanted) + "\n")
        os.replace(site, target)
        log.info("installed %s in %.1fs (%d copies of packages already present removed)",
                 " ".join(wanted), time.monotonic() - started, pruned)
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
    constraints); remove those copies so the environment's own stay in use."""
    pruned = 0
    for dist in metadata.distributions(path=[str(site)]):
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name in wanted or have.get(name) != dist.version:
            continue
        for file in dist.files or ():
            path = (site / file).resolve()
            if path.is_relative_to(site.resolve()) and path.is_file():
                path.unlink()
        pruned += 1
    for directory in sorted((p for p in site.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(directory.iterdir()):
            directory.rmdir()
    return pruned
