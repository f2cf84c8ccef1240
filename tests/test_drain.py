"""The drain: every transition of the pure core, the adapter over a fake world, and the real thing.

The integration tests run the drain against moto behind the lifecycle layer (Terminating:Wait,
heartbeats, CompleteLifecycleAction), the Scalelite emulator, a BBB emulator read by the real
collector, and the IMDS emulator, all on loopback with one injected clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import pytest_asyncio
from botocore.exceptions import ClientError
from tenacity import wait_none

from bbbcore import aws
from bbbcore.bbb_api import BbbClient
from bbbcore.scalelite import RetryPolicy, ScaleliteClient
from bbbnode import registration
from bbbnode.collector import Collector
from bbbnode.drain import (
    TERMINATED,
    Action,
    ActionKind,
    AsgLifecycle,
    Drain,
    DrainConfig,
    DrainReport,
    DrainState,
    FleetDrainPort,
    LifecycleActionGone,
    Observation,
    Outcome,
    Phase,
    Truth,
    record,
    resume,
    step,
)
from bbbnode.exposition import NodeMetrics
from bbbnode.protector import UNKNOWN, SnapshotView
from bbbnode.registration import Presence
from bbbnode.settings import LifecycleSettings
from bbbnode.snapshot import Snapshot
from bbbsim import bbb_emulator, imds
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import DEFAULT_REGION, FleetIds, FleetSpec, HookSpec
from bbbsim.scalelite_emulator import ScaleliteEmulator
from bbbsim.scalelite_emulator import serve as serve_scalelite
from tests import snapshots
from tests.aws_fixtures import FakeClock

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]

CFG = DrainConfig(heartbeat_interval=60, recording_grace=120, max_drain_time=0)
T0 = 1_000_000.0
K = ActionKind


def idle(at: float) -> SnapshotView:
    return SnapshotView(meetings=0, pending_recordings=0, observed_at=at)


def busy(at: float, meetings: int = 1) -> SnapshotView:
    return SnapshotView(meetings=meetings, pending_recordings=0, observed_at=at)


def kinds(actions: tuple[Action, ...]) -> list[ActionKind]:
    return [a.kind for a in actions]


def terminating_obs(view: SnapshotView, scalelite: Presence | None = "cordoned") -> Observation:
    return Observation(view, TERMINATED, scalelite)


def cordoned_terminating(at: float = T0) -> DrainState:
    return DrainState(
        phase=Phase.CORDONED,
        terminating=True,
        terminating_since=at,
        drain_started_at=at,
        cordoned_at=at,
        last_heartbeat_at=at,
    )


# ------------------------------------------------------------------------- settings


def test_config_from_settings() -> None:
    settings = LifecycleSettings(heartbeat_interval=30, recording_grace=10, max_drain_time=900)
    assert DrainConfig.from_settings(settings) == DrainConfig(30, 10, 900)


# ------------------------------------------------------------------- resume (truth)


@pytest.mark.parametrize(
    ("truth", "phase", "terminating", "operator", "settled"),
    [
        (Truth("InService", "enabled"), Phase.SERVING, False, False, True),
        (Truth("InService", "absent"), Phase.SERVING, False, False, True),
        (Truth("InService", "cordoned"), Phase.CORDONED, False, True, True),
        (Truth("InService", "disabled"), Phase.CORDONED, False, True, True),
        (Truth("InService", None), Phase.SERVING, False, False, False),
        (Truth(None, "enabled"), Phase.SERVING, False, False, True),
        (Truth(None, "cordoned"), Phase.CORDONED, False, True, True),
        (Truth(TERMINATED, "enabled", True), Phase.CORDONING, True, False, True),
        (Truth(TERMINATED, None, True), Phase.CORDONING, True, False, True),
        (Truth(TERMINATED, "cordoned", True), Phase.CORDONED, True, False, True),
        (Truth(TERMINATED, "disabled", None), Phase.CORDONED, True, False, True),
        (Truth(TERMINATED, "absent", True), Phase.DEREGISTERED, True, False, True),
        (Truth(TERMINATED, "absent", False), Phase.COMPLETED, True, False, True),
        (Truth(TERMINATED, "cordoned", False), Phase.COMPLETED, True, False, True),
    ],
)
def test_resume_from_truth(
    truth: Truth, phase: Phase, terminating: bool, operator: bool, settled: bool
) -> None:
    state = resume(truth, T0)
    assert (state.phase, state.terminating, state.operator, state.settled) == (
        phase,
        terminating,
        operator,
        settled,
    )
    assert state.idle_since is None  # a restart never shortens the grace
    if terminating:
        assert state.terminating_since == T0
    assert state.may_enable == (phase is Phase.SERVING and settled and not terminating)


def test_unsettled_start_adopts_a_cordon_found_later() -> None:
    state = resume(Truth("InService", None), T0)
    state, actions = step(state, Observation(UNKNOWN, "InService", None), T0 + 5, CFG)
    assert not state.settled
    assert actions == ()
    state, actions = step(state, Observation(UNKNOWN, "InService", "cordoned"), T0 + 10, CFG)
    assert (state.phase, state.operator, state.settled) == (Phase.CORDONED, True, True)
    assert not state.may_enable
    assert actions == ()


def test_unsettled_start_with_enabled_server_settles_serving() -> None:
    state = resume(Truth("InService", None), T0)
    state, _ = step(state, Observation(UNKNOWN, "InService", "enabled"), T0 + 5, CFG)
    assert state.settled
    assert state.may_enable


# ---------------------------------------------------------------- transitions (pure)


def test_serving_does_nothing() -> None:
    state, actions = step(DrainState(), Observation(busy(T0), "InService", None), T0, CFG)
    assert state == DrainState()
    assert actions == ()


def test_termination_starts_the_drain_with_cordon_and_heartbeat() -> None:
    state, actions = step(DrainState(), terminating_obs(busy(T0), "enabled"), T0, CFG)
    assert state.phase is Phase.CORDONING
    assert state.terminating
    assert state.terminating_since == T0
    assert kinds(actions) == [K.CORDON, K.HEARTBEAT]


def test_termination_is_sticky_when_imds_fails() -> None:
    state, _ = step(DrainState(), terminating_obs(busy(T0), "enabled"), T0, CFG)
    state, _ = step(state, Observation(busy(T0), None, "enabled"), T0 + 5, CFG)
    assert state.terminating


@pytest.mark.parametrize("presence", ["enabled", None])
def test_cordoning_repeats_cordon_until_confirmed(presence: Presence | None) -> None:
    state = DrainState(
        phase=Phase.CORDONING, terminating=True, terminating_since=T0, last_heartbeat_at=T0
    )
    new, actions = step(state, terminating_obs(busy(T0), presence), T0 + 5, CFG)
    assert new.phase is Phase.CORDONING
    assert kinds(actions) == [K.CORDON]


@pytest.mark.parametrize("presence", ["cordoned", "disabled", "absent"])
def test_cordoning_confirmed_by_scalelite(presence: Presence) -> None:
    state = DrainState(
        phase=Phase.CORDONING, terminating=True, terminating_since=T0, last_heartbeat_at=T0
    )
    new, actions = step(state, terminating_obs(busy(T0), presence), T0 + 5, CFG)
    assert new.phase is Phase.CORDONED
    assert new.cordoned_at == T0 + 5
    assert actions == ()


def test_cordon_success_confirms_at_once() -> None:
    state = DrainState(phase=Phase.CORDONING, terminating=True)
    new = record(state, Action(K.CORDON), Outcome.OK, T0)
    assert (new.phase, new.cordoned_at) == (Phase.CORDONED, T0)
    assert record(state, Action(K.CORDON), Outcome.FAILED, T0) == state


def test_waiting_with_a_meeting_only_heartbeats() -> None:
    state = cordoned_terminating()
    for t in (T0 + 10, T0 + 30, T0 + 59):
        state, actions = step(state, terminating_obs(busy(t)), t, CFG)
        assert actions == ()
    state, actions = step(state, terminating_obs(busy(T0 + 60)), T0 + 60, CFG)
    assert kinds(actions) == [K.HEARTBEAT]
    state = record(state, actions[0], Outcome.OK, T0 + 61)
    assert state.last_heartbeat_at == T0 + 61


def test_heartbeat_failure_is_retried_next_round() -> None:
    state = cordoned_terminating()
    _, actions = step(state, terminating_obs(busy(T0 + 60)), T0 + 60, CFG)
    state = record(state, actions[0], Outcome.FAILED, T0 + 60)
    _, actions = step(state, terminating_obs(busy(T0 + 65)), T0 + 65, CFG)
    assert kinds(actions) == [K.HEARTBEAT]


def test_clock_going_back_heartbeats_at_once() -> None:
    state = cordoned_terminating(T0)
    _, actions = step(state, terminating_obs(busy(T0 - 100)), T0 - 100, CFG)
    assert kinds(actions) == [K.HEARTBEAT]


def test_idle_then_grace_then_deregister() -> None:
    state = cordoned_terminating()
    state, actions = step(state, terminating_obs(idle(T0 + 10)), T0 + 10, CFG)
    assert state.idle_since == T0 + 10
    assert state.drained
    assert actions == ()
    state, actions = step(state, terminating_obs(idle(T0 + 129)), T0 + 129, CFG)
    assert K.DEREGISTER not in kinds(actions)
    state, actions = step(state, terminating_obs(idle(T0 + 130)), T0 + 130, CFG)
    assert kinds(actions)[0] == K.DEREGISTER
    assert not actions[0].forced
    state = record(state, actions[0], Outcome.OK, T0 + 131)
    assert state.phase is Phase.DEREGISTERED


def test_idle_reading_from_before_the_cordon_does_not_count() -> None:
    state = cordoned_terminating(T0)
    state, _ = step(state, terminating_obs(idle(T0)), T0 + 5, CFG)
    assert state.idle_since is None
    state, _ = step(state, terminating_obs(idle(T0 - 20)), T0 + 500, CFG)
    assert state.idle_since is None


@pytest.mark.parametrize(
    "interruption",
    [
        busy(T0 + 100),
        UNKNOWN,
        SnapshotView(meetings=0, pending_recordings=1, observed_at=T0 + 100),
        SnapshotView(meetings=0, pending_recordings=None, observed_at=T0 + 100),
    ],
    ids=["meeting", "unknown", "recording_pending", "recordings_unknown"],
)
def test_anything_but_idle_restarts_the_grace(interruption: SnapshotView) -> None:
    state = cordoned_terminating()
    state, _ = step(state, terminating_obs(idle(T0 + 10)), T0 + 10, CFG)
    state, actions = step(state, terminating_obs(interruption), T0 + 100, CFG)
    assert state.idle_since is None
    assert K.DEREGISTER not in kinds(actions)
    state, actions = step(state, terminating_obs(idle(T0 + 200)), T0 + 200, CFG)
    assert state.idle_since == T0 + 200
    assert K.DEREGISTER not in kinds(actions)
    state, actions = step(state, terminating_obs(idle(T0 + 320)), T0 + 320, CFG)
    assert K.DEREGISTER in kinds(actions)


def test_zero_grace_deregisters_on_the_first_idle_reading() -> None:
    config = dataclasses.replace(CFG, recording_grace=0)
    _, actions = step(cordoned_terminating(), terminating_obs(idle(T0 + 1)), T0 + 1, config)
    assert K.DEREGISTER in kinds(actions)


def test_re_enabled_while_terminating_is_cordoned_again() -> None:
    state, _ = step(cordoned_terminating(), terminating_obs(idle(T0 + 10)), T0 + 10, CFG)
    state, actions = step(state, terminating_obs(idle(T0 + 20), "enabled"), T0 + 20, CFG)
    assert state.phase is Phase.CORDONING
    assert state.idle_since is None
    assert kinds(actions) == [K.CORDON]


def test_deregistered_waits_for_safe_data_then_removes_dns() -> None:
    state = dataclasses.replace(cordoned_terminating(), phase=Phase.DEREGISTERED)
    for view in (busy(T0 + 5), UNKNOWN, SnapshotView(0, 2, T0 + 5)):
        _, actions = step(state, terminating_obs(view, "absent"), T0 + 5, CFG)
        assert actions == ()
    _, actions = step(state, terminating_obs(idle(T0 + 5), "absent"), T0 + 5, CFG)
    assert kinds(actions) == [K.DELETE_DNS]
    state = record(state, actions[0], Outcome.OK, T0 + 6)
    assert state.phase is Phase.DNS_REMOVED


def test_dns_removed_completes_when_safe() -> None:
    state = dataclasses.replace(cordoned_terminating(), phase=Phase.DNS_REMOVED)
    _, actions = step(state, terminating_obs(busy(T0 + 5), "absent"), T0 + 5, CFG)
    assert actions == ()
    _, actions = step(state, terminating_obs(idle(T0 + 5), "absent"), T0 + 5, CFG)
    assert kinds(actions) == [K.COMPLETE]
    assert record(state, actions[0], Outcome.FAILED, T0 + 6) == state
    done = record(state, actions[0], Outcome.OK, T0 + 6)
    assert done.phase is Phase.COMPLETED
    assert not done.lifecycle_gone
    gone = record(state, actions[0], Outcome.GONE, T0 + 6)
    assert (gone.phase, gone.lifecycle_gone) == (Phase.COMPLETED, True)


def test_completed_does_nothing_not_even_heartbeat() -> None:
    state = dataclasses.replace(cordoned_terminating(), phase=Phase.COMPLETED)
    new, actions = step(state, terminating_obs(busy(T0 + 1000), "absent"), T0 + 1000, CFG)
    assert actions == ()
    assert new.phase is Phase.COMPLETED


def test_lifecycle_gone_stops_heartbeats_and_skips_complete() -> None:
    state = cordoned_terminating()
    state = record(state, Action(K.HEARTBEAT), Outcome.GONE, T0 + 1)
    assert state.lifecycle_gone
    _, actions = step(state, terminating_obs(busy(T0 + 500)), T0 + 500, CFG)
    assert actions == ()
    state = dataclasses.replace(state, phase=Phase.DNS_REMOVED)
    state, actions = step(state, terminating_obs(idle(T0 + 600), "absent"), T0 + 600, CFG)
    assert state.phase is Phase.COMPLETED
    assert actions == ()


def test_stale_results_do_not_move_the_phase() -> None:
    state = cordoned_terminating()
    assert record(state, Action(K.DELETE_DNS), Outcome.OK, T0) == state
    assert record(state, Action(K.COMPLETE), Outcome.OK, T0) == state
    assert record(state, Action(K.ENABLE), Outcome.OK, T0) == state


# ------------------------------------------------------------------ forced (max_drain_time)


def test_never_forced_by_default() -> None:
    state = cordoned_terminating()
    for t in (T0 + 3600, T0 + 86_400 * 30):
        state, actions = step(state, terminating_obs(busy(t)), t, CFG)
        assert K.DEREGISTER not in kinds(actions)
    assert not state.forced


def test_forced_after_max_drain_time_is_marked() -> None:
    config = dataclasses.replace(CFG, max_drain_time=900)
    state = cordoned_terminating()
    _, actions = step(state, terminating_obs(busy(T0 + 899)), T0 + 899, config)
    assert K.DEREGISTER not in kinds(actions)
    state, actions = step(state, terminating_obs(busy(T0 + 900)), T0 + 900, config)
    assert Action(K.DEREGISTER, forced=True) in actions
    assert state.forced
    state = record(state, Action(K.DEREGISTER, forced=True), Outcome.OK, T0 + 900)
    state, actions = step(state, terminating_obs(UNKNOWN, "absent"), T0 + 901, config)
    assert Action(K.DELETE_DNS, forced=True) in actions
    state = record(state, Action(K.DELETE_DNS, forced=True), Outcome.OK, T0 + 901)
    state, actions = step(state, terminating_obs(busy(T0 + 902), "absent"), T0 + 902, config)
    assert Action(K.COMPLETE, forced=True) in actions


def test_operator_drain_is_never_forced() -> None:
    config = dataclasses.replace(CFG, max_drain_time=1)
    state = DrainState(phase=Phase.CORDONED, operator=True, cordoned_at=T0)
    _, actions = step(
        state, Observation(busy(T0 + 10_000), "InService", "cordoned"), T0 + 1e4, config
    )
    assert actions == ()


# ------------------------------------------------------------------ operator drain/undrain


def test_operator_drain_cordons_waits_and_never_leaves_by_itself() -> None:
    state, actions = step(
        DrainState(), Observation(busy(T0), "InService", "enabled", "drain"), T0, CFG
    )
    assert (state.phase, state.operator) == (Phase.CORDONING, True)
    assert kinds(actions) == [K.CORDON]
    state = record(state, actions[0], Outcome.OK, T0)
    for t in (T0 + 10, T0 + 1000, T0 + 100_000):
        state, actions = step(state, Observation(idle(t), "InService", "disabled"), t, CFG)
        assert actions == ()
    assert state.drained
    assert state.draining
    assert not state.may_enable


def test_operator_drain_then_termination_continues() -> None:
    state = DrainState(phase=Phase.CORDONED, operator=True, cordoned_at=T0, idle_since=T0 + 1)
    state, actions = step(state, terminating_obs(idle(T0 + 200)), T0 + 200, CFG)
    assert state.terminating
    assert kinds(actions) == [K.DEREGISTER, K.HEARTBEAT]


def test_undrain_re_enables_until_scalelite_agrees() -> None:
    state = DrainState(phase=Phase.CORDONED, operator=True, cordoned_at=T0)
    state, actions = step(state, Observation(busy(T0), "InService", "cordoned", "undrain"), T0, CFG)
    assert (state.phase, state.enable_pending) == (Phase.SERVING, True)
    assert kinds(actions) == [K.ENABLE]
    state, actions = step(state, Observation(busy(T0), "InService", None), T0 + 5, CFG)
    assert kinds(actions) == [K.ENABLE]
    state, actions = step(state, Observation(busy(T0), "InService", "enabled"), T0 + 10, CFG)
    assert actions == ()
    assert not state.enable_pending


def test_undrain_is_ignored_while_terminating() -> None:
    state = cordoned_terminating()
    new, actions = step(
        state, Observation(busy(T0 + 1), TERMINATED, "cordoned", "undrain"), T0 + 1, CFG
    )
    assert new.phase is Phase.CORDONED
    assert K.ENABLE not in kinds(actions)


def test_undrain_and_termination_in_the_same_round_terminate() -> None:
    state = DrainState(phase=Phase.CORDONED, operator=True, cordoned_at=T0)
    new, actions = step(
        state, Observation(busy(T0 + 1), TERMINATED, "cordoned", "undrain"), T0 + 1, CFG
    )
    assert new.terminating
    assert new.phase is Phase.CORDONED
    assert K.ENABLE not in kinds(actions)


def test_operator_drain_re_enabled_from_outside_returns_to_serving() -> None:
    state = DrainState(phase=Phase.CORDONED, operator=True, cordoned_at=T0)
    state, actions = step(state, Observation(busy(T0 + 5), "InService", "enabled"), T0 + 5, CFG)
    assert state.phase is Phase.SERVING
    assert not state.operator
    assert actions == ()


def test_drain_request_while_terminating_changes_nothing_but_the_flag() -> None:
    state = cordoned_terminating()
    new, _ = step(state, Observation(busy(T0 + 1), TERMINATED, "cordoned", "drain"), T0 + 1, CFG)
    assert new == dataclasses.replace(state, operator=True)


# ------------------------------------------------------------------- adapter, fake world


def make_snapshot(meetings: int | None, at: float, pending: int = 0) -> Snapshot:
    return snapshots.make_snapshot(meetings, pending, at, at if meetings is not None else None)


@dataclass
class World:
    """A fake fleet: IMDS, Scalelite and the lifecycle action, with failures on demand."""

    target: str = "InService"
    presence: Presence = "enabled"
    action_open: bool = True
    calls: list[str] = field(default_factory=list)
    failing: dict[str, int] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    scalelite_down: bool = False

    async def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.scalelite_down and name in ("presence", "cordon", "enable", "deregister"):
            raise ConnectionError("Scalelite is down")
        if name in self.hang:
            await asyncio.Event().wait()
        left = self.failing.get(name, 0)
        if left:
            self.failing[name] = left - 1
            raise ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, name)

    async def target_lifecycle_state(self) -> str | None:
        await self._enter("target")
        return self.target

    async def scalelite_state(self) -> Presence:
        await self._enter("presence")
        return self.presence

    async def lifecycle_open(self) -> bool | None:
        await self._enter("lifecycle_open")
        return self.action_open

    async def cordon(self) -> None:
        await self._enter("cordon")
        if self.presence == "enabled":
            self.presence = "cordoned"

    async def enable(self) -> None:
        await self._enter("enable")
        if self.presence != "absent":
            self.presence = "enabled"

    async def deregister(self) -> None:
        await self._enter("deregister")
        self.presence = "absent"

    async def delete_dns(self) -> None:
        await self._enter("delete_dns")

    async def heartbeat(self) -> None:
        await self._enter("heartbeat")
        if not self.action_open:
            raise LifecycleActionGone("No active Lifecycle Action found")

    async def complete(self) -> None:
        await self._enter("complete")
        if not self.action_open:
            raise LifecycleActionGone("No active Lifecycle Action found")
        self.action_open = False

    def effects(self) -> list[str]:
        reads = {"target", "presence", "lifecycle_open"}
        return [c for c in self.calls if c not in reads]


@dataclass
class Host:
    clock: FakeClock
    meetings: int | None = 1
    pending: int = 0

    def snapshot(self) -> Snapshot:
        return make_snapshot(self.meetings, self.clock.now, self.pending)


def make_drain(
    world: World, host: Host, config: DrainConfig = CFG, **kwargs: object
) -> tuple[Drain, list[DrainReport]]:
    reports: list[DrainReport] = []
    drain = Drain(
        world,
        config,
        host.snapshot,
        stale_after=30,
        poll_interval=5,
        clock=host.clock,
        report=reports.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return drain, reports


async def rounds(drain: Drain, clock: FakeClock, count: int, every: float = 5) -> DrainState:
    state = drain.state
    for _ in range(count):
        clock.advance(every)
        state = await drain.round()
    assert state is not None
    return state


async def test_adapter_full_drain_with_failures() -> None:
    clock = FakeClock(T0)
    world = World()
    host = Host(clock, meetings=2)
    drain, reports = make_drain(world, host)
    await drain.resume()
    assert drain.state == DrainState()

    world.target = TERMINATED
    world.failing["cordon"] = 1
    state = await rounds(drain, clock, 1)
    assert state.phase is Phase.CORDONING
    assert reports[-1].failed == (K.CORDON,)
    assert world.effects() == ["cordon", "heartbeat"]
    state = await rounds(drain, clock, 1)
    assert state.phase is Phase.CORDONED
    assert world.presence == "cordoned"

    # An hour with meetings: heartbeats every minute, nothing else.
    world.calls.clear()
    state = await rounds(drain, clock, 720)
    assert set(world.effects()) == {"heartbeat"}
    assert 59 <= len(world.effects()) <= 61

    # Scalelite down and heartbeats throttled now and then: the grace passes, but
    # deregistration fails and nothing after it may happen.
    world.scalelite_down = True
    world.failing["heartbeat"] = 2
    host.meetings = 0
    world.calls.clear()
    state = await rounds(drain, clock, 60)
    assert set(world.effects()) == {"heartbeat", "deregister"}
    assert state.phase is Phase.CORDONED
    assert K.DEREGISTER in reports[-1].failed

    # Scalelite back: the steps in order, a failed completion retried.
    world.scalelite_down = False
    world.calls.clear()
    world.failing["complete"] = 1
    state = await rounds(drain, clock, 10)
    assert state.phase is Phase.COMPLETED
    progress = [c for c in world.effects() if c != "heartbeat"]
    assert progress == ["deregister", "delete_dns", "complete", "complete"]
    assert (world.presence, world.action_open) == ("absent", False)
    world.calls.clear()
    await rounds(drain, clock, 50)
    assert world.effects() == []


async def test_adapter_never_progresses_while_data_unknown() -> None:
    clock = FakeClock(T0)
    world = World(target=TERMINATED, presence="cordoned")
    host = Host(clock, meetings=None)
    drain, reports = make_drain(world, host)
    await drain.resume()
    state = await rounds(drain, clock, 2000)
    assert state.phase is Phase.CORDONED
    assert set(world.effects()) == {"heartbeat"}
    assert "scalelite" not in reports[-1].unknown


async def test_adapter_forced_drain_is_reported() -> None:
    clock = FakeClock(T0)
    world = World(target=TERMINATED, presence="cordoned")
    host = Host(clock, meetings=3)
    drain, reports = make_drain(world, host, dataclasses.replace(CFG, max_drain_time=600))
    await drain.resume()
    state = await rounds(drain, clock, 130)
    assert state.phase is Phase.COMPLETED
    assert state.forced
    forced = [a for r in reports for a in r.executed if a.forced]
    assert [a.kind for a in forced] == [K.DEREGISTER, K.DELETE_DNS, K.COMPLETE]


async def test_hanging_scalelite_does_not_hold_heartbeats() -> None:
    clock = FakeClock(T0)
    world = World(target=TERMINATED, presence="cordoned")
    world.hang.add("presence")
    host = Host(clock, meetings=1)
    drain, reports = make_drain(world, host, call_timeout=0.01)
    await drain.resume()
    assert drain.state is not None
    assert drain.state.phase is Phase.CORDONING  # Scalelite unknown: cordon again, harmless
    state = await rounds(drain, clock, 1, every=60)
    assert "heartbeat" in world.effects()
    assert state.last_heartbeat_at == clock.now
    assert reports[-1].unknown == ("scalelite",)


async def test_requests_drain_and_undrain() -> None:
    clock = FakeClock(T0)
    world = World()
    host = Host(clock, meetings=1)
    drain, _ = make_drain(world, host)
    await drain.resume()
    assert drain.request("drain")
    state = await rounds(drain, clock, 3)
    assert (state.phase, world.presence) == (Phase.CORDONED, "cordoned")
    host.meetings = 0
    state = await rounds(drain, clock, 100)
    assert state.drained
    assert "deregister" not in world.calls
    assert drain.request("undrain")
    state = await rounds(drain, clock, 2)
    assert (state.phase, world.presence) == (Phase.SERVING, "enabled")

    world.target = TERMINATED
    await rounds(drain, clock, 1)
    assert not drain.request("undrain")


async def test_run_resumes_then_polls_with_injected_sleep() -> None:
    clock = FakeClock(T0)
    world = World(target=TERMINATED, presence="absent", action_open=False)
    host = Host(clock, meetings=0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise asyncio.CancelledError

    drain, _ = make_drain(world, host, sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        await drain.run()
    assert slept == [5, 5]
    assert drain.state is not None
    assert drain.state.phase is Phase.COMPLETED
    assert world.effects() == []


async def drive_until(drain: Drain, clock: FakeClock, phase: Phase, limit: int = 500) -> None:
    for _ in range(limit):
        clock.advance(5)
        state = await drain.round()
        if state.phase is phase:
            return
    raise AssertionError(f"never reached {phase}")


@pytest.mark.parametrize(
    "restart_in",
    [Phase.CORDONING, Phase.CORDONED, Phase.DEREGISTERED, Phase.DNS_REMOVED, Phase.COMPLETED],
)
async def test_restart_in_any_phase_resumes_without_harm(restart_in: Phase) -> None:
    clock = FakeClock(T0)
    world = World(target=TERMINATED)
    host = Host(clock, meetings=0)
    if restart_in is Phase.CORDONING:
        world.failing["cordon"] = 1000  # stuck cordoning when the process dies
    first, _ = make_drain(world, host)
    await first.resume()
    await drive_until(first, clock, restart_in)
    world.failing.clear()
    before = list(world.effects())

    second, _ = make_drain(world, host)
    resumed = await second.resume()
    expected = {
        Phase.CORDONING: Phase.CORDONING,
        Phase.CORDONED: Phase.CORDONED,
        Phase.DEREGISTERED: Phase.DEREGISTERED,
        # DNS removal is not visible in Scalelite: redone, which the DNS step makes harmless.
        Phase.DNS_REMOVED: Phase.DEREGISTERED,
        Phase.COMPLETED: Phase.COMPLETED,
    }[restart_in]
    assert resumed.phase is expected
    state = await rounds(second, clock, 100)
    assert state.phase is Phase.COMPLETED
    after = [c for c in world.effects()[len(before) :] if c != "heartbeat"]
    all_progress = [c for c in world.effects() if c in ("deregister", "delete_dns", "complete")]
    assert all_progress.count("complete") == 1
    assert "enable" not in world.calls
    if restart_in in (Phase.DEREGISTERED, Phase.DNS_REMOVED, Phase.COMPLETED):
        assert "deregister" not in after
        assert "cordon" not in after
    if restart_in is Phase.COMPLETED:
        assert after == []
    # Whatever happened, the order of the steps held.
    order = [c for c in world.effects() if c in ("cordon", "deregister", "delete_dns", "complete")]
    assert order.index("deregister") < order.index("delete_dns") < order.index("complete")


async def test_restart_with_a_meeting_waits_again_for_the_full_grace() -> None:
    clock = FakeClock(T0)
    world = World(target=TERMINATED, presence="cordoned")
    host = Host(clock, meetings=0)
    first, _ = make_drain(world, host)
    await first.resume()
    await rounds(first, clock, 20)  # 100 s of the 120 s grace
    second, _ = make_drain(world, host)
    await second.resume()
    await rounds(second, clock, 20)
    assert "deregister" not in world.calls
    await rounds(second, clock, 10)
    assert "deregister" in world.calls


# ---------------------------------------------------------------- integration (loopback)


LB_SECRET = "lb-secret"
BBB_SECRET = "bbb-secret"
HOOK = "bbbfleet-drain"


async def read_target_state(http: aiohttp.ClientSession, base: str) -> str | None:
    """A minimal IMDSv2 read (the node's own IMDS client is another module's job)."""
    async with http.put(f"{base}/latest/api/token", headers={imds.TTL_HEADER: "60"}) as response:
        response.raise_for_status()
        token = await response.text()
    path = f"{base}/latest/meta-data/autoscaling/target-lifecycle-state"
    async with http.get(path, headers={imds.TOKEN_HEADER: token}) as response:
        if response.status == 404:
            return None
        response.raise_for_status()
        return await response.text()


@dataclass
class Fleet:
    fleet: FleetIds
    instance_id: str
    layer: LifecycleLayer
    clock: FakeClock
    bbb: bbb_emulator.EmulatedBbb
    collector: Collector
    scalelite: ScaleliteEmulator
    scalelite_client: ScaleliteClient
    autoscaling: AutoScalingClient
    server_url: str
    port: FleetDrainPort
    dns_deleted: list[tuple[float, int | None]]

    def drain(self, **kwargs: object) -> tuple[Drain, list[DrainReport]]:
        reports: list[DrainReport] = []
        drain = Drain(
            self.port,
            DrainConfig(heartbeat_interval=60, recording_grace=120, max_drain_time=0),
            lambda: self.collector.latest,
            stale_after=30,
            poll_interval=5,
            clock=self.clock,
            report=reports.append,
            **kwargs,  # type: ignore[arg-type]
        )
        return drain, reports

    async def tick(self, drain: Drain, seconds: float = 5) -> DrainState:
        """Time passes: the layer applies deadlines, the collector polls, the drain runs."""
        self.clock.advance(seconds)
        await self.layer.tick()
        await self.collector.collect_once()
        return await drain.round()

    def waiting(self) -> bool:
        return any(a.instance_id == self.instance_id for a in self.layer.lifecycle_actions())

    def deadline(self) -> float:
        [action] = [a for a in self.layer.lifecycle_actions() if a.instance_id == self.instance_id]
        return action.deadline


@pytest_asyncio.fixture
async def real(
    make_fleet: MakeFleet,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
    tmp_path: Path,
) -> AsyncIterator[Fleet]:
    fleet = await make_fleet(
        FleetSpec(desired=2, termination_hook=HookSpec(HOOK, heartbeat_timeout=300))
    )
    instance_id = lifecycle_layer.instances()[0].instance_id
    bbb = bbb_emulator.EmulatedBbb(BBB_SECRET, clock=fake_clock)
    bbb_runner, bbb_port = await bbb_emulator.serve(bbb)
    scalelite = ScaleliteEmulator(LB_SECRET, clock=fake_clock)
    sl_runner, sl_port = await serve_scalelite(scalelite)
    imds_runner, imds_port = await imds.serve(
        imds.for_instance(lifecycle_layer, instance_id, clock=fake_clock)
    )
    imds_base = f"http://127.0.0.1:{imds_port}"
    session = aws.session(DEFAULT_REGION)
    dns_deleted: list[tuple[float, int | None]] = []
    try:
        async with (
            aiohttp.ClientSession() as http,
            session.client("autoscaling", config=aws.client_config(max_attempts=1)) as asg,
        ):
            client = BbbClient(http, bbb_emulator.client_url(bbb_port), BBB_SECRET, timeout=2)
            collector: Collector | None = None
            metrics = NodeMetrics(lambda: collector.latest if collector else None, fake_clock)
            collector = Collector(client, metrics, None, tmp_path / "rec", None, clock=fake_clock)
            scalelite_client = ScaleliteClient(
                http,
                f"http://127.0.0.1:{sl_port}/",
                LB_SECRET,
                timeout=2,
                retry=RetryPolicy(attempts=1),
                wait=wait_none(),
            )
            server_url = f"http://127.0.0.1:{bbb_port}/bigbluebutton/api/"

            async def delete_dns() -> None:
                latest = collector.latest if collector else None
                dns_deleted.append(
                    (fake_clock.now, None if latest is None else len(latest.meetings or ()))
                )

            port = FleetDrainPort(
                scalelite_client,
                server_url,
                AsgLifecycle(asg, fleet.asg_name, instance_id, HOOK),
                lambda: read_target_state(http, imds_base),
                delete_dns,
            )
            yield Fleet(
                fleet,
                instance_id,
                lifecycle_layer,
                fake_clock,
                bbb,
                collector,
                scalelite,
                scalelite_client,
                asg,
                server_url,
                port,
                dns_deleted,
            )
    finally:
        await imds_runner.cleanup()
        await scalelite.close()
        await sl_runner.cleanup()
        await bbb_runner.cleanup()


async def start_serving_with_meeting(real: Fleet) -> tuple[Drain, list[DrainReport]]:
    real.bbb.add_meeting("lecture", 12)
    await real.collector.collect_once()
    drain, reports = real.drain()
    state = await drain.resume()
    assert state.may_enable
    server = await registration.register(
        real.scalelite_client, real.server_url, BBB_SECRET, draining=not state.may_enable
    )
    assert server is not None
    assert server.state == "enabled"
    return drain, reports


async def terminate(real: Fleet) -> None:
    await real.autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=real.instance_id, ShouldDecrementDesiredCapacity=True
    )
    assert real.layer.target_lifecycle_state(real.instance_id) == TERMINATED


@pytest.mark.integration
async def test_termination_with_a_live_meeting_drains_without_ending_it(real: Fleet) -> None:
    drain, reports = await start_serving_with_meeting(real)
    await terminate(real)

    state = await real.tick(drain)
    assert state.terminating
    assert state.phase is Phase.CORDONED
    [server] = real.scalelite.servers()
    assert server.state == "cordoned"
    first_deadline = real.deadline()
    assert first_deadline == real.clock.now + 300

    # Far past the hook's own timeout: heartbeats keep the instance waiting.
    for _ in range(120):  # 10 minutes
        await real.tick(drain)
    assert real.waiting()
    assert real.deadline() > first_deadline + 500
    assert real.bbb.meeting("lecture") is not None
    assert real.scalelite.servers()[0].state == "cordoned"
    assert real.dns_deleted == []

    # AWS throttles a heartbeat: the next rounds send it again.
    real.layer.inject_fault("throttling", "RecordLifecycleActionHeartbeat", count=2)
    for _ in range(14):
        await real.tick(drain)
    assert any(K.HEARTBEAT in r.failed for r in reports)
    assert real.deadline() >= real.clock.now + 300 - 60

    # Scalelite goes down mid-drain: reads unknown, heartbeats go on, nothing progresses.
    real.scalelite.inject_outage("http_503")
    for _ in range(30):
        await real.tick(drain)
    assert real.waiting()
    assert reports[-1].unknown == ("scalelite",)
    real.scalelite.clear_faults()

    # BBB unreachable with the meeting gone: unknown is not idle.
    real.bbb.end_meeting("lecture")
    real.bbb.set_fault(bbb_emulator.FaultMode.HTTP_ERROR)
    for _ in range(60):
        await real.tick(drain)
    assert real.waiting()
    assert real.scalelite.servers() != ()
    real.bbb.clear_fault()

    # Fresh data, no meeting, grace over: leave in order, once.
    real.layer.inject_fault("throttling", "CompleteLifecycleAction", count=1)
    for _ in range(40):
        state = await real.tick(drain)
        if state.phase is Phase.COMPLETED:
            break
    assert state.phase is Phase.COMPLETED
    assert real.scalelite.servers() == ()
    assert len(real.dns_deleted) == 1
    assert real.dns_deleted[0][1] == 0
    assert any(K.COMPLETE in r.failed for r in reports)
    assert not real.waiting()
    assert real.instance_id not in {i.instance_id for i in real.layer.instances()}
    assert real.layer.target_lifecycle_state(real.instance_id) == TERMINATED
    # Nothing was forced, and the meeting was never ended by us (it ended by itself).
    assert not state.forced


@pytest.mark.integration
async def test_restart_mid_drain_resumes_from_aws_and_scalelite(real: Fleet) -> None:
    drain, _ = await start_serving_with_meeting(real)
    await terminate(real)
    for _ in range(3):
        await real.tick(drain)
    assert real.scalelite.servers()[0].state == "cordoned"

    # bbbnode restarts while the meeting still runs.
    restarted, _ = real.drain()
    state = await restarted.resume()
    assert (state.phase, state.terminating) == (Phase.CORDONED, True)
    assert not state.may_enable
    again = await registration.register(
        real.scalelite_client, real.server_url, BBB_SECRET, draining=not state.may_enable
    )
    assert again is not None
    assert again.state == "cordoned"
    for _ in range(60):
        await real.tick(restarted)
    assert real.waiting()
    assert real.bbb.meeting("lecture") is not None

    # The meeting ends; after deregistration bbbnode restarts once more.
    real.bbb.end_meeting("lecture")
    for _ in range(40):
        state = await real.tick(restarted)
        if state.phase is Phase.DEREGISTERED:
            break
    assert state.phase is Phase.DEREGISTERED
    assert real.scalelite.servers() == ()
    third, _ = real.drain()
    state = await third.resume()
    assert state.phase is Phase.DEREGISTERED
    assert (
        await registration.register(
            real.scalelite_client, real.server_url, BBB_SECRET, draining=not state.may_enable
        )
        is None
    )
    for _ in range(5):
        state = await real.tick(third)
    assert state.phase is Phase.COMPLETED
    assert real.scalelite.servers() == ()
    assert not real.waiting()

    # And once the instance is gone a fresh start finds nothing to do.
    fourth, _ = real.drain()
    assert (await fourth.resume()).phase is Phase.COMPLETED


@pytest.mark.integration
async def test_a_restart_in_the_terminating_moment_still_drains(real: Fleet) -> None:
    # AWS: "Terminating" for a moment before "Terminating:Wait"; IMDS already says
    # Terminated, the lifecycle action does not exist yet. Not "no hook".
    await start_serving_with_meeting(real)
    real.layer.terminating_pause = 30.0
    await terminate(real)
    restarted, reports = real.drain()
    state = await restarted.resume()
    assert (state.phase, state.terminating, state.lifecycle_gone) == (
        Phase.CORDONING,
        True,
        False,
    )
    state = await real.tick(restarted)
    assert state.phase is Phase.CORDONED
    assert real.scalelite.servers()[0].state == "cordoned"
    # The heartbeat finds no action yet: tried again, never taken for a hook that is gone.
    assert K.HEARTBEAT in reports[-1].failed
    assert not state.lifecycle_gone
    for _ in range(8):
        state = await real.tick(restarted)
    assert real.waiting()
    assert any(a.kind is K.HEARTBEAT for r in reports for a in r.executed)
    real.bbb.end_meeting("lecture")
    for _ in range(60):
        state = await real.tick(restarted)
        if state.phase is Phase.COMPLETED:
            break
    assert state.phase is Phase.COMPLETED
    assert not state.lifecycle_gone
    assert real.instance_id not in {i.instance_id for i in real.layer.instances()}


@pytest.mark.integration
async def test_an_empty_describe_is_not_the_end_of_the_hook(real: Fleet) -> None:
    await start_serving_with_meeting(real)
    await terminate(real)
    real.layer.inject_fault("empty", "DescribeAutoScalingInstances")
    restarted, _ = real.drain()
    state = await restarted.resume()
    assert (state.phase, state.lifecycle_gone) == (Phase.CORDONING, False)
    state = await real.tick(restarted)
    assert state.phase is Phase.CORDONED
    assert real.waiting()


@pytest.mark.integration
async def test_the_drain_knows_when_aws_ends_it_whatever_the_heartbeats(real: Fleet) -> None:
    real.bbb.add_meeting("lecture", 12)
    await real.collector.collect_once()
    lifecycle = AsgLifecycle(real.autoscaling, real.fleet.asg_name, real.instance_id, HOOK)
    drain, reports = real.drain(deadline=lifecycle.deadline)
    await drain.resume()
    await real.tick(drain)
    assert reports[-1].deadline is None
    started = real.clock.now
    await terminate(real)
    await real.tick(drain)
    # HeartbeatTimeout 300 s: 100 x 300 s, under 48 h, from the termination's start.
    assert reports[-1].deadline == pytest.approx(started + 30_000)
    metrics = NodeMetrics(lambda: None, real.clock)
    metrics.lifecycle_deadline = reports[-1].deadline
    text = metrics.render().decode()
    assert "bbbnode_lifecycle_timeout_remaining_seconds 29995.0" in text
    real.clock.advance(40_000)
    assert "bbbnode_lifecycle_timeout_remaining_seconds 0.0" in metrics.render().decode()
    metrics.lifecycle_deadline = None
    assert "bbbnode_lifecycle_timeout_remaining_seconds" not in metrics.render().decode()


# ------------------------------------------------------------------------ docs/iam.md


def test_iam_doc_allows_every_auto_scaling_call_the_node_makes() -> None:
    import json
    import re

    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "iam.md").read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block is not None
    policy = json.loads(block.group(1))
    allowed = {
        action
        for statement in policy["Statement"]
        for action in (
            [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        )
    }
    used: set[str] = set()
    for name in ("protector.py", "drain.py"):
        source = (root / "bbbnode" / name).read_text()
        for call in re.findall(r"self\._client\.([a-z_]+)\(", source):
            used.add("autoscaling:" + "".join(part.title() for part in call.split("_")))
    assert used == {
        "autoscaling:SetInstanceProtection",
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:RecordLifecycleActionHeartbeat",
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:DescribeLifecycleHooks",
        "autoscaling:DescribeScalingActivities",
    }
    assert used <= allowed
    assert not any(a.startswith("ec2:") for a in allowed)
    assert "autoscaling:TerminateInstanceInAutoScalingGroup" not in allowed
