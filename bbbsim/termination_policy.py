"""The ASG's default termination policy: which instances a scale-in through desired
capacity takes.

Both the lifecycle layer in front of moto and the backtest's fleet model pick victims with
it. The rules are the EC2 Auto Scaling User Guide's: "Configure termination policies for
Amazon EC2 Auto Scaling" (Default termination policy) and "Use instance scale-in protection
to control instance termination" (Considerations: with every instance protected, desired
capacity is lowered but no instance is terminated until one loses its protection).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    """An in-service instance as the termination policy sees it."""

    instance_id: str
    availability_zone: str
    protected: bool
    launched_at: float
    launch_version: int = 0
    """The launch template version it was launched from (a lower one is older); 0 for all
    where the caller cannot tell them apart."""


def choose_victims(
    instances: Sequence[Candidate], count: int, now: float, rng: random.Random
) -> tuple[str, ...]:
    """Pick up to ``count`` instances to scale in, as AWS's default termination policy.

    Never a protected one. Zone balance first (the zone with most instances that has an
    unprotected one), then the oldest launch template, then the instance closest to its
    next instance hour, then a random one. Fewer than ``count`` when too few are unprotected.
    """
    pool = list(instances)
    chosen: list[str] = []
    for _ in range(count):
        unprotected = [c for c in pool if not c.protected]
        if not unprotected:
            break
        per_zone = Counter(c.availability_zone for c in pool)
        top = max(per_zone[c.availability_zone] for c in unprotected)
        in_zone = [c for c in unprotected if per_zone[c.availability_zone] == top]
        oldest = min(c.launch_version for c in in_zone)
        in_zone = [c for c in in_zone if c.launch_version == oldest]
        hour_position = {c.instance_id: (now - c.launched_at) % 3600.0 for c in in_zone}
        closest = max(hour_position.values())
        ties = sorted(c.instance_id for c in in_zone if hour_position[c.instance_id] == closest)
        pick = rng.choice(ties)
        chosen.append(pick)
        pool = [c for c in pool if c.instance_id != pick]
    return tuple(chosen)
