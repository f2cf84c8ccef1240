"""The README's backtest tables: scores, the goals, Scalelite's settings, what recordings cost,
each setting's effect, other seeds.

Deterministic (the backtest is a discrete-event simulation with seeded traces and seeded
failed polls): any machine prints the same rows. Everything runs as ``bbbsim backtest``
does: the shipped traces (seed 1, five weeks, their recordings processed; each scored on
its last week, the four before are the forecast's history) with the exam's shipped
9-node planned window, Scalelite as helm/scalelite sets it, the three presets, the
oracle and the fluid bound.

- ``university-week``, ``exam-flash``, ``company-week``: the score tables ``bbbsim
  backtest --trace NAME`` prints, and ``*-error``: the forecast's own error per hour;
- ``goals``: issue 16's goals for ``forecast`` (and issue 5's for ``default``) on every
  shipped kind;
- ``forecast-settings``: ``forecast`` with one of its settings changed at a time;
- ``scalelite``: the week under Scalelite's stock poller settings and the chart's;
- ``recordings``: both traces without recordings, with them, and with heavier processing;
- ``settings``: ``default`` with one thing changed at a time;
- ``seeds``: the same generator with seeds 1 to 4 (``bbbsim trace generate
  --kind K --seed N --weeks 5``), with each run's overload depth in core-minutes
  beside the node-minutes the goal counts;
- ``exam-steering``: ``forecast`` on exam seeds 1 to 8 (5 to 8 held out) with and
  without ``forecast.steer_from``, and without early steering (``steer_warm_share`` 0);
- ``exam-window``: the exam's planned window one node smaller and larger;
- ``rollout``: ``--rollout-at``: the launch template changes at a given second,
  and each run's ``rollout_s`` (until no host launched before is left);
- ``warm-pool``: ``--warm-pool 0, 2, 5`` (warm start 45 s, cold boot 180 s): what a
  pool of stopped hosts buys each preset on each trace, its stopped hours apart;
- ``warm-sizing``: the largest number of launches within one cold boot in the run
  without a pool, and the cold starts left with a pool of 2 and of 5.

    .venv/bin/python benchmarks/backtest_scores.py
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from readme_table import DECIMAL, INT, TEXT, Column, Table

from bbbscaler.policy import Preset
from bbbscaler.schedule import Window
from bbbsim.backtest import (
    BacktestResult,
    GoalFigures,
    Scored,
    backtest,
    error_lines,
    goal_figures,
    render_table,
    shipped_schedules,
)
from bbbsim.demand import Steps, capacity_lags
from bbbsim.fleet_model import FleetRun, FleetSettings, policy_config
from bbbsim.recording_processing import RecordingSpec
from bbbsim.scalelite_poller import PollerSpec
from bbbsim.trace import SHIPPED_WEEKS, Trace, shipped_trace
from bbbsim.trace_generate import Kind, generate

TRACES: tuple[Kind, ...] = ("university-week", "exam-flash", "company-week")
EXAM_SEEDS = tuple(range(1, 9))
"""The exam's seeds for ``exam-steering``: 1-4 as everywhere, 5-8 held out (never used to
choose ``forecast.steer_from``)."""
PRESETS: tuple[Preset, ...] = ("seed", "default", "forecast")
SEEDS = (1, 2, 3, 4)
WINDOWS = (8, 9, 10)
EMPTY_OR_INT = rf"(?:{INT})?"
MUL = "\N{MULTIPLICATION SIGN}"
"""The README's multiplication sign (``bbbsim backtest``'s own table writes a plain x)."""
TIMES = rf"{DECIMAL}x"
PCT = rf"(?:{DECIMAL}|inf) %"
RATIO_SHARE = rf"{DECIMAL} {MUL} / {PCT}"
OF_SEED = rf"{INT} of {INT} = {PCT}"
CORE = rf"{INT}\.\d"
PRESETS_SHOWN: tuple[Preset, ...] = ("forecast", "default", "seed")

SCORES = Table(
    (
        Column("run", TEXT, numeric=False),
        Column("instance-hours", DECIMAL),
        Column("x oracle", TIMES),
        Column("peak nodes", INT),
        Column("overload node-min", EMPTY_OR_INT),
        Column("overload core-min", EMPTY_OR_INT),
        Column("meetings on overloaded node", EMPTY_OR_INT),
        Column("ended by platform", EMPTY_OR_INT),
        Column("ended by Scalelite", EMPTY_OR_INT),
        Column("p95 time to capacity (s)", EMPTY_OR_INT),
        Column("recording wait (instance-h)", rf"(?:{DECIMAL})?"),
    ),
    keys=("seed", "default", "forecast", "oracle", "fluid bound"),
)
ERRORS = Table(
    (
        Column("hour (UTC)", INT),
        Column("MAPE", rf"{DECIMAL}%"),
        Column("bias", rf"[+-]{DECIMAL}%"),
        Column("steps", INT),
    )
)
GOALS = (
    "`forecast`: 0 meetings ended by the platform",
    "`forecast`: 0 meetings ended by Scalelite",
    "`forecast`: avoidable overload (node-minutes above the oracle's) ≤ 10 % of the seed's",
    f"`forecast`: instance-hours ≤ 1.3 {MUL} the oracle's",
    "`default`: avoidable overload ≤ 10 % of the seed's",
    f"`default`: instance-hours ≤ 1.5 {MUL} the oracle's",
)
FORECAST_SETTINGS = (
    "the defaults (`forecast.headroom` 0.05, `quantile` 0.75, `hold` 1800, `margin` 300, "
    "`steer_from` 600)",
    "`forecast.headroom` 0.15 (the default preset's)",
    "`forecast.quantile` 0.5 (the median)",
    "`forecast.hold` 0 (no busy node held for the forecast; `steer_from` 0 with it)",
    "`forecast.margin` 0 (nodes serve just as the forecast demand arrives)",
    "no correction by today (`forecast.window` 300 s, clipped to 1)",
    "`forecast.steer_from` 0 (new meetings spread over every node the forecast holds)",
    "no early steering (`steer_warm_share` 0: only a node past `steer_cpu` 0.70 is steered)",
)
FORECAST_VARIANTS = {
    FORECAST_SETTINGS[1]: {"forecast_headroom": 0.15},
    FORECAST_SETTINGS[2]: {"forecast_quantile": 0.5},
    FORECAST_SETTINGS[3]: {"forecast_hold": 0.0, "forecast_steer_from": 0.0},
    FORECAST_SETTINGS[4]: {"forecast_margin": 0.0},
    FORECAST_SETTINGS[5]: {
        "forecast_window": 300.0,
        "forecast_min_correction": 1.0,
        "forecast_max_correction": 1.0,
    },
    FORECAST_SETTINGS[6]: {"forecast_steer_from": 0.0},
    FORECAST_SETTINGS[7]: {"steer_warm_share": 0.0},
}
SETTINGS = (
    "the defaults (`target_cpu` 0.72, `steer_cpu` 0.70, `steer_warm_cpu` 0.60 for up to "
    "a third of the nodes)",
    "no steering (`steer_multiplier` 1)",
    "the previous `target_cpu` 0.70 and `steer_cpu` 0.50",
    "`lookahead` 180 (the boot time)",
    "no early steering (`steer_warm_share` 0)",
    "Scalelite polled every 60 s, its own default (`--poll-interval 60`, the seed's run too)",
    "no planned window (`--schedules none`, the seed's run too)",
)
VARIANTS = {
    SETTINGS[1]: {"steer_multiplier": 1.0},
    SETTINGS[2]: {"target_cpu": 0.70, "steer_cpu": 0.50},
    SETTINGS[3]: {"lookahead": 180.0},
    SETTINGS[4]: {"steer_warm_share": 0.0},
}
STOCK = PollerSpec(threads=5, wait_timeout=10.0, response_timeout=10.0, unhealthy_threshold=2)
"""Scalelite's own defaults (config/application.rb:60-72, 126-129 at v1.8.5)."""
POLLERS = {"Scalelite's stock settings": STOCK, "the `scalelite` chart's": PollerSpec()}
RECORDINGS = {
    "no recordings": RecordingSpec(enabled=False),
    "recordings (the tables above)": RecordingSpec(),
    "15 minutes of processing an hour": RecordingSpec(ratio=0.25),
}
ROLLOUTS: tuple[tuple[Kind, float, str], ...] = (
    ("exam-flash", 3600.0, "exam flash, 3,600 s (Monday 01:00, before the exam)"),
    ("university-week", 122_400.0, "university week, 122,400 s (Tuesday 10:00)"),
)
ROLLOUT_BUDGET = 0.3
POOLS = (0, 2, 5)
SECONDS_OR_NOT = rf"(?:{INT} s|not done)"
GOAL_CELL = rf"(?:{INT}|{OF_SEED}|{DECIMAL} {MUL}): (?:met|MISSED)"
KINDS_TITLES = ("university week", "exam flash", "company week")
TRACE_LABEL = dict(zip(TRACES, KINDS_TITLES, strict=True))
TABLES = {
    "university-week": SCORES,
    "exam-flash": SCORES,
    "company-week": SCORES,
    "university-week-error": ERRORS,
    "company-week-error": ERRORS,
    "goals": Table(
        (
            Column("goal", TEXT, numeric=False),
            *(Column(title, GOAL_CELL, False) for title in KINDS_TITLES),
        ),
        keys=GOALS,
    ),
    "forecast-settings": Table(
        (
            Column("`forecast` with", TEXT, numeric=False),
            *(Column(title, RATIO_SHARE, numeric=False) for title in KINDS_TITLES),
        ),
        keys=FORECAST_SETTINGS,
    ),
    "scalelite": Table(
        (
            Column("university week", TEXT, numeric=False),
            Column("seed: ended by Scalelite", INT),
            Column(f"`seed` {MUL} oracle", TIMES),
            Column("`default`: ended by Scalelite", INT),
            Column(f"`default` {MUL} oracle / avoidable overload", RATIO_SHARE, numeric=False),
            Column("`forecast`: ended by Scalelite", INT),
            Column(f"`forecast` {MUL} oracle / avoidable overload", RATIO_SHARE, numeric=False),
        ),
        keys=tuple(POLLERS),
    ),
    "recordings": Table(
        (
            Column("trace, processing", TEXT, numeric=False),
            Column("`forecast` instance-hours", DECIMAL),
            Column(f"{MUL} oracle", TIMES),
            Column("oracle instance-hours", DECIMAL),
            Column("`forecast` waiting for recordings (instance-h)", DECIMAL),
            Column("p95 wait (s)", INT),
            Column("`forecast` avoidable overload", PCT, numeric=False),
        ),
        keys=tuple(f"{kind}, {name}" for kind in TRACES for name in RECORDINGS),
    ),
    "settings": Table(
        (
            Column("`default` with", TEXT, numeric=False),
            Column("university week", rf"(?:{RATIO_SHARE})?", numeric=False),
            Column("exam flash", RATIO_SHARE, numeric=False),
        ),
        keys=SETTINGS,
    ),
    "seeds": Table(
        (
            Column("trace", TEXT, numeric=False),
            Column("seed", INT),
            Column(f"`forecast` {MUL} oracle", TIMES),
            Column("`forecast` avoidable overload, of the seed's", OF_SEED, numeric=False),
            Column(f"`default` {MUL} oracle", TIMES),
            Column("`default` avoidable overload, of the seed's", OF_SEED, numeric=False),
            Column(
                "ended by Scalelite: `forecast` / `default` / seed",
                rf"{INT} / {INT} / {INT}",
                numeric=False,
            ),
            Column(f"`seed` {MUL} oracle", TIMES),
            Column(
                "overload core-min: `forecast` / `default` / seed / oracle",
                rf"{CORE} / {CORE} / {CORE} / {CORE}",
                numeric=False,
            ),
        ),
        keys=tuple(kind for kind in TRACES for _ in SEEDS),
    ),
    "rollout": Table(
        (
            Column("trace, template changes at", TEXT, numeric=False),
            Column("`seed`", SECONDS_OR_NOT),
            Column("`default`", SECONDS_OR_NOT),
            Column("`forecast`", SECONDS_OR_NOT),
            Column(f"`default`, `drift_budget` {ROLLOUT_BUDGET}", SECONDS_OR_NOT),
        ),
        keys=tuple(label for _, _, label in ROLLOUTS),
    ),
    "warm-pool": Table(
        (
            Column("trace", TEXT, numeric=False),
            Column("run", TEXT, numeric=False),
            Column("warm pool", INT),
            Column("instance-hours", DECIMAL),
            Column("stopped instance-hours", DECIMAL),
            Column("overload node-min", INT),
            Column("overload core-min", INT),
            Column("meetings on overloaded node", INT),
            Column("ended by Scalelite", INT),
            Column("p95 / max time to capacity (s)", rf"{INT} / {INT}", numeric=False),
            Column("launches warm / cold", rf"{INT} / {INT}", numeric=False),
        ),
        keys=tuple(TRACE_LABEL[k] for k in TRACES for _ in PRESETS for _ in POOLS),
    ),
    "warm-sizing": Table(
        (
            Column("trace", TEXT, numeric=False),
            Column("most launches within one cold boot (180 s), no pool", INT),
            Column("`default` cold starts, pool of 2", INT),
            Column("`default` cold starts, pool of 5", INT),
        ),
        keys=tuple(TRACE_LABEL[k] for k in TRACES),
    ),
    "exam-steering": Table(
        (
            Column("exam seed", INT),
            Column(f"`forecast` {MUL} oracle", TIMES),
            Column("avoidable overload node-min", INT),
            Column(f"`forecast.steer_from` 0: {MUL} oracle", TIMES),
            Column("avoidable overload node-min, `steer_from` 0", INT),
            Column(f"`steer_warm_share` 0: {MUL} oracle", TIMES),
            Column("avoidable overload node-min, `steer_warm_share` 0", INT),
        ),
        keys=tuple(str(n) for n in EXAM_SEEDS),
    ),
    "exam-window": Table(
        (
            Column("exam's planned window", TEXT, numeric=False),
            *(Column(f"seed {n}", RATIO_SHARE, numeric=False) for n in SEEDS),
        ),
        keys=tuple(f"{n} nodes" for n in WINDOWS),
    ),
}


def pct(share: float) -> str:
    return "inf %" if math.isinf(share) else f"{share * 100:,.1f} %"


def of_seed(g: GoalFigures) -> str:
    return f"{g.avoidable:,.0f} of {g.seed_avoidable:,.0f} = {pct(g.share)}"


def core_minutes(run: FleetRun) -> str:
    """How deep a run's overload went: its CPU demand above the line, in core-minutes."""
    return f"{run.overload_core_minutes:,.1f}"


def ratio_share(g: GoalFigures) -> str:
    return f"{g.ratio:.2f} {MUL} / {pct(g.share)}"


def trace_of(kind: Kind, seed: int) -> Trace:
    if seed == 1:
        return shipped_trace(kind)
    return Trace(f"{kind}-seed{seed}", tuple(generate(kind, seed, weeks=SHIPPED_WEEKS)))


def planned(kind: Kind, nodes: int | None = None) -> tuple[Window, ...]:
    windows = shipped_schedules(kind)
    if nodes is None:
        return windows
    return tuple(dataclasses.replace(w, min_nodes=nodes) for w in windows)


def run(
    kind: Kind,
    seed: int = 1,
    settings: FleetSettings | None = None,
    variants: bool = False,
    windows: tuple[Window, ...] | None = None,
) -> BacktestResult:
    """The three presets (and, with ``variants``, ``default`` and ``forecast`` with each
    setting changed; the exam has no week of ``default``'s own variants)."""
    fleet = settings or FleetSettings()
    configs = []
    if variants:
        configs += [
            (name, dataclasses.replace(policy_config("default", fleet), **changes))  # type: ignore[arg-type]
            for name, changes in VARIANTS.items()
        ]
        configs += [
            (name, dataclasses.replace(policy_config("forecast", fleet), **changes))  # type: ignore[arg-type]
            for name, changes in FORECAST_VARIANTS.items()
        ]
    plan = planned(kind) if windows is None else windows
    return backtest(trace_of(kind, seed), PRESETS, fleet, configs, plan)


def score_table(result: BacktestResult) -> list[str]:
    """``bbbsim backtest``'s own table, presets only, checked against the README's form."""
    presets = tuple(s for s in result.policies if s.run.name in PRESETS)
    text = render_table(dataclasses.replace(result, policies=presets))
    lines = [line for line in text.split("\n\n")[1].splitlines() if line.startswith("|")]
    problems = SCORES.problems(lines)
    if problems:
        raise ValueError("; ".join(problems))
    return lines


def print_errors(result: BacktestResult, name: str) -> None:
    """The forecast's own error per hour of day, as ``bbbsim backtest`` prints it."""
    said = error_lines(result)
    lines = [line for line in said if line.startswith("|")]
    problems = TABLES[name].problems(lines)
    if problems:
        raise ValueError("; ".join(problems))
    print(f"\n{name}: {said[1]}")
    print("\n".join(lines))


def goal_cells(base: dict[Kind, BacktestResult], preset: str, index: int) -> list[str]:
    cells = []
    for kind in TRACES:
        g = goal_figures(base[kind], preset)
        figure = (
            str(g.ended_by_platform),
            str(g.ended_by_scalelite),
            of_seed(g),
            f"{g.ratio:.2f} {MUL}",
        )[index]
        cells.append(f"{figure}: {'met' if g.met[index] else 'MISSED'}")
    return cells


def main() -> None:
    print(
        "bbbsim backtest: shipped traces (seed 1, 5 weeks: the last scored, the 4 before the "
        "forecast's history) with their recordings, Scalelite as helm/scalelite sets it "
        "(polled every 20 s), boot 180 s, 10 s scaler loop, the exam's planned window of 9 "
        "nodes; deterministic"
    )
    base = {kind: run(kind, variants=True) for kind in TRACES}
    for kind in TRACES:
        result = base[kind]
        print(f"\n{kind}: {result.meetings:,} meetings over {result.hours:,.1f} h")
        print("\n".join(score_table(result)))
    for kind in ("university-week", "company-week"):
        print_errors(base[kind], f"{kind}-error")

    goals = TABLES["goals"]
    print("\n" + goals.header())
    for i, goal in enumerate(GOALS[:4]):
        print(goals.row(goal, *goal_cells(base, "forecast", i)))
    print(goals.row(GOALS[4], *goal_cells(base, "default", 2)))
    print(goals.row(GOALS[5], *goal_cells(base, "default", 3)))

    table = TABLES["forecast-settings"]
    print("\n" + table.header())
    for name in FORECAST_SETTINGS:
        policy = "forecast" if name == FORECAST_SETTINGS[0] else name
        print(table.row(name, *(ratio_share(goal_figures(base[k], policy)) for k in TRACES)))

    table = TABLES["scalelite"]
    print("\n" + table.header())
    for name, poller in POLLERS.items():
        week = (
            base["university-week"]
            if poller == PollerSpec()
            else run("university-week", settings=FleetSettings(poller=poller))
        )
        sd = goal_figures(week, "seed")
        by = {r.run.name: r.run for r in week.policies}
        cells = []
        for preset in ("default", "forecast"):
            g = goal_figures(week, preset)
            cells += [f"{g.ended_by_scalelite:,}", ratio_share(g)]
        print(
            table.row(
                name, f"{by['seed'].meetings_ended_by_scalelite:,}", f"{sd.ratio:.2f}x", *cells
            )
        )

    table = TABLES["recordings"]
    print("\n" + table.header())
    for kind in TRACES:
        for name, spec in RECORDINGS.items():
            result = (
                base[kind]
                if spec == RecordingSpec()
                else run(kind, settings=FleetSettings(recordings=spec))
            )
            g = goal_figures(result, "forecast")
            scored = next(s for s in result.policies if s.run.name == "forecast")
            d = scored.scores()
            print(
                table.row(
                    f"{kind}, {name}",
                    f"{scored.run.instance_hours:,.1f}",
                    f"{g.ratio:.2f}x",
                    f"{result.oracle.run.instance_hours:,.1f}",
                    f"{d['recording_wait_instance_hours']:,.1f}",
                    f"{d['recording_wait_p95_s']:,.0f}",
                    pct(g.share),
                )
            )

    table = TABLES["settings"]
    print("\n" + table.header())
    week_and_exam: tuple[Kind, ...] = ("university-week", "exam-flash")
    for name in (SETTINGS[0], *VARIANTS):
        policy = "default" if name == SETTINGS[0] else name
        cells = [ratio_share(goal_figures(base[k], policy)) for k in week_and_exam]
        print(table.row(name, *cells))
    slow = FleetSettings(poller=PollerSpec(interval=60.0))
    cells = [ratio_share(goal_figures(run(k, settings=slow), "default")) for k in week_and_exam]
    print(table.row(SETTINGS[5], *cells))
    unplanned = run("exam-flash", windows=())
    print(table.row(SETTINGS[6], "", ratio_share(goal_figures(unplanned, "default"))))

    table = TABLES["seeds"]
    print("\n" + table.header())
    for kind in TRACES:
        for seed in SEEDS:
            result = base[kind] if seed == 1 else run(kind, seed)
            f, g = goal_figures(result, "forecast"), goal_figures(result, "default")
            s = goal_figures(result, "seed")
            ended = (
                f"{f.ended_by_scalelite:,} / {g.ended_by_scalelite:,} / {s.ended_by_scalelite:,}"
            )
            print(
                table.row(
                    kind,
                    str(seed),
                    f"{f.ratio:.2f}x",
                    of_seed(f),
                    f"{g.ratio:.2f}x",
                    of_seed(g),
                    ended,
                    f"{s.ratio:.2f}x",
                    " / ".join(
                        core_minutes(run)
                        for run in (*(_run(result, n) for n in PRESETS_SHOWN), result.oracle.run)
                    ),
                )
            )

    table = TABLES["exam-window"]
    print("\n" + table.header())
    for nodes in WINDOWS:
        window = planned("exam-flash", nodes)
        results = [run("exam-flash", seed, windows=window) for seed in SEEDS]
        cells = [ratio_share(goal_figures(r, "forecast")) for r in results]
        print(table.row(f"{nodes} nodes", *cells))

    exam_steering_rows()
    rollout_rows()
    warm_rows()


def burst(instances: Steps, within: float) -> int:
    """The most instances added to the group within any ``within`` seconds."""
    rises: list[tuple[float, int]] = []
    for (_, before), (t, after) in itertools.pairwise(instances):
        if after > before:
            rises.append((t, after - before))
    best = 0
    start = 0
    total = 0
    for t, added in rises:
        total += added
        while rises[start][0] < t - within:
            total -= rises[start][1]
            start += 1
        best = max(best, total)
    return best


def warm_rows() -> None:
    """``warm-pool`` and ``warm-sizing``: the presets with a pool of 0, 2 and 5."""
    table = TABLES["warm-pool"]
    print("\n" + table.header())
    runs: dict[tuple[str, int], BacktestResult] = {}
    for kind in TRACES:
        for pool in POOLS:
            runs[kind, pool] = backtest(
                shipped_trace(kind), PRESETS, FleetSettings(warm_pool=pool), (), planned(kind)
            )
    for kind in TRACES:
        for preset in PRESETS:
            for pool in POOLS:
                result = runs[kind, pool]
                scored = next(s for s in result.policies if s.run.name == preset)
                if scored.run.meetings_ended_by_platform:
                    raise ValueError(f"{kind}: meetings ended by the platform with a pool")
                print(table.row(TRACE_LABEL[kind], f"`{preset}`", str(pool), *_warm_cells(
                    result, scored
                )))  # fmt: skip
    table = TABLES["warm-sizing"]
    print("\n" + table.header())
    for kind in TRACES:
        cold = {pool: _run(runs[kind, pool], "default") for pool in POOLS}
        most = burst(cold[0].instances, FleetSettings().boot_time)
        print(
            table.row(TRACE_LABEL[kind], str(most), *(f"{cold[p].cold_starts:,}" for p in (2, 5)))
        )


def _run(result: BacktestResult, name: str) -> FleetRun:
    return next(s.run for s in result.policies if s.run.name == name)


def _warm_cells(result: BacktestResult, scored: Scored) -> list[str]:
    r = scored.run
    lags = capacity_lags(result.need, r.capacity)
    return [
        f"{r.instance_hours:,.1f}",
        f"{r.stopped_instance_hours:,.1f}",
        f"{r.overload_node_minutes:,.0f}",
        f"{r.overload_core_minutes:,.0f}",
        f"{r.meetings_on_overloaded_node:,}",
        f"{r.meetings_ended_by_scalelite:,}",
        f"{scored.p95_time_to_capacity_s:,.0f} / {max(lags, default=0.0):,.0f}",
        f"{r.warm_starts:,} / {r.cold_starts:,}",
    ]


def exam_steering_rows() -> None:
    """``exam-steering``: ``forecast`` on the exam's seeds with and without steering new
    meetings to what the forecast needs later."""
    table = TABLES["exam-steering"]
    print("\n" + table.header())
    fleet = FleetSettings()
    base = policy_config("forecast", fleet)
    off = dataclasses.replace(base, forecast_steer_from=0.0)
    late = dataclasses.replace(base, steer_warm_share=0.0)
    for seed in EXAM_SEEDS:
        trace = trace_of("exam-flash", seed)
        variants = [("off", off), ("late", late)]
        result = backtest(trace, ("seed", "forecast"), fleet, variants, planned("exam-flash"))
        on, without = goal_figures(result, "forecast"), goal_figures(result, "off")
        hot_only = goal_figures(result, "late")
        print(
            table.row(
                str(seed),
                f"{on.ratio:.2f}x",
                f"{on.avoidable:,.0f}",
                f"{without.ratio:.2f}x",
                f"{without.avoidable:,.0f}",
                f"{hot_only.ratio:.2f}x",
                f"{hot_only.avoidable:,.0f}",
            )
        )


def rollout_rows() -> None:
    """``rollout``: each preset's rollout_s, and ``default`` with a larger drift budget."""
    table = TABLES["rollout"]
    print("\n" + table.header())
    for kind, at, label in ROLLOUTS:
        fleet = FleetSettings(rollout_at=at)
        wider = dataclasses.replace(policy_config("default", fleet), drift_budget=ROLLOUT_BUDGET)
        result = backtest(shipped_trace(kind), PRESETS, fleet, [("wider", wider)], planned(kind))
        ended = sum(s.run.meetings_ended_by_platform for s in result.policies)
        if ended:
            raise ValueError(f"{kind}: {ended} meeting(s) ended by the platform in a rollout")
        runs = {s.run.name: s.run.rollout_s for s in result.policies}
        cells = [
            "not done" if runs[n] is None else f"{runs[n]:,.0f} s"
            for n in ("seed", "default", "forecast", "wider")
        ]
        print(table.row(label, *cells))


if __name__ == "__main__":
    main()
