"""A loopback front for pebble that answers new orders as a rate-limited Let's Encrypt does.

pebble cannot rate-limit: its problem types (``acme/problems.go``) have no
``rateLimited`` at all. This front serves pebble's directory with ``newOrder``
pointed at itself while ``limited`` is set, and answers that POST as Boulder
does past a limit: HTTP 429, ``urn:ietf:params:acme:error:rateLimited``
(RFC 8555 6.7), a ``Retry-After`` header (RFC 8555 6.6) and Let's Encrypt's
detail text ("too many certificates (50) already issued for ... retry after
<time>: see https://letsencrypt.org/docs/rate-limits/..."). Everything else
(nonces, accounts, and orders once the limit is lifted) is pebble's own.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from bbbsim.node_process import free_port
from tests.pebble_fixtures import Pebble

RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"


@dataclass
class RateLimitedCa:
    """The front's state: whether it limits, what it says, what it saw."""

    pebble: Pebble
    port: int = 0
    limited: bool = True
    retry_after_s: int | None = 3600
    """The Retry-After header in seconds; None sends none (the detail's time stays)."""
    orders_refused: int = 0

    @property
    def directory_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dir"

    def retry_time(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(
            seconds=self.retry_after_s or 7200
        )

    async def directory(self, _: web.Request) -> web.Response:
        context = ssl.create_default_context(cafile=str(self.pebble.ca_bundle))
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.pebble.directory_url, ssl=context) as resp,
        ):
            doc = await resp.json()
        if self.limited:
            doc["newOrder"] = f"http://127.0.0.1:{self.port}/new-order"
        return web.json_response(doc)

    async def new_order(self, _: web.Request) -> web.Response:
        self.orders_refused += 1
        when = self.retry_time().strftime("%Y-%m-%dT%H:%M:%SZ")
        problem = {
            "type": RATE_LIMITED,
            "detail": (
                'too many certificates (50) already issued for "example.test" in the last '
                f"168h0m0s, retry after {when}: see "
                "https://letsencrypt.org/docs/rate-limits/#new-certificates-per-registered-domain"
            ),
            "status": 429,
        }
        headers = {"Content-Type": "application/problem+json"}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return web.Response(status=429, text=json.dumps(problem), headers=headers)


@asynccontextmanager
async def rate_limited_ca(pebble: Pebble) -> AsyncIterator[RateLimitedCa]:
    """The front on a free loopback port, limiting until told otherwise."""
    front = RateLimitedCa(pebble, free_port())
    app = web.Application()
    app.router.add_get("/dir", front.directory)
    app.router.add_post("/new-order", front.new_order)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", front.port).start()
    try:
        yield front
    finally:
        await runner.cleanup()
