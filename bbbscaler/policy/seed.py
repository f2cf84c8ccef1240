"""The seed preset: the write-up's rule on the fleet's lowest CPU.

Scale out when the lowest CPU passes ``high_cpu`` (80 %), scale in by removing an idle
node when it falls under ``low_cpu`` (6 %), one node at a time.
"""

from __future__ import annotations

from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.fleet import Fleet
from bbbscaler.policy.need import Need, serving_cpu


def need(fleet: Fleet, config: PolicyConfig) -> Need:
    """The seed rule's need this round."""
    cpu = serving_cpu(fleet, config.target_cpu)
    lowest = cpu.lowest
    out = lowest is not None and lowest > config.high_cpu
    inward = lowest is not None and lowest < config.low_cpu
    numbers = {"lowest_cpu": lowest if lowest is not None else -1.0}
    serving = fleet.capacity
    return Need(out, inward, serving + 1, serving - 1, numbers, cpu.demand, idle_only=True)


def out_reason(config: PolicyConfig, need: Need, held: float) -> str:
    """Why the seed rule grows."""
    return (
        f"lowest CPU {need.numbers['lowest_cpu']:.2f} above {config.high_cpu:.2f} for {held:.0f}s"
    )


def drain_reason(config: PolicyConfig, need: Need, fleet: Fleet, count: int) -> str:
    """Why the seed rule drains ``count`` nodes."""
    return (
        f"lowest CPU {need.numbers['lowest_cpu']:.2f} below {config.low_cpu:.2f} "
        f"for {config.scale_in_after:.0f}s+: drain {count} idle node(s)"
    )
