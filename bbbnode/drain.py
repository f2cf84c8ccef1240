"""The drain: leave the meeting pool without ending a meeting, on termination or on demand.

Phases (each names the last step known to be done)::

    SERVING ─── terminating, or operator drain ──▶ CORDONING   action: cordon (repeated)
       ▲                                              │ Scalelite: cordoned, disabled
       │ undrain, or re-enabled from outside          │ or absent (or cordon succeeded)
       │ (both only when not terminating)             ▼
       └──────────────────────────────────────── CORDONED    waiting; re-enabled while
                                                      │       terminating: CORDONING
            terminating only: safe, with data read after the cordon, for
            ``recording_grace`` seconds without a break  ──▶  action: deregister
                                                      ▼
                                                 DEREGISTERED   safe ──▶ action: delete DNS
                                                      ▼
                                                 DNS_REMOVED    safe ──▶ action: complete
                                                      ▼
                                                 COMPLETED      nothing more, no heartbeat

"safe" is the same test every round: the latest snapshot is fresh, reports no
meeting and no pending recording. Unknown or stale data is never safe. Only a
``max_drain_time`` > 0 that has passed since termination was seen overrides it
(a forced drain, logged as an error). While terminating, the lifecycle action is
heartbeated every ``heartbeat_interval`` in every phase before COMPLETED.

The core is pure: :func:`step` (state, observation, now) → (state, actions),
:func:`record` folds an action's outcome back in, :func:`resume` derives the
state from the truth in IMDS, Scalelite and Auto Scaling after a restart.
:class:`Drain` gathers observations and executes actions through a
:class:`DrainPort`; a failed call changes nothing and is tried again next round.

AWS's limits the drain lives with ("How lifecycle hooks work", "Amazon EC2 Auto
Scaling lifecycle hooks", EC2 Auto Scaling User Guide; LifecycleHook, API
Reference):

- the hook's global timeout, the lesser of 100 x HeartbeatTimeout and 48 h,
  ends the wait with the hook's DefaultResult whatever the heartbeats: nothing
  extends it, so the drain reads when it falls (:meth:`AsgLifecycle.deadline`)
  and bbbnode exports the seconds left for the alert rules;
- an instance is ``Terminating`` for a moment before ``Terminating:Wait``: IMDS
  already says ``Terminated``, the lifecycle action does not exist yet, and a
  describe may not list the instance at all. Neither means "no hook": the drain
  goes on, and only a describe that shows the wait over makes an action gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

from bbbcore import aws, logs
from bbbcore.scalelite import ScaleliteClient
from bbbnode import registration
from bbbnode.protector import SnapshotView, view_of
from bbbnode.registration import Presence
from bbbnode.snapshot import Snapshot

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient

    from bbbnode.settings import LifecycleSettings

log = logs.get(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Request = Literal["drain", "undrain"]

TERMINATED: Final = "Terminated"
"""IMDS ``autoscaling/target-lifecycle-state`` once the ASG is terminating the instance."""
WAITING_STATES: Final = frozenset(
    {"Terminating:Wait", "Warmed:Terminating:Wait", "Warmed:Pending:Wait"}
)
"""Where a termination hook holds an instance: leaving the group, leaving the warm pool, or
(ReuseOnScaleIn) going back into the warm pool, which pauses "at the Warmed:Pending:Wait
state for the autoscaling:EC2_INSTANCE_TERMINATING lifecycle action" ("Use lifecycle
hooks with a warm pool", EC2 Auto Scaling User Guide)."""
BEFORE_WAIT: Final = frozenset({"Terminating", "Warmed:Terminating", "Warmed:Pending"})
PAST_WAIT: Final = frozenset(
    {
        "Terminating:Proceed",
        "Terminated",
        "Warmed:Terminating:Proceed",
        "Warmed:Terminated",
        "Warmed:Pending:Proceed",
        "Warmed:Stopped",
        "Warmed:Running",
        "Warmed:Hibernated",
    }
)
"""ASG states after the termination hooks: no lifecycle action any more."""


def leaving(target: str | None) -> bool:
    """The target lifecycle state of a host that served and now leaves service: the group
    terminates it, or (a warm pool's ReuseOnScaleIn) puts it back into the pool."""
    return target == TERMINATED or (target is not None and target.startswith("Warmed:"))


ACTIVITY_ENDED: Final = frozenset({"Successful", "Failed", "Cancelled"})
"""Scaling activity StatusCodes of an activity that is over (Activity, API Reference)."""
MAX_GLOBAL_TIMEOUT: Final = 172_800
"""48 h: the longest any lifecycle hook holds an instance (LifecycleHook.GlobalTimeout)."""
DEFAULT_HEARTBEAT_TIMEOUT: Final = 3600
"""PutLifecycleHook's default HeartbeatTimeout."""


class Phase(enum.StrEnum):
    SERVING = "serving"
    CORDONING = "cordoning"
    CORDONED = "cordoned"
    DEREGISTERED = "deregistered"
    DNS_REMOVED = "dns_removed"
    COMPLETED = "completed"


class ActionKind(enum.StrEnum):
    CORDON = "cordon"
    ENABLE = "enable"
    HEARTBEAT = "heartbeat"
    DEREGISTER = "deregister"
    DELETE_DNS = "delete_dns"
    COMPLETE = "complete"


PROGRESS: Final = frozenset({ActionKind.DEREGISTER, ActionKind.DELETE_DNS, ActionKind.COMPLETE})
"""The steps that end the host's life in the pool: gated by the safe test."""


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    GONE = "gone"
    """The lifecycle action no longer exists (completed, timed out or abandoned)."""


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    forced: bool = False
    """Emitted only because ``max_drain_time`` passed, not because the host is idle."""


@dataclass(frozen=True, slots=True)
class DrainConfig:
    """The drain's timing, as plain values so the core stays pure."""

    heartbeat_interval: float = 60.0
    recording_grace: float = 120.0
    max_drain_time: float = 0.0
    """0: never force."""

    @classmethod
    def from_settings(cls, settings: LifecycleSettings) -> DrainConfig:
        return cls(
            heartbeat_interval=settings.heartbeat_interval,
            recording_grace=settings.recording_grace,
            max_drain_time=settings.max_drain_time,
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """One round's view of the world; ``None`` fields are unknown (a read failed)."""

    view: SnapshotView
    target_state: str | None = None
    scalelite: Presence | None = None
    request: Request | None = None


@dataclass(frozen=True, slots=True)
class Truth:
    """What a restarted drain reads before its first step."""

    target_state: str | None
    scalelite: Presence | None
    lifecycle_open: bool | None = None
    """Is our lifecycle action still pending (instance in Terminating:Wait)?"""


@dataclass(frozen=True, slots=True)
class DrainState:
    phase: Phase = Phase.SERVING
    terminating: bool = False
    """The ASG is terminating this instance (sticky: there is no way back)."""
    operator: bool = False
    """An operator asked for the drain (or the server was found cordoned at start)."""
    settled: bool = True
    """False until Scalelite's state has been read once after a restart."""
    terminating_since: float | None = None
    drain_started_at: float | None = None
    cordoned_at: float | None = None
    idle_since: float | None = None
    """First idle observation, with data taken after the cordon, of the current stretch."""
    last_heartbeat_at: float | None = None
    enable_pending: bool = False
    forced: bool = False
    """A step was ever forced by ``max_drain_time``."""
    lifecycle_gone: bool = False

    @property
    def draining(self) -> bool:
        """Leaving or held out of the pool: registration must not enable the server."""
        return self.terminating or self.phase is not Phase.SERVING

    @property
    def may_enable(self) -> bool:
        """Registration may enable the server now."""
        return self.settled and not self.draining

    @property
    def drained(self) -> bool:
        """Cordoned and seen idle (operator drains: safe to stop the host)."""
        return self.phase is not Phase.SERVING and self.idle_since is not None


def _heartbeat_due(state: DrainState, now: float, config: DrainConfig) -> bool:
    last = state.last_heartbeat_at
    # A clock that went backwards must not postpone heartbeats past the hook timeout.
    return last is None or now < last or now - last >= config.heartbeat_interval


def _forcing(state: DrainState, now: float, config: DrainConfig) -> bool:
    since = state.terminating_since
    return (
        config.max_drain_time > 0
        and state.terminating
        and since is not None
        and now - since >= config.max_drain_time
    )


def _cordoned(state: DrainState, now: float) -> DrainState:
    return dataclasses.replace(state, phase=Phase.CORDONED, cordoned_at=now, idle_since=None)


def _serving(state: DrainState) -> DrainState:
    return dataclasses.replace(
        state,
        phase=Phase.SERVING,
        operator=False,
        drain_started_at=None,
        cordoned_at=None,
        idle_since=None,
    )


def _idle_since(state: DrainState, view: SnapshotView, now: float) -> float | None:
    """Start or continue the idle stretch; any non-idle or unknown round ends it."""
    cordoned = state.cordoned_at
    if not view.idle or view.observed_at is None or cordoned is None:
        return None
    # A read from before the cordon could miss a meeting Scalelite placed just before it.
    if view.observed_at <= cordoned:
        return None
    since = state.idle_since
    return since if since is not None and since <= now else now


def _gated(kind: ActionKind, safe: bool, forcing: bool) -> tuple[Action, ...]:
    if safe:
        return (Action(kind),)
    return (Action(kind, forced=True),) if forcing else ()


def resume(truth: Truth, now: float) -> DrainState:
    """The state a restarted drain continues from, derived from the truth alone.

    Terminating: Scalelite absent ⇒ deregistration is done (DNS removal and
    completion, both idempotent, follow); cordoned/disabled ⇒ waiting; enabled
    or unknown ⇒ cordon (idempotent). The lifecycle action past its wait ⇒
    nothing left. ``Terminating`` before the wait, or a describe that does not
    list the instance, is unknown, never "no hook": the drain goes on.
    Not terminating: cordoned/disabled ⇒ an operator drain in progress (never
    re-enabled by a restart); unknown ⇒ not settled, decided once Scalelite answers.
    The grace period always starts again: a restart never shortens a wait.
    """
    if leaving(truth.target_state):
        base = DrainState(terminating=True, terminating_since=now, drain_started_at=now)
        if truth.lifecycle_open is False:
            return dataclasses.replace(base, phase=Phase.COMPLETED, lifecycle_gone=True)
        match truth.scalelite:
            case "absent":
                return dataclasses.replace(base, phase=Phase.DEREGISTERED, cordoned_at=now)
            case "cordoned" | "disabled":
                return _cordoned(base, now)
            case _:
                return dataclasses.replace(base, phase=Phase.CORDONING)
    match truth.scalelite:
        case "cordoned" | "disabled":
            return _cordoned(DrainState(operator=True, drain_started_at=now), now)
        case None:
            return DrainState(settled=False)
        case _:
            return DrainState()


def step(
    state: DrainState, obs: Observation, now: float, config: DrainConfig
) -> tuple[DrainState, tuple[Action, ...]]:
    """One round of the drain: the next state and the side effects to carry out."""
    s = state
    actions: list[Action] = []

    if not s.settled and obs.scalelite is not None:
        if (
            s.phase is Phase.SERVING
            and not s.terminating
            and obs.scalelite in ("cordoned", "disabled")
        ):
            s = _cordoned(dataclasses.replace(s, operator=True, drain_started_at=now), now)
        s = dataclasses.replace(s, settled=True)

    if leaving(obs.target_state) and not s.terminating:
        s = dataclasses.replace(s, terminating=True, terminating_since=now)

    if obs.request == "drain" and s.phase is Phase.SERVING:
        s = dataclasses.replace(
            s, phase=Phase.CORDONING, operator=True, drain_started_at=now, enable_pending=False
        )
    elif obs.request == "drain":
        s = dataclasses.replace(s, operator=True)
    elif obs.request == "undrain" and not s.terminating:
        s = dataclasses.replace(_serving(s), enable_pending=True)

    if s.terminating and s.phase is Phase.SERVING:
        s = dataclasses.replace(
            s, phase=Phase.CORDONING, drain_started_at=now, enable_pending=False
        )

    safe = obs.view.idle
    forcing = _forcing(s, now, config)

    match s.phase:
        case Phase.SERVING:
            if s.enable_pending:
                if obs.scalelite in ("enabled", "absent"):
                    s = dataclasses.replace(s, enable_pending=False)
                else:
                    actions.append(Action(ActionKind.ENABLE))
        case Phase.CORDONING:
            if obs.scalelite in ("cordoned", "disabled", "absent"):
                s = _cordoned(s, now)
            else:
                actions.append(Action(ActionKind.CORDON))
        case Phase.CORDONED if obs.scalelite == "enabled":
            if s.terminating:
                s = dataclasses.replace(s, phase=Phase.CORDONING, cordoned_at=None, idle_since=None)
                actions.append(Action(ActionKind.CORDON))
            else:
                # Re-enabled from outside (operator or scaler): the truth wins.
                s = _serving(s)
        case Phase.CORDONED:
            cordoned = s.cordoned_at
            if cordoned is None or cordoned > now:
                # The clock went back: "data taken after the cordon" is measured from here.
                s = dataclasses.replace(s, cordoned_at=now, idle_since=None)
            s = dataclasses.replace(s, idle_since=_idle_since(s, obs.view, now))
            since = s.idle_since
            # An idle stretch exists only while every round since its start was safe.
            if s.terminating and since is not None and now - since >= config.recording_grace:
                actions.append(Action(ActionKind.DEREGISTER))
            elif forcing:
                actions.append(Action(ActionKind.DEREGISTER, forced=True))
        case Phase.DEREGISTERED:
            actions.extend(_gated(ActionKind.DELETE_DNS, safe, forcing))
        case Phase.DNS_REMOVED if s.lifecycle_gone:
            s = dataclasses.replace(s, phase=Phase.COMPLETED)
        case Phase.DNS_REMOVED:
            actions.extend(_gated(ActionKind.COMPLETE, safe, forcing))
        case Phase.COMPLETED:
            pass
    if any(a.forced for a in actions):
        s = dataclasses.replace(s, forced=True)

    if (
        s.terminating
        and s.phase is not Phase.COMPLETED
        and not s.lifecycle_gone
        and _heartbeat_due(s, now, config)
    ):
        actions.append(Action(ActionKind.HEARTBEAT))
    return s, tuple(actions)


def record(state: DrainState, action: Action, outcome: Outcome, now: float) -> DrainState:
    """Fold an executed action's outcome into the state; a failure changes nothing."""
    if outcome is Outcome.FAILED:
        return state
    match action.kind:
        case ActionKind.HEARTBEAT:
            if outcome is Outcome.GONE:
                return dataclasses.replace(state, lifecycle_gone=True)
            return dataclasses.replace(state, last_heartbeat_at=now)
        case ActionKind.CORDON if state.phase is Phase.CORDONING:
            return _cordoned(state, now)
        case ActionKind.ENABLE if state.phase is Phase.SERVING:
            return dataclasses.replace(state, enable_pending=False)
        case ActionKind.DEREGISTER if state.phase is Phase.CORDONED:
            return dataclasses.replace(state, phase=Phase.DEREGISTERED)
        case ActionKind.DELETE_DNS if state.phase is Phase.DEREGISTERED:
            return dataclasses.replace(state, phase=Phase.DNS_REMOVED)
        case ActionKind.COMPLETE if state.phase is Phase.DNS_REMOVED:
            return dataclasses.replace(
                state, phase=Phase.COMPLETED, lifecycle_gone=outcome is Outcome.GONE
            )
    return state


# ----------------------------------------------------------------------------- adapter


class LifecycleActionGone(Exception):
    """Auto Scaling has no pending lifecycle action for this instance and hook."""


class DrainPort(Protocol):
    """Every side effect and read the drain needs; tests fake it or use the emulators."""

    async def target_lifecycle_state(self) -> str | None: ...

    async def scalelite_state(self) -> Presence: ...

    async def lifecycle_open(self) -> bool | None: ...

    async def cordon(self) -> None: ...

    async def enable(self) -> None: ...

    async def deregister(self) -> None: ...

    async def delete_dns(self) -> None: ...

    async def heartbeat(self) -> None: ...

    async def complete(self) -> None: ...


def _gone(exc: BaseException) -> bool:
    # Auto Scaling's answer when the action was completed, abandoned or timed out.
    return aws.error_code(exc) == "ValidationError" and "No active Lifecycle Action" in str(exc)


class AsgLifecycle:
    """The termination lifecycle action of one instance, through an Auto Scaling client."""

    def __init__(
        self, client: AutoScalingClient, asg_name: str, instance_id: str, hook_name: str
    ) -> None:
        self._client = client
        self._asg = asg_name
        self._instance = instance_id
        self._hook = hook_name

    async def heartbeat(self) -> None:
        try:
            await self._client.record_lifecycle_action_heartbeat(
                LifecycleHookName=self._hook,
                AutoScalingGroupName=self._asg,
                InstanceId=self._instance,
            )
        except Exception as exc:
            if _gone(exc):
                raise LifecycleActionGone(str(exc)) from exc
            raise

    async def complete(self) -> None:
        try:
            await self._client.complete_lifecycle_action(
                LifecycleHookName=self._hook,
                AutoScalingGroupName=self._asg,
                InstanceId=self._instance,
                LifecycleActionResult="CONTINUE",
            )
        except Exception as exc:
            if _gone(exc):
                raise LifecycleActionGone(str(exc)) from exc
            raise

    async def state(self) -> str | None:
        """The instance's LifecycleState in DescribeAutoScalingInstances; None: not listed."""
        answer = await self._client.describe_auto_scaling_instances(InstanceIds=[self._instance])
        for instance in answer.get("AutoScalingInstances", []):
            if instance.get("InstanceId") == self._instance:
                return str(instance.get("LifecycleState", "")) or None
        return None

    async def is_open(self) -> bool | None:
        """True in Terminating:Wait; False once past it (Terminating:Proceed, Terminated, or
        its termination activity ended); None when it cannot tell: the brief ``Terminating``
        before the wait, another state, or a describe that does not list the instance yet."""
        state = await self.state()
        if state in WAITING_STATES:
            return True
        if state in PAST_WAIT:
            return False
        if state is not None and state not in BEFORE_WAIT:
            return None
        # Not listed, or not waiting yet: the termination's activity tells an ended one.
        activity = await self._termination_activity()
        if activity is not None and str(activity.get("StatusCode")) in ACTIVITY_ENDED:
            return False
        return None

    async def _termination_activity(self) -> Mapping[str, Any] | None:
        """The newest scaling activity terminating this instance, or None."""
        # Newest first; this instance's termination started moments ago.
        answer = await self._client.describe_scaling_activities(
            AutoScalingGroupName=self._asg, MaxRecords=100
        )
        wanted = f"Terminating EC2 instance: {self._instance}"
        mine = [
            a
            for a in answer.get("Activities", [])
            if a.get("Description") == wanted and a.get("StartTime") is not None
        ]
        return max(mine, key=lambda a: a["StartTime"]) if mine else None

    async def deadline(self) -> float | None:
        """Epoch seconds at which AWS ends this termination's wait with the hook's
        DefaultResult, heartbeats or not; None while it cannot be told.

        The hook's GlobalTimeout (DescribeLifecycleHooks; the lesser of 100 x
        HeartbeatTimeout and 48 h where it is missing) from the start of the instance's
        termination activity (DescribeScalingActivities, "Terminating EC2 instance: <id>").
        The activity starts as the instance leaves service, a moment before the wait: the
        deadline errs early, never late.
        """
        hooks = await self._client.describe_lifecycle_hooks(
            AutoScalingGroupName=self._asg, LifecycleHookNames=[self._hook]
        )
        hook = next(iter(hooks.get("LifecycleHooks", [])), None)
        if hook is None:
            return None
        beat = int(hook.get("HeartbeatTimeout", DEFAULT_HEARTBEAT_TIMEOUT))
        limit = int(hook.get("GlobalTimeout") or min(100 * beat, MAX_GLOBAL_TIMEOUT))
        activity = await self._termination_activity()
        if activity is None:
            return None
        started: datetime = activity["StartTime"]
        return started.timestamp() + limit


class FleetDrainPort:
    """DrainPort over Scalelite, Auto Scaling, IMDS and the daemon's DNS step.

    Without Scalelite (``scalelite`` None) there is nothing to cordon: the
    server reads as absent and the Scalelite steps do nothing.
    """

    def __init__(
        self,
        scalelite: ScaleliteClient | None,
        server_url: str,
        lifecycle: AsgLifecycle,
        target_state: Callable[[], Awaitable[str | None]],
        delete_dns: Callable[[], Awaitable[None]],
    ) -> None:
        self._scalelite = scalelite
        self._url = server_url
        self._lifecycle = lifecycle
        self._target_state = target_state
        self._delete_dns = delete_dns

    async def target_lifecycle_state(self) -> str | None:
        return await self._target_state()

    async def scalelite_state(self) -> Presence:
        if self._scalelite is None:
            return "absent"
        return await registration.presence(self._scalelite, self._url)

    async def lifecycle_open(self) -> bool | None:
        return await self._lifecycle.is_open()

    async def cordon(self) -> None:
        if self._scalelite is not None:
            await registration.cordon(self._scalelite, self._url)

    async def enable(self) -> None:
        if self._scalelite is not None:
            await registration.enable(self._scalelite, self._url)

    async def deregister(self) -> None:
        if self._scalelite is not None:
            await registration.deregister(self._scalelite, self._url)

    async def delete_dns(self) -> None:
        await self._delete_dns()

    async def heartbeat(self) -> None:
        await self._lifecycle.heartbeat()

    async def complete(self) -> None:
        await self._lifecycle.complete()


@dataclass(frozen=True, slots=True)
class DrainReport:
    """One round for the daemon's metrics and /status."""

    state: DrainState
    executed: tuple[Action, ...] = ()
    """Actions that succeeded (or found the lifecycle action gone)."""
    failed: tuple[ActionKind, ...] = ()
    unknown: tuple[str, ...] = ()
    """Reads that failed this round: ``target_state``, ``scalelite``, ``lifecycle``."""
    deadline: float | None = None
    """When AWS ends the termination's wait whatever the heartbeats (epoch seconds); None
    when not terminating, past the wait, or not known yet."""


class Drain:
    """Observe → :func:`step` → act → :func:`record`, every ``poll_interval`` seconds."""

    def __init__(
        self,
        port: DrainPort,
        config: DrainConfig,
        snapshot: Callable[[], Snapshot | None],
        *,
        stale_after: float,
        poll_interval: float,
        recordings_tracked: bool = True,
        call_timeout: float = 30.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        report: Callable[[DrainReport], None] | None = None,
        deadline: Callable[[], Coroutine[Any, Any, float | None]] | None = None,
    ) -> None:
        """``deadline`` reads when AWS ends the termination's wait (AsgLifecycle.deadline)."""
        self._port = port
        self._config = config
        self._snapshot = snapshot
        self._stale_after = stale_after
        self._poll_interval = poll_interval
        self._recordings_tracked = recordings_tracked
        self._call_timeout = call_timeout
        self._clock = clock
        self._sleep = sleep
        self._report = report
        self._state: DrainState | None = None
        self._request: Request | None = None
        self._deadline_source = deadline
        self._deadline: float | None = None
        self._deadline_asked: float | None = None

    @property
    def state(self) -> DrainState | None:
        """None until :meth:`resume` has run."""
        return self._state

    def request(self, kind: Request) -> bool:
        """Queue an operator drain or undrain for the next round; False if refused.

        ``undrain`` is refused while terminating: the host is leaving whatever
        the operator wants, and re-enabling it would send it new meetings.
        """
        if kind == "undrain" and self._state is not None and self._state.terminating:
            log.warning("undrain_refused", reason="terminating")
            return False
        self._request = kind
        log.info("drain_requested", kind=kind)
        return True

    async def _read(self, name: str, call: Callable[[], Coroutine[Any, Any, T]]) -> T | None:
        try:
            async with asyncio.timeout(self._call_timeout):
                return await call()
        except Exception as exc:  # unknown, never a default: the step treats None as "wait"
            log.warning(
                "drain_read_failed",
                read=name,
                error=aws.error_code(exc) or type(exc).__name__,
                detail=str(exc)[:300],
                transient=aws.is_transient(exc),
            )
            return None

    async def resume(self) -> DrainState:
        """Derive the starting state from the truth (see :func:`resume`)."""
        target, presence = await asyncio.gather(
            self._read("target_state", self._port.target_lifecycle_state),
            self._read("scalelite", self._port.scalelite_state),
        )
        lifecycle_open = (
            await self._read("lifecycle", self._port.lifecycle_open) if leaving(target) else None
        )
        truth = Truth(target, presence, lifecycle_open)
        self._state = resume(truth, self._clock())
        log.info(
            "drain_resumed",
            phase=self._state.phase,
            terminating=self._state.terminating,
            operator=self._state.operator,
            settled=self._state.settled,
            target_state=target,
            scalelite=presence,
            lifecycle_open=lifecycle_open,
        )
        return self._state

    def _wants_scalelite(self, state: DrainState) -> bool:
        return (
            not state.settled
            or state.enable_pending
            or self._request is not None
            or state.phase in (Phase.CORDONING, Phase.CORDONED)
        )

    async def _execute(self, action: Action) -> Outcome:
        call = {
            ActionKind.CORDON: self._port.cordon,
            ActionKind.ENABLE: self._port.enable,
            ActionKind.HEARTBEAT: self._port.heartbeat,
            ActionKind.DEREGISTER: self._port.deregister,
            ActionKind.DELETE_DNS: self._port.delete_dns,
            ActionKind.COMPLETE: self._port.complete,
        }[action.kind]
        try:
            async with asyncio.timeout(self._call_timeout):
                await call()
        except LifecycleActionGone as exc:
            # AWS answers the same before Terminating:Wait (no action yet) as after it: only
            # a describe that shows the wait over makes the action gone.
            still = await self._read("lifecycle", self._port.lifecycle_open)
            if still is not False:
                log.warning("lifecycle_action_not_found", action=action.kind, lifecycle_open=still)
                return Outcome.FAILED
            log.error("lifecycle_action_gone", action=action.kind, detail=str(exc)[:300])
            return Outcome.GONE
        except Exception as exc:  # retried next round; never a reason to skip ahead
            log.warning(
                "drain_action_failed",
                action=action.kind,
                error=aws.error_code(exc) or type(exc).__name__,
                detail=str(exc)[:300],
                transient=aws.is_transient(exc),
            )
            return Outcome.FAILED
        return Outcome.OK

    async def round(self) -> DrainState:
        """One observe-decide-act cycle."""
        state = self._state if self._state is not None else await self.resume()
        wants_scalelite = self._wants_scalelite(state)
        target, presence = await asyncio.gather(
            self._read("target_state", self._port.target_lifecycle_state),
            self._read("scalelite", self._port.scalelite_state) if wants_scalelite else _none(),
        )
        request, self._request = self._request, None
        now = self._clock()
        view = view_of(
            self._snapshot(), now, self._stale_after, recordings_tracked=self._recordings_tracked
        )
        obs = Observation(view, target, presence, request)
        new, actions = step(state, obs, now, self._config)
        self._log_step(state, new, obs, actions)
        outcomes = await asyncio.gather(*(self._execute(a) for a in actions))
        done = self._clock()
        for action, outcome in zip(actions, outcomes, strict=True):
            new = record(new, action, outcome, done)
        if new.phase is not state.phase:
            log.info("drain_phase", phase=new.phase, previous=state.phase, operator=new.operator)
        self._state = new
        deadline = await self._track_deadline(new, done)
        if self._report is not None:
            results = tuple(zip(actions, outcomes, strict=True))
            unknown = [] if target is not None else ["target_state"]
            if wants_scalelite and presence is None:
                unknown.append("scalelite")
            self._report(
                DrainReport(
                    state=new,
                    executed=tuple(a for a, o in results if o is not Outcome.FAILED),
                    failed=tuple(a.kind for a, o in results if o is Outcome.FAILED),
                    unknown=tuple(unknown),
                    deadline=deadline,
                )
            )
        return new

    async def _track_deadline(self, state: DrainState, now: float) -> float | None:
        """The wait's deadline while terminating: read once known, asked again at most once
        a heartbeat interval until then."""
        if not state.terminating or state.lifecycle_gone or state.phase is Phase.COMPLETED:
            return None
        asked = self._deadline_asked
        due = asked is None or now < asked or now - asked >= self._config.heartbeat_interval
        if self._deadline is None and self._deadline_source is not None and due:
            self._deadline_asked = now
            self._deadline = await self._read("deadline", self._deadline_source)
            if self._deadline is not None:
                log.info(
                    "lifecycle_deadline",
                    deadline=round(self._deadline),
                    remaining_s=round(self._deadline - now),
                )
        return self._deadline

    def _log_step(
        self, old: DrainState, new: DrainState, obs: Observation, actions: tuple[Action, ...]
    ) -> None:
        if new.terminating and not old.terminating:
            log.warning("termination_started", target_state=obs.target_state)
        for action in actions:
            if action.forced:
                log.error(
                    "drain_forced",
                    action=action.kind,
                    meetings=obs.view.meetings,
                    pending_recordings=obs.view.pending_recordings,
                    max_drain_time=self._config.max_drain_time,
                    terminating_since=new.terminating_since,
                )
            elif action.kind in PROGRESS:
                log.info("drain_step", action=action.kind, meetings=obs.view.meetings)
        if obs.request == "undrain" and old.terminating:
            log.warning("undrain_refused", reason="terminating")
        if old.phase is Phase.CORDONED and new.phase is Phase.SERVING and obs.request is None:
            log.warning("drain_cancelled_externally", scalelite=obs.scalelite)

    async def run(self) -> None:
        """Resume from the truth, then a round every ``poll_interval`` until cancelled."""
        if self._state is None:
            await self.resume()
        while True:
            await self.round()
            await self._sleep(self._poll_interval)


async def _none() -> None:
    return None
