"""bbbscaler's HTTP side: /metrics, /healthz and /status (aiohttp)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bbbscaler.exposition import ScalerMetrics


def build_app(
    metrics: ScalerMetrics,
    alive: Callable[[], bool],
    status: Callable[[], dict[str, Any] | None],
) -> web.Application:
    """The aiohttp application; handlers only read what the loop left behind."""

    async def handle_metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(_: web.Request) -> web.Response:
        if alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="control loop stalled\n")

    async def handle_status(_: web.Request) -> web.Response:
        last = status()
        if last is None:
            return web.json_response({"error": "no round finished yet"}, status=503)
        return web.json_response(last)

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/status", handle_status)
    return app
