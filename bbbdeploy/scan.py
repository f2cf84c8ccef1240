"""checkov over what we deploy: cfn/, every chart as check-k8s renders it, the Dockerfile.

checkov is a scanner nobody here wrote; its findings are held to one reviewed list
(checkov/reviewed.yaml): a finding passes only when an entry there names its check and
resource and says why it stays. A finding no entry covers fails, and so does an entry
that covers nothing any more (a fixed finding must leave the list with its fix).

checkov runs from its own venv (scripts/bootstrap.sh `checkov_venv`), offline: no
mapping download, no platform, no network namespace where unshare allows one.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bbbdeploy import charts
from bbbdeploy.paths import CFN_DIR, DOCKERFILE, REVIEWED_FINDINGS, ROOT

TARGETS = ("cfn", "charts", "dockerfile")
_FRAMEWORKS = {"cfn": "cloudformation", "charts": "kubernetes", "dockerfile": "dockerfile"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One failed check: which target, which check, which resource in which file."""

    target: str
    check: str
    name: str
    resource: str
    file: str

    def describe(self) -> str:
        return f"{self.target} {self.check} {self.resource} ({self.file}): {self.name}"


@dataclass(frozen=True, slots=True)
class Reviewed:
    """A finding that stays, and why. `resource` and `file` are fnmatch patterns."""

    target: str
    check: str
    resource: str
    file: str
    reason: str

    def covers(self, finding: Finding) -> bool:
        return (
            self.target == finding.target
            and self.check == finding.check
            and fnmatch.fnmatchcase(finding.resource, self.resource)
            and fnmatch.fnmatchcase(finding.file, self.file)
        )

    def describe(self) -> str:
        return f"{self.target} {self.check} {self.resource} ({self.file})"


def load_reviewed(path: Path = REVIEWED_FINDINGS) -> list[Reviewed]:
    """The reviewed list; every entry must name a target, a check, a resource and a reason."""
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path.name}: a list of entries")
    reviewed = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path.name}[{i}]: an entry is a mapping")
        unknown = set(entry) - {"target", "check", "resource", "file", "reason"}
        if unknown:
            raise ValueError(f"{path.name}[{i}]: unknown keys {sorted(unknown)}")
        if entry.get("target") not in TARGETS:
            raise ValueError(f"{path.name}[{i}]: target must be one of {TARGETS}")
        reason = str(entry.get("reason") or "").strip()
        # A reason is a sentence a reviewer can argue with, not a placeholder.
        if len(reason.split()) < 6:
            raise ValueError(f"{path.name}[{i}]: {entry.get('check')}: the reason is missing")
        if not entry.get("check") or not entry.get("resource"):
            raise ValueError(f"{path.name}[{i}]: check and resource are required")
        reviewed.append(
            Reviewed(
                target=entry["target"],
                check=str(entry["check"]),
                resource=str(entry["resource"]),
                file=str(entry.get("file", "*")),
                reason=reason,
            )
        )
    return reviewed


def parse_report(target: str, text: str) -> list[Finding]:
    """The failed checks of checkov's JSON output (one report, or a list of them)."""
    if not text.strip():
        return []
    loaded = json.loads(text)
    reports: list[dict[str, Any]] = loaded if isinstance(loaded, list) else [loaded]
    findings = []
    for report in reports:
        if "results" not in report:
            # checkov prints a bare summary when a framework found nothing to scan.
            continue
        for failed in report["results"].get("failed_checks") or []:
            findings.append(
                Finding(
                    target=target,
                    check=failed["check_id"],
                    name=failed.get("check_name", ""),
                    resource=failed["resource"],
                    file=failed["file_path"],
                )
            )
    return findings


def judge(
    findings: Iterable[Finding], reviewed: list[Reviewed], targets: Iterable[str] = TARGETS
) -> tuple[list[Finding], list[Reviewed]]:
    """Findings no entry covers, and entries (of the scanned targets) that cover nothing."""
    findings = list(findings)
    scanned = set(targets)
    unreviewed = [f for f in findings if not any(r.covers(f) for r in reviewed)]
    stale = [r for r in reviewed if r.target in scanned and not any(r.covers(f) for f in findings)]
    return unreviewed, stale


def write_renders(into: Path) -> list[Path]:
    """Every chart rendered as scripts/check-k8s renders it: <chart>/<value set>.yaml."""
    written = []
    for chart in charts.charts():
        for value_set in charts.value_sets(chart):
            objects = charts.render(chart, value_set.values)
            path = into / chart.name / value_set.name.removesuffix(".yaml")
            path = path.with_suffix(".yaml")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
            written.append(path)
    return written


def _checkov_argv(checkov: str, target: str, where: Path) -> list[str]:
    # Paths inside the repository are given relative to it, so that findings (and the
    # reviewed list) name "Dockerfile", "/eks.yaml", not where this checkout lives.
    if where.is_relative_to(ROOT):
        where = where.relative_to(ROOT)
    source = ["-f", str(where)] if target == "dockerfile" else ["-d", str(where)]
    argv = [
        checkov, *source, "--framework", _FRAMEWORKS[target],
        "--output", "json", "--quiet", "--compact", "--skip-download",
    ]  # fmt: skip
    # Where the kernel allows it, checkov gets no network at all.
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"], capture_output=True).returncode == 0:  # noqa: S603
        argv = [unshare, "--net", *argv]
    return argv


def run_checkov(checkov: str, target: str, where: Path) -> list[Finding]:
    """checkov over one target; its failed checks."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    done = subprocess.run(  # noqa: S603
        _checkov_argv(checkov, target, where),
        capture_output=True, text=True, env=env, check=False, cwd=ROOT,
    )  # fmt: skip
    # checkov exits 1 when a check failed: that is what the reviewed list judges.
    if done.returncode not in (0, 1):
        raise RuntimeError(f"checkov {target} exited {done.returncode}: {done.stderr[-2000:]}")
    return parse_report(target, done.stdout)


def scan(checkov: str) -> list[Finding]:
    """Every target's findings."""
    findings = run_checkov(checkov, "cfn", CFN_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        write_renders(Path(tmp))
        findings += run_checkov(checkov, "charts", Path(tmp))
    findings += run_checkov(checkov, "dockerfile", DOCKERFILE)
    return findings


def main(checkov: str) -> int:
    reviewed = load_reviewed()
    findings = scan(checkov)
    unreviewed, stale = judge(findings, reviewed)
    for target in TARGETS:
        mine = [f for f in findings if f.target == target]
        covered = len(mine) - len([f for f in unreviewed if f.target == target])
        print(f"checkov: {target}: {len(mine)} failed checks, {covered} reviewed")
    for finding in unreviewed:
        print(f"  NOT REVIEWED: {finding.describe()}")
    for entry in stale:
        print(f"  STALE ENTRY (covers no finding; remove it): {entry.describe()}")
    return 1 if unreviewed or stale else 0
