"""The ``direct`` metrics source: scrape every node's /metrics concurrently.

Reading one node (the four series, a size cap, the text cut down before it is
parsed) is bbbcore.node_metrics, shared with bbbctl. A node that does not
answer in time, answers with an error, too much, or text without the cpu or
age metric has no data this round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from bbbcore import logs, node_metrics
from bbbcore.node_metrics import DEFAULT_MAX_BYTES, Unreadable, fetch_values
from bbbscaler.model import Node
from bbbscaler.readings import Reading, reading_from

log = logs.get(__name__)

Clock = Callable[[], float]


def metrics_url(template: str, node: Node) -> str | None:
    """The node's metrics URL, or None when the template needs an address it lacks."""
    return node_metrics.metrics_url(template, node.instance_id, node.private_ip)


class Scraper:
    """Scrapes nodes over ``session`` (the caller's; its connector should allow
    ``concurrency`` connections)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url_template: str,
        *,
        timeout: float = 3.0,
        concurrency: int = 200,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock = time.time,
    ) -> None:
        self._session = session
        self._template = url_template
        self._timeout = timeout
        self._concurrency = concurrency
        self._max_bytes = max_bytes
        self._clock = clock

    async def read(self, nodes: Sequence[Node]) -> Mapping[str, Reading]:
        """Readings of every node that answered well; never raises for one node."""
        gate = asyncio.Semaphore(self._concurrency)
        failures: dict[str, str] = {}

        async def one(node: Node) -> tuple[str, Reading | None]:
            async with gate:
                reading, why = await self._scrape(node)
            if why:
                failures[node.instance_id] = why
            return node.instance_id, reading

        results = await asyncio.gather(*(one(n) for n in nodes))
        if failures:
            # One line per round, not per node: 1,000 unreachable nodes are one event.
            sample = dict(sorted(failures.items())[:5])
            log.warning("scrape_failed", count=len(failures), of=len(nodes), sample=sample)
        return {instance_id: r for instance_id, r in results if r is not None}

    async def read_one(self, node: Node) -> Reading | None:
        """A fresh reading of one node, or None."""
        reading, why = await self._scrape(node)
        if why:
            log.warning("scrape_failed", count=1, of=1, sample={node.instance_id: why})
        return reading

    async def _scrape(self, node: Node) -> tuple[Reading | None, str]:
        """(reading, "") or (None, why not); an instance with no address yet is no failure."""
        url = metrics_url(self._template, node)
        if url is None:
            return None, ""
        try:
            values = await fetch_values(
                self._session, url, request_timeout=self._timeout, max_bytes=self._max_bytes
            )
        except Unreadable as exc:
            return None, str(exc)
        reading = reading_from(values, self._clock())
        if reading is None:
            return None, "no cpu or snapshot age"
        return reading, ""
