"""What a pinned digest vouches for is what runs: bytecode and symlinked folders cannot change a bundle's
behaviour behind its digest, and loading never writes bytecode into the bundle.

Each scenario runs the real CLI (``scorer info``, which loads the bundle and scores its sample) in a
fresh process. Planted code writes a marker file when it runs, so "refused before any bundle code
runs" is checked by the marker's absence, not only by the exit code.
"""

from __future__ import annotations

import os
import py_compile
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib.util import cache_from_source
from pathlib import Path

from scorer.bundle import open_bundle

GOOD = """
    import scorer
    from helpers import factor

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float"}

        def predict(self, df):
            return (df["a"] * factor()).rename("out")
"""
HELPERS = "def factor():\n    return 2.0\n"
EVIL = """
    import os, pathlib
    pathlib.Path(os.environ["MARKER"]).write_text("planted code ran")

    def factor():
        return 1000.0
"""
MANIFEST = '{"sample_input": {"columns": ["a"], "data": [[1.5]]}}'


def make_bundle(root: Path, *, helpers_as_package: bool = False) -> Path:
    (root / "artifacts").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(textwrap.dedent(GOOD))
    if helpers_as_package:
        (root / "code" / "helpers").mkdir()
        (root / "code" / "helpers" / "__init__.py").write_text(HELPERS)
    else:
        (root / "code" / "helpers.py").write_text(HELPERS)
    (root / "manifest.json").write_text(MANIFEST)
    return root


def plant_bytecode(source_file: Path, into: Path) -> None:
    """Compile EVIL as the bytecode Python would load for ``source_file`` without checking the source
    (an unchecked-hash .pyc: its header does not depend on the source at all)."""
    evil = into.parent / "_evil_src.py"
    evil.write_text(textwrap.dedent(EVIL))
    target = Path(cache_from_source(str(source_file)))
    py_compile.compile(str(evil), cfile=str(target), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    evil.unlink()


def scorer_info(bundle: Path, marker: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    env.update(MARKER=str(marker), PYTHONDONTWRITEBYTECODE="")
    return subprocess.run([sys.executable, "-m", "scorer.cli", "info", str(bundle), "--log-format", "text", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_pinned_bundle_with_planted_bytecode_is_refused_before_code_runs(tmp_path: Path) -> None:
    """A .pyc added to code/__pycache__ of a pinned bundle changes its digest: the load is refused (exit 3,
    one line naming the digest) and the planted code never runs."""
    bundle = make_bundle(tmp_path / "b")
    pin = "sha256:" + open_bundle(bundle).digest
    plant_bytecode(bundle / "code" / "helpers.py", bundle)
    marker = tmp_path / "ran"
    result = scorer_info(bundle, marker, "--bundle-digest", pin)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "does not match the pinned" in result.stderr, result.stderr
    assert not marker.exists()


def test_zip_with_planted_bytecode_is_refused_like_a_folder(tmp_path: Path) -> None:
    """The same for a .zip bundle: a .pyc inside the zip is part of its digest."""
    bundle = make_bundle(tmp_path / "b")
    pin = "sha256:" + open_bundle(bundle).digest
    plant_bytecode(bundle / "code" / "helpers.py", bundle)
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(bundle).as_posix())
    marker = tmp_path / "ran"
    result = scorer_info(archive, marker, "--bundle-digest", pin)
    assert result.returncode == 3 and "does not match the pinned" in result.stderr, result.stderr
    assert not marker.exists()


def test_unpinned_bundle_code_is_compiled_from_source_never_from_bytecode(tmp_path: Path) -> None:
    """Without a pin, stale or planted bytecode beside the source is ignored: the source is what runs
    (the sample is scored with factor 2, not the planted 1000), and the planted code never runs."""
    bundle = make_bundle(tmp_path / "b")
    plant_bytecode(bundle / "code" / "helpers.py", bundle)
    marker = tmp_path / "ran"
    result = scorer_info(bundle, marker)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert '"output_columns": [\n    "out"\n  ]' in result.stdout


def test_symlinked_folder_is_refused_pinned_or_not(tmp_path: Path) -> None:
    """A symlinked folder in a bundle (its target outside the digest) is refused at open, with or without
    a pin, before any bundle code runs; the pin an operator could have taken of it before is refused too."""
    outside = tmp_path / "outside" / "helpers"
    outside.mkdir(parents=True)
    (outside / "__init__.py").write_text(textwrap.dedent(EVIL))
    bundle = make_bundle(tmp_path / "b", helpers_as_package=True)
    shutil.rmtree(bundle / "code" / "helpers")
    # What a walk that does not descend into symlinked folders digested: the bundle without the link.
    pin = "sha256:" + open_bundle(bundle).digest
    (bundle / "code" / "helpers").symlink_to(outside, target_is_directory=True)
    marker = tmp_path / "ran"
    for args in ((), ("--bundle-digest", pin)):
        result = scorer_info(bundle, marker, *args)
        assert result.returncode == 3, result.stdout + result.stderr
        assert "refusing symlink 'code/helpers'" in result.stderr, result.stderr
        assert not marker.exists()


def test_loading_writes_no_bytecode_into_the_bundle(tmp_path: Path) -> None:
    """Loading (and scoring) a writable bundle folder leaves it byte-for-byte as it was: no __pycache__
    appears, so its digest does not change between two starts; a read-only copy loads the same."""
    bundle = make_bundle(tmp_path / "b", helpers_as_package=True)
    before = open_bundle(bundle).digest
    result = scorer_info(bundle, tmp_path / "ran")
    assert result.returncode == 0, result.stderr
    assert not list(bundle.rglob("__pycache__")) and not list(bundle.rglob("*.pyc"))
    assert open_bundle(bundle).digest == before
    readonly = tmp_path / "ro"
    shutil.copytree(bundle, readonly)
    for path in [readonly, *readonly.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        result = scorer_info(readonly, tmp_path / "ran", "--bundle-digest", before)
        assert result.returncode == 0, result.stderr
    finally:
        for path in [readonly, *readonly.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
