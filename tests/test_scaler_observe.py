"""bbbscaler's Observer end to end on loopback: moto behind the lifecycle layer, emulated
nodes' metrics, the Scalelite emulator polling emulated BBB hosts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import pytest
import pytest_asyncio
from botocore.exceptions import ClientError
from pydantic import SecretStr

from bbbcore.scalelite import RetryPolicy, ScaleliteClient
from bbbscaler.asg import AsgAdapter, GroupNotFound
from bbbscaler.model import ServerView
from bbbscaler.observe import SOURCES, Observer, build_observer
from bbbscaler.promapi import PrometheusSource
from bbbscaler.scrape import Scraper
from bbbscaler.servers import ScaleliteServers
from bbbscaler.settings import AwsSettings, MetricsSettings, ScaleliteSettings, ScalerSettings
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import DEFAULT_REGION, FleetIds, FleetSpec
from bbbsim.node_process import free_port
from bbbsim.scalelite_emulator import ScaleliteEmulator
from bbbsim.scalelite_emulator import serve as serve_scalelite
from tests.aws_fixtures import FakeClock
from tests.scaler_nodes import BbbHosts, NodeRouter, asg_clients, bbb_hosts, exposition, node_router

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

pytestmark = pytest.mark.integration

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]
LB_SECRET = "scaler-observe-lb-secret-0123456789"
BBB_SECRET = "scaler-observe-bbb-secret-0123456789"


async def _no_sleep(_: float) -> None:
    return None


@dataclass
class World:
    """A fleet of three with metrics and Scalelite for each instance."""

    ids: tuple[str, ...]
    router: NodeRouter
    hosts: BbbHosts
    scalelite: ScaleliteEmulator
    scalelite_url: str
    server_ids: dict[str, str]
    asg: AsgAdapter
    http: aiohttp.ClientSession
    layer: LifecycleLayer
    clients: tuple[AutoScalingClient, EC2Client]

    def new_asg(self) -> AsgAdapter:
        # A short give-up: a permanent outage costs a test a fraction of a second.
        return AsgAdapter(*self.clients, "bbb-fleet", give_up_after=0.3, sleep=_no_sleep)

    def observer(
        self,
        *,
        clock: FakeClock,
        errors: list[str],
        metrics_url: str | None = None,
        asg: AsgAdapter | None = None,
    ) -> Observer:
        metrics = (
            Scraper(self.http, self.router.url_template, timeout=0.5, clock=clock)
            if metrics_url is None
            else PrometheusSource(self.http, metrics_url, timeout=1.0, clock=clock)
        )
        client = ScaleliteClient(
            self.http, self.scalelite_url, LB_SECRET, retry=RetryPolicy(attempts=1)
        )
        servers = ScaleliteServers(client, self.hosts.server_url_template)
        return Observer(asg or self.asg, metrics, servers, clock=clock, on_error=errors.append)


@pytest_asyncio.fixture
async def clients(aws_endpoint: str) -> AsyncIterator[tuple[AutoScalingClient, EC2Client]]:
    async with asg_clients() as pair:
        yield pair


@pytest_asyncio.fixture
async def world(
    make_fleet: MakeFleet,
    lifecycle_layer: LifecycleLayer,
    clients: tuple[AutoScalingClient, EC2Client],
) -> AsyncIterator[World]:
    await make_fleet(FleetSpec(min_size=1, max_size=4, desired=3))
    ids = tuple(sorted(i.instance_id for i in lifecycle_layer.instances()))
    emulator = ScaleliteEmulator(LB_SECRET)
    runner, port = await serve_scalelite(emulator)
    try:
        async with (
            node_router() as router,
            bbb_hosts(list(ids), BBB_SECRET) as hosts,
            aiohttp.ClientSession() as http,
        ):
            server_ids = {
                i: emulator.add_server(hosts.url(i), BBB_SECRET, state="enabled") for i in ids[:2]
            }
            hosts.hosts[ids[0]].add_meeting("lecture", 6)
            await emulator.poll()
            router.nodes[ids[0]] = exposition(cpu=0.6, meetings=1, age=1.0)
            router.nodes[ids[1]] = exposition(cpu=0.05, meetings=0, age=2.0)
            # ids[2]: booted, no bbbnode answering yet, not registered in Scalelite.
            world = World(
                ids, router, hosts, emulator, f"http://127.0.0.1:{port}", server_ids,
                AsgAdapter(*clients, "bbb-fleet"), http, lifecycle_layer, clients,
            )  # fmt: skip
            world.asg = world.new_asg()
            yield world
    finally:
        await emulator.close()
        await runner.cleanup()


async def test_one_round_sees_everything(world: World, fake_clock: FakeClock) -> None:
    errors: list[str] = []
    observer = world.observer(clock=fake_clock, errors=errors)
    snap = await observer.observe()
    a, b, c = world.ids
    assert snap.at == fake_clock.now
    assert (snap.group.desired, snap.group.min_size, snap.group.max_size) == (3, 1, 4)
    assert [n.instance_id for n in snap.nodes] == [a, b, c]
    assert snap.errors == ()
    assert snap.scalelite_ok
    assert errors == []
    na, nb, nc = snap.nodes
    assert all(n.lifecycle == "InService" and n.private_ip for n in snap.nodes)
    assert na.metrics is not None
    assert (na.metrics.cpu, na.metrics.meetings, na.metrics.participants) == (0.6, 1, 2)
    assert na.metrics.age == 1.0
    assert na.server is not None
    assert (na.server.id, na.server.state, na.server.online, na.server.load_multiplier) == (
        world.server_ids[a], "enabled", True, 1.0,
    )  # fmt: skip
    assert nb.metrics is not None
    assert nb.idle(stale_after=60)
    assert nc.metrics is None
    assert nc.server == ServerView(id="", state="absent", load=None, online=False)

    # A drain the scaler started shows as the tag's time.
    await world.asg.mark_draining(b, fake_clock.now - 30)
    snap = await observer.observe()
    assert snap.node(b) is not None
    assert snap.node(b).draining_since == fake_clock.now - 30  # type: ignore[union-attr]

    # recheck: the node's metrics and server as they are now, aged to the clock.
    world.router.nodes[b] = exposition(cpu=0.04, meetings=0, age=0.5)
    world.scalelite.set_state(world.server_ids[b], "cordoned")
    # A steer (updateServer load_multiplier) shows in the node's server view.
    steering = ScaleliteClient(world.http, world.scalelite_url, LB_SECRET)
    await steering.set_load_multiplier(world.server_ids[b], 100.0)
    await world.scalelite.poll()
    fake_clock.advance(3)
    node = await observer.recheck(snap.nodes[1])
    assert node.metrics is not None
    assert node.metrics.age == 0.5
    assert node.server is not None
    assert (node.server.state, node.server.load_multiplier) == ("disabled", 100.0)
    assert node.draining_since == snap.nodes[1].draining_since


async def test_failed_sources_are_recorded_and_unknown(world: World, fake_clock: FakeClock) -> None:
    errors: list[str] = []
    observer = world.observer(clock=fake_clock, errors=errors)
    a, b, _ = world.ids
    await world.asg.mark_draining(b, 100.0)
    await observer.observe()

    # EC2 fails: the last read still gives addresses and drain tags; the round says so.
    world.layer.inject_fault("http500", "DescribeInstances", count=None)
    snap = await observer.observe()
    assert snap.errors == ("ec2",)
    assert errors == ["ec2"]
    assert snap.node(b).draining_since == 100.0  # type: ignore[union-attr]
    assert snap.node(a).metrics is not None  # type: ignore[union-attr]
    # An observer that never read EC2 knows no drain tags: no node has metrics.
    fresh_errors: list[str] = []
    fresh = world.observer(clock=fake_clock, errors=fresh_errors, asg=world.new_asg())
    snap = await fresh.observe()
    assert all(n.metrics is None for n in snap.nodes)
    assert fresh_errors == ["ec2"]
    world.layer.clear_faults()

    # Scalelite down: every server unknown, scalelite_ok False.
    errors.clear()
    world.scalelite.inject_outage("http_503")
    snap = await observer.observe()
    assert snap.errors == ("scalelite",)
    assert not snap.scalelite_ok
    assert all(n.server is None for n in snap.nodes)
    assert snap.node(a).metrics is not None  # type: ignore[union-attr]
    assert (await observer.recheck(snap.nodes[0])).server is None
    world.scalelite.clear_faults()

    # The metrics source down (a Prometheus nobody runs): metrics unknown everywhere.
    errors.clear()
    dead = world.observer(
        clock=fake_clock, errors=errors, metrics_url=f"http://127.0.0.1:{free_port()}"
    )
    snap = await dead.observe()
    assert snap.errors == ("metrics",)
    assert all(n.metrics is None for n in snap.nodes)
    assert all(n.server is not None for n in snap.nodes)
    assert (await dead.recheck(snap.nodes[0])).metrics is None
    assert errors == ["metrics", "metrics"]

    # The ASG down: no snapshot at all.
    errors.clear()
    world.layer.inject_fault("http500", "DescribeAutoScalingGroups", count=None)
    with pytest.raises(ClientError):
        await observer.observe()
    assert errors == ["asg"]
    assert set(SOURCES) == {"asg", "ec2", "metrics", "scalelite"}


async def test_an_unresolved_launch_template_pauses_rollouts_only(
    world: World, fake_clock: FakeClock
) -> None:
    errors: list[str] = []
    observer = world.observer(clock=fake_clock, errors=errors)
    snap = await observer.observe()
    # The fixture's group launches $Latest of its template: resolved, every node current.
    assert snap.group.launch is not None
    assert all(n.launch == snap.group.launch for n in snap.nodes)
    world.layer.inject_fault("http500", "DescribeLaunchTemplates", count=None)
    snap = await observer.observe()
    # Counted, yet not a failed source of the round: scale-in is not held for it.
    assert errors == ["launch_templates"]
    assert snap.errors == ()
    assert snap.group.launch is None
    assert all(n.launch is not None for n in snap.nodes)  # EC2's tags still say


async def test_missing_group_raises(
    aws_endpoint: str, clients: tuple[AutoScalingClient, EC2Client], fake_clock: FakeClock
) -> None:
    autoscaling, ec2 = clients
    errors: list[str] = []
    async with aiohttp.ClientSession() as http:
        client = ScaleliteClient(http, "http://127.0.0.1:1", LB_SECRET)
        observer = Observer(
            AsgAdapter(autoscaling, ec2, "no-such-group"),
            Scraper(http, "http://127.0.0.1:1/{instance_id}"),
            ScaleliteServers(client, "https://{instance_id}.x/"),
            clock=fake_clock,
            on_error=errors.append,
        )
        with pytest.raises(GroupNotFound):
            await observer.observe()
    assert errors == ["asg"]


async def test_build_observer_from_settings(world: World, fake_clock: FakeClock) -> None:
    settings = ScalerSettings(
        aws=AwsSettings(asg_name="bbb-fleet", region=DEFAULT_REGION, timeout=5),
        metrics=MetricsSettings(url_template=world.router.url_template, timeout=1),
        scalelite=ScaleliteSettings(
            url=world.scalelite_url,
            secret=SecretStr(LB_SECRET),
            server_url_template=world.hosts.server_url_template,
        ),
    )
    errors: list[str] = []
    async with build_observer(settings, clock=fake_clock, on_error=errors.append) as kit:
        snap = await kit.observer.observe()
        assert len(snap.nodes) == 3
        assert snap.errors == ()
        assert sum(n.metrics is not None for n in snap.nodes) == 2
        assert sum(n.server is not None and n.server.state == "enabled" for n in snap.nodes) == 2
        # The kit's clients are the actuator's too.
        await kit.asg.set_desired(4)
        assert (await kit.observer.observe()).group.desired == 4
        servers = await kit.scalelite.get_servers()
        assert len(servers) == 2
    assert kit.http.closed
    assert errors == []
