"""Property tests: no sequence of events makes the drain leave, or the protector let go, early.

A hypothesis state machine drives the pure drain and protector through a model of the
world: meetings coming and going, the collector failing or stalling (stale data),
recordings pending, Scalelite outages and other actors changing the server, IMDS
errors, the ASG terminating the instance, the hook timing out, operator requests,
restarts from the truth, clock jumps both ways, and random failures of every call.

The safety checks are made against the raw snapshot, not the machine's own view of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from bbbnode.drain import (
    PROGRESS,
    TERMINATED,
    Action,
    ActionKind,
    Drain,
    DrainConfig,
    DrainState,
    LifecycleActionGone,
    Observation,
    Outcome,
    Phase,
    Truth,
    record,
    resume,
    step,
)
from bbbnode.protector import (
    ProtectorConfig,
    ProtectorState,
    ReadProtection,
    SetProtection,
    decide,
    protection_read,
    protection_set,
    view_of,
)
from bbbnode.registration import Presence
from bbbnode.snapshot import Snapshot
from tests.aws_fixtures import FakeClock
from tests.snapshots import make_snapshot

STALE_AFTER = 30.0
T0 = 1_767_225_600.0


def unsafe(snapshot: Snapshot | None, now: float) -> bool:
    """The rule, written out independently: any doubt means a meeting may be running."""
    if snapshot is None or snapshot.meetings is None or snapshot.meetings_at is None:
        return True
    if max(0.0, now - snapshot.meetings_at) > STALE_AFTER:
        return True
    if snapshot.recordings is None or snapshot.recordings.pending > 0:
        return True
    return len(snapshot.meetings) > 0


def meeting_or_unknown(snapshot: Snapshot | None, now: float) -> bool:
    if snapshot is None or snapshot.meetings is None or snapshot.meetings_at is None:
        return True
    return max(0.0, now - snapshot.meetings_at) > STALE_AFTER or len(snapshot.meetings) > 0


ALL_KINDS = list(ActionKind)


class FleetModel(RuleBasedStateMachine):
    """The world around one host, the drain and the protector acting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.snapshot: Snapshot | None = None
        self.meetings: int | None = 0
        self.pending: int | None = 0
        self.meetings_at: float | None = None
        self.target = "InService"
        self.imds_down = False
        self.presence: Presence = "enabled"
        self.scalelite_down = False
        self.action_open = False
        self.asg_protected = False
        self.config = DrainConfig()
        self.protector_config = ProtectorConfig()
        self.drain = DrainState()
        self.protector = ProtectorState()
        self.told_terminating: list[float] = []
        self.request: Literal["drain", "undrain"] | None = None
        self.emitted: list[Action] = []

    @initialize(
        heartbeat=st.sampled_from([10.0, 60.0, 300.0]),
        grace=st.sampled_from([0.0, 30.0, 120.0]),
        max_drain=st.sampled_from([0.0, 0.0, 600.0, 3600.0]),
        idle_grace=st.sampled_from([0.0, 60.0, 300.0]),
        recheck=st.sampled_from([30.0, 180.0]),
    )
    def configure(
        self, heartbeat: float, grace: float, max_drain: float, idle_grace: float, recheck: float
    ) -> None:
        self.config = DrainConfig(heartbeat, grace, max_drain)
        self.protector_config = ProtectorConfig(idle_grace, recheck)
        self.drain = resume(self._truth(lifecycle_known=True), self.now)
        self._note_truth()

    # ------------------------------------------------------------------ the world

    @rule(meetings=st.integers(0, 3), pending=st.one_of(st.none(), st.integers(0, 2)))
    def collect(self, meetings: int, pending: int | None) -> None:
        """The collector reads BBB and the recordings tree successfully."""
        self.meetings, self.pending, self.meetings_at = meetings, pending, self.now
        self.snapshot = make_snapshot(meetings, pending, self.now, self.now)

    @rule(
        meetings=st.integers(0, 2),
        pending=st.one_of(st.none(), st.integers(0, 1)),
        seconds=st.sampled_from([1.0, 5.0, 60.0, 130.0]),
        failing=st.sets(st.sampled_from(ALL_KINDS), max_size=2),
    )
    def tick(
        self, meetings: int, pending: int | None, seconds: float, failing: set[ActionKind]
    ) -> None:
        """Ordinary life, in one rule so that long runs are likely: time, a poll, a round."""
        self.time_passes(seconds)
        self.collect(meetings, pending)
        self.round(failing, protector_fails=False)

    @rule()
    def collect_fails(self) -> None:
        """getMeetings fails: meetings unknown, the last good read time stays."""
        self.snapshot = make_snapshot(None, self.pending, self.now, self.meetings_at)

    @rule(seconds=st.sampled_from([0.5, 5.0, 29.0, 31.0, 61.0, 125.0, 301.0, 700.0, 4000.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(seconds=st.sampled_from([1.0, 40.0, 3600.0]))
    def clock_jumps_back(self, seconds: float) -> None:
        self.now -= seconds

    @rule(down=st.booleans())
    def scalelite_outage(self, down: bool) -> None:
        self.scalelite_down = down

    @rule(state=st.sampled_from(["enabled", "cordoned", "disabled", "absent"]))
    def someone_else_changes_the_server(self, state: Presence) -> None:
        # Scalelite disables an empty cordoned server, operators and the scaler act too;
        # nobody adds a deleted server back while the host leaves.
        if self.presence != "absent":
            self.presence = state

    @rule(down=st.booleans())
    def imds_outage(self, down: bool) -> None:
        self.imds_down = down

    @precondition(lambda self: self.target != TERMINATED)
    @rule()
    def asg_terminates(self) -> None:
        self.target = TERMINATED
        self.action_open = True

    @precondition(lambda self: self.action_open)
    @rule()
    def hook_times_out(self) -> None:
        self.action_open = False

    @rule(kind=st.sampled_from(["drain", "undrain"]))
    def operator(self, kind: Literal["drain", "undrain"]) -> None:
        self.request = kind

    @rule(flag=st.booleans())
    def protection_drifts(self, flag: bool) -> None:
        self.asg_protected = flag

    @rule(lifecycle_known=st.booleans())
    def restart(self, lifecycle_known: bool) -> None:
        """bbbnode restarts: both machines start over from what they can read."""
        self.drain = resume(self._truth(lifecycle_known), self.now)
        self._note_truth()
        self.protector = ProtectorState()

    def _truth(self, lifecycle_known: bool) -> Truth:
        target = None if self.imds_down else self.target
        presence = None if self.scalelite_down else self.presence
        lifecycle = self.action_open if lifecycle_known and target == TERMINATED else None
        return Truth(target, presence, lifecycle)

    def _note_truth(self) -> None:
        if not self.imds_down and self.target == TERMINATED:
            self.told_terminating.append(self.now)

    # ------------------------------------------------------------- the machines run

    @rule(failing=st.sets(st.sampled_from(ALL_KINDS)), protector_fails=st.booleans())
    def round(self, failing: set[ActionKind], protector_fails: bool) -> None:
        now = self.now
        view = view_of(self.snapshot, now, STALE_AFTER)
        target = None if self.imds_down else self.target
        presence = None if self.scalelite_down else self.presence
        if target == TERMINATED:
            self.told_terminating.append(now)
        obs = Observation(view, target, presence, self.request)
        self.request = None
        before = self.drain
        state, actions = step(before, obs, now, self.config)
        self._check_drain(before, state, actions, now)
        for action in actions:
            state = record(state, action, self._execute(action, action.kind in failing), now)
        self.drain = state
        self.emitted.extend(actions)

        pstate, paction = decide(
            self.protector, view, now, self.protector_config, terminating=state.terminating
        )
        if isinstance(paction, SetProtection):
            assert paction.protected or not meeting_or_unknown(self.snapshot, now), (
                "protector unprotected with a meeting running or unknown data"
            )
            if not protector_fails:
                self.asg_protected = paction.protected
                pstate = protection_set(pstate, paction.protected, now)
        elif isinstance(paction, ReadProtection) and not protector_fails:
            pstate = protection_read(pstate, self.asg_protected, now)
        if state.terminating:
            assert paction is None, "the protector must stay out of a terminating drain"
        self.protector = pstate

    def _check_drain(
        self, before: DrainState, after: DrainState, actions: Sequence[Action], now: float
    ) -> None:
        for action in actions:
            if action.kind in PROGRESS:
                assert self.target == TERMINATED, "left the pool without being terminated"
                if unsafe(self.snapshot, now):
                    assert action.forced, f"{action.kind} with a meeting, unknown or stale data"
                    assert self.config.max_drain_time > 0
                    assert now - min(self.told_terminating) >= self.config.max_drain_time
            if action.kind is ActionKind.COMPLETE:
                assert self.presence == "absent", "completed while still in Scalelite"
            if action.kind is ActionKind.ENABLE:
                assert not after.terminating, "re-enabled a terminating host"
            if action.forced:
                assert after.forced
        if after.terminating and after.phase is not Phase.COMPLETED and not after.lifecycle_gone:
            last = after.last_heartbeat_at
            if last is None or now < last or now - last >= self.config.heartbeat_interval:
                assert ActionKind.HEARTBEAT in [a.kind for a in actions], "heartbeat skipped"
        if before.terminating:
            assert after.terminating, "forgot the termination"

    def _execute(self, action: Action, fails: bool) -> Outcome:
        kind = action.kind
        if kind in (ActionKind.HEARTBEAT, ActionKind.COMPLETE):
            if not self.action_open:
                return Outcome.GONE
            if fails:
                return Outcome.FAILED
            if kind is ActionKind.COMPLETE:
                self.action_open = False
            return Outcome.OK
        if kind is ActionKind.DELETE_DNS:
            return Outcome.FAILED if fails else Outcome.OK
        if fails or self.scalelite_down:
            return Outcome.FAILED
        if kind is ActionKind.CORDON and self.presence == "enabled":
            self.presence = "cordoned"
        elif kind is ActionKind.ENABLE and self.presence != "absent":
            self.presence = "enabled"
        elif kind is ActionKind.DEREGISTER:
            self.presence = "absent"
        return Outcome.OK

    @invariant()
    def operator_drain_never_leaves(self) -> None:
        if self.target != TERMINATED:
            assert self.drain.phase in (Phase.SERVING, Phase.CORDONING, Phase.CORDONED)

    def teardown(self) -> None:
        """Liveness: once the world is calm, a terminating host always finishes."""
        if self.target != TERMINATED:
            self.asg_terminates()
        self.scalelite_down = self.imds_down = False
        for _ in range(400):
            self.collect(0, 0)
            self.round(set(), protector_fails=False)
            if self.drain.phase is Phase.COMPLETED:
                break
            self.now += 5
        assert self.drain.phase is Phase.COMPLETED, self.drain
        assert self.presence == "absent" or self.drain.lifecycle_gone


TestFleetModel = FleetModel.TestCase
TestFleetModel.settings = settings(
    max_examples=500,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ------------------------------------------------- the adapter, end to end, over a fake port


Event = tuple[str, int]
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "meetings",
                "unknown",
                "pending",
                "advance",
                "back",
                "scalelite_down",
                "scalelite_up",
                "imds_down",
                "imds_up",
                "terminate",
                "terminate",
                "drain",
                "undrain",
                "restart",
                "round",
                *["tick"] * 8,
            ]
        ),
        st.integers(0, 3),
    ),
    min_size=10,
    max_size=150,
)


class Port:
    """A fake DrainPort that checks the host's snapshot at the moment of every call."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.target = "InService"
        self.presence: Presence = "enabled"
        self.scalelite_down = False
        self.imds_down = False
        self.action_open = False
        self.calls: list[str] = []
        self.violations: list[str] = []

    def _guard(self, name: str) -> None:
        # Recorded, not raised: the drain swallows every exception a call raises.
        self.calls.append(name)
        if name in ("deregister", "delete_dns", "complete"):
            if self.target != TERMINATED:
                self.violations.append(f"{name} without termination")
            if unsafe(self.host.snapshot, self.host.clock.now):
                self.violations.append(f"{name} with a meeting, unknown or stale data")
        if name == "enable" and self.target == TERMINATED and not self.imds_down:
            self.violations.append("enabled a terminating host")

    async def target_lifecycle_state(self) -> str | None:
        if self.imds_down:
            raise ConnectionError("IMDS down")
        return self.target

    async def scalelite_state(self) -> Presence:
        if self.scalelite_down:
            raise ConnectionError("Scalelite down")
        return self.presence

    async def lifecycle_open(self) -> bool | None:
        return self.action_open

    async def cordon(self) -> None:
        self._guard("cordon")
        if self.scalelite_down:
            raise ConnectionError("Scalelite down")
        if self.presence == "enabled":
            self.presence = "cordoned"

    async def enable(self) -> None:
        self._guard("enable")
        if self.scalelite_down:
            raise ConnectionError("Scalelite down")
        if self.presence != "absent":
            self.presence = "enabled"

    async def deregister(self) -> None:
        self._guard("deregister")
        if self.scalelite_down:
            raise ConnectionError("Scalelite down")
        self.presence = "absent"

    async def delete_dns(self) -> None:
        self._guard("delete_dns")

    async def heartbeat(self) -> None:
        self._guard("heartbeat")
        if not self.action_open:
            raise LifecycleActionGone("No active Lifecycle Action found")

    async def complete(self) -> None:
        self._guard("complete")
        if not self.action_open:
            raise LifecycleActionGone("No active Lifecycle Action found")
        self.action_open = False


@dataclasses.dataclass
class Host:
    clock: FakeClock
    snapshot: Snapshot | None = None


async def _play(events: list[Event], grace: float) -> list[str]:
    clock = FakeClock(T0)
    host = Host(clock)
    port = Port(host)

    def new_drain() -> Drain:
        return Drain(
            port,
            DrainConfig(heartbeat_interval=60, recording_grace=grace, max_drain_time=0),
            lambda: host.snapshot,
            stale_after=STALE_AFTER,
            poll_interval=5,
            clock=clock,
        )

    drain = new_drain()
    await drain.resume()
    last_ok: float | None = None
    for name, n in events:
        match name:
            case "meetings":
                host.snapshot = make_snapshot(n, 0, clock.now, clock.now)
                last_ok = clock.now
            case "unknown":
                host.snapshot = make_snapshot(None, 0, clock.now, last_ok)
            case "pending":
                host.snapshot = make_snapshot(0, n, clock.now, clock.now)
                last_ok = clock.now
            case "advance":
                clock.advance([1, 20, 61, 300][n])
            case "back":
                clock.advance(-[1, 20, 61, 300][n])
            case "scalelite_down" | "scalelite_up":
                port.scalelite_down = name == "scalelite_down"
            case "imds_down" | "imds_up":
                port.imds_down = name == "imds_down"
            case "terminate":
                if port.target != TERMINATED:
                    port.target, port.action_open = TERMINATED, True
            case "drain" | "undrain":
                drain.request(name)
            case "restart":
                drain = new_drain()
                await drain.resume()
            case "tick":
                clock.advance(5 if n < 2 else 61)
                meetings, pending = [(0, 0), (1, 0), (0, 1), (0, 0)][n]
                host.snapshot = make_snapshot(meetings, pending, clock.now, clock.now)
                last_ok = clock.now
                await drain.round()
            case _:
                await drain.round()
    return port.violations


@settings(max_examples=300, deadline=None)
@given(events=EVENTS, grace=st.sampled_from([0.0, 120.0]))
def test_adapter_never_calls_a_leaving_step_while_a_meeting_may_run(
    events: list[Event], grace: float
) -> None:
    assert asyncio.run(_play(events, grace)) == []
