"""Every table in README.md says where its numbers come from, and still has that source's form.

The convention is written down in benchmarks/readme_table.py: a marker comment
right above each table names the benchmark script and its table
(``<!-- benchmark: benchmarks/exporter.py scrape -->``), or says the table
holds no measurement (``<!-- benchmark: none -->``). The check imports each
named script (no measurement runs) and holds the README's header and rows to
the form the script prints.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their siblings, as when run

from readme_table import MARKER, Column, Table  # noqa: E402


def tables(text: str) -> Iterator[tuple[int, str | None, list[str]]]:
    """(first line number, the marker line above or None, the table's lines), outside code."""
    lines = text.splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("|"):
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        yield start + 1, above if MARKER.fullmatch(above.strip()) else None, lines[start:i]


def load_tables(script: Path) -> dict[str, Table]:
    spec = importlib.util.spec_from_file_location(f"readme_benchmark_{script.stem}", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    found = getattr(module, "TABLES", None)
    assert isinstance(found, dict), f"{script} has no TABLES"
    return found


def problems(text: str, root: Path) -> list[str]:
    """What is wrong with the README ``text``'s tables (scripts looked up under ``root``)."""
    out: list[str] = []
    lines = text.splitlines()
    for number, text_line in enumerate(lines, 1):
        following = next((later for later in lines[number:] if later.strip()), "")
        if MARKER.fullmatch(text_line.strip()) and not following.startswith("|"):
            out.append(f"line {number}: a marker with no table under it")
    loaded: dict[Path, dict[str, Table]] = {}
    for line, marker, rows in tables(text):
        if marker is None:
            out.append(f"line {line}: table without a '<!-- benchmark: ... -->' marker above it")
            continue
        found = MARKER.fullmatch(marker.strip())
        assert found is not None
        if found["script"] is None:
            continue
        script = root / found["script"]
        if script.parent != root / "benchmarks" or not script.is_file():
            out.append(f"line {line}: no benchmark {found['script']}")
            continue
        if script not in loaded:
            loaded[script] = load_tables(script)
        table = loaded[script].get(found["table"])
        if table is None:
            out.append(f"line {line}: {found['script']} prints no table {found['table']!r}")
            continue
        out += [f"line {line} ({found['table']}): {p}" for p in table.problems(rows)]
    return out


def test_readme_tables_match_their_benchmarks() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert problems(readme, ROOT) == []
    assert sum(1 for _, marker, _ in tables(readme) if marker and "benchmarks/" in marker) >= 10


TOY = Table((Column("meetings", r"\d+"), Column("p50", r"\d+\.\d\d ms")), keys=("10", "300"))


def test_table_form() -> None:
    assert TOY.header() == "| meetings | p50 |\n|---:|---:|"
    assert TOY.row("10", "0.55 ms") == "| 10 | 0.55 ms |"
    with pytest.raises(ValueError, match="p50"):
        TOY.row("10", "fast")
    good = [*TOY.header().split("\n"), "| 10 | 0.55 ms |", "| 300 | 0.61 ms |"]
    assert TOY.problems(good) == []
    assert TOY.problems(["| meetings | p95 |", *good[1:]])  # a renamed column
    assert TOY.problems([*good[:3], "| 300 | 0.6 ms |"])  # a row in another form
    assert TOY.problems(good[:3])  # a row missing


def test_the_check_fails_on_a_drifted_readme(tmp_path: Path) -> None:
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "toy.py").write_text(
        "from readme_table import Column, Table\n"
        "TABLES = {'t': Table((Column('meetings', r'\\d+'), Column('p50', r'\\d+\\.\\d\\d ms')))}\n"
    )
    header = TOY.header()
    ok = f"<!-- benchmark: benchmarks/toy.py t -->\n\n{header}\n| 10 | 0.55 ms |\n"
    assert problems(ok, tmp_path) == []
    assert problems("text\n\n" + header + "\n| 10 | 0.55 ms |\n", tmp_path)  # no marker
    assert problems(ok.replace("toy.py", "gone.py"), tmp_path)  # no such benchmark
    assert problems(ok.replace("toy.py t", "toy.py u"), tmp_path)  # no such table
    assert problems(ok.replace("0.55 ms", "0.55"), tmp_path)  # not the printed form
    assert problems("<!-- benchmark: none -->\n| a | b |\n|---|---|\n| 1 | 2 |\n", tmp_path) == []
    assert problems("```\n| not | a table |\n```\n", tmp_path) == []
    assert problems("<!-- benchmark: none -->\n\ntext\n", tmp_path)  # a marker on nothing
