"""Backtest speed: a 7-day trace on a fleet of about 100 nodes.

Target (issue 5): at most 10 s. The trace is the university week at ``--scale``
10 (about 2,250 meetings at peak, 88,000 in the week), which the ``default``
preset serves with about 100 nodes. Timed: the whole backtest as the CLI runs
it (prepare, both presets through the discrete-event fleet with the real
``decide`` every 10 s, the oracle, the fluid bound and the lags), and each
part on its own.

    .venv/bin/python benchmarks/backtest.py [--scale 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

from bbbsim.backtest import backtest
from bbbsim.fleet_model import FleetSettings, policy_config, prepare, simulate
from bbbsim.oracle import oracle_run
from bbbsim.trace import Trace
from bbbsim.trace_generate import university_week

T = TypeVar("T")


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
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trace = Trace("university-week", tuple(university_week(1, args.scale)))
    settings = FleetSettings()
    total, result = timed(args.repeat, lambda: backtest(trace, ("seed", "default"), settings))
    prepared = prepare(trace, settings)
    ticks = int(prepared.horizon // settings.tick) + 1
    print(
        f"trace: university week x{args.scale:g}, {len(trace.meetings):,} meetings, "
        f"{prepared.horizon / 86400:.1f} days, {ticks:,} scaler rounds per policy"
    )
    for scored in (*result.policies, result.oracle):
        run = scored.run
        print(f"  {run.name:8s} peak {run.peak_nodes:4d} nodes, {run.instance_hours:8,.0f} h")
    print(f"backtest (seed + default + oracle + bound): {total:.2f} s (median of {args.repeat})")
    for preset in ("seed", "default"):
        config = policy_config(preset, settings)
        seconds, _ = timed(args.repeat, lambda: simulate(prepared, config, settings))  # noqa: B023
        print(f"  {preset:8s} {seconds:.2f} s ({seconds / ticks * 1e6:.0f} µs a round)")
    seconds, _ = timed(args.repeat, lambda: oracle_run(prepared, settings))
    print(f"  oracle   {seconds:.2f} s")
    seconds, _ = timed(args.repeat, lambda: prepare(trace, settings))
    print(f"  prepare  {seconds:.2f} s")


if __name__ == "__main__":
    main()
