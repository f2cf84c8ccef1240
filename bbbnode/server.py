"""bbbnode's HTTP side: /metrics, /healthz, /readyz, /status (aiohttp)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from bbbcore.httpd import health_handler, is_loopback, metrics_handler
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
    operations: Mapping[str, Callable[[], Awaitable[dict[str, Any]]]] | None = None,
) -> web.Application:
    """The aiohttp application; every handler reads state, none does I/O to BBB.

    ``operations`` become ``POST /<name>`` (drain, undrain), answered only to
    loopback clients: the metrics port is open to the VPC, draining is not.
    """

    async def handle_readyz(_: web.Request) -> web.Response:
        snap = snapshot()
        age = None if snap is None else snap.age(clock())
        if age is not None and age <= stale_after:
            return web.Response(text="ready\n")
        reason = "no successful collection yet" if age is None else f"data is {age:.0f}s old"
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def handle_status(_: web.Request) -> web.Response:
        return web.json_response(status.render(snapshot(), clock(), status_extra()))

    def operation(run: Callable[[], Awaitable[dict[str, Any]]]) -> Any:
        async def handle(request: web.Request) -> web.Response:
            if not is_loopback(request.remote):
                return web.json_response({"error": "only from the host itself"}, status=403)
            return web.json_response(await run())

        return handle

    app = web.Application()
    for name, run in (operations or {}).items():
        app.router.add_post(f"/{name}", operation(run))
    app.router.add_get("/metrics", metrics_handler(metrics.render))
    app.router.add_get("/healthz", health_handler(alive, "collector stalled"))
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/status", handle_status)
    return app
