"""bbbscaler's direct scrape against emulated nodes serving real bbbnode exposition text."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bbbcore.node_metrics import parse_values, select_lines
from bbbscaler.model import Node
from bbbscaler.readings import Reading, reading_from
from bbbscaler.scrape import Scraper, metrics_url
from tests.scaler_nodes import NodeRouter, exposition, node_router

pytestmark = pytest.mark.integration


def _node(instance_id: str, ip: str | None = "10.0.0.1") -> Node:
    return Node(instance_id=instance_id, lifecycle="InService", private_ip=ip)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def router() -> AsyncIterator[NodeRouter]:
    async with node_router() as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_select_lines_keeps_exactly_the_four_metrics() -> None:
    text = exposition(cpu=0.4, meetings=2).decode()
    kept = select_lines(text)
    names = {line.split()[0] for line in kept.splitlines() if line and not line.startswith("#")}
    assert names == {
        "bbbnode_cpu_utilization_ratio",
        "bbb_meetings",
        "bbb_meetings_participants",
        "bbbnode_snapshot_age_seconds",
    }
    # Look-alike names (same prefix) are not taken.
    assert "bbb_meetings_participants_max" not in kept
    assert "# TYPE bbb_meetings gauge" in kept


def test_parse_values_of_real_exposition() -> None:
    values = parse_values(exposition(cpu=0.4, meetings=2, age=3.0).decode())
    assert values == {
        "bbbnode_cpu_utilization_ratio": 0.4,
        "bbb_meetings": 2.0,
        "bbb_meetings_participants": 4.0,
        "bbbnode_snapshot_age_seconds": 3.0,
    }


def test_parse_values_prefers_the_unlabelled_series() -> None:
    text = 'bbb_meetings{x="1"} 7\nbbb_meetings 2\nbbb_meetings{x="2"} 9\n'
    assert parse_values(text) == {"bbb_meetings": 2.0}


def test_parse_values_rejects_broken_lines_of_wanted_metrics() -> None:
    with pytest.raises(ValueError, match="convert"):
        parse_values("bbb_meetings{ 12 oops\n")


def test_reading_needs_cpu_and_age() -> None:
    assert reading_from({"bbb_meetings": 1.0, "bbbnode_snapshot_age_seconds": 1.0}, 0) is None
    assert reading_from({"bbbnode_cpu_utilization_ratio": 0.1}, 0) is None
    never = reading_from(
        {"bbbnode_cpu_utilization_ratio": 0.1, "bbbnode_snapshot_age_seconds": math.inf}, 5.0
    )
    assert never is not None
    assert never.metrics(10.0).age == math.inf
    assert never.meetings is None


def test_reading_ages_with_the_round() -> None:
    reading = Reading(cpu=0.5, meetings=1, participants=2, snapshot_age=4.0, read_at=100.0)
    assert reading.metrics(103.0).age == 7.0
    # A clock that went backwards never makes data younger than the node said.
    assert reading.metrics(99.0).age == 4.0


def test_metrics_url() -> None:
    node = _node("i-1", "10.1.2.3")
    assert metrics_url("http://{private_ip}:9688/metrics", node) == "http://10.1.2.3:9688/metrics"
    assert metrics_url("http://127.0.0.1:1/m/{instance_id}", _node("i-2", None)) == (
        "http://127.0.0.1:1/m/i-2"
    )
    assert metrics_url("http://{private_ip}:9688/metrics", _node("i-3", None)) is None


async def test_scrape_good_bad_and_partial_nodes(
    router: NodeRouter, http: aiohttp.ClientSession
) -> None:
    router.nodes.update(
        {
            "i-good": exposition(cpu=0.55, meetings=3, age=2.0),
            "i-idle": exposition(cpu=0.02, meetings=0, age=0.5),
            "i-blind": exposition(cpu=0.30, meetings=None, age=120.0),
            "i-nocpu": exposition(cpu=None, meetings=1),
            "i-hang": "hang",
            "i-garbage": "garbage",
            "i-500": "http500",
            "i-huge": "huge",
        }
    )
    clock = Clock(1000.0)
    scraper = Scraper(http, router.url_template, timeout=0.5, concurrency=3, clock=clock)
    nodes = [_node(i) for i in [*router.nodes, "i-unknown"]]
    readings = await scraper.read(nodes)
    assert set(readings) == {"i-good", "i-idle", "i-blind"}
    good = readings["i-good"].metrics(1000.0)
    assert (good.cpu, good.meetings, good.participants, good.age) == (0.55, 3, 6, 2.0)
    idle = readings["i-idle"].metrics(1002.0)
    assert (idle.meetings, idle.participants, idle.age) == (0, 0, 2.5)
    blind = readings["i-blind"].metrics(1000.0)
    assert (blind.cpu, blind.meetings, blind.participants) == (0.30, None, None)
    assert blind.age == 120.0
    assert router.hits["i-hang"] == 1


async def test_node_without_address_is_not_scraped(
    router: NodeRouter, http: aiohttp.ClientSession
) -> None:
    router.nodes["i-1"] = exposition()
    template = router.url_template.replace("{instance_id}", "{instance_id}?ip={private_ip}")
    scraper = Scraper(http, template)
    assert await scraper.read([_node("i-1", None)]) == {}
    assert "i-1" not in router.hits
    assert set(await scraper.read([_node("i-1", "10.0.0.9")])) == {"i-1"}


async def test_read_one_is_fresh(router: NodeRouter, http: aiohttp.ClientSession) -> None:
    router.nodes["i-1"] = exposition(meetings=1)
    scraper = Scraper(http, router.url_template, clock=Clock())
    first = await scraper.read_one(_node("i-1"))
    assert first is not None
    assert first.meetings == 1
    router.nodes["i-1"] = exposition(meetings=0)
    again = await scraper.read_one(_node("i-1"))
    assert again is not None
    assert again.meetings == 0
    router.nodes["i-1"] = "garbage"
    assert await scraper.read_one(_node("i-1")) is None


async def test_concurrency_bound_holds(router: NodeRouter) -> None:
    # Every node hangs: with 2 in flight at a time and a short timeout the scraper
    # works through them in waves, never with more than 2 requests open.
    for i in range(6):
        router.nodes[f"i-{i}"] = "hang"
    in_flight = 0
    peak = 0

    async def started(*_: object) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)

    async def ended(*_: object) -> None:
        nonlocal in_flight
        in_flight -= 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(started)
    trace.on_request_end.append(ended)
    trace.on_request_exception.append(ended)
    async with aiohttp.ClientSession(trace_configs=[trace]) as http:
        scraper = Scraper(http, router.url_template, timeout=0.1, concurrency=2)
        assert await scraper.read([_node(f"i-{i}") for i in range(6)]) == {}
    assert peak == 2
    assert sum(router.hits.values()) == 6
