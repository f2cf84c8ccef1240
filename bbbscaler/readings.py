"""What a metrics source reads of one node, before it becomes a snapshot's NodeMetrics.

Both sources (a direct scrape of every node, or a Prometheus server's API)
produce a Reading per node; the observer turns it into ``model.NodeMetrics``
when the round's snapshot time is known, so the age covers the whole round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bbbcore.node_metrics import CPU, MEETINGS, NAMES, PARTICIPANTS, SNAPSHOT_AGE
from bbbscaler.model import Node, NodeMetrics

__all__ = ["CPU", "MEETINGS", "NAMES", "PARTICIPANTS", "SNAPSHOT_AGE", "MetricsSource", "Reading"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One node's four values and when (on the observer's clock) they were current."""

    cpu: float
    meetings: int | None
    participants: int | None
    snapshot_age: float
    """bbbnode_snapshot_age_seconds: how old the node's BBB data was when read (+Inf: never)."""
    read_at: float
    """Observer-clock time the node exported those values."""

    def metrics(self, now: float) -> NodeMetrics:
        """The snapshot's view at ``now``: the age grows by the time since the read."""
        return NodeMetrics(
            cpu=self.cpu,
            meetings=self.meetings,
            participants=self.participants,
            age=self.snapshot_age + max(0.0, now - self.read_at),
        )


def reading_from(values: Mapping[str, float], read_at: float) -> Reading | None:
    """A Reading from metric name → value; None without a usable cpu or age.

    A node that exports no meeting gauges (it cannot read BBB) still has a
    Reading, with meetings and participants None: known CPU, unknown meetings.
    """
    cpu = values.get(CPU)
    age = values.get(SNAPSHOT_AGE)
    if cpu is None or age is None or not math.isfinite(cpu) or math.isnan(age) or age < 0:
        return None
    return Reading(
        cpu=min(max(cpu, 0.0), 1.0),
        meetings=_count(values.get(MEETINGS)),
        participants=_count(values.get(PARTICIPANTS)),
        snapshot_age=age,
        read_at=read_at,
    )


def _count(value: float | None) -> int | None:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return round(value)


class MetricsSource(Protocol):
    """Where node metrics come from (``metrics.source``)."""

    async def read(self, nodes: Sequence[Node]) -> Mapping[str, Reading]:
        """Readings by instance id; a node missing from the answer has no data.

        Raises when the source as a whole could not be read.
        """
        ...

    async def read_one(self, node: Node) -> Reading | None:
        """A fresh reading of one node (used right before a termination)."""
        ...
