"""The ``direct`` metrics source: scrape every node's /metrics concurrently.

Only four metrics matter (readings.NAMES) out of the hundred or so lines a
node exports, so the text is cut down to their lines before prometheus_client
parses it: parsing is what would otherwise dominate a round over 1,000 nodes.
A node that does not answer in time, answers with an error, too much, or
text without the cpu or age metric has no data this round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bbbcore import logs
from bbbscaler.fetch import TooLarge, read_body
from bbbscaler.model import Node
from bbbscaler.readings import NAMES, Reading, reading_from

log = logs.get(__name__)

Clock = Callable[[], float]

DEFAULT_MAX_BYTES = 1024 * 1024
"""A node's whole exposition is a few KiB; anything far larger is not bbbnode."""

_WANTED = frozenset(NAMES)
# Cheap first test per line; the exact name is checked after it.
_PREFIXES = ("bbb_meetings", "bbbnode_cpu_utilization_ratio", "bbbnode_snapshot_age_seconds")


def metrics_url(template: str, node: Node) -> str | None:
    """The node's metrics URL, or None when the template needs an address it lacks."""
    if node.private_ip is None and "{private_ip" in template:
        return None
    return template.format(instance_id=node.instance_id, private_ip=node.private_ip or "")


def select_lines(text: str) -> str:
    """Only the sample, ``# TYPE`` and ``# HELP`` lines of the four metrics bbbscaler reads."""
    kept: list[str] = []
    for line in text.splitlines():
        if line.startswith(_PREFIXES):
            end = len(line)
            for stop in ("{", " "):
                found = line.find(stop)
                if 0 <= found < end:
                    end = found
            if line[:end] in _WANTED:
                kept.append(line)
        elif line.startswith(("# TYPE ", "# HELP ")):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2] in _WANTED:
                kept.append(line)
    kept.append("")
    return "\n".join(kept)


def parse_values(text: str) -> dict[str, float]:
    """Metric name → value of the four metrics in a text exposition.

    Raises ValueError when their lines do not parse. A labelled series is
    taken only when the metric has no unlabelled one.
    """
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(select_lines(text)):
        for sample in family.samples:
            if sample.name not in _WANTED:
                continue
            if not sample.labels or sample.name not in values:
                values[sample.name] = float(sample.value)
    return values


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
        self._timeout = aiohttp.ClientTimeout(total=timeout)
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
            body = await self._fetch(url)
        except TimeoutError:
            return None, "timeout"
        except aiohttp.ClientError as exc:
            return None, type(exc).__name__
        except _Refused as exc:
            return None, str(exc)
        read_at = self._clock()
        try:
            values = parse_values(body.decode("utf-8", "replace"))
        except ValueError:
            return None, "unparsable"
        reading = reading_from(values, read_at)
        if reading is None:
            return None, "no cpu or snapshot age"
        return reading, ""

    async def _fetch(self, url: str) -> bytes:
        async with self._session.get(url, timeout=self._timeout, allow_redirects=False) as resp:
            if resp.status != 200:
                raise _Refused(f"HTTP {resp.status}")
            try:
                return await read_body(resp, self._max_bytes)
            except TooLarge:
                raise _Refused("too large") from None


class _Refused(Exception):
    """The node answered, but not with something to read."""
