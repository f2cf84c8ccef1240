"""The policy backtest: presets and the oracle over one trace, scored the same way.

Scores (the JSON keys, per policy and for the oracle):

- ``instance_hours``: instances in the group (booting, serving, draining) over
  time; the oracle's include each node's boot.
- ``overload_node_minutes``: node-minutes with a node's CPU above 80 %.
- ``meetings_on_overloaded_node``: meetings placed on a node already above 80 %.
- ``meetings_ended_by_platform``: meetings still running on a node when it was
  terminated (must be 0).
- ``p95_time_to_capacity_s``: 95th percentile (nearest rank) of the lag from
  each rise in the fluid need to enough nodes up (see
  ``bbbsim.demand.capacity_lags``).

And for the whole run ``fluid_bound_instance_hours``: the integral of the
fluid need (``bbbsim.demand``), which no placement can undercut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bbbscaler.policy import Preset
from bbbsim.demand import Steps, capacity_lags, integrate, need_steps, p95
from bbbsim.fleet_model import FleetRun, FleetSettings, prepare, simulate_presets
from bbbsim.oracle import oracle_run
from bbbsim.trace import Trace

SCORE_KEYS = (
    "instance_hours",
    "overload_node_minutes",
    "meetings_on_overloaded_node",
    "meetings_ended_by_platform",
    "p95_time_to_capacity_s",
)
MAX_AVOIDABLE_OVERLOAD = 0.10
"""Issue 5's goal: the default's avoidable overload at most 10 % of the seed's."""
MAX_ORACLE_RATIO = 1.5
"""Issue 5's goal: the default's instance-hours at most 1.5 x the oracle's."""


@dataclass(frozen=True, slots=True)
class Scored:
    """One run and its lag percentile."""

    run: FleetRun
    p95_time_to_capacity_s: float

    def scores(self) -> dict[str, float | int]:
        r = self.run
        return {
            "instance_hours": round(r.instance_hours, 3),
            "overload_node_minutes": round(r.overload_node_minutes, 3),
            "meetings_on_overloaded_node": r.meetings_on_overloaded_node,
            "meetings_ended_by_platform": r.meetings_ended_by_platform,
            "p95_time_to_capacity_s": round(self.p95_time_to_capacity_s, 1),
        }


@dataclass(frozen=True, slots=True)
class BacktestResult:
    trace: str
    meetings: int
    hours: float
    need: Steps
    fluid_bound_instance_hours: float
    policies: tuple[Scored, ...]
    oracle: Scored


def backtest(trace: Trace, presets: Sequence[Preset], settings: FleetSettings) -> BacktestResult:
    """Every preset and the oracle over ``trace``."""
    prepared = prepare(trace, settings)
    need = need_steps(prepared.start, prepared.end, prepared.units, settings.host)
    horizon = prepared.horizon

    def scored(run: FleetRun) -> Scored:
        return Scored(run, p95(capacity_lags(need, run.capacity)))

    runs = simulate_presets(prepared, presets, settings)
    return BacktestResult(
        trace=trace.name,
        meetings=len(trace.meetings),
        hours=horizon / 3600,
        need=need,
        fluid_bound_instance_hours=integrate(need, horizon) / 3600,
        policies=tuple(scored(r) for r in runs),
        oracle=scored(oracle_run(prepared, settings)),
    )


def report_json(result: BacktestResult) -> dict[str, Any]:
    """The JSON document ``--json`` writes."""
    return {
        "trace": {
            "name": result.trace,
            "meetings": result.meetings,
            "hours": round(result.hours, 3),
        },
        "fluid_bound_instance_hours": round(result.fluid_bound_instance_hours, 3),
        "policies": {s.run.name: s.scores() for s in result.policies},
        "oracle": result.oracle.scores(),
    }


def _row(name: str, s: Scored, oracle_hours: float) -> str:
    r = s.run
    ratio = r.instance_hours / oracle_hours if oracle_hours else 0.0
    return (
        f"| {name} | {r.instance_hours:,.1f} | {ratio:.2f}x | {r.peak_nodes} "
        f"| {r.overload_node_minutes:,.0f} | {r.overload_core_minutes:,.0f} "
        f"| {r.meetings_on_overloaded_node:,} "
        f"| {r.meetings_ended_by_platform} | {s.p95_time_to_capacity_s:,.0f} |"
    )


def render_table(result: BacktestResult) -> str:
    """A Markdown table of the runs and the fluid bound; the issue's goals when both presets ran."""
    oh = result.oracle.run.instance_hours
    lines = [
        f"trace {result.trace}: {result.meetings:,} meetings over {result.hours:,.1f} h",
        "",
        "| run | instance-hours | x oracle | peak nodes | overload node-min | overload core-min "
        "| meetings on overloaded node | ended by platform | p95 time to capacity (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(s.run.name, s, oh) for s in result.policies),
        _row("oracle", result.oracle, oh),
        f"| fluid bound | {result.fluid_bound_instance_hours:,.1f} "
        f"| {result.fluid_bound_instance_hours / oh if oh else 0:.2f}x "
        f"| {max((v for _, v in result.need), default=0)} | | | | | |",
    ]
    refused = [s.run for s in result.policies if s.run.meetings_refused]
    lines += [f"WARNING: {r.name} left {r.meetings_refused} meeting(s) unplaced" for r in refused]
    lines += goal_lines(result)
    return "\n".join(lines)


def goal_lines(result: BacktestResult) -> list[str]:
    """Issue 5's goals for the default preset, measured against the seed and the oracle."""
    by_name = {s.run.name: s.run for s in result.policies}
    if "seed" not in by_name or "default" not in by_name:
        return []
    seed, default, oracle = by_name["seed"], by_name["default"], result.oracle.run
    seed_avoidable = max(0.0, seed.overload_node_minutes - oracle.overload_node_minutes)
    default_avoidable = max(0.0, default.overload_node_minutes - oracle.overload_node_minutes)
    share = default_avoidable / seed_avoidable if seed_avoidable else 0.0
    ratio = default.instance_hours / oracle.instance_hours if oracle.instance_hours else 0.0

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    return [
        "",
        "goals for default:",
        f"- meetings ended by the platform: {default.meetings_ended_by_platform} "
        f"({mark(default.meetings_ended_by_platform == 0)})",
        f"- avoidable overload: {default_avoidable:,.0f} of the seed's {seed_avoidable:,.0f} "
        f"node-min = {share:.1%} (goal <= {MAX_AVOIDABLE_OVERLOAD:.0%}: "
        f"{mark(share <= MAX_AVOIDABLE_OVERLOAD)})",
        f"- instance-hours: {ratio:.2f}x the oracle's (goal <= {MAX_ORACLE_RATIO}x: "
        f"{mark(ratio <= MAX_ORACLE_RATIO)})",
    ]
