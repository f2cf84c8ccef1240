"""Scheduled capacity: the fewest serving nodes a window asks for at a given time."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

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


def scheduled_minimum(windows: Iterable[Window], at: float, lead: float) -> tuple[int, str | None]:
    """The largest ``min_nodes`` of the windows open at ``at + lead``, or at ``at``.

    Looking ``lead`` seconds ahead opens a window early by the boot time, so its
    nodes are serving when it starts; looking at ``at`` too keeps them until it ends.
    """
    best, name = 0, None
    for w in windows:
        if (w.open_at(at) or w.open_at(at + lead)) and w.min_nodes > best:
            best, name = w.min_nodes, w.name
    return best, name
