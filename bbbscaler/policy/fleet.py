"""sort_fleet: the snapshot sorted into what the policy counts.

Roles: serving, booting, draining, operator-drained, blind (no fresh data) and,
across them, drifted (launched from another launch template or version than the group
launches from now).
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_left, insort
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import compress, count
from operator import is_not, itemgetter

from bbbscaler.model import FleetSnapshot, Group, Launch, Node
from bbbscaler.policy.config import PolicyConfig


@dataclass(frozen=True, slots=True)
class Fleet:
    """The snapshot sorted into what the policy counts."""

    members: tuple[Node, ...]
    """In the group and staying (not leaving)."""
    serving: tuple[Node, ...]
    """Taking new meetings, or about to (not draining, not booting, not operator-drained)."""
    booting: tuple[Node, ...]
    draining: tuple[Node, ...]
    """The scaler's own drains (the drain tag)."""
    operator_drained: tuple[Node, ...]
    """Cordoned in Scalelite by someone else (``bbbnode drain``, no tag): members with
    meetings, but no capacity. The scaler never re-enables, drains or terminates them."""
    blind: tuple[Node, ...]
    """Members whose meeting data is missing or stale."""
    pending_launches: int
    """Desired capacity the ASG has not turned into instances yet."""
    drifted: tuple[Node, ...] = ()
    """Members launched from something else than the group launches from now."""
    offline: tuple[Node, ...] = ()
    """Members Scalelite lists offline (not booting): not serving, never idle."""
    foreign: tuple[Node, ...] = ()
    """Members whose Scalelite server has another tag than the fleet's: not counted."""
    enabled: tuple[Node, ...] = ()
    """Serving nodes with fresh data that Scalelite has enabled: the ones a drain or a steer
    may pick. An operator's cordon (no tag) is never turned into a termination, and an
    unregistered node is not ours to judge."""
    idle: frozenset[str] = frozenset()
    """Instance ids of members whose fresh data says no meeting and no participant."""
    ordered: tuple[tuple[Node, ...], tuple[Node, ...]] | None = field(
        default=None, compare=False, repr=False
    )
    """(``enabled``, the same nodes by ``load_key``) when a FleetMemo keeps that order from
    round to round; None: sorted when asked (``emptiest_first``)."""

    @property
    def capacity(self) -> int:
        """Nodes that will take new meetings once booted."""
        return len(self.serving) + len(self.booting) + self.pending_launches


def operator_drained(node: Node, young: bool) -> bool:
    """Cordoned or disabled in Scalelite without the scaler's drain tag (``young``: launched
    less than ``boot_grace`` ago).

    bbbnode treats such a server as an operator's drain too (bbbnode/drain.py
    ``resume``). Scalelite (v1.8.5) disables a cordoned server once its polled
    load is 0 (lib/tasks/poll.rake line 82), so an emptied operator drain reads
    ``disabled``. But a server ``addServer`` just created reads ``disabled`` and
    ``offline`` too (app/controllers/api/servers_controller.rb line 83 creates it
    without a state, line 174 renders that as disabled; app/models/server.rb
    line 76 starts it offline) until bbbnode enables it a moment later: a young
    server that is disabled and was never polled online is a registration in
    progress, not a drain.
    """
    server = node.server
    if server is None or node.draining_since is not None:
        return False
    if server.state == "cordoned":
        return True
    if server.state != "disabled":
        return False
    return server.online or not young


# A node's role in the fleet, as sort_fleet files it.
_SKIP, _SERVING, _BOOTING, _DRAINING, _CORDONED, _OFFLINE, _FOREIGN = range(7)

_Basis = tuple[str | None, float, float, Launch | None]
"""What besides the node and the clock its facts depend on: the fleet's tag, boot_grace,
stale_after, and the launch a rollout compares with."""
_Facts = tuple[int, bool, bool, bool, bool]
"""(role, blind, drifted, enabled, idle)."""


def _facts(n: Node, young: bool, group: Group, rollout: bool, config: PolicyConfig) -> _Facts:
    """What sort_fleet and the rules after it read of one node; ``young``: launched less
    than ``boot_grace`` ago, the only way the time enters."""
    if n.leaving or n.warmed:
        # A warm pool host is no member: only a scale-out brings it in (then it is Pending).
        return (_SKIP, False, False, False, False)
    s = n.server
    drifted = rollout and group.drifted(n)
    fresh = n.fresh(config.stale_after)
    if n.draining:
        role = _DRAINING
    elif s is not None and s.tag != config.tag and other_tag(n, config):
        return (_FOREIGN, False, drifted, False, False)
    elif n.booting(young):
        return (_BOOTING, False, drifted, False, False)
    elif operator_drained(n, young):
        # Its meetings still count: unseen, it holds scale-in like any member.
        role = _CORDONED
    elif s is not None and not s.online and s.state != "absent":
        return (_OFFLINE, False, drifted, False, False)
    else:
        role = _SERVING
    blind = not fresh or s is None
    enabled = role == _SERVING and fresh and s is not None and s.state == "enabled"
    return (role, blind, drifted, enabled, fresh and n.idle(config.stale_after))


_FILED = 12
"""sort_fleet's lists by index: the roles (``_SKIP`` holds none), then these."""
_MEMBERS, _BLIND, _DRIFTED, _ENABLED, _IDLE = range(7, _FILED)


@functools.cache
def _lists(facts: _Facts) -> tuple[int, ...]:
    """The lists a node with ``facts`` is filed in."""
    role, blind, drifted, enabled, idle = facts
    if role == _SKIP:
        return ()
    flags = ((blind, _BLIND), (drifted, _DRIFTED), (enabled, _ENABLED), (idle, _IDLE))
    return (_MEMBERS, role, *(k for on, k in flags if on))


_NOTHING = Fleet((), (), (), (), (), (), 0)

_Entry = tuple[int, int, float, str, int, Node]
"""An enabled node in the memo's order: its ``load_key``, its place, the node. Flat, not
(key, place, node): a bisection compares entries, and a flat tuple compares faster."""
_node_of = itemgetter(5)


def _unordered(entry: _Entry) -> bool:
    """A NaN CPU: its key compares neither below nor above another; ``sorted``'s order then
    depends on where it started, so no kept order can match it."""
    return entry[2] != entry[2]


@dataclass(slots=True)
class FleetMemo:
    """The last round's snapshot, its nodes' facts and the Fleet sorted from them, for a
    caller whose snapshots repeat an unchanged node's object from round to round (the
    backtest's simulator). A round with the same nodes in the same places re-files only
    the nodes whose object changed (found by identity, in C); any other (a node added or
    gone, a node turning ``boot_grace`` old, the clock going back, another basis) files
    them all again, reusing the facts of the node objects it saw. decide's result is the
    same as without a memo. The live observer builds every node anew (its data's age moves
    every round), so the live scaler passes none: there a memo would only cost."""

    basis: _Basis | None = None
    nodes: tuple[Node, ...] = ()
    """The last round's nodes; ``facts`` and ``young`` are theirs, place by place."""
    facts: list[_Facts] = field(default_factory=list)
    young: list[bool] = field(default_factory=list)
    at: float = math.inf
    """The last round's clock (none yet: infinity, so the first round files all)."""
    oldest_young: float = math.inf
    """The earliest launch among the nodes young in the last round (no bound: infinity).
    While it is still young, so is every later one, and none older turns young again."""
    filed: list[dict[int, Node]] = field(default_factory=list)
    """Each of sort_fleet's lists as the nodes' places in the snapshot, in order."""
    fleet: Fleet | None = None
    order: list[_Entry] | None = None
    """The enabled nodes by (load_key, place): the order ``sorted`` by load_key gives (equal
    keys in place order). None while a key holds a NaN CPU (no order: sorted each time)."""

    def sort(self, snapshot: FleetSnapshot, config: PolicyConfig) -> Fleet:
        """sort_fleet's Fleet of ``snapshot``, from the last round's where it can."""
        group = snapshot.group
        rollout = group.launch is not None
        grace = config.boot_grace
        basis = (config.tag, grace, config.stale_after, group.launch if rollout else None)
        now = snapshot.at
        nodes = snapshot.nodes
        fleet = self.fleet
        if (
            fleet is None
            or basis != self.basis
            or len(nodes) != len(self.nodes)
            or not now >= self.at
            or not now - self.oldest_young < grace
        ):
            return self._file_all(snapshot, config, basis)
        self.at = now
        changed = (
            [] if nodes is self.nodes else list(compress(count(), map(is_not, nodes, self.nodes)))
        )
        self.nodes = nodes
        filed = self.filed
        touched: set[int] = set()
        moved: set[int] = set()
        for i in changed:
            n = nodes[i]
            launched = n.launched_at
            young = launched is not None and now - launched < grace
            if young and launched is not None:
                self.oldest_young = min(self.oldest_young, launched)
            facts = _facts(n, young, group, rollout, config)
            was, now_in = _lists(self.facts[i]), _lists(facts)
            if self.order is not None and (_ENABLED in was or _ENABLED in now_in):
                self._reorder(i, _ENABLED in was, n if _ENABLED in now_in else None)
            self.facts[i], self.young[i] = facts, young
            for k in was:
                if k not in now_in:
                    del filed[k][i]
                    touched.add(k)
            for k in now_in:
                if k not in was:
                    moved.add(k)  # appended: its place among the others is restored below
                filed[k][i] = n
                touched.add(k)
        for k in moved:
            filed[k] = dict(sorted(filed[k].items()))
        return self._fleet(group, touched, fleet)

    def _file_all(self, snapshot: FleetSnapshot, config: PolicyConfig, basis: _Basis) -> Fleet:
        group = snapshot.group
        rollout = group.launch is not None
        grace = config.boot_grace
        now = snapshot.at
        last = zip(self.nodes, self.young, self.facts, strict=True)
        seen = {id(n): (n, y, f) for n, y, f in last} if basis == self.basis else {}
        facts: list[_Facts] = []
        youth: list[bool] = []
        oldest = math.inf
        filed: list[dict[int, Node]] = [{} for _ in range(_FILED)]
        for i, n in enumerate(snapshot.nodes):
            # Launched less than boot_grace ago: the one place the rule and the clock enter.
            launched = n.launched_at
            young = launched is not None and now - launched < grace
            if young and launched is not None:
                oldest = min(oldest, launched)
            entry = seen.get(id(n))
            if entry is None or entry[0] is not n or entry[1] is not young:
                f = _facts(n, young, group, rollout, config)
            else:
                f = entry[2]
            facts.append(f)
            youth.append(young)
            for k in _lists(f):
                filed[k][i] = n
        self.basis, self.nodes, self.facts, self.young = basis, snapshot.nodes, facts, youth
        self.at, self.oldest_young, self.filed = now, oldest, filed
        order = sorted((*load_key(n), i, n) for i, n in filed[_ENABLED].items())
        self.order = None if any(map(_unordered, order)) else order
        return self._fleet(group, set(range(_FILED)), _NOTHING)

    def _reorder(self, place: int, was: bool, node: Node | None) -> None:
        """The enabled node at ``place`` (``was`` enabled) is now ``node`` (None: not enabled)."""
        order = self.order
        assert order is not None
        key = None if node is None else (*load_key(node), place)
        if key is not None and key[2] != key[2]:
            self.order = None  # a NaN CPU (see _unordered)
            return
        if was:
            before = (*load_key(self.filed[_ENABLED][place]), place)
            at = bisect_left(order, before)
            if key == before and node is not None:
                # The same key (only what the order does not read changed): in its place.
                order[at] = (*before, node)
                return
            del order[at]
        if key is not None and node is not None:
            insort(order, (*key, node))

    def _fleet(self, group: Group, touched: set[int], last: Fleet) -> Fleet:
        """The Fleet of the lists filed, the untouched ones as ``last`` holds them."""
        filed = self.filed
        if not touched and last.pending_launches == max(0, group.desired - len(last.members)):
            return last  # nothing changed (most quiet rounds)

        def listed(k: int, before: tuple[Node, ...]) -> tuple[Node, ...]:
            return tuple(filed[k].values()) if k in touched else before

        members = listed(_MEMBERS, last.members)
        idle = (
            frozenset(n.instance_id for n in filed[_IDLE].values())
            if _IDLE in touched
            else last.idle
        )
        enabled = listed(_ENABLED, last.enabled)
        ordered = last.ordered
        if self.order is None:
            ordered = None
        elif ordered is None or _ENABLED in touched:
            ordered = (enabled, tuple(map(_node_of, self.order)))
        self.fleet = Fleet(
            members,
            listed(_SERVING, last.serving),
            listed(_BOOTING, last.booting),
            listed(_DRAINING, last.draining),
            listed(_CORDONED, last.operator_drained),
            listed(_BLIND, last.blind),
            max(0, group.desired - len(members)),
            listed(_DRIFTED, last.drifted),
            offline=listed(_OFFLINE, last.offline),
            foreign=listed(_FOREIGN, last.foreign),
            enabled=enabled,
            idle=idle,
            ordered=ordered,
        )
        return self.fleet


def sort_fleet(
    snapshot: FleetSnapshot, config: PolicyConfig, memo: FleetMemo | None = None
) -> Fleet:
    """Sort the snapshot's nodes into serving, booting, draining, operator-drained and blind.
    ``memo``: the round before, when its nodes may repeat (see FleetMemo)."""
    if memo is not None:
        return memo.sort(snapshot, config)
    now = snapshot.at
    roles: tuple[list[Node], ...] = ([], [], [], [], [], [], [])
    members: list[Node] = []
    blind: list[Node] = []
    drifted: list[Node] = []
    enabled: list[Node] = []
    idle: list[str] = []
    group = snapshot.group
    rollout = group.launch is not None
    grace = config.boot_grace
    for n in snapshot.nodes:
        # Launched less than boot_grace ago: the one place the rule and the clock enter.
        launched = n.launched_at
        young = launched is not None and now - launched < grace
        role, is_blind, is_drifted, is_enabled, is_idle = _facts(n, young, group, rollout, config)
        if role == _SKIP:
            continue
        members.append(n)
        roles[role].append(n)
        if is_drifted:
            drifted.append(n)
        if is_blind:
            blind.append(n)
        if is_enabled:
            enabled.append(n)
        if is_idle:
            idle.append(n.instance_id)
    pending = max(0, group.desired - len(members))
    return Fleet(
        tuple(members),
        tuple(roles[_SERVING]),
        tuple(roles[_BOOTING]),
        tuple(roles[_DRAINING]),
        tuple(roles[_CORDONED]),
        tuple(blind),
        pending,
        tuple(drifted),
        offline=tuple(roles[_OFFLINE]),
        foreign=tuple(roles[_FOREIGN]),
        enabled=tuple(enabled),
        idle=frozenset(idle),
    )


def other_tag(node: Node, config: PolicyConfig) -> bool:
    """Scalelite lists the node's server with another tag than the fleet's (scalelite.tag):
    Scalelite sends it other meetings (server.rb:305-316), so it is not this fleet's capacity."""
    s = node.server
    return s is not None and s.state != "absent" and (s.tag or None) != config.tag


def emptiest_first(fleet: Fleet, leave_out: AbstractSet[str] = frozenset()) -> list[Node]:
    """The enabled nodes whose ids are not in ``leave_out``, emptiest first (``load_key``;
    equal keys in the snapshot's order): the memo's order when it keeps one, else sorted."""
    ordered = fleet.ordered
    if ordered is not None and ordered[0] is fleet.enabled:
        return [n for n in ordered[1] if n.instance_id not in leave_out]
    return sorted((n for n in fleet.enabled if n.instance_id not in leave_out), key=load_key)


_Key = tuple[int, int, float, str]


def load_key(node: Node) -> _Key:
    """Sort key, emptiest node first (an unseen node last)."""
    m = node.metrics
    if m is None:
        return (1 << 30, 1 << 30, 2.0, node.instance_id)
    return (m.meetings or 0, m.participants or 0, m.cpu, node.instance_id)
