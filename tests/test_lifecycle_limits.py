"""AWS's lifecycle limits and its own replacements, as the lifecycle layer shows them.

Each case is one an emulator kinder than AWS would hide: the hook's global timeout, the
``Terminating`` moment before ``Terminating:Wait``, a describe that answers empty, a
replacement AWS starts by itself, and launch template versions per instance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from bbbsim.lifecycle_layer import LifecycleLayer, global_timeout
from bbbsim.moto_server import FleetIds, FleetSpec, HookSpec
from tests.aws_fixtures import FakeClock

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]
HOOK = "bbbnode-drain"

pytestmark = pytest.mark.integration


async def group(asg: AutoScalingClient, name: str) -> dict[str, Any]:
    answer = await asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return dict(answer["AutoScalingGroups"][0])


async def members(asg: AutoScalingClient, name: str) -> dict[str, dict[str, Any]]:
    return {i["InstanceId"]: dict(i) for i in (await group(asg, name))["Instances"]}


async def heartbeat(asg: AutoScalingClient, name: str, instance_id: str) -> None:
    await asg.record_lifecycle_action_heartbeat(
        AutoScalingGroupName=name, LifecycleHookName=HOOK, InstanceId=instance_id
    )


def test_the_global_timeout_is_the_lesser_of_100_heartbeats_and_48_hours() -> None:
    assert global_timeout(30) == 3000
    assert global_timeout(1727) == 172_700
    assert global_timeout(1728) == 172_800
    assert global_timeout(7200) == 172_800


async def test_heartbeats_do_not_outlast_the_global_timeout(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2, termination_hook=HookSpec(heartbeat_timeout=30)))
    hooks = await asg.describe_lifecycle_hooks(AutoScalingGroupName=fleet.asg_name)
    # moto says 48 h for every hook; AWS says 100 x 30 s.
    assert hooks["LifecycleHooks"][0]["GlobalTimeout"] == 3000
    victim = sorted(await members(asg, fleet.asg_name))[0]
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    # A heartbeat every 25 s keeps the 30 s timeout from ever passing, up to 3000 s.
    for beat in range(119):
        fake_clock.advance(25)
        await heartbeat(asg, fleet.asg_name, victim)
        if beat % 20 == 0:
            await lifecycle_layer.tick()
    assert (await members(asg, fleet.asg_name))[victim]["LifecycleState"] == "Terminating:Wait"
    fake_clock.advance(25)  # 3000 s after the wait began: DefaultResult, heartbeats or not
    with pytest.raises(ClientError):
        await heartbeat(asg, fleet.asg_name, victim)
    await lifecycle_layer.tick()
    assert victim not in await members(asg, fleet.asg_name)
    (activity,) = (await asg.describe_scaling_activities(AutoScalingGroupName=fleet.asg_name))[
        "Activities"
    ]
    assert activity["Description"] == f"Terminating EC2 instance: {victim}"
    assert activity["StatusCode"] == "Successful"


async def test_terminating_comes_before_terminating_wait(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    lifecycle_layer.terminating_pause = 20.0
    victim = sorted(await members(asg, fleet.asg_name))[0]
    started = fake_clock()
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    # IMDS already says where it is headed; the ASG has no lifecycle action yet.
    assert lifecycle_layer.target_lifecycle_state(victim) == "Terminated"
    answer = await asg.describe_auto_scaling_instances(InstanceIds=[victim])
    assert answer["AutoScalingInstances"][0]["LifecycleState"] == "Terminating"
    with pytest.raises(ClientError, match="No active Lifecycle Action"):
        await heartbeat(asg, fleet.asg_name, victim)
    activities = await asg.describe_scaling_activities(AutoScalingGroupName=fleet.asg_name)
    (activity,) = activities["Activities"]
    assert activity["StatusCode"] == "MidLifecycleAction"
    assert activity["StartTime"].timestamp() == pytest.approx(started)
    fake_clock.advance(20)
    answer = await asg.describe_auto_scaling_instances(InstanceIds=[victim])
    assert answer["AutoScalingInstances"][0]["LifecycleState"] == "Terminating:Wait"
    await heartbeat(asg, fleet.asg_name, victim)
    # The hook's timeouts count from the wait, not from the termination.
    (action,) = lifecycle_layer.lifecycle_actions()
    assert action.deadline == fake_clock() + 300


async def test_a_describe_may_answer_empty(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    fleet = await make_fleet(FleetSpec(desired=1))
    (instance,) = await members(asg, fleet.asg_name)
    lifecycle_layer.inject_fault("empty", "DescribeAutoScalingInstances")
    answer = await asg.describe_auto_scaling_instances(InstanceIds=[instance])
    assert answer["AutoScalingInstances"] == []
    answer = await asg.describe_auto_scaling_instances(InstanceIds=[instance])
    assert [i["InstanceId"] for i in answer["AutoScalingInstances"]] == [instance]


async def test_terminate_in_group_ignores_scale_in_protection(
    make_fleet: MakeFleet, asg: AutoScalingClient
) -> None:
    # "Instance scale-in protection does not protect Auto Scaling instances from ... the
    # TerminateInstanceInAutoScalingGroup action" (Use instance scale-in protection, EC2
    # Auto Scaling User Guide): the scaler's re-check, not protection, keeps meetings safe.
    fleet = await make_fleet(FleetSpec(desired=2, new_instances_protected=True))
    victim = sorted(await members(asg, fleet.asg_name))[0]
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    waiting = (await members(asg, fleet.asg_name))[victim]
    assert (waiting["LifecycleState"], waiting["ProtectedFromScaleIn"]) == (
        "Terminating:Wait",
        True,
    )


@pytest.mark.parametrize("launch_first", [False, True])
async def test_a_failed_health_check_is_replaced_by_aws(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    lifecycle_layer: LifecycleLayer,
    launch_first: bool,
) -> None:
    fleet = await make_fleet(
        FleetSpec(desired=2, new_instances_protected=True, launch_first=launch_first)
    )
    sick, other = sorted(await members(asg, fleet.asg_name))
    await asg.set_instance_health(InstanceId=sick, HealthStatus="Unhealthy")
    await lifecycle_layer.tick()
    now = await members(asg, fleet.asg_name)
    assert (await group(asg, fleet.asg_name))["DesiredCapacity"] == 2
    (new,) = set(now) - {sick, other}
    if launch_first:
        # The replacement first: one member more than desired, the sick one still in service.
        assert now[sick]["LifecycleState"] == "InService"
        assert now[sick]["HealthStatus"] == "Unhealthy"
        await lifecycle_layer.tick()
        now = await members(asg, fleet.asg_name)
        assert (await group(asg, fleet.asg_name))["DesiredCapacity"] == 2
    # Protected or not, it goes through the termination hook (where bbbnode drains).
    assert now[sick]["LifecycleState"] == "Terminating:Wait"
    assert now[new]["LifecycleState"] == "InService"
    assert lifecycle_layer.target_lifecycle_state(sick) == "Terminated"


async def test_az_rebalancing_launches_first_unless_suspended(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    assert not await lifecycle_layer.rebalance(fleet.asg_name)
    assert len(await members(asg, fleet.asg_name)) == 2
    await asg.resume_processes(
        AutoScalingGroupName=fleet.asg_name, ScalingProcesses=["AZRebalance"]
    )
    before = await members(asg, fleet.asg_name)
    await asg.set_instance_protection(
        AutoScalingGroupName=fleet.asg_name, InstanceIds=list(before), ProtectedFromScaleIn=True
    )
    assert await lifecycle_layer.rebalance(fleet.asg_name)
    now = await members(asg, fleet.asg_name)
    assert len(now) == 3
    assert (await group(asg, fleet.asg_name))["DesiredCapacity"] == 2
    await lifecycle_layer.tick()
    # The old ones are protected: the termination policy takes the unprotected new one.
    now = await members(asg, fleet.asg_name)
    (new,) = set(now) - set(before)
    assert now[new]["LifecycleState"] == "Terminating:Wait"
    assert all(now[i]["LifecycleState"] == "InService" for i in before)


async def test_each_instance_keeps_the_launch_template_version_it_launched_from(
    make_fleet: MakeFleet, asg: AutoScalingClient, ec2: EC2Client
) -> None:
    fleet = await make_fleet(FleetSpec(desired=1))
    (first,) = await members(asg, fleet.asg_name)
    await ec2.create_launch_template_version(
        LaunchTemplateId=fleet.launch_template_id,
        SourceVersion="1",
        LaunchTemplateData={"ImageId": "ami-0bbb0000000000002"},
    )
    await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=2)
    (second,) = set(await members(asg, fleet.asg_name)) - {first}

    async def tags(instance_id: str) -> dict[str, str]:
        answer = await ec2.describe_instances(InstanceIds=[instance_id])
        raw = answer["Reservations"][0]["Instances"][0]["Tags"]
        return {t["Key"]: t["Value"] for t in raw}

    # The fixture's group launches from $Latest: version 1, then 2.
    assert (await tags(first))["aws:ec2launchtemplate:version"] == "1"
    assert (await tags(second))["aws:ec2launchtemplate:version"] == "2"
    assert (await tags(second))["aws:ec2launchtemplate:id"] == fleet.launch_template_id
    # The ASG names the version as the group did.
    listed = await members(asg, fleet.asg_name)
    assert {listed[i]["LaunchTemplate"]["Version"] for i in (first, second)} == {"$Latest"}
