"""The host CPU model and the synthetic /proc/stat, read the way an exporter reads it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bbbsim.host_model import (
    USER_HZ,
    HostLoad,
    ProcStat,
    advance_counters,
    cpu_utilization,
    distribute,
    initial_counters,
    meeting_load,
    reference_load,
    total_load,
)

# --- the CPU model ------------------------------------------------------------------


def test_reference_host_is_near_80_percent_at_200_participants() -> None:
    load = reference_load()
    assert load.participants == 200
    assert load.cameras == 15
    assert cpu_utilization(load, cores=8) == pytest.approx(0.8, abs=0.01)


def test_video_grows_with_cameras_times_viewers() -> None:
    assert meeting_load(20, cameras=2).video_downstreams == 38
    assert meeting_load(1, cameras=1).video_downstreams == 0
    assert meeting_load(0).video_downstreams == 0
    assert meeting_load(10, cameras=1, video_receivers=8).video_downstreams == 7
    one_lecture = cpu_utilization(meeting_load(100, cameras=1))
    camera_heavy = cpu_utilization(meeting_load(100, cameras=10))
    assert camera_heavy > one_lecture


def test_idle_base_clamp_and_cores() -> None:
    idle = cpu_utilization(HostLoad())
    assert 0 < idle < 0.05
    assert cpu_utilization(reference_load() + reference_load() + reference_load()) == 1.0
    assert cpu_utilization(reference_load(), cores=16) == pytest.approx(
        cpu_utilization(reference_load(), cores=8) / 2
    )
    with pytest.raises(ValueError, match="cores"):
        cpu_utilization(HostLoad(), cores=0)
    with pytest.raises(ValueError, match="participants"):
        HostLoad(participants=-1)


counts = st.integers(min_value=0, max_value=500)


@given(participants=counts, cameras=st.integers(0, 30), more=st.integers(0, 100))
def test_monotonic_in_participants(participants: int, cameras: int, more: int) -> None:
    before = cpu_utilization(meeting_load(participants, cameras=cameras))
    after = cpu_utilization(meeting_load(participants + more, cameras=cameras))
    assert after >= before


@given(participants=counts, cameras=st.integers(0, 30), more=st.integers(0, 30))
def test_monotonic_in_cameras(participants: int, cameras: int, more: int) -> None:
    before = cpu_utilization(meeting_load(participants, cameras=cameras))
    after = cpu_utilization(meeting_load(participants, cameras=cameras + more))
    assert after >= before
    assert 0.0 <= after <= 1.0


def test_total_load_sums_meetings() -> None:
    loads = [meeting_load(20, voice=5, cameras=1), meeting_load(10, voice=2)]
    assert total_load(loads) == HostLoad(participants=30, voice=7, cameras=1, video_downstreams=19)


# --- /proc/stat, read independently -----------------------------------------------


@dataclass(frozen=True)
class Sample:
    busy: int
    total: int


def _read_cpu(text: str, label: str = "cpu") -> Sample:
    """The exporter's reading: idle = idle + iowait, total = user..steal."""
    for line in text.splitlines():
        parts = line.split()
        if parts[0] == label:
            values = [int(v) for v in parts[1:]]
            assert len(values) == 10
            total = sum(values[:8])
            idle = values[3] + values[4]
            return Sample(busy=total - idle, total=total)
    raise AssertionError(f"no {label} line")


def _utilization(before: Sample, after: Sample) -> float:
    return (after.busy - before.busy) / (after.total - before.total)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_reader_gets_the_model_utilization_over_a_step(tmp_path: Path) -> None:
    clock = FakeClock()
    stat = ProcStat(tmp_path, cores=8, clock=clock, boot_time=1_700_000_000)
    stat.set_utilization(cpu_utilization(reference_load()))
    first = _read_cpu(stat.write().read_text())
    clock.now += 10.0
    second = _read_cpu(stat.write().read_text())
    assert second.total - first.total == 10 * USER_HZ * 8
    # 0.7975 * 8000 jiffies is a whole number: the reading is exact.
    assert _utilization(first, second) == cpu_utilization(reference_load())


@pytest.mark.parametrize(("utilization", "step"), [(1 / 3, 1.23), (0.0, 5.0), (1.0, 0.5)])
def test_reader_is_within_one_jiffy_for_any_value(
    tmp_path: Path, utilization: float, step: float
) -> None:
    clock = FakeClock()
    stat = ProcStat(tmp_path, cores=8, clock=clock, utilization=utilization)
    first = _read_cpu(stat.render())
    clock.now += step
    second = _read_cpu(stat.render())
    total = second.total - first.total
    assert total == round(step * USER_HZ) * 8
    assert _utilization(first, second) == pytest.approx(utilization, abs=1 / total)


def test_carry_keeps_long_runs_exact(tmp_path: Path) -> None:
    clock = FakeClock()
    stat = ProcStat(tmp_path, cores=4, clock=clock, utilization=0.123)
    start = _read_cpu(stat.render())
    for _ in range(1000):
        clock.now += 0.01  # one jiffy per core per step: rounding alone would give 0 busy
        stat.advance()
    end = _read_cpu(stat.render())
    assert end.total - start.total == 4000
    assert abs((end.busy - start.busy) - 0.123 * 4000) <= 1


def test_time_before_a_change_is_booked_at_the_old_value(tmp_path: Path) -> None:
    clock = FakeClock()
    stat = ProcStat(tmp_path, cores=2, clock=clock, utilization=0.5)
    first = _read_cpu(stat.render())
    clock.now += 4.0
    stat.set_utilization(1.0)
    clock.now += 4.0
    second = _read_cpu(stat.render())
    assert second.busy - first.busy == 400 + 800
    assert second.total - first.total == 1600


def test_file_format(tmp_path: Path) -> None:
    clock = FakeClock()
    stat = ProcStat(tmp_path / "proc", cores=4, clock=clock, boot_time=1_700_000_000)
    stat.set_utilization(0.6)
    clock.now += 3.0
    path = stat.write()
    assert path == tmp_path / "proc" / "stat"
    text = path.read_text()
    lines = text.splitlines()
    labels = [line.split()[0] for line in lines]
    assert labels == [
        "cpu",
        "cpu0",
        "cpu1",
        "cpu2",
        "cpu3",
        "intr",
        "ctxt",
        "btime",
        "processes",
        "procs_running",
        "procs_blocked",
        "softirq",
    ]
    assert lines[0].startswith("cpu  ")  # two spaces, as Linux writes it
    assert "btime 1700000000" in lines
    per_core = [_read_cpu(text, f"cpu{i}") for i in range(4)]
    aggregate = _read_cpu(text)
    assert sum(c.busy for c in per_core) == aggregate.busy
    assert sum(c.total for c in per_core) == aggregate.total
    assert len({c.total for c in per_core}) == 1
    for line in lines:
        assert all(v.isdigit() for v in line.split()[1:])
    # Written by rename: no temporary file is left behind.
    assert os.listdir(tmp_path / "proc") == ["stat"]


def test_counters_only_grow(tmp_path: Path) -> None:
    clock = FakeClock()
    stat = ProcStat(tmp_path, clock=clock, utilization=0.9)
    before = stat.render()
    clock.now += 2.0
    stat.set_utilization(0.1)
    clock.now += 2.0
    after = stat.render()
    for old, new in zip(before.splitlines(), after.splitlines(), strict=True):
        if old.split()[0] in ("btime", "procs_running", "procs_blocked"):
            continue
        olds = [int(v) for v in old.split()[1:]]
        news = [int(v) for v in new.split()[1:]]
        assert all(n >= o for o, n in zip(olds, news, strict=True)), old


def test_clock_going_back_books_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    stat = ProcStat(tmp_path, clock=clock, utilization=0.5)
    clock.now += 1.0
    before = stat.render()
    clock.now -= 0.5
    assert stat.render() == before


def test_distribute_and_advance_are_exact() -> None:
    assert distribute(10, 4) == (3, 3, 2, 2)
    assert distribute(10, 4, offset=2) == (2, 2, 3, 3)
    assert sum(distribute(7, 3, offset=5)) == 7
    counters = advance_counters(initial_counters(3, 100), 50, 1.0)
    assert counters.aggregate.busy == 150
    assert counters.aggregate.total == 450
    with pytest.raises(ValueError, match="backwards"):
        advance_counters(counters, -1, 0.5)
