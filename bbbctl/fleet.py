"""The fleet a stack runs, read before bbbctl ends it: which hosts carry meetings.

Deleting the stack (or an update that removes or replaces the Auto Scaling
Group) terminates every BBB host and ends every meeting on it. So first bbbctl
reads the groups' instances and, for each, what it can learn of its meetings:

- its bbbnode metrics (``fleet.metrics_url_template``): ``bbb_meetings`` and
  ``bbb_meetings_participants``, trusted while ``bbbnode_snapshot_age_seconds``
  is under ``fleet.stale_after`` (bbbnode omits the meeting gauges when it
  cannot read BBB: unknown, not zero);
- its server's ``load`` in Scalelite (getServers). Scalelite's poller sets it
  to the attendees of its meetings, at least 15 for a young one
  (lib/tasks/poll.rake v1.8.5 lines 60-78), clears it when the server goes
  offline (line 113) or is disabled (app/models/server.rb line 80), and the API
  says ``unavailable`` then (app/controllers/api/servers_controller.rb line
  174). The server API gives no meeting count: a load above 0 is "meetings
  running", an unavailable one is unknown.

A host is busy when either source says so, known when either can say, and
unknown otherwise. An instance still Pending has no bbbnode and no Scalelite
server yet, so no meeting. Reading is I/O (``read``); the judgement is pure
(``host_from``, ``judge``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from bbbcore import aws, logs, node_metrics
from bbbcore.scalelite import (
    RetryPolicy,
    ScaleliteClient,
    ScaleliteError,
    ScaleliteServer,
    normalize_url,
    server_url,
    servers_by_url,
)
from bbbctl.settings import FleetSettings

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

log = logs.get(__name__)

PENDING = frozenset({"Pending", "Pending:Wait", "Pending:Proceed", "Warmed:Pending"})
"""Launching: bbbnode has not registered the host in Scalelite, so it has no meeting."""
EC2_CHUNK = 200
"""Instance ids per DescribeInstances filter (EC2 accepts at most 200 filter values)."""
CONCURRENCY = 50


@dataclass(frozen=True, slots=True)
class Member:
    """One instance of a group, as the ASG and EC2 describe it."""

    instance_id: str
    group: str
    lifecycle: str
    private_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Host:
    """One instance and what is known of its meetings."""

    instance_id: str
    group: str
    lifecycle: str
    meetings: int | None = None
    """bbb_meetings from bbbnode; None when it could not be read."""
    participants: int | None = None
    load: float | None = None
    """Its server's load in Scalelite; None when Scalelite could not say."""
    unknown: str = ""
    """Why nothing is known of its meetings; "" when something is."""

    @property
    def busy(self) -> bool:
        return bool(self.meetings) or bool(self.participants) or bool(self.load)

    def describe(self) -> str:
        """What is known, in words."""
        if self.unknown:
            return f"unknown: {self.unknown}"
        parts = []
        if self.meetings is not None:
            parts.append(f"{self.meetings} meeting(s), {self.participants} participant(s)")
        if self.load is not None and (self.load or not parts):
            parts.append(f"Scalelite load {self.load:g}")
        if self.lifecycle in PENDING and not parts:
            parts.append("launching")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class FleetView:
    """The hosts of the stack's groups; ``problems`` are what could not be read at all."""

    groups: tuple[str, ...]
    hosts: tuple[Host, ...]
    problems: tuple[str, ...] = ()

    @property
    def busy(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.busy)

    @property
    def unknown(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.unknown and not h.busy)


# ------------------------------------------------------------------ pure judgement


def _from_metrics(values: Mapping[str, float] | str, stale_after: float) -> tuple[int, int] | str:
    """(meetings, participants) from a node's four series, or why they say nothing."""
    if isinstance(values, str):
        return values
    age = values.get(node_metrics.SNAPSHOT_AGE)
    meetings = values.get(node_metrics.MEETINGS)
    participants = values.get(node_metrics.PARTICIPANTS)
    if meetings is None or participants is None:
        return "no meeting gauges (bbbnode cannot read BBB)"
    if age is None or not age <= stale_after:
        return f"meeting data {age:.0f} s old" if age is not None else "no snapshot age"
    if not (math.isfinite(meetings) and math.isfinite(participants)):
        return "meeting gauges are not numbers"
    return max(0, round(meetings)), max(0, round(participants))


def _from_scalelite(server: ScaleliteServer | str | None, url: str | None) -> float | str:
    """Its server's load, or why Scalelite says nothing."""
    if isinstance(server, str):
        return server
    if server is None:
        return "no server registered" + (f" as {url}" if url else "")
    if server.load is None:
        online = "online" if server.online else "offline"
        return f"no load for its server ({server.state}, {online})"
    return server.load


def host_from(
    member: Member,
    metrics: Mapping[str, float] | str,
    server: ScaleliteServer | str | None,
    stale_after: float,
    url: str | None = None,
) -> Host:
    """One host from its metrics (or why they failed) and its Scalelite server (None: not
    registered; a string: why Scalelite could not be read)."""
    counts = _from_metrics(metrics, stale_after)
    load = _from_scalelite(server, url)
    meetings, participants = counts if isinstance(counts, tuple) else (None, None)
    known_load = load if isinstance(load, float) else None
    unknown = ""
    if meetings is None and known_load is None and member.lifecycle not in PENDING:
        unknown = f"bbbnode: {counts}; Scalelite: {load}"
    return Host(
        member.instance_id,
        member.group,
        member.lifecycle,
        meetings,
        participants,
        known_load,
        unknown,
    )


def judge(view: FleetView, action: str, force: bool) -> tuple[bool, list[str]]:
    """(may ``action`` go ahead, the lines to show the operator)."""
    busy, unknown = view.busy, view.unknown
    if not view.groups and not view.problems:
        return True, []
    hosts = len(view.hosts)
    where = ", ".join(view.groups) or "the stack's groups"
    lines = [f"fleet: {hosts} host(s) in {where}"]
    for host in (*busy, *unknown):
        lines.append(f"  {host.instance_id}  {host.lifecycle}  {host.describe()}")
    lines += [f"  cannot read: {problem}" for problem in view.problems]
    if not busy and not unknown and not view.problems:
        lines.append("  no meeting running")
        return True, lines
    meetings = sum(h.meetings or 0 for h in busy)
    participants = sum(h.participants or 0 for h in busy)
    said = []
    if busy:
        said.append(
            f"{len(busy)} host(s) run meetings ({meetings} meeting(s), {participants} "
            "participant(s) counted by bbbnode; Scalelite's load counts the rest)"
        )
    if unknown or view.problems:
        said.append(f"the fleet could not be read ({len(unknown)} host(s) unknown)")
    if force:
        lines.append(
            f"WARNING: --force: {action} terminates every host and ENDS THEIR MEETINGS: "
            + "; ".join(said)
        )
        return True, lines
    lines.append(
        f"refusing to {action}: " + "; ".join(said) + ". It would terminate every host and "
        "end every meeting on it. Wait until the meetings end (or drain the hosts), or pass "
        "--force to end them."
    )
    return False, lines


# ------------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True)
class ScaleliteAccess:
    """How to reach the stack's Scalelite, or why it cannot be (``client`` None)."""

    client: ScaleliteClient | None
    url_template: str
    domain: str
    why_not: str = ""


async def _retry(what: str, call: Any) -> Any:
    async for attempt in aws.retrying(give_up_after=30.0, max_wait=5.0):
        with attempt:
            return await call()
    raise AssertionError(f"unreachable: {what}: tenacity re-raises the last error")


async def members(
    autoscaling: AutoScalingClient, ec2: EC2Client, groups: Sequence[str]
) -> tuple[list[Member], list[str]]:
    """The groups' instances with their private addresses; and the groups not found."""
    found: list[Member] = []
    missing: list[str] = []
    for name in groups:
        answer = await _retry(
            "DescribeAutoScalingGroups",
            lambda name=name: autoscaling.describe_auto_scaling_groups(
                AutoScalingGroupNames=[name]
            ),
        )
        raw = [g for g in answer.get("AutoScalingGroups", []) if g["AutoScalingGroupName"] == name]
        if not raw:
            missing.append(name)
            continue
        found += [
            Member(str(i["InstanceId"]), name, str(i.get("LifecycleState", "")))
            for i in raw[0].get("Instances", [])
        ]
    ids = sorted({m.instance_id for m in found})
    addresses: dict[str, str | None] = {}
    for start in range(0, len(ids), EC2_CHUNK):
        chunk = ids[start : start + EC2_CHUNK]
        answer = await _retry(
            "DescribeInstances",
            lambda chunk=chunk: ec2.describe_instances(
                Filters=[{"Name": "instance-id", "Values": chunk}]
            ),
        )
        for reservation in answer.get("Reservations", []):
            for raw_instance in reservation.get("Instances", []):
                addresses[raw_instance["InstanceId"]] = raw_instance.get("PrivateIpAddress")
    return [
        Member(m.instance_id, m.group, m.lifecycle, addresses.get(m.instance_id))
        for m in sorted(found, key=lambda m: m.instance_id)
    ], missing


async def _metrics_of(
    http: aiohttp.ClientSession, settings: FleetSettings, member: Member, gate: asyncio.Semaphore
) -> Mapping[str, float] | str:
    url = node_metrics.metrics_url(
        settings.metrics_url_template, member.instance_id, member.private_ip
    )
    if url is None:
        return "no private address"
    async with gate:
        try:
            return await node_metrics.fetch_values(http, url, request_timeout=settings.timeout)
        except node_metrics.Unreadable as exc:
            return str(exc)


async def _servers(access: ScaleliteAccess) -> dict[str, ScaleliteServer] | str:
    if access.client is None:
        return access.why_not
    try:
        return servers_by_url(await access.client.get_servers())
    except ScaleliteError as exc:
        return f"getServers failed: {exc}"


async def read(
    autoscaling: AutoScalingClient,
    ec2: EC2Client,
    http: aiohttp.ClientSession,
    groups: Sequence[str],
    settings: FleetSettings,
    scalelite: ScaleliteAccess,
) -> FleetView:
    """The hosts of ``groups`` and their meetings; never raises for what it cannot read
    (that is in the view: hosts unknown, or ``problems``)."""
    problems: list[str] = []
    try:
        listed, missing = await members(autoscaling, ec2, groups)
    except (ClientError, BotoCoreError, TimeoutError) as exc:
        return FleetView(tuple(groups), (), (f"the groups' instances: {exc}",))
    problems += [f"group {name} not found" for name in missing]
    gate = asyncio.Semaphore(CONCURRENCY)
    readings, servers = await asyncio.gather(
        asyncio.gather(*(_metrics_of(http, settings, m, gate) for m in listed)),
        _servers(scalelite),
    )
    hosts = []
    for member, metrics in zip(listed, readings, strict=True):
        url = server_url(
            scalelite.url_template, member.instance_id, scalelite.domain, member.private_ip
        )
        server: ScaleliteServer | str | None
        if isinstance(servers, str):
            server = servers
        elif url is None:
            server = "no private address for the server URL"
        else:
            server = servers.get(normalize_url(url))
        hosts.append(host_from(member, metrics, server, settings.stale_after, url))
    view = FleetView(tuple(groups), tuple(hosts), tuple(problems))
    log.info(
        "fleet_read",
        groups=list(groups),
        hosts=len(hosts),
        busy=len(view.busy),
        unknown=len(view.unknown),
    )
    return view


def scalelite_client(
    http: aiohttp.ClientSession, url: str, secret: str, settings: FleetSettings
) -> ScaleliteClient:
    """A Scalelite client for one look: short timeout, two attempts."""
    return ScaleliteClient(
        http,
        url,
        secret,
        algorithm=settings.scalelite_checksum,
        timeout=settings.timeout,
        retry=RetryPolicy(attempts=2, initial_s=0.2, max_s=1.0),
    )
