"""The collector against the BBB emulator: truth, failures as unknowns, counters, cost."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bbbcore.bbb_api import BbbClient
from bbbnode.collector import Collector, read_bbb_version
from bbbnode.cpu import CpuSampler
from bbbnode.exposition import NodeMetrics
from bbbnode.server import build_app
from bbbsim.bbb_emulator import EmulatedBbb, FaultMode, client_url, serve
from bbbsim.host_model import ProcStat

SECRET = "collector-test-secret"


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    bbb: EmulatedBbb
    collector: Collector
    metrics: NodeMetrics
    clock: FakeClock
    stat: ProcStat


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    bbb = EmulatedBbb(SECRET)
    runner, port = await serve(bbb)
    clock = FakeClock()
    stat = ProcStat(tmp_path / "proc", clock=clock)
    stat.write()
    (tmp_path / "release").write_text("BIGBLUEBUTTON_RELEASE=3.0.4\n")
    async with aiohttp.ClientSession() as session:
        client = BbbClient(session, client_url(port), SECRET, "sha256", timeout=0.5)
        collector: Collector | None = None
        metrics = NodeMetrics(lambda: collector.latest if collector else None, clock)
        collector = Collector(
            client, metrics, CpuSampler(tmp_path / "proc", 60.0, clock), tmp_path / "rec",
            tmp_path / "release", clock=clock, monotonic=clock,
        )  # fmt: skip
        yield Rig(bbb, collector, metrics, clock, stat)
    await runner.cleanup()


async def test_reads_meetings_cpu_version(rig: Rig) -> None:
    rig.bbb.add_meeting("m1", 20, cameras=2, voice=5, listeners=15)
    await rig.collector.collect_once()
    rig.stat.set_utilization(0.5)
    rig.clock.now += 10
    rig.stat.write()
    snap = await rig.collector.collect_once()
    assert snap.api_up
    assert snap.totals is not None
    assert snap.totals.participants == 20
    assert snap.has_meeting is True
    assert snap.cpu_ratio == pytest.approx(0.5, abs=0.02)
    assert snap.bbb_version == "3.0.4"
    assert snap.age(rig.clock.now) == 0


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (FaultMode.DOWN, "bbb_unreachable"),
        (FaultMode.HTTP_ERROR, "bbb_unreachable"),
        (FaultMode.FAILED, "bbb_failed"),
        (FaultMode.MALFORMED, "bbb_malformed"),
    ],
)
async def test_failures_are_unknown_not_zero(rig: Rig, fault: FaultMode, reason: str) -> None:
    rig.bbb.add_meeting("m1", 5)
    good = await rig.collector.collect_once()
    rig.bbb.set_fault(fault)
    rig.clock.now += 30
    bad = await rig.collector.collect_once()
    assert not bad.api_up
    assert bad.meetings is None
    assert bad.totals is None
    assert bad.has_meeting is None
    assert bad.meetings_at == good.meetings_at
    assert bad.age(rig.clock.now) == 30
    assert rig.metrics.collect_errors.labels(reason)._value.get() == 1
    # Counters keep their totals through an outage.
    assert bad.unique_meetings.total == good.unique_meetings.total == 1


async def test_wrong_checksum_is_api_down(rig: Rig) -> None:
    rig.bbb.supported_checksum_algorithms = "sha1"  # the node signs with sha256: refused
    snap = await rig.collector.collect_once()
    assert not snap.api_up
    assert snap.api_error is not None
    assert "checksumError" in snap.api_error


async def test_unique_counters(rig: Rig) -> None:
    rig.bbb.add_meeting("a", 3)
    await rig.collector.collect_once()
    rig.bbb.add_meeting("b", 3)
    rig.bbb.add_breakout("a", 1)
    snap = await rig.collector.collect_once()
    assert snap.unique_meetings.total == 2
    assert snap.unique_breakouts.total == 1
    rig.bbb.end_meeting("a", keep=False)
    rig.bbb.add_meeting("a", 3)  # same external id, new internal id: a new meeting
    snap = await rig.collector.collect_once()
    assert snap.unique_meetings.total == 3


async def test_scrapes_never_call_bbb(rig: Rig) -> None:
    rig.bbb.add_meeting("m1", 10)
    await rig.collector.collect_once()
    rig.bbb.reset_counts()
    app = build_app(
        rig.metrics, lambda: rig.collector.latest, rig.clock, lambda: True, stale_after=30
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    assert resp.status == 200
                    assert "bbb_meetings 1.0" in await resp.text()
            async with session.get(f"http://127.0.0.1:{port}/status") as resp:
                doc = await resp.json()
                assert doc["totals"]["participants"] == 10
                assert "ap-" not in await resp.text()
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200
            rig.clock.now += 31
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 503
    finally:
        await runner.cleanup()
    assert rig.bbb.request_count() == 0


def test_read_bbb_version(tmp_path: Path) -> None:
    release = tmp_path / "bigbluebutton-release"
    assert read_bbb_version(release) is None
    release.write_text("# comment\nBIGBLUEBUTTON_RELEASE=2.7.12\n")
    assert read_bbb_version(release) == "2.7.12"
