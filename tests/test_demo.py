"""The README's main command, in a short form: it must tell the truth about what it saw."""

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import TextIO

import pytest

from bbbsim import fleet_demo

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
    assert doc["meetings_not_created"] == 0  # every create went through Scalelite to a host
    assert doc["meetings_ended_normally"] == doc["meetings_started"]
    assert doc["max_nodes"] > doc["min_nodes"], "the fleet never grew"
    assert doc["final_nodes"] < doc["max_nodes"], "the fleet never shrank"
    assert doc["scale_out_latency_s"] is not None
    # The scale-out starts the warm pool's hosts first, each with a new public address.
    assert doc["warm_pool"] == 2
    assert doc["warm_starts"] >= 1
    assert doc["time_to_serving_s"] is not None
    assert doc["time_to_serving_s"] >= doc["scale_out_latency_s"]
    assert "started from the warm pool at 198.51.100." in result.stdout
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


def _without(hidden: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """``bbbsim ARGS`` in an interpreter where ``hidden`` cannot be imported (as if the
    sim extra were not installed)."""
    code = (
        "import sys\n"
        f"for name in {hidden!r}:\n"
        "    sys.modules[name] = None\n"
        "from bbbsim.cli import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("hidden", ["moto", "matplotlib", "flask"])
def test_demo_without_the_sim_extra_names_it_and_starts_nothing(
    tmp_path: Path, hidden: str
) -> None:
    summary = tmp_path / "summary.json"
    result = _without((hidden,), "demo", "--duration", "5", "--summary-json", str(summary))
    assert result.returncode == 2
    assert f"needs {hidden}" in result.stderr
    assert "pip install 'bbbfleet[sim]'" in result.stderr
    assert result.stdout == ""
    assert not summary.exists()


def test_backtest_plot_needs_matplotlib_the_rest_does_not(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("start_s,duration_s,participants\n0,600,10\n")
    hidden = ("moto", "matplotlib")
    plotted = _without(hidden, "backtest", "--trace", str(trace), "--plot", str(tmp_path / "p.png"))
    assert plotted.returncode == 2
    assert "needs matplotlib" in plotted.stderr
    assert "bbbfleet[sim]" in plotted.stderr
    assert plotted.stdout == ""
    table = _without(hidden, "backtest", "--trace", str(trace))
    assert table.returncode == 0, table.stderr
    assert "| default |" in table.stdout
    generated = _without(hidden, "trace", "generate", "--kind", "exam-flash",
                         "--out", str(tmp_path / "g.csv"))  # fmt: skip
    assert generated.returncode == 0, generated.stderr


def test_node_demo_needs_no_moto() -> None:
    code = "import sys\nsys.modules['moto'] = None\nimport bbbsim.demo\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_summary_json_is_written_before_the_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def played(
        duration: float, out: TextIO, workdir: Path, warm_pool: int
    ) -> fleet_demo.DemoSummary:
        del duration, out, workdir
        return fleet_demo.DemoSummary(
            meetings_started=3, meetings_ended_normally=3, warm_pool=warm_pool
        )

    def broken_plot(summary: fleet_demo.DemoSummary, path: Path) -> None:
        raise RuntimeError("no picture today")

    monkeypatch.setattr(fleet_demo, "run", played)
    monkeypatch.setattr(fleet_demo, "plot", broken_plot)
    summary = tmp_path / "summary.json"
    with pytest.raises(RuntimeError, match="no picture"):
        fleet_demo.main(1.0, summary, tmp_path / "t.png", out=io.StringIO())
    doc = json.loads(summary.read_text())
    assert doc["meetings_started"] == 3
    assert doc["warm_pool"] == 2
