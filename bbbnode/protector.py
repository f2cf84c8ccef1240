"""ASG scale-in protection: on while the host has a meeting, off once it has been idle a while.

The decision is a pure function (:func:`decide`); :class:`Protector` only reads
the latest snapshot, calls AWS for the action decided and feeds the result back.
Unknown or stale meeting data never turns protection off: it only stops the
idle clock, so the grace period starts again once the data is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bbbcore import aws, logs
from bbbnode.snapshot import Snapshot

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient

    from bbbnode.settings import ProtectionSettings

log = logs.get(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# --------------------------------------------------------------------- what the host is doing


@dataclass(frozen=True, slots=True)
class SnapshotView:
    """The facts the protector and the drain act on; ``None`` means unknown or stale."""

    meetings: int | None
    pending_recordings: int | None
    observed_at: float | None
    """Wall-clock time of the meetings read these facts come from."""

    @property
    def busy(self) -> bool:
        """A meeting is known to run."""
        return self.meetings is not None and self.meetings > 0

    @property
    def idle(self) -> bool:
        """Known, fresh, no meeting and no recording still in the pipeline."""
        return self.meetings == 0 and self.pending_recordings == 0


UNKNOWN = SnapshotView(meetings=None, pending_recordings=None, observed_at=None)


def view_of(
    snapshot: Snapshot | None,
    now: float,
    stale_after: float,
    *,
    recordings_tracked: bool = True,
) -> SnapshotView:
    """What ``snapshot`` says at ``now``; data older than ``stale_after`` seconds is unknown.

    ``recordings_tracked`` False (the recordings scan is switched off) counts
    pending recordings as 0, since nothing would ever report them.
    """
    if snapshot is None or snapshot.meetings is None:
        return UNKNOWN
    age = snapshot.age(now)
    if age is None or age > stale_after:
        return UNKNOWN
    if not recordings_tracked:
        pending: int | None = 0
    else:
        pending = None if snapshot.recordings is None else snapshot.recordings.pending
    return SnapshotView(len(snapshot.meetings), pending, snapshot.meetings_at)


# --------------------------------------------------------------------------- pure core


@dataclass(frozen=True, slots=True)
class ProtectorConfig:
    """The protector's timing, as plain values so the core stays pure."""

    idle_grace: float = 300.0
    recheck_interval: float = 180.0

    @classmethod
    def from_settings(cls, settings: ProtectionSettings) -> ProtectorConfig:
        return cls(idle_grace=settings.idle_grace, recheck_interval=settings.recheck_interval)


@dataclass(frozen=True, slots=True)
class ProtectorState:
    """What the protector wants and what it believes AWS has."""

    want: bool | None = None
    """The flag this host should carry; None until the data has decided."""
    actual: bool | None = None
    """The flag AWS last reported or accepted; None when not known."""
    idle_since: float | None = None
    """First fresh idle observation of the current idle stretch."""
    checked_at: float | None = None
    """When the flag was last read from (or accepted by) AWS."""


@dataclass(frozen=True, slots=True)
class SetProtection:
    """Call SetInstanceProtection with this value."""

    protected: bool


@dataclass(frozen=True, slots=True)
class ReadProtection:
    """Read the real flag (DescribeAutoScalingInstances)."""


ProtectorAction = SetProtection | ReadProtection


def _recheck_due(state: ProtectorState, now: float, config: ProtectorConfig) -> bool:
    checked = state.checked_at
    # A clock that went backwards makes the last check's age meaningless: read again.
    return checked is None or now < checked or now - checked >= config.recheck_interval


def decide(
    state: ProtectorState,
    view: SnapshotView,
    now: float,
    config: ProtectorConfig,
    *,
    terminating: bool = False,
) -> tuple[ProtectorState, ProtectorAction | None]:
    """The next state and at most one AWS call."""
    if terminating:
        # The instance is leaving and AWS refuses protection changes in Terminating:Wait;
        # the lifecycle hook, not protection, keeps meetings alive from here on.
        return state, None
    want = state.want
    idle_since: float | None = None
    idle_long_enough = False
    if view.meetings is None:
        pass  # unknown: keep the wish, restart the idle clock once data is back
    elif view.meetings > 0:
        want = True
    else:
        since = state.idle_since
        idle_since = since if since is not None and since <= now else now
        idle_long_enough = now - idle_since >= config.idle_grace
        if idle_long_enough:
            want = False
    new = dataclasses.replace(state, want=want, idle_since=idle_since)
    if want is True and new.actual is not True:
        return new, SetProtection(True)
    if want is False and new.actual is not False and idle_long_enough:
        # Unprotecting is never urgent: learn the real flag before writing it.
        if new.actual is None and _recheck_due(new, now, config):
            return new, ReadProtection()
        if new.actual is True:
            return new, SetProtection(False)
    if _recheck_due(new, now, config):
        return new, ReadProtection()
    return new, None


def protection_set(state: ProtectorState, protected: bool, now: float) -> ProtectorState:
    """AWS accepted SetInstanceProtection(``protected``)."""
    return dataclasses.replace(state, actual=protected, checked_at=now)


def protection_read(state: ProtectorState, actual: bool | None, now: float) -> ProtectorState:
    """AWS reported the flag (``None``: the instance is not in the group)."""
    return dataclasses.replace(state, actual=actual, checked_at=now)


# ----------------------------------------------------------------------------- adapter


class ProtectionApi(Protocol):
    """The two AWS calls the protector needs."""

    async def set_protected(self, protected: bool) -> None: ...

    async def read_protected(self) -> bool | None: ...


class AsgProtection:
    """ProtectionApi over an Auto Scaling client for one instance of one group."""

    def __init__(self, client: AutoScalingClient, asg_name: str, instance_id: str) -> None:
        self._client = client
        self._asg = asg_name
        self._instance = instance_id

    async def set_protected(self, protected: bool) -> None:
        await self._client.set_instance_protection(
            AutoScalingGroupName=self._asg,
            InstanceIds=[self._instance],
            ProtectedFromScaleIn=protected,
        )

    async def read_protected(self) -> bool | None:
        answer = await self._client.describe_auto_scaling_instances(InstanceIds=[self._instance])
        for instance in answer.get("AutoScalingInstances", []):
            if instance.get("InstanceId") == self._instance:
                return bool(instance.get("ProtectedFromScaleIn", False))
        return None


@dataclass(frozen=True, slots=True)
class ProtectorReport:
    """One round's outcome for the daemon's metrics."""

    protected: bool | None
    """``bbbnode_scale_in_protected``: the flag as last known (None: unknown)."""
    error: str | None = None
    """AWS error code (or exception name) of a failed call this round."""


class Protector:
    """Runs :func:`decide` against the latest snapshot and AWS."""

    def __init__(
        self,
        api: ProtectionApi,
        config: ProtectorConfig,
        snapshot: Callable[[], Snapshot | None],
        *,
        stale_after: float,
        interval: float,
        terminating: Callable[[], bool] = lambda: False,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        report: Callable[[ProtectorReport], None] | None = None,
    ) -> None:
        self._api = api
        self._config = config
        self._snapshot = snapshot
        self._stale_after = stale_after
        self._interval = interval
        self._terminating = terminating
        self._clock = clock
        self._sleep = sleep
        self._report = report
        self._state = ProtectorState()

    @property
    def state(self) -> ProtectorState:
        return self._state

    async def round(self) -> ProtectorState:
        """Decide once and carry out the decision; AWS failures are retried next round."""
        now = self._clock()
        view = view_of(self._snapshot(), now, self._stale_after)
        state, action = decide(
            self._state, view, now, self._config, terminating=self._terminating()
        )
        error: str | None = None
        try:
            if isinstance(action, SetProtection):
                await self._api.set_protected(action.protected)
                state = protection_set(state, action.protected, self._clock())
                log.info(
                    "scale_in_protection_set", protected=action.protected, meetings=view.meetings
                )
            elif isinstance(action, ReadProtection):
                actual = await self._api.read_protected()
                if state.actual is not None and actual != state.actual:
                    log.warning("scale_in_protection_drift", expected=state.actual, actual=actual)
                state = protection_read(state, actual, self._clock())
        except Exception as exc:  # any failure: no change, the next round tries again
            error = aws.error_code(exc) or type(exc).__name__
            log.warning(
                "scale_in_protection_call_failed",
                action=type(action).__name__,
                error=error,
                transient=aws.is_transient(exc),
            )
        self._state = state
        if self._report is not None:
            self._report(ProtectorReport(state.actual, error))
        return state

    async def run(self) -> None:
        """Round after round until cancelled."""
        while True:
            await self.round()
            await self._sleep(self._interval)
