"""The default preset: grow by the room below the target CPU, shrink by the mean."""

from __future__ import annotations

import math

from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.fleet import Fleet
from bbbscaler.policy.history import History
from bbbscaler.policy.need import Need, serving_cpu


def need(
    fleet: Fleet,
    history: History,
    config: PolicyConfig,
    now: float,
    planned: bool,
    growth: float | None = None,
    headroom: float | None = None,
) -> Need:
    """The default rule's need this round (``planned``: a schedule window is open).

    ``growth``: the demand expected to come within the lookahead, when something knows it
    (the forecast); None extrapolates the trend of the last ``trend_window``. ``headroom``:
    another than ``config.headroom`` (the forecast's).
    """
    if headroom is None:
        headroom = config.headroom
    cpu = serving_cpu(fleet, config.target_cpu)
    lowest = cpu.lowest
    numbers: dict[str, float] = {"lowest_cpu": lowest if lowest is not None else -1.0}
    if cpu.demand is None or cpu.room is None:
        # Nothing serving is seen: no basis to size on (bounds still apply, scale-in is blocked).
        return Need(False, False, 0, fleet.capacity, numbers, None, idle_only=False)
    demand = cpu.demand
    rate = 0.0
    # A base much shorter than the window (just after a start) turns one meeting into a steep
    # trend; an imputed demand is no base for one either. Inside an open schedule window the
    # rise is the planned event its min_nodes already provides for: extrapolating it would
    # buy nodes that boot after the crowd has been placed.
    if (
        growth is None
        and not planned
        and not cpu.unseen
        and (then := history.demand_since(now - config.trend_window)) is not None
        and now - then[0] >= config.trend_window / 2
    ):
        rate = max(0.0, (demand - then[1]) / (now - then[0]))
    if growth is None:
        growth = rate * config.lookahead
    # Grow by room, not by the mean: meetings stay where Scalelite put them, so what the next
    # meetings need is room below the target on the nodes there are (a booting node is all
    # room), the headroom plus the growth expected before a new node could serve.
    room = cpu.room + (len(fleet.booting) + fleet.pending_launches) * config.target_cpu
    short = headroom + growth - room
    wanted = fleet.capacity + max(0, math.ceil(short / config.target_cpu - 1e-9))
    wanted = max(1, wanted)
    # Shrink by the mean: what the whole load needs at the target, with the same allowances.
    keep = max(1, math.ceil((demand + growth + headroom) / config.target_cpu - 1e-9))
    numbers |= {
        "demand": round(demand, 4),
        "trend_per_s": round(rate, 6),
        "projected": round(demand + growth, 4),
        "headroom": headroom,
        "room": round(room, 4),
        "need": wanted,
        "keep": keep,
    }
    return Need(
        out=wanted > fleet.capacity,
        # Only rounds that see every serving node count towards the stabilisation window.
        inward=keep < fleet.capacity and wanted <= fleet.capacity and not cpu.unseen,
        wanted=wanted,
        keep=keep,
        numbers=numbers,
        demand=None if cpu.unseen else demand,
        idle_only=False,
    )


def out_reason(config: PolicyConfig, need: Need, held: float) -> str:
    """Why the default rule grows."""
    growth = need.numbers["projected"] - need.numbers["demand"]
    # The headroom the need was sized with: the forecast preset's own, outside a window.
    headroom = need.numbers.get("headroom", config.headroom)
    return (
        f"room {need.numbers['room']:.2f} below the {config.target_cpu:.0%} target short of "
        f"{headroom} headroom + {growth:.2f} growth: needs {need.wanted}"
    )


def drain_reason(config: PolicyConfig, need: Need, fleet: Fleet, count: int) -> str:
    """Why the default rule drains ``count`` nodes."""
    return (
        f"{fleet.capacity} nodes where {need.keep} carry the load under "
        f"{config.target_cpu:.0%}: drain {count} least-loaded node(s)"
    )
