"""``bbbscaler explain``: the fleet as a table, and what the scaler would do and why."""

from __future__ import annotations

import datetime as dt

from bbbscaler.model import Decision, FleetSnapshot, Node
from bbbscaler.policy import PolicyConfig, drained, sort_fleet
from bbbscaler.policy.windows import oversized

COLUMNS = (
    "instance",
    "lifecycle",
    "role",
    "cpu",
    "meetings",
    "users",
    "age",
    "scalelite",
    "load",
    "mult",
)
"""``mult`` is the server's Scalelite load_multiplier (above 1: steered away)."""


def _role(node: Node, roles: dict[str, str], config: PolicyConfig, drifted: bool) -> str:
    role = roles.get(node.instance_id, "leaving")
    if role == "draining" and drained(node, config):
        role = "drained"
    # Launched from an older launch template or version: a rollout replaces it.
    return f"{role} (drifted)" if drifted else role


def _cells(node: Node, role: str) -> tuple[str, ...]:
    m, s = node.metrics, node.server
    return (
        node.instance_id,
        node.lifecycle + (" (protected)" if node.protected else ""),
        role,
        "-" if m is None else f"{m.cpu:.0%}",
        "-" if m is None or m.meetings is None else str(m.meetings),
        "-" if m is None or m.participants is None else str(m.participants),
        "-" if m is None else f"{m.age:.0f}s",
        "?" if s is None else s.state + (" offline" if node.offline else ""),
        "-" if s is None or s.load is None else f"{s.load:g}",
        # An unlisted server has no multiplier of its own; 1.0 there is only the default.
        "-" if s is None or s.state == "absent" else f"{s.load_multiplier:g}",
    )


def render(snapshot: FleetSnapshot, decision: Decision, config: PolicyConfig) -> str:
    """A plain-text table of the nodes, then the decision, its reason and its numbers."""
    fleet = sort_fleet(snapshot, config)
    roles: dict[str, str] = {}
    # Blind last: a node is listed as blind when it is serving (or draining) unseen.
    for role, nodes in (
        ("serving", fleet.serving),
        ("booting", fleet.booting),
        ("draining", fleet.draining),
        ("operator-drained", fleet.operator_drained),
        ("offline", fleet.offline),
        ("other tag", fleet.foreign),
        ("blind", fleet.blind),
    ):
        roles.update((n.instance_id, role) for n in nodes)
    drifted = {n.instance_id for n in fleet.drifted}
    rows = [COLUMNS] + [
        _cells(n, _role(n, roles, config, n.instance_id in drifted))
        for n in sorted(snapshot.nodes, key=lambda n: n.instance_id)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    g = snapshot.group
    lines.append("")
    lines.append(
        f"group {g.name}: desired {g.desired}, min {g.min_size}, max {g.max_size}"
        + ("" if g.launch is None else f", launches {g.launch}")
        + ("" if "AZRebalance" in g.suspended else "  (WARNING: AZRebalance is not suspended)")
    )
    lines.extend(pool_lines(snapshot, decision, config))
    if config.tag is not None or fleet.foreign:
        lines.append(_tag_line(config.tag, len(fleet.foreign)))
    if decision.drifted:
        lines.append(
            f"rollout: {len(decision.drifted)} node(s) drifted from {g.launch}, "
            f"at most {_num(decision.numbers.get('drift_budget', 0))} draining at once"
        )
    if snapshot.errors:
        lines.append(f"observe errors: {', '.join(snapshot.errors)}")
    lines.append(f"decision: {decision.action.value}: {decision.reason}")
    for label, ids in (
        ("set desired", () if decision.desired is None else (str(decision.desired),)),
        ("re-enable", decision.undrain),
        ("drain", decision.drain),
        ("terminate", decision.terminate),
        ("replacing (drift)", decision.replacing),
        ("steer (load_multiplier)", tuple(f"{iid}={m:g}" for iid, m in decision.steer)),
    ):
        if ids:
            lines.append(f"  {label}: {', '.join(ids)}")
    lines.extend(forecast_lines(decision, config))
    lines.extend(schedule_lines(decision, config))
    numbers = ", ".join(f"{k}={_num(v)}" for k, v in decision.numbers.items())
    lines.append(f"numbers: {numbers}")
    return "\n".join(lines) + "\n"


def pool_lines(snapshot: FleetSnapshot, decision: Decision, config: PolicyConfig) -> list[str]:
    """The warm pool: what it holds, and how soon the next launch serves because of it."""
    pool = snapshot.pool
    lag = decision.numbers.get("launch_lag_s")
    if pool is None:
        return []
    lines = [
        f"warm pool ({pool.pool_state}, min {pool.min_size}): {len(pool.ready)} ready, "
        f"{len(pool.warming)} warming, {len(pool.leaving)} leaving; no capacity until a "
        f"scale-out starts them (warm start {_num(config.warm_start_time)} s, "
        f"cold {_num(config.boot_time)} s)"
        + ("" if lag is None else f"; next launch serves in ~{_num(lag)} s")
    ]
    for label, ids in (("ready", pool.ready), ("warming", pool.warming), ("leaving", pool.leaving)):
        if ids:
            lines.append(f"  {label}: {', '.join(ids)}")
    return lines


def _tag_line(tag: str | None, others: int) -> str:
    counted = "untagged servers" if tag is None else f"servers tagged {tag!r}"
    line = f"scalelite tag: counting and steering only {counted} (scalelite.tag)"
    if others:
        line += f"; {others} node(s) with another tag not counted"
    return line


def forecast_lines(decision: Decision, config: PolicyConfig) -> list[str]:
    """The forecast against the actual, or why the round fell back to the reactive rules."""
    status = decision.forecast_status
    if not status:
        return []
    n = decision.numbers
    if status != "ok" or "forecast_nodes" not in n:
        return [f"forecast: {status} ({decision.forecast_reason}): the reactive rules alone"]
    actual = "unknown" if decision.demand is None else f"{decision.demand:.2f}"
    ahead = config.boot_time + config.forecast_margin
    return [
        f"forecast: ok ({decision.forecast_reason}): demand now {n['forecast_demand']:.2f} "
        f"forecast, {actual} actual; {n['forecast_lead_demand']:.2f} within {ahead:.0f}s "
        f"needs {_num(n['forecast_nodes'])} node(s) (capacity {_num(n['capacity'])}); "
        f"nodes with meetings kept for {_num(n['keep_busy'])} within "
        f"{config.forecast_hold:.0f}s"
        + (
            f"; new meetings go to {_num(n['steer_keep'])}, the forecast falling"
            if n.get("steer_keep", n["keep_busy"]) < n["keep_busy"]
            else ""
        )
    ]


def schedule_lines(decision: Decision, config: PolicyConfig) -> list[str]:
    """A line for each window in effect the fleet will miss, and each window too big to meet."""
    lines = []
    for m in decision.schedule_misses:
        opens = dt.datetime.fromtimestamp(m.start, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        parts = []
        if m.short:
            parts.append(f"{m.short} node(s) short: the upper bound holds fewer")
        if m.late_s > 0:
            served = m.min_nodes - m.short
            parts.append(f"{served} node(s) serve {m.late_s:.0f} s late")
        lines.append(
            f"WARNING: schedule {m.window!r} (opens {opens}, {m.min_nodes} nodes) will be "
            "missed: " + ", ".join(parts)
        )
    if "upper" in decision.numbers:
        upper = int(decision.numbers["upper"])
        missed = {m.window for m in decision.schedule_misses}
        for name, wanted in oversized(config.windows, upper):
            if name not in missed:
                lines.append(
                    f"WARNING: schedule {name!r} asks for {wanted} nodes, the upper bound is "
                    f"{upper}: {wanted - upper} short whenever it opens"
                )
    return lines


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"
