"""The emulated host's record-and-playback pipeline, as bbbnode's recordings scan reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbbnode.recordings import scan
from bbbsim.bbb_emulator import EmulatedBbb
from bbbsim.host import start_host
from bbbsim.host_model import cpu_utilization, total_load
from bbbsim.host_recordings import RecordingPipeline
from bbbsim.recording_processing import RecordingSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_recorded_meeting_is_pending_until_the_worker_has_published_it(
    tmp_path: Path,
) -> None:
    # One worker, in order (bbb-rap-resque-worker COUNT=1): 0.5 s of work a second of meeting.
    clock = Clock()
    bbb = EmulatedBbb("s", clock=clock)
    pipeline = RecordingPipeline(tmp_path, RecordingSpec(ratio=0.5, cores=2.0), clock)
    bbb.add_meeting("lecture", 10, record=True)
    bbb.add_meeting("second", 10, record=True)
    bbb.add_meeting("chat", 3)
    assert pipeline.observe(bbb.meetings()) == 0.0
    clock.now += 600
    for meeting in ("lecture", "second", "chat"):
        bbb.end_meeting(meeting)
    # Both recorded: the first taken by the worker (processing), the second waiting.
    assert pipeline.observe(bbb.meetings()) == 2.0
    counts = scan(tmp_path)
    assert (counts.processing, counts.unprocessed, counts.pending) == (1, 1, 2)
    clock.now += 299
    assert pipeline.observe(bbb.meetings()) == 2.0
    clock.now += 2  # the first is done at 300 s, the second runs to 600 s
    pipeline.observe(bbb.meetings())
    counts = scan(tmp_path)
    assert (counts.published, counts.processing, counts.unprocessed) == (1, 1, 0)
    clock.now += 300
    assert pipeline.observe(bbb.meetings()) == 0.0
    counts = scan(tmp_path)
    assert (counts.published, counts.pending, counts.failed) == (2, 0, 0)
    assert pipeline.pending == 0


async def test_the_host_shows_the_workers_cpu(tmp_path: Path) -> None:
    clock = Clock()
    host = await start_host(
        "i-rec", tmp_path, "s", clock=clock, recordings=RecordingSpec(ratio=1.0, cores=2.0)
    )
    try:
        host.bbb.add_meeting("m", 5, record=True)
        host.tick()
        clock.now += 60
        host.bbb.end_meeting("m")
        idle = cpu_utilization(total_load([]), host.cores)
        assert host.tick() == pytest.approx(idle + 2 / host.cores)
        assert scan(host.recordings).pending == 1
        clock.now += 61
        assert host.tick() == pytest.approx(idle)
        assert scan(host.recordings).pending == 0
    finally:
        await host.stop()
