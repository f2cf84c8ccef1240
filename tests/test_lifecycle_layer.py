"""The lifecycle layer in front of moto, driven by aioboto3 clients as bbbnode/bbbscaler do."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff

from bbbsim.lifecycle_layer import (
    FaultKind,
    FleetEvent,
    HookConfig,
    LifecycleLayer,
    Scope,
    complete_hook,
    desired_capacity_error,
    expire_hooks,
    record_heartbeat,
    resolve_sizes,
    serve,
    start_termination,
)
from bbbsim.moto_server import FleetIds, FleetSpec, HookSpec, MotoServer
from bbbsim.termination_policy import Candidate, choose_victims
from tests.aws_fixtures import NO_RETRY, FakeClock

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]

pytestmark = pytest.mark.integration


async def group_of(asg: AutoScalingClient, name: str) -> dict[str, Any]:
    groups = (await asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name]))[
        "AutoScalingGroups"
    ]
    assert len(groups) == 1
    return dict(groups[0])


async def states(asg: AutoScalingClient, name: str) -> dict[str, str]:
    group = await group_of(asg, name)
    return {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}


async def ec2_state(ec2: EC2Client, instance_id: str) -> str:
    answer = await ec2.describe_instances(InstanceIds=[instance_id])
    return answer["Reservations"][0]["Instances"][0]["State"]["Name"]


# ---------------------------------------------------------------- hooks


async def test_terminate_with_hook_waits_until_complete(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    ec2: EC2Client,
    lifecycle_layer: LifecycleLayer,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    victim, keeper = sorted(await states(asg, fleet.asg_name))

    answer = await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    assert answer["Activity"]["Description"] == f"Terminating EC2 instance: {victim}"
    assert answer["Activity"]["StatusCode"] == "InProgress"

    assert await states(asg, fleet.asg_name) == {victim: "Terminating:Wait", keeper: "InService"}
    assert (await group_of(asg, fleet.asg_name))["DesiredCapacity"] == 1
    instances = (await asg.describe_auto_scaling_instances(InstanceIds=[victim]))[
        "AutoScalingInstances"
    ]
    assert instances[0]["LifecycleState"] == "Terminating:Wait"
    assert instances[0]["ProtectedFromScaleIn"] is False
    assert await ec2_state(ec2, victim) == "running"
    assert lifecycle_layer.target_lifecycle_state(victim) == "Terminated"
    assert lifecycle_layer.target_lifecycle_state(keeper) == "InService"

    await asg.complete_lifecycle_action(
        AutoScalingGroupName=fleet.asg_name,
        LifecycleHookName="bbbnode-drain",
        InstanceId=victim,
        LifecycleActionResult="CONTINUE",
    )

    assert await states(asg, fleet.asg_name) == {keeper: "InService"}
    assert await ec2_state(ec2, victim) == "terminated"
    kinds = [(e.kind, e.instance_id) for e in lifecycle_layer.events()]
    assert ("terminating", victim) in kinds
    assert kinds[-1] == ("terminated", victim)
    assert lifecycle_layer.target_lifecycle_state(victim) == "Terminated"
    assert [i.instance_id for i in lifecycle_layer.instances()] == [keeper]


async def test_heartbeat_extends_the_deadline(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2, termination_hook=HookSpec(heartbeat_timeout=300)))
    victim = sorted(await states(asg, fleet.asg_name))[0]
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    fake_clock.advance(200)
    await asg.record_lifecycle_action_heartbeat(
        AutoScalingGroupName=fleet.asg_name, LifecycleHookName="bbbnode-drain", InstanceId=victim
    )
    (action,) = lifecycle_layer.lifecycle_actions()
    assert action.deadline == fake_clock() + 300

    fake_clock.advance(250)  # 450 s after the start: past the first deadline
    await lifecycle_layer.tick()
    assert (await states(asg, fleet.asg_name))[victim] == "Terminating:Wait"

    fake_clock.advance(51)
    await lifecycle_layer.tick()
    assert victim not in await states(asg, fleet.asg_name)
    assert lifecycle_layer.events()[-1].kind == "terminated"


@pytest.mark.parametrize("default_result", ["CONTINUE", "ABANDON"])
async def test_deadline_applies_the_default_result(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    ec2: EC2Client,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
    default_result: str,
) -> None:
    hook = HookSpec(heartbeat_timeout=60, default_result=default_result)
    fleet = await make_fleet(FleetSpec(desired=2, termination_hook=hook))
    victim = sorted(await states(asg, fleet.asg_name))[0]
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    fake_clock.advance(59)
    await lifecycle_layer.tick()
    assert (await states(asg, fleet.asg_name))[victim] == "Terminating:Wait"
    fake_clock.advance(1)
    await lifecycle_layer.tick()
    # Both results end a terminating instance.
    assert victim not in await states(asg, fleet.asg_name)
    assert await ec2_state(ec2, victim) == "terminated"


async def test_complete_by_token_and_unknown_action(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    victim = sorted(await states(asg, fleet.asg_name))[0]

    with pytest.raises(ClientError) as refused:
        await asg.complete_lifecycle_action(
            AutoScalingGroupName=fleet.asg_name,
            LifecycleHookName="bbbnode-drain",
            InstanceId=victim,
            LifecycleActionResult="CONTINUE",
        )
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert f"No active Lifecycle Action found with instance ID {victim}" in str(refused.value)

    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    (action,) = lifecycle_layer.lifecycle_actions()
    await asg.complete_lifecycle_action(
        AutoScalingGroupName=fleet.asg_name,
        LifecycleHookName="bbbnode-drain",
        LifecycleActionToken=action.token,
        LifecycleActionResult="ABANDON",
    )
    assert victim not in await states(asg, fleet.asg_name)
    assert lifecycle_layer.lifecycle_actions() == ()


async def test_terminate_without_decrement_launches_a_replacement(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    before = set(await states(asg, fleet.asg_name))
    victim = sorted(before)[0]
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=False
    )
    after = await states(asg, fleet.asg_name)
    assert (await group_of(asg, fleet.asg_name))["DesiredCapacity"] == 2
    assert after[victim] == "Terminating:Wait"
    (replacement,) = set(after) - before
    assert after[replacement] == "InService"
    assert lifecycle_layer.events()[-1].kind == "launched"


async def test_terminate_below_min_size_is_refused(
    make_fleet: MakeFleet, asg: AutoScalingClient
) -> None:
    fleet = await make_fleet(FleetSpec(min_size=2, desired=2))
    victim = sorted(await states(asg, fleet.asg_name))[0]
    with pytest.raises(ClientError) as refused:
        await asg.terminate_instance_in_auto_scaling_group(
            InstanceId=victim, ShouldDecrementDesiredCapacity=True
        )
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "min size constraint" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="No managed instance found"):
        await asg.terminate_instance_in_auto_scaling_group(
            InstanceId="i-0000000000000dead", ShouldDecrementDesiredCapacity=False
        )


async def test_terminate_protected_instance_is_allowed(
    make_fleet: MakeFleet, asg: AutoScalingClient
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2, new_instances_protected=True))
    victim = sorted(await states(asg, fleet.asg_name))[0]
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    group = await group_of(asg, fleet.asg_name)
    waiting = next(i for i in group["Instances"] if i["InstanceId"] == victim)
    assert waiting["LifecycleState"] == "Terminating:Wait"
    assert waiting["ProtectedFromScaleIn"] is True


# ------------------------------------------------------------ capacity rules


@pytest.mark.parametrize("with_hook", [True, False])
async def test_lowering_desired_spares_protected_instances(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    lifecycle_layer: LifecycleLayer,
    with_hook: bool,
) -> None:
    hook = HookSpec() if with_hook else None
    fleet = await make_fleet(FleetSpec(min_size=0, desired=3, termination_hook=hook))
    ids = sorted(await states(asg, fleet.asg_name))
    protected, unprotected = ids[:2], ids[2]
    await asg.set_instance_protection(
        AutoScalingGroupName=fleet.asg_name, InstanceIds=protected, ProtectedFromScaleIn=True
    )

    await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=1)

    group = await group_of(asg, fleet.asg_name)
    assert group["DesiredCapacity"] == 1
    now = {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}
    assert [now[i] for i in protected] == ["InService", "InService"]
    if with_hook:
        assert now[unprotected] == "Terminating:Wait"
    else:
        assert unprotected not in now
        assert ("terminated", unprotected) in [
            (e.kind, e.instance_id) for e in lifecycle_layer.events()
        ]

    # Lifting protection lets the group reach its desired size, as AWS does.
    await asg.set_instance_protection(
        AutoScalingGroupName=fleet.asg_name, InstanceIds=[protected[0]], ProtectedFromScaleIn=False
    )
    now = await states(asg, fleet.asg_name)
    assert now[protected[1]] == "InService"
    if with_hook:
        assert now[protected[0]] == "Terminating:Wait"
    else:
        assert protected[0] not in now


async def test_scale_in_by_update_and_scale_out(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    fleet = await make_fleet(FleetSpec(min_size=1, max_size=4, desired=3))
    stream = lifecycle_layer.subscribe()

    await asg.update_auto_scaling_group(AutoScalingGroupName=fleet.asg_name, MaxSize=2)
    group = await group_of(asg, fleet.asg_name)
    assert (group["MaxSize"], group["DesiredCapacity"]) == (2, 2)
    waiting = [i for i in group["Instances"] if i["LifecycleState"] == "Terminating:Wait"]
    assert len(waiting) == 1

    await asg.update_auto_scaling_group(AutoScalingGroupName=fleet.asg_name, MaxSize=4)
    await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=4)
    in_service = [i for i in lifecycle_layer.instances() if i.lifecycle_state == "InService"]
    assert len(in_service) == 4

    stream.close()
    seen = [event async for event in stream]
    assert [e.kind for e in seen] == ["terminating", "launched", "launched"]
    assert seen[0].instance_id == waiting[0]["InstanceId"]


async def test_desired_outside_min_max_is_refused(
    make_fleet: MakeFleet, asg: AutoScalingClient
) -> None:
    fleet = await make_fleet(FleetSpec(min_size=1, max_size=4, desired=2))
    with pytest.raises(ClientError) as above:
        await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=5)
    assert above.value.response["Error"]["Code"] == "ValidationError"
    assert "above max value 4" in above.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="below min value 1"):
        await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=0)
    with pytest.raises(ClientError, match="Desired capacity:9 must be between"):
        await asg.update_auto_scaling_group(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=9)
    with pytest.raises(ClientError, match="Max bound, 1, must be greater"):
        await asg.update_auto_scaling_group(
            AutoScalingGroupName=fleet.asg_name, MinSize=2, MaxSize=1
        )
    with pytest.raises(ClientError, match="Desired capacity:7 must be between"):
        await asg.create_auto_scaling_group(
            AutoScalingGroupName="too-big",
            MinSize=0,
            MaxSize=3,
            DesiredCapacity=7,
            LaunchTemplate={"LaunchTemplateId": fleet.launch_template_id},
            VPCZoneIdentifier=fleet.subnet_ids[0],
        )
    assert (await group_of(asg, fleet.asg_name))["DesiredCapacity"] == 2


# ------------------------------------------------------------ faults


async def test_throttling_is_a_retryable_client_error(
    make_fleet: MakeFleet,
    aws_session: Any,
    asg: AutoScalingClient,
    lifecycle_layer: LifecycleLayer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = await make_fleet(None)
    lifecycle_layer.inject_fault("throttling", "DescribeAutoScalingGroups", count=1)
    with pytest.raises(ClientError) as throttled:
        await asg.describe_auto_scaling_groups()
    assert throttled.value.response["Error"]["Code"] == "Throttling"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # Backoff is botocore's own jittered sleep; the test must not wait for it.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    lifecycle_layer.inject_fault("throttling", "DescribeAutoScalingGroups", count=2)
    retrying = AioConfig(retries={"total_max_attempts": 4, "mode": "standard"})
    async with aws_session.client("autoscaling", config=retrying) as client:
        answer = await client.describe_auto_scaling_groups(AutoScalingGroupNames=[fleet.asg_name])
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    assert answer["AutoScalingGroups"][0]["AutoScalingGroupName"] == fleet.asg_name


@pytest.mark.parametrize(("kind", "status"), [("http500", 500), ("http503", 503)])
async def test_server_errors_and_fault_for_every_call(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    ec2: EC2Client,
    lifecycle_layer: LifecycleLayer,
    kind: FaultKind,
    status: int,
) -> None:
    await make_fleet(None)
    lifecycle_layer.inject_fault(kind, None, count=None)
    for call in (asg.describe_auto_scaling_groups(), ec2.describe_instances()):
        with pytest.raises(ClientError) as failed:
            await call
        assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    lifecycle_layer.clear_faults()
    await asg.describe_auto_scaling_groups()


async def test_throttling_in_each_protocol_shape(
    aws_session: Any, aws_endpoint: str, lifecycle_layer: LifecycleLayer
) -> None:
    lifecycle_layer.inject_fault("throttling", count=None)
    async with aws_session.client("ec2", config=NO_RETRY) as ec2_client:
        with pytest.raises(ClientError) as ec2_error:
            await ec2_client.describe_instances()
    assert ec2_error.value.response["Error"]["Code"] == "RequestLimitExceeded"
    async with aws_session.client("secretsmanager", config=NO_RETRY) as secrets:
        with pytest.raises(ClientError) as json_error:
            await secrets.list_secrets()
    assert json_error.value.response["Error"]["Code"] == "Throttling"
    async with aws_session.client("route53", config=NO_RETRY) as route53:
        with pytest.raises(ClientError) as xml_error:
            await route53.list_hosted_zones()
    assert xml_error.value.response["Error"]["Code"] == "Throttling"


# ------------------------------------------------------------ reset, view


async def test_reset_clears_moto_and_the_layer(
    make_fleet: MakeFleet,
    asg: AutoScalingClient,
    lifecycle_layer: LifecycleLayer,
    moto_server: MotoServer,
) -> None:
    fleet = await make_fleet(None)
    victim = sorted(await states(asg, fleet.asg_name))[0]
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )
    assert lifecycle_layer.instances()

    moto_server.reset()
    await lifecycle_layer.reset()

    assert (await asg.describe_auto_scaling_groups())["AutoScalingGroups"] == []
    assert lifecycle_layer.instances() == ()
    assert lifecycle_layer.events() == ()
    assert lifecycle_layer.lifecycle_actions() == ()
    # The same names can be created again on a clean slate.
    await make_fleet(None)


async def test_each_test_starts_clean(
    asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    assert (await asg.describe_auto_scaling_groups())["AutoScalingGroups"] == []
    assert lifecycle_layer.instances() == ()


async def test_instances_view_and_listeners(
    make_fleet: MakeFleet, asg: AutoScalingClient, lifecycle_layer: LifecycleLayer
) -> None:
    heard: list[str] = []
    remove = lifecycle_layer.add_listener(lambda event: heard.append(event.kind))
    fleet = await make_fleet(FleetSpec(desired=2))
    infos = lifecycle_layer.instances()
    assert len(infos) == 2
    assert {i.group for i in infos} == {fleet.asg_name}
    assert all(i.region == fleet.region and i.private_ip for i in infos)
    assert heard == ["launched", "launched"]
    remove()
    await asg.set_desired_capacity(AutoScalingGroupName=fleet.asg_name, DesiredCapacity=3)
    assert heard == ["launched", "launched"]
    assert lifecycle_layer.target_lifecycle_state("i-unknown") is None


async def test_delete_group_rules(
    make_fleet: MakeFleet, asg: AutoScalingClient, ec2: EC2Client
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    ids = sorted(await states(asg, fleet.asg_name))
    await asg.set_instance_protection(
        AutoScalingGroupName=fleet.asg_name, InstanceIds=ids[:1], ProtectedFromScaleIn=True
    )
    await asg.terminate_instance_in_auto_scaling_group(
        InstanceId=ids[1], ShouldDecrementDesiredCapacity=True
    )
    with pytest.raises(ClientError) as refused:
        await asg.delete_auto_scaling_group(AutoScalingGroupName=fleet.asg_name)
    assert refused.value.response["Error"]["Code"] == "ResourceInUse"
    await asg.delete_auto_scaling_group(AutoScalingGroupName=fleet.asg_name, ForceDelete=True)
    assert (await asg.describe_auto_scaling_groups())["AutoScalingGroups"] == []
    assert [await ec2_state(ec2, i) for i in ids] == ["terminated", "terminated"]


async def test_background_ticker_applies_deadlines(
    make_fleet: MakeFleet,
    aws_session: Any,
    moto_endpoint: str,
    fake_clock: FakeClock,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2, termination_hook=HookSpec(heartbeat_timeout=30)))
    layer = LifecycleLayer(moto_endpoint, clock=fake_clock)
    runner, port = await serve(layer, tick_interval=0.001)
    try:
        stream = layer.subscribe()
        async with aws_session.client(
            "autoscaling", endpoint_url=f"http://127.0.0.1:{port}", config=NO_RETRY
        ) as client:
            victim = sorted(await states(client, fleet.asg_name))[0]
            await client.terminate_instance_in_auto_scaling_group(
                InstanceId=victim, ShouldDecrementDesiredCapacity=True
            )
            fake_clock.advance(30)
            terminated: list[FleetEvent] = []
            async with asyncio.timeout(10):
                async for event in stream:
                    if event.kind == "terminated":
                        terminated.append(event)
                        break
            assert terminated[0].instance_id == victim
            assert victim not in await states(client, fleet.asg_name)
    finally:
        await runner.cleanup()


# ------------------------------------------------------------ pure parts


def test_choose_victims_balances_zones_and_skips_protected() -> None:
    now = 10_000.0
    pool = [
        Candidate("i-a1", "a", protected=False, launched_at=now - 100),
        Candidate("i-a2", "a", protected=False, launched_at=now - 3500),
        Candidate("i-a3", "a", protected=True, launched_at=now - 3590),
        Candidate("i-b1", "b", protected=False, launched_at=now - 10),
    ]
    rng = random.Random(1)
    # Zone a has most instances; i-a2 is closest to its next instance hour.
    assert choose_victims(pool, 1, now, rng) == ("i-a2",)
    assert choose_victims(pool, 2, now, rng)[0] == "i-a2"
    assert set(choose_victims(pool, 10, now, rng)) == {"i-a1", "i-a2", "i-b1"}
    assert choose_victims([c for c in pool if c.protected], 1, now, rng) == ()
    # In the zone, the oldest launch template goes before the billing hour counts.
    newer = [
        c if c.instance_id != "i-a2" else dataclasses.replace(c, launch_version=2) for c in pool
    ]
    assert choose_victims(newer, 1, now, rng) == ("i-a1",)


def test_capacity_rules() -> None:
    assert desired_capacity_error(2, 1, 4) is None
    assert "above max value 4" in (desired_capacity_error(5, 1, 4) or "")
    assert "below min value 1" in (desired_capacity_error(0, 1, 4) or "")
    assert resolve_sizes((1, 4, 3), None, 2, None) == (1, 2, 2)
    assert resolve_sizes((1, 4, 1), 3, None, None) == (3, 4, 3)
    assert resolve_sizes((1, 4, 1), None, None, 4) == (1, 4, 4)


def test_hook_timeline() -> None:
    hooks = [HookConfig("drain", 300, "CONTINUE"), HookConfig("backup", 100, "ABANDON")]
    term = start_termination("i-1", "g", Scope("r", "k"), False, hooks, 0.0, lambda: "t")
    assert [h.deadline for h in term.hooks] == [300.0, 100.0]
    assert term.hooks[1].global_deadline == 100 * 100
    beat = record_heartbeat(term, "drain", 250.0)
    assert beat.hooks[0].deadline == 550.0
    # CONTINUE on one hook leaves the other pending; ABANDON ends them all.
    left = complete_hook(term, "drain", "CONTINUE")
    assert left is not None
    assert [h.hook_name for h in left.hooks] == ["backup"]
    assert complete_hook(term, "drain", "ABANDON") is None
    assert expire_hooks(term, 99.0) == term
    assert expire_hooks(term, 100.0) is None  # backup's default is ABANDON
    capped = record_heartbeat(term, "backup", 9_950.0)
    assert capped.hooks[1].deadline == 10_000.0
