"""The HTTP handlers every bbbfleet daemon serves the same way: /metrics and /healthz."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

Handler = Callable[[web.Request], Awaitable[web.Response]]


def metrics_handler(render: Callable[[], bytes]) -> Handler:
    """GET /metrics: the registry's text exposition, rendered from state (no I/O)."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


def health_handler(alive: Callable[[], bool], failing: str) -> Handler:
    """GET /healthz: 200 ``ok`` while ``alive()``, else 503 with ``failing`` as the reason."""

    async def handle(_: web.Request) -> web.Response:
        if alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"{failing}\n")

    return handle


def is_loopback(host: str | None) -> bool:
    """``host`` (an address, or ``localhost``) is this machine."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
