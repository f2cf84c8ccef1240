"""The forecast's history in the backtest: the fleet's CPU demand per 5 minutes, from a trace.

In production bbbscaler reads the sum of every host's ``bbbnode_cpu_utilization_ratio``
from Prometheus, one mean per 5 minutes (``bbbscaler.forecast_source``). Here the same
``DemandHistory`` is built from the trace itself, for every week of it, as that sum would
read on a fleet sized to the fluid need (``bbbsim.demand``): each running meeting's busy
cores, each needed node's idle base, and recording processing (a recorded meeting's
work queued when it ends, processed by one worker per needed node). It is computed once,
for the whole trace, and is the same for every policy; the forecast reads only values
stamped before the moment it forecasts at (walk-forward).

What differs from a live fleet's sum: the idle base of the nodes beyond the fluid need
(a live fleet runs more: 0.03 of a node each on the reference host) and recordings
queued per node rather than fleet-wide. The history therefore reads a little lower than
a live fleet's; the forecast's correction compares it with itself, so it is not biased by
it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bbbscaler.policy import DemandHistory, PolicyConfig, forecast_from
from bbbscaler.policy.forecast import STEP, WEEK
from bbbsim.demand import MICRO, fluid_nodes
from bbbsim.fleet_model import FleetSettings, PreparedTrace
from bbbsim.trace import Trace, TraceMeeting

SAMPLE = 60.0
"""Seconds between the samples a step's mean is taken over."""


def trace_demand(prepared: PreparedTrace, settings: FleetSettings) -> DemandHistory:
    """The demand history of the whole trace, stamped on ``settings.epoch``'s clock."""
    host = settings.host
    rec = settings.recordings
    events: list[tuple[float, int, int]] = []
    """(time, +1/-1, meeting)"""
    for i, (start, end) in enumerate(zip(prepared.start, prepared.end, strict=True)):
        events.append((start, 1, i))
        events.append((end, -1, i))
    events.sort()
    steps = math.ceil(prepared.horizon / STEP)
    per_step = round(STEP / SAMPLE)
    values: list[float | None] = []
    small = big = big_units = 0
    """Busy micro-cores of the meetings that fit a host, count and micro-cores of the rest."""
    cap = host.full_units - host.idle_units
    queue = 0.0
    """Seconds of recording processing queued fleet-wide."""
    e = 0
    total = 0.0
    for s in range(steps * per_step):
        t = (s + 0.5) * SAMPLE
        ended_work = 0.0
        while e < len(events) and events[e][0] <= t:
            _, sign, i = events[e]
            units = prepared.units[i]
            if host.overloaded(units):
                big += sign
                big_units += sign * min(units, cap)
            else:
                small += sign * units
            if sign < 0 and rec.enabled and prepared.recorded[i]:
                ended_work += rec.seconds(prepared.end[i] - prepared.start[i])
            e += 1
        nodes = fluid_nodes(small, big, host) if small or big else 0
        queue += ended_work
        processed = min(queue, max(1, nodes) * SAMPLE) if queue else 0.0
        queue -= processed
        busy = small + big_units + processed / SAMPLE * rec.cores * MICRO
        cpu = (busy + max(1, nodes) * host.idle_units) / host.full_units
        total += cpu
        if (s + 1) % per_step == 0:
            values.append(total / per_step)
            total = 0.0
    return DemandHistory(settings.epoch + STEP, STEP, tuple(values))


@dataclass(frozen=True, slots=True)
class Split:
    """A trace cut at the start of its last week."""

    scored: Trace
    """The last week, its second 0 the week's Monday 00:00."""
    offset: float
    """Trace seconds before the scored week (0: the trace is one week or less)."""


def last_week(trace: Trace) -> Split:
    """The trace's last week (from the last Monday 00:00 a meeting starts after), re-based;
    meetings still running at its start begin with it."""
    latest = max((m.start_s for m in trace.meetings), default=0.0)
    offset = math.floor(latest / WEEK) * WEEK
    if offset <= 0:
        return Split(trace, 0.0)
    kept: list[TraceMeeting] = []
    for m in trace.meetings:
        if m.end_s <= offset:
            continue
        start = max(m.start_s, offset)
        kept.append(
            TraceMeeting(start - offset, m.end_s - start, m.participants, m.cameras, m.recorded)
        )
    return Split(Trace(trace.name, tuple(kept)), offset)


@dataclass(frozen=True, slots=True)
class HourError:
    """The forecast's error in one hour of the day (UTC) over the scored week."""

    hour: int
    mape: float
    """Mean absolute percentage error of the forecast demand against the actual."""
    bias: float
    """Mean of (forecast - actual) / actual: above 0, the forecast ran high."""
    steps: int
    """5-minute steps counted (those with at least MIN_ACTUAL nodes of demand)."""


MIN_ACTUAL = 1.0
"""Steps whose actual demand is below this (nodes) are left out: a night's few meetings
make large percentages of nothing."""


def forecast_errors(
    history: DemandHistory, begin: float, end: float, config: PolicyConfig
) -> tuple[HourError, ...]:
    """The forecast's own error over ``[begin, end)`` (epoch seconds), per hour of day.

    Each step's demand is compared with the forecast made ``boot_time + forecast_margin``
    before the step's middle: the forecast the policy launches nodes on.
    """
    lead = config.boot_time + config.forecast_margin
    sums: dict[int, list[float]] = {}
    first = history.index(begin) + 1
    last = min(history.index(end), len(history.values) - 1)
    for k in range(first, last + 1):
        actual = history.values[k]
        if actual is None or actual < MIN_ACTUAL:
            continue
        middle = history.start + k * history.step - history.step / 2
        made = forecast_from(history, middle - lead, config)
        if not made.usable:
            continue
        error = (made.peak(middle, middle) - actual) / actual
        hour = int(middle % 86_400 // 3_600)
        acc = sums.setdefault(hour, [0.0, 0.0, 0.0])
        acc[0] += abs(error)
        acc[1] += error
        acc[2] += 1
    return tuple(HourError(h, a / n, b / n, int(n)) for h, (a, b, n) in sorted(sums.items()) if n)
