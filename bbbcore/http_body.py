"""Reading an HTTP answer with a size cap (node metrics, Prometheus answers)."""

from __future__ import annotations

import aiohttp


class TooLarge(Exception):
    """The answer is larger than the cap."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"answer larger than {max_bytes} bytes")


async def read_body(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole body of ``resp``; TooLarge as soon as it passes ``max_bytes``."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise TooLarge(max_bytes)
    received = bytearray()
    async for chunk in resp.content.iter_any():
        received += chunk
        if len(received) > max_bytes:
            raise TooLarge(max_bytes)
    return bytes(received)
