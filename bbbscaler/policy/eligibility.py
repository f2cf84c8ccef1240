"""Which nodes may drain or be terminated, and what holds every scale-in.

The rules here are shared by every preset; they are what keeps meetings safe.
"""

from __future__ import annotations

from bbbscaler.model import FleetSnapshot, Node
from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.fleet import Fleet


def drained(node: Node, config: PolicyConfig) -> bool:
    """Safe to terminate: fresh data says empty, and Scalelite sends it nothing."""
    server = node.server
    if not node.draining or not node.idle(config.stale_after) or server is None:
        return False
    if node.offline:
        # Scalelite cannot read it: its own view (load, meetings) is no evidence of empty.
        return False
    if server.load:
        # Scalelite still counts meetings on it, whatever state it shows (or a NaN load).
        return False
    if server.state == "absent" or server.state == "disabled":
        return True
    return server.state == "cordoned" and server.load == 0


def scale_in_blocker(snapshot: FleetSnapshot, fleet: Fleet) -> str:
    """Why no scale-in step may run this round, or "" when none holds it."""
    if not snapshot.scalelite_ok:
        return "Scalelite could not be read"
    if snapshot.errors:
        # E.g. EC2 failed and the last addresses and tags were reused: not this round's truth.
        return f"observation incomplete ({', '.join(snapshot.errors)})"
    if fleet.blind:
        ids = ", ".join(n.instance_id for n in fleet.blind[:3])
        return f"no fresh data from {len(fleet.blind)} node(s) ({ids})"
    # Offline and serving otherwise, or booting (a new server not polled yet), draining or
    # drained by an operator: every member of the fleet's tag.
    offline = [
        *fleet.offline,
        *(n for n in fleet.booting if n.offline),
        *(n for n in fleet.draining if n.offline),
        *(n for n in fleet.operator_drained if n.offline),
    ]
    if offline:
        # Like missing data: Scalelite's poller cannot read it (a slow host, a dead one, or a
        # new one not polled yet), so what is placed where is not known this round.
        ids = ", ".join(n.instance_id for n in offline[:3])
        return f"Scalelite lists {len(offline)} node(s) offline ({ids})"
    listed = any(n.server is not None and n.server.state != "absent" for n in fleet.members)
    if fleet.members and not listed and not fleet.booting:
        # Every node "absent" is far likelier a wrong server_url_template than a fleet
        # that never registered; "absent" must not read as "drained" then.
        return "no node found in Scalelite (check scalelite.server_url_template)"
    return ""
