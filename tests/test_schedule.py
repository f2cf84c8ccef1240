"""Scheduled capacity: local-time windows (past midnight, DST), lead time, overlaps, validation."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from bbbcore.config import ConfigError, load_settings
from bbbscaler.model import Action, FleetSnapshot, Node, WindowMiss
from bbbscaler.policy import History, PolicyConfig, bounds, decide
from bbbscaler.schedule import Window, in_effect, scheduled_minimum
from bbbscaler.settings import ScalerSettings, ScheduleSettings
from tests.scaler_fleets import booting, required_settings, serving, snapshot

BERLIN = "Europe/Berlin"


def window(start: str, end: str, **fields: Any) -> Window:
    fields.setdefault("name", "w")
    fields.setdefault("min_nodes", 3)
    return Window.from_settings(ScheduleSettings(start=start, end=end, **fields))


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


def open_minutes(w: Window, start: float, hours: int) -> int:
    return sum(w.open_at(start + 60 * m) for m in range(60 * hours))


# 2026-01-05 is a Monday, 2026-01-09 a Friday.


def test_a_daytime_window_on_weekdays() -> None:
    w = window("09:00", "17:00", days=["mon", "tue", "wed", "thu", "fri"])
    assert w.open_at(utc(2026, 1, 5, 9, 0))
    assert w.open_at(utc(2026, 1, 5, 16, 59, 59))
    assert not w.open_at(utc(2026, 1, 5, 8, 59, 59))
    assert not w.open_at(utc(2026, 1, 5, 17, 0))
    assert not w.open_at(utc(2026, 1, 10, 10, 0))  # Saturday


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    w = window("22:00", "02:00", days=["fri"])
    assert w.open_at(utc(2026, 1, 9, 22, 0))
    assert w.open_at(utc(2026, 1, 10, 1, 59, 59))  # Saturday morning: Friday's window
    assert not w.open_at(utc(2026, 1, 10, 2, 0))
    assert not w.open_at(utc(2026, 1, 9, 21, 59, 59))
    assert not w.open_at(utc(2026, 1, 9, 1, 0))  # Friday morning: Thursday had none
    assert not w.open_at(utc(2026, 1, 10, 22, 0))  # Saturday evening
    # Sunday's window runs into Monday across the week's end.
    w = window("23:00", "01:00", days=["sun"])
    assert w.open_at(utc(2026, 1, 5, 0, 30))


def test_start_equal_to_end_is_a_whole_day() -> None:
    w = window("08:00", "08:00", days=["mon"])
    assert w.open_at(utc(2026, 1, 5, 8, 0))
    assert w.open_at(utc(2026, 1, 6, 7, 59))
    assert not w.open_at(utc(2026, 1, 6, 8, 0))
    assert not w.open_at(utc(2026, 1, 5, 7, 59))


def test_local_time_follows_daylight_saving_time() -> None:
    w = window("08:00", "09:00", timezone=BERLIN)
    # Saturday 28 March 2026, CET (UTC+1); Sunday 29 March, CEST (UTC+2).
    assert w.open_at(utc(2026, 3, 28, 7, 0))
    assert not w.open_at(utc(2026, 3, 28, 6, 59, 59))
    assert w.open_at(utc(2026, 3, 29, 6, 0))
    assert not w.open_at(utc(2026, 3, 29, 5, 59, 59))
    assert not w.open_at(utc(2026, 3, 29, 7, 0))
    # Saturday 24 October, CEST; Sunday 25 October, CET again.
    assert w.open_at(utc(2026, 10, 24, 6, 0))
    assert w.open_at(utc(2026, 10, 25, 7, 0))
    assert not w.open_at(utc(2026, 10, 25, 6, 59, 59))
    assert open_minutes(w, utc(2026, 10, 25, 0, 0), 24) == 60


def test_windows_across_the_switch_hours() -> None:
    # Spring forward (02:00 CET -> 03:00 CEST): 01:30-03:30 lasts one hour that night.
    spring = window("01:30", "03:30", timezone=BERLIN, days=["sun"])
    assert spring.open_at(utc(2026, 3, 29, 0, 59, 59))  # 01:59:59 CET
    assert spring.open_at(utc(2026, 3, 29, 1, 0))  # 03:00 CEST
    assert not spring.open_at(utc(2026, 3, 29, 1, 30))  # 03:30 CEST
    assert open_minutes(spring, utc(2026, 3, 28, 22, 0), 6) == 60
    # A window inside the skipped hour does not open that night.
    skipped = window("02:00", "02:30", timezone=BERLIN)
    assert open_minutes(skipped, utc(2026, 3, 28, 22, 0), 6) == 0
    assert skipped.open_at(utc(2026, 3, 30, 0, 0))  # Monday 02:00 CEST
    # Fall back (03:00 CEST -> 02:00 CET): 02:00-03:00 happens twice, two hours open.
    autumn = window("02:00", "03:00", timezone=BERLIN, days=["sun"])
    assert open_minutes(autumn, utc(2026, 10, 24, 22, 0), 6) == 120
    assert autumn.open_at(utc(2026, 10, 25, 0, 0))
    assert autumn.open_at(utc(2026, 10, 25, 1, 59))
    assert not autumn.open_at(utc(2026, 10, 25, 2, 0))


def test_lead_time_opens_a_window_early_by_the_boot_time() -> None:
    w = window("09:00", "17:00", name="office", days=["mon"])
    assert scheduled_minimum([w], utc(2026, 1, 5, 8, 57), 180) == (3, "office")
    assert scheduled_minimum([w], utc(2026, 1, 5, 8, 56, 59), 180) == (0, None)
    # Held until the end, not until the end less the lead.
    assert scheduled_minimum([w], utc(2026, 1, 5, 16, 59, 59), 180) == (3, "office")
    assert scheduled_minimum([w], utc(2026, 1, 5, 17, 0), 180) == (0, None)
    assert scheduled_minimum([w], utc(2026, 1, 5, 8, 59, 59), 0) == (0, None)


def test_lead_time_counts_real_seconds_across_the_switch() -> None:
    # 03:00 CEST on 29 March is 01:00 UTC; 180 s before it the clocks still show CET.
    w = window("03:00", "05:00", name="early", timezone=BERLIN, days=["sun"])
    assert scheduled_minimum([w], utc(2026, 3, 29, 0, 57), 180) == (3, "early")
    assert scheduled_minimum([w], utc(2026, 3, 29, 0, 56, 59), 180) == (0, None)


def test_overlapping_windows_the_largest_minimum_wins() -> None:
    windows = [
        window("08:00", "18:00", name="day", min_nodes=3),
        window("10:00", "12:00", name="lecture", min_nodes=7),
        window("11:00", "13:00", name="exam", min_nodes=5),
        window("08:00", "18:00", name="day-too", min_nodes=3),
    ]
    monday = utc(2026, 1, 5, 0, 0)
    assert scheduled_minimum(windows, monday + 11.5 * 3600, 0) == (7, "lecture")
    assert scheduled_minimum(windows, monday + 12.5 * 3600, 0) == (5, "exam")
    assert scheduled_minimum(windows, monday + 9 * 3600, 0) == (3, "day")  # first of equals
    assert scheduled_minimum(windows, monday + 20 * 3600, 0) == (0, None)
    assert scheduled_minimum([], monday, 180) == (0, None)


def test_a_window_raises_the_lower_bound_ahead_of_its_start() -> None:
    w = window("09:00", "17:00", name="office", min_nodes=6, days=["mon"])
    config = dataclasses.replace(PolicyConfig(), windows=(w,))
    nodes = [serving(f"i-{k}", cpu=0.4) for k in range(3)]
    before = utc(2026, 1, 5, 8, 57)
    snap = snapshot(*nodes, at=before)
    assert bounds(snap, config, before) == (6, 20, "office")
    d = decide(snap, History(), None, config, before)
    assert (d.action, d.desired) == (Action.SCALE_OUT, 6)
    assert "schedule 'office'" in d.reason
    # Never above the upper bound.
    assert bounds(snapshot(*nodes, max_size=4, at=before), config, before) == (4, 4, "office")
    # Outside the window the policy's own sizing rules.
    later = utc(2026, 1, 5, 18, 0)
    assert bounds(snapshot(*nodes, at=later), config, later) == (0, 20, None)


@pytest.mark.parametrize("preset", ["seed", "default", "forecast"])
@pytest.mark.parametrize("poll", [20.0, 60.0])
def test_a_window_s_nodes_are_launched_in_time_for_scalelite_s_first_poll(
    preset: str, poll: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nodes that serve at 09:00 sharp are not online in Scalelite yet: it brings a server
    # online at its next poll, so the first rooms would all go to the few nodes already
    # there. The window's nodes are launched boot_time + scalelite.poll_interval ahead.
    required_settings(monkeypatch)
    monkeypatch.setenv("BBBSCALER_POLICY__PRESET", preset)
    monkeypatch.setenv(
        "BBBSCALER_POLICY__SCHEDULES",
        '[{"name": "office", "start": "09:00", "end": "17:00", "min_nodes": 6, "days": ["mon"]}]',
    )
    monkeypatch.setenv("BBBSCALER_SCALELITE__POLL_INTERVAL", str(poll))
    monkeypatch.setenv("BBBSCALER_FORECAST__PROMETHEUS_URL", "http://127.0.0.1:9090")
    config = PolicyConfig.from_settings(load_settings(ScalerSettings))
    assert config.schedule_lead == config.boot_time + poll
    opens = utc(2026, 1, 5, 9, 0)
    nodes = [serving(f"i-{k}", cpu=0.4) for k in range(3)]
    early = opens - config.boot_time - poll
    d = decide(snapshot(*nodes, at=early), History(), None, config, early)
    assert (d.action, d.desired) == (Action.SCALE_OUT, 6)
    before = early - 1
    assert bounds(snapshot(*nodes, at=before), config, before)[0] == 0


# --- settings validation -----------------------------------------------------------------


def test_days_are_normalised() -> None:
    s = ScheduleSettings(name="w", start="09:00", end="10:00", min_nodes=1, days=["Monday", "TUE"])
    assert s.days == ("mon", "tue")
    assert Window.from_settings(s).days == frozenset({0, 1})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"days": ["funday"]}, "days must be among"),
        ({"days": ["mo"]}, "days must be among"),
        ({"days": []}, "days must be among"),
        ({"start": "24:00"}, "must be HH:MM"),
        ({"start": "9:00"}, "must be HH:MM"),
        ({"start": "09:60"}, "must be HH:MM"),
        ({"end": "0900"}, "must be HH:MM"),
        ({"end": "noon"}, "must be HH:MM"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": "../etc/passwd"}, "unknown time zone"),
        ({"timezone": ""}, "unknown time zone"),
        ({"min_nodes": -1}, "greater than or equal to 0"),
    ],
)
def test_bad_windows_are_refused(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"name": "w", "start": "09:00", "end": "10:00", "min_nodes": 1}
    with pytest.raises(ValidationError, match=message):
        ScheduleSettings(**(values | fields))


def test_a_bad_window_in_the_environment_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    required_settings(monkeypatch)
    monkeypatch.setenv(
        "BBBSCALER_POLICY__SCHEDULES",
        '[{"name": "exam", "start": "07:00", "end": "25:00", "min_nodes": 4}]',
    )
    with pytest.raises(ConfigError, match=r"policy\.schedules\.0\.end"):
        load_settings(ScalerSettings)


# --- windows the fleet cannot meet ---------------------------------------------------------


def test_a_window_shorter_than_the_lead_is_in_effect_all_the_way() -> None:
    # 08:00-08:02 with 180 s of boot time: at 07:59 neither now nor now + 180 s (08:02, the
    # end) is inside it; every instant in between counts.
    w = window("08:00", "08:02", name="flash", days=["mon"])
    monday = utc(2026, 1, 5, 0, 0)
    for at in range(int(monday + 7 * 3600 + 57 * 60), int(monday + 8 * 3600 + 2 * 60), 10):
        assert scheduled_minimum([w], at, 180) == (3, "flash"), at
    assert scheduled_minimum([w], utc(2026, 1, 5, 7, 56, 59), 180) == (0, None)
    assert scheduled_minimum([w], utc(2026, 1, 5, 8, 2), 180) == (0, None)


def test_an_opening_knows_when_the_window_starts() -> None:
    office = window("09:00", "17:00", days=["mon"])
    start = utc(2026, 1, 5, 9, 0)
    opening = in_effect([office], utc(2026, 1, 5, 8, 58), 180)
    assert [o.start for o in opening] == [start]
    assert [o.start for o in in_effect([office], utc(2026, 1, 5, 12, 0), 180)] == [start]
    # Past midnight: the part after midnight opened the day before.
    night = window("22:00", "02:00", days=["fri"], timezone=BERLIN)
    at = utc(2026, 1, 10, 0, 30)  # Saturday 01:30 CET
    assert [o.start for o in in_effect([night], at, 0)] == [utc(2026, 1, 9, 21, 0)]
    assert in_effect([night], utc(2026, 1, 10, 1, 0), 0) == ()


EXAM_MONDAY = utc(2026, 1, 5, 8, 0)


def exam(min_nodes: int = 6, **fields: Any) -> PolicyConfig:
    w = window("08:00", "10:00", name="exam", days=["mon"], min_nodes=min_nodes, **fields)
    return dataclasses.replace(PolicyConfig(), windows=(w,))


def launched(iid: str, at: float) -> Node:
    """Booting since ``at``."""
    return dataclasses.replace(booting(iid), launched_at=at)


def three_serving(at: float, **fields: Any) -> FleetSnapshot:
    return snapshot(*(serving(f"i-{k}", cpu=0.4) for k in range(3)), at=at, **fields)


def test_a_window_known_in_time_is_no_miss() -> None:
    # Seen 180 s ahead (and up to one round later): launched now, serving by the start.
    for ahead in (180, 175):
        at = EXAM_MONDAY - ahead
        d = decide(three_serving(at), History(), None, exam(), at)
        assert (d.action, d.desired) == (Action.SCALE_OUT, 6)
        assert d.schedule_misses == ()


def test_a_window_known_too_late_says_by_how_much() -> None:
    # Schedule changed at 07:58 for 08:00: the three new nodes serve at 08:01.
    at = EXAM_MONDAY - 120
    d = decide(three_serving(at), History(), None, exam(), at)
    assert d.desired == 6
    assert d.schedule_misses == (WindowMiss("exam", EXAM_MONDAY, 6, 60.0, 0),)
    # A round later they are booting (launched at 07:58): still 60 s late.
    later = at + 10
    booted = [launched(f"n-{k}", at) for k in range(3)]
    snap = snapshot(*(serving(f"i-{k}", cpu=0.4) for k in range(3)), *booted, at=later)
    d = decide(snap, History(), None, exam(), later)
    assert d.desired is None
    assert d.schedule_misses == (WindowMiss("exam", EXAM_MONDAY, 6, 60.0, 0),)


def test_nodes_booting_slower_than_boot_time_make_the_window_late() -> None:
    # Launched at 07:57 as planned, still not serving at 08:00:30.
    at = EXAM_MONDAY + 30
    booted = [launched(f"n-{k}", EXAM_MONDAY - 180) for k in range(3)]
    snap = snapshot(*(serving(f"i-{k}", cpu=0.4) for k in range(3)), *booted, at=at)
    d = decide(snap, History(), None, exam(), at)
    assert d.schedule_misses == (WindowMiss("exam", EXAM_MONDAY, 6, 30.0, 0),)
    # Once they serve, nothing is missed any more.
    serving_all = snapshot(*(serving(f"i-{k}", cpu=0.4) for k in range(6)), at=at)
    assert decide(serving_all, History(), None, exam(), at).schedule_misses == ()


def test_a_window_the_upper_bound_cannot_hold_is_short() -> None:
    at = EXAM_MONDAY - 180
    d = decide(three_serving(at, max_size=4), History(), None, exam(min_nodes=6), at)
    assert d.desired == 4
    assert d.schedule_misses == (WindowMiss("exam", EXAM_MONDAY, 6, 0.0, 2),)
    # policy.max_nodes is an upper bound too; so are members that serve no more.
    capped = dataclasses.replace(exam(min_nodes=6), max_nodes=5)
    assert decide(three_serving(at), History(), None, capped, at).schedule_misses[0].short == 1
    cordoned = serving("o", cpu=0.4, state="cordoned")
    snap = snapshot(*(serving(f"i-{k}", cpu=0.4) for k in range(3)), cordoned, max_size=6, at=at)
    assert decide(snap, History(), None, exam(min_nodes=6), at).schedule_misses[0].short == 1


def test_a_window_with_all_its_nodes_serving_is_no_miss() -> None:
    at = EXAM_MONDAY + 60
    snap = snapshot(*(serving(f"i-{k}", cpu=0.4) for k in range(6)), at=at)
    assert decide(snap, History(), None, exam(), at).schedule_misses == ()
    # Outside any window: nothing to miss.
    assert (
        decide(three_serving(at + 3 * 3600), History(), None, exam(), at + 3 * 3600).schedule_misses
        == ()
    )
