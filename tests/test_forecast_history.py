"""The forecast's history read from a real Prometheus (backfilled weeks), and its fallbacks."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bbbcore.config import ConfigError, load_settings
from bbbscaler.history_source import HistoryReader, PrometheusHistory, history_query
from bbbscaler.policy import PolicyConfig
from bbbscaler.policy.forecast import STEP, WEEK
from bbbscaler.settings import ScalerSettings
from tests.processes import prometheus, prometheus_available
from tests.scaler_fleets import required_settings

pytestmark = pytest.mark.integration

CONFIG = PolicyConfig.preset_values("forecast")


def demand(t: float, phase: float = 0.0) -> float:
    """Each host's CPU at ``t``: a week-periodic shape, busy from 08:00 to 16:00 of a day
    shifted by ``phase`` seconds (so a test can put its wall clock anywhere in it)."""
    hour = (t + phase) % 86_400 / 3600
    return 0.6 if 8 <= hour < 16 else 0.1


def busy_at_ten(now: float) -> float:
    """The phase that puts ``now`` at 10:00 of the shape: the next hour, and the last one
    (today's correction), lie wholly in the busy part, whenever the test runs."""
    return 10 * 3600 - now % 86_400


def backfill(tmp: Path, now: float, days: int, phase: float = 0.0) -> None:
    """``days`` of two hosts' bbbnode_cpu_utilization_ratio, one sample a minute, as blocks
    in Prometheus' data directory (promtool, as an operator backfills)."""
    start = math.floor((now - days * 86_400) / 60) * 60
    lines = [
        "# HELP bbbnode_cpu_utilization_ratio CPU.",
        "# TYPE bbbnode_cpu_utilization_ratio gauge",
    ]
    t = start
    while t < now - 120:
        for host, asg in (("i-1", "bbb"), ("i-2", "bbb"), ("i-9", "other")):
            lines.append(
                f'bbbnode_cpu_utilization_ratio{{asg="{asg}",instance_id="{host}"}} '
                f"{demand(t, phase):.3f} {t:.0f}"
            )
        t += 60
    lines.append("# EOF")
    source = tmp / "history.om"
    source.write_text("\n".join(lines) + "\n")
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(source),
         str(tmp / "tsdb")],
        check=True,
    )  # fmt: skip


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_the_query_names_the_fleet_s_group(monkeypatch: pytest.MonkeyPatch) -> None:
    required_settings(monkeypatch)
    monkeypatch.setenv("BBBSCALER_METRICS__PROMETHEUS_URL", "http://prom:9090")
    settings = load_settings(ScalerSettings, None)
    assert history_query(settings) == (
        'sum(avg_over_time(bbbnode_cpu_utilization_ratio{asg="bbb"}[5m]))'
    )
    assert settings.forecast_url == "http://prom:9090"


def test_the_forecast_preset_needs_a_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    required_settings(monkeypatch)
    monkeypatch.setenv("BBBSCALER_POLICY__PRESET", "forecast")
    with pytest.raises(ConfigError, match=r"forecast\.prometheus_url"):
        load_settings(ScalerSettings, None)
    monkeypatch.setenv("BBBSCALER_FORECAST__PROMETHEUS_URL", "http://prom:9090")
    settings = load_settings(ScalerSettings, None)
    config = PolicyConfig.from_settings(settings)
    assert (config.preset, config.forecast_weeks, config.forecast_headroom) == ("forecast", 4, 0.05)


@pytest.mark.skipif(not prometheus_available(), reason="Debian prometheus not installed")
async def test_history_from_a_real_prometheus(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    now = time.time()
    phase = busy_at_ten(now)
    backfill(tmp_path, now, 16, phase)
    async with prometheus(tmp_path, [], args=["--storage.tsdb.retention.time=60d"]) as prom:
        query = 'sum(avg_over_time(bbbnode_cpu_utilization_ratio{asg="bbb"}[5m]))'
        source = PrometheusHistory(http, prom.base, query, weeks=2, timeout=30.0)
        history = await source.read(now)
        # Two weeks at 5-minute steps, aligned to the clock, ending at the step before now.
        assert history.step == STEP
        assert history.start % STEP == 0
        assert len(history.values) == round(2 * WEEK / STEP) + 1
        known = [(k, v) for k, v in enumerate(history.values) if v is not None]
        assert len(known) > 0.95 * len(history.values)
        # The sum over the group's two hosts of each 5 minutes' mean (the other group's
        # host not counted), where a step lies wholly in one part of the day.
        for k, value in known[::97]:
            at = history.start + k * STEP
            if demand(at, phase) == demand(at - STEP + 1, phase):
                assert value == pytest.approx(2 * demand(at, phase), abs=1e-6)
        reader = HistoryReader(source, CONFIG, 300.0)
        made = await reader.forecast(now)
        assert made.status == "ok", made.reason
        assert made.weeks == 2
        # The forecast for an hour of a busy day is the weeks' 1.2 (times today's ~1). (With
        # the wall clock's own day, an hour that crossed 16:00 held a step straddling it.)
        assert len(made.demand) >= 12
        assert all(v == pytest.approx(1.2, rel=0.05) for v in made.demand), made.demand
        # Asked for 4 weeks where Prometheus has 16 days: the two it has are enough for
        # min_weeks 2, and too few for 3 (a fleet younger than that: the reactive rules).
        four = PrometheusHistory(http, prom.base, query, weeks=4, timeout=30.0)
        assert (await HistoryReader(four, CONFIG, 300.0).forecast(now)).usable
        three = dataclasses.replace(CONFIG, forecast_min_weeks=3)
        assert (await HistoryReader(four, three, 300.0).forecast(now)).status == "short"
        # A query that is not one series is refused, not guessed.
        split = PrometheusHistory(http, prom.base, "bbbnode_cpu_utilization_ratio", weeks=1)
        with pytest.raises(Exception, match="one series"):
            await split.read(now)


async def test_an_unreadable_history_falls_back_and_is_counted(
    http: aiohttp.ClientSession,
) -> None:
    answers: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        answers.append(1)
        return web.json_response({"status": "error", "error": "overloaded"}, status=503)

    app = web.Application()
    app.router.add_post("/api/v1/query_range", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        reads: list[str] = []
        clock = [0.0]
        reader = HistoryReader(
            PrometheusHistory(http, base, "q", weeks=4),
            CONFIG,
            300.0,
            on_read=lambda result, _s: reads.append(result),
            clock=lambda: clock[0],
        )
        made = await reader.forecast(1_767_225_600.0)
        assert (made.status, made.usable) == ("unreadable", False)
        assert "overloaded" in made.reason
        # Not asked again every round: at the next refresh interval.
        await reader.forecast(1_767_225_610.0)
        assert (len(answers), reads) == (1, ["failed"])
        clock[0] = 301.0
        await reader.forecast(1_767_225_900.0)
        assert (len(answers), reads) == (2, ["failed", "failed"])
    finally:
        await runner.cleanup()
