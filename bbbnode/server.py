"""bbbnode's HTTP side: /metrics, /healthz, /readyz, /status (aiohttp)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bbbnode import status
from bbbnode.exposition import NodeMetrics
from bbbnode.snapshot import Snapshot


def build_app(
    metrics: NodeMetrics,
    snapshot: Callable[[], Snapshot | None],
    clock: Callable[[], float],
    alive: Callable[[], bool],
    stale_after: float,
    status_extra: Callable[[], dict[str, Any]] = dict,
) -> web.Application:
    """The aiohttp application; every handler reads state, none does I/O to BBB."""

    async def handle_metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(_: web.Request) -> web.Response:
        if alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="collector stalled\n")

    async def handle_readyz(_: web.Request) -> web.Response:
        snap = snapshot()
        age = None if snap is None else snap.age(clock())
        if age is not None and age <= stale_after:
            return web.Response(text="ready\n")
        reason = "no successful collection yet" if age is None else f"data is {age:.0f}s old"
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def handle_status(_: web.Request) -> web.Response:
        return web.json_response(status.render(snapshot(), clock(), status_extra()))

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/status", handle_status)
    return app


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets allowed) to a (host, port) pair."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104
