"""What a preset says the load needs, and the serving nodes' CPU it reads that from."""

from __future__ import annotations

from dataclasses import dataclass

from bbbscaler.policy.fleet import Fleet


@dataclass(frozen=True, slots=True)
class Need:
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
    keep_busy: int | None = None
    """Serving capacity to keep when the drain is of a node with meetings (which lasts as
    long as they do); None: ``keep``. The forecast keeps more for those."""

    steer_keep: int | None = None
    """Nodes that take new meetings, the rest steered away to empty; None:
    ``keep_for_busy``. The forecast sends new meetings only where it needs nodes later."""

    @property
    def keep_for_steering(self) -> int:
        return self.keep_for_busy if self.steer_keep is None else self.steer_keep

    @property
    def keep_for_busy(self) -> int:
        return self.keep if self.keep_busy is None else max(self.keep, self.keep_busy)


@dataclass(frozen=True, slots=True)
class Cpu:
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


def serving_cpu(fleet: Fleet, target: float) -> Cpu:
    """The serving nodes' CPU, lowest, sum and room below ``target``."""
    # One pass (it runs over every serving node every round); the sums add in the nodes'
    # order either way.
    seen = 0
    total = room = 0.0
    lowest: float | None = None
    for n in fleet.serving:
        m = n.metrics
        if m is None:
            continue
        cpu = m.cpu
        seen += 1
        total += cpu
        # The nodes at or above the target add no room (a NaN neither).
        if cpu < target:
            room += target - cpu
        if lowest is None or cpu < lowest:
            lowest = cpu
    unseen = len(fleet.serving) - seen
    if not seen:
        return Cpu(None, None if unseen else 0.0, unseen, None if unseen else 0.0)
    # Not "assume busy": nodes that stay unseen (a metrics outage, a broken exporter on new
    # instances) would then grow the fleet by a fraction every round, up to its max.
    return Cpu(lowest, total + unseen * total / seen, unseen, room + unseen * room / seen)
