"""bbbnode.cpu: /proc/stat parsing and the windowed utilisation ratio, on a fake procfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbbnode.cpu import CpuSampler, CpuTimes, parse_stat

# A real 5.15 kernel /proc/stat head (10 columns) with per-CPU lines after it.
MODERN = """\
cpu  10132153 290696 3084719 46828483 16683 0 25195 175 7 3
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0
cpu1 1335034 46546 472343 13373734 5006 0 2745 0 0 0
intr 1462898 0 0 0
ctxt 190236345
btime 1700000000
"""


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProc:
    """A procfs directory whose stat file follows given busy/idle tick counts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.busy = 0
        self.idle = 0
        self.write()

    def write(self) -> None:
        # All busy time as user, all idle as idle; per-CPU lines as noise.
        text = f"cpu  {self.busy} 0 0 {self.idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
        (self.root / "stat").write_text(text)

    def run(self, busy: int, idle: int) -> None:
        self.busy += busy
        self.idle += idle
        self.write()


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_parse_modern_line() -> None:
    times = parse_stat(MODERN)
    # user nice system irq softirq steal; guest (7) and guest_nice (3) are in user/nice.
    assert times.busy == 10132153 + 290696 + 3084719 + 0 + 25195 + 175
    assert times.idle == 46828483 + 16683
    assert times.total == times.busy + times.idle


def test_guest_time_is_not_counted_twice() -> None:
    without_guest = parse_stat("cpu 100 0 0 900 0 0 0 0 0 0\n")
    with_guest = parse_stat("cpu 100 0 0 900 0 0 0 0 60 0\n")
    assert with_guest == without_guest


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("cpu 1 2 3 4", CpuTimes(busy=6, idle=4)),  # 2.4
        ("cpu 1 2 3 4 5", CpuTimes(busy=6, idle=9)),  # 2.5.41: iowait
        ("cpu 1 2 3 4 5 6 7", CpuTimes(busy=19, idle=9)),  # 2.6.0: irq softirq
        ("cpu 1 2 3 4 5 6 7 8", CpuTimes(busy=27, idle=9)),  # 2.6.11: steal
        ("cpu 1 2 3 4 5 6 7 8 9 10 11 12", CpuTimes(busy=27, idle=9)),  # future columns
    ],
)
def test_old_and_new_kernels(line: str, expected: CpuTimes) -> None:
    assert parse_stat(line + "\n") == expected


def test_aggregate_line_need_not_be_first() -> None:
    assert parse_stat("cpu0 9 9 9 9\ncpu 1 0 0 3\n") == CpuTimes(busy=1, idle=3)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage\n",
        "cpu0 1 2 3 4\n",
        "cpu 1 2 3\n",
        "cpu 1 2 x 4\n",
        "cpu 1 -2 3 4\n",
        "cpu 1.5 2 3 4\n",
        "cpux 1 2 3 4\n",
    ],
)
def test_garbage_raises(text: str) -> None:
    with pytest.raises(ValueError, match="/proc/stat"):
        parse_stat(text)


def test_none_until_two_samples(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=60, clock=clock)
    assert sampler.ratio() is None
    sampler.sample()
    assert sampler.ratio() is None
    clock.now += 5
    proc.run(busy=25, idle=75)
    sampler.sample()
    assert sampler.ratio() == pytest.approx(0.25)


def test_real_stat_format(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / "stat").write_text(MODERN)
    sampler = CpuSampler(tmp_path, window=60, clock=clock)
    assert sampler.sample() == parse_stat(MODERN)


def test_ratio_averages_over_the_window(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=60, clock=clock)
    sampler.sample()
    # 60 s at 10 % busy, then 30 s at 90 % busy, sampled every 5 s.
    for _ in range(12):
        clock.now += 5
        proc.run(busy=50, idle=450)
        sampler.sample()
    assert sampler.ratio() == pytest.approx(0.10)
    for _ in range(6):
        clock.now += 5
        proc.run(busy=450, idle=50)
        sampler.sample()
    # The window now holds 30 s of each.
    assert sampler.ratio() == pytest.approx(0.50)
    for _ in range(6):
        clock.now += 5
        proc.run(busy=450, idle=50)
        sampler.sample()
    assert sampler.ratio() == pytest.approx(0.90)


def test_oldest_sample_is_inside_the_window(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=10, clock=clock)
    sampler.sample()  # t=0, will fall out
    clock.now += 4
    proc.run(busy=1000, idle=0)
    sampler.sample()  # t=4
    clock.now += 8
    proc.run(busy=0, idle=100)
    sampler.sample()  # t=12: window starts at 2, so t=0 goes
    assert len(sampler) == 2
    assert sampler.ratio() == 0.0


def test_sampling_slower_than_the_window(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=10, clock=clock)
    sampler.sample()
    for busy in (30, 70):
        clock.now += 25
        proc.run(busy=busy, idle=100 - busy)
        sampler.sample()
    # Only the newest is inside the window: the ratio covers the last interval.
    assert len(sampler) == 2
    assert sampler.ratio() == pytest.approx(0.70)


def test_counters_going_back_drop_history(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=60, clock=clock)
    sampler.sample()
    clock.now += 5
    proc.run(busy=100, idle=100)
    sampler.sample()
    assert sampler.ratio() == pytest.approx(0.5)
    proc.busy, proc.idle = 10, 10
    proc.write()
    clock.now += 5
    sampler.sample()
    assert len(sampler) == 1
    assert sampler.ratio() is None
    clock.now += 5
    proc.run(busy=20, idle=80)
    sampler.sample()
    assert sampler.ratio() == pytest.approx(0.2)


def test_idle_alone_going_back_drops_history(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=60, clock=clock)
    proc.run(busy=0, idle=1000)
    sampler.sample()
    clock.now += 5
    proc.busy, proc.idle = 2000, 10
    proc.write()
    sampler.sample()
    assert sampler.ratio() is None


def test_no_ticks_between_samples(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=60, clock=clock)
    sampler.sample()
    clock.now += 5
    sampler.sample()
    assert sampler.ratio() is None


def test_memory_is_bounded_at_any_rate(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=10, clock=clock, resolution=20)
    sampler.sample()
    # 4,000 samples 10 ms apart (40 s, four windows) at a steady 30 %; the
    # counters move every tenth sample, as ticks would at that rate.
    for n in range(1, 4_001):
        clock.now += 0.01
        if n % 10 == 0:
            proc.run(busy=3, idle=7)
        sampler.sample()
        assert len(sampler) <= 22
    assert len(sampler) >= 20
    assert sampler.ratio() == pytest.approx(0.30)


def test_thinned_samples_still_span_the_window(
    tmp_path: Path, proc: FakeProc, clock: Clock
) -> None:
    sampler = CpuSampler(tmp_path, window=60, clock=clock, resolution=6)
    sampler.sample()
    for second in range(1, 181):
        clock.now += 1
        # 90 % busy for the first two minutes, 20 % in the last one.
        if second <= 120:
            proc.run(busy=90, idle=10)
        else:
            proc.run(busy=20, idle=80)
        sampler.sample()
    assert sampler.ratio() == pytest.approx(0.20)


def test_same_instant_replaces_newest(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=60, clock=clock)
    sampler.sample()
    proc.run(busy=5, idle=5)
    sampler.sample()
    assert len(sampler) == 1


def test_read_errors_keep_history(tmp_path: Path, proc: FakeProc, clock: Clock) -> None:
    sampler = CpuSampler(tmp_path, window=60, clock=clock)
    sampler.sample()
    clock.now += 5
    proc.run(busy=40, idle=60)
    sampler.sample()
    (tmp_path / "stat").write_text("nonsense\n")
    with pytest.raises(ValueError, match="/proc/stat"):
        sampler.sample()
    (tmp_path / "stat").unlink()
    with pytest.raises(FileNotFoundError):
        sampler.sample()
    assert len(sampler) == 2
    assert sampler.ratio() == pytest.approx(0.40)


@pytest.mark.parametrize(("window", "resolution"), [(0, 60), (-1, 60), (60, 0)])
def test_rejects_bad_settings(tmp_path: Path, window: float, resolution: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        CpuSampler(tmp_path, window=window, resolution=resolution)
