"""decide(): the pure heart of bbbscaler, and the two presets it offers.

``decide(snapshot, history, config, now) -> Decision`` does no I/O and keeps no
state: what it needs from earlier rounds is in History, which the caller
extends with ``history.record(decision, now, config)``. The backtest calls the
same two functions on simulated snapshots.

The safety rules every preset obeys (property-tested in tests/test_policy_properties.py):

- It never lowers desired capacity with SetDesiredCapacity (that lets the ASG
  pick a victim); capacity only shrinks by terminating a node it drained.
- It terminates only a node it is draining whose fresh data says no meeting and
  no participant, and which Scalelite shows with no load (or disabled, or gone).
- Missing or stale data from any node, or an unreadable Scalelite, blocks every
  scale-in step of the round (new drains and terminations); scale-out still runs.
- Desired never exceeds the upper bound (policy max_nodes, the ASG's MaxSize);
  a drain never takes serving capacity below the lower bound (policy
  min_nodes, the ASG's MinSize, the open schedule windows).

Steering (default preset) changes only where Scalelite puts new meetings: it
sets a serving node's ``load_multiplier``, never a node's membership, so it is
outside these rules and cannot end a meeting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from bbbscaler.model import Action, Decision, FleetSnapshot, Node
from bbbscaler.schedule import Window, scheduled_minimum
from bbbscaler.settings import ScalerSettings

Preset = Literal["seed", "default"]

# Signal names kept in History.
OUT = "out"
IN = "in"


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The policy's knobs as plain values (see PolicySettings for their meaning)."""

    preset: Preset = "default"
    scale_out_after: float = 0.0
    scale_in_after: float = 600.0
    cooldown_out: float = 0.0
    """Seconds after a capacity change before a scale-out may follow."""
    cooldown_in: float = 300.0
    """Seconds after a capacity change before a scale-in may follow."""
    min_nodes: int = 0
    max_nodes: int = 0
    high_cpu: float = 0.80
    low_cpu: float = 0.06
    target_cpu: float = 0.70
    headroom: float = 0.15
    trend_window: float = 300.0
    lookahead: float = 300.0
    """Seconds ahead the demand trend is projected."""
    boot_time: float = 180.0
    boot_grace: float = 900.0
    stale_after: float = 60.0
    max_draining: int = 2
    windows: tuple[Window, ...] = ()
    steer_cpu: float = 0.50
    """Node CPU from which new meetings are steered away from the node."""
    steer_multiplier: float = 100.0
    """The load_multiplier of a steered node; 1 turns steering off."""
    gap_limit: float = 30.0
    """Samples further apart than this (missed rounds) break a "held for" run."""

    @classmethod
    def preset_values(cls, preset: Preset) -> PolicyConfig:
        """The preset's own timings (seed: the write-up's alarms and cooldown)."""
        if preset == "seed":
            return cls(
                preset="seed",
                scale_out_after=180.0,
                scale_in_after=900.0,
                cooldown_out=300.0,
                cooldown_in=300.0,
                max_draining=1,
            )
        return cls()

    @classmethod
    def from_settings(cls, s: ScalerSettings) -> PolicyConfig:
        p = s.policy
        base = cls.preset_values(p.preset)
        cooldown_out, cooldown_in = base.cooldown_out, base.cooldown_in
        if p.cooldown is not None:
            cooldown_in = p.cooldown
            # The default preset never waits to add capacity: it counts booting nodes instead.
            cooldown_out = p.cooldown if p.preset == "seed" else 0.0
        return replace(
            base,
            scale_out_after=(
                p.scale_out_after if p.scale_out_after is not None else base.scale_out_after
            ),
            scale_in_after=p.scale_in_after
            if p.scale_in_after is not None
            else base.scale_in_after,
            cooldown_out=cooldown_out,
            cooldown_in=cooldown_in,
            min_nodes=p.min_nodes,
            max_nodes=p.max_nodes,
            high_cpu=p.high_cpu,
            low_cpu=p.low_cpu,
            target_cpu=p.target_cpu,
            headroom=p.headroom,
            trend_window=p.trend_window,
            lookahead=p.lookahead,
            boot_time=p.boot_time,
            boot_grace=p.boot_grace,
            stale_after=s.metrics.stale_after,
            max_draining=p.max_draining if p.preset == "default" else 1,
            windows=tuple(Window.from_settings(w) for w in p.schedules),
            steer_cpu=p.steer_cpu,
            steer_multiplier=p.steer_multiplier,
            gap_limit=3 * s.loop.interval,
        )

    @property
    def horizon(self) -> float:
        """Seconds of history any rule looks back over."""
        return (
            max(self.scale_out_after, self.scale_in_after, self.trend_window, self.cooldown_in)
            + self.gap_limit
        )


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    signals: frozenset[str]
    demand: float | None


@dataclass(frozen=True, slots=True)
class History:
    """What decide() needs from earlier rounds."""

    samples: tuple[Sample, ...] = ()
    last_change_at: float | None = None
    """When a round last changed capacity (scale-out, undrain, or a new drain)."""
    last_growth_at: float | None = None
    """When a round last added capacity (scale-out, reconcile or undrain)."""

    def record(self, decision: Decision, now: float, config: PolicyConfig) -> History:
        """This history, with ``decision`` (made at ``now``) appended and old samples cut."""
        keep_from = now - config.horizon
        samples = tuple(s for s in self.samples if s.at >= keep_from)
        samples += (Sample(now, decision.signals, decision.demand),)
        grew = decision.desired is not None or bool(decision.undrain)
        return History(
            samples,
            now if grew or decision.drain else self.last_change_at,
            now if grew else self.last_growth_at,
        )

    def held_for(self, signal: str, now: float, gap_limit: float) -> float:
        """Seconds ``signal`` has held up to ``now`` (which counts as holding)."""
        since = prev = now
        for s in reversed(self.samples):
            if signal not in s.signals or prev - s.at > gap_limit:
                break
            since = prev = s.at
        return now - since

    def demand_since(self, start: float) -> tuple[float, float] | None:
        """(time, demand) of the oldest sample at or after ``start`` with a known demand."""
        for s in self.samples:
            if s.at >= start and s.demand is not None:
                return s.at, s.demand
        return None

    def cooling(self, now: float, cooldown: float, since_growth: bool = False) -> bool:
        """Within ``cooldown`` of the last capacity change (or only of the last growth)."""
        last = self.last_growth_at if since_growth else self.last_change_at
        return last is not None and now - last < cooldown


@dataclass(frozen=True, slots=True)
class Fleet:
    """The snapshot sorted into what the policy counts."""

    members: tuple[Node, ...]
    """In the group and staying (not leaving)."""
    serving: tuple[Node, ...]
    """Taking new meetings, or about to (not draining, not booting)."""
    booting: tuple[Node, ...]
    draining: tuple[Node, ...]
    blind: tuple[Node, ...]
    """Members whose meeting data is missing or stale."""
    pending_launches: int
    """Desired capacity the ASG has not turned into instances yet."""

    @property
    def capacity(self) -> int:
        """Nodes that will take new meetings once booted."""
        return len(self.serving) + len(self.booting) + self.pending_launches


def sort_fleet(snapshot: FleetSnapshot, config: PolicyConfig) -> Fleet:
    """Sort the snapshot's nodes into serving, booting, draining and blind."""
    now = snapshot.at
    members: list[Node] = []
    serving: list[Node] = []
    booting: list[Node] = []
    draining: list[Node] = []
    blind: list[Node] = []
    # One pass: membership tests on tuples of dataclasses compare field by field (O(n²)).
    for n in snapshot.nodes:
        if n.leaving:
            continue
        members.append(n)
        if n.draining:
            draining.append(n)
        elif n.booting(now, config.boot_grace):
            booting.append(n)
            continue
        else:
            serving.append(n)
        if not n.fresh(config.stale_after) or n.server is None:
            blind.append(n)
    pending = max(0, snapshot.group.desired - len(members))
    return Fleet(
        tuple(members), tuple(serving), tuple(booting), tuple(draining), tuple(blind), pending
    )


def drained(node: Node, config: PolicyConfig) -> bool:
    """Safe to terminate: fresh data says empty, and Scalelite sends it nothing."""
    server = node.server
    if not node.draining or not node.idle(config.stale_after) or server is None:
        return False
    if server.load:
        # Scalelite still counts meetings on it, whatever state it shows (or a NaN load).
        return False
    if server.state == "absent" or server.state == "disabled":
        return True
    return server.state == "cordoned" and server.load == 0


def _load_key(node: Node) -> tuple[int, int, float, str]:
    m = node.metrics
    if m is None:
        return (1 << 30, 1 << 30, 2.0, node.instance_id)
    return (m.meetings or 0, m.participants or 0, m.cpu, node.instance_id)


@dataclass(frozen=True, slots=True)
class _Need:
    """How many serving nodes the preset wants, and what it saw."""

    out: bool
    """Its scale-out condition holds this round."""
    inward: bool
    """Its scale-in condition holds this round."""
    wanted: int
    """Serving capacity wanted if it scales out now."""
    keep: int
    """Serving capacity it must keep if it scales in now."""
    numbers: dict[str, float]
    demand: float | None
    idle_only: bool
    """Only idle nodes may be drained (seed: "removing an idle node")."""


@dataclass(frozen=True, slots=True)
class _Cpu:
    """The serving nodes' CPU as far as it is seen."""

    lowest: float | None
    """Lowest CPU among serving nodes that report one."""
    demand: float | None
    """Sum of serving CPU, an unseen node counted at the mean of the seen ones;
    None when serving nodes exist but none is seen."""
    unseen: int
    """Serving nodes without metrics."""
    room: float | None
    """Sum of the room below ``target`` on serving nodes, an unseen node counted at the
    mean of the seen ones; None like ``demand``."""


def _cpu(fleet: Fleet, target: float) -> _Cpu:
    seen = [n.metrics.cpu for n in fleet.serving if n.metrics is not None]
    unseen = len(fleet.serving) - len(seen)
    if not seen:
        return _Cpu(None, None if unseen else 0.0, unseen, None if unseen else 0.0)
    total = sum(seen)
    room = sum(max(0.0, target - c) for c in seen)
    # Not "assume busy": nodes that stay unseen (a metrics outage, a broken exporter on new
    # instances) would then grow the fleet by a fraction every round, up to its max.
    return _Cpu(
        min(seen),
        total + unseen * total / len(seen),
        unseen,
        room + unseen * room / len(seen),
    )


def _seed(fleet: Fleet, config: PolicyConfig) -> _Need:
    cpu = _cpu(fleet, config.target_cpu)
    lowest = cpu.lowest
    out = lowest is not None and lowest > config.high_cpu
    inward = lowest is not None and lowest < config.low_cpu
    numbers = {"lowest_cpu": lowest if lowest is not None else -1.0}
    serving = fleet.capacity
    return _Need(out, inward, serving + 1, serving - 1, numbers, cpu.demand, idle_only=True)


def _default(
    fleet: Fleet, history: History, config: PolicyConfig, now: float, planned: bool
) -> _Need:
    cpu = _cpu(fleet, config.target_cpu)
    lowest = cpu.lowest
    numbers: dict[str, float] = {"lowest_cpu": lowest if lowest is not None else -1.0}
    if cpu.demand is None or cpu.room is None:
        # Nothing serving is seen: no basis to size on (bounds still apply, scale-in is blocked).
        return _Need(False, False, 0, fleet.capacity, numbers, None, idle_only=False)
    demand = cpu.demand
    rate = 0.0
    then = history.demand_since(now - config.trend_window)
    # A base much shorter than the window (just after a start) turns one meeting into a steep
    # trend; an imputed demand is no base for one either. Inside an open schedule window the
    # rise is the planned event its min_nodes already provides for: extrapolating it would
    # buy nodes that boot after the crowd has been placed.
    if (
        not planned
        and not cpu.unseen
        and then is not None
        and now - then[0] >= config.trend_window / 2
    ):
        rate = max(0.0, (demand - then[1]) / (now - then[0]))
    growth = rate * config.lookahead
    # Grow by room, not by the mean: meetings stay where Scalelite put them, so what the next
    # meetings need is room below the target on the nodes there are (a booting node is all
    # room), the headroom plus the growth expected before a new node could serve.
    room = cpu.room + (len(fleet.booting) + fleet.pending_launches) * config.target_cpu
    short = config.headroom + growth - room
    need = fleet.capacity + max(0, math.ceil(short / config.target_cpu - 1e-9))
    need = max(1, need)
    # Shrink by the mean: what the whole load needs at the target, with the same allowances.
    keep = max(1, math.ceil((demand + growth + config.headroom) / config.target_cpu - 1e-9))
    numbers |= {
        "demand": round(demand, 4),
        "trend_per_s": round(rate, 6),
        "projected": round(demand + growth, 4),
        "room": round(room, 4),
        "need": need,
        "keep": keep,
    }
    return _Need(
        out=need > fleet.capacity,
        # Only rounds that see every serving node count towards the stabilisation window.
        inward=keep < fleet.capacity and need <= fleet.capacity and not cpu.unseen,
        wanted=need,
        keep=keep,
        numbers=numbers,
        demand=None if cpu.unseen else demand,
        idle_only=False,
    )


def bounds(
    snapshot: FleetSnapshot, config: PolicyConfig, now: float
) -> tuple[int, int, str | None]:
    """(lower, upper, open schedule window) for serving capacity and desired."""
    group = snapshot.group
    upper = min(group.max_size, config.max_nodes) if config.max_nodes else group.max_size
    scheduled, window = scheduled_minimum(config.windows, now, config.boot_time)
    lower = min(max(group.min_size, config.min_nodes, scheduled), upper)
    return lower, upper, window


def decide(snapshot: FleetSnapshot, history: History, config: PolicyConfig, now: float) -> Decision:
    """One round's decision over ``snapshot``; pure."""
    fleet = sort_fleet(snapshot, config)
    lower, upper, window = bounds(snapshot, config, now)
    if config.preset == "seed":
        return _capacity(
            snapshot, history, config, now, fleet, _seed(fleet, config), lower, upper, window
        )
    need = _default(fleet, history, config, now, planned=window is not None)
    decision = _capacity(snapshot, history, config, now, fleet, need, lower, upper, window)
    steer = steering(fleet, need.keep, lower, config, decision)
    return replace(decision, steer=steer) if steer else decision


def steering(
    fleet: Fleet, keep: int, lower: int, config: PolicyConfig, decision: Decision
) -> tuple[tuple[str, float], ...]:
    """The load_multiplier changes that steer new meetings (default preset).

    Scalelite sends a meeting to the least load and only learns what it sent at its next poll,
    so between polls one node can take a whole wave. A node past ``steer_cpu`` gets
    ``steer_multiplier``: its next create, and every poll after, make it look full, yet
    Scalelite still uses it when every node is steered. The nodes beyond what the load needs
    (``keep``), the emptiest busy ones first, are steered too: with no new meetings they
    empty, and an empty node drains at once. The rest get 1.
    """
    high = config.steer_multiplier
    if high <= 1:
        return ()
    leaving = set(decision.drain) | set(decision.terminate)
    steerable = [n for n in _enabled(fleet, config) if n.instance_id not in leaving]
    away = {n.instance_id for n in steerable if n.metrics and n.metrics.cpu >= config.steer_cpu}
    spare = fleet.capacity - len(decision.drain) - max(keep, lower)
    if spare > 0:
        # Idle nodes are left open: an empty node drains, it does not need steering to empty.
        busy = [
            n for n in steerable if n.instance_id not in away and not n.idle(config.stale_after)
        ]
        away.update(n.instance_id for n in sorted(busy, key=_load_key)[:spare])
    changes = []
    for n in steerable:
        want = high if n.instance_id in away else 1.0
        if n.server is not None and not math.isclose(n.server.load_multiplier, want):
            changes.append((n.instance_id, want))
    return tuple(changes)


def _enabled(fleet: Fleet, config: PolicyConfig) -> list[Node]:
    """Serving nodes with fresh data that Scalelite has enabled: the ones a drain or a steer
    may pick. An operator's cordon (no tag) is never turned into a termination, and an
    unregistered node is not ours to judge."""
    return [
        n
        for n in fleet.serving
        if n.fresh(config.stale_after) and n.server is not None and n.server.state == "enabled"
    ]


def _capacity(
    snapshot: FleetSnapshot,
    history: History,
    config: PolicyConfig,
    now: float,
    fleet: Fleet,
    need: _Need,
    lower: int,
    upper: int,
    window: str | None,
) -> Decision:
    """Grow, shrink or reconcile the group (every preset)."""
    group = snapshot.group
    signals = frozenset(s for s, on in ((OUT, need.out), (IN, need.inward)) if on)
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
    blocked = _scale_in_blocker(snapshot, fleet)
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
            why = _out_reason(config, need, held_out)
    if wanted > fleet.capacity:
        grown = _grow(fleet, base, wanted, upper, why, decision)
        if grown is not None:
            return grown

    # 2. Shrink: finish drains, then start new ones.
    terminate = tuple(n.instance_id for n in fleet.draining if drained(n, config))
    # Terminating with decrement may not take desired below the ASG's MinSize.
    terminate = terminate[: max(0, group.desired - group.min_size)]
    if blocked and (terminate or (need.inward and held_in >= config.scale_in_after)):
        return replace(decision, action=Action.HOLD, reason=f"scale-in held: {blocked}")
    drain: tuple[str, ...] = ()
    drain_reason = ""
    if need.inward and held_in >= config.scale_in_after and not blocked:
        drain, drain_reason = _choose_drains(fleet, need, lower, config, history, now)
    if terminate or drain:
        action = Action.TERMINATE if terminate else Action.DRAIN
        parts = []
        if terminate:
            parts.append(f"terminate {len(terminate)} drained node(s)")
        if drain:
            parts.append(drain_reason)
        return replace(
            decision,
            action=action,
            reason="; ".join(parts),
            terminate=terminate,
            drain=drain,
        )
    if need.inward and held_in >= config.scale_in_after and drain_reason:
        decision = replace(decision, action=Action.HOLD, reason=drain_reason)

    # 3. Protection kept more instances than desired: own them, so the ASG does not pick.
    # Only a real raise: a no-op SetDesiredCapacity would restart the cooldown every round.
    reconciled = min(base, max(upper, group.desired))
    if reconciled > group.desired and decision.action is Action.NONE:
        return replace(
            decision,
            action=Action.RECONCILE,
            desired=reconciled,
            reason=f"{len(fleet.members)} instances but desired {group.desired}: raise desired",
        )
    return decision


def _out_reason(config: PolicyConfig, need: _Need, held: float) -> str:
    if config.preset == "seed":
        return (
            f"lowest CPU {need.numbers['lowest_cpu']:.2f} above {config.high_cpu:.2f} "
            f"for {held:.0f}s"
        )
    growth = need.numbers["projected"] - need.numbers["demand"]
    return (
        f"room {need.numbers['room']:.2f} below the {config.target_cpu:.0%} target short of "
        f"{config.headroom} headroom + {growth:.2f} growth: needs {need.wanted}"
    )


def _grow(
    fleet: Fleet, base: int, wanted: int, upper: int, why: str, decision: Decision
) -> Decision | None:
    """Undrain first (an enabled node serves at once), then launch the rest."""
    short = wanted - fleet.capacity
    # Emptiest first: the most room for new meetings.
    undrain = tuple(n.instance_id for n in sorted(fleet.draining, key=_load_key))[:short]
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


def _scale_in_blocker(snapshot: FleetSnapshot, fleet: Fleet) -> str:
    if not snapshot.scalelite_ok:
        return "Scalelite could not be read"
    if snapshot.errors:
        # E.g. EC2 failed and the last addresses and tags were reused: not this round's truth.
        return f"observation incomplete ({', '.join(snapshot.errors)})"
    if fleet.blind:
        ids = ", ".join(n.instance_id for n in fleet.blind[:3])
        return f"no fresh data from {len(fleet.blind)} node(s) ({ids})"
    listed = [n for n in fleet.members if n.server is not None and n.server.state != "absent"]
    if fleet.members and not listed and not fleet.booting:
        # Every node "absent" is far likelier a wrong server_url_template than a fleet
        # that never registered; "absent" must not read as "drained" then.
        return "no node found in Scalelite (check scalelite.server_url_template)"
    return ""


def _choose_drains(
    fleet: Fleet,
    need: _Need,
    lower: int,
    config: PolicyConfig,
    history: History,
    now: float,
) -> tuple[tuple[str, ...], str]:
    """(nodes to start draining, why) — or ((), why not)."""
    seed = config.preset == "seed"
    # seed: the write-up's cooldown after any change. default: only growth cools a scale-in;
    # each drain waiting out the last would let the fleet shrink one node per cooldown.
    if history.cooling(now, config.cooldown_in, since_growth=not seed):
        return (), "scale-in held: cooldown"
    stale = config.stale_after
    # The budget bounds capacity lost to drains that take a while; an idle node's drain ends
    # in the next round (default preset).
    busy_draining = [n for n in fleet.draining if seed or not n.idle(stale)]
    budget = config.max_draining - len(busy_draining)
    # The lower bound counts nodes serving now: a booting one may never come up.
    surplus = min(fleet.capacity - max(need.keep, lower), len(fleet.serving) - lower)
    if surplus <= 0:
        return (), f"scale-in held: lower bound {lower}"
    candidates = sorted(_enabled(fleet, config), key=_load_key)
    if need.idle_only:
        candidates = [n for n in candidates if n.idle(stale)]
    if seed:
        picked = candidates[: max(0, min(budget, surplus))]
    else:
        empty = [n for n in candidates if n.idle(stale)][:surplus]
        busy = [n for n in candidates if not n.idle(stale)]
        picked = empty + busy[: max(0, min(budget, surplus - len(empty)))]
    chosen = tuple(n.instance_id for n in picked)
    if not chosen and budget <= 0:
        return (), f"scale-in held: {len(fleet.draining)} node(s) already draining"
    if not chosen:
        return (), "scale-in held: no idle node"
    if config.preset == "seed":
        why = (
            f"lowest CPU {need.numbers['lowest_cpu']:.2f} below {config.low_cpu:.2f} "
            f"for {config.scale_in_after:.0f}s+: drain {len(chosen)} idle node(s)"
        )
    else:
        why = (
            f"{fleet.capacity} nodes where {need.keep} carry the load under "
            f"{config.target_cpu:.0%}: drain {len(chosen)} least-loaded node(s)"
        )
    return chosen, why
