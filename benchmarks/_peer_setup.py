"""Peer servers' virtualenvs under ``benchmarks/.peers/`` (gitignored), created only when missing.

Each peer gets its own venv on the scorer venv's base interpreter, with the scorer venv's
scikit-learn / numpy / pandas / scipy / joblib versions pinned, so that the same joblib pickles
load everywhere. If a peer cannot be installed with those pins, the install is retried with only
scikit-learn pinned (what the pickles need) and the fallback is recorded in the venv's marker
file, which the report shows. Installs go through ``pip`` as configured on the host.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"
MARKER = "bench-spec.json"

# What each peer venv installs on top of the pinned scientific stack.
PEER_PACKAGES: dict[str, list[str]] = {
    # 3.18 needs an mlflow-skinny release the index does not have.
    "mlflow": ["mlflow==3.17.2"],
    # MLServer 1.7.1 crashes with uvloop >= 0.22.
    "mlserver": ["mlserver>=1.7,<1.8", "mlserver-sklearn>=1.7,<1.8", "uvloop==0.21.0"],
}
# Packages whose versions must match the scorer venv for the pickles to load (and behave the same).
PINNED_FROM_SCORER = ("scikit-learn", "numpy", "pandas", "scipy", "joblib")
# Versions every report lists per environment.
REPORTED = ("python", "scikit-learn", "numpy", "pandas", "scipy", "joblib", "mlflow", "mlserver",
            "mlserver-sklearn", "uvicorn", "uvloop", "fastapi", "starlette", "scorer")


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def scorer_pins() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in PINNED_FROM_SCORER}


def venv_dir(peer: str) -> Path:
    return PEERS_DIR / peer


def venv_python(peer: str) -> Path:
    return venv_dir(peer) / "bin" / "python"


def wanted_spec(peer: str) -> dict[str, Any]:
    return {
        "peer": peer,
        "packages": PEER_PACKAGES[peer],
        "pins": scorer_pins(),
        "python": sys.version.split()[0],
    }


def read_marker(peer: str) -> dict[str, Any] | None:
    try:
        return json.loads((venv_dir(peer) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _pip(python: Path, args: list[str], log_path: Path) -> bool:
    with open(log_path, "ab") as out:
        return subprocess.run([str(python), "-m", "pip", *args], stdout=out, stderr=subprocess.STDOUT).returncode == 0


def ensure_peer(peer: str, force: bool = False) -> dict[str, Any]:
    """Create/complete ``benchmarks/.peers/<peer>`` unless its marker says it has the wanted spec."""
    spec = wanted_spec(peer)
    marker = read_marker(peer)
    if not force and marker and {k: marker.get(k) for k in spec} == spec and venv_python(peer).exists():
        return marker
    d = venv_dir(peer)
    log(f"setting up {peer} in {d} (first time only; a few minutes) ...")
    if d.exists():
        subprocess.run(["rm", "-rf", str(d)], check=True)
    d.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(d)], check=True)
    log_path = d / "pip-install.log"
    py = venv_python(peer)
    _pip(py, ["install", "-q", "--upgrade", "pip"], log_path)
    pins = spec["pins"]
    notes: list[str] = []
    ok = _pip(py, ["install", *spec["packages"], *(f"{k}=={v}" for k, v in pins.items())], log_path)
    if not ok:
        notes.append(f"could not install {peer} with the scorer venv's versions "
                     f"({', '.join(f'{k}=={v}' for k, v in pins.items())}); retried with only scikit-learn pinned")
        log(notes[-1])
        ok = _pip(py, ["install", *spec["packages"], f"scikit-learn=={pins['scikit-learn']}"], log_path)
    if not ok:
        raise SystemExit(f"could not install {peer}: see {log_path}")
    marker = {**spec, "notes": notes, "versions": env_versions(py)}
    (d / MARKER).write_text(json.dumps(marker, indent=2))
    log(f"{peer} ready: " + ", ".join(f"{k} {v}" for k, v in marker["versions"].items() if v))
    return marker


_VERSIONS_CODE = """
import importlib.metadata as m, json, sys
out = {"python": sys.version.split()[0]}
for name in sys.argv[1:]:
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def env_versions(python: Path | str) -> dict[str, str | None]:
    """Versions of REPORTED packages in the environment of ``python``."""
    res = subprocess.run([str(python), "-I", "-c", _VERSIONS_CODE, *REPORTED[1:]], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def ensure_all(force: bool = False) -> dict[str, dict[str, Any]]:
    return {peer: ensure_peer(peer, force) for peer in PEER_PACKAGES}


if __name__ == "__main__":
    print(json.dumps(ensure_all("--force" in sys.argv), indent=2))
