"""sort_fleet: the snapshot sorted into what the policy counts.

Roles: serving, booting, draining, operator-drained, blind (no fresh data) and,
across them, drifted (launched from another launch template or version than the group
launches from now).
"""

from __future__ import annotations

from dataclasses import dataclass

from bbbscaler.model import FleetSnapshot, Node
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

    @property
    def capacity(self) -> int:
        """Nodes that will take new meetings once booted."""
        return len(self.serving) + len(self.booting) + self.pending_launches


def operator_drained(node: Node, now: float, boot_grace: float) -> bool:
    """Cordoned or disabled in Scalelite without the scaler's drain tag.

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
    young = node.launched_at is not None and now - node.launched_at < boot_grace
    return server.online or not young


def sort_fleet(snapshot: FleetSnapshot, config: PolicyConfig) -> Fleet:
    """Sort the snapshot's nodes into serving, booting, draining, operator-drained and blind."""
    now = snapshot.at
    members: list[Node] = []
    serving: list[Node] = []
    booting: list[Node] = []
    draining: list[Node] = []
    cordoned: list[Node] = []
    blind: list[Node] = []
    drifted: list[Node] = []
    group = snapshot.group
    rollout = group.launch is not None
    offline: list[Node] = []
    foreign: list[Node] = []
    tag, grace = config.tag, config.boot_grace
    # One pass: membership tests on tuples of dataclasses compare field by field (O(n²)).
    for n in snapshot.nodes:
        # A warm pool host is no member: only a scale-out brings it in (then it is Pending).
        if n.leaving or n.warmed:
            continue
        members.append(n)
        s = n.server
        if rollout and group.drifted(n):
            drifted.append(n)
        if n.draining:
            draining.append(n)
        elif s is not None and s.tag != tag and other_tag(n, config):
            foreign.append(n)
            continue
        elif n.booting(now, grace):
            booting.append(n)
            continue
        elif operator_drained(n, now, grace):
            # Its meetings still count: unseen, it holds scale-in like any member.
            cordoned.append(n)
        elif s is not None and not s.online and s.state != "absent":
            offline.append(n)  # Node.offline, inlined: this loop runs every round
            continue
        else:
            serving.append(n)
        if not n.fresh(config.stale_after) or n.server is None:
            blind.append(n)
    pending = max(0, snapshot.group.desired - len(members))
    return Fleet(
        tuple(members),
        tuple(serving),
        tuple(booting),
        tuple(draining),
        tuple(cordoned),
        tuple(blind),
        pending,
        tuple(drifted),
        offline=tuple(offline),
        foreign=tuple(foreign),
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
