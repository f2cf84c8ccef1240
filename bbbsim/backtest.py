"""The policy backtest: presets and the oracle over one trace, scored the same way.

Scores (the JSON keys, per policy and for the oracle):

- ``instance_hours``: instances in the group (booting, serving, draining) over
  time; the oracle's include each node's boot.
- ``overload_node_minutes``: node-minutes with a node's CPU above 80 %.
- ``meetings_on_overloaded_node``: meetings placed on a node already above 80 %.
- ``meetings_ended_by_platform``: meetings still running on a node when it was
  terminated (must be 0).
- ``meetings_ended_by_scalelite``: meetings Scalelite ended itself because their
  server failed SERVER_UNHEALTHY_THRESHOLD polls in a row (an overloaded host
  answers too slowly): the price of overload.
- ``recording_wait_instance_hours``: instance-hours terminated instances spent
  waiting for their recordings to be processed (bbbnode's lifecycle hook holds
  them); ``recording_wait_p95_s``: the 95th percentile of that wait over the
  terminations.
- ``p95_time_to_capacity_s``: 95th percentile (nearest rank) of the lag from
  each rise in the fluid need to enough nodes up (see
  ``bbbsim.demand.capacity_lags``).
- ``rollout_s`` (policies only, with a rollout): seconds from the launch
  template's change until no instance launched before it was left in the group;
  null when one still was at the trace's end.
- ``stopped_instance_hours``: warm pool hosts stopped and ready, over time; they
  cost only their volumes, so they are priced apart from ``instance_hours``
  (which counts a pool host while it warms up: it runs). With a warm pool the
  policies also report ``warm_starts`` and ``cold_starts``: launches served from
  the pool, and launches that booted cold.

And for the whole run ``fluid_bound_instance_hours``: the integral of the
fluid need (``bbbsim.demand``), which no placement can undercut; and
``schedules``: the planned events' windows every run held.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bbbcore.config import ConfigError
from bbbscaler.policy import PolicyConfig, Preset
from bbbscaler.policy.forecast import WEEK
from bbbscaler.schedule import Window
from bbbscaler.settings import DAYS, PolicySettings, ScalerSettings
from bbbsim.demand import Steps, capacity_lags, integrate, need_steps, p95
from bbbsim.demand_history import (
    MIN_ACTUAL,
    HourError,
    forecast_errors,
    last_week,
    trace_demand,
)
from bbbsim.fleet_model import (
    FleetRun,
    FleetSettings,
    policy_config,
    prepare,
    simulate,
)
from bbbsim.oracle import oracle_run
from bbbsim.trace import Trace

SCORE_KEYS = (
    "instance_hours",
    "stopped_instance_hours",
    "overload_node_minutes",
    "meetings_on_overloaded_node",
    "meetings_ended_by_platform",
    "meetings_ended_by_scalelite",
    "p95_time_to_capacity_s",
    "recording_wait_instance_hours",
    "recording_wait_p95_s",
)
MAX_AVOIDABLE_OVERLOAD = 0.10
"""Issue 5's goal: the default's avoidable overload at most 10 % of the seed's."""
MAX_ORACLE_RATIO = 1.5
"""Issue 5's goal: the default's instance-hours at most 1.5 x the oracle's."""
FORECAST_ORACLE_RATIO = 1.3
"""Issue 16's goal: the forecast preset's instance-hours at most 1.3 x the oracle's."""


@dataclass(frozen=True, slots=True)
class Scored:
    """One run and its lag percentile."""

    run: FleetRun
    p95_time_to_capacity_s: float

    def scores(self) -> dict[str, float | int | None]:
        r = self.run
        warm = {"warm_starts": r.warm_starts, "cold_starts": r.cold_starts} if r.warm_pool else {}
        return (
            {
                "instance_hours": round(r.instance_hours, 3),
                "stopped_instance_hours": round(r.stopped_instance_hours, 3),
                "overload_node_minutes": round(r.overload_node_minutes, 3),
                "meetings_on_overloaded_node": r.meetings_on_overloaded_node,
                "meetings_ended_by_platform": r.meetings_ended_by_platform,
                "meetings_ended_by_scalelite": r.meetings_ended_by_scalelite,
                "p95_time_to_capacity_s": round(self.p95_time_to_capacity_s, 1),
                "recording_wait_instance_hours": round(r.recording_wait_instance_hours, 3),
                "recording_wait_p95_s": round(p95(r.recording_waits), 1),
            }
            | ({} if r.rollout_at is None else {"rollout_s": r.rollout_s})
            | warm
        )


@dataclass(frozen=True, slots=True)
class BacktestResult:
    trace: str
    meetings: int
    hours: float
    need: Steps
    fluid_bound_instance_hours: float
    policies: tuple[Scored, ...]
    oracle: Scored
    planned: tuple[Window, ...] = ()
    """The planned events' windows, added to every run's own."""
    settings: FleetSettings | None = None
    """The simulated platform every run shared."""
    weeks_before: int = 0
    """Whole weeks of the trace before the scored one: the forecast's history."""
    forecast_error: tuple[HourError, ...] = ()
    """The forecast's own error over the scored week, per hour of day (with earlier weeks)."""


def _policy_table(path: Path) -> dict[str, Any]:
    """The ``[policy]`` table of the TOML file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {path}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config file {path}: {exc}"]) from None
    return _parse_policy_table(text, str(path))


def _parse_policy_table(text: str, source: str) -> dict[str, Any]:
    try:
        table = tomllib.loads(text).get("policy")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {source}: {exc}"]) from None
    if not isinstance(table, dict):
        raise ConfigError([f"config file {source}: no [policy] table"])
    return table


def _policy_settings(table: dict[str, Any]) -> PolicySettings:
    """bbbscaler's validation of a ``[policy]`` table; ConfigError names each key."""
    try:
        return PolicySettings.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(
            [f"policy.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        ) from None


def load_policy(path: Path, settings: FleetSettings) -> PolicyConfig:
    """The ``[policy]`` table of a bbbscaler TOML file, as the backtest runs it.

    Every key of bbbscaler's ``[policy]`` section applies (schedules too: their
    clock is the trace's, second 0 being Monday 00:00 UTC). ``boot_time``
    defaults to the simulated platform's, and so does ``warm_start_time``; a window's
    lead waits for the simulated Scalelite's poll (``--poll-interval``), whatever the
    file's ``scalelite.poll_interval``. Raises ConfigError naming the key.
    """
    policy = _policy_settings(_policy_table(path))
    # Only the policy matters here; the rest of the scaler's settings keep their defaults.
    config = PolicyConfig.from_settings(ScalerSettings.model_construct(policy=policy))
    if "boot_time" not in policy.model_fields_set:
        config = replace(config, boot_time=settings.boot_time)
    if "warm_start_time" not in policy.model_fields_set:
        config = replace(config, warm_start_time=settings.warm_start_time)
    return replace(config, gap_limit=3 * settings.tick, registration=settings.poll_interval)


def _schedules(table: dict[str, Any], source: str) -> tuple[Window, ...]:
    # Any other [policy] key would look as if it applied to every run; --policy-config runs it.
    problems = [
        f"policy.{key}: not allowed in a schedules file (only [[policy.schedules]]; "
        "--policy-config runs a policy)"
        for key in table
        if key != "schedules"
    ]
    windows: tuple[Window, ...] = ()
    if "schedules" not in table:
        problems.append(f"policy.schedules: missing ({source} has no [[policy.schedules]])")
    else:
        try:
            policy = _policy_settings({"schedules": table["schedules"]})
            windows = tuple(Window.from_settings(s) for s in policy.schedules)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return windows


def load_schedules(path: Path) -> tuple[Window, ...]:
    """The planned events of a TOML file of ``[[policy.schedules]]`` tables, as bbbscaler's.

    Their clock is the trace's (second 0 is Monday 00:00 UTC). Raises ConfigError
    naming the key.
    """
    return _schedules(_policy_table(path), str(path))


def shipped_schedules(name: str) -> tuple[Window, ...]:
    """The planned events of shipped trace ``name`` (``traces/<name>.toml``); none without one."""
    file = resources.files("bbbsim").joinpath("traces", f"{name}.toml")
    if not file.is_file():
        return ()
    return _schedules(_parse_policy_table(file.read_text("utf-8"), f"{name}.toml"), f"{name}.toml")


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def describe_window(w: Window) -> str:
    """``exam mon 02:00-02:15 UTC holds 10 nodes``."""
    days = ",".join(DAYS[d] for d in sorted(w.days))
    nodes = "node" if w.min_nodes == 1 else "nodes"
    return (
        f"{w.name} {days} {_clock(w.start_min)}-{_clock(w.end_min)} {w.timezone} "
        f"holds {w.min_nodes} {nodes}"
    )


def window_json(w: Window) -> dict[str, Any]:
    """A window as its ``[[policy.schedules]]`` table."""
    return {
        "name": w.name,
        "days": [DAYS[d] for d in sorted(w.days)],
        "start": _clock(w.start_min),
        "end": _clock(w.end_min),
        "timezone": w.timezone,
        "min_nodes": w.min_nodes,
    }


def backtest(
    trace: Trace,
    presets: Sequence[Preset],
    settings: FleetSettings,
    configs: Sequence[tuple[str, PolicyConfig]] = (),
    planned: Sequence[Window] = (),
) -> BacktestResult:
    """Every preset, every named config and the oracle over ``trace``.

    ``planned`` windows are added to every run's own: a planned event is part of
    the workload the operator knows about, whatever the policy.
    """
    split = last_week(trace)
    demand = trace_demand(prepare(trace, settings), settings) if split.offset else None
    # The scored week runs on its own clock: its second 0 is its Monday 00:00.
    settings = replace(settings, epoch=settings.epoch + split.offset)
    prepared = prepare(split.scored, settings)
    need = need_steps(prepared.start, prepared.end, prepared.units, settings.host)
    horizon = prepared.horizon

    def scored(run: FleetRun) -> Scored:
        return Scored(run, p95(capacity_lags(need, run.capacity)))

    named = [(p, policy_config(p, settings)) for p in presets] + list(configs)
    extra = tuple(planned)
    runs = [
        simulate(prepared, replace(config, windows=config.windows + extra), settings, name, demand)
        for name, config in named
    ]
    forecasting = [c for _, c in named if c.preset == "forecast"]
    errors: tuple[HourError, ...] = ()
    if demand is not None:
        config = forecasting[0] if forecasting else policy_config("forecast", settings)
        errors = forecast_errors(demand, settings.epoch, settings.epoch + horizon, config)
    return BacktestResult(
        trace=trace.name,
        meetings=len(split.scored.meetings),
        hours=horizon / 3600,
        need=need,
        fluid_bound_instance_hours=integrate(need, horizon) / 3600,
        policies=tuple(scored(r) for r in runs),
        oracle=scored(oracle_run(prepared, settings)),
        planned=extra,
        settings=settings,
        weeks_before=round(split.offset / WEEK),
        forecast_error=errors,
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
        "schedules": [window_json(w) for w in result.planned],
        **({} if result.settings is None else {"model": model_json(result.settings)}),
        "policies": {s.run.name: s.scores() for s in result.policies},
        "oracle": result.oracle.scores(),
    }


def model_json(settings: FleetSettings) -> dict[str, Any]:
    """The platform the runs shared: Scalelite's poller by its variables, joins, recordings,
    boots and the warm pool."""
    p, r = settings.poller, settings.recordings
    return {
        "scalelite": {
            "POLL_INTERVAL": p.interval,
            "POLLER_THREADS": p.threads,
            "POLLER_WAIT_TIMEOUT": p.wait_timeout,
            "RESPONSE_TIMEOUT": p.response_timeout,
            "SERVER_UNHEALTHY_THRESHOLD": p.unhealthy_threshold,
            "SERVER_HEALTHY_THRESHOLD": p.healthy_threshold,
            "api_call_time_s": p.call_time,
            "answer_time_at_full_cpu_s": p.answer_time_at_full,
        },
        "join_spread_s": settings.join_spread,
        "recordings": {"processed": r.enabled, "ratio": r.ratio, "cores": r.cores},
        "boot_time_s": settings.boot_time,
        "warm_pool": settings.warm_pool,
        "warm_start_time_s": settings.warm_start_time,
        "seed": settings.seed,
    }


def _row(name: str, s: Scored, oracle_hours: float) -> str:
    r = s.run
    ratio = r.instance_hours / oracle_hours if oracle_hours else 0.0
    return (
        f"| {name} | {r.instance_hours:,.1f} | {ratio:.2f}x | {r.peak_nodes} "
        f"| {r.overload_node_minutes:,.0f} | {r.overload_core_minutes:,.0f} "
        f"| {r.meetings_on_overloaded_node:,} "
        f"| {r.meetings_ended_by_platform} | {r.meetings_ended_by_scalelite:,} "
        f"| {s.p95_time_to_capacity_s:,.0f} | {r.recording_wait_instance_hours:,.1f} |"
    )


def render_table(result: BacktestResult) -> str:
    """A Markdown table of the runs and the fluid bound; the issue's goals when both presets ran."""
    oh = result.oracle.run.instance_hours
    scored = ""
    if result.weeks_before:
        scored = f" (its last week; the {result.weeks_before} weeks before are the history)"
    lines = [
        f"trace {result.trace}: {result.meetings:,} meetings over {result.hours:,.1f} h{scored}",
        *(f"planned: {describe_window(w)}" for w in result.planned),
        "",
        "| run | instance-hours | x oracle | peak nodes | overload node-min | overload core-min "
        "| meetings on overloaded node | ended by platform | ended by Scalelite "
        "| p95 time to capacity (s) | recording wait (instance-h) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(s.run.name, s, oh) for s in result.policies),
        _row("oracle", result.oracle, oh),
        f"| fluid bound | {result.fluid_bound_instance_hours:,.1f} "
        f"| {result.fluid_bound_instance_hours / oh if oh else 0:.2f}x "
        f"| {max((v for _, v in result.need), default=0)} | | | | | | | |",
    ]
    lines += [rollout_line(s.run) for s in result.policies if s.run.rollout_at is not None]
    lines += [warm_pool_line(s.run) for s in result.policies if s.run.warm_pool]
    refused = [s.run for s in result.policies if s.run.meetings_refused]
    lines += [f"WARNING: {r.name} left {r.meetings_refused} meeting(s) unplaced" for r in refused]
    cut = [s.run for s in result.policies if s.run.poll_rounds_cut]
    lines += [
        f"WARNING: {r.name}: {r.poll_rounds_cut} Scalelite poll round(s) cut off at "
        f"POLLER_WAIT_TIMEOUT + 5 s (longest {r.longest_poll_round_s:.1f} s)"
        for r in cut
    ]
    lines += goal_lines(result)
    lines += error_lines(result)
    return "\n".join(lines)


def error_lines(result: BacktestResult) -> list[str]:
    """The forecast's own error over the scored week, per hour of day (UTC)."""
    if not result.forecast_error:
        return []
    errors = result.forecast_error
    steps = sum(e.steps for e in errors)
    mape = sum(e.mape * e.steps for e in errors) / steps
    return [
        "",
        "forecast error (CPU demand in nodes, forecast boot_time + margin ahead; steps of at "
        f"least {MIN_ACTUAL:g} node): MAPE {mape:.1%} over {steps:,} steps",
        "| hour (UTC) | MAPE | bias | steps |",
        "|---:|---:|---:|---:|",
        *(f"| {e.hour:02d} | {e.mape:.1%} | {e.bias:+.1%} | {e.steps} |" for e in errors),
    ]


def warm_pool_line(run: FleetRun) -> str:
    """``warm pool of 2: default 14 launches from the pool, 3 cold; 310.2 stopped hours``."""
    return (
        f"warm pool of {run.warm_pool}: {run.name} {run.warm_starts:,} launch(es) from the "
        f"pool, {run.cold_starts:,} cold; {run.stopped_instance_hours:,.1f} stopped "
        "instance-hours (volumes only)"
    )


def rollout_line(run: FleetRun) -> str:
    """``rollout at 36,000 s: default all current after 1,234 s``."""
    done = "not all current by the trace's end"
    if run.rollout_s is not None:
        done = f"all current after {run.rollout_s:,.0f} s"
    return (
        f"rollout at {run.rollout_at:,.0f} s: {run.name} {done}, "
        f"{run.meetings_ended_by_platform} meeting(s) ended by the platform"
    )


@dataclass(frozen=True, slots=True)
class GoalFigures:
    """Issue 5's measures of one run, against the seed's run and the oracle of the same trace,
    and issue 13's: no meeting ended by Scalelite either."""

    ended_by_platform: int
    ended_by_scalelite: int
    avoidable: float
    """Overload node-minutes above the oracle's."""
    seed_avoidable: float
    share: float
    """``avoidable`` as a share of the seed's (inf when the seed had none and this has some)."""
    ratio: float
    """Instance-hours as a multiple of the oracle's."""
    limit: float = MAX_ORACLE_RATIO
    """The instance-hours goal of this run's preset."""

    @property
    def met(self) -> tuple[bool, bool, bool, bool]:
        """(none ended by the platform, none by Scalelite, overload goal, instance-hours goal)."""
        return (
            self.ended_by_platform == 0,
            self.ended_by_scalelite == 0,
            self.share <= MAX_AVOIDABLE_OVERLOAD,
            self.ratio <= self.limit,
        )


def goal_figures(result: BacktestResult, name: str) -> GoalFigures:
    """The goal measures of the run called ``name``; the result must hold a ``seed`` run."""
    by_name = {s.run.name: s.run for s in result.policies}
    run, seed, oracle = by_name[name], by_name["seed"], result.oracle.run
    seed_avoidable = max(0.0, seed.overload_node_minutes - oracle.overload_node_minutes)
    avoidable = max(0.0, run.overload_node_minutes - oracle.overload_node_minutes)
    # With nothing avoidable in the seed's run, only nothing avoidable meets "10 % of it".
    share = avoidable / seed_avoidable if seed_avoidable else (math.inf if avoidable else 0.0)
    ratio = run.instance_hours / oracle.instance_hours if oracle.instance_hours else 0.0
    return GoalFigures(
        run.meetings_ended_by_platform,
        run.meetings_ended_by_scalelite,
        avoidable,
        seed_avoidable,
        share,
        ratio,
        FORECAST_ORACLE_RATIO if name == "forecast" else MAX_ORACLE_RATIO,
    )


def goal_lines(result: BacktestResult) -> list[str]:
    """Issue 5's goals for every run but the seed's, measured against the seed and the oracle."""
    names = [s.run.name for s in result.policies]
    if "seed" not in names:
        return []
    lines: list[str] = []
    for name in names:
        if name != "seed":
            lines += _goals(name, goal_figures(result, name))
    return lines


def _goals(name: str, g: GoalFigures) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    ended, by_scalelite, overload, hours = g.met
    return [
        "",
        f"goals for {name}:",
        f"- meetings ended by the platform: {g.ended_by_platform} ({mark(ended)})",
        f"- meetings ended by Scalelite: {g.ended_by_scalelite} ({mark(by_scalelite)})",
        f"- avoidable overload: {g.avoidable:,.0f} of the seed's {g.seed_avoidable:,.0f} "
        f"node-min = {g.share:.1%} (goal <= {MAX_AVOIDABLE_OVERLOAD:.0%}: {mark(overload)})",
        f"- instance-hours: {g.ratio:.2f}x the oracle's (goal <= {g.limit}x: {mark(hours)})",
    ]
