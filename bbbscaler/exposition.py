"""bbbscaler's own Prometheus metrics (served on /metrics, port 9689 by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bbbcore import __version__
from bbbscaler.actuate import Outcome
from bbbscaler.model import Action, Decision, FleetSnapshot
from bbbscaler.policy import Forecast

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

FORECAST_STATUSES = ("ok", "off", "short", "stale", "unreadable")
OBSERVE_SOURCES = ("asg", "ec2", "metrics", "scalelite", "launch_templates", "warm_pool")
WARM_STATES = ("ready", "warming", "leaving")
ACT_ACTIONS = (
    "set_desired",
    "terminate",
    "cordon",
    "enable",
    "mark_draining",
    "unmark_draining",
    "steer",
)
ACT_RESULTS = ("ok", "skipped", "failed", "dry_run")


class ScalerMetrics:
    """The registry bbbscaler serves, and the instruments the loop updates."""

    def __init__(self, preset: str, dry_run: bool, windows: Sequence[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        info = Gauge(
            "bbbscaler_info", "bbbscaler build and policy.", ["version", "preset"], registry=r
        )
        info.labels(__version__, preset).set(1)
        Gauge("bbbscaler_dry_run", "1 when the scaler changes nothing.", registry=r).set(
            int(dry_run)
        )
        self.desired = Gauge(
            "bbbscaler_desired_capacity", "The group's desired capacity.", registry=r
        )
        self.actual = Gauge(
            "bbbscaler_actual_capacity",
            "Instances in the group that are not leaving it.",
            registry=r,
        )
        self.min_size = Gauge("bbbscaler_min_capacity", "The group's MinSize.", registry=r)
        self.max_size = Gauge("bbbscaler_max_capacity", "The group's MaxSize.", registry=r)
        self.nodes = Gauge(
            "bbbscaler_nodes",
            "Group members by role: serving, booting, draining, operator_drained (cordoned "
            "without the scaler's tag: no capacity), blind (no fresh data), drifted "
            "(launched from an older launch template or version), offline (in Scalelite), "
            "other_tag (another Scalelite tag).",
            ["role"],
            registry=r,
        )
        self.draining = Gauge(
            "bbbscaler_draining_nodes", "Nodes the scaler is draining.", registry=r
        )
        self.drifted = Gauge(
            "bbbscaler_drifted_nodes",
            "Members launched from another launch template or version than the group "
            "launches from now: a rollout replaces them through the drain.",
            registry=r,
        )
        self.steered = Gauge(
            "bbbscaler_steered_nodes",
            "Nodes whose Scalelite load_multiplier is above 1 (new meetings go elsewhere), "
            "as observed at the start of the round.",
            registry=r,
        )
        self.lowest_cpu = Gauge(
            "bbbscaler_fleet_lowest_cpu_ratio",
            "The lowest CPU of the serving nodes (NaN when none is seen).",
            registry=r,
        )
        self.demand = Gauge(
            "bbbscaler_fleet_demand_nodes",
            "Sum of the serving nodes' CPU, in nodes (NaN when unknown).",
            registry=r,
        )
        self.windows = tuple(dict.fromkeys(windows))
        self.schedule_late = Gauge(
            "bbbscaler_schedule_late_seconds",
            "Seconds after a schedule window opens until its nodes serve, for a window in "
            "effect that will be late by more than one round (0: on time or not in effect).",
            ["window"],
            registry=r,
        )
        self.schedule_short = Gauge(
            "bbbscaler_schedule_short_nodes",
            "Nodes of a schedule window in effect the fleet will not have at all: the upper "
            "bound (MaxSize, policy.max_nodes) holds fewer (0: none short, or not in effect).",
            ["window"],
            registry=r,
        )
        for name in self.windows:
            self.schedule_late.labels(name)
            self.schedule_short.labels(name)
        self.warm_pool = Gauge(
            "bbbscaler_warm_pool_instances",
            "Hosts in the group's warm pool by state: ready (stopped, a scale-out starts them "
            "first), warming (launched into the pool, not ready yet), leaving (terminating). "
            "Neither serving nor booting capacity. All 0 without a warm pool.",
            ["state"],
            registry=r,
        )
        for state in WARM_STATES:
            self.warm_pool.labels(state)
        self.launch_lag = Gauge(
            "bbbscaler_launch_lag_seconds",
            "How long until the next launch serves, as the scaler estimates it: "
            "policy.warm_start_time while the warm pool has ready hosts, policy.boot_time "
            "after (the longest of this round's launches when it grows).",
            registry=r,
        )
        self.az_rebalance = Gauge(
            "bbbscaler_az_rebalance_suspended",
            "1 when the group's AZRebalance process is suspended, as it must be.",
            registry=r,
        )
        self.decisions = Counter(
            "bbbscaler_decisions", "Decisions by headline action.", ["action"], registry=r
        )
        for action in Action:
            self.decisions.labels(action.value)
        self.actions = Counter(
            "bbbscaler_actions",
            "Calls to AWS and Scalelite by action and result.",
            ["action", "result"],
            registry=r,
        )
        for act in ACT_ACTIONS:
            for result in ACT_RESULTS:
                self.actions.labels(act, result)
        self.observe_errors = Counter(
            "bbbscaler_observe_errors",
            "Observation sources that failed, by source.",
            ["source"],
            registry=r,
        )
        for source in OBSERVE_SOURCES:
            self.observe_errors.labels(source)
        self.round_errors = Counter(
            "bbbscaler_round_errors", "Rounds that failed before deciding.", registry=r
        )
        self.loop_duration = Histogram(
            "bbbscaler_loop_duration_seconds",
            "Wall time of one observe-decide-act round.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.forecast_nodes = Gauge(
            "bbbscaler_forecast_nodes",
            "Nodes the forecast demand needs by now + boot_time + forecast.margin (forecast "
            "preset; NaN when the round fell back to the reactive rules).",
            registry=r,
        )
        self.forecast_demand = Gauge(
            "bbbscaler_forecast_demand_nodes",
            "The forecast's CPU demand in nodes for now, beside bbbscaler_fleet_demand_nodes "
            "(NaN without a forecast).",
            registry=r,
        )
        self.forecast_correction = Gauge(
            "bbbscaler_forecast_correction_ratio",
            "Today's demand over the earlier weeks' for the last forecast.window (NaN without "
            "a forecast).",
            registry=r,
        )
        self.forecast_status = Gauge(
            "bbbscaler_forecast_status",
            "1 for the forecast's status this round: ok (in use), off (no source), short "
            "(too few earlier weeks), stale (no recent value), unreadable (Prometheus); "
            "anything but ok means the round used the reactive rules alone.",
            ["status"],
            registry=r,
        )
        for status in FORECAST_STATUSES:
            self.forecast_status.labels(status)
        self.history_reads = Counter(
            "bbbscaler_forecast_history_reads",
            "Reads of the forecast's history from Prometheus, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        for result in ("ok", "failed"):
            self.history_reads.labels(result)
        self.history_read_seconds = Gauge(
            "bbbscaler_forecast_history_read_seconds",
            "Wall time of the last history read.",
            registry=r,
        )
        self.last_success = Gauge(
            "bbbscaler_last_success_timestamp_seconds",
            "When the last round finished its decision (epoch seconds).",
            registry=r,
        )

    def record_round(
        self, snapshot: FleetSnapshot, decision: Decision, roles: dict[str, int], at: float
    ) -> None:
        """Update the gauges from one round."""
        group = snapshot.group
        self.desired.set(group.desired)
        self.min_size.set(group.min_size)
        self.max_size.set(group.max_size)
        self.actual.set(sum(1 for n in snapshot.nodes if not n.leaving))
        for role, count in roles.items():
            self.nodes.labels(role).set(count)
        self.draining.set(roles.get("draining", 0))
        self.drifted.set(roles.get("drifted", 0))
        # The snapshot is read before this round's steer calls: the gauge shows what
        # Scalelite had, so a steer made now appears in the next round.
        self.steered.set(
            sum(1 for n in snapshot.nodes if n.server is not None and n.server.load_multiplier > 1)
        )
        lowest = decision.numbers.get("lowest_cpu", -1.0)
        self.lowest_cpu.set(lowest if lowest >= 0 else math.nan)
        self.demand.set(decision.demand if decision.demand is not None else math.nan)
        self.az_rebalance.set(int("AZRebalance" in group.suspended))
        pool = snapshot.pool
        counts = (0, 0, 0) if pool is None else (
            len(pool.ready), len(pool.warming), len(pool.leaving)
        )  # fmt: skip
        for state, count in zip(WARM_STATES, counts, strict=True):
            self.warm_pool.labels(state).set(count)
        lag = decision.numbers.get("launch_lag_s")
        self.launch_lag.set(math.nan if lag is None else lag)
        late = dict.fromkeys(self.windows, 0.0)
        short = dict.fromkeys(self.windows, 0)
        for m in decision.schedule_misses:
            late[m.window] = max(late.get(m.window, 0.0), m.late_s)
            short[m.window] = max(short.get(m.window, 0), m.short)
        for name, seconds in late.items():
            self.schedule_late.labels(name).set(seconds)
        for name, count in short.items():
            self.schedule_short.labels(name).set(count)
        self.decisions.labels(decision.action.value).inc()
        self.last_success.set(at)

    def record_forecast(self, decision: Decision, forecast: Forecast | None) -> None:
        """The forecast's gauges (left alone when the preset uses none)."""
        if forecast is None:
            return
        for status in FORECAST_STATUSES:
            self.forecast_status.labels(status).set(int(status == forecast.status))
        used = forecast.usable and "forecast_nodes" in decision.numbers
        n = decision.numbers
        self.forecast_nodes.set(n["forecast_nodes"] if used else math.nan)
        self.forecast_demand.set(forecast.now() if forecast.usable else math.nan)
        self.forecast_correction.set(forecast.correction if forecast.usable else math.nan)

    def record_history_read(self, result: str, seconds: float) -> None:
        self.history_reads.labels(result).inc()
        self.history_read_seconds.set(seconds)

    def record_outcome(self, outcome: Outcome) -> None:
        self.actions.labels(outcome.action, outcome.result).inc()

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)
