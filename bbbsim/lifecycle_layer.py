"""An HTTP layer in front of moto_server that adds what moto lacks for Auto Scaling.

Clients point ``AWS_ENDPOINT_URL`` at the layer. Every request is forwarded to moto
byte for byte except the Auto Scaling calls the layer owns:

* termination lifecycle hooks: a terminated or scaled-in instance is briefly
  ``Terminating`` (``terminating_pause``: no lifecycle action yet), then waits in
  ``Terminating:Wait`` until ``CompleteLifecycleAction`` or its deadline;
  ``RecordLifecycleActionHeartbeat`` extends the deadline, never past the hook's
  global timeout (the lesser of 100 x HeartbeatTimeout and 48 h), which
  DescribeLifecycleHooks reports as AWS does; the termination's scaling activity
  (DescribeScalingActivities) says when it began;
* AWS's own replacements: an instance marked unhealthy is replaced at the next
  ``tick`` (terminate first, or launch first under an instance maintenance policy
  with MinHealthyPercentage 100), and ``rebalance`` launches first then scales in
  by the termination policy, as AZ rebalancing does when it is not suspended;
* what each instance was launched from: the group's launch template version at
  its launch (EC2's ``aws:ec2launchtemplate:version`` tag set to it, the ASG's
  per-instance LaunchTemplate named as the group named it);
* the capacity rules moto skips: desired within min..max, and scale-in through
  desired capacity picks victims by the default termination policy, never a
  protected instance;
* launch lifecycle hooks: a new instance is ``Pending`` for a moment
  (``launching_pause``: no lifecycle action yet), then waits in ``Pending:Wait``
  until its launch hooks are completed (CONTINUE: in service; ABANDON or a
  timeout with ABANDON: terminated and replaced);
* warm pools (PutWarmPool, DescribeWarmPool, DeleteWarmPool): the pool keeps its
  size by itself (launching, or terminating surplus through the termination hooks
  as ``Warmed:Terminating:Wait``, where a stopped instance answers nothing and
  waits out its timeout); an instance launched into it is ``Warmed:Pending``, waits
  in ``Warmed:Pending:Wait`` for the launch hooks, then is stopped
  (``Warmed:Stopped``); a scale-out starts pool instances first, each with a new
  public address, through ``Pending`` and ``Pending:Wait`` again, and launches the
  rest cold; a warm start can be made to fail (``fail_warm_starts``), which makes
  that launch a cold one. Warm instances are not members of the group in moto:
  the layer lists them in DescribeWarmPool and DescribeAutoScalingInstances,
  counts them in DescribeAutoScalingGroups' ``WarmPoolSize``, and runs them in EC2;
* fault injection (throttling, HTTP 500/503, a DescribeAutoScalingInstances that
  answers empty) and an in-process view of launches and terminations for the
  simulator and the IMDS emulator.

Botocore talks to Auto Scaling with the *query* protocol: a form-encoded POST with
``Action=`` and ``Version=2011-01-01`` and an XML answer; the region and service are
in the SigV4 credential scope of the ``Authorization`` header. A waiting instance is
kept in moto as a scale-in-protected ``Standby`` instance (moto's own arithmetic then
neither counts nor replaces nor picks it) and the layer rewrites its state and
protection in the describe answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import random
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode

import aiohttp
import botocore.session
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError
from multidict import CIMultiDict

from bbbcore import logs
from bbbsim.termination_policy import Candidate, choose_victims

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

log = logs.get(__name__)

Clock = Callable[[], float]
FaultKind = Literal["throttling", "http500", "http503", "empty"]
EventKind = Literal["launched", "terminating", "terminated", "detached", "stopped", "started"]
"""``stopped``/``started``: a warm pool instance stopped after its warm-up, or started again
to enter service (with a new public address): the emulated host stops and boots with it."""

AUTOSCALING_NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
TERMINATING_TRANSITION = "autoscaling:EC2_INSTANCE_TERMINATING"
LAUNCHING_TRANSITION = "autoscaling:EC2_INSTANCE_LAUNCHING"
POOL_STATES = ("Stopped", "Running", "Hibernated")
"""PoolState's valid values (WarmPoolConfiguration, EC2 Auto Scaling API Reference)."""
WARMED_STEADY = frozenset(f"Warmed:{state}" for state in POOL_STATES)
"""A warm pool instance ready to be started into the group."""
PUBLIC_POOL = "198.51.100"
"""TEST-NET-2 (RFC 5737): the public addresses the layer hands out; nothing connects to them."""
# AWS keeps an instance in a wait state at most 48 h or 100 heartbeat timeouts.
MAX_GLOBAL_TIMEOUT = 172_800
HEARTBEAT_LIMIT_FACTOR = 100
LIFECYCLE_RESULTS = ("CONTINUE", "ABANDON")

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "expect"}
)
_READ_ONLY_PREFIXES = ("Describe", "Get", "List")
_STATE_FOR_TARGET = {
    "Pending": "InService",
    "Pending:Wait": "InService",
    "InService": "InService",
    "Terminating": "Terminated",
    "Terminating:Wait": "Terminated",
    "Standby": "Standby",
    "Warmed:Terminating": "Warmed:Terminated",
    "Warmed:Terminating:Wait": "Warmed:Terminated",
    **{state: state for state in WARMED_STEADY},
}
"""IMDS ``autoscaling/target-lifecycle-state`` for the ASG's state of an instance: the
steady state it is headed for ("InService", "Terminated", "Warmed:Stopped", ...;
"Retrieve the target lifecycle state through instance metadata", EC2 Auto Scaling User
Guide). An instance on its way into the warm pool heads for the pool's state
(:meth:`LifecycleLayer.target_lifecycle_state`)."""
EMPTY_CAPABLE = frozenset({"DescribeAutoScalingInstances"})
"""Calls an ``empty`` fault applies to: a describe that does not list the instance yet."""


# --------------------------------------------------------------------------- errors


class AwsError(Exception):
    """An error the layer answers in the caller's protocol."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _validation(message: str) -> AwsError:
    return AwsError("ValidationError", message)


# ------------------------------------------------------------- decisions (pure)


def desired_capacity_error(desired: int, min_size: int, max_size: int) -> str | None:
    """SetDesiredCapacity's refusal text, or None when the value is allowed."""
    if desired > max_size:
        return (
            f"New SetDesiredCapacity value {desired} is above max value {max_size} "
            "for the AutoScalingGroup."
        )
    if desired < min_size:
        return (
            f"New SetDesiredCapacity value {desired} is below min value {min_size} "
            "for the AutoScalingGroup."
        )
    return None


def resolve_sizes(
    current: tuple[int, int, int],
    min_size: int | None,
    max_size: int | None,
    desired: int | None,
) -> tuple[int, int, int]:
    """(min, max, desired) after a Create/UpdateAutoScalingGroup, or ValidationError.

    Without an explicit desired capacity AWS pulls the current one into the new bounds.
    """
    cur_min, cur_max, cur_desired = current
    new_min = cur_min if min_size is None else min_size
    new_max = cur_max if max_size is None else max_size
    if new_min > new_max:
        raise _validation(
            f"Max bound, {new_max}, must be greater than or equal to min bound, {new_min}"
        )
    if desired is None:
        return new_min, new_max, min(max(cur_desired, new_min), new_max)
    if not new_min <= desired <= new_max:
        raise _validation(
            f"Desired capacity:{desired} must be between the specified min size:{new_min} "
            f"and max size:{new_max}"
        )
    return new_min, new_max, desired


@dataclass(frozen=True, slots=True)
class HookConfig:
    """A termination lifecycle hook as configured on a group."""

    name: str
    heartbeat_timeout: int
    default_result: str


@dataclass(frozen=True, slots=True)
class PendingHook:
    """One hook an instance still waits for."""

    hook_name: str
    token: str
    heartbeat_timeout: int
    default_result: str
    deadline: float
    global_deadline: float


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a call lands in moto: its backends are per account (access key) and region."""

    region: str
    access_key: str


def global_timeout(heartbeat_timeout: int) -> int:
    """The most an instance may wait in a hook, heartbeats or not: "172800 seconds (48 hours)
    or 100 times HeartbeatTimeout, whichever is smaller" (LifecycleHook.GlobalTimeout, EC2
    Auto Scaling API Reference)."""
    return min(HEARTBEAT_LIMIT_FACTOR * heartbeat_timeout, MAX_GLOBAL_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Termination:
    """An instance on its way out through the termination hooks.

    Its lifecycle state follows a timeline: ``Terminating`` from ``started_at`` (the
    instance has left service, no lifecycle action exists yet), ``Terminating:Wait``
    from ``wait_from`` until the hooks are done ("How lifecycle hooks work", EC2 Auto
    Scaling User Guide).
    """

    instance_id: str
    group: str
    scope: Scope
    protected: bool
    started_at: float
    hooks: tuple[PendingHook, ...]
    wait_from: float = 0.0
    activity_id: str = ""
    warm: bool = False
    """A warm pool instance: its states are ``Warmed:Terminating(:Wait)``."""

    def state_at(self, now: float) -> str:
        """The ASG's LifecycleState of the instance at ``now``."""
        state = "Terminating" if now < self.wait_from else "Terminating:Wait"
        return f"Warmed:{state}" if self.warm else state

    def waiting(self, now: float) -> bool:
        """Its lifecycle actions exist (heartbeat and complete are accepted)."""
        return now >= self.wait_from


def _pending_hooks(
    hooks: Sequence[HookConfig], wait_from: float, new_token: Callable[[], str]
) -> tuple[PendingHook, ...]:
    """One action per hook, each with a token; every timeout counts from ``wait_from``."""
    return tuple(
        PendingHook(
            hook_name=hook.name,
            token=new_token(),
            heartbeat_timeout=hook.heartbeat_timeout,
            default_result=hook.default_result,
            deadline=wait_from + hook.heartbeat_timeout,
            global_deadline=wait_from + global_timeout(hook.heartbeat_timeout),
        )
        for hook in hooks
    )


def start_termination(
    instance_id: str,
    group: str,
    scope: Scope,
    protected: bool,
    hooks: Sequence[HookConfig],
    now: float,
    new_token: Callable[[], str],
    pause: float = 0.0,
) -> Termination:
    """The termination of an instance entering it with ``hooks``; the wait begins ``pause``
    seconds after ``now`` and every timeout counts from there."""
    wait_from = now + pause
    pending = _pending_hooks(hooks, wait_from, new_token)
    return Termination(instance_id, group, scope, protected, now, pending, wait_from)


@dataclass(frozen=True, slots=True)
class LaunchWait:
    """An instance its launch hooks hold: into service, or (``into_pool``) into the warm pool.

    ``Pending`` (``Warmed:Pending``) from ``started_at``, the lifecycle action does not
    exist yet; ``Pending:Wait`` (``Warmed:Pending:Wait``) from ``wait_from`` until the
    hooks are done. With a launch hook, an instance launched into the warm pool "first
    pauses ... when it reaches the Warmed:Pending:Wait state, and then again when the
    instance restarts and reaches the Pending:Wait state"; one launched straight into the
    group pauses "only at the Pending:Wait state" ("Use lifecycle hooks with a warm pool",
    EC2 Auto Scaling User Guide).
    """

    instance_id: str
    group: str
    scope: Scope
    started_at: float
    hooks: tuple[PendingHook, ...]
    wait_from: float
    into_pool: bool = False

    def state_at(self, now: float) -> str:
        state = "Pending" if now < self.wait_from else "Pending:Wait"
        return f"Warmed:{state}" if self.into_pool else state

    def waiting(self, now: float) -> bool:
        return now >= self.wait_from


def start_launch(
    instance_id: str,
    group: str,
    scope: Scope,
    hooks: Sequence[HookConfig],
    now: float,
    new_token: Callable[[], str],
    pause: float = 0.0,
    *,
    into_pool: bool = False,
) -> LaunchWait:
    """The launch of an instance held by ``hooks``; the wait begins ``pause`` s after ``now``."""
    wait_from = now + pause
    pending = _pending_hooks(hooks, wait_from, new_token)
    return LaunchWait(instance_id, group, scope, now, pending, wait_from, into_pool)


def complete_launch_hook(
    wait: LaunchWait, hook_name: str, result: str
) -> tuple[LaunchWait | None, bool]:
    """(what still waits, abandoned): None with False lets the instance go on, into service
    or into the pool; ABANDON terminates it (CompleteLifecycleAction, API Reference)."""
    if result == "ABANDON":
        return None, True
    remaining = tuple(h for h in wait.hooks if h.hook_name != hook_name)
    return (dataclasses.replace(wait, hooks=remaining) if remaining else None), False


def expire_launch_hooks(wait: LaunchWait, now: float) -> tuple[LaunchWait | None, bool]:
    """Apply the default result of every launch hook whose deadline has passed."""
    current: LaunchWait | None = wait
    for hook in wait.hooks:
        if current is None:
            break
        if min(hook.deadline, hook.global_deadline) <= now:
            current, abandoned = complete_launch_hook(current, hook.hook_name, hook.default_result)
            if abandoned:
                return None, True
    return current, False


_Waiting = TypeVar("_Waiting", Termination, LaunchWait)


def record_heartbeat(term: _Waiting, hook_name: str, now: float) -> _Waiting:
    """Restart the hook's timeout from ``now``, never past its global timeout."""
    hooks = tuple(
        dataclasses.replace(h, deadline=min(now + h.heartbeat_timeout, h.global_deadline))
        if h.hook_name == hook_name
        else h
        for h in term.hooks
    )
    return dataclasses.replace(term, hooks=hooks)


@dataclass(frozen=True, slots=True)
class WarmPoolConfig:
    """A group's warm pool as PutWarmPool set it."""

    min_size: int = 0
    max_prepared: int | None = None
    """MaxGroupPreparedCapacity; None (or -1 given): unset, the group's MaxSize counts."""
    pool_state: str = "Stopped"
    reuse_on_scale_in: bool = False
    deleting: bool = False
    """DeleteWarmPool was called: Status PendingDelete until its instances are gone."""

    @property
    def warmed_state(self) -> str:
        """The lifecycle state of a ready instance: ``Warmed:Stopped`` and the like."""
        return f"Warmed:{self.pool_state}"


def warm_pool_size(config: WarmPoolConfig, max_size: int, desired: int) -> int:
    """How many instances the pool keeps.

    "If a value for MaxGroupPreparedCapacity is not specified, Amazon EC2 Auto Scaling
    launches and maintains the difference between the group's maximum capacity and its
    desired capacity. If you specify a value for MaxGroupPreparedCapacity, Amazon EC2 Auto
    Scaling uses the difference between the MaxGroupPreparedCapacity and the desired
    capacity instead ... Only when MaxGroupPreparedCapacity and MinSize are set to the same
    value does the warm pool have an absolute size" (PutWarmPool, EC2 Auto Scaling API
    Reference); MinSize is the floor.
    """
    if config.deleting:
        return 0
    cap = max_size if config.max_prepared is None else config.max_prepared
    return max(config.min_size, cap - desired, 0)


def warm_pool_config(params: Mapping[str, str], current: WarmPoolConfig | None) -> WarmPoolConfig:
    """PutWarmPool's parameters over the current configuration, or ValidationError."""
    base = current if current is not None and not current.deleting else WarmPoolConfig()
    min_size = _optional_int(params, "MinSize")
    prepared = _optional_int(params, "MaxGroupPreparedCapacity")
    state = params.get("PoolState") or base.pool_state
    if min_size is not None and min_size < 0:
        raise _validation("MinSize must be greater than or equal to 0")
    if prepared is not None and prepared < -1:
        raise _validation("MaxGroupPreparedCapacity must be greater than or equal to -1")
    if state not in POOL_STATES:
        raise _validation(f"PoolState must be one of {', '.join(POOL_STATES)}")
    reuse = params.get("InstanceReusePolicy.ReuseOnScaleIn")
    return WarmPoolConfig(
        min_size=base.min_size if min_size is None else min_size,
        max_prepared=base.max_prepared
        if prepared is None
        else (None if prepared < 0 else prepared),
        pool_state=state,
        reuse_on_scale_in=base.reuse_on_scale_in if reuse is None else reuse.lower() == "true",
    )


def complete_hook(term: Termination, hook_name: str, result: str) -> Termination | None:
    """Apply a hook's result; None means the instance proceeds to termination.

    For a terminating instance both results terminate it; ABANDON also skips the
    remaining hooks, CONTINUE lets them finish.
    """
    if result == "ABANDON":
        return None
    remaining = tuple(h for h in term.hooks if h.hook_name != hook_name)
    return dataclasses.replace(term, hooks=remaining) if remaining else None


def expire_hooks(term: Termination, now: float) -> Termination | None:
    """Apply the default result of every hook whose deadline has passed."""
    current: Termination | None = term
    for hook in term.hooks:
        if current is None:
            break
        if min(hook.deadline, hook.global_deadline) <= now:
            current = complete_hook(current, hook.hook_name, hook.default_result)
    return current


# ------------------------------------------------------------ in-process view


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """Something the simulator reacts to: start or stop an emulated host."""

    kind: EventKind
    instance_id: str
    group: str
    at: float


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """An instance of an Auto Scaling group as the layer presents it."""

    instance_id: str
    group: str
    region: str
    availability_zone: str
    private_ip: str
    public_ip: str | None
    lifecycle_state: str
    protected: bool
    launched_at: float
    healthy: bool = True
    launch_version: str = ""
    """The launch template version number it was launched from ("" without a template)."""
    launch_named: str = ""
    """That version as the group named it at the launch (``$Latest``, ``$Default``, "3")."""
    instance_type: str = ""


@dataclass(frozen=True, slots=True)
class Activity:
    """A scaling activity the layer reports (DescribeScalingActivities)."""

    activity_id: str
    group: str
    description: str
    cause: str
    start: float
    end: float | None = None
    status: str = "InProgress"


@dataclass(frozen=True, slots=True)
class Surplus:
    """A replacement AWS launched first: the group holds one more member than desired
    until the ``victim`` (or, with none, the termination policy's choice) is scaled in."""

    scope: Scope
    group: str
    desired: int
    victim: str | None
    cause: str


@dataclass(frozen=True, slots=True)
class LifecycleAction:
    """A pending lifecycle action, with the token a notification would carry."""

    instance_id: str
    group: str
    hook_name: str
    token: str
    deadline: float


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected failure; ``remaining`` None means every matching call."""

    kind: FaultKind
    action: str | None
    service: str | None
    remaining: int | None


class EventStream:
    """Async iterator over fleet events from the moment of subscription."""

    def __init__(self, on_close: Callable[[EventStream], None]) -> None:
        self._queue: asyncio.Queue[FleetEvent | None] = asyncio.Queue()
        self._on_close = on_close

    def push(self, event: FleetEvent) -> None:
        self._queue.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[FleetEvent]:
        return self

    async def __anext__(self) -> FleetEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """End the iteration; events already queued are still delivered."""
        self._on_close(self)
        self._queue.put_nowait(None)


# ------------------------------------------------------------------- wire


@dataclass(frozen=True, slots=True)
class Call:
    """One incoming AWS request, as far as the layer needs to understand it."""

    service: str
    scope: Scope
    action: str
    params: Mapping[str, str]


def parse_call(headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> Call:
    """Service, scope and action of a request from its SigV4 scope and payload."""
    match = _CREDENTIAL.search(headers.get("Authorization", "")) or _CREDENTIAL.search(
        "Credential=" + query.get("X-Amz-Credential", "")
    )
    access_key, region, service = match.groups() if match else ("", "us-east-1", "")
    params: dict[str, str] = dict(query)
    if headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    target = headers.get("X-Amz-Target", "")
    action = params.get("Action") or (target.rsplit(".", 1)[-1] if target else "")
    return Call(service, Scope(region, access_key), action, params)


def member_list(params: Mapping[str, str], name: str) -> list[str]:
    """A query-protocol list (``Name.member.1``, ``Name.member.2`` ...)."""
    found: list[tuple[int, str]] = []
    prefix = f"{name}.member."
    for key, value in params.items():
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            found.append((int(key[len(prefix) :]), value))
    return [value for _, value in sorted(found)]


def _optional_int(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise _validation(f"Invalid value for {name}: {value}") from None


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise AwsError("MissingParameter", f"The request must contain the parameter {name}")
    return value


# Signing names that differ from botocore's service names, for the services near us.
_SIGNING_ALIASES = {
    "monitoring": "cloudwatch",
    "elasticloadbalancing": "elbv2",
    "elasticfilesystem": "efs",
    "email": "ses",
    "execute-api": "apigateway",
}


@functools.lru_cache(maxsize=64)
def _protocol(service: str) -> tuple[str, str]:
    """(protocol, json version) of a service, by its SigV4 signing name."""
    session = botocore.session.get_session()
    name = _SIGNING_ALIASES.get(service, service)
    if name not in session.get_available_services():
        return "rest-xml", "1.0"
    model = session.get_service_model(name)
    return model.protocol, str(model.metadata.get("jsonVersion", "1.0"))


def _error_code(kind: FaultKind, service: str) -> tuple[int, str, str]:
    if kind == "throttling":
        # EC2 names its throttling error differently from every other service.
        code = "RequestLimitExceeded" if service == "ec2" else "Throttling"
        return 400, code, "Rate exceeded"
    if kind == "http503":
        return 503, "ServiceUnavailable", "Service is unavailable (injected)"
    return 500, "InternalFailure", "Internal failure (injected)"


def error_response(service: str, code: str, message: str, status: int) -> web.Response:
    """An error body in the shape botocore's parser for ``service`` expects."""
    request_id = str(uuid.uuid4())
    protocol, json_version = _protocol(service) if service else ("query", "1.0")
    if protocol in ("json", "rest-json"):
        payload = json.dumps({"__type": code, "message": message})
        headers = {"x-amzn-RequestId": request_id, "x-amzn-ErrorType": code}
        content_type = (
            f"application/x-amz-json-{json_version}" if protocol == "json" else "application/json"
        )
        return web.Response(status=status, text=payload, content_type=content_type, headers=headers)
    if protocol == "ec2":
        root = ET.Element("Response")
        error = ET.SubElement(ET.SubElement(root, "Errors"), "Error")
        ET.SubElement(error, "Code").text = code
        ET.SubElement(error, "Message").text = message
        ET.SubElement(root, "RequestID").text = request_id
    else:
        root = ET.Element("ErrorResponse")
        error = ET.SubElement(root, "Error")
        ET.SubElement(error, "Type").text = "Sender" if status < 500 else "Receiver"
        ET.SubElement(error, "Code").text = code
        ET.SubElement(error, "Message").text = message
        ET.SubElement(root, "RequestId").text = request_id
    return web.Response(
        status=status,
        body=ET.tostring(root, encoding="utf-8", xml_declaration=True),
        content_type="text/xml",
        headers={"x-amzn-RequestId": request_id},
    )


def _tag(name: str) -> str:
    return f"{{{AUTOSCALING_NS}}}{name}"


def query_response(action: str, result: ET.Element | None = None) -> web.Response:
    """A successful Auto Scaling answer: ``<ActionResponse><ActionResult/>...``."""
    request_id = str(uuid.uuid4())
    root = ET.Element(_tag(f"{action}Response"))
    if result is not None:
        root.append(result)
    metadata = ET.SubElement(root, _tag("ResponseMetadata"))
    ET.SubElement(metadata, _tag("RequestId")).text = request_id
    body = ET.tostring(root, encoding="utf-8", default_namespace=AUTOSCALING_NS)
    return web.Response(
        body=body, content_type="text/xml", headers={"x-amzn-RequestId": request_id}
    )


def terminate_activity(
    group: str, instance_id: str, before: int, after: int, now: float
) -> ET.Element:
    """The ``Activity`` TerminateInstanceInAutoScalingGroup answers with."""
    started = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cause = (
        f"At {started} instance {instance_id} was taken out of service "
        "in response to a user request"
    )
    cause += f", shrinking the capacity from {before} to {after}." if after < before else "."
    result = ET.Element(_tag("TerminateInstanceInAutoScalingGroupResult"))
    activity = ET.SubElement(result, _tag("Activity"))
    for name, value in (
        ("ActivityId", str(uuid.uuid4())),
        ("AutoScalingGroupName", group),
        ("Description", f"Terminating EC2 instance: {instance_id}"),
        ("Cause", cause),
        ("StartTime", started),
        ("StatusCode", "InProgress"),
        ("Progress", "0"),
        ("Details", "{}"),
    ):
        ET.SubElement(activity, _tag(name)).text = value
    return result


def rewrite_instances(body: bytes, overlay: Mapping[str, Mapping[str, str]]) -> bytes | None:
    """Put the layer's view of instances into a describe answer.

    ``overlay`` maps instance id to {element path: text}, e.g. ``LifecycleState``,
    ``ProtectedFromScaleIn``, ``HealthStatus``, ``LaunchTemplate/Version``; a path the
    answer lacks is left out. None when nothing changed.
    """
    if not overlay:
        return None
    # moto is our own loopback server; its XML is not untrusted input.
    root = ET.fromstring(body)  # noqa: S314
    changed = False
    for member in root.iter(_tag("member")):
        instance_id = member.findtext(_tag("InstanceId"))
        if instance_id is None or instance_id not in overlay:
            continue
        for path, value in overlay[instance_id].items():
            node = member.find("/".join(_tag(part) for part in path.split("/")))
            if node is not None and node.text != value:
                node.text = value
                changed = True
    if not changed:
        return None
    rewritten: bytes = ET.tostring(root, encoding="utf-8", default_namespace=AUTOSCALING_NS)
    return rewritten


def rewrite_groups(body: bytes, desired: Mapping[str, int]) -> bytes | None:
    """A DescribeAutoScalingGroups answer with the DesiredCapacity of ``desired``'s groups;
    None when nothing changed."""
    if not desired:
        return None
    root = ET.fromstring(body)  # noqa: S314 - moto's answer on loopback
    changed = False
    for member in root.iter(_tag("member")):
        name = member.findtext(_tag("AutoScalingGroupName"))
        node = member.find(_tag("DesiredCapacity"))
        if name in desired and node is not None and name is not None:
            node.text = str(desired[name])
            changed = True
    if not changed:
        return None
    rewritten: bytes = ET.tostring(root, encoding="utf-8", default_namespace=AUTOSCALING_NS)
    return rewritten


def rewrite_hooks(body: bytes) -> bytes | None:
    """A DescribeLifecycleHooks answer whose GlobalTimeout is AWS's (moto says 48 h always)."""
    root = ET.fromstring(body)  # noqa: S314 - moto's answer on loopback
    changed = False
    for member in root.iter(_tag("member")):
        heartbeat = member.findtext(_tag("HeartbeatTimeout"))
        node = member.find(_tag("GlobalTimeout"))
        if heartbeat is None or not heartbeat.isdigit():
            continue
        value = str(global_timeout(int(heartbeat)))
        if node is None:
            node = ET.SubElement(member, _tag("GlobalTimeout"))
        if node.text != value:
            node.text = value
            changed = True
    if not changed:
        return None
    rewritten: bytes = ET.tostring(root, encoding="utf-8", default_namespace=AUTOSCALING_NS)
    return rewritten


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def activities_result(activities: Sequence[Activity]) -> ET.Element:
    """The ``DescribeScalingActivitiesResult`` listing ``activities``."""
    result = ET.Element(_tag("DescribeScalingActivitiesResult"))
    listed = ET.SubElement(result, _tag("Activities"))
    for a in activities:
        member = ET.SubElement(listed, _tag("member"))
        fields = [
            ("ActivityId", a.activity_id),
            ("AutoScalingGroupName", a.group),
            ("Description", a.description),
            ("Cause", a.cause),
            ("StartTime", _timestamp(a.start)),
            ("StatusCode", a.status),
            ("Progress", "100" if a.end is not None else "50"),
            ("Details", "{}"),
        ]
        if a.end is not None:
            fields.append(("EndTime", _timestamp(a.end)))
        for name, value in fields:
            ET.SubElement(member, _tag(name)).text = value
    return result


def _launch_template_element(parent: ET.Element, template_id: str, version: str) -> None:
    if not template_id:
        return
    template = ET.SubElement(parent, _tag("LaunchTemplate"))
    ET.SubElement(template, _tag("LaunchTemplateId")).text = template_id
    ET.SubElement(template, _tag("Version")).text = version


def warm_pool_result(
    config: WarmPoolConfig | None, instances: Sequence[InstanceInfo], template_id: str
) -> ET.Element:
    """The ``DescribeWarmPoolResult``: the configuration (none without a pool) and the pool's
    instances with their ``Warmed:*`` states."""
    result = ET.Element(_tag("DescribeWarmPoolResult"))
    if config is not None:
        conf = ET.SubElement(result, _tag("WarmPoolConfiguration"))
        if config.max_prepared is not None:
            ET.SubElement(conf, _tag("MaxGroupPreparedCapacity")).text = str(config.max_prepared)
        ET.SubElement(conf, _tag("MinSize")).text = str(config.min_size)
        ET.SubElement(conf, _tag("PoolState")).text = config.pool_state
        if config.deleting:
            ET.SubElement(conf, _tag("Status")).text = "PendingDelete"
        reuse = ET.SubElement(conf, _tag("InstanceReusePolicy"))
        ET.SubElement(reuse, _tag("ReuseOnScaleIn")).text = str(config.reuse_on_scale_in).lower()
    listed = ET.SubElement(result, _tag("Instances"))
    for info in instances:
        member = ET.SubElement(listed, _tag("member"))
        for name, value in (
            ("InstanceId", info.instance_id),
            ("InstanceType", info.instance_type),
            ("AvailabilityZone", info.availability_zone),
            ("LifecycleState", info.lifecycle_state),
            ("HealthStatus", "Healthy" if info.healthy else "Unhealthy"),
        ):
            ET.SubElement(member, _tag(name)).text = value
        _launch_template_element(member, template_id, info.launch_version)
    return result


def add_warm_instances(
    body: bytes, instances: Sequence[InstanceInfo], template_ids: Mapping[str, str]
) -> bytes | None:
    """A DescribeAutoScalingInstances answer that also lists ``instances`` of warm pools, as
    AWS does (their LifecycleState is one of the ``Warmed:*`` values of
    AutoScalingInstanceDetails, API Reference); None when there are none to add."""
    if not instances:
        return None
    root = ET.fromstring(body)  # noqa: S314 - moto's answer on loopback
    listed = root.find(
        f"{_tag('DescribeAutoScalingInstancesResult')}/{_tag('AutoScalingInstances')}"
    )
    if listed is None:
        return None
    for info in instances:
        member = ET.SubElement(listed, _tag("member"))
        for name, value in (
            ("InstanceId", info.instance_id),
            ("InstanceType", info.instance_type),
            ("AutoScalingGroupName", info.group),
            ("AvailabilityZone", info.availability_zone),
            ("LifecycleState", info.lifecycle_state),
            # DescribeAutoScalingInstances spells health in capitals.
            ("HealthStatus", "HEALTHY" if info.healthy else "UNHEALTHY"),
            ("ProtectedFromScaleIn", "false"),
        ):
            ET.SubElement(member, _tag(name)).text = value
        _launch_template_element(member, template_ids.get(info.group, ""), info.launch_version)
    rewritten: bytes = ET.tostring(root, encoding="utf-8", default_namespace=AUTOSCALING_NS)
    return rewritten


def rewrite_warm_pool_sizes(body: bytes, sizes: Mapping[str, int]) -> bytes | None:
    """A DescribeAutoScalingGroups answer with ``WarmPoolSize`` (the instances in each group's
    warm pool) for the groups that have one; None when nothing changed."""
    if not sizes:
        return None
    root = ET.fromstring(body)  # noqa: S314 - moto's answer on loopback
    changed = False
    for member in root.iter(_tag("member")):
        name = member.findtext(_tag("AutoScalingGroupName"))
        if name is None or name not in sizes or member.find(_tag("DesiredCapacity")) is None:
            continue
        node = member.find(_tag("WarmPoolSize"))
        if node is None:
            node = ET.SubElement(member, _tag("WarmPoolSize"))
        node.text = str(sizes[name])
        changed = True
    if not changed:
        return None
    rewritten: bytes = ET.tostring(root, encoding="utf-8", default_namespace=AUTOSCALING_NS)
    return rewritten


# ------------------------------------------------------------------- the layer


@dataclass(frozen=True, slots=True)
class _Clients:
    autoscaling: AutoScalingClient
    ec2: EC2Client


@dataclass(frozen=True, slots=True)
class _GroupView:
    name: str
    min_size: int
    max_size: int
    desired: int
    instances: tuple[InstanceInfo, ...]
    template_id: str = ""
    template_version: str = ""
    """The group's launch template and version as it names them ("" without a template)."""
    suspended: frozenset[str] = frozenset()
    subnets: tuple[str, ...] = ()

    def in_service(self) -> tuple[InstanceInfo, ...]:
        return tuple(i for i in self.instances if i.lifecycle_state == "InService")

    def active(self) -> tuple[InstanceInfo, ...]:
        """In service or on the way there: what moto counts as InService, since the layer
        holds launching instances there and only shows them Pending."""
        return tuple(
            i
            for i in self.instances
            if i.lifecycle_state in ("InService", "Pending", "Pending:Wait")
        )


class LifecycleLayer:
    """The state and behaviour behind the HTTP layer; also the simulator's view of AWS."""

    def __init__(
        self,
        moto_endpoint: str,
        *,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        terminating_pause: float = 0.0,
        launching_pause: float = 0.0,
    ) -> None:
        """``terminating_pause``: seconds an instance is ``Terminating`` before its hooks'
        ``Terminating:Wait``; ``launching_pause`` the same for ``Pending`` before
        ``Pending:Wait`` (AWS moves on within moments; tests widen the windows)."""
        self._moto = moto_endpoint.rstrip("/")
        self.terminating_pause = terminating_pause
        self.launching_pause = launching_pause
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._lock = asyncio.Lock()
        self._clients_lock = asyncio.Lock()
        self._stack: contextlib.AsyncExitStack | None = None
        self._http: aiohttp.ClientSession | None = None
        self._session: AioSession = get_session()
        self._clients: dict[Scope, _Clients] = {}
        self._scopes: set[Scope] = set()
        self._terminations: dict[str, Termination] = {}
        self._known: dict[str, InstanceInfo] = {}
        self._gone: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._history: list[FleetEvent] = []
        self._streams: list[EventStream] = []
        self._listeners: list[Callable[[FleetEvent], None]] = []
        self._observers: list[Callable[[str, str], Awaitable[None]]] = []
        self._activities: dict[str, Activity] = {}
        self._surplus: dict[tuple[Scope, str], Surplus] = {}
        self._launch_first: dict[tuple[Scope, str], bool] = {}
        self._pools: dict[tuple[str, str], WarmPoolConfig] = {}
        """By (region, group): every fake access key lands in moto's one account."""
        self._warm: dict[str, InstanceInfo] = {}
        """Warm pool instances (never members of the group in moto), in their steady state."""
        self._launches: dict[str, LaunchWait] = {}
        self._pool_templates: dict[tuple[str, str], str] = {}
        self._addresses = 0
        self._failing_starts = 0

    @property
    def moto_endpoint(self) -> str:
        return self._moto

    async def start(self) -> None:
        """Open the connections to moto; idempotent."""
        if self._stack is not None:
            return
        stack = contextlib.AsyncExitStack()
        self._http = await stack.enter_async_context(
            aiohttp.ClientSession(
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=60),
            )
        )
        self._stack = stack

    async def close(self) -> None:
        """Close moto connections and end every event stream."""
        for stream in list(self._streams):
            stream.close()
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._http = None
        self._clients.clear()

    # ------------------------------------------------------ in-process API

    def instances(self) -> tuple[InstanceInfo, ...]:
        """Instances of a group (in service, launching, standby or terminating) and of its
        warm pool (``Warmed:*``)."""
        every = [*self._known.values(), *self._warm.values()]
        return tuple(self._with_overlay(info) for info in sorted(every, key=_launch_order))

    def target_lifecycle_state(self, instance_id: str) -> str | None:
        """What IMDS ``autoscaling/target-lifecycle-state`` shows; None if never seen."""
        term = self._terminations.get(instance_id)
        if term is not None:
            return "Warmed:Terminated" if term.warm else "Terminated"
        wait = self._launches.get(instance_id)
        if wait is not None and wait.into_pool:
            # On its way into the pool it heads for the pool's state (Warmed:Stopped).
            return self._pool_of(wait.scope, wait.group).warmed_state
        info = self._known.get(instance_id) or self._warm.get(instance_id)
        if info is not None:
            state = self._with_overlay(info).lifecycle_state
            return _STATE_FOR_TARGET.get(state, state)
        return self._gone.get(instance_id)

    def lifecycle_actions(self) -> tuple[LifecycleAction, ...]:
        """Pending lifecycle actions with their tokens and deadlines."""
        waits: list[Termination | LaunchWait] = [
            *self._terminations.values(),
            *self._launches.values(),
        ]
        return tuple(
            LifecycleAction(w.instance_id, w.group, h.hook_name, h.token, h.deadline)
            for w in waits
            for h in w.hooks
        )

    def warm_pool(self, group: str) -> WarmPoolConfig | None:
        """The warm pool of ``group`` as the layer runs it; None without one."""
        return next((c for (_, g), c in self._pools.items() if g == group), None)

    def fail_warm_starts(self, count: int = 1) -> None:
        """Make the next ``count`` starts of warm pool instances fail (as a start does when
        the zone is out of capacity): those launches are cold ones, and the instances stay
        stopped in the pool ("Warm pools ... Limitations", EC2 Auto Scaling User Guide: "You
        could also experience cold starts if an Availability Zone is out of capacity")."""
        self._failing_starts += count
        log.info("fault_injected", kind="warm_start", count=count)

    def events(self) -> tuple[FleetEvent, ...]:
        """Every event since start or the last reset."""
        return tuple(self._history)

    def subscribe(self) -> EventStream:
        """A stream of the events from now on; close it when done."""
        stream = EventStream(self._unsubscribe)
        self._streams.append(stream)
        return stream

    def add_observer(self, callback: Callable[[str, str], Awaitable[None]]) -> Callable[[], None]:
        """Await ``callback(service, action)`` after each successful forwarded call.

        It runs before the caller gets its answer, so a test can mirror what a
        call changed (e.g. Route53 TXT records into a test DNS server) without
        racing the caller's next step. Returns a function that removes it.
        """
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    def add_listener(self, callback: Callable[[FleetEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for each event; returns the function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def inject_fault(
        self,
        kind: FaultKind,
        action: str | None = None,
        *,
        count: int | None = 1,
        service: str | None = None,
    ) -> None:
        """Fail the next ``count`` calls of ``action`` (None: any) or all with count None."""
        self._faults.append(Fault(kind, action, service, count))
        log.info("fault_injected", kind=kind, action=action, count=count, service=service)

    def clear_faults(self) -> None:
        self._faults.clear()

    async def reset(self) -> None:
        """Forget all state; call together with moto's reset."""
        async with self._lock:
            self._clear_state()

    async def tick(self) -> None:
        """Apply expired hook deadlines, replace unhealthy instances, end launch-first
        surpluses and let groups converge on their desired size."""
        async with self._lock:
            now = self._clock()
            for instance_id, term in list(self._terminations.items()):
                updated = expire_hooks(term, now)
                if updated is None:
                    log.info("lifecycle_hook_timeout", instance_id=instance_id, group=term.group)
                    await self._finish(term)
                elif updated != term:
                    self._terminations[instance_id] = updated
            for instance_id, wait in list(self._launches.items()):
                waited, abandoned = expire_launch_hooks(wait, now)
                if waited is None:
                    log.info(
                        "lifecycle_hook_timeout", instance_id=instance_id, group=wait.group,
                        abandoned=abandoned,
                    )  # fmt: skip
                    await self._launch_done(wait, abandoned)
                elif waited != wait:
                    self._launches[instance_id] = waited
            for surplus in list(self._surplus.values()):
                await self._end_surplus(surplus)
            for scope in list(self._scopes):
                await self._replace_unhealthy(scope)
                await self._converge(scope)
                await self._keep_pools(scope)

    async def rebalance(self, group: str, region: str | None = None) -> bool:
        """AZ rebalancing, as AWS starts it by itself: launch one instance first, then (at the
        next ``tick``) scale in by the termination policy. False, and nothing done, while
        the group's AZRebalance process is suspended."""
        async with self._lock:
            for scope in list(self._scopes):
                if region is not None and scope.region != region:
                    continue
                view = next(iter(await self._groups(scope, [group])), None)
                if view is None:
                    continue
                if "AZRebalance" in view.suspended:
                    log.info("rebalance_suspended", group=group)
                    return False
                await self._launch_first_for(scope, view, None, "to balance zones")
                return True
        raise ValueError(f"no group {group!r}")

    async def run_ticker(
        self,
        interval: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Call :meth:`tick` every ``interval`` seconds until cancelled."""
        while True:
            await sleep(interval)
            try:
                await self.tick()
            except (ClientError, BotoCoreError, ResponseParserError, aiohttp.ClientError) as exc:
                # moto restarting or reset mid-tick: the next tick starts from its truth.
                log.warning("tick_failed", error=str(exc))

    async def sync(self, scope: Scope | None = None) -> None:
        """Refresh the view from moto (all scopes seen so far, or one)."""
        async with self._lock:
            for each in [scope] if scope is not None else list(self._scopes):
                await self._ensure_clients(each)
                self._scopes.add(each)
                await self._sync(each)

    def app(self) -> web.Application:
        """The aiohttp application that serves the layer."""
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    # ------------------------------------------------------------ HTTP entry

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.startswith("/moto-api/reset"):
            response = await self._forward(request, body)
            async with self._lock:
                self._clear_state()
            return response
        call = parse_call(request.headers, request.query, body)
        fault = self._take_fault(call)
        if fault == "empty":
            # A describe that does not list the instance yet (or any more).
            log.info("fault_answered", action=call.action, code="empty")
            result = ET.Element(_tag(f"{call.action}Result"))
            ET.SubElement(result, _tag("AutoScalingInstances"))
            return query_response(call.action, result)
        if fault is not None:
            status, code, message = _error_code(fault, call.service)
            log.info("fault_answered", action=call.action, code=code, status=status)
            return error_response(call.service, code, message, status)
        try:
            if call.service in ("autoscaling", "ec2"):
                await self._ensure_clients(call.scope)
                self._scopes.add(call.scope)
            if call.service == "autoscaling":
                handler = _OWNED.get(call.action)
                if handler is not None:
                    async with self._lock:
                        return await handler(self, call, request, body)
            response = await self._forward(request, body)
            if response.status < 400:
                for observer in list(self._observers):
                    await observer(call.service, call.action)
            if call.service == "autoscaling" and call.action in _DESCRIBE_WITH_INSTANCES:
                response = self._overlay_response(response, call.scope)
                if call.action == "DescribeAutoScalingInstances":
                    return self._with_warm_instances(response, call)
                return response
            if call.service == "autoscaling" and call.action == "DescribeLifecycleHooks":
                return _rewritten(response, rewrite_hooks)
            if (
                call.service in ("autoscaling", "ec2")
                and response.status < 400
                and not call.action.startswith(_READ_ONLY_PREFIXES)
            ):
                async with self._lock:
                    await self._sync(call.scope)
            return response
        except AwsError as exc:
            return error_response(call.service, exc.code, exc.message, exc.status)
        except (BotoCoreError, ResponseParserError) as exc:
            log.warning("moto_call_failed", action=call.action, error=str(exc))
            return error_response(call.service, "InternalFailure", str(exc), 500)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
            return error_response(
                call.service, error.get("Code", "InternalFailure"), error.get("Message", ""), status
            )

    async def _forward(
        self, request: web.Request, body: bytes, *, params: Mapping[str, str] | None = None
    ) -> web.Response:
        if self._http is None:
            raise RuntimeError("LifecycleLayer.start() was not called")
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )
        payload = body if params is None else urlencode(params).encode()
        async with self._http.request(
            request.method,
            self._moto + request.path_qs,
            headers=headers,
            data=payload,
            allow_redirects=False,
        ) as upstream:
            content = await upstream.read()
            out = CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
            )
            return web.Response(status=upstream.status, body=content, headers=out)

    def _overlay_response(self, response: web.Response, scope: Scope) -> web.Response:
        now = self._clock()
        overlay: dict[str, dict[str, str]] = {}
        for iid, info in self._known.items():
            if info.launch_named:
                overlay[iid] = {"LaunchTemplate/Version": info.launch_named}
        for iid, t in self._terminations.items():
            overlay.setdefault(iid, {}).update(
                {
                    "LifecycleState": t.state_at(now),
                    "ProtectedFromScaleIn": str(t.protected).lower(),
                }
            )
        for iid, w in self._launches.items():
            overlay.setdefault(iid, {})["LifecycleState"] = w.state_at(now)
        # Every fake access key lands in moto's one default account: match the region only.
        desired = {
            g: sp.desired for (sc, g), sp in self._surplus.items() if sc.region == scope.region
        }
        pools = {
            g: sum(1 for w in self._warm.values() if w.group == g)
            for (region, g) in self._pools
            if region == scope.region
        }
        response = _rewritten(response, lambda body: rewrite_instances(body, overlay))
        response = _rewritten(response, lambda body: rewrite_warm_pool_sizes(body, pools))
        return _rewritten(response, lambda body: rewrite_groups(body, desired))

    def _with_warm_instances(self, response: web.Response, call: Call) -> web.Response:
        asked = set(member_list(call.params, "InstanceIds"))
        warm = [
            self._with_overlay(info)
            for info in sorted(self._warm.values(), key=_launch_order)
            if info.region == call.scope.region and (not asked or info.instance_id in asked)
        ]
        templates = {g: t for (r, g), t in self._pool_templates.items() if r == call.scope.region}
        return _rewritten(response, lambda body: add_warm_instances(body, warm, templates))

    def _take_fault(self, call: Call) -> FaultKind | None:
        for index, fault in enumerate(self._faults):
            if fault.action is not None and fault.action != call.action:
                continue
            if fault.service is not None and fault.service != call.service:
                continue
            if fault.remaining is not None:
                if fault.remaining <= 1:
                    del self._faults[index]
                else:
                    self._faults[index] = dataclasses.replace(fault, remaining=fault.remaining - 1)
            return fault.kind
        return None

    # ------------------------------------------------------- owned actions

    async def _terminate_instance(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        instance_id = _required(call.params, "InstanceId")
        decrement = call.params.get("ShouldDecrementDesiredCapacity", "false").lower() == "true"
        if instance_id in self._terminations:
            raise _validation(f"The instance {instance_id} is already in Terminating:Wait.")
        group = await self._group_of(call.scope, instance_id)
        if decrement and group.desired <= group.min_size:
            raise _validation(
                f"Currently, desiredSize equals minSize ({group.min_size}). Terminating instance "
                "without replacement will violate group's min size constraint. Either set "
                "shouldDecrementDesiredCapacity flag to false or lower group's min size."
            )
        hooks = await self._termination_hooks(call.scope, group.name)
        if not hooks:
            response = await self._forward(request, body)
            await self._sync(call.scope)
            return response
        instance = next(i for i in group.instances if i.instance_id == instance_id)
        await self._begin_wait(call.scope, group.name, instance, hooks, decrement=decrement)
        after = group.desired - 1 if decrement else group.desired
        await self._sync(call.scope)
        activity = terminate_activity(group.name, instance_id, group.desired, after, self._clock())
        return query_response(call.action, activity)

    async def _set_desired_capacity(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        name = _required(call.params, "AutoScalingGroupName")
        desired = _optional_int(call.params, "DesiredCapacity")
        if desired is None:
            raise AwsError(
                "MissingParameter", "The request must contain the parameter DesiredCapacity"
            )
        await self._settle(call.scope, name)
        group = await self._group(call.scope, name)
        message = desired_capacity_error(desired, group.min_size, group.max_size)
        if message is not None:
            raise _validation(message)
        await self._resize(call.scope, group, desired)
        await self._sync(call.scope)
        return query_response(call.action)

    async def _create_group(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        min_size = _optional_int(call.params, "MinSize") or 0
        max_size = _optional_int(call.params, "MaxSize") or 0
        desired = _optional_int(call.params, "DesiredCapacity")
        resolve_sizes((min_size, max_size, min_size), min_size, max_size, desired)
        response = await self._forward(request, body)
        if response.status < 400:
            self._note_maintenance(call)
            await self._sync(call.scope)
        return response

    def _note_maintenance(self, call: Call) -> None:
        """Remember whether the group's replacements launch first: an instance maintenance
        policy with MinHealthyPercentage 100 keeps every instance until its replacement runs
        ("Instance maintenance policies", EC2 Auto Scaling User Guide)."""
        low = _optional_int(call.params, "InstanceMaintenancePolicy.MinHealthyPercentage")
        high = _optional_int(call.params, "InstanceMaintenancePolicy.MaxHealthyPercentage")
        if low is not None or high is not None:
            key = (call.scope, _required(call.params, "AutoScalingGroupName"))
            self._launch_first[key] = low == 100 and (high or 100) > 100

    async def _update_group(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        name = _required(call.params, "AutoScalingGroupName")
        await self._settle(call.scope, name)
        group = await self._group(call.scope, name)
        _, _, desired = resolve_sizes(
            (group.min_size, group.max_size, group.desired),
            _optional_int(call.params, "MinSize"),
            _optional_int(call.params, "MaxSize"),
            _optional_int(call.params, "DesiredCapacity"),
        )
        # The other settings go to moto first with the capacity unchanged, so a refused
        # update leaves no instance half-terminated; the layer then resizes itself.
        params = dict(call.params)
        params["DesiredCapacity"] = str(group.desired)
        response = await self._forward(request, body, params=params)
        if response.status >= 400:
            return response
        self._note_maintenance(call)
        await self._resize(call.scope, await self._group(call.scope, name), desired)
        await self._sync(call.scope)
        return query_response(call.action)

    async def _complete_action(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        result = _required(call.params, "LifecycleActionResult")
        if result not in LIFECYCLE_RESULTS:
            raise _validation(f"Invalid lifecycle action result: {result}")
        wait, hook_name = self._find_action(call)
        log.info(
            "lifecycle_action_completed",
            instance_id=wait.instance_id,
            hook=hook_name,
            result=result,
        )
        if isinstance(wait, LaunchWait):
            waited, abandoned = complete_launch_hook(wait, hook_name, result)
            if waited is None:
                await self._launch_done(wait, abandoned)
            else:
                self._launches[wait.instance_id] = waited
            return query_response(call.action, ET.Element(_tag("CompleteLifecycleActionResult")))
        updated = complete_hook(wait, hook_name, result)
        if updated is None:
            await self._finish(wait)
        else:
            self._terminations[wait.instance_id] = updated
        return query_response(call.action, ET.Element(_tag("CompleteLifecycleActionResult")))

    async def _heartbeat(self, call: Call, request: web.Request, body: bytes) -> web.StreamResponse:
        wait, hook_name = self._find_action(call)
        if isinstance(wait, LaunchWait):
            self._launches[wait.instance_id] = record_heartbeat(wait, hook_name, self._clock())
        else:
            self._terminations[wait.instance_id] = record_heartbeat(wait, hook_name, self._clock())
        log.info("lifecycle_heartbeat", instance_id=wait.instance_id, hook=hook_name)
        return query_response(call.action, ET.Element(_tag("RecordLifecycleActionHeartbeatResult")))

    # ------------------------------------------------------------ warm pools

    async def _put_warm_pool(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        name = _required(call.params, "AutoScalingGroupName")
        group = await self._group(call.scope, name)
        key = (call.scope.region, name)
        config = warm_pool_config(call.params, self._pools.get(key))
        response = await self._forward(request, body)
        if response.status >= 400:
            return response
        self._pools[key] = config
        self._pool_templates[key] = group.template_id
        log.info(
            "warm_pool_put", group=name, min_size=config.min_size,
            max_prepared=config.max_prepared, pool_state=config.pool_state,
        )  # fmt: skip
        await self._keep_pool(call.scope, group)
        return query_response(call.action, ET.Element(_tag("PutWarmPoolResult")))

    async def _describe_warm_pool(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        name = _required(call.params, "AutoScalingGroupName")
        await self._group(call.scope, name)
        key = (call.scope.region, name)
        members = [
            self._with_overlay(info)
            for info in sorted(self._warm.values(), key=_launch_order)
            if info.group == name and info.region == call.scope.region
        ]
        result = warm_pool_result(self._pools.get(key), members, self._pool_templates.get(key, ""))
        return query_response(call.action, result)

    async def _delete_warm_pool(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        name = _required(call.params, "AutoScalingGroupName")
        force = call.params.get("ForceDelete", "false").lower() == "true"
        key = (call.scope.region, name)
        config = self._pools.get(key)
        if config is None:
            raise _validation(f"No warm pool found for Auto Scaling group {name}.")
        self._pools[key] = dataclasses.replace(config, deleting=True)
        hooks = [] if force else await self._hooks(call.scope, name, TERMINATING_TRANSITION)
        for info in [w for w in self._warm.values() if w.group == name]:
            if info.instance_id not in self._terminations:
                await self._end_warm(call.scope, info, hooks, "the warm pool was deleted")
        await self._drop_deleted_pool(call.scope, name)
        return query_response(call.action, ET.Element(_tag("DeleteWarmPoolResult")))

    async def _drop_deleted_pool(self, scope: Scope, name: str) -> None:
        """Forget a deleted pool once its last instance is gone (moto's record with it)."""
        key = (scope.region, name)
        config = self._pools.get(key)
        if config is None or not config.deleting:
            return
        if any(w.group == name and w.region == scope.region for w in self._warm.values()):
            return
        del self._pools[key]
        with contextlib.suppress(ClientError, BotoCoreError, ResponseParserError):
            await self._client(scope).autoscaling.delete_warm_pool(
                AutoScalingGroupName=name, ForceDelete=True
            )
        log.info("warm_pool_deleted", group=name)

    def _pool_of(self, scope: Scope, group: str) -> WarmPoolConfig:
        return self._pools.get((scope.region, group)) or WarmPoolConfig()

    async def _keep_pools(self, scope: Scope) -> None:
        for region, name in list(self._pools):
            if region != scope.region:
                continue
            groups = await self._groups(scope, [name])
            if groups:
                await self._keep_pool(scope, groups[0])
            await self._drop_deleted_pool(scope, name)

    async def _keep_pool(self, scope: Scope, group: _GroupView) -> None:
        """Launch into the pool, or terminate from it, until it has its size: the pool
        refills by itself after a scale-out took from it."""
        config = self._pools.get((scope.region, group.name))
        if config is None:
            return
        pool = [
            w for w in self._warm.values()
            if w.group == group.name and w.region == scope.region
            and w.instance_id not in self._terminations
        ]  # fmt: skip
        size = warm_pool_size(config, group.max_size, group.desired)
        for index in range(len(pool), size):
            await self._launch_into_pool(scope, group, config, index)
        if len(pool) > size:
            victims = choose_victims(
                [_candidate(w) for w in pool], len(pool) - size, self._clock(), self._rng
            )
            hooks = await self._hooks(scope, group.name, TERMINATING_TRANSITION)
            for victim in victims:
                await self._end_warm(
                    scope, self._warm[victim], hooks, "the warm pool is larger than its size"
                )

    async def _launch_into_pool(
        self, scope: Scope, group: _GroupView, config: WarmPoolConfig, index: int
    ) -> None:
        """Run one instance for the pool from the group's launch template; its launch hooks
        hold it in Warmed:Pending:Wait, or it is stopped at once: AWS "does not wait for user
        data to finish running" ("Use lifecycle hooks with a warm pool")."""
        ec2 = self._client(scope).ec2
        named, number = await self._template_version(scope, group)
        spec: dict[str, Any] = {"MinCount": 1, "MaxCount": 1}
        if group.template_id:
            spec["LaunchTemplate"] = {"LaunchTemplateId": group.template_id, "Version": number}
        if group.subnets:
            spec["SubnetId"] = group.subnets[index % len(group.subnets)]
        answer = await ec2.run_instances(**spec)
        raw = answer["Instances"][0]
        instance_id = raw["InstanceId"]
        tags = [{"Key": "aws:autoscaling:groupName", "Value": group.name}]
        if group.template_id:
            tags += [
                {"Key": "aws:ec2launchtemplate:id", "Value": group.template_id},
                {"Key": "aws:ec2launchtemplate:version", "Value": number},
            ]
        await ec2.create_tags(Resources=[instance_id], Tags=tags)  # type: ignore[arg-type]
        now = self._clock()
        info = InstanceInfo(
            instance_id=instance_id,
            group=group.name,
            region=scope.region,
            availability_zone=str(raw.get("Placement", {}).get("AvailabilityZone", "")),
            private_ip=str(raw.get("PrivateIpAddress", "")),
            public_ip=self._new_public_ip(),
            lifecycle_state=config.warmed_state,
            protected=False,
            launched_at=now,
            launch_version=number,
            launch_named=named,
            instance_type=str(raw.get("InstanceType", "")),
        )
        self._warm[instance_id] = info
        self._activity(
            group.name, f"Launching a new EC2 instance into warm pool: {instance_id}",
            "an instance was launched to maintain the warm pool's size", now, done=True,
        )  # fmt: skip
        hooks = await self._hooks(scope, group.name, LAUNCHING_TRANSITION)
        log.info("warm_pool_launch", instance_id=instance_id, group=group.name, hooks=len(hooks))
        self._emit("launched", instance_id, group.name)
        if hooks:
            self._launches[instance_id] = start_launch(
                instance_id, group.name, scope, hooks, now, lambda: str(uuid.uuid4()),
                self.launching_pause, into_pool=True,
            )  # fmt: skip
        else:
            await self._enter_pool(scope, info)

    async def _enter_pool(self, scope: Scope, info: InstanceInfo) -> None:
        """The warm-up is over: the instance goes to the pool's state (stopped, mostly)."""
        config = self._pool_of(scope, info.group)
        self._warm[info.instance_id] = dataclasses.replace(
            info, lifecycle_state=config.warmed_state
        )
        if config.pool_state != "Running":
            # Hibernated is emulated as a stop: this project never uses it (cfn/fleet.yaml).
            await self._client(scope).ec2.stop_instances(InstanceIds=[info.instance_id])
            self._emit("stopped", info.instance_id, info.group)
        log.info("warm_pool_ready", instance_id=info.instance_id, state=config.warmed_state)

    async def _start_from_pool(self, scope: Scope, group: _GroupView, count: int) -> int:
        """Start up to ``count`` ready pool instances into the group; how many started.

        Each gets a new public address ("We release your instance's public IP address when
        it is stopped, hibernated, or terminated. Your stopped or hibernated instance
        receives a new public IP address when it is started": "Public IPv4 addresses",
        Amazon EC2 User Guide) and goes through Pending and its launch hooks again. A
        failed start (``fail_warm_starts``) leaves the instance stopped in the pool.
        """
        config = self._pools.get((scope.region, group.name))
        if config is None or config.deleting or count <= 0:
            return 0
        ready = sorted(
            (
                w for w in self._warm.values()
                if w.group == group.name and w.region == scope.region
                and w.lifecycle_state in WARMED_STEADY
                and w.instance_id not in self._launches and w.instance_id not in self._terminations
            ),
            key=_launch_order,
        )  # fmt: skip
        clients = self._client(scope)
        hooks = await self._hooks(scope, group.name, LAUNCHING_TRANSITION)
        started = 0
        room = group.max_size - len(group.instances)
        for info in ready[: min(count, max(0, room))]:
            now = self._clock()
            if self._failing_starts > 0:
                self._failing_starts -= 1
                log.warning("warm_start_failed", instance_id=info.instance_id, group=group.name)
                self._activity(
                    group.name, f"Launching a new EC2 instance from warm pool: {info.instance_id}",
                    "InsufficientInstanceCapacity (injected): a cold launch takes its place",
                    now, done=True, status="Failed",
                )  # fmt: skip
                continue
            if info.lifecycle_state != "Warmed:Running":
                await clients.ec2.start_instances(InstanceIds=[info.instance_id])
            del self._warm[info.instance_id]
            member = dataclasses.replace(
                info, lifecycle_state="InService", public_ip=self._new_public_ip(), launched_at=now
            )
            self._known[info.instance_id] = member
            await clients.autoscaling.attach_instances(
                AutoScalingGroupName=group.name, InstanceIds=[info.instance_id]
            )
            if hooks:
                self._launches[info.instance_id] = start_launch(
                    info.instance_id, group.name, scope, hooks, now, lambda: str(uuid.uuid4()),
                    self.launching_pause,
                )  # fmt: skip
            self._activity(
                group.name, f"Launching a new EC2 instance from warm pool: {info.instance_id}",
                "an instance was started from the warm pool in response to a difference "
                "between desired and actual capacity", now, done=True,
            )  # fmt: skip
            log.info(
                "warm_pool_start", instance_id=info.instance_id, group=group.name,
                public_ip=member.public_ip,
            )  # fmt: skip
            self._emit("started", info.instance_id, group.name)
            started += 1
        return started

    async def _end_warm(
        self, scope: Scope, info: InstanceInfo, hooks: Sequence[HookConfig], cause: str
    ) -> None:
        """Terminate a pool instance: Warmed:Terminating, then Warmed:Terminating:Wait for the
        termination hooks, which a stopped instance cannot answer: it waits them out."""
        self._launches.pop(info.instance_id, None)
        now = self._clock()
        term = start_termination(
            info.instance_id, info.group, scope, False, hooks, now,
            lambda: str(uuid.uuid4()), self.terminating_pause,
        )  # fmt: skip
        activity = Activity(
            str(uuid.uuid4()), info.group, f"Terminating EC2 instance: {info.instance_id}",
            cause, now, status="MidLifecycleAction" if hooks else "InProgress",
        )  # fmt: skip
        self._activities[activity.activity_id] = activity
        term = dataclasses.replace(term, activity_id=activity.activity_id, warm=True)
        log.info("warm_pool_terminating", instance_id=info.instance_id, cause=cause)
        self._emit("terminating", info.instance_id, info.group)
        if hooks:
            self._terminations[info.instance_id] = term
        else:
            await self._finish(term)

    async def _launch_done(self, wait: LaunchWait, abandoned: bool) -> None:
        """The launch hooks are over: into the pool or into service; abandoned: terminated
        (the group, or the pool, launches a replacement by itself)."""
        self._launches.pop(wait.instance_id, None)
        scope = wait.scope
        if wait.into_pool:
            info = self._warm.get(wait.instance_id)
            if info is None:
                return
            if abandoned:
                await self._end_warm(scope, info, [], "its launch was abandoned")
            else:
                await self._enter_pool(scope, info)
            return
        if not abandoned:
            log.info("instance_in_service", instance_id=wait.instance_id, group=wait.group)
            return
        log.info("launch_abandoned", instance_id=wait.instance_id, group=wait.group)
        with contextlib.suppress(ClientError, BotoCoreError, ResponseParserError):
            await self._client(scope).autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=wait.instance_id, ShouldDecrementDesiredCapacity=False
            )
        await self._sync(scope)

    def _new_public_ip(self) -> str:
        self._addresses += 1
        return f"{PUBLIC_POOL}.{(self._addresses - 1) % 254 + 1}"

    def _activity(
        self, group: str, description: str, cause: str, at: float, *, done: bool,
        status: str = "Successful",
    ) -> None:  # fmt: skip
        activity = Activity(
            str(uuid.uuid4()), group, description, cause, at,
            end=at if done else None, status=status if done else "InProgress",
        )  # fmt: skip
        self._activities[activity.activity_id] = activity

    async def _template_version(self, scope: Scope, group: _GroupView) -> tuple[str, str]:
        """(the version as the group names it, its number now)."""
        named = group.template_version
        if not group.template_id or named.isdigit():
            return named, named
        answer = await self._client(scope).ec2.describe_launch_templates(
            LaunchTemplateIds=[group.template_id]
        )
        template = answer["LaunchTemplates"][0]
        latest = named == "$Latest"
        number = template["LatestVersionNumber"] if latest else template["DefaultVersionNumber"]
        return named, str(number)

    async def _set_protection(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        name = _required(call.params, "AutoScalingGroupName")
        protected = _required(call.params, "ProtectedFromScaleIn").lower() == "true"
        ids = member_list(call.params, "InstanceIds")
        waiting = [i for i in ids if i in self._terminations]
        for instance_id in waiting:
            term = self._terminations[instance_id]
            self._terminations[instance_id] = dataclasses.replace(term, protected=protected)
        rest = [i for i in ids if i not in self._terminations]
        if rest:
            await self._client(call.scope).autoscaling.set_instance_protection(
                AutoScalingGroupName=name, InstanceIds=rest, ProtectedFromScaleIn=protected
            )
        await self._sync(call.scope)
        if not protected:
            await self._converge(call.scope)
        return query_response(call.action, ET.Element(_tag("SetInstanceProtectionResult")))

    async def _guard_waiting(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        for instance_id in member_list(call.params, "InstanceIds"):
            if instance_id in self._terminations:
                raise _validation(
                    f"The instance {instance_id} is in Terminating:Wait and cannot be "
                    f"used with {call.action}."
                )
        response = await self._forward(request, body)
        if response.status < 400:
            await self._sync(call.scope)
        return response

    async def _delete_group(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        name = _required(call.params, "AutoScalingGroupName")
        force = call.params.get("ForceDelete", "false").lower() == "true"
        groups = await self._groups(call.scope, [name])
        members = [i.instance_id for g in groups for i in g.instances]
        # moto deletes a group that still has instances and, even when forced, leaves
        # its protected ones running; AWS refuses the first and terminates all in the second.
        if members and not force:
            raise AwsError(
                "ResourceInUse",
                "You cannot delete an AutoScalingGroup while there are instances or pending "
                "Spot instance request(s) still in the group.",
            )
        response = await self._forward(request, body)
        if response.status >= 400:
            return response
        for term in [t for t in self._terminations.values() if t.group == name]:
            await self._finish(term)
        running = [i for i in members if i in self._known]
        warm = [i for i, w in self._warm.items() if w.group == name]
        for iid in warm:
            del self._warm[iid]
            self._launches.pop(iid, None)
            self._gone[iid] = "Warmed:Terminated"
            self._emit("terminated", iid, name)
        self._pools.pop((call.scope.region, name), None)
        if running or warm:
            await self._client(call.scope).ec2.terminate_instances(InstanceIds=running + warm)
        await self._sync(call.scope)
        return response

    async def _describe_activities(
        self, call: Call, request: web.Request, body: bytes
    ) -> web.StreamResponse:
        # moto lists none; the layer reports the terminations it runs, newest first.
        name = call.params.get("AutoScalingGroupName")
        ids = set(member_list(call.params, "ActivityIds"))
        limit = _optional_int(call.params, "MaxRecords") or 100
        listed = sorted(
            (
                a
                for a in self._activities.values()
                if (name is None or a.group == name) and (not ids or a.activity_id in ids)
            ),
            key=lambda a: a.start,
            reverse=True,
        )
        return query_response(call.action, activities_result(listed[:limit]))

    async def _replace_unhealthy(self, scope: Scope) -> None:
        """Replace InService instances marked unhealthy, as EC2 Auto Scaling's health checks
        do: scale-in protection does not stop it ("Use instance scale-in protection", EC2
        Auto Scaling User Guide). By default the old one terminates (through the hooks) and
        a replacement launches at once; under a launch-first maintenance policy the
        replacement comes first ("View the reason for health check failures", same guide).
        """
        for view in await self._groups(scope):
            busy = {sp.victim for sp in self._surplus.values() if sp.group == view.name}
            for inst in view.in_service():
                if inst.healthy or inst.instance_id in busy:
                    continue
                log.info("health_check_replacement", instance_id=inst.instance_id, group=view.name)
                if self._launch_first.get((scope, view.name), False):
                    await self._launch_first_for(scope, view, inst.instance_id, "health check")
                    busy.add(inst.instance_id)
                    continue
                hooks = await self._termination_hooks(scope, view.name)
                if hooks:
                    await self._begin_wait(
                        scope,
                        view.name,
                        inst,
                        hooks,
                        decrement=False,
                        cause="an instance was taken out of service in response to an EC2 "
                        "health check indicating it has been terminated or stopped",
                    )
                else:
                    await self._client(scope).autoscaling.terminate_instance_in_auto_scaling_group(
                        InstanceId=inst.instance_id, ShouldDecrementDesiredCapacity=False
                    )
                await self._sync(scope)

    async def _launch_first_for(
        self, scope: Scope, view: _GroupView, victim: str | None, cause: str
    ) -> None:
        """Launch one instance beyond desired now; ``_end_surplus`` scales in later."""
        key = (scope, view.name)
        if key in self._surplus:
            return
        self._surplus[key] = Surplus(scope, view.name, view.desired, victim, cause)
        # moto launches for its own desired capacity; the answers keep showing the real one.
        await self._client(scope).autoscaling.set_desired_capacity(
            AutoScalingGroupName=view.name, DesiredCapacity=view.desired + 1
        )
        log.info("launched_first", group=view.name, victim=victim, cause=cause)
        await self._sync(scope)

    async def _end_surplus(self, surplus: Surplus) -> None:
        """Scale the group back to its desired capacity once the new instance is in service:
        the unhealthy victim whatever its protection, or by the termination policy."""
        scope, name = surplus.scope, surplus.group
        view = await self._group(scope, name)
        if surplus.victim is None:
            await self._resize(scope, view, surplus.desired)
        else:
            victim = next((i for i in view.instances if i.instance_id == surplus.victim), None)
            hooks = await self._termination_hooks(scope, name)
            if victim is not None and victim.instance_id not in self._terminations and hooks:
                await self._begin_wait(scope, name, victim, hooks, decrement=True)
            elif victim is not None and victim.instance_id not in self._terminations:
                await self._client(scope).autoscaling.terminate_instance_in_auto_scaling_group(
                    InstanceId=victim.instance_id, ShouldDecrementDesiredCapacity=True
                )
        # Only now: until moto's desired is back, answers must keep showing the real one.
        self._surplus.pop((scope, name), None)
        await self._sync(scope)

    async def _settle(self, scope: Scope, name: str) -> None:
        """A capacity change by a client ends the group's launch-first surplus first."""
        surplus = self._surplus.get((scope, name))
        if surplus is not None:
            await self._end_surplus(surplus)

    # ---------------------------------------------------------- mechanics

    def _find_action(self, call: Call) -> tuple[Termination | LaunchWait, str]:
        group = _required(call.params, "AutoScalingGroupName")
        hook_name = _required(call.params, "LifecycleHookName")
        token = call.params.get("LifecycleActionToken")
        instance_id = call.params.get("InstanceId")
        now = self._clock()
        waits: list[Termination | LaunchWait] = [
            *self._terminations.values(),
            *self._launches.values(),
        ]
        for term in waits:
            # Before Terminating:Wait (Pending:Wait) there is no lifecycle action yet.
            if term.group != group or not term.waiting(now):
                continue
            for hook in term.hooks:
                # A timed-out action is gone even before the next tick applies its result.
                if hook.hook_name != hook_name or min(hook.deadline, hook.global_deadline) <= now:
                    continue
                if (token and hook.token == token) or (
                    not token and instance_id == term.instance_id
                ):
                    return term, hook_name
        if token:
            raise _validation(f"No active Lifecycle Action found with token {token}")
        raise _validation(f"No active Lifecycle Action found with instance ID {instance_id}")

    async def _resize(self, scope: Scope, group: _GroupView, desired: int) -> None:
        """Set desired capacity: scaling in by the layer's policy and hooks, scaling out
        from the warm pool first, then by cold launches (moto's own)."""
        active = group.active()
        if desired < len(active):
            victims = choose_victims(
                [_candidate(i) for i in active],
                len(active) - desired,
                self._clock(),
                self._rng,
            )
            await self._scale_in(scope, group, victims)
        elif desired > len(active):
            await self._start_from_pool(scope, group, desired - len(active))
        await self._client(scope).autoscaling.set_desired_capacity(
            AutoScalingGroupName=group.name, DesiredCapacity=desired
        )

    async def _scale_in(self, scope: Scope, group: _GroupView, victims: Sequence[str]) -> None:
        """Take ``victims`` out of service; the caller sets the final desired capacity.

        moto's desired capacity is first made equal to its in-service count, then each
        victim leaves with a decrement: moto then has nothing to launch or terminate
        on its own between the steps.
        """
        if not victims:
            return
        autoscaling = self._client(scope).autoscaling
        in_service = len(group.active())
        if group.desired != in_service:
            await autoscaling.set_desired_capacity(
                AutoScalingGroupName=group.name, DesiredCapacity=in_service
            )
        hooks = await self._termination_hooks(scope, group.name)
        by_id = {i.instance_id: i for i in group.instances}
        for instance_id in victims:
            log.info("scale_in_victim", group=group.name, instance_id=instance_id)
            # A launching victim leaves without its launch ever finishing.
            self._launches.pop(instance_id, None)
            if hooks:
                await self._begin_wait(
                    scope,
                    group.name,
                    by_id[instance_id],
                    hooks,
                    decrement=True,
                    cause="an instance was taken out of service in response to a difference "
                    "between desired and actual capacity",
                )
            else:
                await autoscaling.terminate_instance_in_auto_scaling_group(
                    InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
                )

    async def _begin_wait(
        self,
        scope: Scope,
        group: str,
        instance: InstanceInfo,
        hooks: Sequence[HookConfig],
        *,
        decrement: bool,
        cause: str = "an instance was taken out of service in response to a user request",
    ) -> None:
        autoscaling = self._client(scope).autoscaling
        # Protected in moto so that moto's own scale-in arithmetic never removes it.
        await autoscaling.set_instance_protection(
            AutoScalingGroupName=group,
            InstanceIds=[instance.instance_id],
            ProtectedFromScaleIn=True,
        )
        if instance.lifecycle_state != "Standby":
            await autoscaling.enter_standby(
                AutoScalingGroupName=group,
                InstanceIds=[instance.instance_id],
                ShouldDecrementDesiredCapacity=decrement,
            )
        now = self._clock()
        term = start_termination(
            instance.instance_id,
            group,
            scope,
            instance.protected,
            hooks,
            now,
            lambda: str(uuid.uuid4()),
            self.terminating_pause,
        )
        activity = Activity(
            str(uuid.uuid4()),
            group,
            f"Terminating EC2 instance: {instance.instance_id}",
            cause,
            now,
            status="MidLifecycleAction",
        )
        self._activities[activity.activity_id] = activity
        term = dataclasses.replace(term, activity_id=activity.activity_id)
        self._terminations[instance.instance_id] = term
        log.info(
            "terminating_wait",
            instance_id=instance.instance_id,
            group=group,
            hooks=[h.name for h in hooks],
            decrement=decrement,
        )
        self._emit("terminating", instance.instance_id, group)

    async def _finish(self, term: Termination) -> None:
        """Really terminate a waiting instance in moto."""
        self._terminations.pop(term.instance_id, None)
        activity = self._activities.get(term.activity_id)
        if activity is not None:
            self._activities[activity.activity_id] = dataclasses.replace(
                activity, end=self._clock(), status="Successful"
            )
        clients = self._client(term.scope)
        if term.warm:
            # Not a member of the group: only EC2 has it.
            await clients.ec2.terminate_instances(InstanceIds=[term.instance_id])
            self._warm.pop(term.instance_id, None)
            self._gone[term.instance_id] = "Warmed:Terminated"
            log.info("instance_terminated", instance_id=term.instance_id, group=term.group)
            self._emit("terminated", term.instance_id, term.group)
            return
        try:
            await clients.autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=term.instance_id, ShouldDecrementDesiredCapacity=False
            )
        except (ClientError, BotoCoreError, ResponseParserError):
            # The group is gone (moto answers that with a bare 500): the instance still
            # has to stop.
            await clients.ec2.terminate_instances(InstanceIds=[term.instance_id])
        self._known.pop(term.instance_id, None)
        self._gone[term.instance_id] = "Terminated"
        log.info("instance_terminated", instance_id=term.instance_id, group=term.group)
        self._emit("terminated", term.instance_id, term.group)

    async def _converge(self, scope: Scope) -> None:
        """Scale in groups that hold more in-service instances than desired.

        That happens when protected instances blocked a scale-in; AWS finishes it as
        soon as protection is lifted.
        """
        for group in await self._groups(scope):
            in_service = group.in_service()
            if len(in_service) > group.desired and any(not i.protected for i in in_service):
                await self._resize(scope, group, group.desired)
                await self._sync(scope)

    async def _termination_hooks(self, scope: Scope, group: str) -> list[HookConfig]:
        return await self._hooks(scope, group, TERMINATING_TRANSITION)

    async def _hooks(self, scope: Scope, group: str, transition: str) -> list[HookConfig]:
        """The group's lifecycle hooks of one transition (the same hooks hold warm pool
        instances: "The API operations ... are not changed. Only the instance lifecycle is
        changed", "Use lifecycle hooks with a warm pool")."""
        answer = await self._client(scope).autoscaling.describe_lifecycle_hooks(
            AutoScalingGroupName=group
        )
        return [
            HookConfig(
                name=hook["LifecycleHookName"],
                heartbeat_timeout=int(hook.get("HeartbeatTimeout", 3600)),
                default_result=hook.get("DefaultResult", "ABANDON"),
            )
            for hook in answer.get("LifecycleHooks", [])
            if hook.get("LifecycleTransition") == transition
        ]

    async def _groups(self, scope: Scope, names: Sequence[str] = ()) -> list[_GroupView]:
        autoscaling = self._client(scope).autoscaling
        paginator = autoscaling.get_paginator("describe_auto_scaling_groups")
        groups: list[_GroupView] = []
        async for page in paginator.paginate(AutoScalingGroupNames=list(names)):
            for raw in page["AutoScalingGroups"]:
                instances = []
                for inst in raw.get("Instances", []):
                    info = self._known.get(inst["InstanceId"]) or _placeholder(
                        inst["InstanceId"], raw["AutoScalingGroupName"], scope, self._clock()
                    )
                    info = dataclasses.replace(
                        info,
                        availability_zone=inst["AvailabilityZone"],
                        lifecycle_state=inst["LifecycleState"],
                        protected=bool(inst.get("ProtectedFromScaleIn", False)),
                        healthy=str(inst.get("HealthStatus", "Healthy")).lower() == "healthy",
                    )
                    instances.append(self._with_overlay(info))
                template = raw.get("LaunchTemplate") or {}
                groups.append(
                    _GroupView(
                        name=raw["AutoScalingGroupName"],
                        min_size=raw["MinSize"],
                        max_size=raw["MaxSize"],
                        desired=raw["DesiredCapacity"],
                        instances=tuple(instances),
                        template_id=str(template.get("LaunchTemplateId") or ""),
                        template_version=str(template.get("Version") or "$Default"),
                        suspended=frozenset(
                            str(p["ProcessName"]) for p in raw.get("SuspendedProcesses", [])
                        ),
                        subnets=tuple(
                            s for s in str(raw.get("VPCZoneIdentifier") or "").split(",") if s
                        ),
                    )
                )
        return groups

    async def _group(self, scope: Scope, name: str) -> _GroupView:
        groups = await self._groups(scope, [name])
        if not groups:
            raise _validation(
                f"AutoScalingGroup name not found - AutoScalingGroup {name} not found"
            )
        return groups[0]

    async def _group_of(self, scope: Scope, instance_id: str) -> _GroupView:
        for group in await self._groups(scope):
            if any(i.instance_id == instance_id for i in group.instances):
                return group
        raise _validation(
            f"Instance Id not found - No managed instance found for instance ID: {instance_id}"
        )

    async def _sync(self, scope: Scope) -> None:
        """Diff moto's groups against the known instances and emit events."""
        groups = await self._groups(scope)
        current = {i.instance_id: (g.name, i) for g in groups for i in g.instances}
        new_ids = [iid for iid in current if iid not in self._known]
        details = await self._ec2_details(scope, new_ids) if new_ids else {}
        launches = await self._launch_versions(scope, groups, new_ids) if new_ids else {}
        now = self._clock()
        for instance_id, (group, info) in current.items():
            known = self._known.get(instance_id)
            if known is None:
                private_ip, public_ip = details.get(instance_id, ("", None))
                named, number = launches.get(instance_id, ("", ""))
                info = dataclasses.replace(
                    info,
                    private_ip=private_ip,
                    public_ip=public_ip,
                    launched_at=now,
                    launch_named=named,
                    launch_version=number,
                )
                self._known[instance_id] = _strip_overlay(info, self._terminations, self._launches)
                log.info("instance_launched", instance_id=instance_id, group=group)
                hooks = await self._hooks(scope, group, LAUNCHING_TRANSITION)
                if hooks:
                    self._launches[instance_id] = start_launch(
                        instance_id, group, scope, hooks, now, lambda: str(uuid.uuid4()),
                        self.launching_pause,
                    )  # fmt: skip
                self._emit("launched", instance_id, group)
            else:
                self._known[instance_id] = dataclasses.replace(
                    known,
                    group=group,
                    availability_zone=info.availability_zone,
                    lifecycle_state=_strip_overlay(
                        info, self._terminations, self._launches
                    ).lifecycle_state,
                    protected=_strip_overlay(info, self._terminations, self._launches).protected,
                    healthy=info.healthy,
                )
        vanished = [
            iid
            for iid, info in self._known.items()
            if info.region == scope.region and iid not in current
        ]
        if vanished:
            states = await self._ec2_states(scope, vanished)
            for instance_id in vanished:
                info = self._known.pop(instance_id)
                self._terminations.pop(instance_id, None)
                self._launches.pop(instance_id, None)
                if states.get(instance_id, "terminated") in ("terminated", "shutting-down"):
                    self._gone[instance_id] = "Terminated"
                    self._emit("terminated", instance_id, info.group)
                else:
                    self._gone[instance_id] = "Detached"
                    self._emit("detached", instance_id, info.group)

    async def _launch_versions(
        self, scope: Scope, groups: Sequence[_GroupView], instance_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """(version as the group names it, version number) each new instance launched from.

        EC2 tags an instance launched from a template with the version it really used
        (``aws:ec2launchtemplate:version``); moto writes the template's default there
        whatever the group names, so the layer puts the group's own version in.
        """
        ec2 = self._client(scope).ec2
        found: dict[str, tuple[str, str]] = {}
        for group in groups:
            ids = [i.instance_id for i in group.instances if i.instance_id in instance_ids]
            if not ids or not group.template_id:
                continue
            named = group.template_version
            number = named
            if not named.isdigit():
                answer = await ec2.describe_launch_templates(LaunchTemplateIds=[group.template_id])
                template = answer["LaunchTemplates"][0]
                latest = named == "$Latest"
                number = str(
                    template["LatestVersionNumber"] if latest else template["DefaultVersionNumber"]
                )
            await ec2.create_tags(
                Resources=ids,
                Tags=[
                    {"Key": "aws:ec2launchtemplate:id", "Value": group.template_id},
                    {"Key": "aws:ec2launchtemplate:version", "Value": number},
                ],
            )
            found.update((iid, (named, number)) for iid in ids)
        return found

    async def _ec2_details(
        self, scope: Scope, instance_ids: Sequence[str]
    ) -> dict[str, tuple[str, str | None]]:
        answer = await self._client(scope).ec2.describe_instances(InstanceIds=list(instance_ids))
        return {
            inst["InstanceId"]: (inst.get("PrivateIpAddress", ""), inst.get("PublicIpAddress"))
            for reservation in answer.get("Reservations", [])
            for inst in reservation.get("Instances", [])
        }

    async def _ec2_states(self, scope: Scope, instance_ids: Sequence[str]) -> dict[str, str]:
        try:
            answer = await self._client(scope).ec2.describe_instances(
                InstanceIds=list(instance_ids)
            )
        except ClientError:
            return {}
        return {
            inst["InstanceId"]: inst.get("State", {}).get("Name", "terminated")
            for reservation in answer.get("Reservations", [])
            for inst in reservation.get("Instances", [])
        }

    def _client(self, scope: Scope) -> _Clients:
        clients = self._clients.get(scope)
        if clients is None:
            raise RuntimeError(f"no moto clients for {scope}")
        return clients

    async def _ensure_clients(self, scope: Scope) -> None:
        async with self._clients_lock:
            if scope not in self._clients:
                await self._open_clients(scope)

    async def _open_clients(self, scope: Scope) -> None:
        if self._stack is None:
            raise RuntimeError("LifecycleLayer.start() was not called")
        kwargs_config = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"})
        access_key = scope.access_key or "testing"
        autoscaling = await self._stack.enter_async_context(
            self._session.create_client(
                "autoscaling",
                region_name=scope.region,
                endpoint_url=self._moto,
                aws_access_key_id=access_key,
                aws_secret_access_key="layer",  # noqa: S106 - moto does not check signatures
                config=kwargs_config,
            )
        )
        ec2 = await self._stack.enter_async_context(
            self._session.create_client(
                "ec2",
                region_name=scope.region,
                endpoint_url=self._moto,
                aws_access_key_id=access_key,
                aws_secret_access_key="layer",  # noqa: S106 - moto does not check signatures
                config=kwargs_config,
            )
        )
        self._clients[scope] = _Clients(autoscaling=autoscaling, ec2=ec2)

    def _with_overlay(self, info: InstanceInfo) -> InstanceInfo:
        term = self._terminations.get(info.instance_id)
        if term is None:
            wait = self._launches.get(info.instance_id)
            if wait is None:
                return info
            return dataclasses.replace(info, lifecycle_state=wait.state_at(self._clock()))
        return dataclasses.replace(
            info, lifecycle_state=term.state_at(self._clock()), protected=term.protected
        )

    def _emit(self, kind: EventKind, instance_id: str, group: str) -> None:
        event = FleetEvent(kind, instance_id, group, self._clock())
        self._history.append(event)
        for stream in self._streams:
            stream.push(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                # A simulator bug must not break the AWS calls in flight; it is logged loudly.
                log.exception("listener_failed", kind=kind, instance_id=instance_id)

    def _unsubscribe(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    def _clear_state(self) -> None:
        self._terminations.clear()
        self._launches.clear()
        self._pools.clear()
        self._pool_templates.clear()
        self._warm.clear()
        self._failing_starts = 0
        self._activities.clear()
        self._surplus.clear()
        self._launch_first.clear()
        self._known.clear()
        self._gone.clear()
        self._faults.clear()
        self._history.clear()
        self._scopes.clear()
        log.info("layer_reset")


def _launch_order(info: InstanceInfo) -> tuple[float, str]:
    return info.launched_at, info.instance_id


def _candidate(info: InstanceInfo) -> Candidate:
    # The version the layer recorded at the launch: moto itself reports the group's current one.
    version = int(info.launch_version) if info.launch_version.isdigit() else 0
    return Candidate(
        info.instance_id, info.availability_zone, info.protected, info.launched_at, version
    )


def _placeholder(instance_id: str, group: str, scope: Scope, now: float) -> InstanceInfo:
    return InstanceInfo(
        instance_id=instance_id,
        group=group,
        region=scope.region,
        availability_zone="",
        private_ip="",
        public_ip=None,
        lifecycle_state="InService",
        protected=False,
        launched_at=now,
    )


def _rewritten(response: web.Response, rewrite: Callable[[bytes], bytes | None]) -> web.Response:
    """``response`` with its body rewritten (and the checksum dropped), or as it was."""
    if response.status != 200 or not isinstance(response.body, bytes):
        return response
    body = rewrite(response.body)
    if body is None:
        return response
    headers = CIMultiDict(response.headers)
    headers.popall("x-amz-crc32", None)
    return web.Response(status=200, body=body, headers=headers)


def _strip_overlay(
    info: InstanceInfo, terminations: Mapping[str, Termination], launches: Mapping[str, LaunchWait]
) -> InstanceInfo:
    """The instance as moto holds it: a terminating one is Standby and protected there, a
    launching one InService."""
    if info.instance_id in launches:
        return dataclasses.replace(info, lifecycle_state="InService")
    term = terminations.get(info.instance_id)
    if term is None:
        return info
    return dataclasses.replace(info, lifecycle_state="Standby", protected=True)


_DESCRIBE_WITH_INSTANCES = frozenset({"DescribeAutoScalingGroups", "DescribeAutoScalingInstances"})

_Handler = Callable[[LifecycleLayer, Call, web.Request, bytes], Awaitable[web.StreamResponse]]
_OWNED: dict[str, _Handler] = {
    "TerminateInstanceInAutoScalingGroup": LifecycleLayer._terminate_instance,
    "SetDesiredCapacity": LifecycleLayer._set_desired_capacity,
    "CreateAutoScalingGroup": LifecycleLayer._create_group,
    "UpdateAutoScalingGroup": LifecycleLayer._update_group,
    "CompleteLifecycleAction": LifecycleLayer._complete_action,
    "RecordLifecycleActionHeartbeat": LifecycleLayer._heartbeat,
    "SetInstanceProtection": LifecycleLayer._set_protection,
    "EnterStandby": LifecycleLayer._guard_waiting,
    "ExitStandby": LifecycleLayer._guard_waiting,
    "DetachInstances": LifecycleLayer._guard_waiting,
    "DeleteAutoScalingGroup": LifecycleLayer._delete_group,
    "DescribeScalingActivities": LifecycleLayer._describe_activities,
    "PutWarmPool": LifecycleLayer._put_warm_pool,
    "DescribeWarmPool": LifecycleLayer._describe_warm_pool,
    "DeleteWarmPool": LifecycleLayer._delete_warm_pool,
}


async def serve(
    layer: LifecycleLayer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tick_interval: float | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve ``layer`` on ``host:port``; returns the runner (cleanup stops all) and the port.

    With ``tick_interval`` a background task calls :meth:`LifecycleLayer.tick`.
    """
    await layer.start()
    app = layer.app()
    ticker: list[asyncio.Task[None]] = []
    if tick_interval is not None:
        ticker.append(asyncio.create_task(layer.run_ticker(tick_interval)))

    async def _cleanup(_: web.Application) -> None:
        for task in ticker:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await layer.close()

    app.on_cleanup.append(_cleanup)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    log.info("lifecycle_layer_listening", host=host, port=bound, moto=layer.moto_endpoint)
    return runner, int(bound)
