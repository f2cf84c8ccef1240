"""bbbcore.native: compiled modules are used only while they match their sources."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from bbbcore import native

SUFFIX = EXTENSION_SUFFIXES[0]
NAMES = (
    "bbbscaler/model.py",
    "bbbscaler/policy/fleet.py",
    "bbbscaler/policy/need.py",
    "bbbsim/fleet_model.py",
    "bbbsim/termination_policy.py",
)


def _checkout(root: Path) -> tuple[Path, ...]:
    """A checkout with one source per MODULES pattern."""
    for rel in (*NAMES, "bbbsim/demo.py"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {rel}\n")
    return native.sources(root)


def _compile(root: Path, sources: tuple[Path, ...]) -> None:
    """What scripts/compile.py leaves: an extension beside each source, and the digest."""
    for source in sources:
        source.with_name(source.stem + SUFFIX).write_bytes(b"")
    native.digest_file(root).write_text(native.digest(sources, root) + "\n")


def test_sources_are_the_hot_path_only(tmp_path: Path) -> None:
    names = [p.relative_to(tmp_path).as_posix() for p in _checkout(tmp_path)]
    assert tuple(names) == NAMES  # not bbbsim/demo.py


def test_no_extension_is_interpreted(tmp_path: Path) -> None:
    _checkout(tmp_path)
    assert native.check(tmp_path) == native.Native("interpreted", ())


def test_extensions_built_from_these_sources_are_compiled(tmp_path: Path) -> None:
    sources = _checkout(tmp_path)
    _compile(tmp_path, sources)
    found = native.check(tmp_path)
    assert found.state == "compiled"
    assert len(found.compiled) == len(sources)


def test_a_source_edited_after_compiling_is_stale(tmp_path: Path) -> None:
    sources = _checkout(tmp_path)
    _compile(tmp_path, sources)
    sources[1].write_text("# edited\n")
    assert native.state(tmp_path) == native.Native(
        "stale", tuple(p.relative_to(tmp_path).as_posix() for p in sources), ("*",)
    )
    with pytest.raises(
        native.StaleError, match=r"sources changed\): run 'python scripts/compile\.py'"
    ):
        native.check(tmp_path)


def test_a_new_source_without_its_extension_is_stale(tmp_path: Path) -> None:
    sources = _checkout(tmp_path)
    _compile(tmp_path, sources)
    (tmp_path / "bbbscaler/policy/new.py").write_text("# new\n")
    with pytest.raises(native.StaleError, match=r"\(bbbscaler/policy/new\.py\)"):
        native.check(tmp_path)


def test_a_build_that_wrote_no_digest_is_stale(tmp_path: Path) -> None:
    sources = _checkout(tmp_path)
    _compile(tmp_path, sources)
    native.digest_file(tmp_path).unlink()
    assert native.state(tmp_path).state == "stale"


def test_the_digest_covers_paths_and_contents(tmp_path: Path) -> None:
    sources = _checkout(tmp_path)
    before = native.digest(sources, tmp_path)
    sources[0].write_text(sources[1].read_text())
    assert native.digest(sources, tmp_path) != before


@pytest.mark.skipif(
    "BBBFLEET_EXPECT_NATIVE" not in os.environ,
    reason="scripts/run-tests says which build it made (BBBFLEET_EXPECT_NATIVE)",
)
def test_this_checkout_runs_the_build_run_tests_made() -> None:
    """The suite tests the build the README's commands make: compiled unless
    BBBFLEET_COMPILE=0, and the interpreted leg (BBBFLEET_INTERPRETED=1) the sources."""
    expected = os.environ["BBBFLEET_EXPECT_NATIVE"]
    interpreted = os.environ.get("BBBFLEET_INTERPRETED") == "1"
    assert native.check().state == expected
    modules = ("bbbscaler.policy.fleet", "bbbsim.fleet_model")
    files = [importlib.import_module(m).__file__ or "" for m in modules]
    compiled = expected == "compiled" and not interpreted
    assert all(f.endswith(SUFFIX) == compiled for f in files), files


def test_interpreted_imports_the_sources_beside_extensions(tmp_path: Path) -> None:
    code = (
        "from bbbcore import native; native.interpreted(); "
        "import bbbscaler.policy.fleet as f, bbbscaler.policy as p, bbbsim.fleet_model as m; "
        "print(f.__file__, p.__file__, m.__file__, p.decide.__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.split()
    root = native.ROOT.as_posix()
    assert out == [
        f"{root}/bbbscaler/policy/fleet.py",
        f"{root}/bbbscaler/policy/__init__.py",
        f"{root}/bbbsim/fleet_model.py",
        "bbbscaler.policy",
    ]


def test_interpreted_refuses_after_an_import() -> None:
    import bbbscaler.policy  # noqa: F401

    with pytest.raises(RuntimeError, match=r"already imported: .*bbbscaler\.policy"):
        native.interpreted()


@pytest.mark.parametrize(("prog", "args"), [("bbbsim", ["node-demo"]), ("bbbscaler", ["run"])])
def test_a_command_refuses_stale_modules(
    prog: str,
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sources = _checkout(tmp_path)
    _compile(tmp_path, sources)
    sources[0].write_text("# edited\n")
    monkeypatch.setattr(native, "ROOT", tmp_path)
    main = importlib.import_module(f"{prog}.cli").main
    assert main(args) == 2  # before it reads a setting or starts anything
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: compiled modules do not match their sources")


def morning_results() -> str:
    """A Tuesday morning of the university term under each preset, with the forecast's
    history: the results' reprs, hashed. Imports the simulator here, so a caller can choose
    the build first."""
    import hashlib
    from dataclasses import replace

    from bbbsim.demand_history import last_week, trace_demand
    from bbbsim.fleet_model import FleetSettings, policy_config, prepare, simulate
    from bbbsim.trace import Trace
    from bbbsim.trace_generate import university_week

    trace = Trace("university-week", tuple(university_week(1, 2.0, 2)))
    fleet = FleetSettings()
    split = last_week(trace)
    tuesday = 86_400.0
    morning = tuple(
        m for m in split.scored.meetings if tuesday + 7 * 3600 <= m.start_s < tuesday + 11 * 3600
    )
    demand = trace_demand(prepare(trace, fleet), fleet)
    settings = replace(fleet, epoch=fleet.epoch + split.offset)
    prepared = prepare(Trace("morning", morning), settings)
    h = hashlib.sha256()
    for preset in ("seed", "default", "forecast"):
        run = simulate(prepared, policy_config(preset, settings), settings, preset, demand)
        h.update(repr(run).encode())
    return h.hexdigest()


def test_compiled_and_interpreted_give_the_same_results() -> None:
    """The backtest's results do not depend on the build: this process runs what bootstrap
    built (compiled, in the main leg), a child the sources."""
    if (importlib.import_module("bbbsim.fleet_model").__file__ or "").endswith(".py"):
        pytest.skip("this process runs the sources too: nothing to compare")
    code = (
        "from bbbcore import native; native.interpreted(); "
        "from tests.test_native import morning_results; print(morning_results())"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=native.ROOT
    )
    assert child.stdout.strip() == morning_results()
