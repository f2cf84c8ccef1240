"""Property tests of decide(): the safety rules hold for any fleet, and `seed` is the seed text.

Arbitrary fleets (lifecycle states, metrics present, absent or stale, meetings, drain tags,
Scalelite states, loads and load multipliers, group numbers including desired above max,
histories) go through decide(); each safety rule is checked on its own, written out here
from the rules' text rather than from the policy's helpers; so are the default preset's
steering (load multipliers) and its scale-in cooldown and trend rules. A state machine
then follows nodes from drain to termination over many rounds of a toy fleet (steering
applied), and an oracle written from the seed text alone is compared with the `seed`
preset over generated CPU histories.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from bbbscaler.model import (
    LEAVING_STATES,
    PENDING_STATES,
    Action,
    Decision,
    FleetSnapshot,
    Group,
    Launch,
    Node,
    NodeMetrics,
    ServerState,
    ServerView,
)
from bbbscaler.policy import (
    IN,
    OUT,
    FleetMemo,
    Forecast,
    History,
    PolicyConfig,
    Preset,
    Sample,
    decide,
    sort_fleet,
)
from bbbscaler.policy.fleet import emptiest_first
from bbbscaler.schedule import Window, scheduled_minimum
from tests.scaler_fleets import T0

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the rules, written out from their text ------------------------------------------------


def member(n: Node) -> bool:
    return n.lifecycle not in LEAVING_STATES


def offline(n: Node) -> bool:
    """Scalelite lists its server offline (poll.rake:93-118)."""
    return n.server is not None and n.server.state != "absent" and not n.server.online


def other_tag(n: Node, config: PolicyConfig) -> bool:
    """Its server has another Scalelite tag than the fleet's (scalelite.tag), not draining."""
    s = n.server
    return (
        n.draining_since is None
        and s is not None
        and s.state != "absent"
        and (s.tag or None) != config.tag
    )


def booting(n: Node, now: float, config: PolicyConfig) -> bool:
    """docs/scaler.md: Pending*, or InService, launched less than boot_grace ago, with
    nothing on it yet: no metrics and not enabled in Scalelite, or enabled but not yet read
    by Scalelite's poller (offline) and without a meeting."""
    if n.lifecycle in PENDING_STATES:
        return True
    if (
        n.lifecycle != "InService"
        or n.launched_at is None
        or now - n.launched_at >= config.boot_grace
    ):
        return False
    if n.server is not None and n.server.state == "enabled":
        return offline(n) and (n.metrics is None or not n.metrics.meetings)
    return n.metrics is None


def knows_meetings(n: Node, config: PolicyConfig) -> bool:
    m = n.metrics
    return (
        m is not None
        and m.meetings is not None
        and m.participants is not None
        and m.age <= config.stale_after
    )


def missing_data(snap: FleetSnapshot, config: PolicyConfig) -> bool:
    """Some node that should be seen is not: stale or missing data, or no Scalelite."""
    if not snap.scalelite_ok:
        return True
    ours = [n for n in snap.nodes if member(n) and not other_tag(n, config)]
    # An offline server is read like missing data, booting or not (issue 13).
    return any(offline(n) for n in ours) or any(
        not booting(n, snap.at, config) and (not knows_meetings(n, config) or n.server is None)
        for n in ours
    )


def upper_bound(group: Group, config: PolicyConfig) -> int:
    return min(group.max_size, config.max_nodes) if config.max_nodes else group.max_size


def lower_bound(snap: FleetSnapshot, config: PolicyConfig) -> int:
    scheduled, _ = scheduled_minimum(config.windows, snap.at, config.schedule_lead)
    wanted = max(snap.group.min_size, config.min_nodes, scheduled)
    return min(wanted, upper_bound(snap.group, config))


def drifted(snap: FleetSnapshot, n: Node) -> bool:
    """docs/scaler.md: launched from another launch template or version than the group
    launches from now, both known."""
    return (
        member(n)
        and snap.group.launch is not None
        and n.launch is not None
        and n.launch != snap.group.launch
    )


def drift_budget(snap: FleetSnapshot, config: PolicyConfig) -> int:
    """max(1, drift_budget x members, rounded down); 0 with rollouts off."""
    if config.drift_budget <= 0:
        return 0
    return max(1, math.floor(config.drift_budget * sum(member(n) for n in snap.nodes) + 1e-9))


def cordoned_by_operator(n: Node, now: float, config: PolicyConfig) -> bool:
    """docs/scaler.md: no drain tag, Scalelite shows it cordoned, or disabled unless it is a
    registration in progress (never polled online, launched less than boot_grace ago)."""
    s = n.server
    if s is None or n.draining_since is not None or s.state not in ("cordoned", "disabled"):
        return False
    registering = (
        s.state == "disabled"
        and not s.online
        and n.launched_at is not None
        and now - n.launched_at < config.boot_grace
    )
    return not registering


def operator_drained(snap: FleetSnapshot, config: PolicyConfig) -> list[Node]:
    """Members someone else cordoned (not booting, with the fleet's tag): meetings, but no
    capacity."""
    return [
        n
        for n in snap.nodes
        if member(n)
        and not other_tag(n, config)
        and not booting(n, snap.at, config)
        and cordoned_by_operator(n, snap.at, config)
    ]


def serving_now(snap: FleetSnapshot, config: PolicyConfig) -> list[Node]:
    """Members taking this fleet's meetings: not draining, not booting, not cordoned by an
    operator, not offline in Scalelite, and with the fleet's tag."""
    return [
        n
        for n in snap.nodes
        if member(n)
        and n.draining_since is None
        and not other_tag(n, config)
        and not booting(n, snap.at, config)
        and not cordoned_by_operator(n, snap.at, config)
        and not offline(n)
    ]


# --- the checks, one a rule ----------------------------------------------------------------

Check = Callable[[FleetSnapshot, PolicyConfig, Decision], None]


def check_terminations(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    """Terminate only a node the scaler drains, whose fresh data says empty and whose
    Scalelite server has no load."""
    nodes = {n.instance_id: n for n in snap.nodes}
    assert len(set(d.terminate)) == len(d.terminate)
    for iid in d.terminate:
        n = nodes[iid]
        assert member(n), iid
        assert n.draining_since is not None, f"{iid}: not the scaler's drain"
        assert knows_meetings(n, config), f"{iid}: missing or stale data"
        assert n.metrics is not None
        assert n.metrics.meetings == 0, f"{iid}: meetings"
        assert n.metrics.participants == 0, f"{iid}: participants"
        s = n.server
        assert s is not None, f"{iid}: Scalelite unknown"
        assert s.state == "absent" or s.online, f"{iid}: offline in Scalelite"
        assert s.load is None or s.load == 0, f"{iid}: Scalelite load {s.load}"
        assert s.state in ("disabled", "absent") or (s.state == "cordoned" and s.load == 0)


def check_blind_rounds(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    """Any stale or missing data, or Scalelite unread: no drain, no termination."""
    if missing_data(snap, config):
        assert d.drain == ()
        assert d.terminate == ()


def check_desired(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    """Never lowered, never a no-op, never raised above the upper bound."""
    if d.desired is not None:
        assert d.desired > snap.group.desired
        assert d.desired <= upper_bound(snap.group, config)


def idle(n: Node, config: PolicyConfig) -> bool:
    """Fresh data says no meeting and no participant."""
    m = n.metrics
    return knows_meetings(n, config) and m is not None and m.meetings == m.participants == 0


def drain_candidate(n: Node, config: PolicyConfig) -> bool:
    return knows_meetings(n, config) and n.server is not None and n.server.state == "enabled"


def check_drains(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    """Drains: serving, fresh, Scalelite-enabled nodes; budget; lower bound in serving nodes.

    The budget (max_draining) bounds drains that take a while: seed counts every node
    draining, default only busy ones (new busy drains and busy nodes already draining), and
    drains idle nodes first, beyond it."""
    serving = {n.instance_id: n for n in serving_now(snap, config)}
    assert len(set(d.drain)) == len(d.drain)
    # A rollout's drains have their own budget (check_drift); the rest here is the preset's.
    rollout = set(d.replacing)
    for iid in d.drain:
        n = serving[iid]
        assert knows_meetings(n, config)
        assert n.server is not None
        assert n.server.state == "enabled"
        if config.preset == "seed" and iid not in rollout:
            assert n.metrics is not None
            assert (n.metrics.meetings, n.metrics.participants) == (0, 0)
    if d.drain:
        assert len(serving) - len(d.drain) >= lower_bound(snap, config)
        tagged = [n for n in snap.nodes if member(n) and n.draining_since is not None]
        owed = config.drift_budget > 0 and any(drifted(snap, n) for n in serving.values())
        if rollout:
            pass  # check_drift
        elif config.preset == "seed":
            assert len(tagged) + len(d.drain) <= config.max_draining
        else:
            new_busy = [iid for iid in d.drain if not idle(serving[iid], config)]
            if new_busy:
                busy_tagged = [n for n in tagged if not idle(n, config)]
                assert len(busy_tagged) + len(new_busy) <= config.max_draining
                # Idle nodes first: a busy drain only once every idle candidate drains
                # (while drifted nodes serve, a current node may be kept for their place).
                for n in serving.values():
                    if idle(n, config) and drain_candidate(n, config):
                        kept = owed and not drifted(snap, n)
                        assert kept or n.instance_id in d.drain, f"{n.instance_id}: idle"
        assert d.desired is None
        assert d.undrain == ()


def check_drift(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    """Rollouts: only drifted members are replaced; a round grows for them or drains them,
    not both; the drifted nodes draining never exceed the budget; a drain for a rollout is
    the round's only drain; with rollouts off nothing is replaced."""
    nodes = {n.instance_id: n for n in snap.nodes}
    assert set(d.drifted) == {n.instance_id for n in snap.nodes if drifted(snap, n)}
    if not d.replacing:
        return
    assert drift_budget(snap, config) > 0
    for iid in d.replacing:
        assert drifted(snap, nodes[iid]), f"{iid}: replaced, not drifted"
    if d.desired is not None:
        assert d.drain == ()
        return
    assert set(d.drain) == set(d.replacing)
    for iid in d.drain:
        assert drain_candidate(nodes[iid], config)
    tagged = [n for n in snap.nodes if drifted(snap, n) and n.draining_since is not None]
    assert len(tagged) + len(d.drain) <= drift_budget(snap, config)


def check_min_size(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    """Terminations (each decrements desired) never take desired below MinSize."""
    if d.terminate:
        assert snap.group.desired - len(d.terminate) >= snap.group.min_size


def check_undrain(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    tagged = {n.instance_id for n in snap.nodes if member(n) and n.draining_since is not None}
    assert set(d.undrain) <= tagged
    assert not set(d.undrain) & set(d.terminate)


def load_key(n: Node) -> tuple[int, int, float, str]:
    """Emptiest first: fewest meetings, then participants, then CPU (fresh data only)."""
    assert n.metrics is not None
    assert n.metrics.meetings is not None
    assert n.metrics.participants is not None
    return (n.metrics.meetings, n.metrics.participants, n.metrics.cpu, n.instance_id)


def capacity_by_text(snap: FleetSnapshot, config: PolicyConfig) -> int:
    """Serving and booting members, and launches the ASG has not made yet."""
    members = [n for n in snap.nodes if member(n)]
    booted = [n for n in members if not other_tag(n, config) and booting(n, snap.at, config)]
    return (
        len(serving_now(snap, config))
        + sum(n.draining_since is None for n in booted)
        + max(0, snap.group.desired - len(members))
    )


def check_operator_drains(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    """A node an operator cordoned is never re-enabled, drained, steered nor terminated by
    the scaler, and is no capacity."""
    for n in operator_drained(snap, config):
        iid = n.instance_id
        assert iid not in d.undrain, f"{iid}: operator's drain re-enabled"
        assert iid not in d.drain, f"{iid}: operator's drain taken over"
        assert iid not in d.terminate, f"{iid}: operator's drain terminated"
        assert iid not in dict(d.steer), f"{iid}: operator's drain steered"
    assert d.numbers["capacity"] == capacity_by_text(snap, config)
    assert d.numbers["serving"] == len(serving_now(snap, config))
    assert d.numbers["operator_drained"] == len(operator_drained(snap, config))


def check_steer(snap: FleetSnapshot, config: PolicyConfig, d: Decision) -> None:
    """Steering (default, steer_multiplier > 1): only serving members with an enabled server
    and fresh data, not drained or terminated this round; each value 1 or steer_multiplier,
    never the node's current one. After it, a node at steer_cpu or above is steered, and of
    the others the emptiest busy ones up to the spare capacity, then the warmest past
    steer_warm_cpu while fewer than steer_warm_share of the nodes are; every other one is
    at 1.
    But never all of them: then every one is at 1 (Scalelite multiplies a stored load only
    at its next poll, so the node steered last would take every meeting until then)."""
    high = config.steer_multiplier
    if config.preset == "seed" or high <= 1:
        assert d.steer == ()
        return
    serving = {n.instance_id: n for n in serving_now(snap, config)}
    ids = [iid for iid, _ in d.steer]
    assert len(set(ids)) == len(ids)
    for iid, value in d.steer:
        assert iid in serving, f"{iid}: not a serving member"
        n = serving[iid]
        assert knows_meetings(n, config), f"{iid}: missing or stale data"
        assert n.server is not None
        assert n.server.state == "enabled", f"{iid}: {n.server.state}"
        assert iid not in d.drain, f"{iid}: drained this round"
        assert iid not in d.terminate
        assert value == 1.0 or value == high, value
        assert not math.isclose(value, n.server.load_multiplier), f"{iid}: no change"
    # Where the multipliers stand once the steer is carried out.
    steerable = [
        n for n in serving.values() if drain_candidate(n, config) and n.instance_id not in d.drain
    ]
    after = {
        n.instance_id: dict(d.steer).get(
            n.instance_id, n.server.load_multiplier if n.server is not None else 1.0
        )
        for n in steerable
    }
    hot = {
        n.instance_id
        for n in steerable
        if n.metrics is not None and n.metrics.cpu >= config.steer_cpu
    }
    if steerable and all(math.isclose(v, high) for v in after.values()):
        raise AssertionError("every serving node steered away")
    if steerable and all(math.isclose(v, 1.0) for v in after.values()) and hot:
        return  # all would have been steered: none is
    for iid in hot:
        assert math.isclose(after[iid], high), f"{iid}: hot, not steered"
    rest = [n for n in steerable if n.instance_id not in hot]
    for n in rest:
        assert math.isclose(after[n.instance_id], 1.0) or math.isclose(after[n.instance_id], high)
    capacity = capacity_by_text(snap, config)
    # What steering keeps open: the preset's keep (default), the nodes the forecast holds
    # for busy ones, or, where the forecast falls, what it needs later and one more.
    said = d.numbers
    keep = int(said.get("steer_keep", said.get("keep_busy", said.get("keep", capacity))))
    spare = capacity - len(d.drain) - max(keep, lower_bound(snap, config))
    busy = sorted((n for n in rest if not idle(n, config)), key=load_key)
    chosen = {n.instance_id for n in busy[: max(0, spare)]}
    # Then the warmest past steer_warm_cpu, while fewer than steer_warm_share of the
    # steerable (at least one) are steered, the hot and the spare ones counted first.
    if config.steer_warm_share > 0:
        cap = max(1, math.floor(config.steer_warm_share * len(steerable)))
        band = sorted(
            (
                (n.metrics.cpu, n.instance_id)
                for n in rest
                if n.instance_id not in chosen
                and n.metrics is not None
                and n.metrics.cpu >= config.steer_warm_cpu
            ),
            reverse=True,
        )
        chosen |= {iid for _, iid in band[: max(0, cap - len(hot | chosen))]}
    if steerable and len(hot | chosen) == len(steerable):
        chosen = set()  # all would have been steered: none is (checked above when hot)
        assert all(math.isclose(v, 1.0) for v in after.values())
        return
    for n in rest:
        want = high if n.instance_id in chosen else 1.0
        assert math.isclose(after[n.instance_id], want), (n.instance_id, spare, want)


CHECKS: tuple[Check, ...] = (
    check_terminations,
    check_blind_rounds,
    check_desired,
    check_drains,
    check_min_size,
    check_undrain,
    check_steer,
    check_drift,
    check_operator_drains,
)

# --- arbitrary fleets ----------------------------------------------------------------------

LIFECYCLES = st.sampled_from(
    ["InService"] * 6 + sorted(PENDING_STATES)[:2] + ["Terminating:Wait", "Standby", "Detaching"]
)
STATES: st.SearchStrategy[ServerState] = st.sampled_from(
    ["enabled", "cordoned", "disabled", "absent"]
)
PRESETS: st.SearchStrategy[Preset] = st.sampled_from(["seed", "default", "forecast"])
COUNTS = st.sampled_from([0, 0, 0, 1, 3, None])
AGES = st.sampled_from([0.0, 5.0, 60.0, 60.5, 400.0])
LOADS = st.sampled_from([0.0, 0.0, 1.0, 2.5, None])
MULTIPLIERS = st.sampled_from([1.0, 1.0, 1.0, 10.0, 100.0])
"""Scalelite's load_multiplier as an earlier round (or an operator) left it."""
ONLINE = st.sampled_from([True] * 9 + [False])
SERVER_TAGS = st.sampled_from([None] * 6 + ["exam"])
FLEET_TAGS = st.sampled_from([None] * 4 + ["exam"])
DRAIN_ENDS: st.SearchStrategy[tuple[ServerState, float | None]] = st.sampled_from(
    [
        ("cordoned", 0.0),
        ("cordoned", None),
        ("cordoned", 1.0),
        ("disabled", None),
        ("disabled", 2.0),
        ("absent", None),
        ("enabled", 0.0),
    ]
)
"""Where a drain may stand in Scalelite, the edges included."""
CURRENT = Launch("lt-0a", "4")
LAUNCHES = st.sampled_from(
    [CURRENT, CURRENT, Launch("lt-0a", "3"), Launch("lt-0b", "1"), Launch("lc:old"), None]
)
"""What a node was launched from: mostly the current version, now and then an older one,
another template or configuration, or unknown."""
GROUP_LAUNCHES = st.sampled_from([CURRENT, CURRENT, CURRENT, None])


@st.composite
def fleet_nodes(draw: st.DrawFn, iid: str, mode: str, untagged: int) -> Node:
    """One node. ``clean``, ``quiet`` and ``busy`` give fresh, complete data and a known
    server, so that scale-in gets a chance; ``quiet`` also little load, so that it wants
    one, ``busy`` much. One node in ``untagged + 1`` carries the scaler's drain tag."""
    tag = draw(st.sampled_from([None] * untagged + [T0 - 300]))
    if mode != "messy":
        cpu = {"quiet": st.floats(0, 0.1), "busy": st.floats(0.6, 1)}.get(mode, st.floats(0, 1))
        # A tagged node is mostly empty by now: terminations get their chance.
        zeros = 3 if tag is None else 8
        metrics: NodeMetrics | None = NodeMetrics(
            draw(cpu),
            draw(st.sampled_from([0] * zeros + [1, 3])),
            draw(st.sampled_from([0] * zeros + [2])),
            draw(st.sampled_from([0.0, 10.0, 60.0])),
        )
        state, load = draw(st.tuples(STATES, LOADS) if tag is None else DRAIN_ENDS)
        server: ServerView | None = ServerView(
            iid, state, load, draw(ONLINE), draw(MULTIPLIERS), draw(SERVER_TAGS)
        )
        lifecycle = draw(st.sampled_from(["InService"] * 8 + ["Pending", "Terminating"]))
    else:
        metrics = draw(st.none() | st.builds(NodeMetrics, st.floats(0, 1), COUNTS, COUNTS, AGES))
        server = draw(
            st.none()
            | st.builds(
                ServerView, st.just(iid), STATES, LOADS, st.booleans(), MULTIPLIERS, SERVER_TAGS
            )
        )
        lifecycle = draw(LIFECYCLES)
    return Node(
        iid,
        lifecycle,
        healthy=draw(st.booleans()),
        protected=draw(st.booleans()),
        launched_at=draw(st.sampled_from([None, T0 - 30, T0 - 600, T0 - 5000])),
        draining_since=tag,
        metrics=metrics,
        server=server,
        launch=draw(LAUNCHES),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> FleetSnapshot:
    mode = draw(st.sampled_from(["clean", "quiet", "busy", "messy"]))
    count = draw(st.integers(0, 10))
    untagged = draw(st.sampled_from([1, 2, 6, 12]))
    nodes = tuple(draw(fleet_nodes(f"i-{k:02d}", mode, untagged)) for k in range(count))
    min_size = draw(st.sampled_from([0, 0, 1, count // 2, count + 1]))
    max_size = draw(st.integers(min_size, count + 4))
    # Desired anywhere, including above max and below the instance count.
    desired = draw(st.integers(0, count + 5))
    # The flag alone (servers still known from the last read) blocks scale-in too.
    scalelite_ok = draw(st.booleans() if mode == "messy" else st.sampled_from([True] * 5 + [False]))
    if not scalelite_ok and draw(st.booleans()):
        nodes = tuple(dataclasses.replace(n, server=None) for n in nodes)
    group = Group("bbb", desired, min_size, max_size, launch=draw(GROUP_LAUNCHES))
    return FleetSnapshot(T0, group, nodes, scalelite_ok=scalelite_ok)


@st.composite
def histories(draw: st.DrawFn) -> History:
    """Runs of signals back from T0, with rounds 5 s to 2 min apart (gaps break runs)."""
    samples: list[Sample] = []
    t = T0
    segments = draw(
        st.lists(
            st.tuples(
                st.frozensets(st.sampled_from([OUT, IN])),
                st.integers(1, 100),
                st.sampled_from([5.0, 10.0, 10.0, 31.0, 120.0]),
                st.none() | st.floats(0, 12),
            ),
            max_size=3,
        )
    )
    for signals, rounds, step, demand in segments:
        for _ in range(rounds):
            t -= step
            samples.append(Sample(t, signals, demand))
    times = st.sampled_from([None, None, None, T0 - 10, T0 - 299, T0 - 300, T0 - 2000])
    last_change = draw(times)
    # The last growth is a change too: never after the last change.
    last_growth = draw(times) if last_change is not None else None
    if last_growth is not None and last_change is not None and last_growth > last_change:
        last_growth, last_change = last_change, last_growth
    return History(tuple(reversed(samples)), last_change, last_growth)


@st.composite
def configs(draw: st.DrawFn, presets: st.SearchStrategy[Preset] = PRESETS) -> PolicyConfig:
    preset = draw(presets)
    base = PolicyConfig.preset_values(preset)
    windows: tuple[Window, ...] = ()
    if draw(st.integers(0, 3)) == 0:
        # T0 is midnight UTC: 00:00-00:00 is open all day, 00:03 opens within the boot-time
        # lead, 23:00-00:30 is yesterday's running past midnight, 10:00-11:00 is closed.
        start, end = draw(st.sampled_from([(0, 0), (3, 60), (600, 660), (1380, 30)]))
        windows = (Window("w", frozenset(range(7)), start, end, "UTC", draw(st.integers(0, 8))),)
    return dataclasses.replace(
        base,
        min_nodes=draw(st.sampled_from([0, 0, 0, 1, 2, 6])),
        max_nodes=draw(st.integers(0, 10)),
        headroom=draw(st.sampled_from([0.0, 0.5, 1.5])),
        boot_grace=draw(st.sampled_from([60.0, 900.0])),
        scale_in_after=draw(st.sampled_from([0.0, 0.0, base.scale_in_after])),
        max_draining=base.max_draining if preset == "seed" else draw(st.integers(1, 3)),
        windows=windows,
        steer_cpu=draw(st.sampled_from([base.steer_cpu, base.steer_cpu, 0.05, 0.9])),
        steer_warm_cpu=draw(st.sampled_from([base.steer_warm_cpu] * 2 + [0.02, 0.95])),
        steer_warm_share=draw(st.sampled_from([base.steer_warm_share] * 2 + [0.0, 1.0])),
        steer_multiplier=draw(st.sampled_from([base.steer_multiplier] * 3 + [10.0, 1.0])),
        drift_budget=draw(st.sampled_from([base.drift_budget] * 3 + [0.0, 0.5])),
        tag=draw(FLEET_TAGS),
    )


Round = tuple[FleetSnapshot, History, PolicyConfig]


def forecast_of(snap: FleetSnapshot, history: History) -> Forecast:
    """A forecast for the round, as arbitrary as the history's demands: the last 13 (0-12
    nodes, any shape) as the next hour's, from T0 - 100 on; unusable without any."""
    demands = [s.demand for s in history.samples[-13:] if s.demand is not None]
    if not demands:
        return Forecast.unavailable(snap.at, "short", "no earlier week")
    return Forecast(snap.at, "ok", "test", snap.at - 100.0, 300.0, tuple(demands), 1.0, 4)


def decide_with(
    snap: FleetSnapshot, history: History, config: PolicyConfig, now: float
) -> Decision:
    """decide(), with the round's forecast when the preset uses one."""
    forecast = forecast_of(snap, history) if config.preset == "forecast" else None
    return decide(snap, history, forecast, config, now)


def decided(data: Round) -> Decision:
    snap, history, config = data
    return decide_with(snap, history, config, snap.at)


@st.composite
def quiet_rounds(draw: st.DrawFn) -> Round:
    """Rounds where scale-in is due: little load, fresh data, Scalelite read, no bound near."""
    count = draw(st.integers(1, 8))
    untagged = draw(st.sampled_from([1, 2, 6]))
    nodes = tuple(draw(fleet_nodes(f"i-{k:02d}", "quiet", untagged)) for k in range(count))
    members = sum(member(n) for n in nodes)
    # Protection may have kept an instance or two above desired, with MinSize right there.
    desired = max(0, members - draw(st.integers(0, 2)))
    group = Group(
        "bbb",
        desired,
        draw(st.sampled_from([0, 1, desired])),
        members + 2,
        launch=draw(GROUP_LAUNCHES),
    )
    config = dataclasses.replace(
        PolicyConfig.preset_values(draw(PRESETS)),
        scale_in_after=0.0,
        min_nodes=draw(st.sampled_from([0, 0, max(0, members - 1), members])),
    )
    # Now and then a recent drain or growth, for the scale-in cooldowns.
    times = st.sampled_from([None] * 6 + [T0 - 10, T0 - 299, T0 - 300, T0 - 2000])
    last_change = draw(times)
    last_growth = draw(times) if last_change is not None else None
    if last_growth is not None and last_change is not None and last_growth > last_change:
        last_growth, last_change = last_change, last_growth
    return FleetSnapshot(T0, group, nodes), History((), last_change, last_growth), config


@st.composite
def busy_rounds(draw: st.DrawFn) -> Round:
    """Rounds where scale-out is due: much load, no drain running, room below max."""
    count = draw(st.integers(1, 8))
    nodes = tuple(
        dataclasses.replace(draw(fleet_nodes(f"i-{k:02d}", "busy", 1)), draining_since=None)
        for k in range(count)
    )
    members = sum(member(n) for n in nodes)
    group = Group("bbb", members, 0, members + draw(st.integers(1, 8)), launch=CURRENT)
    config = dataclasses.replace(
        PolicyConfig.preset_values(draw(PRESETS)),
        scale_out_after=0.0,
        headroom=draw(st.sampled_from([0.0, 0.5])),
    )
    return FleetSnapshot(T0, group, nodes), draw(histories()), config


@st.composite
def steering_rounds(draw: st.DrawFn) -> Round:
    """Rounds where steering has work: mostly Scalelite-enabled nodes with fresh data, hot,
    busy and idle ones, some steered before; now and then stale data, a drain tag, a due
    scale-in, a lower bound, a window. Besides them, up to eight plainly steerable nodes
    about steer_warm_cpu and steer_cpu, so that the warm share's cap has work (the drawn
    nodes alone are seldom steerable: drained, foreign, booting or offline)."""
    presets: st.SearchStrategy[Preset] = st.sampled_from(["default", "default", "seed"])
    count = draw(st.integers(1, 9))
    config = dataclasses.replace(
        draw(configs(presets)),
        scale_in_after=draw(st.sampled_from([0.0, 0.0, 600.0])),
        min_nodes=draw(st.sampled_from([0, 0, 2, count])),
    )
    # Half the rounds see every node (scale-in, terminations and all), half miss some data.
    seen = draw(st.booleans())
    modes = ["clean", "clean", "quiet", "quiet", "busy"] + ([] if seen else ["messy"])
    nodes = []
    for k in range(count):
        n = draw(
            fleet_nodes(f"i-{k:02d}", draw(st.sampled_from(modes)), draw(st.sampled_from([2, 6])))
        )
        if n.server is not None and n.draining_since is None and draw(st.integers(0, 3)):
            n = dataclasses.replace(n, server=dataclasses.replace(n.server, state="enabled"))
        if not seen and n.metrics is not None and not draw(st.integers(0, 5)):
            n = dataclasses.replace(n, metrics=dataclasses.replace(n.metrics, age=61.0))
        nodes.append(n)
    for k in range(draw(st.integers(0, 8))):
        iid = f"w-{k:02d}"
        cpu = draw(st.floats(0.5, 0.8))
        metrics = NodeMetrics(cpu, draw(st.integers(1, 4)), draw(st.integers(2, 30)), 0.0)
        server = ServerView(iid, "enabled", draw(LOADS), True, draw(MULTIPLIERS), config.tag)
        nodes.append(
            Node(
                iid,
                "InService",
                protected=True,
                launched_at=T0 - 5000,
                metrics=metrics,
                server=server,
            )
        )
    nodes = draw(st.permutations(nodes))
    members = sum(member(n) for n in nodes)
    desired = max(0, members + draw(st.sampled_from([0, 0, 0, -1, 1, 2])))
    group = Group(
        "bbb", desired, draw(st.sampled_from([0, 0, 1])), members + 3, launch=draw(GROUP_LAUNCHES)
    )
    ok = seen or draw(st.booleans())
    return FleetSnapshot(T0, group, tuple(nodes), scalelite_ok=ok), draw(histories()), config


ROUNDS = st.one_of(
    st.tuples(snapshots(), histories(), configs()), quiet_rounds(), busy_rounds(), steering_rounds()
)

FAULTS = ("stale", "no-metrics", "no-meetings", "no-participants", "no-server", "scalelite")


def with_fault(snap: FleetSnapshot, fault: str, index: int) -> FleetSnapshot:
    """The snapshot with one more thing unseen: a node's data, or Scalelite."""
    if fault == "scalelite":
        return dataclasses.replace(snap, scalelite_ok=False)
    nodes = list(snap.nodes)
    n = nodes[index % len(nodes)]
    m = n.metrics or NodeMetrics(0.0, 0, 0, 0.0)
    changed = {
        "stale": {"metrics": dataclasses.replace(m, age=61.0)},
        "no-metrics": {"metrics": None},
        "no-meetings": {"metrics": dataclasses.replace(m, meetings=None)},
        "no-participants": {"metrics": dataclasses.replace(m, participants=None)},
        "no-server": {"server": None},
    }[fault]
    nodes[index % len(nodes)] = dataclasses.replace(n, **changed)  # type: ignore[arg-type]
    return dataclasses.replace(snap, nodes=tuple(nodes))


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@FAST
@given(data=ROUNDS)
def test_safety_rule(check: Check, data: Round) -> None:
    """Each rule on its own: terminations, blind rounds, desired, drains, min_size, undrain."""
    check(data[0], data[2], decided(data))


@FAST
@given(quiet_rounds(), st.sampled_from(FAULTS), st.integers(0, 20))
def test_one_unseen_node_or_scalelite_blocks_a_due_scale_in(
    data: Round, fault: str, index: int
) -> None:
    snap, history, config = data
    faulted = with_fault(snap, fault, index)
    assume(missing_data(faulted, config))
    check_blind_rounds(faulted, config, decide_with(faulted, history, config, T0))


@FAST
@given(quiet_rounds(), st.integers(0, 20))
def test_a_node_scalelite_lists_offline_holds_scale_in(data: Round, index: int) -> None:
    """Issue 13: Scalelite cannot read an offline node (poll.rake:93-118): the round treats
    it like missing data, so nothing drains and nothing is terminated, that node least."""
    snap, history, config = data
    assume(snap.nodes)
    nodes = list(snap.nodes)
    n = nodes[index % len(nodes)]
    server = n.server
    assume(member(n) and server is not None and server.state != "absent")
    assume(not other_tag(n, config))
    assert server is not None
    nodes[index % len(nodes)] = dataclasses.replace(
        n, server=dataclasses.replace(server, online=False)
    )
    faulted = dataclasses.replace(snap, nodes=tuple(nodes))
    d = decide_with(faulted, history, config, T0)
    assert d.drain == ()
    assert d.terminate == ()


@FAST
@given(ROUNDS)
def test_only_the_fleets_tag_is_counted_and_steered(data: Round) -> None:
    """Issue 13: with scalelite.tag set, a node whose server has another tag (or none) is not
    capacity, is never drained, steered or terminated; the same without a tag for tagged ones."""
    snap, _, config = data
    d = decided(data)
    foreign = {n.instance_id for n in snap.nodes if member(n) and other_tag(n, config)}
    assert not foreign & set(d.drain)
    assert not foreign & set(d.terminate)
    assert not foreign & {iid for iid, _ in d.steer}
    if "capacity" in d.numbers:
        assert d.numbers["capacity"] == capacity_by_text(snap, config)


@FAST
@given(quiet_rounds(), st.sampled_from(FAULTS[:-1]), st.integers(0, 20))
def test_an_unseen_operator_drain_blocks_a_due_scale_in(
    data: Round, fault: str, index: int
) -> None:
    """An operator's cordon takes a node out of capacity, not out of sight: its missing or
    stale data holds every scale-in step like any member's."""
    snap, history, config = data
    nodes = list(snap.nodes)
    k = index % len(nodes)
    n = nodes[k]
    assume(n.server is not None)
    assert n.server is not None
    server = dataclasses.replace(n.server, state="cordoned")
    nodes[k] = dataclasses.replace(n, draining_since=None, server=server)
    faulted = with_fault(dataclasses.replace(snap, nodes=tuple(nodes)), fault, k)
    assume(any(m.instance_id == n.instance_id for m in operator_drained(faulted, config)))
    assert missing_data(faulted, config)
    check_blind_rounds(faulted, config, decide_with(faulted, history, config, T0))


@FAST
@given(ROUNDS)
def test_decide_is_deterministic_and_pure(data: Round) -> None:
    # repr, not a deep copy: the compiled model's frozen classes refuse deepcopy's setattr.
    before = repr(data)
    first = decided(data)
    assert decided(data) == first
    assert repr(data) == before


@FAST
@given(ROUNDS)
def test_the_same_need_is_not_met_twice(data: Round) -> None:
    """After a scale-out, the next round (launches pending, nothing else changed) adds none
    (a rollout's own growth for replacements, after a growth for the load, excepted)."""
    snap, history, config = data
    # The same forecast both rounds: forecast_of reads the history, and a forecast that
    # changed would be another need.
    forecast = forecast_of(snap, history) if config.preset == "forecast" else None
    first = decide(snap, history, forecast, config, snap.at)
    if first.desired is None or first.undrain:
        return
    group = dataclasses.replace(snap.group, desired=first.desired)
    again = decide(
        dataclasses.replace(snap, group=group),
        history.record(first, T0, config),
        forecast,
        config,
        T0,
    )
    if again.replacing and not first.replacing:
        return  # a rollout's replacement, after a growth for the load: another need
    assert again.desired is None
    assert again.undrain == ()


@settings(FAST, max_examples=300)
@given(steering_rounds())
def test_steering_rule(data: Round) -> None:
    """check_steer again, on more of the rounds where steering has work."""
    check_steer(data[0], data[2], decided(data))


@FAST
@given(ROUNDS)
def test_steering_changes_nothing_but_the_steer(data: Round) -> None:
    """Steering moves no node in or out: with steering off the decision is the same."""
    snap, history, config = data
    first = decided(data)
    off = decide_with(snap, history, dataclasses.replace(config, steer_multiplier=1.0), T0)
    assert off.steer == ()
    assert dataclasses.replace(first, steer=()) == off


@FAST
@given(ROUNDS)
def test_scale_in_cooldown(data: Round) -> None:
    """No new drain within cooldown_in of the last growth (default) or of the last capacity
    change, a drain included (seed)."""
    _snap, history, config = data
    d = decided(data)
    last = history.last_change_at if config.preset == "seed" else history.last_growth_at
    if last is not None and T0 - last < config.cooldown_in:
        assert d.drain == ()


@FAST
@given(ROUNDS, st.sampled_from([T0 - 10, T0 - 299, T0 - 2000]))
def test_default_a_drain_alone_restarts_no_cooldown(data: Round, drained_at: float) -> None:
    """default (no scale-out cooldown): when the last drain was is no input of a decision."""
    snap, history, config = data
    assume(config.preset == "default" and config.cooldown_out == 0)
    later = dataclasses.replace(history, last_change_at=drained_at)
    assert decide_with(snap, later, config, T0) == decided(data)


@FAST
@given(ROUNDS)
def test_default_takes_no_trend_inside_a_planned_window(data: Round) -> None:
    """While a window that holds nodes is open, or opens within boot_time, the demand trend
    is 0. (A window with min_nodes 0 plans nothing: bounds() does not name it, and the
    policy does not count it as planned.)"""
    config = data[2]
    assume(config.preset == "default")
    planned = any(
        w.min_nodes > 0 and (w.open_at(T0) or w.open_at(T0 + config.boot_time))
        for w in config.windows
    )
    d = decided(data)
    if planned:
        assert d.numbers.get("trend_per_s", 0.0) == 0.0


@FAST
@given(ROUNDS)
def test_schedule_misses(data: Round) -> None:
    """A miss names a window in effect (open, or opening within boot_time); a window whose
    nodes all serve is never missed; one asking for more nodes than the fleet can have (the
    upper bound, or more where desired or the members already are above it) always is,
    short by at least the difference; a miss is short, or late by more than one round."""
    snap, _history, config = data
    d = decided(data)
    effective = {
        w.name: w
        for w in config.windows
        if w.min_nodes > 0
        and any(w.open_at(T0 + s) for s in range(0, int(config.boot_time) + 1, 10))
    }
    serving = [n for n in serving_now(snap, config) if n.instance_id not in d.drain]
    members = sum(member(n) for n in snap.nodes)
    most = max(upper_bound(snap.group, config), snap.group.desired, members)
    missed = {m.window: m for m in d.schedule_misses}
    for m in d.schedule_misses:
        assert m.window in effective, m
        assert m.late_s >= 0
        assert m.short >= 0
        assert m.short > 0 or m.late_s > config.interval
    for name, w in effective.items():
        if len(serving) >= w.min_nodes:
            assert name not in missed
        if w.min_nodes > most:
            assert missed[name].short >= w.min_nodes - most


@settings(FAST, max_examples=200)
@given(
    st.integers(1, 8),
    st.floats(0.0, 1.0),
    st.floats(0.0, 12.0),
    st.sampled_from([(0, 60), (2, 60), (600, 660), (1380, 30)]),
)
def test_default_trend_suppression_is_only_the_window_s(
    count: int, cpu: float, then: float, window: tuple[int, int]
) -> None:
    """The same rising fleet: outside a window the trend is measured and may grow it; inside
    one (or within boot_time of one) the decision is the one with no history at all."""
    nodes = tuple(
        Node(
            f"i-{k}",
            "InService",
            launched_at=T0 - 5000,
            metrics=NodeMetrics(cpu, 1, 2, 5.0),
            server=ServerView(f"i-{k}", "enabled", 1.0, True),
        )
        for k in range(count)
    )
    snap = FleetSnapshot(T0, Group("bbb", count, 0, 40), nodes)
    rising = History((Sample(T0 - 300, frozenset(), then),))
    start, end = window
    config = dataclasses.replace(
        PolicyConfig(), windows=(Window("w", frozenset(range(7)), start, end, "UTC", 1),)
    )
    d = decide_with(snap, rising, config, T0)
    flat = decide(snap, History(), None, config, T0)
    if scheduled_minimum(config.windows, T0, config.schedule_lead)[1] is not None:
        assert d.numbers["trend_per_s"] == 0.0
        assert (d.desired, d.drain) == (flat.desired, flat.drain)
    else:
        assert d.numbers["trend_per_s"] == pytest.approx(
            max(0.0, (count * cpu - then) / 300), abs=1e-6
        )
        assert (d.desired or count) >= (flat.desired or count)


# --- a toy fleet, round after round --------------------------------------------------------


@dataclass
class ToyNode:
    iid: str
    launched_at: float
    lifecycle: str = "Pending"
    meetings: int = 0
    """The truth: meetings running on it now."""
    registered: bool = False
    """In Scalelite's server list."""
    collecting: bool = False
    """bbbnode runs and reads BBB (from its start until the instance goes)."""
    state: ServerState = "enabled"
    tagged_at: float | None = None
    reading: tuple[int, float] | None = None
    """What its collector last read from BBB, and when."""
    stalled: bool = False
    exporter_up: bool = True
    multiplier: float = 1.0
    """Scalelite's load_multiplier for it, as the scaler last steered it."""
    template: int = 1
    """The launch template version it was launched from."""


@dataclass
class ToyFleet:
    now: float = T0
    desired: int = 0
    min_size: int = 0
    max_size: int = 6
    scalelite_up: bool = True
    nodes: dict[str, ToyNode] = field(default_factory=dict)
    launched: int = 0
    template: int = 1
    """The launch template version the group launches from now."""

    def launch(self) -> None:
        self.launched += 1
        iid = f"i-{self.launched:03d}"
        self.nodes[iid] = ToyNode(iid, self.now, template=self.template)

    def load(self, n: ToyNode) -> float | None:
        # Scalelite counts the meetings it placed, times the multiplier; a disabled server
        # has no load.
        return None if n.state == "disabled" else float(n.meetings) * n.multiplier

    def snapshot(self) -> FleetSnapshot:
        nodes = []
        for n in self.nodes.values():
            metrics = None
            if n.exporter_up and n.reading is not None:
                read, at = n.reading
                metrics = NodeMetrics(
                    min(1.0, 0.02 + 0.2 * n.meetings), read, 2 * read, self.now - at
                )
            server = None
            if self.scalelite_up:
                state: ServerState = n.state if n.registered else "absent"
                load = self.load(n) if n.registered else None
                server = ServerView(n.iid, state, load, True, n.multiplier)
            nodes.append(
                Node(
                    n.iid,
                    n.lifecycle,
                    launched_at=n.launched_at,
                    draining_since=n.tagged_at,
                    metrics=metrics,
                    server=server,
                    launch=Launch("lt-toy", str(n.template)),
                )
            )
        launch = Launch("lt-toy", str(self.template))
        group = Group("bbb", self.desired, self.min_size, self.max_size, launch=launch)
        return FleetSnapshot(self.now, group, tuple(nodes), scalelite_ok=self.scalelite_up)


NODE_INDEX = st.integers(0, 20)
SECONDS = st.sampled_from([5.0, 10.0, 10.0, 30.0, 70.0])


class DrainToTermination(RuleBasedStateMachine):
    """Meetings come and go, data goes stale, Scalelite drops out; decisions are applied."""

    def __init__(self) -> None:
        super().__init__()
        self.fleet = ToyFleet()
        self.config = PolicyConfig()
        self.history = History()
        self.drained_by_scaler: set[str] = set()

    @initialize(
        preset=PRESETS,
        size=st.integers(1, 5),
        min_size=st.integers(0, 2),
        max_size=st.integers(3, 8),
        quick=st.booleans(),
    )
    def start(self, preset: Preset, size: int, min_size: int, max_size: int, quick: bool) -> None:
        base = PolicyConfig.preset_values(preset)
        # Short timings so drains and terminations happen within a few dozen steps.
        self.config = dataclasses.replace(
            base,
            scale_out_after=0.0 if quick else 20.0,
            scale_in_after=0.0 if quick else 30.0,
            cooldown_in=0.0 if quick else 30.0,
            cooldown_out=0.0 if quick else base.cooldown_out,
            boot_grace=120.0,
        )
        self.fleet = ToyFleet(min_size=min(min_size, size), max_size=max_size)
        for _ in range(size):
            self.fleet.launch()
        for n in self.fleet.nodes.values():
            n.lifecycle, n.reading = "InService", (0, T0)
            n.collecting = n.registered = True
        self.fleet.desired = size

    def pick(self, index: int, ok: Callable[[ToyNode], bool]) -> ToyNode | None:
        nodes = [n for n in self.fleet.nodes.values() if ok(n)]
        return nodes[index % len(nodes)] if nodes else None

    @rule(seconds=SECONDS)
    def tick(self, seconds: float) -> None:
        self.advance(seconds)

    @rule(rounds=st.integers(1, 8), seconds=SECONDS)
    def loop(self, rounds: int, seconds: float) -> None:
        """The scaler's loop running undisturbed for a while."""
        for _ in range(rounds):
            self.advance(seconds)
            self.round()

    def advance(self, seconds: float) -> None:
        """Time passes; collectors read BBB; Scalelite's poll disables empty cordoned servers."""
        self.fleet.now += seconds
        for n in self.fleet.nodes.values():
            if n.collecting and not n.stalled:
                n.reading = (n.meetings, self.fleet.now)
            if n.registered and n.state == "cordoned" and n.meetings == 0:
                n.state = "disabled"

    @rule(index=NODE_INDEX, race=st.booleans(), count=st.integers(1, 4))
    def start_meeting(self, index: int, race: bool, count: int) -> None:
        # Scalelite places on enabled servers; a create racing the cordon lands on a
        # cordoned one. Scalelite counts it either way.
        states = ("enabled", "cordoned") if race else ("enabled",)
        n = self.pick(index, lambda n: n.registered and n.state in states)
        if n is not None:
            n.meetings += count

    @rule(index=NODE_INDEX, count=st.integers(1, 4))
    def end_meetings(self, index: int, count: int) -> None:
        n = self.pick(index, lambda n: n.meetings > 0)
        if n is not None:
            n.meetings = max(0, n.meetings - count)

    @rule(index=NODE_INDEX, fault=st.sampled_from(["stall", "exporter", "scalelite"]))
    def data_fault(self, index: int, fault: str) -> None:
        """A collector stalls (its data ages), an exporter stops answering, Scalelite is
        unreachable; the same again mends it."""
        n = self.pick(index, lambda n: True)
        if fault == "scalelite":
            self.fleet.scalelite_up = not self.fleet.scalelite_up
        elif n is not None and fault == "stall":
            n.stalled = not n.stalled
        elif n is not None:
            n.exporter_up = not n.exporter_up

    @rule()
    def mend(self) -> None:
        self.fleet.scalelite_up = True
        for n in self.fleet.nodes.values():
            n.stalled, n.exporter_up = False, True

    @rule(
        index=NODE_INDEX,
        act=st.sampled_from(["cordon", "cordon-busy", "uncordon", "deregister", "lower"]),
    )
    def operator(self, index: int, act: str) -> None:
        """An operator's own cordon (``bbbnode drain``) of an idle or a busy node, and its
        ``bbbnode undrain``; removing an idle server from Scalelite; or desired lowered
        behind the scaler's back (protection keeps the instances)."""
        if act == "lower":
            if self.fleet.desired > self.fleet.min_size:
                self.fleet.desired -= 1
            return
        if act == "uncordon":
            n = self.pick(
                index,
                lambda n: n.registered and n.tagged_at is None and n.state != "enabled",
            )
            if n is not None:
                n.state = "enabled"
            return
        busy = act == "cordon-busy"
        n = self.pick(
            index,
            lambda n: n.registered and n.tagged_at is None and (busy or n.meetings == 0),
        )
        if n is not None and act.startswith("cordon"):
            n.state = "cordoned"
        elif n is not None:
            n.registered = False

    @rule()
    def roll_out(self) -> None:
        """`bbbctl stack update` with a new image: the group launches from a new version."""
        self.fleet.template += 1

    @rule(index=NODE_INDEX)
    def boot(self, index: int) -> None:
        n = self.pick(index, lambda n: not n.collecting)
        if n is None:
            return
        if n.lifecycle == "Pending":
            n.lifecycle = "InService"
        else:
            n.collecting = n.registered = True
            n.state = "enabled"

    @rule()
    def round(self) -> None:
        self.history = scaler_round(self.fleet, self.history, self.config, self.drained_by_scaler)


def scaler_round(
    fleet: ToyFleet, history: History, config: PolicyConfig, drained_by_scaler: set[str]
) -> History:
    """One round on the toy fleet: decide, check every rule, carry the decision out, and
    assert that no termination hits a node with a meeting or without the scaler's drain."""
    snap = fleet.snapshot()
    d = decide_with(snap, history, config, fleet.now)
    history = history.record(d, fleet.now, config)
    for check in CHECKS:
        check(snap, config, d)
    for iid in d.undrain:
        n = fleet.nodes[iid]
        n.tagged_at = None
        if n.registered:
            n.state = "enabled"
        drained_by_scaler.discard(iid)
    if d.desired is not None:
        fleet.desired = d.desired
    while len(fleet.nodes) < fleet.desired:
        fleet.launch()
    for iid in d.drain:
        n = fleet.nodes[iid]
        n.tagged_at = fleet.now
        if n.registered and n.state == "enabled":
            n.state = "cordoned"
        drained_by_scaler.add(iid)
    for iid, multiplier in d.steer:
        n = fleet.nodes[iid]
        assert n.registered, f"{iid}: steered while not in Scalelite"
        assert n.state == "enabled", f"{iid}: steered while {n.state}"
        n.multiplier = multiplier
    for iid in d.terminate:
        n = fleet.nodes[iid]
        assert iid in drained_by_scaler, f"{iid} was never drained by the scaler"
        assert n.meetings == 0, f"{iid} terminated with {n.meetings} meeting(s) running"
        assert n.reading is not None
        assert n.reading == (0, n.reading[1])
        assert fleet.now - n.reading[1] <= config.stale_after
        assert fleet.desired - 1 >= fleet.min_size
        del fleet.nodes[iid]
        fleet.desired -= 1
        drained_by_scaler.discard(iid)
    return history


TestDrainToTermination = DrainToTermination.TestCase
TestDrainToTermination.settings = settings(FAST, max_examples=60, stateful_step_count=60)


# --- a rollout, from the new launch template to the last drifted node gone -----------------


@settings(FAST, max_examples=60)
@given(
    preset=PRESETS,
    meetings=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 7200)), min_size=1, max_size=6),
    min_size=st.integers(0, 3),
    boot=st.sampled_from([30.0, 180.0]),
    budget=st.sampled_from([0.1, 0.5, 1.0]),
)
def test_a_rollout_replaces_every_drifted_node_and_ends_no_meeting(
    preset: Preset,
    meetings: list[tuple[int, int]],
    min_size: int,
    boot: float,
    budget: float,
) -> None:
    """The group's launch template changes under a fleet whose meetings end when they end:
    every round obeys every rule (scaler_round asserts no termination with a meeting), and
    once the last meeting has ended the fleet is all current within a bounded time."""
    config = dataclasses.replace(
        PolicyConfig.preset_values(preset), drift_budget=budget, boot_grace=600.0
    )
    fleet = ToyFleet(min_size=min(min_size, len(meetings)), max_size=len(meetings) + 3)
    ends: dict[str, float] = {}
    for count, lasts in meetings:
        fleet.launch()
        n = fleet.nodes[f"i-{fleet.launched:03d}"]
        n.lifecycle, n.collecting, n.registered = "InService", True, True
        n.meetings, n.reading = count, (count, T0)
        ends[n.iid] = T0 + lasts
    fleet.desired = len(meetings)
    fleet.template = 2
    history, drained_by_scaler = History(), set[str]()
    last_end = max(ends.values())
    while fleet.now < last_end + 6 * 3600:
        fleet.now += 10.0
        for n in fleet.nodes.values():
            if n.iid in ends and fleet.now >= ends[n.iid]:
                n.meetings = 0
            if n.lifecycle == "Pending" and fleet.now - n.launched_at >= boot:
                n.lifecycle, n.collecting, n.registered, n.state = (
                    "InService",
                    True,
                    True,
                    "enabled",
                )
            if n.collecting:
                n.reading = (n.meetings, fleet.now)
            if n.registered and n.state == "cordoned" and n.meetings == 0:
                n.state = "disabled"
        history = scaler_round(fleet, history, config, drained_by_scaler)
        if all(n.template == 2 for n in fleet.nodes.values()) and fleet.now > last_end:
            break
    assert all(n.template == 2 for n in fleet.nodes.values()), [
        (n.iid, n.template, n.meetings) for n in fleet.nodes.values()
    ]
    assert len(fleet.nodes) >= fleet.min_size


# --- the seed preset against the seed text ----------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Rounds with the same fleet readings, ``step`` seconds apart after ``gap``."""

    cpus: tuple[float, ...]
    meetings: tuple[int, ...]
    rounds: int
    step: float
    gap: float
    data: str
    """fresh | stale (one node's data too old) | missing (one node without metrics) |
    noscalelite"""


@st.composite
def seed_runs(draw: st.DrawFn) -> tuple[int, int, int, list[Segment]]:
    size = draw(st.integers(1, 5))
    min_size = draw(st.integers(0, size))
    max_size = draw(st.integers(max(1, min_size), size + 2))
    cpu = st.one_of(
        st.floats(0.0, 0.0599), st.floats(0.06, 0.8), st.floats(0.8001, 1.0), st.just(0.8)
    )
    regime = st.sampled_from(["high", "low", "any"])
    segments = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(regime)
        if kind == "high":
            cpus = [draw(st.floats(0.8001, 1.0)) for _ in range(size)]
        elif kind == "low":
            cpus = [draw(cpu) for _ in range(size)]
            cpus[draw(st.integers(0, size - 1))] = draw(st.floats(0.0, 0.0599))
        else:
            cpus = [draw(cpu) for _ in range(size)]
        segments.append(
            Segment(
                tuple(cpus),
                tuple(draw(st.sampled_from([0, 0, 1])) for _ in range(size)),
                draw(st.integers(1, 110)),
                draw(st.sampled_from([10.0, 10.0, 10.0, 20.0, 30.0])),
                draw(st.sampled_from([10.0, 10.0, 31.0, 400.0])),
                draw(
                    st.sampled_from(["fresh", "fresh", "fresh", "stale", "missing", "noscalelite"])
                ),
            )
        )
    return size, min_size, max_size, segments


def seed_fleet(seg: Segment, now: float, min_size: int, max_size: int) -> FleetSnapshot:
    nodes = []
    for k, (cpu, meetings) in enumerate(zip(seg.cpus, seg.meetings, strict=True)):
        iid = f"i-{k}"
        metrics: NodeMetrics | None = NodeMetrics(cpu, meetings, 3 * meetings, 5.0)
        if k == 0 and seg.data == "stale":
            metrics = NodeMetrics(cpu, meetings, 3 * meetings, 61.0)
        if k == 0 and seg.data == "missing":
            metrics = None
        server = None if seg.data == "noscalelite" else ServerView(iid, "enabled", meetings, True)
        nodes.append(Node(iid, "InService", launched_at=now - 5000, metrics=metrics, server=server))
    group = Group("bbb", len(nodes), min_size, max_size)
    return FleetSnapshot(now, group, tuple(nodes), scalelite_ok=seg.data != "noscalelite")


class SeedText:
    """The write-up's rule, from its text: "Scale out when the lowest CPU value across the
    fleet crosses 80 %" for 3 minutes; "Scale in when the lowest CPU value falls below 6 %"
    for 15 minutes, removing an idle node; 300 s cooldown after either; within min/max;
    scale-in only on fresh data. A run of rounds survives a missed round or two (30 s)."""

    def __init__(self) -> None:
        self.last_change: float | None = None
        self.above_since: float | None = None
        self.below_since: float | None = None
        self.last_round: float | None = None

    def round(self, now: float, snap: FleetSnapshot) -> tuple[str, int]:
        """("out", desired) | ("in", 1 node) | ("none", 0)."""
        cpus = [n.metrics.cpu for n in snap.nodes if n.metrics is not None]
        lowest = min(cpus) if cpus else None
        unbroken = self.last_round is not None and now - self.last_round <= 30
        above = lowest is not None and lowest > 0.80
        below = lowest is not None and lowest < 0.06
        self.above_since = (self.above_since if unbroken else None) if above else None
        self.below_since = (self.below_since if unbroken else None) if below else None
        if above and self.above_since is None:
            self.above_since = now
        if below and self.below_since is None:
            self.below_since = now
        self.last_round = now
        cooled = self.last_change is None or now - self.last_change >= 300
        size = len(snap.nodes)
        if self.above_since is not None and now - self.above_since >= 180:
            if cooled and size < snap.group.max_size:
                self.last_change = now
                return "out", size + 1
            return "none", 0
        if self.below_since is not None and now - self.below_since >= 900:
            fresh = snap.scalelite_ok and all(
                n.metrics is not None and n.metrics.age <= 60 and n.server is not None
                for n in snap.nodes
            )
            idle = any(n.metrics is not None and n.metrics.meetings == 0 for n in snap.nodes)
            if cooled and fresh and idle and size > snap.group.min_size:
                self.last_change = now
                return "in", 1
        return "none", 0


def what_decide_did(d: Decision, snap: FleetSnapshot) -> tuple[str, int]:
    assert d.undrain == ()
    assert d.terminate == ()
    if d.desired is not None:
        assert d.drain == ()
        assert d.action is Action.SCALE_OUT
        return "out", d.desired
    if d.drain:
        (iid,) = d.drain
        node = snap.node(iid)
        assert node is not None
        assert node.metrics is not None
        assert (node.metrics.meetings, node.metrics.participants) == (0, 0), "not idle"
        return "in", len(d.drain)
    return "none", 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed_runs())
def test_seed_preset_does_what_the_seed_text_says(
    run: tuple[int, int, int, Sequence[Segment]],
) -> None:
    _size, min_size, max_size, segments = run
    config = PolicyConfig.preset_values("seed")
    oracle = SeedText()
    history = History()
    now = T0
    for seg in segments:
        now += seg.gap - seg.step
        for _ in range(seg.rounds):
            now += seg.step
            snap = seed_fleet(seg, now, min_size, max_size)
            d = decide_with(snap, history, config, now)
            history = history.record(d, now, config)
            assert what_decide_did(d, snap) == oracle.round(now, snap), (now - T0, d.reason)


@FAST
@given(
    snapshots(),
    configs(),
    st.floats(-1000, 2000),
    st.sampled_from([None, "lt-0b"]),
    st.booleans(),
)
def test_sort_fleet_remembers_nothing_it_should_not(
    snap: FleetSnapshot, config: PolicyConfig, later: float, launch: str | None, tag: bool
) -> None:
    """With a memo, sort_fleet keeps each node's facts between rounds (the same node objects
    repeat): a later round, with another clock, launch or config, files them as a fresh
    copy without one."""
    memo = FleetMemo()
    assert sort_fleet(snap, config, memo) == sort_fleet(snap, config)
    group = snap.group
    if launch is not None:
        group = dataclasses.replace(group, launch=Launch(launch, "1"))
    if tag:
        config = dataclasses.replace(config, tag="other", stale_after=5.0, boot_grace=30.0)
    again = dataclasses.replace(snap, at=snap.at + later, group=group)
    assert sort_fleet(again, config, memo) == sort_fleet(rebuilt(again), config)


def rebuilt(snap: FleetSnapshot) -> FleetSnapshot:
    """``snap`` with every node a new object: none a memo has seen."""
    return dataclasses.replace(snap, nodes=tuple(dataclasses.replace(n) for n in snap.nodes))


MEMO_STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["same", "same", "replace", "replace", "young", "nan", "add", "drop", "launch"]
        ),
        st.sampled_from([0.0, 10.0, 10.0, 300.0, 871.0, 4000.0, -20.0, math.nan]),
        st.integers(0, 30),
    ),
    max_size=12,
)
"""Rounds after the first: which nodes change (the same tuple again, node objects replaced
by new ones, one relaunched 30 s ago, one with a NaN CPU, a node added or gone, the
group's launch template changed), the clock's step (launches are 30, 600 and 5000 s before
T0: steps cross boot_grace; it goes back too), and which node."""


def new_servers(launched: float) -> tuple[Node, ...]:
    """Nodes filed by their age alone: booting while young, offline or operator-drained
    once older than boot_grace (an enabled server not polled yet; a disabled one)."""
    return tuple(
        Node(
            f"i-n{state[0]}",
            "InService",
            launched_at=launched,
            server=ServerView("x", state, None, False),
        )
        for state in ("enabled", "disabled")
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), snapshots(), configs(), MEMO_STEPS, st.sampled_from([None, 30.0, 600.0]))
def test_sort_fleet_with_a_memo_is_sort_fleet(
    snap: FleetSnapshot,
    other: FleetSnapshot,
    config: PolicyConfig,
    steps: list[tuple[str, float, int]],
    age: float | None,
) -> None:
    """Over rounds whose nodes mostly repeat (the backtest's), the memo re-files only the
    node objects that changed: every round's Fleet, its lists in the snapshot's order, is
    the one sort_fleet sorts from a fresh copy without a memo."""
    memo = FleetMemo()
    if age is not None:
        snap = dataclasses.replace(snap, nodes=snap.nodes + new_servers(T0 - age))
    spare = list(other.nodes) or [dataclasses.replace(n) for n in snap.nodes]
    for op, dt, k in [("same", 0.0, 0), *steps]:
        nodes = list(snap.nodes)
        group = snap.group
        if op == "replace" and nodes:
            # A new object for a node: its own values again or another node's, same id.
            new = spare[k % len(spare)] if spare and k % 3 else nodes[k % len(nodes)]
            nodes[k % len(nodes)] = dataclasses.replace(new, instance_id=f"i-{k % len(nodes):02d}")
        elif op == "young" and nodes:
            i = k % len(nodes)
            nodes[i] = dataclasses.replace(nodes[i], launched_at=snap.at + dt - 30)
        elif op == "nan" and nodes:
            i = k % len(nodes)
            m = nodes[i].metrics
            if m is not None:
                nodes[i] = dataclasses.replace(
                    nodes[i], metrics=dataclasses.replace(m, cpu=math.nan)
                )
        elif op == "add" and spare:
            nodes.insert(k % (len(nodes) + 1), spare[k % len(spare)])
        elif op == "drop" and nodes:
            del nodes[k % len(nodes)]
        elif op == "launch":
            group = dataclasses.replace(group, launch=[None, CURRENT, Launch("lt-0b", "1")][k % 3])
        same = len(nodes) == len(snap.nodes) and all(map(operator.is_, nodes, snap.nodes))
        snap = dataclasses.replace(
            snap, at=snap.at + dt, group=group, nodes=snap.nodes if same else tuple(nodes)
        )
        fleet = sort_fleet(snap, config, memo)
        plain = sort_fleet(rebuilt(snap), config)
        assert fleet == plain, (op, dt, k)
        # The memo's order of the enabled nodes by load is what sorting them gives.
        some = frozenset(n.instance_id for n in plain.enabled[::2])
        for leave_out in (frozenset(), some):
            assert emptiest_first(fleet, leave_out) == emptiest_first(plain, leave_out), (op, k)


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from([-700.0, -5.0, 0.0, 10.0, 10.0, 10.0, 400.0, math.nan]),
            st.none() | st.floats(0, 12),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_history_keeps_what_a_full_filter_keeps(
    steps: list[tuple[float, float | None]], unordered_start: bool
) -> None:
    """History.record cuts old samples by bisection while they are in time order: with a
    clock that goes back (or a NaN), it keeps exactly what filtering every sample keeps."""
    config = PolicyConfig.preset_values("default")
    history = History()
    if unordered_start:
        history = History((Sample(T0 + 50, frozenset(), 1.0), Sample(T0, frozenset(), None)))
    kept = list(history.samples)
    now = T0
    for step, demand in steps:
        now = step if math.isnan(step) else now + step
        d = Decision(Action.NONE, "steady", demand=demand)
        history = history.record(d, now, config)
        kept = [s for s in kept if s.at >= now - config.horizon] + [
            Sample(now, frozenset(), demand)
        ]
        assert repr(history.samples) == repr(tuple(kept))  # repr: NaN is not equal to NaN
        start = now - config.trend_window
        assert history.demand_since(start) == next(
            ((s.at, s.demand) for s in kept if s.at >= start and s.demand is not None), None
        )
        if math.isnan(step):
            now = T0


@FAST
@given(
    st.lists(
        st.tuples(
            # Runs of rounds: long ones hold a signal past the history's horizon (630 s).
            st.integers(1, 90),
            # 30.0 is the gap limit itself: still no gap.
            st.sampled_from([-700.0, -5.0, 0.0, 10.0, 10.0, 30.0, 31.0, 400.0, math.nan]),
            st.sets(st.sampled_from([OUT, IN])),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_held_for_is_the_walk_back_over_the_samples(
    runs: list[tuple[int, float, set[str]]], unordered_start: bool
) -> None:
    """History.held_for reads the streaks record keeps instead of walking the samples back:
    with gaps, a signal dropped, a clock that goes back (or a NaN) and another gap limit than
    the one kept, it says what the walk says."""
    config = PolicyConfig.preset_values("default")
    history = History()
    if unordered_start:
        history = History((Sample(T0 + 50, frozenset({OUT}), 1.0), Sample(T0, frozenset(), None)))
    assert config.gap_limit == 30.0
    now = T0
    steps = [(step, signals) for count, step, signals in runs for _ in range(count)]
    for step, signals in steps:
        now = step if math.isnan(step) else now + step
        d = Decision(Action.NONE, "steady", signals=frozenset(signals))
        history = history.record(d, now, config)
        for signal in (OUT, IN):
            for at in (now, now + 10.0, now + config.gap_limit + 1.0):
                for gap in (config.gap_limit, 2 * config.gap_limit):
                    walk = since = at
                    for s in reversed(history.samples):
                        if signal not in s.signals or walk - s.at > gap:
                            break
                        since = walk = s.at
                    assert repr(history.held_for(signal, at, gap)) == repr(at - since)
        if math.isnan(step):
            now = T0
