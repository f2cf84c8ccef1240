"""Scale-in protection: the pure decision, the adapter with a fake API, and moto via the layer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import pytest_asyncio
from botocore.exceptions import ClientError

from bbbcore import aws
from bbbcore.bbb_api import BbbClient
from bbbcore.meetings import Meeting
from bbbnode.collector import Collector
from bbbnode.exposition import NodeMetrics
from bbbnode.protector import (
    UNKNOWN,
    AsgProtection,
    Protector,
    ProtectorConfig,
    ProtectorReport,
    ProtectorState,
    ReadProtection,
    SetProtection,
    SnapshotView,
    decide,
    protection_read,
    protection_set,
    view_of,
)
from bbbnode.recordings import RecordingCounts
from bbbnode.settings import ProtectionSettings
from bbbnode.snapshot import Snapshot
from bbbsim import bbb_emulator
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import DEFAULT_REGION, FleetIds, FleetSpec
from tests.aws_fixtures import FakeClock

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]
CONFIG = ProtectorConfig(idle_grace=300.0, recheck_interval=180.0)
RARE_RECHECK = ProtectorConfig(idle_grace=300.0, recheck_interval=10_000.0)
T0 = 1_000_000.0
BUSY = SnapshotView(meetings=2, pending_recordings=0, observed_at=T0)
IDLE = SnapshotView(meetings=0, pending_recordings=0, observed_at=T0)


def meeting(meeting_id: str = "m1") -> Meeting:
    return Meeting(
        meeting_id=meeting_id,
        internal_meeting_id=f"{meeting_id}-int",
        name=meeting_id,
        create_time_ms=0,
        running=True,
        participant_count=3,
        listener_count=0,
        voice_participant_count=1,
        video_count=0,
        moderator_count=1,
        max_users=0,
        is_breakout=False,
    )


def snapshot(
    meetings: int | None, at: float, *, pending: int | None = 0, meetings_at: float | None = None
) -> Snapshot:
    return Snapshot(
        taken_at=at,
        api_up=meetings is not None,
        meetings=None if meetings is None else tuple(meeting(f"m{i}") for i in range(meetings)),
        meetings_at=at if meetings_at is None and meetings is not None else meetings_at,
        recordings=None if pending is None else RecordingCounts(pending=pending),
    )


# --------------------------------------------------------------------------- view_of


def test_view_of_fresh_snapshot() -> None:
    view = view_of(snapshot(2, T0, pending=1), T0 + 5, stale_after=30)
    assert view == SnapshotView(meetings=2, pending_recordings=1, observed_at=T0)
    assert view.busy
    assert not view.idle


def test_view_of_unknown_and_stale_are_unknown() -> None:
    assert view_of(None, T0, 30) == UNKNOWN
    assert view_of(snapshot(None, T0, meetings_at=T0 - 1), T0, 30) == UNKNOWN
    assert view_of(snapshot(0, T0), T0 + 31, 30) == UNKNOWN
    assert view_of(snapshot(0, T0), T0 + 30, 30).idle


def test_view_of_recordings_unknown_is_not_idle() -> None:
    view = view_of(snapshot(0, T0, pending=None), T0, 30)
    assert view.meetings == 0
    assert view.pending_recordings is None
    assert not view.idle
    assert view_of(snapshot(0, T0, pending=None), T0, 30, recordings_tracked=False).idle


def test_settings_map_to_config() -> None:
    config = ProtectorConfig.from_settings(ProtectionSettings(idle_grace=12, recheck_interval=7))
    assert config == ProtectorConfig(idle_grace=12, recheck_interval=7)


# ----------------------------------------------------------------------- pure decide


def test_first_round_reads_the_flag() -> None:
    state, action = decide(ProtectorState(), UNKNOWN, T0, CONFIG)
    assert action == ReadProtection()
    assert state.want is None


def test_meeting_protects_at_once_even_with_flag_unknown() -> None:
    state, action = decide(ProtectorState(), BUSY, T0, CONFIG)
    assert action == SetProtection(True)
    assert state.want is True


def test_no_call_when_flag_matches_and_recheck_not_due() -> None:
    state = ProtectorState(want=True, actual=True, checked_at=T0)
    new, action = decide(state, BUSY, T0 + 10, CONFIG)
    assert action is None
    assert new == state


def test_idle_within_grace_keeps_protection() -> None:
    state = ProtectorState(want=True, actual=True, checked_at=T0)
    state, action = decide(state, IDLE, T0 + 1, RARE_RECHECK)
    assert action is None
    assert state.idle_since == T0 + 1
    state, action = decide(state, IDLE, T0 + 300, RARE_RECHECK)
    assert action is None
    state, action = decide(state, IDLE, T0 + 301, RARE_RECHECK)
    assert action == SetProtection(False)
    assert state.want is False


def test_meeting_during_grace_restarts_the_idle_clock() -> None:
    state = ProtectorState(want=True, actual=True, checked_at=T0)
    state, _ = decide(state, IDLE, T0, RARE_RECHECK)
    state, _ = decide(state, BUSY, T0 + 200, RARE_RECHECK)
    assert state.idle_since is None
    state, _ = decide(state, IDLE, T0 + 250, RARE_RECHECK)
    state, action = decide(state, IDLE, T0 + 400, RARE_RECHECK)
    assert action is None
    assert state.idle_since == T0 + 250


def test_unknown_data_never_unprotects_and_restarts_the_grace() -> None:
    state = ProtectorState(want=True, actual=True, checked_at=T0, idle_since=T0 - 1000)
    state, action = decide(state, UNKNOWN, T0, CONFIG)
    assert action is None
    assert state.idle_since is None
    assert state.want is True
    state, action = decide(state, IDLE, T0 + 10, CONFIG)
    assert action is None  # grace starts again from here


def test_unknown_data_does_not_enforce_a_pending_unprotect() -> None:
    # We wanted off, then someone protected it by hand, then the data went away.
    state = ProtectorState(want=False, actual=True, checked_at=T0)
    _, action = decide(state, UNKNOWN, T0 + 1, CONFIG)
    assert action is None


def test_unprotect_with_unknown_flag_reads_first() -> None:
    state = ProtectorState(idle_since=T0)
    state, action = decide(state, IDLE, T0 + 301, CONFIG)
    assert action == ReadProtection()
    state = protection_read(state, True, T0 + 302)
    _, action = decide(state, IDLE, T0 + 303, CONFIG)
    assert action == SetProtection(False)


def test_already_unprotected_is_left_alone() -> None:
    state = ProtectorState(idle_since=T0, actual=False, checked_at=T0 + 300)
    state, action = decide(state, IDLE, T0 + 301, CONFIG)
    assert action is None
    assert state.want is False


def test_recheck_reads_the_flag_and_drift_is_corrected() -> None:
    state = ProtectorState(want=True, actual=True, checked_at=T0)
    state, action = decide(state, BUSY, T0 + 180, CONFIG)
    assert action == ReadProtection()
    state = protection_read(state, False, T0 + 180)  # someone turned it off
    state, action = decide(state, BUSY, T0 + 185, CONFIG)
    assert action == SetProtection(True)


def test_drift_towards_protection_is_undone_only_after_grace() -> None:
    state = ProtectorState(want=False, actual=False, checked_at=T0, idle_since=T0 - 400)
    state = protection_read(state, True, T0)
    _, action = decide(state, IDLE, T0 + 1, CONFIG)
    assert action == SetProtection(False)


def test_clock_going_back_restarts_grace_and_rechecks() -> None:
    state = ProtectorState(want=True, actual=True, checked_at=T0, idle_since=T0)
    state, action = decide(state, IDLE, T0 - 50, CONFIG)
    assert state.idle_since == T0 - 50
    assert action == ReadProtection()


def test_terminating_freezes_the_protector() -> None:
    state = ProtectorState(want=True, actual=True, checked_at=T0, idle_since=T0 - 1000)
    for view in (IDLE, BUSY, UNKNOWN):
        new, action = decide(state, view, T0 + 10_000, CONFIG, terminating=True)
        assert action is None
        assert new == state


def test_results_fold_in() -> None:
    state = protection_set(ProtectorState(want=True), True, T0)
    assert state == ProtectorState(want=True, actual=True, checked_at=T0)
    state = protection_read(state, None, T0 + 1)
    assert state.actual is None
    assert state.checked_at == T0 + 1


# --------------------------------------------------------------------- adapter (fake)


class FakeApi:
    def __init__(self, actual: bool = False) -> None:
        self.actual = actual
        self.calls: list[str] = []
        self.fail_next = 0

    async def set_protected(self, protected: bool) -> None:
        self.calls.append(f"set:{protected}")
        self._maybe_fail()
        self.actual = protected

    async def read_protected(self) -> bool | None:
        self.calls.append("read")
        self._maybe_fail()
        return self.actual

    def _maybe_fail(self) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ClientError(
                {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}},
                "SetInstanceProtection",
            )


async def test_protector_round_trip_with_failures_and_report() -> None:
    clock = FakeClock(T0)
    current: list[Snapshot | None] = [snapshot(1, T0)]
    api = FakeApi()
    reports: list[ProtectorReport] = []
    protector = Protector(
        api,
        CONFIG,
        lambda: current[0],
        stale_after=30,
        interval=10,
        clock=clock,
        report=reports.append,
    )
    api.fail_next = 1
    await protector.round()
    assert reports[-1] == ProtectorReport(protected=None, error="Throttling")
    await protector.round()
    assert api.actual is True
    assert reports[-1] == ProtectorReport(protected=True)
    # Meeting over: nothing until the grace has passed.
    clock.advance(10)
    current[0] = snapshot(0, clock.now)
    await protector.round()
    assert api.calls == ["set:True", "set:True"]
    clock.advance(300)
    current[0] = snapshot(0, clock.now)
    await protector.round()
    assert api.actual is False
    assert reports[-1].protected is False


async def test_protector_stays_out_while_terminating() -> None:
    clock = FakeClock(T0)
    api = FakeApi(actual=True)
    protector = Protector(
        api,
        CONFIG,
        lambda: snapshot(0, clock.now),
        stale_after=30,
        interval=10,
        terminating=lambda: True,
        clock=clock,
    )
    for _ in range(3):
        clock.advance(1000)
        await protector.round()
    assert api.calls == []


async def test_run_uses_the_injected_sleep() -> None:
    clock = FakeClock(T0)
    api = FakeApi()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise RuntimeError("stop")

    protector = Protector(
        api, CONFIG, lambda: None, stale_after=30, interval=7, clock=clock, sleep=sleep
    )
    with pytest.raises(RuntimeError, match="stop"):
        await protector.run()
    assert slept == [7, 7, 7]
    assert api.calls == ["read"]


# ------------------------------------------------------------------ moto integration


SECRET = "bbb-secret"


@pytest_asyncio.fixture
async def autoscaling(aws_endpoint: str) -> AsyncIterator[AutoScalingClient]:
    session = aws.session(DEFAULT_REGION)
    async with session.client("autoscaling", config=aws.client_config(max_attempts=1)) as client:
        yield client


async def protected_flag(client: AutoScalingClient, instance_id: str) -> bool:
    answer = await client.describe_auto_scaling_instances(InstanceIds=[instance_id])
    return bool(answer["AutoScalingInstances"][0]["ProtectedFromScaleIn"])


@pytest.mark.integration
async def test_protection_follows_meetings_in_aws(
    make_fleet: MakeFleet,
    lifecycle_layer: LifecycleLayer,
    autoscaling: AutoScalingClient,
    fake_clock: FakeClock,
    tmp_path: Path,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    instance_id = lifecycle_layer.instances()[0].instance_id
    bbb = bbb_emulator.EmulatedBbb(SECRET, clock=fake_clock)
    runner, port = await bbb_emulator.serve(bbb)
    try:
        async with aiohttp.ClientSession() as http:
            client = BbbClient(http, bbb_emulator.client_url(port), SECRET, "sha256", timeout=2)
            collector: Collector | None = None
            metrics = NodeMetrics(lambda: collector.latest if collector else None, fake_clock)
            collector = Collector(client, metrics, None, tmp_path / "rec", None, clock=fake_clock)
            reports: list[ProtectorReport] = []
            protector = Protector(
                AsgProtection(autoscaling, fleet.asg_name, instance_id),
                ProtectorConfig(idle_grace=300, recheck_interval=180),
                lambda: collector.latest,
                stale_after=30,
                interval=10,
                clock=fake_clock,
                report=reports.append,
            )

            # A meeting starts: protected at once.
            bbb.add_meeting("lecture", 5)
            await collector.collect_once()
            await protector.round()
            assert await protected_flag(autoscaling, instance_id) is True
            assert reports[-1] == ProtectorReport(protected=True)

            # Someone lifts protection by hand: corrected at the next recheck.
            await autoscaling.set_instance_protection(
                AutoScalingGroupName=fleet.asg_name,
                InstanceIds=[instance_id],
                ProtectedFromScaleIn=False,
            )
            fake_clock.advance(180)
            await collector.collect_once()
            await protector.round()  # reads the drift
            await protector.round()  # corrects it
            assert await protected_flag(autoscaling, instance_id) is True

            # The meeting ends: still protected within the grace, off after it.
            bbb.end_meeting("lecture")
            fake_clock.advance(10)
            await collector.collect_once()
            await protector.round()
            fake_clock.advance(299)
            await collector.collect_once()
            await protector.round()
            assert await protected_flag(autoscaling, instance_id) is True
            fake_clock.advance(2)
            await collector.collect_once()
            await protector.round()
            assert await protected_flag(autoscaling, instance_id) is False
            assert reports[-1] == ProtectorReport(protected=False)

            # Throttled: the round reports the error and the next round retries.
            bbb.add_meeting("seminar", 2)
            fake_clock.advance(5)
            await collector.collect_once()
            lifecycle_layer.inject_fault("throttling", "SetInstanceProtection")
            await protector.round()
            assert reports[-1].error == "Throttling"
            assert await protected_flag(autoscaling, instance_id) is False
            await protector.round()
            assert await protected_flag(autoscaling, instance_id) is True

            # BBB unreachable: unknown data never lifts protection, whatever the clock says.
            bbb.set_fault(bbb_emulator.FaultMode.HTTP_ERROR)
            for _ in range(5):
                fake_clock.advance(400)
                await collector.collect_once()
                await protector.round()
            assert await protected_flag(autoscaling, instance_id) is True
    finally:
        await runner.cleanup()
