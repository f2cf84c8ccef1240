"""Load traces: one CSV row per meeting, read and checked, written back, and the shipped ones.

The format (a contract, see DESIGN.md): a header naming ``start_s``,
``duration_s``, ``participants`` and optionally ``cameras`` and ``recorded``,
in any order; then one row per meeting. ``start_s`` counts seconds from the
trace's start (>= 0), ``duration_s`` is > 0, ``participants`` a whole number
>= 1, ``cameras`` a whole number >= 0 (0 when the column is absent),
``recorded`` 1 for a meeting created with ``record=true`` whose recording BBB
processes on its host after it ends, else 0 (0 when the column is absent).
Blank lines are skipped. Every error names the line and, where it is about
one value, the column.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final, TextIO

REQUIRED: Final = ("start_s", "duration_s", "participants")
OPTIONAL: Final = ("cameras", "recorded")
HEADER: Final = "start_s,duration_s,participants[,cameras][,recorded]"
SHIPPED: Final = ("university-week", "exam-flash", "company-week")
"""The traces shipped in bbbsim/traces/ (``<name>.csv``): ``bbbsim trace generate --kind NAME
--seed 1 --weeks 5`` (the backtest scores the last week; the others are its history)."""
SHIPPED_WEEKS: Final = 5


class TraceError(ValueError):
    """A trace that cannot be read; the message names the line (and the column)."""

    def __init__(self, source: str, line: int, message: str, column: str | None = None) -> None:
        where = f"{source} line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {message}")
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class TraceMeeting:
    """One meeting of a trace."""

    start_s: float
    duration_s: float
    participants: int
    cameras: int = 0
    recorded: bool = False
    """Created with record=true: BBB processes its recording on the host after it ends."""

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class Trace:
    """A whole trace, its meetings in file order."""

    name: str
    meetings: tuple[TraceMeeting, ...]

    @property
    def end_s(self) -> float:
        """When the last meeting ends."""
        return max((m.end_s for m in self.meetings), default=0.0)

    @property
    def users(self) -> int:
        return sum(m.participants for m in self.meetings)


def _number(raw: str, source: str, line: int, column: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise TraceError(source, line, f"not a number: {raw!r}", column) from None
    if not math.isfinite(value):
        raise TraceError(source, line, f"not a finite number: {raw!r}", column)
    return value


def _whole(raw: str, source: str, line: int, column: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise TraceError(source, line, f"not a whole number: {raw!r}", column) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header(fields: list[str], source: str, line: int) -> dict[str, int]:
    names = [f.strip() for f in fields]
    if all(_is_number(n) for n in names):
        raise TraceError(source, line, f"no header: the first line must be {HEADER}")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise TraceError(source, line, f"column {name!r} appears twice")
        if name not in REQUIRED and name not in OPTIONAL:
            raise TraceError(source, line, f"unknown column {name!r} (the header is {HEADER})")
        seen[name] = i
    missing = [c for c in REQUIRED if c not in seen]
    if missing:
        raise TraceError(source, line, f"header lacks {', '.join(missing)} (it is {HEADER})")
    return seen


def _row(fields: list[str], columns: dict[str, int], source: str, line: int) -> TraceMeeting:
    if len(fields) != len(columns):
        raise TraceError(source, line, f"{len(fields)} values where the header has {len(columns)}")

    def raw(name: str) -> str:
        return fields[columns[name]].strip()

    start = _number(raw("start_s"), source, line, "start_s")
    if start < 0:
        raise TraceError(source, line, f"must be >= 0: {raw('start_s')!r}", "start_s")
    duration = _number(raw("duration_s"), source, line, "duration_s")
    if duration <= 0:
        raise TraceError(source, line, f"must be > 0: {raw('duration_s')!r}", "duration_s")
    participants = _whole(raw("participants"), source, line, "participants")
    if participants < 1:
        raise TraceError(source, line, f"must be >= 1: {participants}", "participants")
    cameras = 0
    if "cameras" in columns:
        cameras = _whole(raw("cameras"), source, line, "cameras")
        if cameras < 0:
            raise TraceError(source, line, f"must be >= 0: {cameras}", "cameras")
    recorded = False
    if "recorded" in columns:
        flag = raw("recorded")
        if flag not in ("0", "1"):
            raise TraceError(source, line, f"must be 0 or 1: {flag!r}", "recorded")
        recorded = flag == "1"
    return TraceMeeting(start, duration, participants, cameras, recorded)


def parse_trace(text: TextIO, source: str = "trace") -> Trace:
    """The trace in ``text``; ``source`` names it in errors (and becomes its name)."""
    reader = csv.reader(text)
    columns: dict[str, int] | None = None
    meetings: list[TraceMeeting] = []
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if columns is None:
                columns = _header(fields, source, line)
                continue
            meetings.append(_row(fields, columns, source, line))
    except csv.Error as exc:
        raise TraceError(source, reader.line_num, f"not CSV: {exc}") from None
    if columns is None:
        raise TraceError(source, 1, f"empty: a header is required ({HEADER})")
    if not meetings:
        raise TraceError(source, reader.line_num, "no meetings after the header")
    return Trace(Path(source).stem, tuple(meetings))


def load_trace(path: Path) -> Trace:
    """Read and check the trace at ``path`` (TraceError names the line)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return parse_trace(f, str(path))
    except UnicodeDecodeError as exc:
        raise TraceError(str(path), 1, f"not UTF-8 text: {exc.reason}") from None


def _plain(value: float) -> str:
    # Whole seconds are written without ".0", so generated files stay short and diffable.
    return str(int(value)) if value == int(value) else repr(value)


def render_trace(meetings: Iterable[TraceMeeting]) -> str:
    """The CSV text of ``meetings`` (with the cameras and recorded columns)."""
    out = io.StringIO()
    out.write(",".join((*REQUIRED, *OPTIONAL)) + "\n")
    for m in meetings:
        out.write(
            f"{_plain(m.start_s)},{_plain(m.duration_s)},{m.participants},{m.cameras},"
            f"{int(m.recorded)}\n"
        )
    return out.getvalue()


def shipped_trace(name: str) -> Trace:
    """One of the traces in SHIPPED, from the package's data."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped trace {name!r} (shipped: {', '.join(SHIPPED)})")
    text = resources.files("bbbsim").joinpath("traces", f"{name}.csv").read_text("utf-8")
    return parse_trace(io.StringIO(text), f"{name}.csv")
