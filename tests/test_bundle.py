"""Opening bundles: folder or zip, content digest, pinned digest, zip-slip, manifest, requirements."""

from __future__ import annotations

import stat
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from scorer.bundle import open_bundle
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.errors import (
    BundleLayoutError,
    BundleNotFound,
    DigestMismatch,
    RequirementsError,
    ScorerError,
)
from scorer.requirements import check_requirements

pytestmark = pytest.mark.fast


def zip_folder(root: Path, dest: Path, *, top_level: bool) -> Path:
    """Zip a bundle folder like users do: entries under ``<name>/`` or directly at the root."""
    prefix = root.name + "/" if top_level else ""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            zf.write(path, prefix + rel + ("/" if path.is_dir() else ""))
    return dest


class WritesMarker:
    """Unpickling this object creates the file ``marker`` (stands in for code run by a hostile pickle)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


# --- open_bundle: locating -------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    """A path that does not exist is BundleNotFound naming it."""
    with pytest.raises(BundleNotFound, match="nowhere"):
        open_bundle(tmp_path / "nowhere")


def test_plain_file_is_not_a_bundle(tmp_path: Path) -> None:
    """A file that is not a zip is BundleNotFound."""
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04not a zip")
    with pytest.raises(BundleNotFound):
        open_bundle(path)


def test_folder_without_bundle_layout(tmp_path: Path) -> None:
    """A folder with no artifacts/, code/ or custom_preprocess.py is BundleNotFound."""
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hi")
    with pytest.raises(BundleNotFound, match="not a bundle"):
        open_bundle(tmp_path / "random")


# --- digest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("top_level", [True, False], ids=["with-top-folder", "flat"])
def test_zip_has_same_digest_as_folder(bundle_factory, tmp_path: Path, top_level: bool) -> None:
    """A folder and a zip of it (with or without a top-level folder) have the same content digest."""
    root = bundle_factory(
        "b", artifacts={"model.pkl": {"w": [1, 2, 3]}}, manifest={"name": "b"},
        files={"code/helpers/util.py": "X = 1\n"},
    )
    archive = zip_folder(root, tmp_path / "b.zip", top_level=top_level)
    folder = open_bundle(root)
    zipped = open_bundle(archive, workdir=tmp_path)
    assert zipped.digest == folder.digest
    assert (zipped.root / "artifacts" / "model.pkl").is_file()
    assert zipped.manifest.name == "b"


def test_digest_changes_when_a_file_changes(bundle_factory) -> None:
    """Changing one byte of one file changes the digest; re-reading unchanged files does not."""
    root = bundle_factory("b", artifacts={"model.pkl": [1, 2, 3]})
    before = open_bundle(root).digest
    assert open_bundle(root).digest == before
    (root / "artifacts" / "model.pkl").write_bytes((root / "artifacts" / "model.pkl").read_bytes() + b"\x00")
    assert open_bundle(root).digest != before


def test_digest_changes_when_a_file_is_renamed(bundle_factory) -> None:
    """The same bytes under another name give another digest."""
    root = bundle_factory("b", artifacts={"model.pkl": [1, 2, 3]})
    before = open_bundle(root).digest
    (root / "artifacts" / "model.pkl").rename(root / "artifacts" / "other.pkl")
    assert open_bundle(root).digest != before


def test_digest_covers_bytecode_and_hidden_files(bundle_factory) -> None:
    """Every file counts: a __pycache__/*.pyc, a bare .pyc or a file in a hidden folder changes the digest
    (each could be loaded), and the folder and its zip still agree."""
    root = bundle_factory("b", code="X = 1\n")
    digests = {open_bundle(root).digest}
    (root / "code" / "__pycache__").mkdir()
    (root / "code" / "__pycache__" / "custom_preprocess.cpython-311.pyc").write_bytes(b"junk")
    digests.add(open_bundle(root).digest)
    (root / "code" / "helper.pyc").write_bytes(b"junk")
    digests.add(open_bundle(root).digest)
    (root / "artifacts" / ".hidden").mkdir()
    (root / "artifacts" / ".hidden" / "x.pkl").write_bytes(b"junk")
    digests.add(open_bundle(root).digest)
    assert len(digests) == 4


def test_pinned_digest_accepted_with_or_without_prefix(bundle_factory) -> None:
    """The bundle's own digest, bare or as sha256:<hex>, is accepted."""
    root = bundle_factory("b", artifacts={"model.pkl": [1]})
    digest = open_bundle(root).digest
    assert open_bundle(root, expected_digest=digest).digest == digest
    assert open_bundle(root, expected_digest="sha256:" + digest).digest == digest


def test_pinned_digest_mismatch(bundle_factory) -> None:
    """A different pinned digest is DigestMismatch showing both digests."""
    root = bundle_factory("b", artifacts={"model.pkl": [1]})
    digest = open_bundle(root).digest
    with pytest.raises(DigestMismatch) as info:
        open_bundle(root, expected_digest="sha256:" + "0" * 64)
    assert digest in info.value.message and "0" * 64 in info.value.message


def test_digest_checked_before_anything_is_unpickled(bundle_factory, tmp_path: Path) -> None:
    """With a wrong pinned digest, Scorer.load refuses before the hostile pickle runs; with the right one it runs."""
    marker = tmp_path / "pickle-ran"
    root = bundle_factory("hostile", artifacts={"model.pkl": WritesMarker(marker)})
    with pytest.raises(DigestMismatch):
        Scorer.load(root, LoadOptions(bundle_digest="sha256:" + "f" * 64))
    assert not marker.exists()
    # Control: the same bundle with its true digest does unpickle (then fails: None has no predict).
    digest = open_bundle(root).digest
    with pytest.raises(ScorerError):
        Scorer.load(root, LoadOptions(bundle_digest=digest))
    assert marker.exists()


def test_digest_checked_before_custom_code_is_imported(bundle_factory, tmp_path: Path) -> None:
    """With a wrong pinned digest the bundle's custom_preprocess.py is never imported."""
    marker = tmp_path / "import-ran"
    root = bundle_factory("hostile", code=f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(DigestMismatch):
        Scorer.load(root, LoadOptions(bundle_digest="0" * 64))
    assert not marker.exists()


# --- zip-slip --------------------------------------------------------------------------------


def make_zip(path: Path, entries: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("artifacts/model.pkl", b"x")
        for name, text in entries.items():
            zf.writestr(name, text)
    return path


@pytest.mark.parametrize("name", ["../evil.py", "code/../../evil.py", "/abs.py", "C:/evil.py"])
def test_zip_slip_refused(tmp_path: Path, name: str) -> None:
    """Zip entries that escape the extraction folder are refused, and nothing is written outside."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    archive = make_zip(tmp_path / "slip.zip", {name: "import os\n"})
    with pytest.raises(BundleLayoutError, match="unsafe path"):
        open_bundle(archive, workdir=workdir)
    assert not (tmp_path / "evil.py").exists()
    assert list(workdir.rglob("*.py")) == []


def test_zip_symlink_refused(tmp_path: Path) -> None:
    """A symlink entry in a zip is refused."""
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("artifacts/model.pkl", b"x")
        info = zipfile.ZipInfo("code/custom_preprocess.py")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(BundleLayoutError, match="symlink"):
        open_bundle(archive, workdir=tmp_path)


@pytest.mark.parametrize("prefix", ["", "sum/"])
def test_zip_with_dot_entry_opens_like_the_same_zip_without_it(tmp_path: Path, prefix: str) -> None:
    """A './' directory entry (some zip tools write one) is harmless: the zip opens, with the same
    digest and the same files, as the same zip without that entry (flat or under one top-level folder)."""
    entries = {f"{prefix}artifacts/model.pkl": "x", f"{prefix}code/custom_preprocess.py": "X = 1\n"}
    archives = {}
    for name, extra in (("plain", {}), ("dot", {"./": ""})):
        archives[name] = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(archives[name], "w") as zf:
            for entry, text in {**extra, **entries}.items():
                zf.writestr(entry, text)
    assert "./" in zipfile.ZipFile(archives["dot"]).namelist()
    plain = open_bundle(archives["plain"], workdir=tmp_path)
    dotted = open_bundle(archives["dot"], workdir=tmp_path)
    assert dotted.digest == plain.digest
    assert sorted(p.relative_to(dotted.root).as_posix() for p in dotted.root.rglob("*")) == \
        sorted(p.relative_to(plain.root).as_posix() for p in plain.root.rglob("*")) == \
        ["artifacts", "artifacts/model.pkl", "code", "code/custom_preprocess.py"]


def test_flat_zip_of_code_only_bundle(tmp_path: Path) -> None:
    """A flat zip of a bundle with only code/ has the folder's digest and root."""
    root = tmp_path / "rules"
    (root / "code").mkdir(parents=True)
    (root / "code" / "custom_preprocess.py").write_text("X = 1\n")
    archive = zip_folder(root, tmp_path / "rules.zip", top_level=False)
    zipped = open_bundle(archive, workdir=tmp_path)
    assert (zipped.root / "code" / "custom_preprocess.py").is_file()
    assert zipped.digest == open_bundle(root).digest


# --- manifest --------------------------------------------------------------------------------


def test_manifest_parsed(bundle_factory) -> None:
    """A valid manifest's fields are read; both schema spellings give an ordered {column: type}."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, manifest={
        "name": "churn", "version": "3", "input_schema": [{"name": "b", "type": "int"}, {"name": "a", "type": "float"}],
    })
    m = open_bundle(root).manifest
    assert (m.name, m.version) == ("churn", "3")
    assert list(m.input_schema.items()) == [("b", "int"), ("a", "float")]
    root2 = bundle_factory("c", artifacts={"m.pkl": 1}, manifest={"input_schema": {"b": "int", "a": "float"}})
    assert list(open_bundle(root2).manifest.input_schema.items()) == [("b", "int"), ("a", "float")]


def test_manifest_invalid_json(bundle_factory) -> None:
    """A manifest that is not JSON is BundleLayoutError naming manifest.json."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, files={"manifest.json": "{name: 'x'}"})
    with pytest.raises(BundleLayoutError, match=r"manifest\.json.*not valid JSON"):
        open_bundle(root)


def test_manifest_not_an_object(bundle_factory) -> None:
    """A manifest that is a JSON array is BundleLayoutError naming the file."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, manifest=["name"])
    with pytest.raises(BundleLayoutError, match=r"manifest\.json"):
        open_bundle(root)


def test_manifest_unknown_keys(bundle_factory) -> None:
    """A misspelt manifest key is BundleLayoutError naming the file and the key."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, manifest={"name": "x", "input_shema": {}})
    with pytest.raises(BundleLayoutError, match=r"manifest\.json.*input_shema"):
        open_bundle(root)


def test_manifest_bad_column_type(bundle_factory) -> None:
    """An unknown column type is BundleLayoutError naming the file, the column and the type."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, manifest={"input_schema": {"a": "float", "b": "double"}})
    with pytest.raises(BundleLayoutError) as info:
        open_bundle(root)
    assert "manifest.json" in info.value.message
    assert "b: 'double'" in info.value.message


def test_manifest_bad_output_columns(bundle_factory) -> None:
    """output_columns that is not a list of names is BundleLayoutError."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, manifest={"output_columns": "prediction"})
    with pytest.raises(BundleLayoutError, match="output_columns"):
        open_bundle(root)


# --- requirements ----------------------------------------------------------------------------


def test_requirements_met(bundle_factory) -> None:
    """Pins the environment meets pass, with comments, blank lines and options ignored."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, requirements=(
        "# pinned by training\n\nscikit-learn>=1.0  # the model\n"
        "numpy\n-i https://example.invalid/simple\npandas>=1 ; python_version >= '3'\n"
    ))
    check_requirements(open_bundle(root))


def test_requirements_unmet_all_listed(bundle_factory) -> None:
    """Every unmet pin is listed in one RequirementsError, with the installed version."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, requirements=(
        "scikit-learn>=1.0\nscikit-learn==0.0.1\nnot-a-real-package-xyz>=1\n"
    ))
    with pytest.raises(RequirementsError) as info:
        check_requirements(open_bundle(root))
    msg = info.value.message
    assert "requirements.txt" in msg and "2 requirement(s)" in msg
    assert f"scikit-learn==0.0.1 (installed {metadata.version('scikit-learn')})" in msg
    assert "not-a-real-package-xyz>=1 (not installed)" in msg


def test_requirements_markers_that_do_not_apply_skipped(bundle_factory) -> None:
    """A pin whose environment marker is false is not checked."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, requirements=(
        'not-a-real-package-xyz>=1; python_version < "3"\n'
        'scikit-learn==0.0.1; sys_platform == "nonexistent-os"\n'
    ))
    check_requirements(open_bundle(root))


def test_requirements_unparseable_line(bundle_factory) -> None:
    """A line that is not a requirement is RequirementsError naming the file and line."""
    root = bundle_factory("b", artifacts={"m.pkl": 1}, requirements="numpy\nthis is not ==a pin\n")
    with pytest.raises(RequirementsError, match=r"requirements\.txt:2"):
        check_requirements(open_bundle(root))
