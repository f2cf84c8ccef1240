"""The clairvoyant sticky oracle: a reference no real policy can beat by much.

It knows the whole trace. It takes meetings in start order and puts each on an
open node that stays at or under 80 % CPU for the meeting's whole life, choosing
the node whose life it extends least (a node lives until its last meeting
ends); among nodes it does not extend, the one that closes soonest. A meeting
that alone overloads a host gets a node of its own. A node is launched exactly
``boot_time`` before its first meeting and terminated the moment it empties
(then it is closed: a meeting starting at that very second needs another).

Checking the fit at the meeting's start is enough: every meeting already on a
node started no later (start order), so from then on the node's load only
falls until the next start, which makes its own check.

Recordings: an emptied node's instance runs on until its recorded meetings are
processed (``bbbsim.recording_processing``: one worker, in the order the
meetings ended), as the lifecycle hook holds it; the node takes no new meeting
then, and the processing's CPU is not in its fit.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable

from bbbsim.demand import MICRO, Steps
from bbbsim.fleet_model import FleetRun, FleetSettings, PreparedTrace


class _OracleNode:
    __slots__ = ("close", "ends", "opened", "recordings", "units")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.close = opened
        self.units = 0
        self.ends: list[tuple[float, int]] = []
        self.recordings: list[tuple[float, float]] = []
        """(end, processing seconds) of its recorded meetings."""

    def gone(self) -> float:
        """When the instance goes: emptied, and its recordings processed."""
        done = 0.0
        for end, work in sorted(self.recordings):
            done = max(done, end) + work
        return max(self.close, done)

    def units_at(self, t: float) -> int:
        """Its meetings' cost at ``t`` (forgets meetings over by then; ``t`` never goes back)."""
        while self.ends and self.ends[0][0] <= t:
            self.units -= heapq.heappop(self.ends)[1]
        return self.units

    def add(self, end: float, units: int) -> None:
        heapq.heappush(self.ends, (end, units))
        self.units += units
        self.close = max(self.close, end)


def _steps(changes: Iterable[tuple[float, int]]) -> Steps:
    """A step function from (time, delta) pairs."""
    by_time: dict[float, int] = {}
    for at, delta in changes:
        by_time[at] = by_time.get(at, 0) + delta
    steps: list[tuple[float, int]] = []
    value = 0
    for at in sorted(by_time):
        value += by_time[at]
        steps.append((at, value))
    return tuple(steps)


def oracle_run(prepared: PreparedTrace, settings: FleetSettings) -> FleetRun:
    """The oracle's fleet for ``prepared``, in the same terms as a policy's run."""
    host = settings.host
    room = host.limit_units - host.idle_units
    nodes: list[_OracleNode] = []
    own: list[_OracleNode] = []
    """Nodes of a meeting that alone overloads a host."""
    shared: list[tuple[float, int]] = []
    """(close, index into nodes) of the open nodes others may join, ascending."""
    recordings = settings.recordings
    meetings = zip(prepared.start, prepared.end, prepared.units, prepared.recorded, strict=True)
    for start, end, units, recorded in meetings:
        del shared[: bisect.bisect_right(shared, (start, len(nodes)))]
        work = recordings.seconds(end - start) if recorded else 0.0
        if host.overloaded(units):
            node = _OracleNode(start)
            node.add(end, units)
            if work:
                node.recordings.append((end, work))
            own.append(node)
            continue
        chosen = _choose(nodes, shared, start, end, units, room)
        if chosen is None:
            node = _OracleNode(start)
            nodes.append(node)
            node.add(end, units)
            bisect.insort(shared, (node.close, len(nodes) - 1))
        else:
            node = nodes[chosen]
            if end > node.close:
                shared.remove((node.close, chosen))
                node.add(end, units)
                bisect.insort(shared, (node.close, chosen))
            else:
                node.add(end, units)
        if work:
            node.recordings.append((end, work))
    boot = settings.boot_time
    every = nodes + own
    big_seconds = sum(n.close - n.opened for n in own)
    # A node of its own carries one meeting for its whole life: its excess is constant.
    excess = sum((host.idle_units + n.units - host.limit_units) * (n.close - n.opened) for n in own)
    gone = [n.gone() for n in every]
    instances = _steps(
        c for n, end in zip(every, gone, strict=True) for c in ((n.opened - boot, 1), (end, -1))
    )
    return FleetRun(
        name="oracle",
        instance_hours=sum(end - n.opened + boot for n, end in zip(every, gone, strict=True))
        / 3600,
        overload_node_minutes=big_seconds / 60,
        overload_core_minutes=excess / MICRO / 60,
        meetings_on_overloaded_node=0,
        meetings_ended_by_platform=0,
        meetings_refused=0,
        peak_nodes=max((v for _, v in instances), default=0),
        instances=instances,
        capacity=_steps(c for n in every for c in ((n.opened, 1), (n.close, -1))),
        overloaded=_steps(c for n in own for c in ((n.opened, 1), (n.close, -1))),
        recording_waits=tuple(end - n.close for n, end in zip(every, gone, strict=True)),
    )


def _choose(
    nodes: list[_OracleNode],
    shared: list[tuple[float, int]],
    start: float,
    end: float,
    units: int,
    room: int,
) -> int | None:
    """The open node that fits and whose life the meeting extends least, or None."""
    pos = bisect.bisect_left(shared, (end, -1))
    # Nodes living past the end first (soonest closing first), then the others, latest first.
    for k in itertools.chain(range(pos, len(shared)), range(pos - 1, -1, -1)):
        idx = shared[k][1]
        if nodes[idx].units_at(start) + units <= room:
            return idx
    return None
