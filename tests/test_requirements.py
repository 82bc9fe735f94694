"""Installing a bundle's missing requirements at start (opt-in), from a local wheelhouse with no
network, into a cache directory; and the failures: unreachable index, unresolvable pins, and pins
on packages the scorer has already imported. The cache is private (0700, ours, refused otherwise),
keyed by the bundle digest, and an install is imported only after every file in it matched pip's
RECORD."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import socket
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest


def code_using(module: str) -> str:
    """Bundle code whose prediction is column ``a`` plus ``module.VALUE``."""
    return f"""
    import scorer
    import {module}

    class CustomPreprocessor(scorer.CustomPreprocessor):
        def predict(self, df):
            return (df["a"] + {module}.VALUE).rename("prediction")
"""


EXTRA_CODE = code_using("scorer_test_extra")


def pip_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "PIP_"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # the host's pip configuration does not leak into the test
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the scorer itself must keep bytecode out of the cache
    return {**env, **extra}


def batch(bundle: Path, tmp_path: Path, env: dict[str, str], *flags: str,
          cwd: Path | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    inp = tmp_path / "in.csv"
    inp.write_text("a\n1\n2\n")
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    proc = subprocess.run(
        [sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--input", str(inp), "--output", str(out),
         "--workers", "1", "--log-format", "text", *flags],
        capture_output=True, text=True, env=env, timeout=300, check=False, cwd=cwd,
    )
    return proc, out / "in.csv"


def test_install_missing_requirements_into_cache(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With install_requirements, a missing pin and its missing dependency are installed into the
    cache before the bundle's code is imported; the copy of a package the environment already has
    is removed again; a second start reuses the cache without running pip."""
    bundle = bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    cache = tmp_path / "cache"
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))

    proc, out = batch(bundle, tmp_path, env)
    assert proc.returncode == 3 and "scorer-test-extra==1.0 (not installed)" in proc.stderr  # default: fail fast

    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
    assert "installing 1 missing requirement(s)" in proc.stderr
    [target] = [p for p in cache.iterdir() if not p.name.startswith(".")]
    names = sorted(p.name for p in target.iterdir())
    assert "scorer_test_extra" in names and "scorer_test_dep" in names
    assert not [n for n in names if n.startswith("packaging")], names  # the environment's own stays in use

    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert "installing" not in proc.stderr and pd.read_csv(out)["prediction"].tolist() == [1043, 1044]


def test_install_with_unreachable_index_fails_clearly(bundle_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An index nobody answers on: exit 3 with pip's error and a hint about the index; no partial cache."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: connections are refused
    bundle = bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    cache = tmp_path / "cache"
    env = pip_env(PIP_INDEX_URL=f"http://127.0.0.1:{dead}/simple", PIP_RETRIES="0", PIP_TIMEOUT="5")
    proc, _ = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
    assert proc.returncode == 3, proc.stderr
    assert "could not install the missing requirement(s) scorer-test-extra==1.0" in proc.stderr
    assert "package index reachable" in proc.stderr
    assert [p.name for p in cache.iterdir()] == [".lock"]


def test_install_that_would_change_the_environment_fails(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A pin whose dependencies conflict with what the scorer runs on is refused by pip's resolver
    (the environment's versions are constraints), and the message says so."""
    bundle = bundle_factory("greedy", code=EXTRA_CODE, requirements="scorer-test-greedy==1.0\n")
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    proc, _ = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(tmp_path / "c"))
    assert proc.returncode == 3, proc.stderr
    assert "could not install" in proc.stderr and "depends on packaging>=999" in proc.stderr


@pytest.mark.parametrize("pin", ["numpy==0.0.1", "pandas<1"])
def test_install_refuses_to_swap_an_imported_package(bundle_factory, tmp_path: Path, pin: str) -> None:  # type: ignore[no-untyped-def]
    """A pin on another version of a package the scorer has already imported fails at once, without pip."""
    bundle = bundle_factory("old", code=EXTRA_CODE, requirements=pin + "\n")
    env = pip_env(PIP_INDEX_URL="http://127.0.0.1:9/simple")
    proc, _ = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(tmp_path / "c"))
    assert proc.returncode == 3, proc.stderr
    assert "cannot change packages the scorer itself runs on" in proc.stderr and pin in proc.stderr
    assert "installing" not in proc.stderr


def installed(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if not p.name.startswith("."))


def test_default_cache_dir_is_private(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without requirements_cache the install goes to <tmp>/scorer-requirements-<uid>, made 0700 and ours."""
    bundle = bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse), TMPDIR=str(tmp))
    proc, out = batch(bundle, tmp_path, env, "--install-requirements")
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
    cache = tmp / f"scorer-requirements-{os.getuid()}"
    st = cache.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid(), oct(st.st_mode)
    assert len(installed(cache)) == 1


def _unsafe_cache(tmp_path: Path, problem: str) -> Path:
    if problem == "world-writable":
        cache = tmp_path / "cache"
        cache.mkdir()
        cache.chmod(0o777)
    elif problem == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a directory to another uid")
        cache = tmp_path / "cache"
        cache.mkdir(mode=0o700)
        os.chown(cache, 65534, 65534)
    elif problem == "symlink":
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        cache = tmp_path / "cache"
        cache.symlink_to(real)
    else:  # a private directory inside one anybody may rename it out of (no sticky bit)
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        cache = shared / "cache"
        cache.mkdir(mode=0o700)
    return cache


@pytest.mark.parametrize(("problem", "says"), [
    ("world-writable", "writable by group or others (mode 0777)"),
    ("other-owner", "owned by uid 65534"),
    ("symlink", "is a symlink"),
    ("parent-writable", "writable by group or others without the sticky bit"),
])
def test_unsafe_cache_dir_is_refused(bundle_factory, wheelhouse: Path, tmp_path: Path, problem: str,  # type: ignore[no-untyped-def]
                                     says: str) -> None:
    """A cache directory others could write into (or swap) is refused with one line, before pip runs."""
    bundle = bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    cache = _unsafe_cache(tmp_path, problem)
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    proc, _ = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
    assert proc.returncode == 3, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if "requirements_cache" in ln]
    assert says in line and str(cache if problem != "parent-writable" else cache.parent) in line, line
    assert "installing" not in proc.stderr


def _first_install(bundle_factory, wheelhouse: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:  # type: ignore[no-untyped-def]
    bundle = bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    cache = tmp_path / "cache"
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
    [target] = installed(cache)
    return bundle, target, env


def test_tampered_install_is_reinstalled(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One changed byte in an installed module (same size, newer mtime) fails the RECORD check on the
    next start: a warning names the file, a fresh install replaces it, and the genuine code runs."""
    bundle, target, env = _first_install(bundle_factory, wheelhouse, tmp_path)
    module = target / "scorer_test_extra" / "__init__.py"
    module.write_text(module.read_text().replace("BASE + 42", "BASE + 43"))
    os.utime(module, (module.stat().st_atime, module.stat().st_mtime + 10))  # no bytecode cache hides it
    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(target.parent))
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
    assert "scorer_test_extra/__init__.py does not match its RECORD" in proc.stderr
    assert "installing 1 missing requirement(s)" in proc.stderr
    assert "BASE + 42" in module.read_text() and installed(target.parent) == [target]


def test_unlisted_bytecode_is_not_imported(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A .pyc dropped next to an installed module, with the source's size and mtime in its header (so
    Python would import it instead of the source), is a file no RECORD lists: reinstalled, not imported."""
    bundle, target, env = _first_install(bundle_factory, wheelhouse, tmp_path)
    module = target / "scorer_test_extra" / "__init__.py"
    genuine = module.stat()
    evil = tmp_path / "evil.py"
    evil.write_text("VALUE = 666\n".ljust(genuine.st_size - 1, "#") + "\n")
    os.utime(evil, ns=(genuine.st_atime_ns, genuine.st_mtime_ns))
    pyc = Path(importlib.util.cache_from_source(str(module)))
    pyc.parent.mkdir(exist_ok=True)
    py_compile.compile(str(evil), cfile=str(pyc), doraise=True)
    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(target.parent))
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
    assert f"{pyc.relative_to(target)} is not listed in any RECORD" in proc.stderr
    assert not pyc.exists() and not pyc.parent.exists()


def test_unlisted_module_is_removed(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An extra module dropped into an install (importable as scorer_test_extra.evil) is detected on
    the next start and the install replaced; it is gone afterwards."""
    bundle, target, env = _first_install(bundle_factory, wheelhouse, tmp_path)
    evil = target / "scorer_test_extra" / "evil.py"
    evil.write_text("import os\n")
    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(target.parent))
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
    assert "scorer_test_extra/evil.py is not listed in any RECORD" in proc.stderr
    assert not evil.exists() and installed(target.parent) == [target]


def test_install_is_keyed_by_bundle_digest(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two bundles with the same requirements but different content get installs of their own."""
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    cache = tmp_path / "cache"
    for n, name in enumerate(["one", "two"], 1):
        bundle = bundle_factory(name, code=EXTRA_CODE + f"    # bundle {name}\n", requirements="scorer-test-extra==1.0\n",
                                manifest={"input_schema": {"a": "float"}})
        proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
        assert proc.returncode == 0, proc.stderr
        assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
        assert "installing 1 missing requirement(s)" in proc.stderr
        assert len(installed(cache)) == n


def test_index_credentials_are_not_logged(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Option lines and URL requirements in requirements.txt may carry index credentials: the
    warnings about them name the line, never the URL's user or password."""
    reqs = ("--extra-index-url https://alice:s3cret@127.0.0.1:9/simple\n"
            "scorer-test-dep @ https://bob:hunter2@127.0.0.1:9/scorer_test_dep-1.0-py3-none-any.whl\n")
    bundle = bundle_factory("creds", code=EXTRA_CODE, requirements=reqs)
    proc, _ = batch(bundle, tmp_path, pip_env(PIP_RETRIES="0"), "--install-requirements", "--requirements-cache", str(tmp_path / "c"))
    assert "requirements.txt:1: option line ignored" in proc.stderr
    assert "requirements.txt:2: URL requirement" in proc.stderr
    assert "s3cret" not in proc.stderr and "hunter2" not in proc.stderr, proc.stderr


def test_install_with_scripts_and_data_is_trusted_again(bundle_factory, make_wheel, wheelhouse: Path,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    """A package with a console script and a data file (RECORD lists them as ../../bin/..., ../../share/...)
    whose dependency the environment already has: the install checks out on the next start and is reused."""
    info = "scorer_test_tool-1.0.dist-info"
    make_wheel(wheelhouse, "scorer-test-tool", "1.0", code="VALUE = 7\ndef main():\n    pass\n", requires=("packaging",),
                extra_files={f"{info}/entry_points.txt": "[console_scripts]\nscorer-test-tool = scorer_test_tool:main\n",
                             "scorer_test_tool-1.0.data/data/share/scorer-test-tool/notes.txt": "notes\n"})
    bundle = bundle_factory("tool", code=code_using("scorer_test_tool"), requirements="scorer-test-tool==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    cache = tmp_path / "cache"
    for run in range(2):
        proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
        assert proc.returncode == 0, proc.stderr
        assert pd.read_csv(out)["prediction"].tolist() == [8, 9]
        assert ("installing" in proc.stderr) == (run == 0), proc.stderr
    [target] = installed(cache)
    assert (target / "bin" / "scorer-test-tool").is_file() and (target / "share" / "scorer-test-tool" / "notes.txt").is_file()
    assert sorted(p.name for p in target.glob("*.dist-info")) == [info]  # the packaging copy went, RECORD and all


def test_install_whose_record_is_wrong_fails_clearly(bundle_factory, make_wheel, wheelhouse: Path,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    """pip does not check a wheel's RECORD hashes; a wheel whose RECORD does not describe its files is
    refused right after the install (exit 3, naming the file) instead of being reinstalled on every start."""
    wheel = make_wheel(wheelhouse, "scorer-test-liar", "1.0", code="VALUE = 1\n")
    with zipfile.ZipFile(wheel) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    record = "scorer_test_liar-1.0.dist-info/RECORD"
    members["scorer_test_liar/__init__.py"] = b"VALUE = 2\n"  # same size, other bytes than RECORD says
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    assert b"scorer_test_liar/__init__.py" in members[record]
    bundle = bundle_factory("liar", code=code_using("scorer_test_liar"), requirements="scorer-test-liar==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    proc, _ = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(tmp_path / "c"))
    assert proc.returncode == 3, proc.stderr
    assert "installed scorer-test-liar==1.0, but scorer_test_liar/__init__.py does not match its RECORD" in proc.stderr
    assert [p.name for p in (tmp_path / "c").iterdir()] == [".lock"]


def test_pip_is_not_taken_from_the_working_directory(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``python -m pip`` would import a ``pip`` package from the current directory first; the installer
    runs the environment's pip wherever the scorer was started."""
    cwd = tmp_path / "cwd"
    (cwd / "pip").mkdir(parents=True)
    (cwd / "pip" / "__init__.py").write_text("")
    (cwd / "pip" / "__main__.py").write_text(f"open({str(tmp_path / 'impostor-ran')!r}, 'w').close()\n")
    bundle = bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(tmp_path / "c"),
                      cwd=cwd)
    assert not (tmp_path / "impostor-ran").exists()
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
