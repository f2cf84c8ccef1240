"""Async client for a BigBlueButton server's API (the read side bbbnode needs)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from yarl import URL

from bbbcore import checksum
from bbbcore.meetings import BbbApiError, Meeting, MeetingsParser, parse_response

DEFAULT_URL = "http://127.0.0.1:8090/bigbluebutton/"
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
PARSE_SLICE = 16 * 1024
"""Bytes of getMeetings parsed between two yields to the event loop: about four
meetings of ten attendees, well under a millisecond, so a /metrics scrape that
arrives mid-parse waits for one slice, not for the whole answer."""


_Sink = Callable[[bytes], Awaitable[None]]


class Unreachable(BbbApiError):
    """No usable HTTP answer: connection refused, timeout, non-200, body too large."""


def api_base(url: str) -> str:
    """``…/bigbluebutton/`` or ``…/bigbluebutton/api/`` → the API base ending in ``api/``."""
    base = url if url.endswith("/") else url + "/"
    return base if base.endswith("/api/") else base + "api/"


class BbbClient:
    """Calls one BBB server's API with checksums, a timeout and a size cap on answers."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        secret: str,
        algorithm: checksum.Algorithm = "sha256",
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._session = session
        self._base = api_base(url)
        self._secret = secret
        self._algorithm = algorithm
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes

    def url(self, call: str, params: Sequence[tuple[str, str]] = ()) -> str:
        """The full signed URL of ``call``."""
        query = checksum.signed_query(call, list(params), self._secret, self._algorithm)
        return f"{self._base}{call}?{query}"

    async def _get(self, call: str, params: Sequence[tuple[str, str]], sink: _Sink) -> None:
        """GET ``call`` and hand the body to ``sink`` chunk by chunk, within the caps."""
        try:
            # encoded=True: aiohttp must send the query exactly as signed (no re-quoting).
            async with self._session.get(
                URL(self.url(call, params), encoded=True),
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    raise Unreachable(f"{call}: HTTP {resp.status}")
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise Unreachable(f"{call}: answer larger than {self._max_bytes} bytes")
                    await sink(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise Unreachable(f"{call}: {type(exc).__name__}: {exc}") from None

    async def call(self, call: str, params: Sequence[tuple[str, str]] = ()) -> bytes:
        """GET ``call`` and return the raw body; raises Unreachable on transport trouble."""
        body = bytearray()

        async def keep(chunk: bytes) -> None:
            body.extend(chunk)

        await self._get(call, params, keep)
        return bytes(body)

    async def get_meetings(self, attendees: bool = False) -> tuple[Meeting, ...]:
        """All meetings (``()`` when none), parsed as they stream in.

        Per-attendee records are skipped unless asked for; client-type counts
        are always there.
        """
        parser = MeetingsParser(attendees)

        async def parse(chunk: bytes) -> None:
            # A chunk that is already buffered comes without a suspension, so the
            # whole answer could be parsed in one go: yield between slices.
            for start in range(0, len(chunk), PARSE_SLICE):
                parser.feed(chunk[start : start + PARSE_SLICE])
                await asyncio.sleep(0)

        await self._get("getMeetings", (), parse)
        return parser.close()

    async def ping(self) -> None:
        """The API root answers SUCCESS (it needs no checksum)."""
        try:
            async with self._session.get(
                self._base, timeout=self._timeout, allow_redirects=False
            ) as resp:
                body = await resp.content.read(self._max_bytes)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise Unreachable(f"api root: {type(exc).__name__}") from None
        parse_response(body)
