"""What scripts/check-k8s runs: every chart linted, rendered with its defaults and its
example values and validated against the Kubernetes schemas; the scrape configs and the
alert rules through promtool (check and unit tests); the Dockerfile through hadolint."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import yaml

from bbbdeploy import charts, manifests
from bbbdeploy.paths import DOCKERFILE, MONITORING_DIR, ROOT, RULES_DIR

# The key the monitoring chart puts its scrape configs under (a Secret, not a password).
SCRAPE_CONFIGS_KEY = "scrape-configs.yaml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found on PATH")
    return path


def _run(argv: list[str], cwd: Path | None = None) -> list[str]:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode == 0:
        return []
    output = (done.stdout + done.stderr).splitlines()
    return [f"{Path(argv[0]).name} exited {done.returncode}:", *output]


def check_charts() -> list[str]:
    problems: list[str] = []
    for chart in charts.charts():
        for value_set in charts.value_sets(chart):
            where = f"{chart.name} [{value_set.name}]"
            problems += [f"{where}: lint: {p}" for p in charts.lint(chart, value_set.values)]
            try:
                objects = charts.render(chart, value_set.values)
            except (helm_python.HelmError, ValueError) as exc:
                problems.append(f"{where}: render: {exc}")
                continue
            if not objects:
                problems.append(f"{where}: rendered nothing")
            for version in manifests.KUBE_VERSIONS:
                for obj in objects:
                    for p in manifests.validate(obj, version):
                        problems.append(f"{where} k8s {version} {manifests.describe(obj)}: {p}")
            if chart == MONITORING_DIR:
                problems += [f"{where}: {p}" for p in check_scrape_configs(objects)]
            print(f"check-k8s: {where}: {len(objects)} objects")
    return problems


def check_scrape_configs(objects: list[dict[str, Any]]) -> list[str]:
    """The rendered scrape configs, in a prometheus.yml of their own, through promtool."""
    problems = []
    for obj in objects:
        data = obj.get("stringData") or {}
        if obj.get("kind") != "Secret" or SCRAPE_CONFIGS_KEY not in data:
            continue
        config = {"scrape_configs": yaml.safe_load(data[SCRAPE_CONFIGS_KEY])}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "prometheus.yml"
            path.write_text(yaml.safe_dump(config))
            problems += _run([_tool("promtool"), "check", "config", str(path)])
    return problems


def check_rules() -> list[str]:
    promtool = _tool("promtool")
    rule_files = sorted(str(p.name) for p in RULES_DIR.glob("*.rules.yml"))
    test_files = sorted(str(p.name) for p in RULES_DIR.glob("*.rules.test.yml"))
    if not rule_files or not test_files:
        return [f"no rule files or no rule tests in {RULES_DIR.relative_to(ROOT)}"]
    return _run([promtool, "check", "rules", *rule_files], cwd=RULES_DIR) + _run(
        [promtool, "test", "rules", *test_files], cwd=RULES_DIR
    )


def check_dockerfile() -> list[str]:
    return _run([_tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)])


STEPS: dict[str, Callable[[], list[str]]] = {
    "charts": check_charts,
    "rules": check_rules,
    "dockerfile": check_dockerfile,
}


def main() -> int:
    failed = False
    for name, step in STEPS.items():
        started = time.monotonic()
        try:
            problems = step()
        except FileNotFoundError as exc:
            problems = [str(exc)]
        took = time.monotonic() - started
        if problems:
            failed = True
            print(f"check-k8s: {name}: FAILED ({took:.1f} s)")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"check-k8s: {name}: ok ({took:.1f} s)")
    return 1 if failed else 0
