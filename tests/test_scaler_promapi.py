"""bbbscaler's ``prometheus`` source: a real Prometheus, and a scripted API for edge cases."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bbbscaler.model import Node
from bbbscaler.promapi import PrometheusError, PrometheusSource
from bbbscaler.readings import Reading
from bbbsim.node_process import free_port
from tests.processes import prometheus, prometheus_available, wait_for
from tests.scaler_nodes import exposition, node_router

pytestmark = pytest.mark.integration


def _node(instance_id: str) -> Node:
    return Node(instance_id=instance_id, lifecycle="InService", private_ip="10.0.0.1")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.skipif(not prometheus_available(), reason="Debian prometheus not installed")
async def test_real_prometheus(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with node_router() as router:
        router.nodes.update(
            {
                "i-good": exposition(cpu=0.5, meetings=2, age=1.0),
                "i-blind": exposition(cpu=0.3, meetings=None, age=50.0),
                "i-nocpu": exposition(cpu=None, meetings=1),
                "i-gone": exposition(cpu=0.1, meetings=0),
            }
        )
        labels = {await router.expose(i): i for i in router.nodes}
        async with prometheus(tmp_path, list(labels), labels) as prom:
            source = PrometheusSource(http, prom.base, timeout=5.0)
            nodes = [_node(i) for i in [*router.nodes, "i-never"]]

            async def all_scraped() -> Mapping[str, Reading] | None:
                readings = await source.read(nodes)
                return readings if {"i-good", "i-blind", "i-gone"} <= set(readings) else None

            readings = await wait_for(all_scraped, within=60, what="Prometheus to scrape nodes")
            assert isinstance(readings, dict)
            assert set(readings) == {"i-good", "i-blind", "i-gone"}
            good = readings["i-good"]
            assert (good.cpu, good.meetings, good.participants) == (0.5, 2, 4)
            # Its snapshot age plus however long ago Prometheus scraped it (1 s interval).
            assert 1.0 <= good.metrics(good.read_at).age < 1.0 + 5.0
            blind = readings["i-blind"]
            assert (blind.cpu, blind.meetings, blind.participants) == (0.3, None, None)
            assert blind.snapshot_age == 50.0

            one = await source.read_one(_node("i-good"))
            assert one is not None
            assert one.meetings == 2
            assert await source.read_one(_node("i-nocpu")) is None
            assert await source.read_one(_node('i-"odd\\')) is None

            # A node that stops answering drops out by Prometheus' staleness markers; one
            # that can no longer read BBB loses its meeting gauges the same way.
            router.nodes["i-gone"] = "http500"
            router.nodes["i-good"] = exposition(cpu=0.5, meetings=None, age=9.0)

            async def changed() -> bool:
                now = await source.read(nodes)
                good_now = now.get("i-good")
                return "i-gone" not in now and good_now is not None and good_now.meetings is None

            await wait_for(changed, within=30, what="staleness to drop the series")


class ScriptedPrometheus:
    """Answers /api/v1/query from a script: one answer for timestamp(), one for values."""

    def __init__(self) -> None:
        self.values: Any = {"status": "success", "data": {"resultType": "vector", "result": []}}
        self.times: Any = {"status": "success", "data": {"resultType": "vector", "result": []}}
        self.status = 200
        self.queries: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        query = str(form["query"])
        self.queries.append(query)
        doc = self.times if query.startswith("timestamp(") else self.values
        if isinstance(doc, bytes):
            return web.Response(body=doc, status=self.status)
        return web.json_response(doc, status=self.status)


def _vector(items: list[tuple[dict[str, str], float, str]]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [t, v]} for m, t, v in items],
        },
    }


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedPrometheus, str]]:
    script = ScriptedPrometheus()
    app = web.Application()
    app.router.add_post("/api/v1/query", script.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield script, f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_ages_come_from_prometheus_clock(
    scripted: tuple[ScriptedPrometheus, str], http: aiohttp.ClientSession
) -> None:
    script, base = scripted
    # Prometheus' clock is far from ours: only the difference (eval - scrape) counts.
    script.values = _vector(
        [
            ({"__name__": "bbbnode_cpu_utilization_ratio", "host": "i-1"}, 1000.0, "0.4"),
            ({"__name__": "bbb_meetings", "host": "i-1"}, 1000.0, "3"),
            ({"__name__": "bbb_meetings_participants", "host": "i-1"}, 1000.0, "12"),
            ({"__name__": "bbbnode_snapshot_age_seconds", "host": "i-1"}, 1000.0, "2"),
            # Two jobs scrape i-2: the busier and older values count.
            ({"__name__": "bbbnode_cpu_utilization_ratio", "host": "i-2"}, 1000.0, "0.1"),
            ({"__name__": "bbbnode_cpu_utilization_ratio", "host": "i-2"}, 1000.0, "0.2"),
            ({"__name__": "bbb_meetings", "host": "i-2"}, 1000.0, "0"),
            ({"__name__": "bbb_meetings", "host": "i-2"}, 1000.0, "1"),
            ({"__name__": "bbbnode_snapshot_age_seconds", "host": "i-2"}, 1000.0, "+Inf"),
            # Not ours: no instance label, or an instance not in the group.
            ({"__name__": "bbb_meetings"}, 1000.0, "5"),
            ({"__name__": "bbbnode_cpu_utilization_ratio", "host": "i-9"}, 1000.0, "0.3"),
            ({"__name__": "bbbnode_snapshot_age_seconds", "host": "i-9"}, 1000.0, "1"),
        ]
    )
    script.times = _vector(
        [
            ({"host": "i-1"}, 1000.0, "990"),
            ({"host": "i-2"}, 1000.0, "999"),
            ({"host": "i-2"}, 1000.0, "995"),
            ({"host": "i-9"}, 1000.0, "999"),
        ]
    )
    source = PrometheusSource(http, base, instance_label="host", clock=lambda: 5000.0)
    readings = await source.read([_node("i-1"), _node("i-2")])
    assert set(readings) == {"i-1", "i-2"}
    one = readings["i-1"].metrics(5000.0)
    assert (one.cpu, one.meetings, one.participants, one.age) == (0.4, 3, 12, 12.0)
    two = readings["i-2"]
    assert (two.cpu, two.meetings, two.participants) == (0.2, 1, None)
    assert two.read_at == 4995.0
    assert math.isinf(two.metrics(5000.0).age)
    assert all('host!=""' in q for q in script.queries)

    await source.read_one(_node('i-"1'))
    assert 'host="i-\\"1"' in script.queries[-1]


async def test_a_node_without_scrape_time_has_no_data(
    scripted: tuple[ScriptedPrometheus, str], http: aiohttp.ClientSession
) -> None:
    script, base = scripted
    script.values = _vector(
        [
            ({"__name__": "bbbnode_cpu_utilization_ratio", "instance_id": "i-1"}, 1.0, "0.4"),
            ({"__name__": "bbbnode_snapshot_age_seconds", "instance_id": "i-1"}, 1.0, "1"),
        ]
    )
    source = PrometheusSource(http, base)
    assert await source.read([_node("i-1")]) == {}


@pytest.mark.parametrize(
    ("status", "answer", "message"),
    [
        (400, {"status": "error", "error": "parse error"}, "parse error"),
        (200, b"<html>proxy</html>", "not JSON"),
        (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, "vector"),
        (200, {"status": "success", "data": {"resultType": "vector", "result": [1]}}, "malformed"),
        (200, _vector([({"instance_id": "i"}, 1.0, "x")]), "malformed"),
    ],
)
async def test_bad_answers_raise(
    scripted: tuple[ScriptedPrometheus, str],
    http: aiohttp.ClientSession,
    status: int,
    answer: Any,
    message: str,
) -> None:
    script, base = scripted
    script.status = status
    script.values = answer
    with pytest.raises(PrometheusError, match=message):
        await PrometheusSource(http, base).read([_node("i-1")])


async def test_unreachable_prometheus_raises(http: aiohttp.ClientSession) -> None:
    source = PrometheusSource(http, f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with pytest.raises(PrometheusError, match="query failed"):
        await source.read([_node("i-1")])


def test_label_name_is_checked() -> None:
    with pytest.raises(ValueError, match="label"):
        PrometheusSource(None, "http://127.0.0.1:1", instance_label="instance-id")  # type: ignore[arg-type]
