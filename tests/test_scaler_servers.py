"""bbbscaler's instance → Scalelite server mapping, against the Scalelite emulator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bbbcore.scalelite import (
    RetryPolicy,
    ScaleliteClient,
    ScaleliteServer,
    ScaleliteTransientError,
)
from bbbscaler.actuate import Actuator
from bbbscaler.model import Action, Decision, FleetSnapshot, Group, Node, ServerView
from bbbscaler.policy import PolicyConfig
from bbbscaler.servers import ScaleliteServers, server_url, view_of
from bbbsim.scalelite_emulator import ScaleliteEmulator, serve
from tests.scaler_nodes import BbbHosts, bbb_hosts

pytestmark = pytest.mark.integration

LB_SECRET = "scaler-servers-test-lb-secret-0123456789"
BBB_SECRET = "scaler-servers-test-bbb-secret-0123456789"


def _node(instance_id: str, ip: str | None = "10.0.0.7") -> Node:
    return Node(instance_id=instance_id, lifecycle="InService", private_ip=ip)


@pytest.fixture
async def scalelite() -> AsyncIterator[tuple[ScaleliteEmulator, ScaleliteClient]]:
    emulator = ScaleliteEmulator(LB_SECRET)
    runner, port = await serve(emulator)
    try:
        async with aiohttp.ClientSession() as http:
            yield (
                emulator,
                ScaleliteClient(
                    http, f"http://127.0.0.1:{port}", LB_SECRET, retry=RetryPolicy(attempts=1)
                ),
            )
    finally:
        await emulator.close()
        await runner.cleanup()


@pytest.fixture
async def hosts() -> AsyncIterator[BbbHosts]:
    async with bbb_hosts(["i-a", "i-b", "i-c"], BBB_SECRET) as h:
        yield h


def test_server_url_template() -> None:
    template = "https://{instance_id}.{domain}/bigbluebutton/api/"
    assert server_url(template, _node("i-1"), "bbb.example.test") == (
        "https://i-1.bbb.example.test/bigbluebutton/api/"
    )
    ip_template = "https://{private_ip}/bigbluebutton/api/"
    assert server_url(ip_template, _node("i-1", None), "") is None


def test_view_of() -> None:
    assert view_of(None) == ServerView(id="", state="absent", load=None, online=False)
    server = ScaleliteServer("s1", "https://x/", "cordoned", online=True, load=0.0)
    assert view_of(server) == ServerView(id="s1", state="cordoned", load=0.0, online=True)
    steered = ScaleliteServer("s2", "https://y/", "enabled", True, 3.0, load_multiplier=100.0)
    assert view_of(steered).load_multiplier == 100.0
    tagged = ScaleliteServer("s3", "https://z/", "enabled", False, None, tag="exam")
    assert (view_of(tagged).tag, view_of(tagged).online) == ("exam", False)


async def test_instances_map_to_their_servers(
    scalelite: tuple[ScaleliteEmulator, ScaleliteClient], hosts: BbbHosts
) -> None:
    emulator, client = scalelite
    hosts.hosts["i-a"].add_meeting("lecture", 5)
    ids = {
        # Spelled as an operator might have typed it: still the same server.
        "i-a": emulator.add_server(
            hosts.url("i-a").replace("http://127.0.0.1", "HTTP://127.0.0.1").rstrip("/"),
            BBB_SECRET,
            state="enabled",
        ),
        "i-b": emulator.add_server(hosts.url("i-b"), BBB_SECRET, state="cordoned"),
        # Registered, but its BBB is not served: Scalelite sees it offline.
        "i-z": emulator.add_server(hosts.url("i-z"), BBB_SECRET, state="enabled"),
    }
    # A server no instance maps to; on loopback, since the poller below calls every server.
    emulator.add_server(hosts.url("elsewhere"), BBB_SECRET)
    await emulator.poll()
    servers = ScaleliteServers(client, hosts.server_url_template)
    nodes = [_node(i) for i in ("i-a", "i-b", "i-c", "i-z")]
    views = await servers.read(nodes)
    a, b, c, z = (views[n.instance_id] for n in nodes)
    assert a is not None
    assert (a.id, a.state, a.online) == (ids["i-a"], "enabled", True)
    assert a.load is not None
    assert a.load > 0
    # Cordoned with nothing on it: Scalelite's poller turned it disabled.
    assert b == ServerView(id=ids["i-b"], state="disabled", load=None, online=True)
    assert c == view_of(None)
    assert z is not None
    assert (z.id, z.state, z.online, z.load) == (ids["i-z"], "enabled", False, None)

    hosts.hosts["i-a"].end_meeting("lecture")
    emulator.set_state(ids["i-a"], "cordoned")
    await emulator.poll()
    fresh = await servers.read_one(_node("i-a"))
    assert fresh == ServerView(id=ids["i-a"], state="disabled", load=None, online=True)


async def test_duplicate_urls_take_the_smallest_id(
    scalelite: tuple[ScaleliteEmulator, ScaleliteClient],
) -> None:
    emulator, client = scalelite
    url = "https://i-d.bbb.example.test/bigbluebutton/api/"
    first = emulator.add_server(url, BBB_SECRET, state="enabled")
    second = emulator.add_server(url, BBB_SECRET, state="cordoned")
    servers = ScaleliteServers(
        client, "https://{instance_id}.{domain}/bigbluebutton/api/", "bbb.example.test"
    )
    view = await servers.read_one(_node("i-d"))
    assert view is not None
    assert view.id == min(first, second)


class NoGroup:
    """A group port for a decision that only steers: any call is a test failure."""

    async def set_desired(self, desired: int) -> None:
        raise AssertionError("set_desired")

    async def terminate(self, instance_id: str) -> None:
        raise AssertionError("terminate")

    async def mark_draining(self, instance_id: str, since: float) -> None:
        raise AssertionError("mark_draining")

    async def unmark_draining(self, instance_id: str) -> None:
        raise AssertionError("unmark_draining")


async def test_steer_sets_the_load_multiplier_in_scalelite(
    scalelite: tuple[ScaleliteEmulator, ScaleliteClient],
) -> None:
    emulator, client = scalelite
    template = "https://{instance_id}.{domain}/bigbluebutton/api/"
    servers = ScaleliteServers(client, template, "bbb.example.test")
    nodes = [_node("i-a"), _node("i-b"), _node("i-c")]
    ids = {
        "i-a": emulator.add_server(servers.url_of(nodes[0]) or "", BBB_SECRET, state="enabled"),
        "i-b": emulator.add_server(
            servers.url_of(nodes[1]) or "", BBB_SECRET, state="enabled", load_multiplier=100.0
        ),
    }
    views = await servers.read(nodes)
    assert {iid: v.load_multiplier for iid, v in views.items() if v} == {
        "i-a": 1.0,
        "i-b": 100.0,
        "i-c": 1.0,
    }
    snap = FleetSnapshot(
        0.0,
        Group("bbb", 3, 0, 3, frozenset({"AZRebalance"})),
        tuple(dataclasses.replace(n, server=views[n.instance_id]) for n in nodes),
    )

    async def unchanged(node: Node) -> Node:
        return node

    actuator = Actuator(NoGroup(), client, unchanged, PolicyConfig())
    decision = Decision(Action.NONE, "t", steer=(("i-a", 50.0), ("i-b", 1.0), ("i-c", 50.0)))
    out = await actuator.apply(decision, snap)

    assert [(o.target, o.result) for o in out] == [
        ("i-a", "ok"),
        ("i-b", "ok"),
        ("i-c", "skipped"),  # not registered: nothing to steer
    ]
    listed = {s.id: s.load_multiplier for s in await client.get_servers()}
    assert listed == {ids["i-a"]: 50.0, ids["i-b"]: 1.0}
    fresh = await servers.read(nodes)
    assert {iid: v.load_multiplier for iid, v in fresh.items() if v and v.id} == {
        "i-a": 50.0,
        "i-b": 1.0,
    }


async def test_unmappable_node_is_unknown_not_absent(
    scalelite: tuple[ScaleliteEmulator, ScaleliteClient],
) -> None:
    _, client = scalelite
    servers = ScaleliteServers(client, "https://{private_ip}/bigbluebutton/api/")
    views = await servers.read([_node("i-p", None), _node("i-q", "10.0.0.8")])
    assert views == {"i-p": None, "i-q": view_of(None)}


async def test_outage_raises(scalelite: tuple[ScaleliteEmulator, ScaleliteClient]) -> None:
    emulator, client = scalelite
    emulator.inject_outage("http_503")
    servers = ScaleliteServers(client, "https://{instance_id}.x/")
    with pytest.raises(ScaleliteTransientError):
        await servers.read([_node("i-a")])
