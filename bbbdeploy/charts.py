"""Rendering the Helm charts offline with Helm's own engine.

helm-python-sdk binds Helm v4's Go SDK (libhelm_c, through ctypes), so templates,
values merging and lint are Helm's, with no helm binary and no cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

from bbbdeploy.paths import HELM_DIR

RELEASE = "bbbfleet"
NAMESPACE = "bbbfleet"


@dataclass(frozen=True)
class ValueSet:
    """One way a chart is rendered in CI: its defaults, or an example values file."""

    name: str
    values: dict[str, Any] | None


def charts() -> list[Path]:
    """Every chart directory under helm/."""
    return sorted(p.parent for p in HELM_DIR.glob("*/Chart.yaml"))


def value_sets(chart: Path) -> list[ValueSet]:
    """The defaults plus every ci/*-values.yaml of the chart."""
    sets = [ValueSet("defaults", None)]
    for path in sorted((chart / "ci").glob("*values.yaml")):
        loaded = yaml.safe_load(path.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: values must be a mapping")
        sets.append(ValueSet(path.name, loaded))
    return sets


def render(
    chart: Path,
    values: dict[str, Any] | None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """The chart's manifests as objects, in template order (NOTES.txt and empty
    documents left out)."""
    with helm_python.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for template in sorted(rendered):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(rendered[template]):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ValueError(f"{template}: a manifest that is not a mapping")
            objects.append(doc)
    return objects


def lint(chart: Path, values: dict[str, Any] | None) -> list[str]:
    """Helm lint (strict: warnings count) findings worth failing on."""
    report = helm_python.lint(chart, values, strict=True, namespace=NAMESPACE)
    problems = [str(e) for e in report.get("errors") or []]
    for message in report.get("messages") or []:
        # Severity 1 is "info" (e.g. "icon is recommended"): advice, not a defect.
        if int(message.get("severity", 0)) >= 2:
            problems.append(f"{message.get('path')}: {message.get('error')}")
    return problems
