"""Scheduled capacity: the fewest serving nodes a window asks for at a given time."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

from bbbscaler.settings import DAYS, ScheduleSettings


@dataclass(frozen=True, slots=True)
class Window:
    """Opens on ``days`` at ``start`` local time, closes at ``end``; holds ``min_nodes``."""

    name: str
    days: frozenset[int]
    """0 = Monday, as datetime.weekday()."""
    start_min: int
    """Minutes after local midnight."""
    end_min: int
    timezone: str
    min_nodes: int

    @classmethod
    def from_settings(cls, s: ScheduleSettings) -> Window:
        def minutes(clock: str) -> int:
            hours, mins = clock.split(":")
            return int(hours) * 60 + int(mins)

        return cls(
            name=s.name,
            days=frozenset(DAYS.index(d) for d in s.days),
            start_min=minutes(s.start),
            end_min=minutes(s.end),
            timezone=s.timezone,
            min_nodes=s.min_nodes,
        )

    def open_at(self, at: float) -> bool:
        """True while the window is open at epoch second ``at``."""
        local = dt.datetime.fromtimestamp(at, _zone(self.timezone))
        minute = local.hour * 60 + local.minute + local.second / 60
        day = local.weekday()
        if self.start_min < self.end_min:
            return day in self.days and self.start_min <= minute < self.end_min
        # Past midnight: open from start on a listed day, or before end on the day after one.
        if day in self.days and minute >= self.start_min:
            return True
        return (day - 1) % 7 in self.days and minute < self.end_min


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


# open_at changes only where the local wall clock passes a whole minute (starts and ends are
# HH:MM), and every zone's offset from UTC is whole minutes, so the window is open or closed
# for the whole of each epoch minute [60 k, 60 k + 60).
_MINUTE = 60


@lru_cache(maxsize=1 << 16)
def _open_in_minute(window: Window, minute: int) -> bool:
    return window.open_at(float(minute * _MINUTE))


@dataclass(frozen=True, slots=True)
class Opening:
    """A window in effect: open now, or opening within the lead time."""

    window: Window
    start: float
    """Epoch seconds it opened (or opens)."""


def opening(window: Window, at: float, lead: float) -> Opening | None:
    """The window's opening in effect at ``at``: open at ``at``, or opening by ``at + lead``.

    Every instant of ``[at, at + lead]`` counts, not only its ends: a window shorter than
    the lead (08:00-08:02 with 180 s of boot time) would otherwise slip between the two.
    """
    first, last = int(at // _MINUTE), int((at + lead) // _MINUTE)
    if _open_in_minute(window, first):
        return Opening(window, min(at, _started(window, at)))
    for minute in range(first + 1, last + 1):
        if _open_in_minute(window, minute):
            return Opening(window, float(minute * _MINUTE))
    return None


def _started(window: Window, at: float) -> float:
    """When the opening that is open at ``at`` began, by the wall clock (today's start, or
    yesterday's for the part of a window past midnight)."""
    zone = _zone(window.timezone)
    local = dt.datetime.fromtimestamp(at, zone)
    minute = local.hour * 60 + local.minute
    day = local.date()
    if window.start_min >= window.end_min and minute < window.start_min:
        day -= dt.timedelta(days=1)
    start = dt.time(window.start_min // 60, window.start_min % 60)
    return dt.datetime.combine(day, start, tzinfo=zone).timestamp()


def in_effect(windows: Iterable[Window], at: float, lead: float) -> tuple[Opening, ...]:
    """The windows that hold capacity at ``at``: open, or opening within ``lead`` seconds."""
    if not windows:
        return ()  # the common case, asked twice a round
    return tuple(o for w in windows if (o := opening(w, at, lead)) is not None)


def scheduled_minimum(windows: Iterable[Window], at: float, lead: float) -> tuple[int, str | None]:
    """The largest ``min_nodes`` of the windows in effect at ``at`` (see ``opening``).

    Looking ``lead`` seconds ahead opens a window early (by the policy's schedule_lead), so
    its nodes are serving when it starts; looking at ``at`` too keeps them until it ends.
    """
    best, name = 0, None
    for o in in_effect(windows, at, lead):
        if o.window.min_nodes > best:
            best, name = o.window.min_nodes, o.window.name
    return best, name
