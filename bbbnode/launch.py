"""The way in: warm pool or service, read from IMDS, and the launch hook between them.

An Auto Scaling instance says where it is headed in IMDS
``autoscaling/target-lifecycle-state`` ("Retrieve the target lifecycle state through
instance metadata", EC2 Auto Scaling User Guide). With a warm pool
(cfn/fleet.yaml ``WarmPoolSize``) a host can be headed for the pool before it ever
serves::

    target Warmed:Stopped (or :Running, :Hibernated)          target InService (or none)
    WARMING ──warm_up──▶ WARMED ──complete──▶ IN_POOL  ─────▶ JOINING ──join──▶ JOINED
       │  image checks, EFS,    launch action   stopped here;     A record, host config
       │  certificate           (Warmed:Pending   boots again      for the (new) public
       │                         :Wait)           with target      address
       │                                          InService        │ complete launch action
       │  target Warmed:Terminated                                 ▼ (Pending:Wait)
       └──────────────────▶ LEAVING_POOL ──clean_up──▶ LEFT_POOL   IN_SERVICE ──register──▶
                            (no drain: nothing was ever served)                   SERVING

Nothing that publishes the host (the A record, Scalelite registration) happens while
the target is a ``Warmed:*`` state: :func:`step` emits JOIN and REGISTER only when the
target is InService (or absent: instances from before March 2022 have none, a 404) or
Terminated (a launching instance the group already ends: it joins to drain properly,
and registration keeps a terminating host disabled).

The launch hook (``lifecycle.launch_hook_name``) holds every launch, into the pool
(``Warmed:Pending:Wait``) and into service (``Pending:Wait``) alike; the hook fires
again each time an instance leaves the pool ("Use lifecycle hooks with a warm pool",
EC2 Auto Scaling User Guide). The action exists only once the instance waits: for a
moment it is ``Pending`` (``Warmed:Pending``) and CompleteLifecycleAction answers "No
active Lifecycle Action", exactly as after the action is over. So the action is
completed only when DescribeAutoScalingInstances shows the wait, and counts as done
only when it shows the instance past it: completing too early and believing it would
leave the hook to time out with ABANDON, which terminates the host.

Every step is idempotent and reads the truth first, so a restart in any phase
resumes: :func:`step` starts again from STARTING with what IMDS and Auto Scaling say.
The core is pure (:func:`step`, :func:`record`); :class:`Launch` drives it through a
:class:`LaunchPort`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from bbbcore import aws, logs

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient

log = logs.get(__name__)

Sleep = Callable[[float], Awaitable[None]]

IN_SERVICE: Final = "InService"
LEFT_POOL_TARGET: Final = "Warmed:Terminated"
LAUNCH_WAITS: Final = frozenset({"Pending:Wait", "Warmed:Pending:Wait"})
"""The ASG states in which a launch lifecycle action exists."""
BEFORE_WAIT: Final = frozenset({"Pending", "Warmed:Pending"})
"""The moment before the wait: no action yet, and one will come."""


class Phase(enum.StrEnum):
    STARTING = "starting"
    WARMING = "warming"
    WARMED = "warmed"
    IN_POOL = "in_pool"
    LEAVING_POOL = "leaving_pool"
    LEFT_POOL = "left_pool"
    JOINING = "joining"
    JOINED = "joined"
    IN_SERVICE = "in_service"
    SERVING = "serving"


class Act(enum.StrEnum):
    WARM_UP = "warm_up"
    """Everything that needs neither the public address nor serving (warm pool only)."""
    CLEAN_UP = "clean_up"
    """Leaving the pool: nothing to drain; complete the termination hook."""
    JOIN = "join"
    """The A record and the host configuration for the current (new) public address."""
    COMPLETE = "complete"
    """Complete the launch lifecycle action (CONTINUE)."""
    REGISTER = "register"
    """Scalelite registration (enabled unless the host is draining)."""


SETTLED: Final = frozenset({Phase.IN_POOL, Phase.LEFT_POOL, Phase.SERVING})
"""Phases start-up stops in: READY to systemd; only SERVING runs the fleet tasks."""
PUBLISHING: Final = frozenset({Act.JOIN, Act.REGISTER})
"""The actions that make the host reachable: never while headed for the warm pool."""


def warmed(target: str | None) -> bool:
    """Headed for the warm pool, or in it (not out of it)."""
    return target is not None and target.startswith("Warmed:") and target != LEFT_POOL_TARGET


def joins(target: str | None) -> bool:
    """Headed for service (or already there, or ended before it got there)."""
    return not warmed(target) and target != LEFT_POOL_TARGET


@dataclass(frozen=True, slots=True)
class LaunchState:
    phase: Phase = Phase.STARTING
    target: str | None = None
    """The last target lifecycle state read (None: IMDS has none)."""


@dataclass(frozen=True, slots=True)
class Observation:
    target: str | None
    """IMDS ``autoscaling/target-lifecycle-state``; None when IMDS has no such item."""
    asg_state: str | None = None
    """The instance's LifecycleState in DescribeAutoScalingInstances; None when unlisted
    or not read this round."""
    hooked: bool = True
    """A launch hook is configured (``lifecycle.launch_hook_name``)."""


def _gate(phase: Phase, done: Phase, obs: Observation) -> tuple[Phase, tuple[Act, ...]]:
    """Complete the launch action while the instance waits in it; move on once past it."""
    if not obs.hooked:
        return done, ()
    state = obs.asg_state
    if state in LAUNCH_WAITS:
        return phase, (Act.COMPLETE,)
    if state is None or state in BEFORE_WAIT:
        return phase, ()
    return done, ()


def step(state: LaunchState, obs: Observation) -> tuple[LaunchState, tuple[Act, ...]]:
    """The next phase and what to do now, from the target (and the ASG's state)."""
    s = dataclasses.replace(state, target=obs.target)
    phase = s.phase
    if phase is Phase.SERVING:
        # In service: leaving is the drain's (bbbnode/drain.py), returning to a pool too.
        return s, ()
    if obs.target == LEFT_POOL_TARGET:
        # Whatever was done on the way in (an A record), nothing was served: clean up.
        if phase is Phase.LEFT_POOL:
            return s, ()
        return dataclasses.replace(s, phase=Phase.LEAVING_POOL), (Act.CLEAN_UP,)
    if warmed(obs.target):
        if phase in (Phase.STARTING, Phase.WARMING):
            return dataclasses.replace(s, phase=Phase.WARMING), (Act.WARM_UP,)
        if phase is Phase.WARMED:
            new, acts = _gate(Phase.WARMED, Phase.IN_POOL, obs)
            return dataclasses.replace(s, phase=new), acts
        # In the pool, or (ReuseOnScaleIn) on the way back: nothing published is added.
        return s, ()
    match phase:
        case Phase.STARTING | Phase.WARMING | Phase.WARMED | Phase.IN_POOL | Phase.JOINING:
            return dataclasses.replace(s, phase=Phase.JOINING), (Act.JOIN,)
        case Phase.JOINED:
            new, acts = _gate(Phase.JOINED, Phase.IN_SERVICE, obs)
            if new is Phase.IN_SERVICE:
                return dataclasses.replace(s, phase=new), (Act.REGISTER,)
            return dataclasses.replace(s, phase=new), acts
        case Phase.IN_SERVICE:
            return s, (Act.REGISTER,)
        case _:
            return s, ()


def record(state: LaunchState, act: Act, ok: bool) -> LaunchState:
    """Fold an action's outcome in; a failure changes nothing (it is tried again).

    COMPLETE moves nothing: only a describe that shows the wait over does.
    """
    if not ok:
        return state
    after = {
        Act.WARM_UP: (Phase.WARMING, Phase.WARMED),
        Act.CLEAN_UP: (Phase.LEAVING_POOL, Phase.LEFT_POOL),
        Act.JOIN: (Phase.JOINING, Phase.JOINED),
        Act.REGISTER: (Phase.IN_SERVICE, Phase.SERVING),
    }.get(act)
    if after is not None and state.phase is after[0]:
        return dataclasses.replace(state, phase=after[1])
    return state


# ----------------------------------------------------------------------------- adapters


class LaunchPort(Protocol):
    """The reads and side effects of the way in; the fleet node implements it."""

    async def target_state(self) -> str | None: ...

    async def asg_state(self) -> str | None: ...

    async def warm_up(self) -> None: ...

    async def clean_up(self) -> None: ...

    async def join(self) -> None: ...

    async def complete(self) -> None: ...

    async def register(self) -> None: ...


class LaunchActionGone(Exception):
    """Auto Scaling has no launch lifecycle action for this instance (yet, or any more)."""


class AsgLaunch:
    """The launch lifecycle action of one instance, through an Auto Scaling client."""

    def __init__(
        self, client: AutoScalingClient, asg_name: str, instance_id: str, hook_name: str
    ) -> None:
        self._client = client
        self._asg = asg_name
        self._instance = instance_id
        self._hook = hook_name

    async def state(self) -> str | None:
        """The instance's LifecycleState (warm pool instances included); None: unlisted."""
        answer = await self._client.describe_auto_scaling_instances(InstanceIds=[self._instance])
        for instance in answer.get("AutoScalingInstances", []):
            if instance.get("InstanceId") == self._instance:
                return str(instance.get("LifecycleState", "")) or None
        return None

    async def complete(self) -> None:
        try:
            await self._client.complete_lifecycle_action(
                LifecycleHookName=self._hook,
                AutoScalingGroupName=self._asg,
                InstanceId=self._instance,
                LifecycleActionResult="CONTINUE",
            )
        except Exception as exc:
            if aws.error_code(exc) == "ValidationError" and "No active Lifecycle Action" in str(
                exc
            ):
                raise LaunchActionGone(str(exc)) from exc
            raise


class Launch:
    """Drives :func:`step` through a :class:`LaunchPort` until a phase is reached."""

    def __init__(
        self,
        port: LaunchPort,
        *,
        hooked: bool,
        poll_interval: float,
        sleep: Sleep = asyncio.sleep,
        report: Callable[[LaunchState], None] | None = None,
    ) -> None:
        self._port = port
        self._hooked = hooked
        self._poll = poll_interval
        self._sleep = sleep
        self._report = report
        self.state = LaunchState()

    async def _observe(self) -> Observation | None:
        try:
            target = await self._port.target_state()
        except Exception as exc:  # unknown: no step on a guess
            log.warning("launch_read_failed", read="target_state", error=repr(exc)[:300])
            return None
        asg_state = None
        if self._hooked and self.state.phase in (Phase.WARMED, Phase.JOINED):
            try:
                asg_state = await self._port.asg_state()
            except Exception as exc:
                log.warning("launch_read_failed", read="asg_state", error=repr(exc)[:300])
        return Observation(target, asg_state, self._hooked)

    async def _act(self, act: Act) -> bool:
        call = {
            Act.WARM_UP: self._port.warm_up,
            Act.CLEAN_UP: self._port.clean_up,
            Act.JOIN: self._port.join,
            Act.COMPLETE: self._port.complete,
            Act.REGISTER: self._port.register,
        }[act]
        if act is not Act.COMPLETE:
            # A start-up step that fails raises: the daemon exits and systemd starts it
            # again, which resumes from the truth (the steps are idempotent).
            await call()
            return True
        try:
            await call()
        except LaunchActionGone as exc:
            # The same answer before the wait and after it: the next describe tells.
            log.info("launch_action_not_found", detail=str(exc)[:300])
            return False
        except Exception as exc:  # retried next round
            log.warning(
                "launch_action_failed", error=aws.error_code(exc) or type(exc).__name__,
                detail=str(exc)[:300], transient=aws.is_transient(exc),
            )  # fmt: skip
            return False
        log.info("launch_action_completed", phase=self.state.phase)
        return True

    async def round(self) -> LaunchState:
        """One observe, step, act; returns the new state."""
        obs = await self._observe()
        if obs is None:
            return self.state
        old = self.state
        new, acts = step(old, obs)
        for act in acts:
            new = record(new, act, await self._act(act))
        if new.phase is not old.phase:
            log.info("launch_phase", phase=new.phase, previous=old.phase, target=obs.target)
        self.state = new
        if self._report is not None:
            self._report(new)
        return new

    async def until(self, phases: frozenset[Phase]) -> LaunchState:
        """Rounds until the phase is one of ``phases``: the next at once after progress,
        else after ``poll_interval``."""
        while True:
            before = self.state.phase
            state = await self.round()
            if state.phase in phases:
                return state
            if state.phase is before:
                await self._sleep(self._poll)
