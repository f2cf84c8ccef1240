"""Emulated fleet endpoints on loopback ports, for bbbscaler's observe tests.

``NodeRouter`` serves ``/metrics/{instance_id}`` for any number of fake nodes,
each answering real bbbnode exposition text (bbbnode.exposition over a
Snapshot), garbage, an HTTP error, or never (a hang released at shutdown).
``bbb_hosts`` serves one BBB API emulator per instance under
``/{instance_id}/bigbluebutton/api/``, for Scalelite's poller to read.
The scaler reaches both through URL templates keyed by instance id, never
through moto's private addresses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from bbbcore import aws
from bbbnode.exposition import NodeMetrics
from bbbnode.snapshot import summarize
from bbbsim.bbb_emulator import EmulatedBbb
from bbbsim.moto_server import DEFAULT_REGION
from bbbsim.node_process import free_port
from tests.snapshots import make_snapshot

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

NOW = 1_767_225_600.0


@asynccontextmanager
async def asg_clients() -> AsyncIterator[tuple[AutoScalingClient, EC2Client]]:
    """Auto Scaling and EC2 clients at AWS_ENDPOINT_URL with one botocore attempt per call,
    so that what retries is the code under test."""
    config = aws.client_config(max_attempts=1)
    session = aws.session(DEFAULT_REGION)
    async with (
        session.client("autoscaling", config=config) as autoscaling,
        session.client("ec2", config=config) as ec2,
    ):
        yield autoscaling, ec2


def exposition(
    *,
    cpu: float | None = 0.25,
    meetings: int | None = 0,
    age: float = 1.0,
    now: float = NOW,
) -> bytes:
    """What bbbnode serves for a host with ``meetings`` meetings of 2 participants each.

    ``meetings`` None: BBB could not be read (the meeting gauges are omitted);
    ``cpu`` None: the CPU is not known yet (its gauge is omitted).
    """
    base = make_snapshot(meetings, None, now, now - age)
    totals = None if base.meetings is None else summarize(base.meetings)
    snap = replace(base, cpu_ratio=cpu, totals=totals)
    registry = NodeMetrics(lambda: snap, lambda: now)
    registry.set_identity("i-rendered")
    return registry.render()


Behaviour = bytes | Literal["hang", "garbage", "http500", "huge"]


@dataclass
class NodeRouter:
    """Fake nodes by instance id; unknown ids answer 404."""

    port: int = 0
    runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.nodes: dict[str, Behaviour] = {}
        self.hits: dict[str, int] = {}
        self._release = asyncio.Event()
        self._by_port: dict[int, str] = {}

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics/{{instance_id}}"

    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def expose(self, instance_id: str) -> str:
        """Also serve the node as ``/metrics`` on a port of its own (a Prometheus target)."""
        if self.runner is None:
            raise RuntimeError("router not started")
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self._by_port[port] = instance_id
        return f"127.0.0.1:{port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "instance_id" in request.match_info:
            instance_id = request.match_info["instance_id"]
        else:
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            instance_id = self._by_port.get(int(sockname[1]) if sockname else 0, "")
        self.hits[instance_id] = self.hits.get(instance_id, 0) + 1
        behaviour = self.nodes.get(instance_id)
        if behaviour is None:
            return web.Response(status=404)
        if behaviour == "hang":
            await self._release.wait()
            return web.Response(status=503)
        if behaviour == "http500":
            return web.Response(status=500, text="boom")
        if behaviour == "garbage":
            return web.Response(body=b"\x00\xff<html>not metrics{{{\nbbb_meetings{ 12 oops\n")
        if behaviour == "huge":
            return web.Response(body=b"# " + b"x" * (2 * 1024 * 1024) + b"\n")
        return web.Response(body=behaviour, content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics/{instance_id}", self._handle)
        app.router.add_get("/metrics", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        self._release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@asynccontextmanager
async def node_router() -> AsyncIterator[NodeRouter]:
    router = NodeRouter()
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


@dataclass(frozen=True, slots=True)
class BbbHosts:
    """BBB API emulators by instance id, all on one port."""

    port: int
    hosts: dict[str, EmulatedBbb]

    @property
    def server_url_template(self) -> str:
        """A ``scalelite.server_url_template`` that reaches these hosts."""
        return f"http://127.0.0.1:{self.port}/{{instance_id}}/bigbluebutton/api/"

    def url(self, instance_id: str) -> str:
        return self.server_url_template.format(instance_id=instance_id)


@asynccontextmanager
async def bbb_hosts(instance_ids: list[str], secret: str) -> AsyncIterator[BbbHosts]:
    """One EmulatedBbb per instance id, served under ``/{instance_id}``."""
    root = web.Application()
    hosts = {i: EmulatedBbb(secret) for i in instance_ids}
    for instance_id, bbb in hosts.items():
        root.add_subapp(f"/{instance_id}", bbb.app())
    runner = web.AppRunner(root, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield BbbHosts(int(runner.addresses[0][1]), hosts)
    finally:
        await runner.cleanup()
