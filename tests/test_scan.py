"""The checkov gate: findings judged against the reviewed list (scripts/check-deploy runs
checkov itself, from its own venv; these tests hold the judging and the list)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbbdeploy import scan
from bbbdeploy.paths import ROOT

_REPORT = {
    "check_type": "kubernetes",
    "results": {
        "failed_checks": [
            {
                "check_id": "CKV_K8S_43",
                "check_name": "Image should use digest",
                "resource": "Deployment.bbbfleet.bbbfleet-greenlight",
                "file_path": "/greenlight/defaults.yaml",
            },
            {
                "check_id": "CKV_K8S_43",
                "check_name": "Image should use digest",
                "resource": "Deployment.bbbfleet.bbbfleet-greenlight",
                "file_path": "/greenlight/example-values.yaml",
            },
        ]
    },
}


def _reviewed(**overrides: str) -> scan.Reviewed:
    fields = {
        "target": "charts",
        "check": "CKV_K8S_43",
        "resource": "*",
        "file": "/*/defaults.yaml",
        "reason": "defaults cannot know the digest of an image",
    }
    fields.update(overrides)
    return scan.Reviewed(**fields)


def test_report_parsed_into_findings() -> None:
    findings = scan.parse_report("charts", json.dumps(_REPORT))
    files = [f.file for f in findings]
    assert files == ["/greenlight/defaults.yaml", "/greenlight/example-values.yaml"]
    # A list of reports (several frameworks) and an empty run parse too.
    assert len(scan.parse_report("charts", json.dumps([_REPORT, _REPORT]))) == 4
    assert scan.parse_report("cfn", json.dumps({"passed": 0, "failed": 0})) == []
    assert scan.parse_report("cfn", "") == []


def test_a_finding_no_entry_covers_fails() -> None:
    findings = scan.parse_report("charts", json.dumps(_REPORT))
    unreviewed, stale = scan.judge(findings, [_reviewed()])
    # Only the defaults render is reviewed: the example values' finding is not.
    assert [f.file for f in unreviewed] == ["/greenlight/example-values.yaml"]
    assert stale == []


def test_an_entry_covering_nothing_is_stale() -> None:
    findings = scan.parse_report("charts", json.dumps(_REPORT))
    fixed = _reviewed(check="CKV_K8S_21")
    other_target = _reviewed(target="cfn", check="CKV_AWS_1")
    _, stale = scan.judge(findings, [_reviewed(file="*"), fixed, other_target], targets=["charts"])
    # The cfn entry is not judged when cfn was not scanned.
    assert stale == [fixed]


def test_entries_match_check_and_target_exactly() -> None:
    (finding, _) = scan.parse_report("charts", json.dumps(_REPORT))
    assert not _reviewed(check="CKV_K8S_4").covers(finding)
    assert not _reviewed(target="cfn").covers(finding)
    assert _reviewed(resource="Deployment.*.*-greenlight").covers(finding)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("- {target: charts, check: CKV_K8S_8, resource: '*', reason: because}", "reason"),
        ("- {target: helm, check: CKV_K8S_8, resource: '*', reason: " + "x " * 8 + "}", "target"),
        ("- {target: cfn, check: X, resource: Y, why: z, reason: " + "x " * 8 + "}", "unknown"),
        ("- {target: cfn, resource: Y, reason: " + "x " * 8 + "}", "required"),
    ],
)
def test_reviewed_list_entries_are_complete(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "reviewed.yaml"
    path.write_text(entry + "\n")
    with pytest.raises(ValueError, match=message):
        scan.load_reviewed(path)


def test_committed_reviewed_list_loads_and_gives_each_skip_a_reason() -> None:
    reviewed = scan.load_reviewed()
    assert reviewed
    assert {r.target for r in reviewed} <= set(scan.TARGETS)
    # One entry per (target, check, resource, file): a duplicate hides which one is meant.
    keys = [(r.target, r.check, r.resource, r.file) for r in reviewed]
    assert len(keys) == len(set(keys))


def test_checkov_is_pinned_apart_from_the_lock() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "checkov/requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert "checkov" in pins
    locked = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    # Why checkov has a venv of its own: its boto stack is not the lock's.
    assert pins["botocore"] != locked["botocore"]
    assert "checkov" not in locked
