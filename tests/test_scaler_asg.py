"""bbbscaler's ASG/EC2 adapter against moto_server, directly and through the lifecycle layer."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from botocore.exceptions import ClientError

from bbbcore import aws
from bbbscaler import asg as asg_module
from bbbscaler.asg import (
    AsgAdapter,
    GroupNotFound,
    InstanceFacts,
    LaunchSpec,
    TemplateVersions,
    drain_tag_value,
    launch_spec,
    member_launch,
    parse_drain_tag,
)
from bbbscaler.model import DRAIN_TAG, Launch
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import FleetIds, FleetSpec
from tests.scaler_nodes import asg_clients
from tests.test_scalelite_client import Sleeps

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

pytestmark = pytest.mark.integration

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]


@pytest_asyncio.fixture
async def clients(aws_endpoint: str) -> AsyncIterator[tuple[AutoScalingClient, EC2Client]]:
    async with asg_clients() as pair:
        yield pair


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def adapter(clients: tuple[AutoScalingClient, EC2Client], sleeps: Sleeps) -> AsgAdapter:
    autoscaling, ec2 = clients
    return AsgAdapter(autoscaling, ec2, "bbb-fleet", sleep=sleeps)


def test_drain_tag_values() -> None:
    assert parse_drain_tag("i-1", None) is None
    assert parse_drain_tag("i-1", "1767225600") == 1_767_225_600.0
    assert parse_drain_tag("i-1", "1767225600.5") == 1_767_225_600.5
    for bad in ("yesterday", "", "nan", "inf"):
        assert parse_drain_tag("i-1", bad) == 0.0
    assert drain_tag_value(1_767_225_600.9) == "1767225600"


async def test_describe_group_and_instances(
    make_fleet: MakeFleet,
    adapter: AsgAdapter,
    clients: tuple[AutoScalingClient, EC2Client],
    lifecycle_layer: LifecycleLayer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_fleet(FleetSpec(min_size=1, max_size=5, desired=3))
    autoscaling, _ = clients
    await autoscaling.suspend_processes(
        AutoScalingGroupName="bbb-fleet", ScalingProcesses=["AZRebalance"]
    )
    await autoscaling.set_instance_protection(
        AutoScalingGroupName="bbb-fleet",
        InstanceIds=[lifecycle_layer.instances()[0].instance_id],
        ProtectedFromScaleIn=True,
    )
    # Several DescribeInstances chunks for three instances.
    monkeypatch.setattr(asg_module, "EC2_CHUNK", 2)
    group, members = await adapter.describe()
    assert (group.name, group.desired, group.min_size, group.max_size) == ("bbb-fleet", 3, 1, 5)
    assert group.suspended == frozenset({"AZRebalance"})
    layer_view = {i.instance_id: i for i in lifecycle_layer.instances()}
    assert [m.instance_id for m in members] == sorted(layer_view)
    for m in members:
        assert m.lifecycle == "InService"
        assert m.healthy
        assert m.ec2_known
        assert m.private_ip == layer_view[m.instance_id].private_ip
        assert m.launched_at is not None
        assert math.isfinite(m.launched_at)
        assert m.draining_since is None
    assert sum(m.protected for m in members) == 1

    # An instance EC2 does not list (yet) stays unknown rather than failing the read.
    ghost = asg_module.InstanceFacts("i-0000000000000dead", "Pending")
    merged = await adapter.with_ec2((*members, ghost))
    assert all(m.ec2_known for m in merged[:-1])
    assert merged[-1] == ghost


async def test_drain_tag_round_trip(
    make_fleet: MakeFleet, adapter: AsgAdapter, clients: tuple[AutoScalingClient, EC2Client]
) -> None:
    await make_fleet(FleetSpec(desired=2))
    _, members = await adapter.describe()
    first, second = (m.instance_id for m in members)
    await adapter.mark_draining(first, 1_767_225_600.25)
    _, ec2 = clients
    # An operator's hand-written value still counts as a drain (since the epoch).
    await ec2.create_tags(Resources=[second], Tags=[{"Key": DRAIN_TAG, "Value": "soon"}])
    _, members = await adapter.describe()
    assert {m.instance_id: m.draining_since for m in members} == {
        first: 1_767_225_600.0,
        second: 0.0,
    }
    # What a round whose DescribeInstances fails falls back on.
    assert adapter.last_known([first, "i-unknown"]).keys() == {first}
    assert adapter.last_known([first])[first].draining_since == 1_767_225_600.0
    await adapter.unmark_draining(first)
    assert adapter.last_known([first])[first].draining_since is None
    await adapter.unmark_draining(first)  # already gone: harmless
    _, members = await adapter.describe()
    assert {m.instance_id: m.draining_since for m in members} == {first: None, second: 0.0}


async def test_set_desired_and_terminate_through_the_layer(
    make_fleet: MakeFleet, adapter: AsgAdapter, lifecycle_layer: LifecycleLayer
) -> None:
    await make_fleet(FleetSpec(min_size=1, max_size=4, desired=2))
    await adapter.set_desired(3)
    group, members = await adapter.describe()
    assert group.desired == 3
    assert len(members) == 3
    victim = members[0].instance_id
    await adapter.terminate(victim)
    group, members = await adapter.describe()
    # The fleet's termination hook holds it in Terminating:Wait for bbbnode's drain.
    assert group.desired == 2
    assert {m.instance_id: m.lifecycle for m in members}[victim] == "Terminating:Wait"
    assert sum(m.lifecycle == "InService" for m in members) == 2


async def test_missing_group(aws_endpoint: str, adapter: AsgAdapter) -> None:
    with pytest.raises(GroupNotFound, match="bbb-fleet"):
        await adapter.describe_group()


async def test_only_transient_errors_are_retried(
    make_fleet: MakeFleet, adapter: AsgAdapter, lifecycle_layer: LifecycleLayer, sleeps: Sleeps
) -> None:
    await make_fleet(FleetSpec(desired=1))
    lifecycle_layer.inject_fault("throttling", "DescribeAutoScalingGroups", count=2)
    lifecycle_layer.inject_fault("http503", "DescribeInstances", count=1)
    lifecycle_layer.inject_fault("http500", "CreateTags", count=1)
    group, members = await adapter.describe()
    assert group.desired == 1
    assert members[0].ec2_known
    await adapter.mark_draining(members[0].instance_id, 1.0)
    assert len(sleeps.calls) == 4

    # A refused request is raised at once: retrying cannot help it.
    with pytest.raises(ClientError) as raised:
        await adapter.set_desired(5)
    assert aws.error_code(raised.value) == "ValidationError"
    assert len(sleeps.calls) == 4


async def test_directly_against_moto(
    make_fleet: MakeFleet, moto_endpoint: str, aws_session: Any, sleeps: Sleeps
) -> None:
    await make_fleet(FleetSpec(min_size=0, max_size=3, desired=2))
    async with (
        aws_session.client("autoscaling", endpoint_url=moto_endpoint) as autoscaling,
        aws_session.client("ec2", endpoint_url=moto_endpoint) as ec2,
    ):
        adapter = AsgAdapter(autoscaling, ec2, "bbb-fleet", sleep=sleeps)
        group, members = await adapter.describe()
        assert group.desired == 2
        assert all(m.private_ip for m in members)
        await adapter.mark_draining(members[0].instance_id, 42.0)
        await adapter.set_desired(3)
        await adapter.terminate(members[1].instance_id)
        group, members = await adapter.describe()
        assert group.desired == 2
        assert {m.draining_since for m in members} >= {42.0}


# --- what each member was launched from (rollouts) ---------------------------------------


def test_launch_specs_and_their_versions() -> None:
    lt = {"LaunchTemplateId": "lt-0a", "LaunchTemplateName": "bbb", "Version": "$Latest"}
    assert launch_spec({"LaunchTemplate": lt}) == LaunchSpec("lt-0a", "bbb", "$Latest")
    mixed = {"MixedInstancesPolicy": {"LaunchTemplate": {"LaunchTemplateSpecification": lt}}}
    assert launch_spec(mixed) == LaunchSpec("lt-0a", "bbb", "$Latest")
    assert launch_spec({"LaunchConfigurationName": "old"}) == LaunchSpec(configuration="old")
    assert launch_spec({}) is None
    numbers = TemplateVersions("lt-0a", "bbb", latest=4, default=2)
    # $Latest and $Default need the template's numbers; no version is the default.
    assert LaunchSpec("lt-0a", "bbb", "$Latest").resolve() is None
    assert LaunchSpec("lt-0a", "bbb", "$Latest").resolve(numbers) == Launch("lt-0a", "4")
    assert LaunchSpec("lt-0a", "bbb", "$Default").resolve(numbers) == Launch("lt-0a", "2")
    assert LaunchSpec("lt-0a", "bbb", "").resolve(numbers) == Launch("lt-0a", "2")
    assert LaunchSpec("", "bbb", "3").resolve(numbers) == Launch("lt-0a", "3")
    assert LaunchSpec("lt-0a", "bbb", "3").resolve() == Launch("lt-0a", "3")
    assert LaunchSpec("lt-0b", "", "$Latest").resolve(numbers) is None
    assert LaunchSpec(configuration="old").resolve() == Launch("launch-configuration:old")
    # A member: EC2's tag first; the ASG's own spec only without it.
    tagged = InstanceFacts("i-1", "InService", spec=LaunchSpec("lt-0a", "", "$Latest"))
    tagged = dataclasses.replace(tagged, launch=Launch("lt-0a", "3"))
    assert member_launch(tagged, numbers) == Launch("lt-0a", "3")
    untagged = InstanceFacts("i-2", "InService", spec=LaunchSpec("lt-0a", "", "$Latest"))
    assert member_launch(untagged, numbers) == Launch("lt-0a", "4")
    other = InstanceFacts("i-3", "InService", spec=LaunchSpec("lt-0b", "", "$Latest"))
    assert member_launch(other, numbers) == Launch("lt-0b", "$Latest")
    assert member_launch(InstanceFacts("i-4", "InService"), numbers) is None


async def test_members_launched_from_an_older_version_are_told_apart(
    make_fleet: MakeFleet,
    adapter: AsgAdapter,
    clients: tuple[AutoScalingClient, EC2Client],
    lifecycle_layer: LifecycleLayer,
) -> None:
    fleet = await make_fleet(FleetSpec(min_size=1, max_size=4, desired=1))
    autoscaling, ec2 = clients
    await ec2.create_launch_template_version(
        LaunchTemplateId=fleet.launch_template_id,
        SourceVersion="1",
        LaunchTemplateData={"ImageId": "ami-0bbb0000000000002"},
    )
    await adapter.set_desired(2)
    group, members = await adapter.describe_group()
    # The group names $Latest: not a number yet.
    assert group.launch is None
    group, members = await adapter.resolve_launches(group, await adapter.with_ec2(members))
    current = Launch(fleet.launch_template_id, "2")
    assert group.launch == current
    launches = sorted(str(m.launch) for m in members)
    assert launches == [f"{fleet.launch_template_id}:1", f"{fleet.launch_template_id}:2"]
    # A group that names its version by number needs no lookup.
    await autoscaling.update_auto_scaling_group(
        AutoScalingGroupName=fleet.asg_name,
        LaunchTemplate={"LaunchTemplateId": fleet.launch_template_id, "Version": "2"},
    )
    lifecycle_layer.inject_fault("http500", "DescribeLaunchTemplates", count=None)
    group, members = await adapter.describe_group()
    assert group.launch == current
    group, _ = await adapter.resolve_launches(group, await adapter.with_ec2(members))
    assert group.launch == current
