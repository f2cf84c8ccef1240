"""The README's measured tables: their columns, the form of each cell, and the marker.

Every table in README.md sits right under a marker comment naming where its
numbers come from:

    <!-- benchmark: benchmarks/exporter.py scrape -->
    | meetings (10 attendees) | /metrics p50 | ...

names the script and the table in its ``TABLES``; the script prints that
table's header and rows (through :meth:`Table.row`, so it cannot print a row
the README check would refuse) under a line with the conditions. A table that
holds no measured figure says so with ``<!-- benchmark: none -->``.
tests/test_readme_tables.py fails when a marker names a script or table that
does not exist, a table has no marker, or a README table's header or a row no
longer has the form its benchmark prints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MARKER = re.compile(r"<!-- benchmark: (?:none|(?P<script>\S+) (?P<table>\S+)) -->")

INT = r"\d{1,3}(?:,\d{3})*"
"""A count as the README writes it: 1,000 and 88,421."""
DECIMAL = rf"{INT}(?:\.\d+)?"


def unit(name: str) -> str:
    """A pattern for a number with ``name`` after it (``12.3 ms``)."""
    return rf"{DECIMAL} {re.escape(name)}"


TEXT = r"[^|]+"


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its title and the pattern every cell must match in full."""

    title: str
    cell: str
    numeric: bool = True
    """Right-aligned (``---:``), as the README aligns numbers."""


@dataclass(frozen=True, slots=True)
class Table:
    """A table as a benchmark prints it and the README shows it."""

    columns: tuple[Column, ...]
    keys: tuple[str, ...] | None = None
    """When set, the first cells of the rows, exactly and in this order."""

    def header(self) -> str:
        """The title line and the alignment line."""
        titles = " | ".join(c.title for c in self.columns)
        aligns = "|".join("---:" if c.numeric else "---" for c in self.columns)
        return f"| {titles} |\n|{aligns}|"

    def row(self, *cells: str) -> str:
        """One row; raises ValueError if a cell does not have its column's form."""
        line = "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"
        problems = self._row_problems(line)
        if problems:
            raise ValueError("; ".join(problems))
        return line

    def _row_problems(self, line: str) -> list[str]:
        cells = split_row(line)
        if len(cells) != len(self.columns):
            return [f"{len(cells)} cells, expected {len(self.columns)}: {line}"]
        return [
            f"column {column.title!r}: {cell!r} is not of the form {column.cell!r}"
            for column, cell in zip(self.columns, cells, strict=True)
            if re.fullmatch(column.cell, cell) is None
        ]

    def problems(self, lines: Sequence[str]) -> list[str]:
        """What is wrong with ``lines`` (a Markdown table: header, alignment, rows)."""
        header = self.header().split("\n")
        if list(lines[:2]) != header:
            return [f"header is {list(lines[:2])}, the benchmark prints {header}"]
        rows = lines[2:]
        out = [problem for line in rows for problem in self._row_problems(line)]
        if self.keys is not None:
            firsts = tuple(split_row(line)[0] for line in rows)
            if firsts != self.keys:
                out.append(f"rows are {firsts}, the benchmark prints {self.keys}")
        return out


def split_row(line: str) -> list[str]:
    """The cells of a Markdown table row, stripped."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]
