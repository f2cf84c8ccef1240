"""bbbscaler end to end: a real bbbscaler process sizing a fleet of real bbbnodes.

AWS is moto_server behind the lifecycle layer; every instance the ASG launches
gets an emulated BBB host and a real bbbnode (bbbsim.fleet), reached through
one loopback router keyed by instance id; Scalelite is the emulator with its
poller running. The scaler scrapes the nodes directly through the router.

load rises on the only node → the scaler grows the group in one step → the new
node boots and registers; the load goes, but one meeting stays on the first
node → the scaler drains the empty node (tag, cordon), terminates it once
Scalelite has disabled it, bbbnode completes the lifecycle action → one
instance left, the meeting that stayed never ended.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bbbsim.fleet import Instance
from bbbsim.moto_server import FleetSpec
from bbbsim.node_process import free_port
from tests.fleet_world import LB_SECRET, World, scaler, tail, until
from tests.processes import http_text, prometheus, prometheus_available, wait_for

pytestmark = pytest.mark.integration


async def _first_node(world: World) -> tuple[Instance]:
    await wait_for(lambda: world.fleet.instances, within=30, what="the first instance started")
    (first,) = world.fleet.instances.values()
    try:
        await until(
            lambda: len(world.enabled()) == 1, "the first node registered", first.node.log_path
        )
    except AssertionError as exc:
        raise AssertionError(f"{world.scalelite.servers()}\n{exc}") from None
    return (first,)


async def test_scales_out_in_one_step_and_in_only_by_draining(world: World) -> None:
    log_path = world.tmp / "bbbscaler.log"
    (first,) = await _first_node(world)
    port = free_port()
    env = world.scaler_env(BBBSCALER_HTTP__LISTEN=f"127.0.0.1:{port}")
    async with scaler(env, log_path) as proc:
        # --- load rises on the only node: one round, a sized step --------------------
        first.host.bbb.add_meeting("lecture", 260, voice=40, cameras=6, listeners=200)
        first.host.bbb.add_meeting("seminar", 12, voice=4)

        async def grown() -> bool:
            return int((await world.group())["DesiredCapacity"]) >= 2

        await until(grown, "desired capacity raised", log_path)
        await until(lambda: len(world.enabled()) >= 2, "the new node registered", log_path)
        status, text = await http_text(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert 'bbbscaler_decisions_total{action="scale_out"}' in text
        assert LB_SECRET not in text

        # --- the lecture ends, the seminar stays: drain the empty node, not it ------
        first.host.bbb.end_meeting("lecture")

        async def shrunk() -> bool:
            group = await world.group()
            return int(group["DesiredCapacity"]) == 1 and len(group["Instances"]) == 1

        await until(shrunk, "drained and terminated back to one node", log_path, within=120)
        assert first.instance_id in world.fleet.instances
        assert first.host.bbb.meeting("seminar") is not None, "a live meeting was ended"
        assert proc.returncode is None, tail(log_path)
        events = [json.loads(line) for line in log_path.read_text().splitlines() if "{" in line]
        decided = [e for e in events if e.get("event") == "decided"]
        assert any(e["action"] == "drain" for e in decided), decided
        terminated = [
            e for e in events
            if e.get("event") == "act_ok" and e.get("action") == "terminate"
        ]  # fmt: skip
        targets = sorted(e["target"] for e in terminated)
        assert targets
        await until(
            lambda: sorted(world.fleet.stopped) == targets, "the terminated hosts stopped", log_path
        )
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0


@pytest.mark.skipif(not prometheus_available(), reason="Debian package prometheus missing")
async def test_once_reads_node_metrics_from_prometheus(world: World) -> None:
    log_path = world.tmp / "bbbscaler.log"
    (first,) = await _first_node(world)
    first.host.bbb.add_meeting("lecture", 30, voice=10)
    targets = {f"127.0.0.1:{first.node.port}": first.instance_id}
    async with prometheus(world.tmp, list(targets), labels=targets) as prom:

        async def scraped() -> bool:
            status, text = await http_text(
                f"{prom.base}/api/v1/query?query=bbb_meetings_participants"
            )
            return status == 200 and '"30"' in text

        await until(scraped, "Prometheus has the node's participants", log_path)
        env = world.scaler_env(
            BBBSCALER_METRICS__SOURCE="prometheus",
            BBBSCALER_METRICS__PROMETHEUS_URL=prom.base,
            BBBSCALER_DRY_RUN="true",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bbbscaler.cli", "run", "--once",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    decision = json.loads(out.decode().strip().splitlines()[-1])
    assert decision["dry_run"] is True
    assert decision["numbers"]["serving"] == 1
    assert decision["numbers"]["blind"] == 0, decision
    assert decision["observe_errors"] == []
    assert set(decision) >= {"action", "reason", "desired", "drain", "terminate", "numbers"}


async def _serving(world: World, count: int) -> list[Instance]:
    await wait_for(
        lambda: len(world.fleet.instances) >= count, within=30, what=f"{count} instances started"
    )
    await until(
        lambda: len(world.enabled()) >= count,
        f"{count} nodes registered",
        world.tmp / "bbbscaler.log",
    )
    return sorted(world.fleet.instances.values(), key=lambda i: i.instance_id)


async def _first_round(port: int, log_path: Path) -> None:
    async def decided() -> bool:
        try:
            status, _ = await http_text(f"http://127.0.0.1:{port}/status")
        except OSError:
            return False
        return status == 200

    await until(decided, "the scaler's first round", log_path)


async def _launch_versions(world: World) -> dict[str, str]:
    """Each group member's launch template version, from EC2's own tag."""
    members = [i["InstanceId"] for i in (await world.group())["Instances"]]
    answer = await world.ec2.describe_instances(InstanceIds=members)
    return {
        raw["InstanceId"]: next(
            t["Value"] for t in raw["Tags"] if t["Key"] == "aws:ec2launchtemplate:version"
        )
        for reservation in answer["Reservations"]
        for raw in reservation["Instances"]
    }


@pytest.mark.parametrize("spec", [FleetSpec(min_size=2, desired=2, max_size=4)])
async def test_a_new_launch_template_version_rolls_the_fleet_through_the_drain(
    world: World,
) -> None:
    log_path = world.tmp / "bbbscaler.log"
    old = await _serving(world, 2)
    busy, idle = old
    busy.host.bbb.add_meeting("seminar", 12, voice=4)
    port = free_port()
    env = world.scaler_env(
        BBBSCALER_HTTP__LISTEN=f"127.0.0.1:{port}", BBBSCALER_POLICY__DRIFT_BUDGET="0.5"
    )
    async with scaler(env, log_path) as proc:
        await _first_round(port, log_path)
        assert set((await _launch_versions(world)).values()) == {"1"}
        # `bbbctl stack update` with a new image: a new version; the group launches $Latest.
        await world.ec2.create_launch_template_version(
            LaunchTemplateId=world.ids.launch_template_id,
            SourceVersion="1",
            LaunchTemplateData={"ImageId": "ami-0bbb0000000000002"},
        )

        # The idle node goes first, once its replacement serves; the busy one is cordoned
        # after its own replacement serves, and keeps its meeting.
        async def busy_cordoned() -> bool:
            return any(
                s.state in ("cordoned", "disabled") and busy.instance_id in s.url
                for s in world.scalelite.servers()
            )

        await until(busy_cordoned, "the busy drifted node cordoned", log_path, within=120)
        assert idle.instance_id not in world.fleet.instances
        await asyncio.sleep(3)  # rounds pass: a cordoned node with a meeting stays
        assert busy.instance_id in world.fleet.instances
        assert busy.host.bbb.meeting("seminar") is not None, "a live meeting was ended"
        busy.host.bbb.end_meeting("seminar")

        async def all_current() -> bool:
            versions = await _launch_versions(world)
            group = await world.group()
            return (
                set(versions.values()) == {"2"}
                and len(versions) == 2
                and int(group["DesiredCapacity"]) == 2
            )

        await until(all_current, "every node launched from version 2", log_path, within=120)
        _, text = await http_text(f"http://127.0.0.1:{port}/metrics")
        await until(
            lambda: busy.instance_id in world.fleet.stopped, "the old nodes stopped", log_path
        )
        status, doc = await http_text(f"http://127.0.0.1:{port}/status")
        assert status == 200
        assert json.loads(doc)["drift"]["drifted"] == []
        assert "bbbscaler_drifted_nodes" in text
        events = [json.loads(line) for line in log_path.read_text().splitlines() if "{" in line]
        decided = [e for e in events if e.get("event") == "decided"]
        # Replacements first (the rollout's growth), then drains: the rollout's own, or the
        # preset's scale-in, which takes drifted nodes first.
        assert any(e["action"] == "scale_out" and "drift:" in e["reason"] for e in decided)
        drained = {iid for e in decided for iid in e.get("drain", ())}
        assert drained >= {busy.instance_id, idle.instance_id}, decided
        assert not [e for e in events if e.get("event") == "decided" and e["action"] == "reconcile"]
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0


@pytest.mark.parametrize("spec", [FleetSpec(min_size=1, desired=2, max_size=4, launch_first=True)])
async def test_aws_s_own_replacement_drains_and_is_not_fought(world: World) -> None:
    log_path = world.tmp / "bbbscaler.log"
    sick, _other = await _serving(world, 2)
    sick.host.bbb.add_meeting("seminar", 12, voice=4)
    port = free_port()
    env = world.scaler_env(
        BBBSCALER_HTTP__LISTEN=f"127.0.0.1:{port}", BBBSCALER_POLICY__SCALE_IN_AFTER="600"
    )
    async with scaler(env, log_path) as proc:
        await _first_round(port, log_path)
        # EC2 reports the host impaired: AWS launches a replacement first, then terminates
        # the sick one through the hook, scale-in protection or not.
        await world.autoscaling.set_instance_health(
            InstanceId=sick.instance_id, HealthStatus="Unhealthy"
        )
        desired: set[int] = set()

        async def waiting() -> bool:
            group = await world.group()
            desired.add(int(group["DesiredCapacity"]))
            states = {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}
            return states.get(sick.instance_id) == "Terminating:Wait" and len(states) == 3

        await until(waiting, "the sick node in the termination hook", log_path)
        # bbbnode drains it as any termination: cordoned, the meeting goes on.
        await until(
            lambda: not any(sick.instance_id in url for url in world.enabled()),
            "the sick node cordoned",
            log_path,
        )
        await asyncio.sleep(3)
        assert sick.host.bbb.meeting("seminar") is not None
        sick.host.bbb.end_meeting("seminar")

        async def replaced() -> bool:
            group = await world.group()
            desired.add(int(group["DesiredCapacity"]))
            return sick.instance_id not in {i["InstanceId"] for i in group["Instances"]}

        await until(replaced, "the sick node gone", log_path, within=120)
        # Members were above desired for a while: left to AWS, desired never raised.
        assert desired == {2}, tail(log_path, 200)
        events = [json.loads(line) for line in log_path.read_text().splitlines() if "{" in line]
        assert not [e for e in events if e.get("event") == "decided" and e["action"] == "reconcile"]
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
