"""The README's main command, in a short form: it must tell the truth about what it saw."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_fleet_demo_short_run(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    png = tmp_path / "timeline.png"
    result = subprocess.run(
        [sys.executable, "-m", "bbbsim", "demo", "--duration", "45", "--summary-json",
         str(summary), "--plot", str(png)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary" in result.stdout
    doc = json.loads(summary.read_text())
    assert doc["meetings_started"] > 0
    assert doc["meetings_ended_by_platform"] == 0
    assert doc["meetings_ended_normally"] == doc["meetings_started"]
    assert doc["max_nodes"] > doc["min_nodes"], "the fleet never grew"
    assert doc["final_nodes"] < doc["max_nodes"], "the fleet never shrank"
    assert doc["scale_out_latency_s"] is not None
    assert doc["bbbscaler_exit_code"] == 0
    # TLS on: pebble finalized one order, the fleet certificate, and every node serves it.
    assert doc["nodes_launched"] >= 3
    assert doc["certificates_issued"] == 1
    assert doc["nodes_with_fleet_certificate"] == doc["nodes_launched"]
    assert png.read_bytes().startswith(b"\x89PNG")


def test_node_demo_short_run(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "bbbsim", "node-demo", "--duration", "10", "--summary-json",
         str(summary)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary" in result.stdout
    assert "api_up=0" in result.stdout  # the outage was shown live
    doc = json.loads(summary.read_text())
    assert doc["meetings_started"] == 3
    assert doc["meetings_ended_by_platform"] == 0
    assert doc["outage_detected"] is True
    assert doc["zeros_reported_during_outage"] is False
    assert doc["bbbnode_exit_code"] == 0
    assert {"scale_out_latency_s", "max_nodes", "min_nodes"} <= set(doc)


def test_demo_rejects_bad_duration() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bbbsim", "demo", "--duration", "-3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--duration" in result.stderr
