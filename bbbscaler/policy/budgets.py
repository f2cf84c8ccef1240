"""Bounds on capacity, and how many nodes may start draining this round."""

from __future__ import annotations

from bbbscaler.model import FleetSnapshot, Node
from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.fleet import Fleet, emptiest_first
from bbbscaler.policy.history import History
from bbbscaler.policy.need import Need
from bbbscaler.schedule import scheduled_minimum


def bounds(
    snapshot: FleetSnapshot, config: PolicyConfig, now: float
) -> tuple[int, int, str | None]:
    """(lower, upper, open schedule window) for serving capacity and desired."""
    group = snapshot.group
    upper = min(group.max_size, config.max_nodes) if config.max_nodes else group.max_size
    scheduled, window = scheduled_minimum(config.windows, now, config.schedule_lead)
    lower = min(max(group.min_size, config.min_nodes, scheduled), upper)
    return lower, upper, window


def choose_drains(
    fleet: Fleet,
    need: Need,
    lower: int,
    config: PolicyConfig,
    history: History,
    now: float,
) -> tuple[tuple[str, ...], str]:
    """(nodes to start draining, "") — or ((), why none may)."""
    seed = config.preset == "seed"
    # seed: the write-up's cooldown after any change. default: only growth cools a scale-in;
    # each drain waiting out the last would let the fleet shrink one node per cooldown.
    if history.cooling(now, config.cooldown_in, since_growth=not seed):
        return (), "scale-in held: cooldown"
    # The budget bounds capacity lost to drains that take a while; an idle node's drain ends
    # in the next round (default preset).
    idle_ids = fleet.idle
    busy_draining = [n for n in fleet.draining if seed or n.instance_id not in idle_ids]
    budget = config.max_draining - len(busy_draining)
    # The lower bound counts nodes serving now: a booting one may never come up.
    surplus = min(fleet.capacity - max(need.keep, lower), len(fleet.serving) - lower)
    if surplus <= 0:
        return (), f"scale-in held: lower bound {lower}"
    # A drifted node first: its drain is a step of the rollout too. And while drifted nodes
    # still serve, the current ones a rollout will need in their place are not surplus:
    # draining a replacement the rollout just launched would only make it launch another.
    drifted = {n.instance_id for n in fleet.drifted}
    owed = sum(n.instance_id in drifted for n in fleet.serving) if config.drift_budget else 0
    current = max(0, surplus - owed)
    candidates = emptiest_first(fleet)
    if drifted:
        candidates = [n for n in candidates if n.instance_id in drifted] + [
            n for n in candidates if n.instance_id not in drifted
        ]
    if need.idle_only:
        candidates = [n for n in candidates if n.instance_id in idle_ids]
    if seed:
        picked = _within(candidates, drifted, current)[: max(0, min(budget, surplus))]
    else:
        idle: list[Node] = []
        occupied: list[Node] = []
        for n in candidates:
            (idle if n.instance_id in idle_ids else occupied).append(n)
        empty = _within(idle, drifted, current)[:surplus]
        current -= sum(n.instance_id not in drifted for n in empty)
        busy = _within(occupied, drifted, current)
        # A busy node's drain takes as long as its meetings: it keeps what the load needs
        # for longer (the forecast's hold).
        busy_surplus = min(surplus, fleet.capacity - max(need.keep_for_busy, lower))
        picked = empty + busy[: max(0, min(budget, busy_surplus - len(empty)))]
    chosen = tuple(n.instance_id for n in picked)
    if not chosen and budget <= 0:
        return (), f"scale-in held: {len(fleet.draining)} node(s) already draining"
    if not chosen:
        return (), "scale-in held: no idle node"
    return chosen, ""


def _within(nodes: list[Node], drifted: set[str], current: int) -> list[Node]:
    """``nodes`` in order, with at most ``current`` of those that did not drift."""
    kept: list[Node] = []
    for n in nodes:
        if n.instance_id not in drifted:
            if current <= 0:
                continue
            current -= 1
        kept.append(n)
    return kept
