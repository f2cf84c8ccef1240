"""The modules mypyc may compile to C in a source checkout, and whether the compiled ones
match their sources.

The backtest spends its time in the scaler's policy and the fleet model: pure Python,
much faster compiled (the README's backtest speed). ``scripts/compile.py`` builds them
in place beside their sources (``scripts/bootstrap.sh`` runs it); Python then imports an
extension before a ``.py`` of the same name, so a module edited after compiling would run
as it was compiled. The build records a digest of the sources it compiled, and
``check`` refuses to go on when they no longer match. The container image and a wheel
install ship the sources alone: there everything runs interpreted, with the same results.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or site-packages) the bbbfleet packages sit in."""

MODULES = (
    "bbbscaler/model.py",
    "bbbscaler/policy/*.py",
    "bbbsim/fleet_model.py",
    "bbbsim/termination_policy.py",
)
"""What is compiled, as globs under ROOT: the backtest's hot path and what it calls per event."""

GROUP = "bbbfleet_compiled"
"""mypyc's group: its shared library is the top-level module ``bbbfleet_compiled__mypyc``,
in ROOT (mypyc derives each module's ``__file__`` and ``__path__`` from its place, so it
must sit above the packages; bootstrap's editable install puts ROOT on ``sys.path``)."""


def digest_file(root: Path = ROOT) -> Path:
    """Where the build records the digest of the sources it compiled."""
    return root / "bbbsim" / "_compiled.sha256"


State = Literal["interpreted", "compiled", "stale"]


@dataclass(frozen=True, slots=True)
class Native:
    """What ``state`` found."""

    state: State
    compiled: tuple[str, ...]
    """Sources with an extension beside them (paths under ROOT)."""
    changed: tuple[str, ...] = ()
    """Why stale: the sources whose extension is missing, or ``*`` when the digest differs."""


def sources(root: Path = ROOT) -> tuple[Path, ...]:
    """The sources MODULES names, in a fixed order."""
    return tuple(sorted(p for pattern in MODULES for p in root.glob(pattern)))


def digest(paths: tuple[Path, ...], root: Path = ROOT) -> str:
    """sha256 over each source's path under ``root`` and content."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def extension_of(source: Path) -> Path | None:
    """The compiled extension Python would import instead of ``source``, if any."""
    for suffix in EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def state(root: Path = ROOT) -> Native:
    """Interpreted (no extension), compiled (all of them, from these sources) or stale."""
    paths = sources(root)
    have = tuple(p for p in paths if extension_of(p) is not None)
    names = tuple(p.relative_to(root).as_posix() for p in have)
    if not have:
        return Native("interpreted", ())
    missing = tuple(p.relative_to(root).as_posix() for p in paths if p not in have)
    if missing:
        return Native("stale", names, missing)
    recorded = digest_file(root)
    if not recorded.is_file() or recorded.read_text().strip() != digest(paths, root):
        return Native("stale", names, ("*",))
    return Native("compiled", names)


class StaleError(RuntimeError):
    """Compiled modules that no longer match their sources."""


def check(root: Path | None = None) -> Native:
    """``state`` (of ROOT by default), raising StaleError when it is stale (the message says
    what to run)."""
    found = state(ROOT if root is None else root)
    if found.state == "stale":
        what = "sources changed" if found.changed == ("*",) else ", ".join(found.changed)
        raise StaleError(
            f"compiled modules do not match their sources ({what}): run "
            "'python scripts/compile.py' (with --clean: run interpreted)"
        )
    return found


def refuse_stale(prog: str) -> bool:
    """For a command's start: True, after saying why on stderr, when compiled modules do
    not match their sources (the command then exits 2 instead of running old code)."""
    try:
        check()
    except StaleError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return True
    return False


class _Sources(MetaPathFinder):
    """Finds the MODULES' sources ahead of their extensions."""

    def __init__(self, root: Path) -> None:
        self.sources: dict[str, Path] = {}
        for path in sources(root):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            self.sources[name] = path

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        package = [str(source.parent)] if source.name == "__init__.py" else None
        return importlib.util.spec_from_file_location(
            fullname, source, submodule_search_locations=package
        )


def interpreted(root: Path = ROOT) -> None:
    """From now on, import the MODULES from their sources even where compiled ones sit
    beside them (the test suite's interpreted leg: what the container image runs). Call it
    before any of them is imported."""
    finder = _Sources(root)
    loaded = sorted(set(finder.sources) & set(sys.modules))
    if loaded:
        raise RuntimeError(f"already imported: {', '.join(loaded)}")
    sys.meta_path.insert(0, finder)
