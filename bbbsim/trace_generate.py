"""Synthetic load traces: a university week and an exam flash crowd.

Both are seeded (the same seed gives the same file) and scale with ``scale``
(meetings, or exam users, times ``scale``), so one generator gives the README's
traces and the benchmark's 100-node week.

- ``university-week``: Monday 00:00 to Sunday 24:00. On weekdays lectures start
  at the quarter hours: a steep ramp from 07:00 to about 225 meetings at 08:15,
  a lunch dip, a slow decline from 16:00, evenings and nights low; weekends
  low. Meetings of about 8 users (1 or 2 cameras mostly), lectures of 45, 60 or
  90 minutes; on Tuesday and Thursday at 10:00 a mass lecture of 280 users that
  alone overloads a host.
- ``exam-flash``: six hours of light traffic, and at 02:00 an exam: 1,500 users
  in rooms of 20-40 (one camera, the invigilator's) all joining within 5
  minutes, for 95-120 minutes (the light traffic's meetings last at most 90).

Each 5-minute step (quarter hour in lecture time) the generator starts as many
meetings as the profile's level lacks, so the running count follows the profile
and meetings that end are replaced in waves, as lectures are.

Recordings (the ``recorded`` column): most lectures are recorded (70 % of
weekday meetings started between 07:00 and 18:00, and every mass lecture), few
other meetings (10 %: evening and weekend study groups, stand-ups, the exam
night's background traffic), and no exam room (invigilated rooms are watched,
not recorded). The choice uses a random stream of its own, so the meetings
themselves are the same as without it.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Final, Literal

from bbbsim.trace import TraceMeeting

Kind = Literal["university-week", "exam-flash"]
KINDS: Final[tuple[Kind, ...]] = ("university-week", "exam-flash")

DAY: Final = 86_400
HOUR: Final = 3_600
MINUTE: Final = 60
STEP: Final = 5 * MINUTE
PEAK_MEETINGS: Final = 225
EXAM_USERS: Final = 1_500

Profile = Sequence[tuple[float, float]]
"""(hour of the day, share of the peak), linear in between."""

WEEKDAY: Final[Profile] = (
    (0.0, 0.02),
    (7.0, 0.02),
    (8.25, 1.0),
    (12.0, 1.0),
    (12.25, 0.6),
    (13.0, 0.6),
    (13.25, 0.9),
    (16.0, 0.85),
    (18.0, 0.3),
    (20.0, 0.12),
    (22.0, 0.05),
    (24.0, 0.02),
)
FRIDAY: Final[Profile] = (*WEEKDAY[:6], (13.25, 0.7), (15.0, 0.6), (17.0, 0.15), *WEEKDAY[-3:])
WEEKEND: Final[Profile] = (
    (0.0, 0.01),
    (9.0, 0.02),
    (10.0, 0.07),
    (17.0, 0.07),
    (19.0, 0.03),
    (24.0, 0.01),
)
MASS_LECTURE_USERS: Final = 280
RECORDED_LECTURES: Final = 0.7
"""Share of lectures recorded: most."""
RECORDED_OTHER: Final = 0.1
"""Share of other meetings recorded: few."""


def _level(profile: Profile, hour: float) -> float:
    for (h0, v0), (h1, v1) in itertools.pairwise(profile):
        if h0 <= hour <= h1:
            return v0 if h1 == h0 else v0 + (v1 - v0) * (hour - h0) / (h1 - h0)
    return profile[-1][1]


def _participants(rng: random.Random) -> int:
    # A right-skewed size, about 8 on average: most meetings small, a few seminars of 20-40.
    return max(2, min(60, round(rng.lognormvariate(1.93, 0.5))))


def _cameras(rng: random.Random, participants: int) -> int:
    return min(participants, rng.choices((0, 1, 2, 3), weights=(25, 50, 20, 5))[0])


def _fill(
    rng: random.Random,
    days: int,
    target: Callable[[float], float],
    slot: Callable[[float], int],
    duration: Callable[[float], float],
) -> list[TraceMeeting]:
    """Meetings whose running count follows ``target(t)``, started at multiples of ``slot(t)``."""
    meetings: list[TraceMeeting] = []
    ends: list[float] = []
    for step in range(days * DAY // STEP):
        t = float(step * STEP)
        if step * STEP % slot(t):
            continue
        while ends and ends[0] <= t:
            heapq.heappop(ends)
        lacking = round(target(t)) - len(ends)
        for _ in range(max(0, lacking)):
            # Rooms open a little before the hour and people straggle in after it.
            start = max(0.0, t + rng.randint(-3 * MINUTE, 2 * MINUTE))
            length = duration(t)
            p = _participants(rng)
            meetings.append(TraceMeeting(start, length, p, _cameras(rng, p)))
            heapq.heappush(ends, start + length)
    return meetings


def university_week(seed: int, scale: float = 1.0) -> list[TraceMeeting]:
    """Seven days of lectures; about ``225 * scale`` meetings at a weekday's peak."""
    rng = random.Random(seed)

    def profile(t: float) -> Profile:
        day = int(t // DAY)
        return WEEKEND if day >= 5 else FRIDAY if day == 4 else WEEKDAY

    def target(t: float) -> float:
        return PEAK_MEETINGS * scale * _level(profile(t), t % DAY / HOUR)

    def lecture_time(t: float) -> bool:
        return int(t // DAY) < 5 and 7 * HOUR <= t % DAY < 18 * HOUR

    def slot(t: float) -> int:
        return 15 * MINUTE if lecture_time(t) else STEP

    def duration(t: float) -> float:
        if lecture_time(t):
            base = rng.choices((45, 60, 90), weights=(3, 3, 4))[0]
            return float((base + rng.randint(-3, 3)) * MINUTE)
        return float(rng.randint(20, 120) * MINUTE)

    meetings = _fill(rng, 7, target, slot, duration)
    for day in (1, 3):
        for _ in range(max(1, round(scale))):
            start = float(day * DAY + 10 * HOUR + rng.randint(-2, 2) * MINUTE)
            meetings.append(TraceMeeting(start, 90.0 * MINUTE, MASS_LECTURE_USERS, 1))
    recording = _recording_stream("university-week", seed)

    def share(m: TraceMeeting) -> float:
        if m.participants == MASS_LECTURE_USERS:
            return 1.0
        # Rooms open up to 3 minutes before the quarter hour: judged by the slot they serve.
        return RECORDED_LECTURES if lecture_time(m.start_s + 3 * MINUTE) else RECORDED_OTHER

    return [_record(m, recording, share(m)) for m in sorted(meetings, key=lambda m: m.start_s)]


def exam_flash(seed: int, scale: float = 1.0) -> list[TraceMeeting]:
    """Six hours: light traffic, then ``1,500 * scale`` exam users within 5 minutes at 02:00."""
    rng = random.Random(seed)
    # Light traffic starts until 05:00 and is over by 06:30.
    meetings = _fill(
        rng,
        1,
        lambda t: 20 * scale if t < 5 * HOUR else 0.0,
        lambda t: STEP,
        lambda t: float(rng.randint(30, 90) * MINUTE),
    )
    users = math.floor(EXAM_USERS * scale)
    begin = 2 * HOUR
    while users > 0:
        room = rng.randint(20, 40)
        if users - room < 20:
            room = users  # the last room takes the rest, so the total is exact
        users -= room
        start = float(begin + rng.randint(0, 5 * MINUTE - 1))
        length = float(rng.randint(95, 120) * MINUTE)
        meetings.append(TraceMeeting(start, length, room, 1, recorded=False))
    exam_end = begin + 5 * MINUTE
    recording = _recording_stream("exam-flash", seed)
    return [
        # Exam rooms (long, started in the exam's 5 minutes) are not recorded.
        m
        if begin <= m.start_s < exam_end and m.duration_s > 90 * MINUTE
        else _record(m, recording, RECORDED_OTHER)
        for m in sorted(meetings, key=lambda m: m.start_s)
    ]


def _recording_stream(kind: Kind, seed: int) -> random.Random:
    """A random stream for the recorded flags only (a str seed is hashed with SHA-512)."""
    return random.Random(f"recorded:{kind}:{seed}")


def _record(m: TraceMeeting, rng: random.Random, share: float) -> TraceMeeting:
    return dataclasses.replace(m, recorded=rng.random() < share)


def generate(kind: Kind, seed: int, scale: float = 1.0) -> list[TraceMeeting]:
    if kind == "university-week":
        return university_week(seed, scale)
    return exam_flash(seed, scale)
