"""steering: the load_multipliers that tell Scalelite where new meetings go.

Steering changes only where Scalelite puts new meetings: it sets a serving node's
``load_multiplier``, never a node's membership, so it cannot end a meeting.
"""

from __future__ import annotations

import math

from bbbscaler.model import Decision
from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.fleet import Fleet, emptiest_first


def steering(
    fleet: Fleet, keep: int, lower: int, config: PolicyConfig, decision: Decision
) -> tuple[tuple[str, float], ...]:
    """The load_multiplier changes that steer new meetings (default preset).

    Scalelite sends a meeting to the least load and only learns what it sent at its next poll,
    so between polls one node can take a whole wave. A node past ``steer_cpu`` gets
    ``steer_multiplier``: its next create, and every poll after, make it look full, yet
    Scalelite still uses it when every node is steered. The nodes beyond what the load
    needs (``keep``), the emptiest busy ones first, are steered too: with no new meetings
    they empty, and an empty node drains at once. Then the warmest past ``steer_warm_cpu``,
    while fewer than ``steer_warm_share`` of the nodes are steered: in a flash crowd a node
    takes several rooms within one round, and from 60 % two or three carry it past 80 %;
    the rest stay open, so Scalelite spreads the wave over them. The rest get 1.
    """
    high = config.steer_multiplier
    if high <= 1:
        return ()
    leaving = set(decision.drain) | set(decision.terminate)
    steerable = (
        [n for n in fleet.enabled if n.instance_id not in leaving] if leaving else fleet.enabled
    )
    hot, floor = config.steer_cpu, config.steer_warm_cpu
    away: set[str] = set()
    warm: list[tuple[float, str]] = []
    # One pass: this runs over every node every round (a loop costs less here than a
    # comprehension for each set: most nodes of a busy fleet sit between the two).
    for n in steerable:
        if (m := n.metrics) is None:
            continue
        cpu = m.cpu
        if cpu >= hot:
            away.add(n.instance_id)
        elif cpu >= floor:
            warm.append((cpu, n.instance_id))
    spare = fleet.capacity - len(decision.drain) - max(keep, lower)
    if spare > 0:
        # Idle nodes are left open: an empty node drains, it does not need steering to empty.
        busy = emptiest_first(fleet, leaving | away | fleet.idle)
        away.update(n.instance_id for n in busy[:spare])
    if warm and config.steer_warm_share > 0:
        # The warmest, while fewer than steer_warm_share of the nodes (at least one) are
        # steered, hot ones and those being emptied counted first: the nodes kept open for
        # new meetings are the fullest, and they must stay open.
        room = max(1, math.floor(config.steer_warm_share * len(steerable))) - len(away)
        if room > 0:
            warm = sorted(entry for entry in warm if entry[1] not in away)
            away.update(iid for _, iid in warm[-room:])
    if steerable and len(away) == len(steerable):
        # Nowhere cooler to send them: Scalelite's own least-load rule spreads the wave best.
        # Steering all would also leave a node steered last looking the least loaded of all
        # until its next poll (updateServer leaves the stored load alone, so only creates and
        # joins raise it, app/models/server.rb:204-211), and it would take every meeting.
        away.clear()
    changes = []
    for n in steerable:
        server = n.server
        if server is None:
            continue
        want = high if n.instance_id in away else 1.0
        # isclose only when it differs at all: this loop runs over every node every round.
        current = server.load_multiplier
        if current != want and not math.isclose(current, want):
            changes.append((n.instance_id, want))
    return tuple(changes)
