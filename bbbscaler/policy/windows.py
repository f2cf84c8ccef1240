"""windows: the schedule windows in effect that the fleet will miss, and by how much.

A window raises the lower bound ``schedule_lead`` (boot_time, then Scalelite's poll)
before it opens, so the nodes launched then serve, and are online in Scalelite, when it
starts. It is missed (they do not serve by its start) when it became known later than that (a
schedule changed at 07:58 for 08:00), when launches boot slower than ``boot_time``,
or when the upper bound (MaxSize, policy.max_nodes) holds fewer nodes than it asks
for. Pure: it reads the round's snapshot and decision and says what will happen,
so the warning, the metric and ``explain`` all show the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from bbbscaler.model import Decision, FleetSnapshot, WindowMiss
from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.fleet import Fleet
from bbbscaler.policy.warm import boot_lag, launch_lags
from bbbscaler.schedule import Window, in_effect


def ready_times(
    snapshot: FleetSnapshot, fleet: Fleet, decision: Decision, config: PolicyConfig, now: float
) -> list[float]:
    """When each node the fleet will have after ``decision`` serves, soonest first.

    Serving nodes already do (-inf: they are late for nothing); the ones re-enabled now
    serve now; a booting node ``boot_time`` after its launch (``warm_start_time`` after its
    start, for one from the warm pool; now, if it is already slower than that); desired
    capacity the ASG has not launched yet, and the launches of this decision,
    ``warm_start_time`` from now while the warm pool has ready hosts, ``boot_time`` after.
    """
    leaving = set(decision.drain) | set(decision.terminate)
    times = [-math.inf for n in fleet.serving if n.instance_id not in leaving]
    times += [now] * len(decision.undrain)
    for n in fleet.booting:
        launched = now if n.launched_at is None else n.launched_at
        times.append(max(now, launched + boot_lag(n, config)))
    base = max(snapshot.group.desired, len(fleet.members))
    launches = fleet.pending_launches + max(0, (decision.desired or base) - base)
    times += [now + lag for lag in launch_lags(snapshot.pool, launches, config)]
    return sorted(times)


def misses(
    snapshot: FleetSnapshot, fleet: Fleet, decision: Decision, config: PolicyConfig, now: float
) -> tuple[WindowMiss, ...]:
    """The windows in effect now whose ``min_nodes`` will not all serve by their start.

    Launched in the first round after the window comes into effect, nodes serve up to one
    round after its start by design: lateness within ``interval`` is no miss.
    """
    openings = [o for o in in_effect(config.windows, now, config.boot_time) if o.window.min_nodes]
    if not openings:
        return ()
    ready = ready_times(snapshot, fleet, decision, config, now)
    found: list[WindowMiss] = []
    for o in openings:
        want = o.window.min_nodes
        reached = min(want, len(ready))
        late = max(0.0, ready[reached - 1] - o.start) if reached else 0.0
        short = want - reached
        if late > config.interval or short:
            found.append(WindowMiss(o.window.name, o.start, want, late, short))
    return tuple(found)


def oversized(windows: Iterable[Window], upper: int) -> tuple[tuple[str, int], ...]:
    """(name, min_nodes) of the windows that ask for more nodes than ``upper`` allows."""
    return tuple((w.name, w.min_nodes) for w in windows if w.min_nodes > upper)
