"""Rollouts by drift: replace nodes launched from an older launch template through the drain.

A member is *drifted* when it was launched from another launch template or version than
the group launches from now (``Group.drifted``). As Karpenter replaces drifted nodes, the
policy replaces them through its own safe path, never through an instance refresh (which,
waiting for scale-in protected instances, fails after one hour: RefreshPreferences,
``ScaleInProtectedInstances``, Amazon EC2 Auto Scaling API Reference):

1. the drifted candidates are the serving ones Scalelite has enabled, with fresh data,
   emptiest first, as many as the budget leaves: ``max(1, drift_budget * members)``
   drifted nodes draining at once;
2. replacement capacity first: the preset's own need is asked of the fleet without the
   candidates (booting nodes and pending launches count, as they do for growth); when it
   (or the lower bound) wants more, desired grows by that much and nothing is cordoned;
3. once the fleet without them still meets the preset's need and the lower bound with
   the nodes that *serve* (booting ones do not take meetings yet), and the preset's
   cooldowns allow, the candidates start draining: tagged, cordoned, left until their
   meetings end;
4. a drained node is terminated by the usual step, after the usual re-check.

A rollout never competes with a scale-out, a re-enable or the preset's own drains, and
anything unseen holds it like any other scale-in step. A scale-out whose condition holds
but is not yet due does not hold it: step 2 sizes the replacement from that need, so a
rollout round launches the pending growth with the replacement, and step 3 drains
nothing while the need is unmet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from bbbscaler.model import Action, Decision, FleetSnapshot, Node
from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.eligibility import scale_in_blocker
from bbbscaler.policy.fleet import Fleet, load_key
from bbbscaler.policy.history import History
from bbbscaler.policy.need import Need

NeedOf = Callable[[Fleet], Need]
"""The preset's need, asked of another fleet (the same history, config and time)."""


def budget(fleet: Fleet, config: PolicyConfig) -> int:
    """Drifted nodes that may drain at once; 0 when rollouts are off."""
    if config.drift_budget <= 0:
        return 0
    return max(1, math.floor(config.drift_budget * len(fleet.members) + 1e-9))


def without(fleet: Fleet, nodes: list[Node], serving_only: bool) -> Fleet:
    """``fleet`` less ``nodes``; with ``serving_only`` also less what does not serve yet."""
    gone = {n.instance_id for n in nodes}
    if serving_only:
        gone.update(n.instance_id for n in fleet.booting)
    return replace(
        fleet,
        members=tuple(n for n in fleet.members if n.instance_id not in gone),
        serving=tuple(n for n in fleet.serving if n.instance_id not in gone),
        booting=() if serving_only else fleet.booting,
        pending_launches=0 if serving_only else fleet.pending_launches,
        drifted=tuple(n for n in fleet.drifted if n.instance_id not in gone),
        enabled=tuple(n for n in fleet.enabled if n.instance_id not in gone),
    )


def _short(fleet: Fleet, need_of: NeedOf, lower: int) -> int:
    """Nodes ``fleet`` lacks for the preset's need and the lower bound (0: none)."""
    need = need_of(fleet)
    short = need.wanted - fleet.capacity if need.out else 0
    return max(short, lower - fleet.capacity, 0)


def replace_drifted(
    snapshot: FleetSnapshot,
    history: History,
    config: PolicyConfig,
    now: float,
    fleet: Fleet,
    need_of: NeedOf,
    lower: int,
    upper: int,
    decision: Decision,
) -> Decision:
    """``decision`` with this round's rollout step added (see the module's docstring)."""
    if not fleet.drifted:
        return decision
    allowed = budget(fleet, config)
    draining = sum(n.draining for n in fleet.drifted)
    decision = replace(
        decision,
        drifted=tuple(n.instance_id for n in fleet.drifted),
        numbers={**decision.numbers, "drifted": len(fleet.drifted), "drift_budget": allowed},
    )
    # The preset's own steps come first; a scale-in hold (cooldown, lower bound) is no step.
    # A scale-out not yet due (its delay or cooldown running) is none either: the growth
    # below is sized from the same need, so the replacement brings that growth with it.
    # Holding the rollout instead would let a forecast of demand launch less this round
    # than a forecast of none (the forecast may only add capacity or hold it).
    quiet = (
        decision.desired is None
        and not decision.undrain
        and not decision.drain
        and fleet.capacity >= lower
    )
    if not quiet or draining >= allowed:
        return decision
    blocked = scale_in_blocker(snapshot, fleet)
    if blocked:
        # The preset says it already when a scale-in of its own was due.
        return decision if blocked in decision.reason else _held(decision, f"drift: {blocked}")
    ids = {n.instance_id for n in fleet.drifted}
    candidates = sorted((n for n in fleet.enabled if n.instance_id in ids), key=load_key)
    candidates = candidates[: allowed - draining]
    if not candidates:
        return decision
    what = _what(snapshot, candidates)

    # Replacement capacity first: what the fleet without them lacks, booting nodes counted.
    grow = _short(without(fleet, candidates, serving_only=False), need_of, lower)
    if grow:
        if decision.terminate:
            return decision  # growth waits for the next round; terminations go first
        if history.cooling(now, config.cooldown_out):
            return _held(decision, f"drift: {what}: replacement held: cooldown")
        group = snapshot.group
        base = max(group.desired, len(fleet.members))
        desired = min(base + grow, upper)
        if desired > base:
            return replace(
                decision,
                action=Action.SCALE_OUT,
                desired=desired,
                replacing=tuple(n.instance_id for n in candidates),
                reason=f"drift: {what}: +{desired - base} node(s) to replace them first",
            )

    # The preset's scale-in cooldown holds these drains too (seed: after any change).
    if history.cooling(now, config.cooldown_in, since_growth=config.preset != "seed"):
        return _held(decision, f"drift: {what}: drain held: cooldown")
    # Drain as many as the fleet that serves can do without (removing more never helps).
    low, high = 0, len(candidates)
    while low < high:
        mid = (low + high + 1) // 2
        if _short(without(fleet, candidates[:mid], serving_only=True), need_of, lower):
            high = mid - 1
        else:
            low = mid
    chosen = tuple(n.instance_id for n in candidates[:low])
    if chosen:
        said = f"drift: {what}: drain {len(chosen)} node(s)"
    elif grow:
        said = f"drift: {what}: held, the group is at its upper bound {upper}"
    else:
        said = f"drift: {what}: waiting for the replacement capacity to serve"
    if not chosen:
        return _held(decision, said)
    action = Action.TERMINATE if decision.action is Action.TERMINATE else Action.DRAIN
    steady = decision.action is Action.NONE
    return replace(
        decision,
        action=action,
        drain=chosen,
        replacing=chosen,
        reason=said if steady else f"{decision.reason}; {said}",
    )


def _held(decision: Decision, said: str) -> Decision:
    """``decision``, saying why the rollout did not step (a hold, unless it does more)."""
    if decision.action is Action.NONE:
        return replace(decision, action=Action.HOLD, reason=said)
    return replace(decision, reason=f"{decision.reason}; {said}")


def _what(snapshot: FleetSnapshot, candidates: list[Node]) -> str:
    launch = snapshot.group.launch
    olds = sorted({str(n.launch) for n in candidates})
    return f"{len(candidates)} node(s) launched from {', '.join(olds)}, not {launch}"
