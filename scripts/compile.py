"""Compile the backtest's hot path with mypyc, in place beside the sources.

What is compiled and why: bbbcore/native.py. Needs mypy (the dev extra), a C compiler
and Python's headers; scripts/bootstrap.sh installs them and runs this with
``--if-changed`` (BBBFLEET_COMPILE=0 skips it). ``--clean`` removes what a build left,
so that everything runs interpreted again.

    .venv/bin/python scripts/compile.py [--if-changed | --clean]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from bbbcore import native

BUILD = Path("build") / "mypyc"


def clean(root: Path) -> int:
    """Remove the extensions, the shared library, the digest and the build tree."""
    removed = 0
    leftovers = [native.extension_of(p) for p in native.sources(root)]
    # Shared libraries: the group's in ROOT, and any a build with other options left
    # in the packages (never further down: the venv holds mypy's own).
    leftovers += list(root.glob("*__mypyc.*"))
    packages = {pattern.split("/")[0] for pattern in native.MODULES}
    leftovers += [x for pkg in sorted(packages) for x in (root / pkg).rglob("*__mypyc.*")]
    for path in (*leftovers, native.digest_file(root)):
        if path is not None and path.exists():
            path.unlink()
            removed += 1
    shutil.rmtree(root / BUILD, ignore_errors=True)
    return removed


def build(root: Path) -> None:
    """Compile native.MODULES in place and record their digest."""
    # Imported here: only a build needs them (mypy is the dev extra, setuptools the venv's).
    from mypyc.build import mypycify
    from setuptools import Distribution

    clean(root)
    paths = native.sources(root)
    recorded = native.digest(paths, root)
    os.chdir(root)  # mypy reads pyproject.toml's [tool.mypy] from here
    extensions = mypycify(
        [p.relative_to(root).as_posix() for p in paths],
        opt_level="3",
        group_name=native.GROUP,
        target_dir=str(BUILD),
    )
    dist = Distribution({"name": "bbbfleet-compiled", "ext_modules": extensions})
    command = dist.get_command_obj("build_ext")
    command.inplace = True
    command.build_temp = str(BUILD / "temp")
    command.parallel = os.cpu_count() or 1
    dist.run_command("build_ext")
    # Written last: a build that failed half-way leaves no digest, so ``check`` says stale.
    native.digest_file(root).write_text(recorded + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--if-changed", action="store_true",
                      help="do nothing when the compiled modules match their sources")  # fmt: skip
    mode.add_argument("--clean", action="store_true",
                      help="remove the compiled modules: everything runs interpreted")  # fmt: skip
    args = parser.parse_args(argv)
    root = native.ROOT
    if args.clean:
        print(f"compile: removed {clean(root)} file(s)", file=sys.stderr)
        return 0
    if args.if_changed and native.state(root).state == "compiled":
        return 0
    start = time.monotonic()
    build(root)
    found = native.state(root)
    print(
        f"compile: {len(found.compiled)} modules with mypyc in {time.monotonic() - start:.0f} s",
        file=sys.stderr,
    )
    return 0 if found.state == "compiled" else 1


if __name__ == "__main__":
    sys.exit(main())
