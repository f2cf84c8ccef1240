"""sort_fleet: the snapshot sorted into what the policy counts.

Roles: serving, booting, draining, operator-drained, blind (no fresh data) and,
across them, drifted (launched from another launch template or version than the group
launches from now).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


_Seen = dict[int, tuple[Node, bool, _Facts]]


@dataclass(slots=True)
class FleetMemo:
    """The last round's facts of each node, for a caller whose snapshots repeat an
    unchanged node's object from round to round (the backtest's simulator): its rounds
    then derive the facts of the few nodes that changed only, and decide's result is the
    same as without it. The live observer builds every node anew (its data's age moves
    every round), so the live scaler passes none: there a memo would only cost.

    Keyed by ``id(node)``, with the node itself (so the id is not reused while it is
    here) and whether it was young."""

    basis: _Basis | None = None
    last: _Seen = field(default_factory=dict)

    def recall(self, basis: _Basis) -> _Seen:
        """The last round's facts if they were derived on ``basis``, else none."""
        if basis != self.basis:
            self.basis = basis
            self.last = {}
        return self.last


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


def sort_fleet(
    snapshot: FleetSnapshot, config: PolicyConfig, memo: FleetMemo | None = None
) -> Fleet:
    """Sort the snapshot's nodes into serving, booting, draining, operator-drained and blind.
    ``memo``: the facts of the round before, when its nodes may repeat (see FleetMemo)."""
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
    basis = (config.tag, grace, config.stale_after, group.launch if rollout else None)
    last: _Seen = {} if memo is None else memo.recall(basis)
    seen: _Seen = {}
    for n in snapshot.nodes:
        # Launched less than boot_grace ago: the one place the rule and the clock enter.
        launched = n.launched_at
        young = launched is not None and now - launched < grace
        if memo is None:
            facts = _facts(n, young, group, rollout, config)
        else:
            entry = last.get(id(n))
            if entry is None or entry[0] is not n or entry[1] is not young:
                entry = (n, young, _facts(n, young, group, rollout, config))
            seen[id(n)] = entry
            facts = entry[2]
        role, is_blind, is_drifted, is_enabled, is_idle = facts
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
    if memo is not None:
        memo.last = seen  # the nodes gone since are forgotten
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


def load_key(node: Node) -> tuple[int, int, float, str]:
    """Sort key, emptiest node first (an unseen node last)."""
    m = node.metrics
    if m is None:
        return (1 << 30, 1 << 30, 2.0, node.instance_id)
    return (m.meetings or 0, m.participants or 0, m.cpu, node.instance_id)
