"""One loopback address for the whole emulated fleet: ``/{instance_id}/{service}/...``.

moto gives instances private 10.x/172.31.x addresses that nothing here may
connect to, and every emulated host listens on its own loopback port. The
URL templates of bbbnode and bbbscaler only know ``{instance_id}``, so a host's
services are reached through this router:

- ``http://127.0.0.1:{port}/{instance_id}/bbb/bigbluebutton/api/...`` — its BBB API;
- ``http://127.0.0.1:{port}/{instance_id}/node/metrics`` — its bbbnode.

An instance that is not (or no longer) routed answers 502, as a host that is
gone would fail to answer.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
)


class Router:
    """Maps (instance id, service) to a loopback port and forwards requests there."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add(self, instance_id: str, service: str, port: int) -> None:
        self._routes[(instance_id, service)] = port

    def remove(self, instance_id: str) -> None:
        for key in [k for k in self._routes if k[0] == instance_id]:
            del self._routes[key]

    def url(self, template_part: str = "{instance_id}") -> str:
        """``http://127.0.0.1:{port}/{instance_id}`` (a template prefix for the fleet's URLs)."""
        return f"http://127.0.0.1:{self.port}/{template_part}"

    def instance_of(self, url: str) -> str | None:
        """The instance id a URL of this router leads to; None for any other URL."""
        prefix = f"http://127.0.0.1:{self.port}/"
        if not url.startswith(prefix):
            return None
        return url[len(prefix) :].split("/", 1)[0] or None

    async def start(self, port: int = 0) -> int:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application()
        app.router.add_route("*", "/{instance_id}/{service}/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["instance_id"], request.match_info["service"])
        port = self._routes.get(key)
        if port is None or self._session is None:
            return web.Response(status=502, text=f"no route to {key[0]} {key[1]}\n")
        target = f"http://127.0.0.1:{port}/{request.match_info['tail']}"
        raw_query = request.rel_url.raw_query_string
        if raw_query:
            # Exactly as received: BBB and Scalelite checksums cover the raw query.
            target += "?" + raw_query
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        try:
            async with self._session.request(
                request.method,
                URL(target, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                auto_decompress=True,
            ) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                return web.Response(status=upstream.status, body=payload, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"{key[0]} {key[1]}: {exc}\n")
