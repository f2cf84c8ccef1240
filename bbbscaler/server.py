"""bbbscaler's HTTP side: /metrics, /healthz and /status (aiohttp)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from bbbcore.httpd import health_handler, metrics_handler
from bbbscaler.exposition import ScalerMetrics


def build_app(
    metrics: ScalerMetrics,
    alive: Callable[[], bool],
    status: Callable[[], dict[str, Any] | None],
) -> web.Application:
    """The aiohttp application; handlers only read what the loop left behind."""

    async def handle_status(_: web.Request) -> web.Response:
        last = status()
        if last is None:
            return web.json_response({"error": "no round finished yet"}, status=503)
        return web.json_response(last)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics.render))
    app.router.add_get("/healthz", health_handler(alive, "control loop stalled"))
    app.router.add_get("/status", handle_status)
    return app
