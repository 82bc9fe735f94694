"""The chart (charts/scorer) rendered as `helm install` renders it, by Helm's own engine in this process:
helm-python-sdk binds Helm v4's Go library (no helm binary, no cluster). Used by tests/test_chart.py
(render, validate, policy) and tests/container/test_kubelet.py (the rendered pods run on Docker)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "scorer"
CI_VALUES = CHART / "ci"

Manifest = dict[str, Any]


def values_file(name: str) -> dict[str, Any]:
    """A values file of charts/scorer/ci, e.g. ``"pvc-bundle-values.yaml"``."""
    return yaml.safe_load((CI_VALUES / name).read_text()) or {}


def merge(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, map by map (as several ``-f`` files or ``--set`` combine)."""
    merged = copy.deepcopy(base)
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged


def render_files(values: dict[str, Any], *, release: str = "scorer", namespace: str = "default",
                 revision: int = 1) -> dict[str, str]:
    """``{template path: rendered text}`` of an install of the chart with ``values``, NOTES.txt included.

    As ``helm install``: the chart's defaults coalesced with ``values``, the result checked against
    values.schema.json (raises ``helm_python.HelmValuesError`` naming the key), then rendered (a template's
    ``fail`` raises ``helm_python.HelmRenderError`` with its message)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=release, namespace=namespace, revision=revision, is_install=True)


def render(values: dict[str, Any], **kwargs: Any) -> list[Manifest]:
    """The Kubernetes objects of an install of the chart with ``values`` (see :func:`render_files`)."""
    objects: list[Manifest] = []
    for path, text in sorted(render_files(values, **kwargs).items()):
        if path.endswith(".txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(values: dict[str, Any], **kwargs: Any) -> str:
    """The rendered NOTES.txt (what `helm install` prints)."""
    return next(text for path, text in render_files(values, **kwargs).items() if path.endswith("NOTES.txt"))


def one(objects: list[Manifest], kind: str) -> Manifest:
    """The only object of ``kind`` among ``objects``."""
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def kinds(objects: list[Manifest]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def container(workload: Manifest, name: str = "scorer") -> dict[str, Any]:
    """A container of a Deployment's or Job's pod template."""
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env(workload: Manifest) -> dict[str, Any]:
    """``{name: value or valueFrom}`` of the scorer container's env."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload).get("env", [])}
