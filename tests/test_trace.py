"""Load traces: the CSV contract (errors name line and column), the generator, the shipped files."""

from __future__ import annotations

import dataclasses
import io
import statistics
from pathlib import Path

import pytest

from bbbsim.cli import main
from bbbsim.trace import (
    SHIPPED,
    SHIPPED_WEEKS,
    Trace,
    TraceError,
    TraceMeeting,
    load_trace,
    parse_trace,
    render_trace,
    shipped_trace,
)
from bbbsim.trace_generate import (
    ALL_HANDS_USERS,
    EXAM_USERS,
    MASS_LECTURE_USERS,
    WEEK,
    generate,
    levels,
)

DAY = 86_400


def parse(text: str) -> Trace:
    return parse_trace(io.StringIO(text), "t.csv")


def running(meetings: list[TraceMeeting] | tuple[TraceMeeting, ...], at: float) -> int:
    return sum(m.start_s <= at < m.end_s for m in meetings)


# --- the format -----------------------------------------------------------------------------


def test_reads_rows_with_and_without_cameras() -> None:
    t = parse("start_s,duration_s,participants,cameras\n0,60,5,2\n\n30.5,90,1,0\n")
    assert t.meetings == (TraceMeeting(0, 60, 5, 2), TraceMeeting(30.5, 90, 1, 0))
    assert t.end_s == 120.5
    assert t.name == "t"
    # Columns in any order; cameras optional (0).
    t = parse("participants, start_s ,duration_s\n7,10,20\n")
    assert t.meetings == (TraceMeeting(10, 20, 7, 0),)


def test_render_and_parse_round_trip() -> None:
    meetings = (TraceMeeting(0, 60, 5, 2), TraceMeeting(12.25, 3600, 40, 0, recorded=True))
    assert parse(render_trace(meetings)).meetings == meetings


def test_the_optional_recorded_column() -> None:
    t = parse("start_s,duration_s,participants,recorded\n0,60,5,1\n5,60,5,0\n")
    assert [m.recorded for m in t.meetings] == [True, False]
    # Absent: nothing recorded; the cameras column stays optional beside it.
    assert parse("start_s,duration_s,participants\n0,60,5\n").meetings[0].recorded is False


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("", 1, None, "header is required"),
        ("start_s,duration_s,participants\n", 1, None, "no meetings"),
        ("0,60,5\n1,60,5\n", 1, None, "no header"),
        ("start_s,participants\n0,5\n", 1, None, "lacks duration_s"),
        ("start_s,duration_s,participants,mics\n", 1, None, "unknown column 'mics'"),
        ("start_s,duration_s,participants,start_s\n", 1, None, "appears twice"),
        ("start_s,duration_s,participants\n0,60,5\n0,abc,5\n", 3, "duration_s", "not a number"),
        ("start_s,duration_s,participants\n0,60,5\n\n-1,60,5\n", 4, "start_s", ">= 0"),
        ("start_s,duration_s,participants\n0,0,5\n", 2, "duration_s", "> 0"),
        ("start_s,duration_s,participants\n0,inf,5\n", 2, "duration_s", "finite"),
        ("start_s,duration_s,participants\n0,60,2.5\n", 2, "participants", "whole number"),
        ("start_s,duration_s,participants\n0,60,0\n", 2, "participants", ">= 1"),
        ("start_s,duration_s,participants,cameras\n0,60,3,-1\n", 2, "cameras", ">= 0"),
        ("start_s,duration_s,participants\n0,60\n", 2, None, "2 values"),
        ("start_s,duration_s,participants,recorded\n0,60,3,yes\n", 2, "recorded", "0 or 1"),
        ("start_s,duration_s,participants,recorded\n0,60,3,2\n", 2, "recorded", "0 or 1"),
    ],
)
def test_errors_name_the_line_and_column(
    text: str, line: int, column: str | None, words: str
) -> None:
    with pytest.raises(TraceError) as err:
        parse(text)
    assert err.value.line == line
    assert err.value.column == column
    assert words in str(err.value)
    assert str(err.value).startswith(f"t.csv line {line}")


def test_load_trace_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "week.csv"
    path.write_text("start_s,duration_s,participants\n0,60,5\n")
    assert load_trace(path).meetings == (TraceMeeting(0, 60, 5),)
    path.write_bytes(b"start_s,duration_s,participants\n\xff\n")
    with pytest.raises(TraceError, match="not UTF-8"):
        load_trace(path)


# --- the generator and the shipped traces ---------------------------------------------------


def test_university_week_has_the_issue_shape() -> None:
    week = generate("university-week", 1)
    assert generate("university-week", 1) == week  # seeded
    peak = max(running(week, DAY + h * 900) for h in range(96))
    assert 200 <= peak <= 250
    assert 7 <= statistics.mean(m.participants for m in week) <= 9
    # Tuesday: a steep ramp from 07:00 to 08:15, an evening and a weekend that are low.
    tuesday = DAY
    assert running(week, tuesday + 7 * 3600) < 0.1 * peak
    assert running(week, tuesday + 8.5 * 3600) > 0.8 * peak
    assert running(week, tuesday + 21 * 3600) < 0.15 * peak
    assert max(running(week, 5 * DAY + h * 900) for h in range(192)) < 0.15 * peak
    lectures = [m for m in week if 8 * 3600 <= m.start_s % DAY < 17 * 3600 and m.start_s < 5 * DAY]
    assert all(42 * 60 <= m.duration_s <= 93 * 60 for m in lectures)
    # The mass lectures (a meeting bigger than one host) on Tuesday and Thursday.
    assert sum(m.participants == MASS_LECTURE_USERS for m in week) == 2


def test_most_lectures_and_few_other_meetings_are_recorded() -> None:
    week = generate("university-week", 2)
    weekday = [m for m in week if m.start_s < 5 * DAY]
    lectures = [m for m in weekday if 8 * 3600 <= m.start_s % DAY < 17 * 3600]
    other = [m for m in week if m.start_s % DAY < 6 * 3600 or m.start_s >= 5 * DAY]
    assert 0.6 <= statistics.mean(m.recorded for m in lectures) <= 0.8
    assert 0.03 <= statistics.mean(m.recorded for m in other) <= 0.2
    assert all(m.recorded for m in week if m.participants == MASS_LECTURE_USERS)
    exam = generate("exam-flash", 2)
    assert not any(m.recorded for m in exam if m.duration_s > 90 * 60)
    # A stream of its own: the meetings are the same whatever is recorded.
    plain = [dataclasses.replace(m, recorded=False) for m in week]
    assert plain == [dataclasses.replace(m, recorded=False) for m in generate("university-week", 2)]


def test_exam_flash_joins_1500_users_within_5_minutes() -> None:
    trace = generate("exam-flash", 3)
    exam = [m for m in trace if m.duration_s > 90 * 60]
    assert sum(m.participants for m in exam) == EXAM_USERS
    assert all(7200 <= m.start_s < 7200 + 300 for m in exam)
    # Rooms of 20-40; the last takes the rest (so fewer than 20 are never left alone).
    assert all(20 <= m.participants < 60 for m in exam)
    assert max(m.end_s for m in trace) <= 6.5 * 3600


def test_shipped_traces_are_the_generator_at_seed_1() -> None:
    for name in SHIPPED:
        shipped = shipped_trace(name)
        assert shipped.name == name
        assert list(shipped.meetings) == generate(name, 1, weeks=SHIPPED_WEEKS)
    with pytest.raises(ValueError, match="no shipped trace"):
        shipped_trace("nope")


def test_several_weeks_repeat_with_noise_holidays_and_growth() -> None:
    one = generate("university-week", 3)
    term = generate("university-week", 3, weeks=5)
    # One week is the trace as it always was; a term starts every week on a Monday.
    assert one == generate("university-week", 3, weeks=1)
    assert max(m.start_s for m in term) > 4 * WEEK

    def running(meetings: list[TraceMeeting], at: float) -> int:
        return sum(m.start_s <= at < m.end_s for m in meetings)

    mondays = [running(term, w * WEEK + 9.5 * 3600) for w in range(5)]
    thursdays = [running(term, w * WEEK + 3 * 86_400 + 9.5 * 3600) for w in range(5)]
    # The second week's Monday and the last week's Thursday are public holidays at 20 %.
    assert mondays[1] < 0.3 * mondays[0]
    assert thursdays[4] < 0.3 * thursdays[3]
    # No two weeks are alike, and the term grows in its last weeks: by about 10 % in the
    # last, over many seeds (one seed's week-to-week noise is 5 %).
    assert len(set(mondays)) == 5

    def gain(seed: int) -> float:
        level = levels("university-week", seed, 5)
        tuesday = [level(w * WEEK + 86_400 + 1) for w in range(5)]
        return tuesday[4] / statistics.mean(tuesday[:3])

    assert 1.07 < statistics.mean(gain(seed) for seed in range(1, 41)) < 1.13
    # Every kind makes several weeks; the exam is a night a week, none in the second week.
    exams = generate("exam-flash", 1, weeks=4)
    big_nights = {int(m.start_s // WEEK) for m in exams if m.duration_s > 90 * 60}
    assert big_nights == {0, 2, 3}
    company = generate("company-week", 1, weeks=2)
    assert any(m.participants == ALL_HANDS_USERS for m in company)


@pytest.mark.usefixtures("restore_logging")
def test_cli_generates_a_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flash.csv"
    args = ["trace", "generate", "--kind", "exam-flash", "--seed", "2", "--scale", "0.5"]
    assert main([*args, "--out", str(out)]) == 0
    assert list(load_trace(out).meetings) == generate("exam-flash", 2, 0.5)
    assert "meetings" in capsys.readouterr().out
