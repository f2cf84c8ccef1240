"""What a trace asks of a fleet, under the host CPU model, and how fast capacity followed.

Each meeting costs busy cores by ``bbbsim.host_model`` (a quarter of its
participants on the microphone, the model's own calibration ratio; every camera
reaches every other participant). Costs are kept in integer micro-cores, so
adding and removing thousands of meetings on a node never drifts: an emptied
node is exactly idle again, and "above 80 %" is decided on integers.

- A node is *overloaded* when its CPU is above ``overload_cpu`` (80 %).
- A meeting is *big* when it alone overloads a host: no placement avoids that.
- The *fluid need* at a moment is the fewest nodes that could carry every
  running meeting at or under 80 % if meetings could be split freely: each big
  meeting one node, the rest ``ceil(their cores / (80 % of a host - the idle
  base))``. Its integral is the fluid bound on instance-hours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bbbsim.host_model import DEFAULT_CORES, DEFAULT_COST, CpuCost, busy_cores, meeting_load
from bbbsim.trace import TraceMeeting

MICRO = 1_000_000
"""Micro-cores per core."""

Steps = tuple[tuple[float, int], ...]
"""A step function: (time, value from then on), times ascending."""


def utilisation(units: int, full_units: int) -> float:
    """CPU utilisation 0..1 of a host using ``units`` (idle base included) of ``full_units``:
    ``HostSpec.cpu``, for a caller that has read the host's figures once."""
    return min(1.0, units / full_units)


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One BBB host: cores, the CPU model's costs, and where overload starts."""

    cores: int = DEFAULT_CORES
    cost: CpuCost = DEFAULT_COST
    overload_cpu: float = 0.80

    @property
    def full_units(self) -> int:
        """Micro-cores of the whole host."""
        return self.cores * MICRO

    @property
    def idle_units(self) -> int:
        return round(self.cost.idle_cores * MICRO)

    @property
    def limit_units(self) -> int:
        """Busy micro-cores (idle included) at which the host is at ``overload_cpu``."""
        return math.floor(self.overload_cpu * self.full_units)

    def cpu(self, units: int) -> float:
        """Utilisation 0..1 of a host whose meetings cost ``units``."""
        return utilisation(self.idle_units + units, self.full_units)

    def overloaded(self, units: int) -> bool:
        return self.idle_units + units > self.limit_units


def voice_users(participants: int) -> int:
    """Participants on the microphone: a quarter, as in the host model's calibration."""
    return participants // 4


def meeting_units(meeting: TraceMeeting, host: HostSpec) -> int:
    """Busy micro-cores ``meeting`` adds to a host (the idle base not included)."""
    load = meeting_load(
        meeting.participants, voice=voice_users(meeting.participants), cameras=meeting.cameras
    )
    return round((busy_cores(load, host.cost) - host.cost.idle_cores) * MICRO)


def fluid_nodes(small_units: int, big: int, host: HostSpec) -> int:
    """The fluid need: ``big`` nodes of their own plus the rest packed to 80 %."""
    room = host.limit_units - host.idle_units
    return big + -(-small_units // room)


def need_steps(
    starts: Sequence[float], ends: Sequence[float], units: Sequence[int], host: HostSpec
) -> Steps:
    """The fluid need over time, for meetings given as parallel sequences."""
    changes: dict[float, list[int]] = {}
    for start, end, u in zip(starts, ends, units, strict=True):
        big = 1 if host.overloaded(u) else 0
        for at, sign in ((start, 1), (end, -1)):
            d = changes.setdefault(at, [0, 0])
            d[0] += sign * (0 if big else u)
            d[1] += sign * big
    steps: list[tuple[float, int]] = []
    small = big_count = 0
    for at in sorted(changes):
        small += changes[at][0]
        big_count += changes[at][1]
        value = fluid_nodes(small, big_count, host)
        if not steps or steps[-1][1] != value:
            steps.append((at, value))
    return tuple(steps)


def integrate(steps: Steps, end: float) -> float:
    """∫ steps dt up to ``end`` (value-seconds); 0 before the first step."""
    total = 0.0
    for (at, value), (nxt, _) in zip(steps, (*steps[1:], (end, 0)), strict=True):
        total += value * (min(nxt, end) - at) if at < end else 0.0
    return total


def peak(steps: Steps) -> int:
    return max((v for _, v in steps), default=0)


def capacity_lags(need: Steps, capacity: Steps) -> tuple[float, ...]:
    """Seconds from each rise in need until capacity met it.

    A rise is the need reaching a level ``k`` from below at ``t0`` (a step of
    several nodes is several rises, one per level). It is met at the first
    moment capacity (nodes up: booted, not terminated) is ``>= k``; 0 when it
    already is. A rise the need falls back from before capacity reaches it
    counts the whole time it went unmet. Changes at one instant are applied
    together before anything is measured.
    """
    times = sorted({t for t, _ in need} | {t for t, _ in capacity})
    need_at = dict(need)
    cap_at = dict(capacity)
    lags: list[float] = []
    waiting: dict[int, float] = {}
    cur_need = cur_cap = 0
    for t in times:
        before = cur_need
        cur_need = need_at.get(t, cur_need)
        cur_cap = cap_at.get(t, cur_cap)
        for level in [k for k in waiting if k <= cur_cap or k > cur_need]:
            lags.append(t - waiting.pop(level))
        for level in range(before + 1, cur_need + 1):
            if level <= cur_cap:
                lags.append(0.0)
            else:
                waiting[level] = t
    # Still unmet when the trace ends: counted up to the last change seen.
    end = times[-1] if times else 0.0
    lags.extend(end - t0 for t0 in waiting.values())
    return tuple(lags)


def p95(values: Iterable[float]) -> float:
    """The 95th percentile by nearest rank (0 when there is nothing)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[math.ceil(0.95 * len(ordered)) - 1]
