"""The backtest: known answers, the oracle's rules, the lag measure, the CLI, the shipped traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import bbbsim.backtest
from bbbscaler.policy import Preset
from bbbscaler.schedule import Window
from bbbsim.backtest import (
    SCORE_KEYS,
    BacktestResult,
    backtest,
    render_table,
    report_json,
    shipped_schedules,
)
from bbbsim.backtest_cli import DEFAULT_POLL_INTERVAL
from bbbsim.cli import main
from bbbsim.demand import capacity_lags, p95
from bbbsim.fleet_model import FleetSettings, prepare
from bbbsim.oracle import oracle_run
from bbbsim.scalelite_poller import PollerSpec, healthy_round
from bbbsim.trace import SHIPPED_WEEKS, Trace, TraceMeeting, render_trace, shipped_trace

BOTH: tuple[Preset, ...] = ("seed", "default")
EXAM = {
    "name": "exam",
    "days": ["mon"],
    "start": "02:00",
    "end": "02:15",
    "timezone": "UTC",
    "min_nodes": 9,
}
# Monday 00:10-00:40 on the trace's clock: 4 nodes for a meeting one node carries.
HOLD_4 = (
    '[[policy.schedules]]\nname = "drill"\ndays = ["mon"]\nstart = "00:10"\nend = "00:40"\n'
    "min_nodes = 4\n"
)


def oracle_hours(*meetings: TraceMeeting) -> float:
    settings = FleetSettings()
    return oracle_run(prepare(Trace("t", meetings), settings), settings).instance_hours


# --- known answers ----------------------------------------------------------------------------


def test_constant_load_has_known_instance_hours() -> None:
    # 30 meetings of 8 (2 voices, 1 camera): 0.222 cores each, 6.66 cores in all. At 80 % of
    # 8 cores less the 0.25 idle base, 6.15 cores fit a node: 27 meetings. So two nodes.
    trace = Trace("constant", tuple(TraceMeeting(0, 7200, 8, 1) for _ in range(30)))
    result = backtest(trace, BOTH, FleetSettings(verify=True))
    assert result.fluid_bound_instance_hours == pytest.approx(2 * 2.0)
    oracle = result.oracle.run
    assert oracle.instance_hours == pytest.approx(2 * (7200 + 180) / 3600)
    assert (oracle.overload_node_minutes, oracle.peak_nodes) == (0.0, 2)
    assert result.oracle.p95_time_to_capacity_s == 0.0
    seed, default = (s.run for s in result.policies)
    # One node when everything starts: all 30 land on it (86 % CPU) for the whole two hours,
    # the 29th and 30th on a node already above 80 %. No policy can move a live meeting.
    for run in (seed, default):
        assert run.overload_node_minutes == pytest.approx(120.0)
        # 0.25 + 6.66 cores against 6.4 at 80 %: 0.51 cores too many, for 120 minutes.
        assert run.overload_core_minutes == pytest.approx(0.51 * 120)
        assert run.meetings_on_overloaded_node == 2
        assert run.meetings_ended_by_platform == 0
    # default, first round: the one node at 86 % has no room below the 70 % target, so the
    # 0.15 headroom is short: ceil(0.15 / 0.7) = 1 node more, launched at 0. From then on the
    # second node idles at 0.25 / 8 = 3 %: 0.67 of room covers the headroom (no growth), and
    # the mean keeps ceil((0.86 + 0.03 + 0.15) / 0.7) = 2 (no scale-in). Two nodes for the
    # whole two hours.
    assert default.instance_hours == pytest.approx(2 * 2.0)
    assert default.capacity == ((0.0, 1), (180.0, 2))
    assert default.instances == ((0.0, 2),)
    # The second node serves 180 s (default) or 180 + 180 s (seed: 80 % held 180 s) later.
    scores = {s.run.name: s.p95_time_to_capacity_s for s in result.policies}
    assert scores == {"seed": 360.0, "default": 180.0}


def test_oracle_extends_a_node_s_life_least() -> None:
    # Two nodes carry a 3.4-core meeting each (open until 1000 and 3000); three 0.68-core ones
    # fit either. [0, 2000) goes to the node it does not extend; [0, 500) to the one closing
    # soonest of those; [0, 6000) extends both, the later-closing one least.
    hours = oracle_hours(
        TraceMeeting(0, 1000, 200),
        TraceMeeting(0, 3000, 200),
        TraceMeeting(0, 2000, 40),
        TraceMeeting(0, 500, 40),
        TraceMeeting(0, 6000, 40),
    )
    assert hours == pytest.approx((1000 + 180 + 6000 + 180) / 3600)


def test_oracle_gives_a_big_meeting_its_own_node_and_closes_empty_nodes() -> None:
    settings = FleetSettings()
    trace = Trace("t", (TraceMeeting(0, 3600, 280, 1), TraceMeeting(0, 3600, 5)))
    run = oracle_run(prepare(trace, settings), settings)
    assert run.peak_nodes == 2
    assert run.overload_node_minutes == pytest.approx(60.0)
    # 280 users, 70 voices, 1 camera: 7.022 cores + 0.25 idle, 0.872 above 6.4, for an hour.
    assert run.overload_core_minutes == pytest.approx(0.872 * 60)
    # A node that empties at 1000 is closed: the meeting starting then needs a new one.
    hours = oracle_hours(TraceMeeting(0, 1000, 5), TraceMeeting(1000, 1000, 5))
    assert hours == pytest.approx(2 * 1180 / 3600)


def test_capacity_lags() -> None:
    # Need 2 at once; one node there, the second 50 s later.
    assert capacity_lags(((0, 2), (100, 0)), ((0, 1), (50, 2))) == (0.0, 50.0)
    # A rise that fell away before capacity came counts its whole unmet time.
    assert capacity_lags(((0, 1), (30, 0)), ((0, 0), (100, 1))) == (30.0,)
    # Falling and rising again is a new rise.
    lags = capacity_lags(((0, 1), (10, 0), (20, 1), (40, 0)), ((0, 0), (30, 1)))
    assert lags == (10.0, 10.0)
    assert p95([0.0] * 19 + [100.0]) == 0.0
    assert p95(float(k) for k in range(1, 101)) == 95.0
    assert p95([]) == 0.0


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_cli_writes_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["backtest", "--trace", "exam-flash", "--policy", "seed", "--policy", "default"]
    assert main([*args, "--json", str(out), "--plot", str(png)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["policies"]) == set(BOTH)
    for scores in (*doc["policies"].values(), doc["oracle"]):
        assert set(scores) == set(SCORE_KEYS)
        assert scores["meetings_ended_by_platform"] == 0
    assert doc["fluid_bound_instance_hours"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| oracle |" in printed
    assert "goals for default" in printed
    # The shipped exam-flash brings its planned exam (bbbsim/traces/exam-flash.toml).
    assert doc["schedules"] == [EXAM]
    assert "planned: exam mon 02:00-02:15 UTC holds 9 nodes" in printed
    # The platform the runs shared, Scalelite's poller by its own variable names.
    assert doc["model"]["scalelite"]["SERVER_UNHEALTHY_THRESHOLD"] == 5
    assert doc["model"]["recordings"] == {"processed": True, "ratio": 0.05, "cores": 1.0}
    assert "- meetings ended by Scalelite: 0 (met)" in printed


@pytest.mark.usefixtures("restore_logging")
def test_meetings_scalelite_ends_are_reported_not_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One meeting too big for a host (100 % CPU) under Scalelite's own thresholds: Scalelite
    # ends it (poll.rake:93-118). The price of overload, reported beside the platform's count,
    # which alone sets the exit status.
    trace = tmp_path / "crush.csv"
    trace.write_text(render_trace([TraceMeeting(0, 3600, 400, 1), TraceMeeting(5, 3600, 5)]))
    out = tmp_path / "r.json"
    stock = ["--server-unhealthy-threshold", "2", "--response-timeout", "10"]
    args = ["backtest", "--trace", str(trace), "--policy", "seed", *stock]
    assert main([*args, "--json", str(out), "--max-nodes", "1"]) == 0
    scores = json.loads(out.read_text())["policies"]["seed"]
    assert scores["meetings_ended_by_scalelite"] >= 2
    assert scores["meetings_ended_by_platform"] == 0
    assert "| ended by Scalelite |" in capsys.readouterr().out


@pytest.mark.usefixtures("restore_logging")
def test_cli_model_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "rec.csv"
    trace.write_text(render_trace([TraceMeeting(0, 3600, 8, 1, recorded=True)]))
    out = tmp_path / "r.json"
    args = ["backtest", "--trace", str(trace), "--policy", "default", "--json", str(out)]
    assert main([*args, "--recording-ratio", "0.5", "--recording-cores", "2"]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["recordings"] == {"processed": True, "ratio": 0.5, "cores": 2.0}
    # The oracle's node waits 30 minutes for the recording after the meeting ends.
    assert doc["oracle"]["recording_wait_instance_hours"] == 0.5
    assert main([*args, "--no-recordings", "--poll-interval", "60"]) == 0
    doc = json.loads(out.read_text())
    assert doc["oracle"]["recording_wait_instance_hours"] == 0
    assert doc["model"]["scalelite"]["POLL_INTERVAL"] == 60
    capsys.readouterr()
    assert main([*args, "--poller-threads", "1"]) == 2
    assert "--poller-threads must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--recording-ratio", "-1"])
    assert exit_.value.code == 2


def test_the_model_polls_as_helm_scalelite_configures_scalelite() -> None:
    # The backtest's Scalelite is the one bbbfleet deploys: helm/scalelite's values.
    values = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "helm/scalelite/values.yaml").read_text()
    )
    env, spec = values["env"], PollerSpec()
    assert values["poller"]["interval"] == spec.interval
    assert int(env["POLLER_THREADS"]) == spec.threads
    assert float(env["POLLER_WAIT_TIMEOUT"]) == spec.wait_timeout
    assert float(env["RESPONSE_TIMEOUT"]) == spec.response_timeout
    assert int(env["SERVER_UNHEALTHY_THRESHOLD"]) == spec.unhealthy_threshold
    assert int(env["SERVER_HEALTHY_THRESHOLD"]) == spec.healthy_threshold
    # A slow host's poll must end in an answer or a counted failure, never in the kill.
    assert spec.wait_timeout >= spec.response_timeout
    # Sized for 200 servers and 2,000 meetings polled in full every round.
    assert healthy_round(200, 2_000, spec) <= spec.wait_timeout


@pytest.mark.usefixtures("restore_logging")
def test_cli_schedules_none_drops_a_shipped_trace_s_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    args = ["backtest", "--trace", "exam-flash", "--policy", "default", "--json", str(out)]
    assert main([*args, "--schedules", "none"]) == 0
    assert json.loads(out.read_text())["schedules"] == []
    assert "planned:" not in capsys.readouterr().out
    # The university week has no planned event.
    assert shipped_schedules("university-week") == ()


def tiny_trace(tmp_path: Path) -> Path:
    # One small meeting for an hour: one node carries it, no policy adds another on its own.
    path = tmp_path / "tiny.csv"
    path.write_text(render_trace([TraceMeeting(0, 3600, 5)]))
    return path


@pytest.mark.usefixtures("restore_logging")
def test_cli_schedules_hold_capacity_in_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tiny_trace(tmp_path)
    planned = tmp_path / "planned.toml"
    planned.write_text(HOLD_4)
    tuned = tmp_path / "tuned.toml"
    tuned.write_text("[policy]\nheadroom = 0.25\n")
    hours: dict[str, dict[str, float]] = {}
    for label, extra in (("without", []), ("with", ["--schedules", str(planned)])):
        out = tmp_path / f"{label}.json"
        args = ["backtest", "--trace", str(trace), "--policy-config", str(tuned)]
        assert main([*args, *extra, "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        hours[label] = {name: s["instance_hours"] for name, s in doc["policies"].items()}
    assert doc["schedules"] == [
        {"name": "drill", "days": ["mon"], "start": "00:10", "end": "00:40",
         "timezone": "UTC", "min_nodes": 4}
    ]  # fmt: skip
    assert "planned: drill mon 00:10-00:40 UTC holds 4 nodes" in capsys.readouterr().out
    assert set(hours["with"]) == {"seed", "default", "forecast", "tuned"}
    for name, without in hours["without"].items():
        # Three more nodes from 180 s before 00:10 at least until 00:40: 1.5 h at least.
        assert hours["with"][name] >= without + 1.5, name


def test_planned_windows_join_a_config_s_own() -> None:
    trace = Trace("t", (TraceMeeting(0, 3600, 5),))
    settings = FleetSettings(verify=True)
    drill = Window("drill", frozenset({0}), 10, 40, "UTC", 4)
    plain = backtest(trace, BOTH, settings)
    result = backtest(trace, BOTH, settings, planned=[drill])
    assert result.planned == (drill,)
    for before, after in zip(plain.policies, result.policies, strict=True):
        assert after.run.peak_nodes == 4 > before.run.peak_nodes
    # The oracle knows the trace, not the calendar: it is unchanged.
    assert result.oracle.run.instance_hours == plain.oracle.run.instance_hours


def test_a_rollout_is_replayed_and_timed() -> None:
    # One node with a meeting from 0 to 3600 s, the launch template changes at 600 s. Both
    # presets: a replacement at once (the lower bound of one would not hold without the old
    # node), the old node cordoned once the replacement serves and the scale-in cooldown
    # after the growth has passed (600 + 300 s), terminated in the first round after
    # Scalelite's first poll after its meeting ended (rounds of 20.1 s: at 3,618 s). A later
    # meeting (on the new node) keeps the trace going past it.
    trace = Trace("t", (TraceMeeting(0, 3600, 5), TraceMeeting(3700, 300, 5)))
    result = backtest(trace, BOTH, FleetSettings(verify=True, rollout_at=600))
    for s in result.policies:
        assert s.run.decisions == ((600.0, "scale_out"), (900.0, "drain"), (3620.0, "terminate"))
        assert (s.run.rollout_s, s.run.meetings_ended_by_platform) == (3020.0, 0)
    doc = report_json(result)
    assert {name: p["rollout_s"] for name, p in doc["policies"].items()} == {
        "seed": 3020.0,
        "default": 3020.0,
    }
    assert "rollout_s" not in doc["oracle"]
    assert "rollout at 600 s: default all current after 3,020 s, 0 meeting(s) ended" in (
        render_table(result)
    )
    # Without a rollout no key; a rollout the trace's end comes before is null.
    assert (
        "rollout_s" not in report_json(backtest(trace, BOTH, FleetSettings()))["policies"]["seed"]
    )
    late = backtest(trace, ("default",), FleetSettings(rollout_at=3500))
    assert report_json(late)["policies"]["default"]["rollout_s"] is None
    assert "default not all current by the trace's end" in render_table(late)


@pytest.mark.usefixtures("restore_logging")
def test_cli_rollout_at(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "rollout.csv", tmp_path / "out.json"
    # The old node's meeting ends at 1,800 s; a later one keeps the trace going past its drain.
    path.write_text(render_trace([TraceMeeting(0, 1800, 5), TraceMeeting(2400, 1200, 5)]))
    trace = str(path)
    assert main(["backtest", "--trace", trace, "--rollout-at", "60", "--json", str(out)]) == 0
    policies = json.loads(out.read_text())["policies"]
    assert all(isinstance(p["rollout_s"], float) for p in policies.values())
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(SystemExit) as exited:
            main(["backtest", "--trace", trace, "--rollout-at", bad])
        assert exited.value.code == 2
        assert "--rollout-at" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_cli_warm_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "ramp.csv", tmp_path / "out.json"
    path.write_text(render_trace([TraceMeeting(60 * k, 3600, 40, 2) for k in range(30)]))
    trace = str(path)
    args = ["backtest", "--trace", trace, "--warm-pool", "2", "--warm-start-time", "30"]
    assert main([*args, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert (doc["model"]["warm_pool"], doc["model"]["warm_start_time_s"]) == (2, 30.0)
    for scores in doc["policies"].values():
        assert scores["stopped_instance_hours"] > 0
        assert scores["warm_starts"] >= 1
        assert {"cold_starts", "instance_hours"} <= set(scores)
    assert "warm pool of 2: default" in capsys.readouterr().out
    for flag, bad in (("--warm-pool", "-1"), ("--warm-pool", "two"), ("--warm-start-time", "-5")):
        with pytest.raises(SystemExit) as exited:
            main(["backtest", "--trace", trace, flag, bad])
        assert exited.value.code == 2
        assert flag in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_cli_bad_schedules_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = str(tiny_trace(tmp_path))
    bad = tmp_path / "bad.toml"
    bad.write_text(HOLD_4.replace('"00:10"', '"2 am"'))
    assert main(["backtest", "--trace", trace, "--schedules", str(bad)]) == 2
    assert "policy.schedules.0.start: Value error, must be HH:MM" in capsys.readouterr().err
    # A policy key is not a planned event: it would seem to tune every run.
    bad.write_text("[policy]\nheadroom = 1.0\n" + HOLD_4)
    assert main(["backtest", "--trace", trace, "--schedules", str(bad)]) == 2
    assert "policy.headroom: not allowed in a schedules file" in capsys.readouterr().err
    bad.write_text("[policy]\n")
    assert main(["backtest", "--trace", trace, "--schedules", str(bad)]) == 2
    assert "policy.schedules: missing" in capsys.readouterr().err
    assert main(["backtest", "--trace", trace, "--schedules", str(tmp_path / "no.toml")]) == 2
    assert "no.toml" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_cli_polls_scalelite_every_20_s_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls: list[float] = []

    def spy(trace: Trace, presets: list[Preset], settings: FleetSettings,
            *rest: object) -> BacktestResult:  # fmt: skip
        polls.append(settings.poll_interval)
        return backtest(trace, presets, settings)

    monkeypatch.setattr(bbbsim.backtest, "backtest", spy)
    trace = str(tiny_trace(tmp_path))
    assert main(["backtest", "--trace", trace, "--policy", "default"]) == 0
    assert main(["backtest", "--trace", trace, "--policy", "default", "--poll-interval", "60"]) == 0
    # helm/scalelite's poller.interval: Scalelite as bbbfleet deploys it.
    assert polls == [20.0, 60.0]
    assert DEFAULT_POLL_INTERVAL == 20.0
    # The CLI keeps its own constant (a fast --help); the model's default must not drift.
    assert FleetSettings().poll_interval == DEFAULT_POLL_INTERVAL


@pytest.mark.usefixtures("restore_logging")
def test_cli_bad_trace_exits_2_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("start_s,duration_s,participants\n0,60,5\n10,sixty,5\n")
    assert main(["backtest", "--trace", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 3, column duration_s: not a number: 'sixty'" in err
    assert main(["backtest", "--trace", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["backtest", "--trace", str(bad), "--policy", "greedy"])
    assert exit_.value.code == 2


@pytest.mark.usefixtures("restore_logging")
def test_cli_runs_a_policy_config_beside_the_presets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prewarm = tmp_path / "prewarm.toml"
    prewarm.write_text(
        '[policy]\nheadroom = 1.0\n[[policy.schedules]]\nname = "exam"\ndays = ["mon"]\n'
        'start = "02:00"\nend = "04:10"\ntimezone = "UTC"\nmin_nodes = 8\n'
    )
    out = tmp_path / "r.json"
    assert main(["backtest", "--trace", "exam-flash", "--policy-config", str(prewarm),
                 "--json", str(out)]) == 0  # fmt: skip
    doc = json.loads(out.read_text())
    assert list(doc["policies"]) == ["seed", "default", "forecast", "prewarm"]
    assert "goals for prewarm" in capsys.readouterr().out
    # The window holds 8 nodes from 180 s before 02:00 (the trace's clock starts on a Monday).
    assert (
        doc["policies"]["prewarm"]["instance_hours"] > doc["policies"]["default"]["instance_hours"]
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\nheadroom = -1\ntarget = 0.7\n")
    assert main(["backtest", "--trace", "exam-flash", "--policy-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "policy.headroom" in err
    assert "policy.target" in err


# --- the shipped traces -----------------------------------------------------------------------

ALL: tuple[Preset, ...] = ("seed", "default", "forecast")
CHEAP = ("exam-flash",)
"""The shipped traces run whole here: the weeks' scored weeks take a minute (their README
tables come from benchmarks/backtest_scores.py)."""


@pytest.fixture(scope="module")
def shipped() -> dict[str, BacktestResult]:
    # As `bbbsim backtest --trace NAME` runs them: its poll interval, the trace's planned events.
    return {
        # The small trace also checks every placement and poll against bbbcore's pure rule.
        name: backtest(
            shipped_trace(name),
            ALL,
            FleetSettings(verify=True),
            planned=shipped_schedules(name),
        )
        for name in CHEAP
    }


@pytest.mark.parametrize("name", CHEAP)
def test_no_meeting_ended_by_the_platform_on_shipped_traces(
    shipped: dict[str, BacktestResult], name: str
) -> None:
    result = shipped[name]
    for scored in (*result.policies, result.oracle):
        run = scored.run
        assert run.meetings_ended_by_platform == 0, run.name
        assert run.meetings_refused == 0, run.name
    # No placement that keeps nodes at or under 80 % beats the fluid bound (a policy that
    # overloads nodes can).
    assert result.oracle.run.instance_hours >= result.fluid_bound_instance_hours
    assert set(report_json(result)["policies"]) == set(ALL)
    # Scored on its last week, the four before are the forecast's history, and the forecast
    # was made and measured.
    assert result.weeks_before == SHIPPED_WEEKS - 1
    assert result.forecast_error
    assert "forecast error" in render_table(result)


@pytest.mark.parametrize("name", CHEAP)
def test_readme_tables_are_current(shipped: dict[str, BacktestResult], name: str) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    text = render_table(shipped[name])
    rows = [line for line in text.split("\n\n")[1].splitlines() if line.startswith("|")]
    assert "\n".join(rows) in readme, f"run: bbbsim backtest --trace {name}; README's table"
