"""CPU model of an emulated BBB host, and the synthetic ``/proc/stat`` it writes.

The model
---------
A BBB host's CPU goes to four kinds of work, each counted in *busy cores*
(core-seconds per second):

* a small idle base: the JVMs, Redis, nginx, node processes with no meeting;
* per participant: the HTML5/GraphQL session, akka-apps state, presence;
* per voice user (microphone in the FreeSWITCH conference, dial-in included):
  decoding, mixing and re-encoding audio;
* video, in two parts: one cost per camera (the publisher's stream enters the
  SFU once) and one per *video downstream* (the SFU forwards every camera of a
  meeting to every other participant of that meeting, encrypting each copy).
  A meeting with ``P`` viewers and ``C`` cameras has ``C * (P - 1)``
  downstreams, so video grows with cameras x viewers, which is what makes
  camera-heavy meetings the expensive ones.

::

    busy = idle + a*participants + b*voice + c*cameras + d*downstreams
    utilization = min(1, busy / cores)

Calibration (``DEFAULT_COST``): a reference 8-core host carrying 200
participants in 10 typical classes of 20 -- 5 of them on the microphone,
cameras alternating 1 and 2 per class (15 cameras, 285 downstreams) -- is
busy with 0.25 + 200*0.012 + 50*0.02 + 15*0.03 + 285*0.008 = 6.38 cores,
i.e. 0.7975 of 8 cores: the "about 200 users at 80 %" that BBB operators quote
for such a box, and the level where audio starts to suffer. ``reference_load``
builds that scenario so the calibration is checked by a test.

The ``/proc/stat`` writer
-------------------------
``ProcStat`` keeps cumulative jiffies per core and writes a file in the Linux
format. Each time it advances, ``USER_HZ * elapsed`` jiffies pass on every core
and the busy share of the total is ``utilization`` (rounded with a carried
remainder, so it is exact over time and off by at most one jiffy per read).
Busy time lands in user/system/softirq, idle time in idle/iowait; ``guest`` and
``guest_nice`` stay 0, so a reader is right whether or not it adds them to the
total. A reader computing ``(total - idle - iowait)`` deltas over ``total``
deltas between two writes gets the model's utilization for that interval.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from bbbcore import logs

log = logs.get(__name__)

USER_HZ = 100
DEFAULT_CORES = 8

# Fractions of busy time booked as system and softirq (the rest is user), and of
# idle time booked as iowait: plausible for a media server, and irrelevant to a
# reader that only separates busy from idle.
_SYSTEM_SHARE = 0.22
_SOFTIRQ_SHARE = 0.06
_IOWAIT_SHARE = 0.01
# Guards floor() against float noise such as 0.57 * 100 == 56.99999999999999.
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class HostLoad:
    """What a host carries: the inputs of the CPU model."""

    participants: int = 0
    voice: int = 0
    cameras: int = 0
    video_downstreams: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0")

    def __add__(self, other: HostLoad) -> HostLoad:
        return HostLoad(
            participants=self.participants + other.participants,
            voice=self.voice + other.voice,
            cameras=self.cameras + other.cameras,
            video_downstreams=self.video_downstreams + other.video_downstreams,
        )


@dataclass(frozen=True, slots=True)
class CpuCost:
    """Busy cores per unit of load (see the module docstring for the calibration)."""

    idle_cores: float = 0.25
    per_participant: float = 0.012
    per_voice: float = 0.02
    per_camera: float = 0.03
    per_video_downstream: float = 0.008


DEFAULT_COST = CpuCost()


def meeting_load(
    participants: int, voice: int = 0, cameras: int = 0, video_receivers: int | None = None
) -> HostLoad:
    """Load of one meeting; every camera reaches every other video receiver.

    ``video_receivers`` defaults to ``participants``; pass fewer when some
    participants (dial-in callers) cannot receive video.
    """
    receivers = participants if video_receivers is None else video_receivers
    return HostLoad(
        participants=participants,
        voice=voice,
        cameras=cameras,
        video_downstreams=cameras * max(0, receivers - 1),
    )


def total_load(loads: Iterable[HostLoad]) -> HostLoad:
    """Sum of several meetings' loads."""
    result = HostLoad()
    for load in loads:
        result = result + load
    return result


def busy_cores(load: HostLoad, cost: CpuCost = DEFAULT_COST) -> float:
    """Core-seconds per second the host spends on ``load`` (not clamped)."""
    return (
        cost.idle_cores
        + cost.per_participant * load.participants
        + cost.per_voice * load.voice
        + cost.per_camera * load.cameras
        + cost.per_video_downstream * load.video_downstreams
    )


def cpu_utilization(
    load: HostLoad, cores: int = DEFAULT_CORES, cost: CpuCost = DEFAULT_COST
) -> float:
    """Utilisation 0..1 of a host with ``cores`` cores carrying ``load``."""
    if cores < 1:
        raise ValueError("cores must be >= 1")
    return min(1.0, busy_cores(load, cost) / cores)


def reference_load() -> HostLoad:
    """The calibration scenario: 10 classes of 20, 5 voices each, 1 or 2 cameras."""
    return total_load(meeting_load(participants=20, voice=5, cameras=1 + i % 2) for i in range(10))


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """One ``cpu`` line of ``/proc/stat``, in jiffies."""

    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0
    guest: int = 0
    guest_nice: int = 0

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(CpuTimes)))

    @property
    def idle_all(self) -> int:
        return self.idle + self.iowait

    @property
    def total(self) -> int:
        # guest time is already inside user (Linux accounts it twice), so it is left out.
        return (
            self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
        )

    @property
    def busy(self) -> int:
        return self.total - self.idle_all

    def line(self, label: str) -> str:
        values = " ".join(str(getattr(self, f.name)) for f in fields(CpuTimes))
        return f"{label} {values}"


def split_jiffies(busy: int, idle: int) -> CpuTimes:
    """Book ``busy`` jiffies as user/system/softirq and ``idle`` as idle/iowait."""
    system = math.floor(busy * _SYSTEM_SHARE)
    softirq = math.floor(busy * _SOFTIRQ_SHARE)
    iowait = math.floor(idle * _IOWAIT_SHARE)
    return CpuTimes(
        user=busy - system - softirq,
        system=system,
        softirq=softirq,
        idle=idle - iowait,
        iowait=iowait,
    )


def distribute(amount: int, parts: int, offset: int = 0) -> tuple[int, ...]:
    """``amount`` split into ``parts`` near-equal integers; the extra units go to
    the parts starting at ``offset`` so repeated calls spread them round."""
    base, extra = divmod(amount, parts)
    return tuple(base + (1 if (i - offset) % parts < extra else 0) for i in range(parts))


@dataclass(frozen=True, slots=True)
class StatCounters:
    """Cumulative state behind one ``/proc/stat`` file."""

    cores: tuple[CpuTimes, ...]
    carry: float = 0.0
    rotation: int = 0

    @property
    def aggregate(self) -> CpuTimes:
        result = CpuTimes()
        for core in self.cores:
            result = result + core
        return result


def initial_counters(cores: int, uptime_jiffies: int = 0) -> StatCounters:
    """Counters of a host that has been idle for ``uptime_jiffies`` per core."""
    if cores < 1:
        raise ValueError("cores must be >= 1")
    return StatCounters(cores=tuple(split_jiffies(0, uptime_jiffies) for _ in range(cores)))


def advance_counters(
    counters: StatCounters, jiffies_per_core: int, utilization: float
) -> StatCounters:
    """Counters after ``jiffies_per_core`` jiffies at ``utilization`` on every core."""
    if jiffies_per_core < 0:
        raise ValueError("time does not run backwards")
    u = min(1.0, max(0.0, utilization))
    n = len(counters.cores)
    total = jiffies_per_core * n
    # The carry keeps the fractional busy jiffy for the next step, so busy time
    # over many steps is u * total to within one jiffy.
    exact = u * total + counters.carry
    busy = min(total, math.floor(exact + _EPSILON))
    carry = max(0.0, exact - busy) if busy < total else 0.0
    shares = distribute(busy, n, counters.rotation)
    cores = tuple(
        core + split_jiffies(share, jiffies_per_core - share)
        for core, share in zip(counters.cores, shares, strict=True)
    )
    return StatCounters(cores=cores, carry=carry, rotation=(counters.rotation + busy) % n)


def render_proc_stat(counters: StatCounters, boot_time: int, utilization: float) -> str:
    """The text of ``/proc/stat`` for ``counters``, in the Linux layout."""
    agg = counters.aggregate
    # Interrupt, context-switch and fork counters only need to be plausible and
    # monotonic; derive them from the jiffies so they are.
    intr = agg.total * 4 + agg.busy * 20
    ctxt = agg.total * 6 + agg.busy * 60
    softirq_total = agg.total * 2 + agg.busy * 10
    sirq_timer, sirq_net_rx, sirq_sched, sirq_rcu = distribute(softirq_total, 4)
    processes = 1000 + agg.busy // 50
    running = 1 + round(min(1.0, max(0.0, utilization)) * len(counters.cores))
    # Linux pads the aggregate label to the width of "cpuN": "cpu  123 ...".
    lines = [agg.line("cpu ")]
    lines += [core.line(f"cpu{i}") for i, core in enumerate(counters.cores)]
    lines += [
        f"intr {intr} 0 {agg.total * 4} 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
        f"ctxt {ctxt}",
        f"btime {boot_time}",
        f"processes {processes}",
        f"procs_running {running}",
        "procs_blocked 0",
        (f"softirq {softirq_total} 0 {sirq_timer} 0 {sirq_net_rx} 0 0 0 {sirq_sched} 0 {sirq_rcu}"),
    ]
    return "\n".join(lines) + "\n"


class ProcStat:
    """Writes ``<root>/stat`` for one emulated host whose CPU follows the model.

    Time comes from ``clock`` (seconds, monotonic); the utilisation set with
    ``set_utilization`` holds until the next call, and the time before a call
    is booked at the previous value.
    """

    def __init__(
        self,
        root: Path,
        cores: int = DEFAULT_CORES,
        clock: Callable[[], float] = time.monotonic,
        boot_time: int | None = None,
        initial_uptime: float = 100.0,
        utilization: float = 0.0,
    ) -> None:
        self._root = Path(root)
        self._clock = clock
        self._start = clock()
        self._booked = 0
        self._utilization = min(1.0, max(0.0, utilization))
        self._boot_time = int(time.time()) if boot_time is None else boot_time
        uptime_jiffies = math.floor(initial_uptime * USER_HZ + _EPSILON)
        self._counters = initial_counters(cores, uptime_jiffies)

    @property
    def path(self) -> Path:
        """Where the file is written."""
        return self._root / "stat"

    @property
    def utilization(self) -> float:
        """The utilisation currently being booked."""
        return self._utilization

    @property
    def counters(self) -> StatCounters:
        """The cumulative counters up to the last advance."""
        return self._counters

    def advance(self) -> None:
        """Book the time since the last advance at the current utilisation."""
        elapsed = math.floor((self._clock() - self._start) * USER_HZ + _EPSILON)
        step = elapsed - self._booked
        if step > 0:
            self._counters = advance_counters(self._counters, step, self._utilization)
            self._booked = elapsed

    def set_utilization(self, utilization: float) -> None:
        """Book time so far at the old value, then switch to ``utilization`` (clamped)."""
        self.advance()
        self._utilization = min(1.0, max(0.0, utilization))

    def render(self) -> str:
        """Advance and return the file's text."""
        self.advance()
        return render_proc_stat(self._counters, self._boot_time, self._utilization)

    def write(self) -> Path:
        """Advance and replace ``<root>/stat`` atomically (temp file + rename)."""
        text = self.render()
        self._root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".stat.", dir=self._root)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path
