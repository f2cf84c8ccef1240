"""The forecast: the fleet's demand in the next hour, from the same week-time in earlier weeks.

Teaching load repeats by the week: Monday 08:00 looks like last Monday 08:00. The
history is the fleet's CPU demand in nodes (the sum of every host's
``bbbnode_cpu_utilization_ratio``, the unit the policy sizes in), one value per
5-minute step over the last weeks (``DemandHistory``). ``forecast_from`` turns it
into a ``Forecast`` for the next hour, purely:

1. **Seasonal.** For a step at week-time *w*, the values at *w* one, two, ...
   ``forecast_weeks`` weeks back, and their ``forecast_quantile`` (a robust
   quantile: a holiday or an outage in one earlier week does not pull it down,
   one busy week does not pull it up the way a mean would).
2. **Today's correction.** Over the last ``forecast_window`` seconds, how today
   ran against its own seasonal forecast: the ratio of the sums of actual and
   seasonal values, clipped to ``[forecast_min_correction,
   forecast_max_correction]``. Multiplicative, so a holiday at 20 % of normal
   scales the coming ramp to 20 % instead of buying a normal Monday's capacity,
   and a term 10 % busier than its earlier weeks gets 10 % more. While the
   seasonal values of the window are too small to judge by (a night), it is 1.
3. The forecast is seasonal times correction for each step of the next hour.

It falls back (``usable`` False, and the policy acts on its reactive rules
alone) when the history is short (fewer than ``forecast_min_weeks`` earlier
weeks cover the hour), stale (its newest value is older than
``forecast_stale_after``: today's correction would be a guess), or
unreadable (the source failed: ``unreadable``, made by the caller).

Only values stamped at or before ``now`` are read (a value stamped *t* is the
mean over the step that ends at *t*), so a history that runs past ``now`` (the
backtest's, built from the whole trace) tells the forecast nothing about the
future: walk-forward by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Literal

from bbbscaler.policy import default
from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.fleet import Fleet
from bbbscaler.policy.history import History
from bbbscaler.policy.need import Need

WEEK = 7 * 86_400.0
STEP = 300.0
"""Seconds between two history values: Prometheus' query_range step, and the backtest's."""
HORIZON = 3_600.0
"""Seconds ahead a forecast reaches."""

Status = Literal["ok", "off", "short", "stale", "unreadable"]
"""``ok``: the forecast is in use; ``off``: the preset uses none; ``short``: too few earlier
weeks; ``stale``: no recent value; ``unreadable``: the history could not be read."""


@dataclass(frozen=True, slots=True)
class DemandHistory:
    """The fleet's CPU demand in nodes, one value per ``step`` seconds from ``start``.

    ``values[k]`` is the mean demand over the step that ends at ``start + k * step``;
    None where nothing was recorded (no scrape, a gap in Prometheus).
    """

    start: float
    step: float
    values: tuple[float | None, ...]

    def index(self, at: float) -> int:
        """The index of the value stamped at or just before ``at`` (may be out of range)."""
        return math.floor((at - self.start) / self.step + 1e-9)

    def value(self, k: int) -> float | None:
        return self.values[k] if 0 <= k < len(self.values) else None

    @property
    def end(self) -> float:
        """When the newest value is stamped."""
        return self.start + (len(self.values) - 1) * self.step


@dataclass(frozen=True, slots=True)
class Forecast:
    """The demand forecast for the next hour, or why there is none (``status``)."""

    at: float
    status: Status
    reason: str
    start: float = 0.0
    """Time of ``demand[0]``: the step that contains ``at``."""
    step: float = STEP
    demand: tuple[float, ...] = ()
    """Forecast CPU demand in nodes for the steps from ``start`` on."""
    correction: float = 1.0
    """Today's actual over its seasonal forecast, as applied."""
    weeks: int = 0
    """Earlier weeks the seasonal values came from."""
    highest: tuple[float, ...] = field(init=False, compare=False, repr=False)
    """``highest[k]``: the highest of ``demand[0..k]``. A forecast serves every round of its
    step, each asking for the peak from now on, which starts at its first step: made once."""

    def __post_init__(self) -> None:
        # accumulate's max keeps the earlier of equal values, as max over the slice does.
        object.__setattr__(self, "highest", tuple(accumulate(self.demand, max)))

    @property
    def usable(self) -> bool:
        return self.status == "ok" and bool(self.demand)

    def peak(self, begin: float, end: float) -> float:
        """The highest forecast demand of the steps that overlap ``[begin, end]``."""
        start, step, demand = self.start, self.step, self.demand
        last = min(len(demand) - 1, math.floor((end - start) / step))
        # ``begin`` in the first step (or before it): the running maximum, made once.
        if (begin - start) / step < 1.0 and last >= 0:
            return self.highest[last]
        first = max(0, math.floor((begin - start) / step))
        return max(demand[first : last + 1], default=0.0)

    def now(self) -> float:
        """The forecast demand of the current step."""
        return self.peak(self.at, self.at)

    @classmethod
    def unavailable(cls, at: float, status: Status, reason: str) -> Forecast:
        return cls(at, status, reason)


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by linear interpolation between order statistics."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _seasonal(history: DemandHistory, k: int, config: PolicyConfig) -> tuple[float | None, int]:
    """The seasonal value of the step with index ``k``, and how many weeks it came from."""
    per_week = round(WEEK / history.step)
    found = [
        v
        for w in range(1, config.forecast_weeks + 1)
        if (v := history.value(k - w * per_week)) is not None
    ]
    if len(found) < config.forecast_min_weeks:
        return None, len(found)
    return quantile(found, config.forecast_quantile), len(found)


def forecast_from(history: DemandHistory, now: float, config: PolicyConfig) -> Forecast:
    """The forecast for the hour after ``now`` from ``history`` (pure; see the module)."""
    if not history.values:
        return Forecast.unavailable(now, "short", "no history")
    newest = min(history.index(now), len(history.values) - 1)
    while newest >= 0 and history.values[newest] is None:
        newest -= 1
    if newest < 0:
        return Forecast.unavailable(now, "short", "no history before now")
    age = now - (history.start + newest * history.step)
    if age > config.forecast_stale_after:
        return Forecast.unavailable(
            now, "stale", f"newest value {age:.0f} s old (limit {config.forecast_stale_after:.0f})"
        )
    # The step that contains ``now`` ends at the first stamp after it.
    first = history.index(now) + 1
    count = math.ceil(HORIZON / history.step) + 1
    seasonal: list[float] = []
    weeks = config.forecast_weeks
    for k in range(first, first + count):
        value, found = _seasonal(history, k, config)
        if value is None:
            return Forecast.unavailable(
                now,
                "short",
                f"{found} earlier week(s) cover the next hour "
                f"(at least {config.forecast_min_weeks} needed)",
            )
        seasonal.append(value)
        weeks = min(weeks, found)
    correction = _correction(history, first - 1, config)
    start = history.start + (first - 1) * history.step
    return Forecast(
        at=now,
        status="ok",
        reason=f"{weeks} week(s), today at {correction:.2f} of them",
        start=start,
        step=history.step,
        demand=tuple(max(0.0, v * correction) for v in seasonal),
        correction=correction,
        weeks=weeks,
    )


def _correction(history: DemandHistory, last: int, config: PolicyConfig) -> float:
    """Today's actual over seasonal for the values up to index ``last`` in the window."""
    steps = max(1, round(config.forecast_window / history.step))
    actual = expected = 0.0
    for k in range(last - steps + 1, last + 1):
        value = history.value(k)
        if value is None:
            continue
        seasonal, _ = _seasonal(history, k, config)
        if seasonal is None:
            continue
        actual += value
        expected += seasonal
    # Too little demand expected to judge today by (a night): no correction.
    if expected < config.forecast_min_evidence * steps:
        return 1.0
    ratio = actual / expected
    return min(config.forecast_max_correction, max(config.forecast_min_correction, ratio))


def need(
    fleet: Fleet,
    history: History,
    forecast: Forecast | None,
    config: PolicyConfig,
    now: float,
    planned: bool,
) -> Need:
    """The forecast preset's need: the default rule, and the forecast's on top of it.

    With a usable forecast, the growth the room rule provides for is the forecast's own rise
    over the lookahead (not the trend), with ``forecast_headroom``; the fleet grows to what
    the forecast demand needs at ``now + boot_time + forecast_margin`` (so it serves before
    the demand arrives) and keeps what it needs within ``forecast_hold``; new meetings go
    to what it needs from ``forecast_steer_from`` to ``forecast_hold`` ahead, and one node
    more (``steer_keep``). Without one, the default rule as it is: the forecast only ever
    adds capacity or holds it.
    """
    if forecast is None or not forecast.usable:
        return default.need(fleet, history, config, now, planned)
    # Inside an open schedule window the operator's plan sizes the growth (as in the default
    # rule, which extrapolates nothing there) with the default rule's own headroom; the
    # forecast still holds what it needs.
    headroom = config.headroom if planned else config.forecast_headroom
    current = forecast.now()
    rise = 0.0 if planned else forecast.peak(now, now + config.lookahead) - current
    base = default.need(fleet, history, config, now, planned, max(0.0, rise), headroom)
    lead = forecast.peak(now, now + config.boot_time + config.forecast_margin)
    held = forecast.peak(now, now + config.forecast_hold)
    lead_nodes = _nodes(lead, headroom, config)
    out_nodes = 0 if planned else lead_nodes
    keep_nodes = _nodes(held, headroom, config)
    wanted = max(base.wanted, out_nodes)
    # An empty node drains at once and a new one serves within boot_time: it is kept for
    # what the forecast needs that soon. A node with meetings drains as long as they run:
    # it is kept for what the forecast needs within the hold.
    keep = max(base.keep, lead_nodes)
    keep_busy = max(keep, keep_nodes)
    steer_keep = keep_busy
    if config.forecast_steer_from > 0:
        # A new meeting holds its node as long as it runs: where the forecast falls, send
        # new meetings only to what it needs later (and one node for the next wave's
        # room), so the others empty with the demand instead of a meeting or two each.
        later = forecast.peak(now + config.forecast_steer_from, now + config.forecast_hold)
        steer_keep = min(keep_busy, _nodes(later, headroom, config) + 1)
    numbers = base.numbers | {
        "forecast_demand": round(current, 4),
        "forecast_lead_demand": round(lead, 4),
        "forecast_nodes": out_nodes,
        "forecast_keep": keep_nodes,
        "forecast_correction": round(forecast.correction, 3),
        "forecast_weeks": forecast.weeks,
        "need": wanted,
        "keep": keep,
        "keep_busy": keep_busy,
        "steer_keep": steer_keep,
    }
    return Need(
        out=wanted > fleet.capacity,
        # Seen like the default rule's: nothing unseen (its demand is known).
        inward=keep < fleet.capacity and wanted <= fleet.capacity and base.demand is not None,
        wanted=wanted,
        keep=keep,
        numbers=numbers,
        demand=base.demand,
        idle_only=False,
        keep_busy=keep_busy,
        steer_keep=steer_keep,
    )


def noted(forecast: Forecast | None) -> tuple[Status, str]:
    """The forecast's status and reason, for the decision (explain, JSON and metrics)."""
    if forecast is None:
        return "off", "no forecast source"
    return forecast.status, forecast.reason


def _nodes(demand: float, headroom: float, config: PolicyConfig) -> int:
    """Nodes that carry ``demand`` at the target CPU with ``headroom`` to spare."""
    return max(1, math.ceil((demand + headroom) / config.target_cpu - 1e-9))


def out_reason(config: PolicyConfig, need: Need, held: float) -> str:
    """Why the forecast preset grows."""
    n = need.numbers
    if "forecast_nodes" in n and n["forecast_nodes"] >= need.wanted:
        ahead = config.boot_time + config.forecast_margin
        return (
            f"forecast demand {n['forecast_lead_demand']:.2f} within {ahead:.0f}s needs "
            f"{need.wanted} at the {config.target_cpu:.0%} target"
        )
    return default.out_reason(config, need, held)


def drain_reason(config: PolicyConfig, need: Need, fleet: Fleet, count: int) -> str:
    """Why the forecast preset drains ``count`` nodes."""
    said = default.drain_reason(config, need, fleet, count)
    if "forecast_keep" in need.numbers:
        said += f" (the forecast needs {need.numbers['forecast_keep']:.0f} within " + (
            f"{config.forecast_hold:.0f}s)"
        )
    return said
