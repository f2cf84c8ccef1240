"""CloudFormation through change sets: pure decisions, and one small async adapter.

Pure: which stack states are final, which events are new, which event is the
failure's cause, how a change set reads, which parameters to send. The adapter
(``Stacks``) only calls the API, with every poll retried on transient errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import yaml
from botocore.exceptions import ClientError

from bbbcore import aws, logs
from bbbctl.progress import Progress

if TYPE_CHECKING:
    from types_aiobotocore_cloudformation.client import CloudFormationClient
    from types_aiobotocore_cloudformation.type_defs import (
        DescribeChangeSetOutputTypeDef,
        ParameterTypeDef,
        ResourceChangeTypeDef,
        StackEventTypeDef,
    )

log = logs.get(__name__)

Operation = Literal["create", "update", "delete"]
CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND")
_SUCCESS: Mapping[str, str] = {
    "create": "CREATE_COMPLETE",
    "update": "UPDATE_COMPLETE",
    "delete": "DELETE_COMPLETE",
}
# Consequences of a cancelled sibling, never the cause.
_CANCELLED = ("Resource creation cancelled", "Resource update cancelled")
GROUP_TYPE = "AWS::AutoScaling::AutoScalingGroup"
STACK_TYPE = "AWS::CloudFormation::Stack"
MAX_NESTING = 3
"""Nested stack levels followed below the root."""
DELETE, SNAPSHOT, UNKNOWN = "Delete", "Snapshot", "unknown"
# Resources whose replacement or removal loses meetings or data, or stops the platform
# (every type the templates keep with Retain or Snapshot is here: tests/test_cfn_stateful.py).
PRECIOUS = {
    GROUP_TYPE: "terminates every BBB host, ending their meetings",
    "AWS::EFS::FileSystem": "loses the recordings on it",
    "AWS::RDS::DBCluster": "loses Scalelite's and Greenlight's database",
    "AWS::SecretsManager::Secret": "changes a secret every host and Scalelite use",
    "AWS::ElastiCache::ReplicationGroup": (
        "empties Scalelite's server list and meeting map: running meetings can no longer "
        "be joined through Scalelite (a final snapshot is kept)"
    ),
    "AWS::S3::Bucket": "leaves the objects in it where nothing reads them (Loki's logs)",
    "AWS::KMS::Key": (
        "changes the key the cluster's Secrets are encrypted with, which EKS cannot change: "
        "the cluster is replaced too"
    ),
    "AWS::EKS::Cluster": (
        "stops Scalelite and bbbscaler until the platform is installed again: no meeting "
        "can be created or joined, and the fleet does not scale"
    ),
}


class ParameterError(ValueError):
    """A parameters file that does not fit the template; the message names the keys."""


@dataclass(frozen=True, slots=True)
class StackEvent:
    """One line of a stack's event history."""

    event_id: str
    timestamp: datetime
    stack_name: str
    logical_id: str
    physical_id: str
    resource_type: str
    status: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StackState:
    """A stack as describe_stacks reports it."""

    stack_id: str
    name: str
    status: str
    reason: str = ""
    outputs: tuple[tuple[str, str, str], ...] = ()
    parameters: frozenset[str] = frozenset()
    parameter_values: tuple[tuple[str, str], ...] = ()
    """(key, value) as CloudFormation reports them (NoEcho values come back masked)."""

    def output(self, key: str) -> str:
        """The output's value, or "" when the stack has no such output."""
        return next((value for k, value, _ in self.outputs if k == key), "")

    def parameter(self, key: str) -> str:
        """The parameter's value, or "" when the stack has no such parameter."""
        return next((value for k, value in self.parameter_values if k == key), "")


@dataclass(frozen=True, slots=True)
class Change:
    """One resource change of a change set."""

    action: str
    logical_id: str
    """Nested stacks' changes carry their path: ``FleetStack/Fleet``."""
    resource_type: str
    replacement: str = ""
    scope: tuple[str, ...] = ()
    physical_id: str = ""
    """The resource's physical id (a group's name), when CloudFormation gives it."""


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """A created change set: its id and changes; empty when there is nothing to do."""

    change_set_id: str
    stack_id: str
    changes: tuple[Change, ...]
    empty: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a stack operation ended: final state (None: gone), success, the cause of a failure."""

    state: StackState | None
    ok: bool
    cause: str = ""
    events: tuple[StackEvent, ...] = field(default=())


def is_terminal(status: str) -> bool:
    """True once CloudFormation will not move the stack further by itself."""
    return not status.endswith("_IN_PROGRESS")


def succeeded(status: str, operation: Operation) -> bool:
    """True when ``status`` is the success of ``operation``."""
    return status == _SUCCESS[operation]


def parse_event(raw: StackEventTypeDef) -> StackEvent:
    """An API event as a StackEvent."""
    return StackEvent(
        event_id=raw["EventId"],
        timestamp=raw["Timestamp"],
        stack_name=raw.get("StackName", ""),
        logical_id=raw.get("LogicalResourceId", ""),
        physical_id=raw.get("PhysicalResourceId", ""),
        resource_type=raw.get("ResourceType", ""),
        status=str(raw.get("ResourceStatus", "")),
        reason=raw.get("ResourceStatusReason", ""),
    )


def unseen(newest_first: Iterable[StackEvent], seen: frozenset[str] | set[str]) -> list[StackEvent]:
    """The events not in ``seen``, up to the first seen one, oldest first."""
    fresh: list[StackEvent] = []
    for event in newest_first:
        if event.event_id in seen:
            break
        fresh.append(event)
    return fresh[::-1]


def root_cause(events: Sequence[StackEvent]) -> StackEvent | None:
    """The first failure among ``events`` (oldest first) that is not a cancelled sibling."""
    for event in events:
        if (
            event.status.endswith("_FAILED")
            and event.reason
            and not event.reason.startswith(_CANCELLED)
        ):
            return event
    for event in events:
        if "ROLLBACK_IN_PROGRESS" in event.status and event.reason:
            return event
    return None


def is_nested_stack(event: StackEvent) -> bool:
    """True when the event is about a nested stack (not the stack's own status line)."""
    return (
        event.resource_type == "AWS::CloudFormation::Stack"
        and event.logical_id != event.stack_name
        and event.physical_id.startswith("arn:")
    )


def describe_failure(event: StackEvent | None, status: str) -> str:
    """One line naming the failing resource and CloudFormation's reason."""
    if event is None:
        return f"stack ended in {status} (no failed resource reported)"
    return f"{event.logical_id} ({event.resource_type}) {event.status}: {event.reason}"


def parse_change(raw: ResourceChangeTypeDef, path: str = "") -> Change:
    """An API resource change as a Change; ``path`` prefixes a nested stack's logical id."""
    return Change(
        action=str(raw.get("Action", "")),
        logical_id=path + raw.get("LogicalResourceId", ""),
        resource_type=raw.get("ResourceType", ""),
        replacement=str(raw.get("Replacement", "")),
        scope=tuple(str(s) for s in raw.get("Scope", [])),
        physical_id=raw.get("PhysicalResourceId", ""),
    )


def render_changes(changes: Sequence[Change]) -> str:
    """A table of the changes, one per line, for a person to read before executing."""
    if not changes:
        return "no changes\n"
    rows = [("ACTION", "RESOURCE", "TYPE", "REPLACE", "SCOPE")]
    rows += [
        (c.action, c.logical_id, c.resource_type, c.replacement or "-", ",".join(c.scope) or "-")
        for c in changes
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )


def destroys(change: Change) -> bool:
    """The change removes the resource, or may replace it (the old one is deleted)."""
    return change.action == "Remove" or change.replacement in ("True", "Conditional")


def warnings(changes: Sequence[Change]) -> list[str]:
    """Plain words for changes that lose meetings or data."""
    out = []
    for change in changes:
        harm = PRECIOUS.get(change.resource_type)
        if harm is None:
            continue
        if destroys(change):
            verb = "removing" if change.action == "Remove" else "replacing"
            out.append(f"{verb} {change.logical_id} {harm}")
    return out


def fleet_changes(changes: Sequence[Change]) -> tuple[list[Change], list[Change]]:
    """(group changes, nested stack changes) that would end the fleet's hosts.

    A removed or replaced Auto Scaling Group terminates its instances; so does a removed
    or replaced nested stack, when the group is inside it.
    """
    groups = [c for c in changes if c.resource_type == GROUP_TYPE and destroys(c)]
    nested = [c for c in changes if c.resource_type == STACK_TYPE and destroys(c)]
    return groups, nested


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (``!Ref``, ``!Sub``, ...), read as opaque."""


def _opaque(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> _Intrinsic:
    return _Intrinsic(suffix)


@dataclass(frozen=True, slots=True)
class _Intrinsic:
    """A short-tag function CloudFormation evaluates; its value is unknown here."""

    tag: str


_TemplateLoader.add_multi_constructor("!", _opaque)


def _snapshot_by_default(resource: dict[Any, Any]) -> bool:
    kind = resource.get("Type")
    if kind == "AWS::RDS::DBCluster":
        return True
    properties = resource.get("Properties")
    in_cluster = isinstance(properties, dict) and "DBClusterIdentifier" in properties
    return kind == "AWS::RDS::DBInstance" and not in_cluster


def template_deletion_policies(body: object) -> dict[str, str]:
    """Logical id -> the DeletionPolicy CloudFormation applies on a stack delete, from a
    GetTemplate body (YAML text, or JSON that botocore already decoded).

    Unset is ``Delete``, except ``Snapshot`` for an RDS cluster and an RDS instance outside
    a cluster (the CloudFormation Template Reference, "DeletionPolicy attribute":
    docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/
    aws-attribute-deletionpolicy.html); a value that is not a plain string (an ``!If``)
    is ``unknown``. A body that cannot be read gives no entry: every resource's policy is
    then unknown to the caller.
    """
    template: object = body
    if isinstance(body, str):
        try:
            template = yaml.load(body, Loader=_TemplateLoader)  # noqa: S506 - safe loader
        except yaml.YAMLError:
            return {}
    resources = template.get("Resources") if isinstance(template, dict) else None
    if not isinstance(resources, dict):
        return {}
    policies: dict[str, str] = {}
    for logical, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        policy = resource.get("DeletionPolicy")
        if policy is None:
            policy = SNAPSHOT if _snapshot_by_default(resource) else DELETE
        policies[str(logical)] = policy if isinstance(policy, str) else UNKNOWN
    return policies


def parse_parameters(text: str, source: str) -> dict[str, str]:
    """Parameters from ``{"Parameters": {...}}`` or the AWS CLI's ``[{"ParameterKey": ...}]``."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{source}: not JSON: {exc}") from None
    if isinstance(data, Mapping) and isinstance(data.get("Parameters"), Mapping):
        items = list(data["Parameters"].items())
    elif isinstance(data, list) and all(
        isinstance(p, Mapping) and "ParameterKey" in p for p in data
    ):
        items = [(p["ParameterKey"], p.get("ParameterValue", "")) for p in data]
    else:
        raise ParameterError(f'{source}: expected {{"Parameters": {{...}}}} or a ParameterKey list')
    out: dict[str, str] = {}
    for key, value in items:
        if isinstance(value, bool):
            out[str(key)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[str(key)] = str(value)
        elif isinstance(value, list):
            out[str(key)] = ",".join(str(v) for v in value)
        else:
            raise ParameterError(
                f"{source}: parameter {key}: value must be a string, number or list"
            )
    return out


def parameter_list(
    declared: Mapping[str, bool], given: Mapping[str, str], previous: frozenset[str] = frozenset()
) -> list[ParameterTypeDef]:
    """What to send: given values, else the previous value on update, else the default.

    ``declared`` maps each template parameter to whether it has a default.
    Raises ParameterError naming unknown keys and required keys without a value.
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ParameterError(f"not parameters of the template: {', '.join(unknown)}")
    missing = sorted(
        k
        for k, has_default in declared.items()
        if not has_default and k not in given and k not in previous
    )
    if missing:
        raise ParameterError(f"no value for required parameters: {', '.join(missing)}")
    out: list[ParameterTypeDef] = []
    for key in sorted(declared):
        if key in given:
            out.append({"ParameterKey": key, "ParameterValue": given[key]})
        elif key in previous:
            out.append({"ParameterKey": key, "UsePreviousValue": True})
    return out


def _not_found(exc: ClientError) -> bool:
    return aws.error_code(exc) == "ValidationError" and "does not exist" in str(exc)


class Stacks:
    """The CloudFormation calls bbbctl makes; waiting shows events on ``progress``."""

    def __init__(
        self,
        cfn: CloudFormationClient,
        progress: Progress,
        poll_interval: float,
        timeout: float,
        sleep: Callable[[float], Awaitable[None]],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfn = cfn
        self._progress = progress
        self._poll = poll_interval
        self._timeout = timeout
        self._sleep = sleep
        self._monotonic = monotonic

    async def describe(self, stack: str) -> StackState | None:
        """The stack by name or id, or None when there is none."""
        try:
            async for attempt in aws.retrying(sleep=self._sleep):
                with attempt:
                    answer = await self._cfn.describe_stacks(StackName=stack)
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise
        stacks = answer.get("Stacks", [])
        if not stacks:
            return None
        raw = stacks[0]
        return StackState(
            stack_id=raw.get("StackId", stack),
            name=raw["StackName"],
            status=str(raw["StackStatus"]),
            reason=raw.get("StackStatusReason", ""),
            outputs=tuple(
                (o.get("OutputKey", ""), o.get("OutputValue", ""), o.get("Description", ""))
                for o in raw.get("Outputs", [])
            ),
            parameters=frozenset(p.get("ParameterKey", "") for p in raw.get("Parameters", [])),
            parameter_values=tuple(
                (p.get("ParameterKey", ""), p.get("ParameterValue", ""))
                for p in raw.get("Parameters", [])
            ),
        )

    async def declared_parameters(self, template_url: str) -> dict[str, bool]:
        """Parameter name -> has a default, as CloudFormation reads the template."""
        summary = await self._cfn.get_template_summary(TemplateURL=template_url)
        return {
            p["ParameterKey"]: "DefaultValue" in p
            for p in summary.get("Parameters", [])
            if "ParameterKey" in p
        }

    async def validate(self, body: str) -> None:
        """CloudFormation's ValidateTemplate; raises ClientError with its reason."""
        await self._cfn.validate_template(TemplateBody=body)

    async def create_change_set(
        self,
        stack: str,
        template_url: str,
        parameters: Sequence[ParameterTypeDef],
        kind: Literal["CREATE", "UPDATE"],
        name: str,
    ) -> ChangeSet:
        """Create a change set and wait until it is ready (or has nothing to change)."""
        created = await self._cfn.create_change_set(
            StackName=stack,
            ChangeSetName=name,
            ChangeSetType=kind,
            TemplateURL=template_url,
            Parameters=list(parameters),
            Capabilities=list(CAPABILITIES),  # type: ignore[arg-type]
            Description="bbbctl",
            # The fleet, the file system and the secrets live in nested stacks: without
            # this the root's change set shows only "Modify FleetStack", never what
            # happens to the group inside it.
            IncludeNestedStacks=True,
        )
        change_set_id, stack_id = created["Id"], created.get("StackId", stack)
        deadline = self._monotonic() + self._timeout
        while True:
            described = await self._describe_change_set(change_set_id)
            status = str(described.get("Status", ""))
            if status == "CREATE_COMPLETE":
                break
            if status == "FAILED":
                reason = described.get("StatusReason", "")
                if "didn't contain changes" in reason or "No updates are to be performed" in reason:
                    await self._cfn.delete_change_set(ChangeSetName=change_set_id)
                    return ChangeSet(change_set_id, stack_id, (), empty=True)
                raise RuntimeError(f"change set failed: {reason}")
            if self._monotonic() > deadline:
                raise TimeoutError(f"change set still {status} after {self._timeout:.0f} s")
            self._progress.status(f"change set {status}")
            await self._sleep(self._poll)
        changes = await self._changes(change_set_id, described)
        self._progress.done()
        return ChangeSet(change_set_id, stack_id, tuple(changes))

    async def _changes(
        self,
        change_set_id: str,
        described: DescribeChangeSetOutputTypeDef | None = None,
        path: str = "",
        depth: int = 0,
    ) -> list[Change]:
        """Every change of the change set, a nested stack's after the nested stack's own
        (each resource change of a nested stack names its nested change set,
        API ResourceChange.ChangeSetId), three levels deep."""
        changes: list[Change] = []
        page = described or await self._describe_change_set(change_set_id)
        while True:
            for item in page.get("Changes", []):
                raw = item.get("ResourceChange")
                if raw is None:
                    continue
                change = parse_change(raw, path)
                changes.append(change)
                nested = raw.get("ChangeSetId")
                if nested and change.resource_type == STACK_TYPE and depth < MAX_NESTING:
                    changes += await self._changes(
                        nested, path=change.logical_id + "/", depth=depth + 1
                    )
            token = page.get("NextToken")
            if not token:
                return changes
            page = await self._describe_change_set(change_set_id, token)

    async def _describe_change_set(
        self, change_set_id: str, token: str | None = None
    ) -> DescribeChangeSetOutputTypeDef:
        async for attempt in aws.retrying(sleep=self._sleep):
            with attempt:
                if token:
                    return await self._cfn.describe_change_set(
                        ChangeSetName=change_set_id, NextToken=token
                    )
                return await self._cfn.describe_change_set(ChangeSetName=change_set_id)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def discard_change_set(self, change_set_id: str) -> None:
        """Delete a change set that will not be executed."""
        await self._cfn.delete_change_set(ChangeSetName=change_set_id)

    async def seen_events(self, stack: str) -> set[str]:
        """Ids of the newest page of events: the history before an operation starts."""
        try:
            page = await self._cfn.describe_stack_events(StackName=stack)
        except ClientError as exc:
            if _not_found(exc):
                return set()
            raise
        return {e["EventId"] for e in page.get("StackEvents", [])}

    async def new_events(self, stack: str, seen: set[str]) -> list[StackEvent]:
        """Events not in ``seen``, oldest first (pages are read until a seen one shows)."""
        newest_first: list[StackEvent] = []
        token: str | None = None
        while True:
            kwargs: dict[str, str] = {"StackName": stack}
            if token:
                kwargs["NextToken"] = token
            async for attempt in aws.retrying(sleep=self._sleep):
                with attempt:
                    page = await self._cfn.describe_stack_events(**kwargs)
            batch = [parse_event(e) for e in page.get("StackEvents", [])]
            newest_first.extend(batch)
            token = page.get("NextToken")
            if not token or any(e.event_id in seen for e in batch):
                break
        return unseen(newest_first, seen)

    async def execute(self, change_set_id: str) -> None:
        """Execute a ready change set."""
        await self._cfn.execute_change_set(ChangeSetName=change_set_id)

    async def delete(self, stack_id: str) -> None:
        """Start deleting a stack."""
        await self._cfn.delete_stack(StackName=stack_id)

    async def wait(self, stack_id: str, operation: Operation, seen: set[str]) -> Outcome:
        """Show events until the stack is final; on failure, find the failing resource's reason."""
        started = self._monotonic()
        shown: list[StackEvent] = []
        while True:
            for event in await self._new_events_or_none(stack_id, seen):
                seen.add(event.event_id)
                shown.append(event)
                self._progress.event(event)
            state = await self.describe(stack_id)
            if state is None or is_terminal(state.status):
                break
            elapsed = self._monotonic() - started
            if elapsed > self._timeout:
                self._progress.done()
                raise TimeoutError(f"{operation} still {state.status} after {self._timeout:.0f} s")
            self._progress.status(f"{state.status}  {elapsed:.0f} s")
            await self._sleep(self._poll)
        self._progress.done()
        if state is None:
            return Outcome(None, operation == "delete", events=tuple(shown))
        if succeeded(state.status, operation):
            return Outcome(state, True, events=tuple(shown))
        cause = await self.cause(shown, state.status)
        return Outcome(state, False, cause, tuple(shown))

    async def _new_events_or_none(self, stack_id: str, seen: set[str]) -> list[StackEvent]:
        try:
            return await self.new_events(stack_id, seen)
        except ClientError as exc:
            if _not_found(exc):
                return []
            raise

    async def cause(self, events: Sequence[StackEvent], status: str, depth: int = 0) -> str:
        """The failing resource and reason, followed into nested stacks (three levels)."""
        event = root_cause(events)
        if event is not None and is_nested_stack(event) and depth < MAX_NESTING:
            since = events[0].timestamp if events else event.timestamp
            nested = [
                e for e in await self.new_events(event.physical_id, set()) if e.timestamp >= since
            ]
            inner = root_cause(nested)
            if inner is not None:
                return await self.cause(nested, status, depth + 1)
        return describe_failure(event, status)

    async def resources(self, stack: str, resource_type: str, depth: int = 0) -> list[str]:
        """Physical ids of the stack's resources of a type, nested stacks included."""
        own, nested = await self._listed(stack, resource_type)
        found = [physical for physical, _ in own]
        if depth < MAX_NESTING:
            for physical, _ in nested:
                found.extend(await self.resources(physical, resource_type, depth + 1))
        return found

    async def deletion_policies(
        self, stack: str, resource_type: str, depth: int = 0
    ) -> list[tuple[str, str]]:
        """(physical id, DeletionPolicy) of the stack's resources of a type, nested stacks
        included, as their templates state it; a resource in a nested stack that is not
        deleted with its parent has that stack's policy (it outlives the delete too)."""
        own, nested = await self._listed(stack, resource_type)
        if depth >= MAX_NESTING:
            nested = []
        if not own and not nested:
            return []
        answer = await self._cfn.get_template(StackName=stack)
        policies = template_deletion_policies(answer.get("TemplateBody"))
        found = [(physical, policies.get(logical, UNKNOWN)) for physical, logical in own]
        for physical, logical in nested:
            inner = await self.deletion_policies(physical, resource_type, depth + 1)
            parent = policies.get(logical, UNKNOWN)
            found.extend(inner if parent == DELETE else [(p, parent) for p, _ in inner])
        return found

    async def _listed(
        self, stack: str, resource_type: str
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(physical, logical) ids of the stack's own resources of a type, and of its nested
        stacks."""
        own: list[tuple[str, str]] = []
        nested: list[tuple[str, str]] = []
        paginator = self._cfn.get_paginator("list_stack_resources")
        async for page in paginator.paginate(StackName=stack):
            for res in page.get("StackResourceSummaries", []):
                physical = res.get("PhysicalResourceId", "")
                if not physical:
                    continue
                entry = (physical, res.get("LogicalResourceId", ""))
                if res.get("ResourceType") == resource_type:
                    own.append(entry)
                elif res.get("ResourceType") == STACK_TYPE:
                    nested.append(entry)
        return own, nested
