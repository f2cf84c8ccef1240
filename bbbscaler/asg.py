"""The Auto Scaling Group and its instances, as bbbscaler reads and changes them.

Reads: DescribeAutoScalingGroups for the one group (sizes, suspended processes,
the launch template or configuration it launches from, members with lifecycle
state, health, scale-in protection and what each was launched from), when the
group has a warm pool DescribeWarmPool (its hosts are not members), then
DescribeInstances for what only EC2 knows (private address, launch time, the
drain tag, the launch template version it really launched from), and, only
when the group names its template by ``$Latest``/``$Default`` or by name,
DescribeLaunchTemplates to turn that into a version number. Changes:
SetDesiredCapacity, TerminateInstanceInAutoScalingGroup with decrement, and the
drain tag.

Every call is retried on transient errors (throttling, 5xx, connection
trouble) with jittered backoff through ``bbbcore.aws.retrying``; a validation
or permission error is raised at once.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from bbbcore import aws, logs
from bbbscaler.model import DRAIN_TAG, Group, Launch, WarmPool

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

log = logs.get(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

WARM_READY = frozenset({"Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"})
"""Warm pool states a scale-out starts from ("Warm pool instance state", EC2 Auto Scaling
User Guide)."""
WARM_LEAVING_PREFIX = "Warmed:Terminat"

EC2_CHUNK = 200
"""Instance ids per DescribeInstances filter (EC2 accepts at most 200 filter values)."""

LAUNCH_TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id"
LAUNCH_TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"
"""EC2 tags every instance launched from a launch template with the template's id and the
version number it was really launched from ("Launch EC2 instances using a launch
template", Amazon EC2 User Guide). The ASG's own per-instance LaunchTemplate may name the
version as the group did, e.g. ``$Latest``, which says nothing about an old instance."""


class GroupNotFound(LookupError):
    """The configured Auto Scaling Group does not exist (wrong name or region)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Auto Scaling Group {name!r} not found")
        self.name = name


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """A launch template or configuration as the ASG names it, versions unresolved."""

    template_id: str = ""
    template_name: str = ""
    version: str = ""
    """A number, ``$Latest``, ``$Default``, or "" (the template's default version)."""
    configuration: str = ""
    """A launch configuration's name (then no template)."""

    @property
    def symbolic(self) -> bool:
        """Naming the version needs the template's numbers (or the id needs its name)."""
        if self.configuration:
            return False
        return not self.template_id or not self.version.isdigit()

    def resolve(self, template: TemplateVersions | None = None) -> Launch | None:
        """The concrete launch, with ``template``'s numbers for ``$Latest``/``$Default``;
        None when it cannot be told."""
        if self.configuration:
            return Launch(f"launch-configuration:{self.configuration}")
        if not self.symbolic:
            return Launch(self.template_id, self.version)
        if template is None or not template.names(self):
            return None
        # No version means the template's default (LaunchTemplateSpecification, API Reference).
        if self.version == "$Latest":
            number = str(template.latest)
        elif self.version in ("", "$Default"):
            number = str(template.default)
        else:
            number = self.version
        return Launch(template.template_id, number)


@dataclass(frozen=True, slots=True)
class TemplateVersions:
    """A launch template's id, name and version numbers (DescribeLaunchTemplates)."""

    template_id: str
    name: str
    latest: int
    default: int

    def names(self, spec: LaunchSpec) -> bool:
        return spec.template_id == self.template_id or (
            not spec.template_id and spec.template_name == self.name
        )


def launch_spec(raw: Mapping[str, Any]) -> LaunchSpec | None:
    """What a DescribeAutoScalingGroups group or instance says it launches from."""
    template = raw.get("LaunchTemplate")
    if template is None:
        mixed = raw.get("MixedInstancesPolicy") or {}
        template = (mixed.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification")
    if template:
        return LaunchSpec(
            template_id=str(template.get("LaunchTemplateId") or ""),
            template_name=str(template.get("LaunchTemplateName") or ""),
            version=str(template.get("Version") or ""),
        )
    configuration = raw.get("LaunchConfigurationName")
    return LaunchSpec(configuration=str(configuration)) if configuration else None


@dataclass(frozen=True, slots=True)
class InstanceFacts:
    """One member of the group: the ASG's view, plus EC2's when it was read."""

    instance_id: str
    lifecycle: str
    """The ASG's LifecycleState, e.g. InService, Pending, Terminating:Wait."""
    healthy: bool = True
    protected: bool = False
    ec2_known: bool = False
    """EC2 described it; False leaves the fields below unknown (None)."""
    private_ip: str | None = None
    launched_at: float | None = None
    draining_since: float | None = None
    """The DRAIN_TAG's time; 0.0 when the tag is there but unreadable."""
    spec: LaunchSpec | None = None
    """What the ASG says it was launched from."""
    launch: Launch | None = None
    """What it was launched from: EC2's launch template tags, else the ASG's ``spec``
    (resolved by ``AsgAdapter.resolve_launches``); None when unknown."""


@dataclass(frozen=True, slots=True)
class Ec2Facts:
    """What only EC2 knows about an instance."""

    private_ip: str | None
    launched_at: float | None
    draining_since: float | None
    launch: Launch | None = None
    """From the launch template tags EC2 put on it; None without them."""


def parse_drain_tag(instance_id: str, value: str | None) -> float | None:
    """The drain tag's epoch seconds; an unreadable value still means draining (since 0)."""
    if value is None:
        return None
    try:
        since = float(value)
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        # Someone wrote the tag by hand: it still marks a drain (never forget one), but
        # from the epoch, so whatever waits on its age has waited long enough.
        log.warning("drain_tag_unreadable", instance_id=instance_id, tag=DRAIN_TAG, value=value)
        return 0.0
    return since


def drain_tag_value(since: float) -> str:
    """The tag's text for a drain that started at ``since`` (whole epoch seconds)."""
    return str(int(since))


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _group(raw: Mapping[str, Any]) -> tuple[Group, LaunchSpec | None, tuple[InstanceFacts, ...]]:
    spec = launch_spec(raw)
    group = Group(
        name=str(raw["AutoScalingGroupName"]),
        desired=int(raw["DesiredCapacity"]),
        min_size=int(raw["MinSize"]),
        max_size=int(raw["MaxSize"]),
        suspended=frozenset(
            str(p["ProcessName"]) for p in raw.get("SuspendedProcesses", []) if "ProcessName" in p
        ),
    )
    members = tuple(
        InstanceFacts(
            instance_id=str(i["InstanceId"]),
            lifecycle=str(i.get("LifecycleState", "")),
            healthy=str(i.get("HealthStatus", "Healthy")).lower() == "healthy",
            protected=bool(i.get("ProtectedFromScaleIn", False)),
            spec=launch_spec(i),
        )
        for i in raw.get("Instances", [])
    )
    # A numbered template or a configuration needs no lookup; $Latest and $Default do.
    group = replace(group, launch=spec.resolve() if spec is not None else None)
    return group, spec, tuple(sorted(members, key=lambda m: m.instance_id))


def warm_pool(raw: Mapping[str, Any]) -> WarmPool:
    """A DescribeWarmPool answer (its pages' instances joined) as the policy sees it."""
    config = raw.get("WarmPoolConfiguration") or {}
    ready: list[str] = []
    warming: list[str] = []
    leaving: list[str] = []
    for instance in raw.get("Instances", []):
        iid, state = str(instance["InstanceId"]), str(instance.get("LifecycleState", ""))
        if state in WARM_READY:
            ready.append(iid)
        elif state.startswith(WARM_LEAVING_PREFIX):
            leaving.append(iid)
        else:
            warming.append(iid)
    prepared = config.get("MaxGroupPreparedCapacity")
    return WarmPool(
        min_size=int(config.get("MinSize") or 0),
        max_prepared=None if prepared is None or int(prepared) < 0 else int(prepared),
        pool_state=str(config.get("PoolState") or "Stopped"),
        ready=tuple(sorted(ready)),
        warming=tuple(sorted(warming)),
        leaving=tuple(sorted(leaving)),
    )


def _ec2(raw: Mapping[str, Any]) -> Ec2Facts:
    instance_id = str(raw["InstanceId"])
    tags = {str(t.get("Key")): str(t.get("Value", "")) for t in raw.get("Tags", [])}
    launch = raw.get("LaunchTime")
    template, version = tags.get(LAUNCH_TEMPLATE_ID_TAG), tags.get(LAUNCH_TEMPLATE_VERSION_TAG)
    return Ec2Facts(
        private_ip=raw.get("PrivateIpAddress") or None,
        launched_at=launch.timestamp() if launch is not None else None,
        draining_since=parse_drain_tag(instance_id, tags.get(DRAIN_TAG)),
        launch=Launch(template, version) if template and version else None,
    )


def merge(
    members: Sequence[InstanceFacts], facts: Mapping[str, Ec2Facts]
) -> tuple[InstanceFacts, ...]:
    """``members`` with ``facts`` filled in where there are some (``ec2_known`` True)."""
    return tuple(
        replace(
            m,
            ec2_known=True,
            private_ip=f.private_ip,
            launched_at=f.launched_at,
            draining_since=f.draining_since,
            launch=f.launch,
        )
        if (f := facts.get(m.instance_id)) is not None
        else m
        for m in members
    )


def member_launch(member: InstanceFacts, template: TemplateVersions | None) -> Launch | None:
    """What ``member`` was launched from: EC2's tags when it has them, else the ASG's spec.

    A spec naming ``$Latest`` or ``$Default`` of the group's template resolves to today's
    number: the best the ASG can tell, and never a reason to replace the instance.
    """
    if member.launch is not None:
        return member.launch
    spec = member.spec
    if spec is None:
        return None
    resolved = spec.resolve(template)
    if resolved is None and spec.template_id:
        # Another template than the group's: drifted whatever its version.
        return Launch(spec.template_id, spec.version)
    return resolved


class AsgAdapter:
    """One Auto Scaling Group through aioboto3 clients the caller opened and closes.

    ``give_up_after`` bounds the retries of one call (seconds); keep it under the
    loop interval so a long AWS outage costs rounds, not a stuck loop.
    """

    def __init__(
        self,
        autoscaling: AutoScalingClient,
        ec2: EC2Client,
        group_name: str,
        *,
        give_up_after: float = 30.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._autoscaling = autoscaling
        self._ec2 = ec2
        self.group_name = group_name
        self._give_up_after = give_up_after
        self._sleep = sleep
        # EC2's facts as last read (or changed by this adapter): a private address and a
        # launch time never change, and the drain tag only through this adapter, so a
        # round whose DescribeInstances fails can still use them.
        self._known: dict[str, Ec2Facts] = {}
        self._spec: LaunchSpec | None = None
        """What the group launches from, as the last DescribeAutoScalingGroups named it."""
        self._has_pool = False
        """The last DescribeAutoScalingGroups showed a WarmPoolConfiguration."""
        self._members: frozenset[str] = frozenset()
        self._pooled: set[str] = set()
        """Instances seen in the warm pool, so a member that came from it is told apart."""

    async def _retry(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        def on_retry(exc: BaseException) -> None:
            log.info(
                "aws_retry", operation=operation, error_code=aws.error_code(exc),
                error=type(exc).__name__,
            )  # fmt: skip

        retrying = aws.retrying(give_up_after=self._give_up_after, on_retry=on_retry)
        # Attempts iterated: aiobotocore methods return coroutines, which tenacity's
        # call form would hand back un-awaited.
        async for attempt in retrying.copy(sleep=self._sleep):
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    # ------------------------------------------------------------------ reads

    async def describe_group(self) -> tuple[Group, tuple[InstanceFacts, ...]]:
        """The group and its members (ASG fields only; ``ec2_known`` False).

        Raises GroupNotFound when the group does not exist.
        """
        answer = await self._retry(
            "DescribeAutoScalingGroups",
            lambda: self._autoscaling.describe_auto_scaling_groups(
                AutoScalingGroupNames=[self.group_name]
            ),
        )
        for raw in answer.get("AutoScalingGroups", []):
            if raw.get("AutoScalingGroupName") == self.group_name:
                group, self._spec, members = _group(raw)
                self._has_pool = bool(raw.get("WarmPoolConfiguration"))
                self._members = frozenset(m.instance_id for m in members)
                return group, members
        raise GroupNotFound(self.group_name)

    async def describe_warm_pool(self) -> WarmPool | None:
        """The group's warm pool, paged through; None when the last describe of the group
        showed none (no call then)."""
        if not self._has_pool:
            return None
        merged: dict[str, Any] = {"Instances": []}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"AutoScalingGroupName": self.group_name, "MaxRecords": 50}
            if token:
                kwargs["NextToken"] = token
            page = await self._retry(
                "DescribeWarmPool",
                functools.partial(self._autoscaling.describe_warm_pool, **kwargs),
            )
            merged.setdefault("WarmPoolConfiguration", page.get("WarmPoolConfiguration"))
            merged["Instances"] += list(page.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                break
        pool = warm_pool(merged)
        seen = {*pool.ready, *pool.warming, *pool.leaving}
        # Forget what is neither in the pool nor a member any more.
        self._pooled = (self._pooled | seen) & (seen | self._members)
        return pool

    def came_from_pool(self, instance_id: str) -> bool:
        """``instance_id`` was in the warm pool when this adapter last looked."""
        return instance_id in self._pooled

    async def resolve_launches(
        self, group: Group, members: Sequence[InstanceFacts]
    ) -> tuple[Group, tuple[InstanceFacts, ...]]:
        """``group`` and ``members`` with what they launch from as concrete versions.

        DescribeLaunchTemplates is asked only when the group names its template by
        ``$Latest``, ``$Default`` or by name, or a member's spec does so without EC2's tags.
        """
        spec = self._spec
        template: TemplateVersions | None = None
        wanted = spec is not None and spec.symbolic
        wanted = wanted or any(
            m.launch is None and m.spec is not None and m.spec.symbolic for m in members
        )
        if wanted and spec is not None and not spec.configuration:
            template = await self.describe_template(spec)
        launch = group.launch
        if launch is None and spec is not None:
            launch = spec.resolve(template)
        return (
            replace(group, launch=launch),
            tuple(replace(m, launch=member_launch(m, template)) for m in members),
        )

    async def describe_template(self, spec: LaunchSpec) -> TemplateVersions | None:
        """The group's launch template's numbers; None when EC2 does not know it."""
        by: dict[str, Any] = (
            {"LaunchTemplateIds": [spec.template_id]}
            if spec.template_id
            else {"LaunchTemplateNames": [spec.template_name]}
        )
        answer = await self._retry(
            "DescribeLaunchTemplates", lambda: self._ec2.describe_launch_templates(**by)
        )
        for raw in answer.get("LaunchTemplates", []):
            return TemplateVersions(
                template_id=str(raw["LaunchTemplateId"]),
                name=str(raw.get("LaunchTemplateName", "")),
                latest=int(raw["LatestVersionNumber"]),
                default=int(raw["DefaultVersionNumber"]),
            )
        return None

    async def describe_instances(self, instance_ids: Iterable[str]) -> dict[str, Ec2Facts]:
        """EC2's facts by instance id; an id EC2 does not list (yet) is left out."""
        ids = sorted(set(instance_ids))
        facts: dict[str, Ec2Facts] = {}
        for chunk in _chunks(ids, EC2_CHUNK):
            # A filter, not InstanceIds: an id EC2 does not know yet (eventual
            # consistency right after a launch) would fail the whole call.
            pages = await self._retry("DescribeInstances", functools.partial(self._pages, chunk))
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        facts[str(raw["InstanceId"])] = _ec2(raw)
        self._known = dict(facts)
        return facts

    def last_known(self, instance_ids: Iterable[str]) -> dict[str, Ec2Facts]:
        """EC2's facts from the last successful read, with this adapter's tag changes since."""
        return {i: f for i in instance_ids if (f := self._known.get(i)) is not None}

    async def _pages(self, chunk: list[str]) -> list[Mapping[str, Any]]:
        paginator = self._ec2.get_paginator("describe_instances")
        pages: list[Mapping[str, Any]] = []
        async for page in paginator.paginate(
            Filters=[{"Name": "instance-id", "Values": chunk}],
            PaginationConfig={"PageSize": 1000},
        ):
            pages.append(page)
        return pages

    async def with_ec2(self, members: Sequence[InstanceFacts]) -> tuple[InstanceFacts, ...]:
        """``members`` with EC2's facts filled in where EC2 lists them."""
        facts = await self.describe_instances(m.instance_id for m in members)
        missing = [m.instance_id for m in members if m.instance_id not in facts]
        if missing:
            log.warning("ec2_instances_missing", count=len(missing), instance_ids=missing[:5])
        return merge(members, facts)

    async def describe(self) -> tuple[Group, tuple[InstanceFacts, ...]]:
        """The group and its members with EC2's facts (both reads; either may raise)."""
        group, members = await self.describe_group()
        return group, await self.with_ec2(members)

    # ------------------------------------------------------------------ changes

    async def set_desired(self, desired: int) -> None:
        """SetDesiredCapacity now (HonorCooldown off: the scaler keeps its own)."""
        await self._retry(
            "SetDesiredCapacity",
            lambda: self._autoscaling.set_desired_capacity(
                AutoScalingGroupName=self.group_name,
                DesiredCapacity=desired,
                HonorCooldown=False,
            ),
        )
        log.info("desired_capacity_set", group=self.group_name, desired=desired)

    async def terminate(self, instance_id: str) -> None:
        """TerminateInstanceInAutoScalingGroup, decrementing desired capacity.

        The ASG's termination hook then lets bbbnode finish its own drain.
        """
        await self._retry(
            "TerminateInstanceInAutoScalingGroup",
            lambda: self._autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
            ),
        )
        log.info("instance_terminate_requested", group=self.group_name, instance_id=instance_id)

    async def mark_draining(self, instance_id: str, since: float) -> None:
        """Tag the instance as drained by the scaler since ``since`` (epoch seconds)."""
        value = drain_tag_value(since)
        await self._retry(
            "CreateTags",
            lambda: self._ec2.create_tags(
                Resources=[instance_id], Tags=[{"Key": DRAIN_TAG, "Value": value}]
            ),
        )
        self._remember_tag(instance_id, float(value))
        log.info("drain_tag_set", instance_id=instance_id, since=value)

    async def unmark_draining(self, instance_id: str) -> None:
        """Remove the drain tag (removing an absent tag is harmless)."""
        await self._retry(
            "DeleteTags",
            lambda: self._ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": DRAIN_TAG}]),
        )
        self._remember_tag(instance_id, None)
        log.info("drain_tag_removed", instance_id=instance_id)

    def _remember_tag(self, instance_id: str, since: float | None) -> None:
        known = self._known.get(instance_id)
        if known is not None:
            self._known[instance_id] = replace(known, draining_since=since)
