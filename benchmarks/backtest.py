"""Backtest speed: a 7-day week scored on a fleet of 100 nodes or more.

Target (issues 5 and 16): at most 10 s per policy for 7 days and 100 nodes. The
trace is the university term at ``--scale`` 7.25, five weeks of it as the
shipped traces are: the last week scored, the four before the forecast's
history. The scale is where ``default`` peaks at 100 nodes (the script prints
each run's peak): issue 5 chose 10 when ``default`` served that with 100, but
with joins, poll rounds and recordings in the model (issue 13) scale 10 peaks at
about 140. Timed: the whole
backtest as the CLI runs it (prepare, the forecast's history, the three
presets through the discrete-event fleet with the real ``decide`` every 10 s,
the oracle, the fluid bound, the lags, the forecast's error), and each part on
its own. Prints the conditions, then the README's ``speed`` table.

The build counts as much as a change to the code. The README's commands compile the hot
path (the policy, the fleet model) with mypyc (bbbcore/native.py), about twice as fast;
``--interpreted`` runs the same sources interpreted, as a wheel or the container image does.
And a CPython built with profile-guided and link-time optimization (Debian's
``python3.11``) ran the interpreted code a sixth to a fifth faster here than one built
without (a pyenv default). The conditions line names both (version, build date, compiler,
compiled or interpreted).

    .venv/bin/python benchmarks/backtest.py [--scale 7.25] [--repeat 3] [--interpreted]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from readme_table import TEXT, Column, Table, unit

from bbbcore import native

if TYPE_CHECKING:
    from bbbscaler.policy import Preset

WEEKS = 5

T = TypeVar("T")
PARTS = (
    "whole backtest: three presets, the oracle, the fluid bound, the lags, the forecast error",
    "`seed`",
    "`default`",
    "`forecast`",
    "oracle",
    "prepare the scored week",
    "the forecast's history (5 weeks, 5-minute steps)",
)
PRESETS: tuple[Preset, ...] = ("seed", "default", "forecast")
TABLES = {
    "speed": Table(
        (
            Column("part", TEXT, numeric=False),
            Column("wall (median)", unit("s")),
            Column("per scaler round", rf"(?:{unit('µs')})?"),
        ),
        keys=PARTS,
    )
}


def timed(repeat: int, work: Callable[[], T]) -> tuple[float, T]:
    """Median wall seconds of ``repeat`` calls, and the last result."""
    times: list[float] = []
    result: T | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=7.25)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--interpreted",
        action="store_true",
        help="run the sources even where compiled modules sit beside them",
    )
    args = parser.parse_args()
    if args.interpreted:
        native.interpreted()
    build = "interpreted" if args.interpreted else native.check().state
    # Imported after the choice of build: interpreted() must come before the first import.
    from bbbsim.backtest import backtest
    from bbbsim.demand_history import last_week, trace_demand
    from bbbsim.fleet_model import FleetSettings, policy_config, prepare, simulate
    from bbbsim.oracle import oracle_run
    from bbbsim.trace import Trace
    from bbbsim.trace_generate import university_week

    trace = Trace("university-week", tuple(university_week(1, args.scale, WEEKS)))
    fleet = FleetSettings()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    total, result = timed(args.repeat, lambda: backtest(trace, PRESETS, fleet))
    # The parts as backtest() runs them: the scored week on its own clock.
    split = last_week(trace)
    whole = prepare(trace, fleet)
    seconds_history, demand = timed(args.repeat, lambda: trace_demand(whole, fleet))
    settings = replace(fleet, epoch=fleet.epoch + split.offset)
    prepared = prepare(split.scored, settings)
    ticks = int(prepared.horizon // settings.tick) + 1
    peaks = ", ".join(f"{s.run.name} {s.run.peak_nodes}" for s in (*result.policies, result.oracle))
    print(
        f"{os.cpu_count()} CPUs, load average {load} at the start, Python "
        f"{platform.python_version()} built {platform.python_build()[1]} with "
        f"{platform.python_compiler()}, the hot path {build} (bbbcore/native.py); "
        f"trace: university term x{args.scale:g}, {WEEKS} weeks, "
        f"{len(trace.meetings):,} meetings, the last {prepared.horizon / 86400:.1f} days scored "
        f"({len(split.scored.meetings):,} meetings), {ticks:,} scaler rounds per policy; peak "
        f"nodes: {peaks}; median of {args.repeat}"
    )
    table = TABLES["speed"]
    rows = [table.row(PARTS[0], f"{total:.1f} s", "")]
    # The presets in turn, repeat by repeat: this machine's speed drifts within minutes, and
    # a drift then falls on each preset alike instead of on whichever ran last.
    runs: dict[Preset, list[float]] = {preset: [] for preset in PRESETS}
    for _ in range(args.repeat):
        for preset in PRESETS:
            config = policy_config(preset, settings)
            seconds, _ = timed(1, lambda: simulate(prepared, config, settings, preset, demand))  # noqa: B023
            runs[preset].append(seconds)
    for part, preset in zip(PARTS[1:4], PRESETS, strict=True):
        seconds = statistics.median(runs[preset])
        rows.append(table.row(part, f"{seconds:.1f} s", f"{seconds / ticks * 1e6:.0f} µs"))
    seconds, _ = timed(args.repeat, lambda: oracle_run(prepared, settings))
    rows.append(table.row(PARTS[4], f"{seconds:.1f} s", ""))
    seconds, _ = timed(args.repeat, lambda: prepare(split.scored, settings))
    rows.append(table.row(PARTS[5], f"{seconds:.1f} s", ""))
    rows.append(table.row(PARTS[6], f"{seconds_history:.1f} s", ""))
    print(table.header())
    print("\n".join(rows))
    each = "; ".join(f"{p} " + ", ".join(f"{x:.1f}" for x in runs[p]) for p in PRESETS)
    print(f"each run, in the order run (s): {each}")


if __name__ == "__main__":
    main()
