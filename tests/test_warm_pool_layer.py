"""The lifecycle layer's warm pool, as AWS documents it, driven by aioboto3 clients.

Each case cites the rule it checks: "Warm pools for Amazon EC2 Auto Scaling" and "Use
lifecycle hooks with a warm pool" (EC2 Auto Scaling User Guide), PutWarmPool and
DescribeWarmPool (API Reference), "Public IPv4 addresses" (Amazon EC2 User Guide).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from bbbsim.lifecycle_layer import (
    HookConfig,
    LaunchWait,
    LifecycleLayer,
    Scope,
    WarmPoolConfig,
    complete_launch_hook,
    expire_launch_hooks,
    start_launch,
    warm_pool_config,
    warm_pool_size,
)
from bbbsim.moto_server import FleetIds, FleetSpec, HookSpec
from tests.aws_fixtures import FakeClock

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]
LAUNCH = "bbbnode-launch"

# The asg and ec2 clients are tests/aws_fixtures.py's.
pytestmark = pytest.mark.integration


async def members(asg: AutoScalingClient, name: str) -> dict[str, str]:
    group = (await asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name]))[
        "AutoScalingGroups"
    ][0]
    return {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}


async def pool(asg: AutoScalingClient, name: str) -> dict[str, str]:
    answer = await asg.describe_warm_pool(AutoScalingGroupName=name)
    return {i["InstanceId"]: i["LifecycleState"] for i in answer["Instances"]}


async def ec2_state(ec2: EC2Client, instance_id: str) -> str:
    answer = await ec2.describe_instances(InstanceIds=[instance_id])
    return answer["Reservations"][0]["Instances"][0]["State"]["Name"]


async def complete(
    asg: AutoScalingClient, group: str, instance_id: str, result: str = "CONTINUE"
) -> None:
    await asg.complete_lifecycle_action(
        AutoScalingGroupName=group,
        LifecycleHookName=LAUNCH,
        InstanceId=instance_id,
        LifecycleActionResult=result,
    )


async def warmed(
    make_fleet: MakeFleet, asg: AutoScalingClient, size: int = 2, **spec: Any
) -> tuple[FleetIds, list[str]]:
    """A fleet of one with a pool of ``size``, every pool instance through its warm-up."""
    fleet = await make_fleet(FleetSpec(desired=1, warm_pool=size, **spec))
    ids = sorted(await pool(asg, fleet.asg_name))
    for instance_id in ids:
        await complete(asg, fleet.asg_name, instance_id)
    assert await pool(asg, fleet.asg_name) == dict.fromkeys(ids, "Warmed:Stopped")
    return fleet, ids


# ---------------------------------------------------------------- into the pool


async def test_instances_warm_up_in_the_pool_then_stop(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    ec2: EC2Client,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    lifecycle_layer.launching_pause = 5.0
    fleet = await make_fleet(FleetSpec(desired=1, warm_pool=2))
    (member,) = await members(asg, fleet.asg_name)
    warm = await pool(asg, fleet.asg_name)
    # Not members of the group: the pool lists them, the group only counts them.
    assert len(warm) == 2
    assert member not in warm
    assert set(warm.values()) == {"Warmed:Pending"}
    group = (await asg.describe_auto_scaling_groups(AutoScalingGroupNames=[fleet.asg_name]))[
        "AutoScalingGroups"
    ][0]
    assert group["WarmPoolSize"] == 2
    assert group["WarmPoolConfiguration"]["PoolState"] == "Stopped"
    config = (await asg.describe_warm_pool(AutoScalingGroupName=fleet.asg_name))[
        "WarmPoolConfiguration"
    ]
    assert config["MinSize"] == 2
    assert config["MaxGroupPreparedCapacity"] == 2
    assert config["InstanceReusePolicy"] == {"ReuseOnScaleIn": False}
    first, second = sorted(warm)
    # IMDS says where it is headed (the pool's state) before the action exists.
    assert lifecycle_layer.target_lifecycle_state(first) == "Warmed:Stopped"
    with pytest.raises(ClientError, match="No active Lifecycle Action"):
        await complete(asg, fleet.asg_name, first)
    fake_clock.advance(5)
    assert set((await pool(asg, fleet.asg_name)).values()) == {"Warmed:Pending:Wait"}
    listed = await asg.describe_auto_scaling_instances(InstanceIds=[first])
    assert [i["LifecycleState"] for i in listed["AutoScalingInstances"]] == ["Warmed:Pending:Wait"]
    assert await ec2_state(ec2, first) == "running"

    await complete(asg, fleet.asg_name, first)
    assert (await pool(asg, fleet.asg_name))[first] == "Warmed:Stopped"
    assert await ec2_state(ec2, first) == "stopped"
    assert lifecycle_layer.target_lifecycle_state(first) == "Warmed:Stopped"
    kinds = [(e.kind, e.instance_id) for e in lifecycle_layer.events()]
    assert ("launched", first) in kinds
    assert ("stopped", first) in kinds
    assert ("stopped", second) not in kinds
    # The scaler's view: the pool does not make the group bigger.
    assert await members(asg, fleet.asg_name) == {member: "InService"}


async def test_without_a_launch_hook_aws_stops_the_instance_at_once(
    make_fleet: MakeFleet, asg: AutoScalingClient, ec2: EC2Client
) -> None:
    # "As soon as an instance finishes launching into the warm pool, Amazon EC2 Auto
    # Scaling stops ... the instance ... does not wait for user data to finish running."
    fleet = await make_fleet(FleetSpec(desired=1))
    await asg.put_warm_pool(
        AutoScalingGroupName=fleet.asg_name, MinSize=1, MaxGroupPreparedCapacity=1
    )
    ((instance_id, state),) = (await pool(asg, fleet.asg_name)).items()
    assert state == "Warmed:Stopped"
    assert await ec2_state(ec2, instance_id) == "stopped"


async def test_a_warm_up_that_never_completes_is_abandoned_and_replaced(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    ec2: EC2Client,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=1, warm_pool=1))
    ((stuck, _),) = (await pool(asg, fleet.asg_name)).items()
    fake_clock.advance(900)
    await lifecycle_layer.tick()
    # DefaultResult ABANDON: terminated; the pool refills itself.
    assert await ec2_state(ec2, stuck) == "terminated"
    assert lifecycle_layer.target_lifecycle_state(stuck) == "Warmed:Terminated"
    ((fresh, state),) = (await pool(asg, fleet.asg_name)).items()
    assert fresh != stuck
    assert state == "Warmed:Pending:Wait"


# ---------------------------------------------------------------- out of the pool


async def test_a_scale_out_starts_pool_instances_with_a_new_address(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    ec2: EC2Client,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet, (first, second) = await warmed(make_fleet, asg)
    before = {i.instance_id: i.public_ip for i in lifecycle_layer.instances()}
    lifecycle_layer.launching_pause = 3.0
    await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=2)

    # The oldest pool instance, started: a member again, Pending until its hook waits.
    assert (await members(asg, fleet.asg_name))[first] == "Pending"
    assert await ec2_state(ec2, first) == "running"
    assert lifecycle_layer.target_lifecycle_state(first) == "InService"
    started = next(i for i in lifecycle_layer.instances() if i.instance_id == first)
    assert started.public_ip is not None
    assert started.public_ip != before[first]
    assert ("started", first) in [(e.kind, e.instance_id) for e in lifecycle_layer.events()]
    fake_clock.advance(3)
    # The launch hook fires again on the way out of the pool.
    assert (await members(asg, fleet.asg_name))[first] == "Pending:Wait"
    await complete(asg, fleet.asg_name, first)
    assert (await members(asg, fleet.asg_name))[first] == "InService"

    # The pool refills on its own: a new instance warms up (and runs, and costs).
    await lifecycle_layer.tick()
    refilled = await pool(asg, fleet.asg_name)
    assert second in refilled
    assert len(refilled) == 2
    (new,) = set(refilled) - {second}
    assert refilled[new] == "Warmed:Pending"
    assert await ec2_state(ec2, new) == "running"


async def test_a_depleted_pool_launches_cold_and_the_hook_holds_those_too(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    fleet, warm = await warmed(make_fleet, asg, size=1)
    await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=3)
    states = await members(asg, fleet.asg_name)
    assert len(states) == 3
    cold = [i for i, s in states.items() if s == "Pending:Wait" and i not in warm]
    assert len(cold) == 1
    assert states[warm[0]] == "Pending:Wait"
    for instance_id in (*cold, warm[0]):
        await complete(asg, fleet.asg_name, instance_id)
    assert set((await members(asg, fleet.asg_name)).values()) == {"InService"}


async def test_a_warm_start_that_fails_is_a_cold_start(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    fleet, (only,) = await warmed(make_fleet, asg, size=1)
    lifecycle_layer.fail_warm_starts(1)
    await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=2)
    states = await members(asg, fleet.asg_name)
    assert only not in states
    assert len(states) == 2
    assert (await pool(asg, fleet.asg_name)) == {only: "Warmed:Stopped"}
    activities = await asg.describe_scaling_activities(AutoScalingGroupName=fleet.asg_name)
    assert any(
        a["StatusCode"] == "Failed" and only in a["Description"] for a in activities["Activities"]
    )


async def test_an_abandoned_launch_into_service_is_replaced(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    ec2: EC2Client,
    lifecycle_layer: LifecycleLayer,
) -> None:
    fleet, (only,) = await warmed(make_fleet, asg, size=1)
    await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=2)
    await complete(asg, fleet.asg_name, only, "ABANDON")
    assert await ec2_state(ec2, only) == "terminated"
    states = await members(asg, fleet.asg_name)
    assert only not in states
    assert len(states) == 2


# ---------------------------------------------------------------- leaving the pool


async def test_a_smaller_pool_terminates_through_the_hooks_a_stopped_host_cannot_answer(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    ec2: EC2Client,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet, warm = await warmed(make_fleet, asg, termination_hook=HookSpec(heartbeat_timeout=300))
    await asg.put_warm_pool(
        AutoScalingGroupName=fleet.asg_name, MinSize=1, MaxGroupPreparedCapacity=1
    )
    states = await pool(asg, fleet.asg_name)
    (leaving,) = [i for i, s in states.items() if s == "Warmed:Terminating:Wait"]
    assert lifecycle_layer.target_lifecycle_state(leaving) == "Warmed:Terminated"
    # Stopped: nothing on it can complete the hook; it waits out its timeout.
    assert await ec2_state(ec2, leaving) == "stopped"
    fake_clock.advance(299)
    await lifecycle_layer.tick()
    assert (await pool(asg, fleet.asg_name))[leaving] == "Warmed:Terminating:Wait"
    fake_clock.advance(1)
    await lifecycle_layer.tick()
    assert leaving not in await pool(asg, fleet.asg_name)
    assert await ec2_state(ec2, leaving) == "terminated"
    assert lifecycle_layer.target_lifecycle_state(leaving) == "Warmed:Terminated"
    assert set(warm) - {leaving} == set(await pool(asg, fleet.asg_name))


async def test_delete_warm_pool(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    fleet, warm = await warmed(make_fleet, asg)
    await asg.delete_warm_pool(AutoScalingGroupName=fleet.asg_name, ForceDelete=True)
    answer = await asg.describe_warm_pool(AutoScalingGroupName=fleet.asg_name)
    assert answer["Instances"] == []
    assert "WarmPoolConfiguration" not in answer
    assert all(lifecycle_layer.target_lifecycle_state(i) == "Warmed:Terminated" for i in warm)
    with pytest.raises(ClientError, match="No warm pool"):
        await asg.delete_warm_pool(AutoScalingGroupName=fleet.asg_name)


async def test_put_warm_pool_refuses_bad_values(
    make_fleet: MakeFleet, asg: AutoScalingClient
) -> None:
    fleet = await make_fleet(FleetSpec(desired=1))
    with pytest.raises(ClientError, match="PoolState"):
        await asg.put_warm_pool(AutoScalingGroupName=fleet.asg_name, PoolState="Asleep")  # type: ignore[arg-type]
    assert (await asg.describe_warm_pool(AutoScalingGroupName=fleet.asg_name))["Instances"] == []


# ---------------------------------------------------------------- pure rules


def test_pool_size_follows_putwarmpool() -> None:
    # Unset MaxGroupPreparedCapacity: MaxSize - desired (desired 6, max 10: 4).
    assert warm_pool_size(WarmPoolConfig(), max_size=10, desired=6) == 4
    # Set: MaxGroupPreparedCapacity - desired (8 - 6 = 2), at least MinSize.
    assert warm_pool_size(WarmPoolConfig(max_prepared=8), 10, 6) == 2
    assert warm_pool_size(WarmPoolConfig(max_prepared=8, min_size=3), 10, 6) == 3
    # Desired above it: 0 unless MinSize says otherwise.
    assert warm_pool_size(WarmPoolConfig(max_prepared=4), 10, 6) == 0
    # Both the same: an absolute size, whatever desired does (cfn/fleet.yaml's choice).
    for desired in range(0, 11):
        assert warm_pool_size(WarmPoolConfig(min_size=2, max_prepared=2), 10, desired) == 2
    assert warm_pool_size(WarmPoolConfig(min_size=2, deleting=True), 10, 1) == 0


def test_put_warm_pool_parameters() -> None:
    config = warm_pool_config(
        {"MinSize": "2", "MaxGroupPreparedCapacity": "2", "PoolState": "Stopped",
         "InstanceReusePolicy.ReuseOnScaleIn": "false"},
        None,
    )  # fmt: skip
    assert config == WarmPoolConfig(min_size=2, max_prepared=2)
    # -1 removes a value set before; what is not given stays.
    again = warm_pool_config({"MaxGroupPreparedCapacity": "-1"}, config)
    assert again == WarmPoolConfig(min_size=2, max_prepared=None)
    assert config.warmed_state == "Warmed:Stopped"


def test_launch_wait_timeline() -> None:
    scope = Scope("eu-central-1", "testing")
    hooks = [HookConfig("launch", 60, "ABANDON")]
    wait = start_launch("i-1", "g", scope, hooks, 100.0, lambda: "t", pause=5, into_pool=True)
    assert isinstance(wait, LaunchWait)
    assert (wait.state_at(104.9), wait.state_at(105.0)) == ("Warmed:Pending", "Warmed:Pending:Wait")
    assert expire_launch_hooks(wait, 164.9) == (wait, False)
    assert expire_launch_hooks(wait, 165.0) == (None, True)
    assert complete_launch_hook(wait, "launch", "CONTINUE") == (None, False)
    assert complete_launch_hook(wait, "launch", "ABANDON") == (None, True)
    cold = start_launch("i-2", "g", scope, [HookConfig("launch", 60, "CONTINUE")], 0.0, str)
    assert cold.state_at(0.0) == "Pending:Wait"
    assert expire_launch_hooks(cold, 60.0) == (None, False)
