"""warm: the group's warm pool, and how soon a launch serves because of it.

A warm pool keeps hosts launched, initialised and stopped beside the group
(cfn/fleet.yaml ``WarmPoolSize``). A scale-out starts ready ones first and serves in
``warm_start_time``; once none is ready, launches are cold and serve in
``boot_time`` ("If your warm pool is depleted when there is a scale-out event,
instances will launch directly into the Auto Scaling group (a cold start)": "Warm
pools ... Limitations", EC2 Auto Scaling User Guide). A start can fail too (a zone out
of capacity): that launch is cold whatever the pool said, which the next rounds see as
a node booting for longer.

Warm hosts are neither serving nor booting capacity (``sort_fleet`` leaves them out).
What the pool changes is the lag: how late a launch serves (``windows``), and how far
ahead the default preset projects the demand trend. Its ``lookahead`` covers a cold
boot and what follows it (registration, Scalelite's first poll, a margin); while the
pool has a ready host, the boot part is the warm start instead (:func:`lagged`), so
the preset buys less headroom for growth a warm start meets in time.
"""

from __future__ import annotations

from dataclasses import replace

from bbbscaler.model import Decision, FleetSnapshot, Node, WarmPool
from bbbscaler.policy.config import PolicyConfig
from bbbscaler.policy.fleet import Fleet


def launch_lag(pool: WarmPool | None, k: int, config: PolicyConfig) -> float:
    """Seconds until the ``k``-th (from 0) new member of a round serves: a warm start while
    ready pool hosts are left, a cold boot after."""
    ready = 0 if pool is None else len(pool.ready)
    return config.warm_start_time if k < ready else config.boot_time


def launch_lags(pool: WarmPool | None, launches: int, config: PolicyConfig) -> list[float]:
    """Seconds until each of ``launches`` new members serves (``launch_lag`` of each)."""
    return [launch_lag(pool, k, config) for k in range(launches)]


def lagged(snapshot: FleetSnapshot, config: PolicyConfig) -> PolicyConfig:
    """``config`` with the trend's lookahead shortened by what a warm start saves, while the
    warm pool has a ready host (``lookahead`` - ``boot_time`` + ``warm_start_time``)."""
    pool = snapshot.pool
    if pool is None or not pool.ready or config.warm_start_time >= config.boot_time:
        return config
    saved = config.boot_time - config.warm_start_time
    return replace(config, lookahead=max(0.0, config.lookahead - saved))


def boot_lag(node: Node, config: PolicyConfig) -> float:
    """Seconds from a booting node's launch (its start, for one from the pool) to serving."""
    return config.warm_start_time if node.warm_start else config.boot_time


def account(
    snapshot: FleetSnapshot, fleet: Fleet, config: PolicyConfig, decision: Decision
) -> dict[str, float]:
    """``decision``'s numbers with how soon the next launch (the last of this round's, when
    it grows) serves, ``launch_lag_s``, and with a warm pool what it holds."""
    pool = snapshot.pool
    base = max(snapshot.group.desired, len(fleet.members))
    grow = max(0, (decision.desired or base) - base)
    launches = fleet.pending_launches + max(grow, 1)
    # The longest of launch_lags: the lags run warm, then cold, so it is the first's or the
    # last's (no list every round).
    lag = max(launch_lag(pool, 0, config), launch_lag(pool, launches - 1, config))
    numbers: dict[str, float] = {**decision.numbers, "launch_lag_s": lag}
    if pool is not None:
        numbers |= {
            "warm_ready": len(pool.ready),
            "warm_warming": len(pool.warming),
            "warm_leaving": len(pool.leaving),
        }
    return numbers
