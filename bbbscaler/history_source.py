"""The forecast's history from Prometheus: the fleet's CPU demand, 5-minute steps, N weeks.

One ``query_range`` (``forecast.query``, by default the sum over the fleet's hosts of
``bbbnode_cpu_utilization_ratio`` averaged over each 5 minutes) from ``weeks`` weeks
before now to now, at 300 s steps aligned to the clock, so a week-time falls on the same
step every week. Why that series: it is the unit the policy sizes in (a node's CPU, 0..1,
summed: nodes of demand), every host exports it whatever Scalelite did with it, and it
counts what meetings and participants alone do not (cameras, recording processing).

``HistoryReader`` re-reads it every ``forecast.refresh_interval``, keeps the last good
read when one fails (the forecast itself turns ``stale`` once that is too old), and makes
the round's Forecast: ``unreadable`` until a first read succeeds.
"""

from __future__ import annotations

import math
import string
import time
from collections.abc import Callable

import aiohttp

from bbbcore import logs
from bbbscaler.policy import DemandHistory, Forecast, PolicyConfig, forecast_from
from bbbscaler.policy.forecast import STEP, WEEK
from bbbscaler.promapi import DEFAULT_MAX_BYTES, PrometheusError, api_call
from bbbscaler.settings import ScalerSettings

log = logs.get(__name__)

Clock = Callable[[], float]


def history_query(settings: ScalerSettings) -> str:
    """``forecast.query`` with ``$asg_name`` filled in."""
    return string.Template(settings.forecast.query).safe_substitute(asg_name=settings.aws.asg_name)


class PrometheusHistory:
    """Reads the demand history with one query_range."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        query: str,
        *,
        weeks: int,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/api/v1/query_range"
        self._query = query
        self._weeks = weeks
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes

    async def read(self, now: float) -> DemandHistory:
        """``weeks`` weeks up to ``now``; raises PrometheusError when it cannot be read."""
        end = math.floor(now / STEP) * STEP
        start = end - self._weeks * WEEK
        form = {"query": self._query, "start": f"{start:.0f}", "end": f"{end:.0f}",
                "step": f"{STEP:.0f}"}  # fmt: skip
        data = await api_call(self._session, self._url, form, self._timeout, self._max_bytes)
        if data.get("resultType") != "matrix":
            raise PrometheusError("answer is not a range vector")
        result = data.get("result")
        if not isinstance(result, list) or len(result) > 1:
            raise PrometheusError("the query must give one series (sum it)")
        count = round((end - start) / STEP) + 1
        values: list[float | None] = [None] * count
        for item in result:
            pairs = item.get("values") if isinstance(item, dict) else None
            if not isinstance(pairs, list):
                raise PrometheusError("malformed range vector")
            for pair in pairs:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise PrometheusError("malformed sample")
                try:
                    at, value = float(pair[0]), float(pair[1])
                except (TypeError, ValueError):
                    raise PrometheusError("malformed sample value") from None
                k = round((at - start) / STEP)
                if 0 <= k < count and math.isfinite(value) and value >= 0:
                    values[k] = value
        return DemandHistory(start, STEP, tuple(values))


class HistoryReader:
    """Keeps the history fresh enough and makes each round's forecast."""

    def __init__(
        self,
        source: PrometheusHistory,
        config: PolicyConfig,
        refresh_interval: float,
        *,
        on_read: Callable[[str, float], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._source = source
        self._config = config
        self._refresh = refresh_interval
        self._on_read = on_read
        self._clock = clock
        self.history: DemandHistory | None = None
        self._read_at: float | None = None
        self._error = ""

    async def forecast(self, now: float) -> Forecast:
        """The forecast at ``now`` (epoch seconds), re-reading the history when it is due."""
        due = self._read_at is None or self._clock() - self._read_at >= self._refresh
        if due:
            began = self._clock()
            try:
                self.history = await self._source.read(now)
            except PrometheusError as exc:
                self._error = str(exc)
                log.warning("forecast_history_unreadable", error=self._error)
                self._report("failed", began)
            else:
                self._error = ""
                self._report("ok", began)
            # A failed read is tried again at the next interval, not every round.
            self._read_at = self._clock()
        if self.history is None:
            return Forecast.unavailable(now, "unreadable", f"history unreadable: {self._error}")
        return forecast_from(self.history, now, self._config)

    def _report(self, result: str, began: float) -> None:
        if self._on_read is not None:
            self._on_read(result, self._clock() - began)
