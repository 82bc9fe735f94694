"""Settings (defaults, SCORER_* environment, overrides, validation) and the CLI that mirrors them."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from scorer.cli import build_parser
from scorer.settings import Settings, describe

FIELDS = [f.name for f in dataclasses.fields(Settings)]


@pytest.mark.fast
def test_defaults() -> None:
    """The defaults are bounded and safe: loopback, port 8080, limits on, requirements checked."""
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8080
    assert s.max_body_bytes == 64 * 1024 * 1024 and s.max_request_rows == 1_000_000
    assert s.max_batch_rows == 4096 and s.max_batch_wait_ms == 0.0
    assert s.extra_columns == "drop" and s.check_requirements is True and s.bundle_digest == ""
    assert Settings.from_env({}) == s


@pytest.mark.fast
def test_from_env_parses_types() -> None:
    """SCORER_* variables are parsed to each field's type; other variables are ignored."""
    s = Settings.from_env({
        "SCORER_PORT": "9000", "SCORER_CHECK_REQUIREMENTS": "false", "SCORER_MAX_BATCH_WAIT_MS": "2.5",
        "SCORER_EXTRA_COLUMNS": "reject", "PATH": "/bin", "NOT_SCORER_PORT": "1",
    })
    assert s.port == 9000 and s.check_requirements is False
    assert s.max_batch_wait_ms == 2.5 and s.extra_columns == "reject"


@pytest.mark.fast
@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False)])
def test_bool_spellings(raw: str, expected: bool) -> None:
    """Booleans accept the usual spellings."""
    assert Settings.from_env({"SCORER_CHECK_REQUIREMENTS": raw}).check_requirements is expected


@pytest.mark.fast
def test_unknown_variable_rejected() -> None:
    """A typo like SCORER_PROT is an error that lists the known settings."""
    with pytest.raises(ValueError) as info:
        Settings.from_env({"SCORER_PROT": "9000"})
    msg = str(info.value)
    assert "SCORER_PROT" in msg and "SCORER_PORT" in msg and "SCORER_MAX_BATCH_ROWS" in msg


@pytest.mark.fast
@pytest.mark.parametrize(
    ("name", "raw"),
    [("SCORER_PORT", "eighty"), ("SCORER_PORT", "80.5"), ("SCORER_MAX_BATCH_WAIT_MS", "soon"),
     ("SCORER_CHECK_REQUIREMENTS", "maybe")],
)
def test_bad_value_names_variable(name: str, raw: str) -> None:
    """An unparseable value is a ValueError naming the variable and the value."""
    with pytest.raises(ValueError) as info:
        Settings.from_env({name: raw})
    assert name in str(info.value) and raw in str(info.value)


@pytest.mark.fast
@pytest.mark.parametrize(
    "env",
    [{"SCORER_LOG_LEVEL": "verbose"}, {"SCORER_EXTRA_COLUMNS": "keep"}, {"SCORER_LOG_FORMAT": "xml"}],
)
def test_bad_choice_rejected(env: dict[str, str]) -> None:
    """A value outside a setting's choices is rejected, listing the choices."""
    with pytest.raises(ValueError, match="must be one of"):
        Settings.from_env(env)


@pytest.mark.fast
@pytest.mark.parametrize("kwargs", [{"port": 0}, {"max_body_bytes": -1}, {"workers": -1}, {"chunk_rows": 0}, {"max_batch_wait_ms": -1.0}])
def test_limits_must_be_positive(kwargs: dict[str, float]) -> None:
    """Zero or negative limits are rejected."""
    with pytest.raises(ValueError):
        Settings(**kwargs)


@pytest.mark.fast
def test_overrides_beat_env() -> None:
    """Explicit overrides (CLI flags) win over SCORER_*; None overrides leave the env value."""
    env = {"SCORER_PORT": "9000", "SCORER_HOST": "0.0.0.0"}
    s = Settings.from_env(env, port=7000, host=None)
    assert s.port == 7000 and s.host == "0.0.0.0"


@pytest.mark.fast
def test_frozen() -> None:
    """Settings cannot be changed after creation."""
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


@pytest.mark.fast
def test_every_field_documented() -> None:
    """describe() gives every setting an env var, a flag and a docstring."""
    rows = describe()
    assert [r[0] for r in rows] == ["SCORER_" + n.upper() for n in FIELDS]
    assert all(r[3] for r in rows)


# --- CLI -------------------------------------------------------------------------------------


@pytest.mark.fast
@pytest.mark.parametrize("name", [n for n in FIELDS if n != "bundle"])
def test_cli_has_flag_for_every_setting(name: str) -> None:
    """The subcommand that uses a setting (serve, else batch) accepts --<name>, and it parses unchanged."""
    f = next(f for f in dataclasses.fields(Settings) if f.name == name)
    flag = "--" + name.replace("_", "-")
    if isinstance(f.default, bool):
        argv, expected = [f"--no-{name.replace('_', '-')}"], False
    elif f.metadata["choices"]:
        expected = f.metadata["choices"][-1]
        argv = [flag, expected]
    elif isinstance(f.default, str):
        argv, expected = [flag, "x-value"], "x-value"
    else:
        expected = f.metadata["kind"](7)
        argv = [flag, "7"]
    from scorer.cli import BATCH_SETTINGS, SERVE_SETTINGS

    assert name in SERVE_SETTINGS or name in BATCH_SETTINGS
    command = "serve" if name in SERVE_SETTINGS else "batch"
    args = build_parser().parse_args([command, "some/bundle", *argv])
    assert getattr(args, name) == expected
    assert args.bundle == "some/bundle"


@pytest.mark.fast
def test_cli_max_batch_rows_flag() -> None:
    """--max-batch-rows parses as an int."""
    args = build_parser().parse_args(["serve", "--max-batch-rows", "32"])
    assert args.max_batch_rows == 32


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    return subprocess.run(
        [sys.executable, "-m", "scorer.cli", *argv], capture_output=True, text=True, env=env, timeout=120,
    )


def test_cli_info_prints_metadata(sum_bundle) -> None:
    """``scorer info BUNDLE`` loads the bundle and prints its metadata as JSON, exit 0."""
    root: Path = sum_bundle()
    proc = run_cli("info", str(root))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["name"] == "sum"
    assert meta["input_schema"] == [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}]
    assert meta["digest"].startswith("sha256:") and meta["custom_code"] is True


def test_cli_info_broken_bundle_exits_3(bundle_factory) -> None:
    """A bundle whose load() raises exits 3 with one line naming custom_preprocess.py and the error."""
    root = bundle_factory("broken", code="""
        import scorer

        class CustomPreprocessor(scorer.CustomPreprocessor):
            def load(self, artifacts_dir):
                raise RuntimeError("weights missing")

            def predict(self, df):
                return df
    """)
    proc = run_cli("info", str(root))
    assert proc.returncode == 3
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("scorer: ")
    assert str(root / "code" / "custom_preprocess.py") in lines[0] and "weights missing" in lines[0]


def test_cli_rejects_unknown_env(sum_bundle) -> None:
    """A mistyped SCORER_ variable stops the CLI with a usage error naming it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    env["SCORER_PROT"] = "9000"
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", "info", str(sum_bundle())],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "SCORER_PROT" in proc.stderr


@pytest.mark.fast
def test_choices_are_the_literal_type() -> None:
    """A setting typed with a Literal accepts exactly its values (CLI choices, validation); no other has choices."""
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        hint = hints[f.name]
        literal = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        assert f.metadata["choices"] == literal, f.name
        if literal:
            assert f.default in literal, f.name


@pytest.mark.fast
def test_load_options_defaults_are_the_settings_defaults() -> None:
    """LoadOptions() (what Scorer.load uses without options) loads exactly as default Settings would."""
    from scorer.load_options import LoadOptions

    assert LoadOptions.from_settings(Settings()) == LoadOptions()
    changed = Settings(bundle_digest="sha256:" + "0" * 64, check_requirements=False, install_requirements=True,
                       requirements_cache="/x", extra_columns="reject", mojo_backend="spark")
    assert LoadOptions.from_settings(changed) == LoadOptions(
        bundle_digest="sha256:" + "0" * 64, check_requirements=False, install_requirements=True,
        requirements_cache="/x", extra_columns="reject", mojo_backend="spark")
