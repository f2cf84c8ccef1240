"""The ``prometheus`` metrics source: a Prometheus server's HTTP API instead of scraping.

Two instant queries per round, sent together:

- the four metrics by name (``{__name__=~"..."}``), each series mapped to its
  instance by the ``metrics.instance_label`` label;
- ``timestamp(bbbnode_snapshot_age_seconds)``: when Prometheus scraped each
  node. An instant query's values carry the evaluation time, not the scrape
  time, so only this says how old the data is.

The data's age is measured on Prometheus' own clock (evaluation time minus
sample time), so a skew between this host and Prometheus does not age it.
A node that stopped answering drops out by Prometheus' staleness handling
and so has no data; one it still lists with an old sample is simply old.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from bbbcore import logs
from bbbcore.http_body import TooLarge, read_body
from bbbscaler.model import Node
from bbbscaler.readings import NAMES, SNAPSHOT_AGE, Reading, reading_from

log = logs.get(__name__)

Clock = Callable[[], float]

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class PrometheusError(Exception):
    """The Prometheus API could not be read or answered an error."""


def _quote(value: str) -> str:
    """``value`` as a PromQL string literal."""
    return json.dumps(value)


def _sample(value: Any) -> tuple[float, float]:
    """(time, value) of an instant vector element's ``value`` pair."""
    if not isinstance(value, list) or len(value) != 2:
        raise PrometheusError("malformed sample")
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise PrometheusError("malformed sample value") from None


class PrometheusSource:
    """Reads node metrics from Prometheus at ``base_url`` over the caller's session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        instance_label: str = "instance_id",
        timeout: float = 3.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock = time.time,
    ) -> None:
        if not _LABEL.match(instance_label):
            raise ValueError(f"not a Prometheus label name: {instance_label!r}")
        self._session = session
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self._label = instance_label
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes
        self._clock = clock

    async def read(self, nodes: Sequence[Node]) -> Mapping[str, Reading]:
        """Readings of the listed nodes Prometheus has current data for.

        Raises PrometheusError when Prometheus cannot be read.
        """
        wanted = {n.instance_id for n in nodes}
        readings = await self._readings("")
        return {i: r for i, r in readings.items() if i in wanted}

    async def read_one(self, node: Node) -> Reading | None:
        """Prometheus' latest for one node (its last scrape), or None."""
        matcher = f"{self._label}={_quote(node.instance_id)}"
        return (await self._readings(matcher)).get(node.instance_id)

    async def _readings(self, matcher: str) -> dict[str, Reading]:
        names = "|".join(re.escape(n) for n in NAMES)
        extra = f", {matcher}" if matcher else ""
        values_q = f'{{__name__=~"{names}", {self._label}!=""{extra}}}'
        times_q = f'timestamp({SNAPSHOT_AGE}{{{self._label}!=""{extra}}})'
        values_doc, times_doc = await asyncio.gather(self._query(values_q), self._query(times_q))
        local_now = self._clock()
        values: dict[str, dict[str, float]] = {}
        for metric, (_, value) in values_doc:
            instance = metric.get(self._label)
            name = metric.get("__name__")
            if not instance or name not in NAMES:
                continue
            mine = values.setdefault(instance, {})
            # Two series for one node (two jobs scrape it): the busier and older one
            # counts, so a duplicate can never make a node look idle or fresh.
            mine[name] = max(mine.get(name, -math.inf), value)
        scraped: dict[str, float] = {}
        for metric, (evaluated, scraped_at) in times_doc:
            instance = metric.get(self._label)
            if not instance or not math.isfinite(scraped_at):
                continue
            # The scrape's age on Prometheus' clock, carried over to ours.
            local = local_now - max(0.0, evaluated - scraped_at)
            scraped[instance] = min(scraped.get(instance, math.inf), local)
        readings: dict[str, Reading] = {}
        for instance, named in values.items():
            read_at = scraped.get(instance)
            if read_at is None:
                continue
            reading = reading_from(named, read_at)
            if reading is not None:
                readings[instance] = reading
        return readings

    async def _query(self, expr: str) -> list[tuple[dict[str, str], tuple[float, float]]]:
        """An instant vector query's (labels, (time, value)) pairs."""
        data = await api_call(self._session, self._url, {"query": expr}, self._timeout,
                              self._max_bytes)  # fmt: skip
        if data.get("resultType") != "vector":
            raise PrometheusError("answer is not an instant vector")
        result = data.get("result")
        if not isinstance(result, list):
            raise PrometheusError("answer has no result list")
        pairs: list[tuple[dict[str, str], tuple[float, float]]] = []
        for item in result:
            if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
                raise PrometheusError("malformed vector element")
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            pairs.append((labels, _sample(item.get("value"))))
        return pairs


async def api_call(
    session: aiohttp.ClientSession,
    url: str,
    form: Mapping[str, str],
    limit: aiohttp.ClientTimeout,
    max_bytes: int,
) -> dict[str, Any]:
    """POST ``form`` to a Prometheus API ``url``; the answer's ``data`` object.

    Raises PrometheusError when Prometheus cannot be read or refuses the query.
    """
    try:
        async with session.post(url, data=dict(form), timeout=limit, allow_redirects=False) as resp:
            body = await read_body(resp, max_bytes)
            status = resp.status
    except TooLarge as exc:
        raise PrometheusError(str(exc)) from None
    except TimeoutError:
        raise PrometheusError("query timed out") from None
    except aiohttp.ClientError as exc:
        raise PrometheusError(f"query failed: {type(exc).__name__}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise PrometheusError(f"answer is not JSON (HTTP {status})") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise PrometheusError(f"query refused (HTTP {status}): {error or 'no error text'}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise PrometheusError("answer has no data")
    return data
