"""The reconcile loop: observe, decide, act, every ``loop.interval`` seconds.

The controller holds the only state bbbscaler has between rounds, the policy's
History; everything else is observed again each round. A round is never
cancelled half-way: SIGTERM lets the round in flight finish its AWS calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bbbcore import logs
from bbbscaler.actuate import Actuator, Outcome
from bbbscaler.exposition import ScalerMetrics
from bbbscaler.model import Action, Decision, FleetSnapshot, Node, WindowMiss
from bbbscaler.policy import Forecast, History, PolicyConfig, decide, sort_fleet
from bbbscaler.policy.windows import oversized

log = logs.get(__name__)


class ForecastPort(Protocol):
    """Where each round's forecast comes from (HistoryReader)."""

    async def forecast(self, now: float) -> Forecast: ...


class ObserverPort(Protocol):
    """What the loop needs from the observation side."""

    async def observe(self) -> FleetSnapshot: ...

    async def recheck(self, node: Node) -> Node: ...


@dataclass(frozen=True, slots=True)
class Round:
    """One finished round: what was seen, decided and done."""

    snapshot: FleetSnapshot
    decision: Decision
    outcomes: tuple[Outcome, ...]
    dry_run: bool
    forecast: Forecast | None = None

    def as_json(self) -> dict[str, Any]:
        """The decision as ``bbbscaler run --once`` prints it (keys in docs/scaler.md)."""
        d = self.decision
        return {
            "at": round(self.snapshot.at, 3),
            "action": d.action.value,
            "reason": d.reason,
            "dry_run": self.dry_run,
            "desired": {"current": self.snapshot.group.desired, "target": d.desired},
            "undrain": list(d.undrain),
            "drain": list(d.drain),
            "terminate": list(d.terminate),
            "steer": dict(d.steer),
            "drift": {
                "launch": None
                if self.snapshot.group.launch is None
                else str(self.snapshot.group.launch),
                "drifted": list(d.drifted),
                "replacing": list(d.replacing),
            },
            "warm_pool": None
            if (pool := self.snapshot.pool) is None
            else {
                "ready": list(pool.ready),
                "warming": list(pool.warming),
                "leaving": list(pool.leaving),
                "min_size": pool.min_size,
                "max_prepared": pool.max_prepared,
                "pool_state": pool.pool_state,
            },
            "numbers": d.numbers,
            "schedule_misses": [
                {
                    "window": m.window,
                    "start": round(m.start, 3),
                    "min_nodes": m.min_nodes,
                    "late_s": round(m.late_s, 1),
                    "short_nodes": m.short,
                }
                for m in d.schedule_misses
            ],
            "forecast": forecast_json(self.decision, self.forecast),
            "observe_errors": list(self.snapshot.errors),
            "outcomes": [
                {"action": o.action, "target": o.target, "result": o.result, "detail": o.detail}
                for o in self.outcomes
            ],
        }


def forecast_json(d: Decision, forecast: Forecast | None) -> dict[str, Any] | None:
    """The forecast against the actual, as the decision JSON shows it (None: not the
    forecast preset)."""
    if not d.forecast_status:
        return None
    n = d.numbers
    used = d.forecast_status == "ok" and "forecast_nodes" in n
    return {
        "status": d.forecast_status,
        "reason": d.forecast_reason,
        "demand": n.get("forecast_demand") if used else None,
        "actual_demand": d.demand,
        "lead_demand": n.get("forecast_lead_demand") if used else None,
        "nodes": n.get("forecast_nodes") if used else None,
        "keep_busy": n.get("keep_busy") if used else None,
        "capacity": n.get("capacity"),
        "correction": None if forecast is None or not used else round(forecast.correction, 3),
        "weeks": None if forecast is None or not used else forecast.weeks,
    }


def roles(snapshot: FleetSnapshot, config: PolicyConfig) -> dict[str, int]:
    """Group members by role, as the policy sorts them."""
    fleet = sort_fleet(snapshot, config)
    return {
        "serving": len(fleet.serving),
        "booting": len(fleet.booting),
        "draining": len(fleet.draining),
        "operator_drained": len(fleet.operator_drained),
        "blind": len(fleet.blind),
        "offline": len(fleet.offline),
        "other_tag": len(fleet.foreign),
        "drifted": len(fleet.drifted),
    }


class Controller:
    """Runs rounds; exposes the last one for /healthz and /status."""

    def __init__(
        self,
        observer: ObserverPort,
        actuator: Actuator,
        config: PolicyConfig,
        metrics: ScalerMetrics,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        forecaster: ForecastPort | None = None,
    ) -> None:
        self._observer = observer
        self._forecaster = forecaster
        self._actuator = actuator
        self._config = config
        self._metrics = metrics
        self._dry_run = dry_run
        self._clock = clock
        self.history = History()
        self.last: Round | None = None
        self.last_finished: float | None = None
        """Monotonic time the last round ended, successful or not."""
        self._az_warned: bool | None = None
        self._misses: dict[tuple[str, float], WindowMiss] = {}
        self._oversized: tuple[tuple[str, int], ...] = ()

    async def round(self) -> Round | None:
        """Observe, decide, act once; None when the group could not be observed."""
        started = time.monotonic()
        try:
            snapshot = await self._observer.observe()
        except Exception as exc:
            # The observer has counted the failed source already.
            self._metrics.round_errors.inc()
            log.error("observe_failed", error=f"{type(exc).__name__}: {exc}")
            self.last_finished = time.monotonic()
            return None
        self._check_az_rebalance(snapshot)
        now = self._clock()
        forecast = await self.forecast(now)
        decision = decide(snapshot, self.history, forecast, self._config, now)
        self.history = self.history.record(decision, now, self._config)
        self._log(decision)
        self._warn_schedules(decision)
        outcomes = await self._actuator.apply(decision, snapshot)
        self._metrics.record_round(snapshot, decision, roles(snapshot, self._config), now)
        self._metrics.record_forecast(decision, forecast)
        self._metrics.loop_duration.observe(time.monotonic() - started)
        self.last = Round(snapshot, decision, outcomes, self._dry_run, forecast)
        self.last_finished = time.monotonic()
        return self.last

    async def preview(self) -> tuple[FleetSnapshot, Decision]:
        """Observe and decide, act on nothing (``bbbscaler explain``)."""
        snapshot = await self._observer.observe()
        now = self._clock()
        forecast = await self.forecast(now)
        return snapshot, decide(snapshot, self.history, forecast, self._config, now)

    async def forecast(self, now: float) -> Forecast | None:
        """This round's forecast; None when the preset uses none."""
        if self._config.preset != "forecast":
            return None
        if self._forecaster is None:
            return Forecast.unavailable(now, "off", "no history source")
        return await self._forecaster.forecast(now)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Rounds every ``interval`` seconds until ``stop`` is set (the round in flight ends)."""
        while not stop.is_set():
            began = time.monotonic()
            # Shielded: a cancelled run() still lets the round finish its calls.
            await asyncio.shield(self.round())
            wait = max(0.0, interval - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    def alive(self, interval: float, limit: float) -> bool:
        """A round ended within ``limit`` seconds beyond the interval (or none is due yet)."""
        if self.last_finished is None:
            return True
        return time.monotonic() - self.last_finished < interval + limit

    def _check_az_rebalance(self, snapshot: FleetSnapshot) -> None:
        suspended = "AZRebalance" in snapshot.group.suspended
        if suspended == self._az_warned:
            return
        self._az_warned = suspended
        if not suspended:
            # AZRebalance launches and terminates to even out zones: it would end meetings.
            log.error(
                "az_rebalance_active",
                asg=snapshot.group.name,
                risk="the ASG may terminate nodes with meetings to rebalance zones",
                fix=(
                    "aws autoscaling suspend-processes --auto-scaling-group-name "
                    f"{snapshot.group.name} --scaling-processes AZRebalance"
                ),
            )
        else:
            log.info("az_rebalance_suspended", asg=snapshot.group.name)

    def _warn_schedules(self, d: Decision) -> None:
        """Say once when a window will be missed (again when its shortfall changes), and when
        a window asks for more than the upper bound allows."""
        upper = int(d.numbers.get("upper", 0))
        too_big = oversized(self._config.windows, upper)
        if too_big != self._oversized:
            self._oversized = too_big
            for name, wanted in too_big:
                log.warning(
                    "schedule_exceeds_upper_bound",
                    window=name,
                    min_nodes=wanted,
                    upper=upper,
                    short_nodes=wanted - upper,
                    fix="raise the group's MaxSize (FleetMaxSize) or policy.max_nodes, "
                    "or lower the window's min_nodes",
                )
        current = {(m.window, m.start): m for m in d.schedule_misses}
        for key, m in current.items():
            before = self._misses.get(key)
            if before is None or before.short != m.short:
                log.warning(
                    "schedule_window_missed",
                    window=m.window,
                    starts_at=dt.datetime.fromtimestamp(m.start, dt.UTC).isoformat(),
                    min_nodes=m.min_nodes,
                    late_s=round(m.late_s),
                    short_nodes=m.short,
                    upper=upper,
                )
        self._misses = current

    def _log(self, d: Decision) -> None:
        fields: dict[str, Any] = {"action": d.action.value, "reason": d.reason}
        if d.desired is not None:
            fields["desired"] = d.desired
        for key in ("drain", "undrain", "terminate", "replacing"):
            if getattr(d, key):
                fields[key] = list(getattr(d, key))
        if d.steer:
            fields["steer"] = dict(d.steer)
        if d.drifted:
            fields["drifted"] = len(d.drifted)
        if d.action is Action.NONE:
            log.debug("decided", **fields)
        else:
            log.info("decided", **fields, numbers=d.numbers)
