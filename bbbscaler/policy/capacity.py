"""Grow, shrink or reconcile the group: the steps every preset shares.

The safety rules live here and in eligibility: desired is never lowered with
SetDesiredCapacity, only a drained node is terminated, anything unseen holds every
scale-in step, and the bounds hold.
"""

from __future__ import annotations

from dataclasses import replace

from bbbscaler.model import Action, Decision, FleetSnapshot
from bbbscaler.policy import default, forecast, seed
from bbbscaler.policy.budgets import choose_drains
from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.eligibility import drained, scale_in_blocker
from bbbscaler.policy.fleet import Fleet, load_key
from bbbscaler.policy.history import IN, OUT, History
from bbbscaler.policy.need import Need

_SIGNALS = {
    (out, inward): frozenset(s for s, on in ((OUT, out), (IN, inward)) if on)
    for out in (False, True)
    for inward in (False, True)
}
"""The signals a round records, by (scale-out condition, scale-in condition): made once."""


def plan_capacity(
    snapshot: FleetSnapshot,
    history: History,
    config: PolicyConfig,
    now: float,
    fleet: Fleet,
    need: Need,
    lower: int,
    upper: int,
    window: str | None,
) -> Decision:
    """Grow, shrink or reconcile the group (every preset)."""
    preset = {"seed": seed, "default": default, "forecast": forecast}[config.preset]
    group = snapshot.group
    signals = _SIGNALS[bool(need.out), bool(need.inward)]
    held_out = history.held_for(OUT, now, config.gap_limit) if need.out else 0.0
    held_in = history.held_for(IN, now, config.gap_limit) if need.inward else 0.0
    base = max(group.desired, len(fleet.members))
    numbers: dict[str, float] = {
        "desired": group.desired,
        "min": group.min_size,
        "max": group.max_size,
        "lower": lower,
        "upper": upper,
        "members": len(fleet.members),
        "serving": len(fleet.serving),
        "booting": len(fleet.booting) + fleet.pending_launches,
        "draining": len(fleet.draining),
        "operator_drained": len(fleet.operator_drained),
        "blind": len(fleet.blind),
        "capacity": fleet.capacity,
        "held_out_s": held_out,
        "held_in_s": held_in,
        **need.numbers,
    }
    decision = Decision(
        Action.NONE,
        "steady",
        numbers=numbers,
        signals=signals,
        demand=need.demand,
    )
    if window is not None:
        decision = replace(decision, reason=f"steady (schedule {window!r} holds {lower})")

    # 1. Grow: the preset's condition held long enough, or a bound is not met.
    wanted = 0
    why = ""
    if fleet.capacity < lower:
        wanted = lower
        why = f"capacity {fleet.capacity} below lower bound {lower}" + (
            f" (schedule {window!r})" if window else ""
        )
    if need.out and held_out >= config.scale_out_after:
        if history.cooling(now, config.cooldown_out):
            decision = replace(decision, action=Action.HOLD, reason="scale-out held: cooldown")
        elif need.wanted > wanted:
            wanted = need.wanted
            why = preset.out_reason(config, need, held_out)
    if wanted > fleet.capacity:
        grown = _grow(fleet, base, wanted, upper, why, decision)
        if grown is not None:
            return grown

    # 2. Shrink: finish drains, then start new ones.
    terminate = tuple(n.instance_id for n in fleet.draining if drained(n, config))
    # Terminating with decrement may not take desired below the ASG's MinSize.
    terminate = terminate[: max(0, group.desired - group.min_size)]
    due_in = need.inward and held_in >= config.scale_in_after
    # Asked only when a scale-in step would run (it reads every member: most rounds none).
    blocked = scale_in_blocker(snapshot, fleet) if terminate or due_in else ""
    if blocked:
        return replace(decision, action=Action.HOLD, reason=f"scale-in held: {blocked}")
    drain: tuple[str, ...] = ()
    held_why = ""
    if due_in and not blocked:
        drain, held_why = choose_drains(fleet, need, lower, config, history, now)
    if terminate or drain:
        action = Action.TERMINATE if terminate else Action.DRAIN
        parts = []
        if terminate:
            parts.append(f"terminate {len(terminate)} drained node(s)")
        if drain:
            parts.append(preset.drain_reason(config, need, fleet, len(drain)))
        return replace(
            decision,
            action=action,
            reason="; ".join(parts),
            terminate=terminate,
            drain=drain,
        )
    if due_in and held_why:
        decision = replace(decision, action=Action.HOLD, reason=held_why)

    # 3. Protection kept more instances than desired: own them, so the ASG does not pick.
    # Only a real raise: a no-op SetDesiredCapacity would restart the cooldown every round.
    reconciled = min(base, max(upper, group.desired))
    if reconciled > group.desired and decision.action is Action.NONE:
        converging = aws_converging(fleet)
        if converging:
            # Raising desired now would keep AWS's replacement and its victim both.
            return replace(
                decision,
                reason=f"{len(fleet.members)} instances but desired {group.desired}: "
                f"{converging}; left to AWS",
            )
        return replace(
            decision,
            action=Action.RECONCILE,
            desired=reconciled,
            reason=f"{len(fleet.members)} instances but desired {group.desired}: raise desired",
        )
    return decision


def _grow(
    fleet: Fleet, base: int, wanted: int, upper: int, why: str, decision: Decision
) -> Decision | None:
    """Undrain first (an enabled node serves at once), then launch the rest."""
    short = wanted - fleet.capacity
    # Emptiest first: the most room for new meetings; a drifted node last, it is to go.
    drifted = {n.instance_id for n in fleet.drifted}
    ordered = sorted(fleet.draining, key=lambda n: (n.instance_id in drifted, load_key(n)))
    undrain = tuple(n.instance_id for n in ordered)[:short]
    launch = max(0, short - len(undrain))
    desired = min(base + launch, upper)
    if desired > base:
        return replace(
            decision,
            action=Action.SCALE_OUT,
            desired=desired,
            undrain=undrain,
            reason=f"{why}: +{desired - base} node(s)"
            + (f", re-enable {len(undrain)} draining" if undrain else ""),
        )
    if undrain:
        return replace(
            decision,
            action=Action.UNDRAIN,
            undrain=undrain,
            reason=f"{why}: re-enable {len(undrain)} draining node(s)",
        )
    if launch:
        return replace(
            decision,
            action=Action.HOLD,
            reason=f"{why}, but the group is at its upper bound {upper}",
        )
    return None


def aws_converging(fleet: Fleet) -> str:
    """Why AWS brings the members back to desired capacity on its own, or "" when it cannot.

    AWS replaces instances by itself: a failed health check (launching the replacement first
    under an instance maintenance policy with MinHealthyPercentage 100, as cfn/fleet.yaml
    sets; health check replacement ignores scale-in protection: "Use instance scale-in
    protection", EC2 Auto Scaling User Guide) and AZ rebalancing, which "launches new
    instances before terminating the old ones" ("Rebalancing activities", same guide). For a
    while the group then holds more members than desired, and AWS ends the surplus itself,
    through the termination hook where bbbnode drains. Only when every member is InService,
    healthy and protected can AWS pick none ("Could not scale to desired capacity because
    all remaining instances are protected from scale in"): that surplus is the scaler's.
    """
    launching = sum(n.pending for n in fleet.members)
    unhealthy = sum(not n.healthy for n in fleet.members)
    pickable = sum(n.lifecycle == "InService" and not n.protected for n in fleet.members)
    parts = [
        f"{count} {what}"
        for count, what in (
            (launching, "launching"),
            (unhealthy, "unhealthy"),
            (pickable, "unprotected"),
        )
        if count
    ]
    return ", ".join(parts)
