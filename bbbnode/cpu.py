"""``bbbnode_cpu_utilization_ratio``: the host's busy share of CPU time over a window.

Read from the aggregate ``cpu`` line of ``/proc/stat`` (jiffies since boot, every
CPU summed). Busy is user + nice + system + irq + softirq + steal; idle is
idle + iowait, since a CPU waiting on I/O could run a meeting. guest and
guest_nice are already inside user and nice, so they are not added again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bbbcore import logs

log = logs.get(__name__)

# Column order of the cpu line (proc(5)); kernels before 2.6.11 stop early.
_USER, _NICE, _SYSTEM, _IDLE, _IOWAIT, _IRQ, _SOFTIRQ, _STEAL = range(8)
_MIN_COLUMNS = 4  # user nice system idle: every Linux since 2.4
_KNOWN_COLUMNS = 10  # ... steal guest guest_nice; later additions are ignored


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative CPU time of the whole host, in clock ticks."""

    busy: int
    idle: int

    @property
    def total(self) -> int:
        return self.busy + self.idle


def parse_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat``; raises ValueError if there is none."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] != "cpu":
            continue
        columns = fields[1 : 1 + _KNOWN_COLUMNS]
        if len(columns) < _MIN_COLUMNS:
            raise ValueError(f"/proc/stat cpu line has {len(columns)} columns, need 4: {line!r}")
        if not all(c.isdecimal() for c in columns):
            raise ValueError(f"/proc/stat cpu line is not counters: {line!r}")
        v = [int(c) for c in columns] + [0] * (_KNOWN_COLUMNS - len(columns))
        busy = v[_USER] + v[_NICE] + v[_SYSTEM] + v[_IRQ] + v[_SOFTIRQ] + v[_STEAL]
        return CpuTimes(busy=busy, idle=v[_IDLE] + v[_IOWAIT])
    raise ValueError("no aggregate cpu line in /proc/stat")


@dataclass(frozen=True, slots=True)
class _Sample:
    t: float
    times: CpuTimes


class CpuSampler:
    """Samples ``<procfs>/stat`` and averages utilisation over the last ``window`` seconds.

    Samples are kept at least ``window / resolution`` apart: while the newest
    is closer than that to the one before it, a new reading replaces it rather
    than being added. So at most ``resolution + 2`` samples are held at any
    sample rate, and the newest is always the latest reading.
    """

    def __init__(
        self,
        procfs: Path,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        resolution: int = 60,
    ) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        if resolution < 1:
            raise ValueError("resolution must be at least 1")
        self._path = procfs / "stat"
        self._window = window
        self._clock = clock
        self._spacing = window / resolution
        # The spacing rule keeps it to resolution + 2 after each sample; maxlen
        # is the backstop, one larger so an append never drops a needed sample.
        self._samples: deque[_Sample] = deque(maxlen=resolution + 3)

    def __len__(self) -> int:
        """Samples held now (never more than ``resolution + 2``)."""
        return len(self._samples)

    def sample(self) -> CpuTimes:
        """Read ``stat`` once and record it; OSError and ValueError leave the history as it was."""
        times = parse_stat(self._path.read_text(encoding="ascii"))
        now = self._clock()
        samples = self._samples
        if samples:
            last = samples[-1]
            if now < last.t or times.busy < last.times.busy or times.idle < last.times.idle:
                # Counters that go back (a restored snapshot, a new boot seen
                # through the same path) make every delta meaningless.
                log.warning("cpu_counters_reset", busy=times.busy, idle=times.idle)
                samples.clear()
        new = _Sample(now, times)
        if samples and (
            now == samples[-1].t
            or (len(samples) >= 2 and samples[-1].t - samples[-2].t < self._spacing)
        ):
            # The newest is too close to the one before it to be worth keeping.
            samples[-1] = new
        else:
            samples.append(new)
        start = now - self._window
        # The oldest sample inside the window; when only the newest is inside
        # (sampling slower than the window), the one before it instead.
        while len(samples) > 2 and samples[0].t < start:
            samples.popleft()
        return times

    def ratio(self) -> float | None:
        """Busy share (0..1) between the oldest sample in the window and the newest.

        None until two samples exist, or when no tick passed between them.
        """
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0].times, self._samples[-1].times
        total = last.total - first.total
        if total <= 0:
            return None
        return (last.busy - first.busy) / total
