"""The warm pool end to end: real bbbnode processes on emulated hosts, moto behind the
lifecycle layer (bbbsim.fleet), the Scalelite emulator, and a real bbbscaler.

A host launched into the warm pool warms up and completes the launch hook, and AWS
stops it, without it ever appearing in Scalelite or Route53; a restart of its bbbnode
while it waits is harmless; a scale-out starts it with a new public address, it writes
its A record and host configuration for that address, completes the hook on the way in,
registers and takes meetings; the pool refills on its own. With bbbscaler sizing the
group, the scale-out is served from the pool.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bbbcore.scalelite import place_meeting
from bbbsim.fleet import Instance
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import FleetSpec
from bbbsim.node_process import free_port
from tests.aws_fixtures import FakeClock
from tests.fleet_world import World, scaler, until
from tests.processes import http_text

pytestmark = pytest.mark.integration

WARM = FleetSpec(min_size=1, desired=1, max_size=3, warm_pool=1)


class Watch:
    """Samples, while a task runs, whether a warm host shows in Scalelite or Route53."""

    def __init__(self, world: World, layer: LifecycleLayer, route53: Any) -> None:
        self.world = world
        self.layer = layer
        self.route53 = route53
        self.violations: list[str] = []
        self.samples = 0

    async def a_records(self) -> dict[str, str]:
        answer = await self.route53.list_resource_record_sets(
            HostedZoneId=self.world.ids.hosted_zone_id
        )
        return {
            r["Name"].rstrip("."): r["ResourceRecords"][0]["Value"]
            for r in answer["ResourceRecordSets"]
            if r["Type"] == "A"
        }

    async def run(self) -> None:
        while True:
            records = await self.a_records()
            servers = {s.url for s in self.world.scalelite.servers()}
            for info in self.layer.instances():
                target = self.layer.target_lifecycle_state(info.instance_id) or ""
                if not target.startswith("Warmed:"):
                    continue
                iid = info.instance_id
                if any(iid in url for url in servers):
                    self.violations.append(f"{iid} in Scalelite while {target}")
                if f"{iid}.{self.world.ids.domain}" in records:
                    self.violations.append(f"{iid} has an A record while {target}")
            self.samples += 1
            await asyncio.sleep(0.1)


def _warm_ids(layer: LifecycleLayer) -> list[str]:
    return [i.instance_id for i in layer.instances() if i.lifecycle_state.startswith("Warmed:")]


def _state(layer: LifecycleLayer, instance_id: str) -> str | None:
    return next(
        (i.lifecycle_state for i in layer.instances() if i.instance_id == instance_id), None
    )


@pytest.mark.parametrize("spec", [WARM])
async def test_a_warmed_host_enters_service_with_a_new_address(
    world: World, lifecycle_layer: LifecycleLayer, fake_clock: FakeClock, aws_session: Any
) -> None:
    async with aws_session.client("route53") as route53:
        watch = Watch(world, lifecycle_layer, route53)
        watcher = asyncio.create_task(watch.run())
        try:
            await _scenario(world, lifecycle_layer, fake_clock, watch)
        finally:
            watcher.cancel()
    assert watch.samples > 10
    assert watch.violations == []


async def _phase(node: Instance, wanted: str) -> bool:
    status, text = await http_text(node.node.metrics_url.replace("/metrics", "/status"))
    return status == 200 and json.loads(text).get("launch_phase") == wanted


async def _scenario(world: World, layer: LifecycleLayer, clock: FakeClock, watch: Watch) -> None:
    # --- into the pool: warmed up, the hook completed, AWS stopped it ------------------
    await until(lambda: len(_warm_ids(layer)) == 1, "a pool instance launched", world.tmp)
    (warm,) = _warm_ids(layer)
    logs = world.tmp / "fleet" / warm / "bbbnode.log"
    await until(lambda: _state(layer, warm) == "Warmed:Stopped", "warmed up and stopped", logs)
    await until(lambda: warm not in world.fleet.instances, "its host stopped", logs)
    before = next(i.public_ip for i in layer.instances() if i.instance_id == warm)
    assert before is not None
    await until(lambda: len(world.enabled()) == 1, "the first node serving", logs)

    # --- a scale-out starts it: a new address; the hook holds it (Pending) --------------
    layer.launching_pause = 30.0
    await world.autoscaling.set_desired_capacity(
        AutoScalingGroupName=world.ids.asg_name, DesiredCapacity=2
    )
    await until(lambda: warm in world.fleet.instances, "started from the pool", logs)
    started = world.fleet.instances[warm]
    after = next(i.public_ip for i in layer.instances() if i.instance_id == warm)
    assert after is not None
    assert after != before
    await until(lambda: _phase(started, "joined"), "joined, waiting for the hook", logs)
    assert _state(layer, warm) == "Pending"
    # The A record is there, for the new address; Scalelite is not, until the hook.
    assert (await watch.a_records())[f"{warm}.{world.ids.domain}"] == after
    assert not any(warm in url for url in world.enabled())
    # bbbnode restarts on the way in: it joins again, harmlessly.
    await world.fleet.restart_node(warm)
    await until(lambda: _phase(started, "joined"), "joined again after the restart", logs)

    # The pool refills by itself meanwhile: a new instance warms up, held in Warmed:Pending.
    await until(lambda: len(_warm_ids(layer)) == 1, "the pool refilling", logs)
    (fresh,) = _warm_ids(layer)
    await until(lambda: fresh in world.fleet.instances, "the new pool host up", logs)
    refill = world.fleet.instances[fresh]
    await until(lambda: _phase(refill, "warmed"), "warmed up, waiting for its hook", logs)
    assert _state(layer, fresh) == "Warmed:Pending"
    # ... and its bbbnode restarts while it waits: it warms up again.
    await world.fleet.restart_node(fresh)
    await until(lambda: _phase(refill, "warmed"), "warmed up again after the restart", logs)

    # --- the hooks' actions exist now: both complete -------------------------------------
    clock.advance(30)
    await until(lambda: any(warm in url for url in world.enabled()), "registered", logs)
    assert _state(layer, warm) == "InService"
    await until(lambda: _state(layer, fresh) == "Warmed:Stopped", "the new one stopped", logs)
    # The host configuration follows the new address (bbb-webrtc-sfu's announcedIp; every
    # other file: tests/test_image_tree.py).
    sfu = (started.root / "hostroot/etc/bigbluebutton/bbb-webrtc-sfu/production.yml").read_text()
    assert after in sfu
    assert before not in sfu

    # --- it takes meetings: Scalelite places the next one there --------------------------
    first = next(i for i in world.fleet.instances.values() if i.instance_id not in (warm, fresh))
    first.host.bbb.add_meeting("busy", 40, voice=10)
    await world.scalelite.poll()
    chosen = place_meeting(world.scalelite.snapshot())
    assert chosen is not None
    assert warm in world.scalelite.server(chosen).url


@pytest.mark.parametrize("spec", [WARM])
async def test_a_scale_out_is_served_from_the_pool(
    world: World, lifecycle_layer: LifecycleLayer, fake_clock: FakeClock
) -> None:
    logs = world.tmp / "bbbscaler.log"
    await until(lambda: len(world.enabled()) == 1, "the first node registered", logs)
    await until(
        lambda: any(i.lifecycle_state == "Warmed:Stopped" for i in lifecycle_layer.instances()),
        "the pool warmed up",
        logs,
    )
    (warm,) = _warm_ids(lifecycle_layer)
    # The layer reports Warmed:Stopped before the fleet has stopped that host's emulation.
    first = next(i for i in world.fleet.instances.values() if i.instance_id != warm)
    port = free_port()
    env = world.scaler_env(BBBSCALER_HTTP__LISTEN=f"127.0.0.1:{port}")
    async with scaler(env, logs) as proc:
        first.host.bbb.add_meeting("lecture", 260, voice=40, cameras=6, listeners=200)
        await until(
            lambda: any(warm in url for url in world.enabled()), "the pool host serves", logs
        )
        status, text = await http_text(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "bbbscaler_warm_pool_instances" in text
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    started = [e.instance_id for e in lifecycle_layer.events() if e.kind == "started"]
    assert started[0] == warm
    text = await asyncio.to_thread(logs.read_text)
    decided = [json.loads(line) for line in text.splitlines() if '"decided"' in line]
    assert any(d.get("action") == "scale_out" for d in decided)
