"""Synthetic load traces: a university week, an exam flash crowd, a company's week; one
week or several.

All are seeded (the same seed gives the same file) and scale with ``scale``
(meetings, or exam users, times ``scale``), so one generator gives the README's
traces and the benchmark's 100-node week.

**Several weeks** (``weeks`` > 1) are what a forecast learns from: week ``w``
starts at ``w * 7 days`` (a Monday). Each week and each day gets a level of its
own (week-to-week noise: ``WEEK_NOISE``, ``DAY_NOISE``, drawn from a stream of
their own), the term grows in its last weeks (``GROWTH``: the last week about
10 % busier than the first ones), and one weekday of the second week and one of
the last are public holidays at ``HOLIDAY`` (20 %) of a normal day (for the exam,
the second week has no exam: a week off). One week (``weeks`` 1) is the
trace as it always was.

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

- ``company-week``: a company with two offices: Europe's day (08:00-17:00 UTC, a
  lunch dip) and, from 13:00 UTC, the Americas' (to 22:00 UTC, 60 % as many
  meetings), so the afternoon is the peak and the evening still busy; meetings of
  3-12 people with more cameras start on the hour and the half hour and last 25,
  30, 50 or 60 minutes, so most of the fleet turns over every half hour;
  Monday 09:00 UTC an all-hands of 350 people; Friday afternoons short;
  weekends nearly empty.

Recordings (the ``recorded`` column): most lectures are recorded (70 % of
weekday meetings started between 07:00 and 18:00, and every mass lecture), few
other meetings (10 %: evening and weekend study groups, stand-ups, the exam
night's background traffic), and no exam room (invigilated rooms are watched,
not recorded); in the company, 20 % of the meetings and the all-hands. The choice
uses a random stream of its own, so the meetings themselves are the same as
without it.
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

Kind = Literal["university-week", "exam-flash", "company-week"]
KINDS: Final[tuple[Kind, ...]] = ("university-week", "exam-flash", "company-week")

DAY: Final = 86_400
WEEK: Final = 7 * DAY
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
WEEK_NOISE: Final = 0.05
"""Standard deviation of a week's level (a share of normal)."""
DAY_NOISE: Final = 0.05
"""Standard deviation of a day's level within its week."""
GROWTH: Final = (0.05, 0.10)
"""The level added in the second-to-last and the last week of a term of 3 weeks or more."""
HOLIDAY: Final = 0.2
"""A public holiday's level, a share of a normal day's."""
HOLIDAYS: Final = ((1, 0), (-1, 3))
"""(week, weekday) of the public holidays in a term of 3 weeks or more: Monday of the
second week, Thursday of the last (negative: counted from the end)."""
COMPANY_PEAK: Final = 180
ALL_HANDS_USERS: Final = 350
RECORDED_COMPANY: Final = 0.2
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
    size: Callable[[random.Random], int] = _participants,
    cameras: Callable[[random.Random, int], int] = _cameras,
    offset: float = 0.0,
) -> list[TraceMeeting]:
    """Meetings whose running count follows ``target(t)``, started at multiples of ``slot(t)``
    (``t`` from ``offset`` on)."""
    meetings: list[TraceMeeting] = []
    ends: list[float] = []
    for step in range(days * DAY // STEP):
        t = offset + float(step * STEP)
        if step * STEP % slot(t):
            continue
        while ends and ends[0] <= t:
            heapq.heappop(ends)
        lacking = round(target(t)) - len(ends)
        for _ in range(max(0, lacking)):
            # Rooms open a little before the hour and people straggle in after it.
            start = max(0.0, t + rng.randint(-3 * MINUTE, 2 * MINUTE))
            length = duration(t)
            p = size(rng)
            meetings.append(TraceMeeting(start, length, p, cameras(rng, p)))
            heapq.heappush(ends, start + length)
    return meetings


def levels(kind: Kind, seed: int, weeks: int) -> Callable[[float], float]:
    """The level of each day of a term of ``weeks`` weeks, a share of normal: week-to-week
    and day-to-day noise, the growth of the last weeks, the holidays (all 1 for one week)."""
    if weeks <= 1:
        return lambda t: 1.0
    rng = random.Random(f"levels:{kind}:{seed}")
    week_level = [1.0 + rng.gauss(0.0, WEEK_NOISE) for _ in range(weeks)]
    if weeks >= 3:
        for back, extra in zip((2, 1), GROWTH, strict=True):
            week_level[weeks - back] += extra
    day_level = [[1.0 + rng.gauss(0.0, DAY_NOISE) for _ in range(7)] for _ in range(weeks)]
    if weeks >= 3:
        for w, d in HOLIDAYS:
            day_level[w % weeks][d] = HOLIDAY / week_level[w % weeks]

    def level(t: float) -> float:
        w = min(weeks - 1, max(0, int(t // WEEK)))
        d = int(t % WEEK // DAY)
        return week_level[w] * day_level[w][d]

    return level


def _weekday(t: float) -> int:
    """0 (Monday) to 6 (Sunday) of trace second ``t``."""
    return int(t % WEEK // DAY)


def university_week(seed: int, scale: float = 1.0, weeks: int = 1) -> list[TraceMeeting]:
    """``weeks`` weeks of lectures; about ``225 * scale`` meetings at a weekday's peak."""
    rng = random.Random(seed)
    level = levels("university-week", seed, weeks)

    def profile(t: float) -> Profile:
        day = _weekday(t)
        return WEEKEND if day >= 5 else FRIDAY if day == 4 else WEEKDAY

    def target(t: float) -> float:
        return PEAK_MEETINGS * scale * level(t) * _level(profile(t), t % DAY / HOUR)

    def lecture_time(t: float) -> bool:
        return _weekday(t) < 5 and 7 * HOUR <= t % DAY < 18 * HOUR

    def slot(t: float) -> int:
        return 15 * MINUTE if lecture_time(t) else STEP

    def duration(t: float) -> float:
        if lecture_time(t):
            base = rng.choices((45, 60, 90), weights=(3, 3, 4))[0]
            return float((base + rng.randint(-3, 3)) * MINUTE)
        return float(rng.randint(20, 120) * MINUTE)

    meetings = _fill(rng, 7 * weeks, target, slot, duration)
    for week in range(weeks):
        for day in (1, 3):
            at = week * WEEK + day * DAY + 10 * HOUR
            if level(at) < 0.5:
                continue  # a holiday: no mass lecture
            for _ in range(max(1, round(scale))):
                start = float(at + rng.randint(-2, 2) * MINUTE)
                meetings.append(TraceMeeting(start, 90.0 * MINUTE, MASS_LECTURE_USERS, 1))
    recording = _recording_stream("university-week", seed)

    def share(m: TraceMeeting) -> float:
        if m.participants == MASS_LECTURE_USERS:
            return 1.0
        # Rooms open up to 3 minutes before the quarter hour: judged by the slot they serve.
        return RECORDED_LECTURES if lecture_time(m.start_s + 3 * MINUTE) else RECORDED_OTHER

    return [_record(m, recording, share(m)) for m in sorted(meetings, key=lambda m: m.start_s)]


def exam_flash(seed: int, scale: float = 1.0, weeks: int = 1) -> list[TraceMeeting]:
    """Six hours: light traffic, then ``1,500 * scale`` exam users within 5 minutes at 02:00;
    with ``weeks``, the same night every Monday (the second week's without its exam)."""
    rng = random.Random(seed)
    level = levels("exam-flash", seed, weeks)
    meetings: list[TraceMeeting] = []
    exams: list[tuple[float, float]] = []
    for week in range(weeks):
        night = float(week * WEEK)

        def light(t: float, night: float = night) -> float:
            # Light traffic starts until 05:00 and is over by 06:30.
            return 20 * scale * level(t) if t - night < 5 * HOUR else 0.0

        meetings += _fill(
            rng,
            1,
            light,
            lambda t: STEP,
            lambda t: float(rng.randint(30, 90) * MINUTE),
            offset=night,
        )
        if weeks >= 3 and week == 1:
            continue  # a week without the exam
        users = math.floor(EXAM_USERS * scale * level(night))
        begin = night + 2 * HOUR
        while users > 0:
            room = rng.randint(20, 40)
            if users - room < 20:
                room = users  # the last room takes the rest, so the total is exact
            users -= room
            start = float(begin + rng.randint(0, 5 * MINUTE - 1))
            length = float(rng.randint(95, 120) * MINUTE)
            meetings.append(TraceMeeting(start, length, room, 1, recorded=False))
        exams.append((begin, begin + 5 * MINUTE))
    recording = _recording_stream("exam-flash", seed)

    def exam_room(m: TraceMeeting) -> bool:
        # Exam rooms (long, started in the exam's 5 minutes) are not recorded.
        return m.duration_s > 90 * MINUTE and any(b <= m.start_s < e for b, e in exams)

    return [
        m if exam_room(m) else _record(m, recording, RECORDED_OTHER)
        for m in sorted(meetings, key=lambda m: m.start_s)
    ]


COMPANY_EUROPE: Final[Profile] = (
    (0.0, 0.0),
    (7.0, 0.02),
    (8.0, 0.45),
    (9.0, 1.0),
    (12.0, 0.95),
    (12.5, 0.5),
    (13.25, 0.9),
    (16.0, 0.8),
    (17.5, 0.2),
    (19.0, 0.03),
    (24.0, 0.0),
)
COMPANY_AMERICAS: Final[Profile] = (
    (0.0, 0.0),
    (12.5, 0.0),
    (14.0, 0.6),
    (17.0, 0.6),
    (17.5, 0.35),
    (18.5, 0.55),
    (21.5, 0.4),
    (23.0, 0.05),
    (24.0, 0.0),
)
COMPANY_WEEKEND: Final[Profile] = ((0.0, 0.0), (10.0, 0.02), (16.0, 0.02), (24.0, 0.0))


def _company_size(rng: random.Random) -> int:
    return rng.randint(3, 12)


def _company_cameras(rng: random.Random, participants: int) -> int:
    # Colleagues turn cameras on more than students do.
    return min(participants, rng.choices((0, 1, 2, 3, 4), weights=(10, 25, 30, 20, 15))[0])


def company_week(seed: int, scale: float = 1.0, weeks: int = 1) -> list[TraceMeeting]:
    """``weeks`` weeks of a company with two offices; about ``180 * scale`` meetings at the
    afternoon's peak."""
    rng = random.Random(seed)
    level = levels("company-week", seed, weeks)

    def target(t: float) -> float:
        day, hour = _weekday(t), t % DAY / HOUR
        if day >= 5:
            share = _level(COMPANY_WEEKEND, hour)
        else:
            share = _level(COMPANY_EUROPE, hour) + _level(COMPANY_AMERICAS, hour)
            if day == 4 and hour >= 14:
                share *= 0.6  # Friday afternoon
        return COMPANY_PEAK / 1.5 * scale * level(t) * share

    def duration(t: float) -> float:
        return float((rng.choice((25, 30, 50, 60)) + rng.randint(-2, 2)) * MINUTE)

    meetings = _fill(
        rng,
        7 * weeks,
        target,
        lambda t: 30 * MINUTE,
        duration,
        size=_company_size,
        cameras=_company_cameras,
    )
    for week in range(weeks):
        at = week * WEEK + 9 * HOUR
        if level(at) >= 0.5:
            for _ in range(max(1, round(scale))):
                start = float(at + rng.randint(-2, 2) * MINUTE)
                meetings.append(TraceMeeting(start, 60.0 * MINUTE, ALL_HANDS_USERS, 1))
    recording = _recording_stream("company-week", seed)

    def share(m: TraceMeeting) -> float:
        return 1.0 if m.participants == ALL_HANDS_USERS else RECORDED_COMPANY

    return [_record(m, recording, share(m)) for m in sorted(meetings, key=lambda m: m.start_s)]


def _recording_stream(kind: Kind, seed: int) -> random.Random:
    """A random stream for the recorded flags only (a str seed is hashed with SHA-512)."""
    return random.Random(f"recorded:{kind}:{seed}")


def _record(m: TraceMeeting, rng: random.Random, share: float) -> TraceMeeting:
    return dataclasses.replace(m, recorded=rng.random() < share)


def generate(kind: Kind, seed: int, scale: float = 1.0, weeks: int = 1) -> list[TraceMeeting]:
    """The trace of ``kind``: ``weeks`` weeks of it (the exam: a night a week)."""
    if kind == "university-week":
        return university_week(seed, scale, weeks)
    if kind == "company-week":
        return company_week(seed, scale, weeks)
    return exam_flash(seed, scale, weeks)
