"""The README documents the public surface: every setting, and .ci/run is its test command."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from scorer.settings import Settings, env_name

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parent.parent


def test_readme_configuration_table_lists_every_setting() -> None:
    """Each Settings field appears in the README table with its env var and flag, and nothing extra."""
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"^\| `(SCORER_[A-Z_]+)` \|", readme, flags=re.M))
    fields = dataclasses.fields(Settings)
    assert documented == {env_name(f.name) for f in fields}
    for f in fields:
        if f.name != "bundle":
            flag = f.name.replace("_", "-")
            assert f"`--{flag}`" in readme or f"`--[no-]{flag}`" in readme, f.name


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """.ci/run executes the README's second command."""
    readme = (REPO / "README.md").read_text()
    assert "./scripts/test" in readme and "./scripts/serve-example" in readme
    assert "exec ./scripts/test" in (REPO / ".ci" / "run").read_text()
