"""What the shipped packages import is installed by ``pip install bbbfleet`` (and its extras).

The repository's venv has the dev tools too, so a missing runtime pin only shows on a host
or a workstation that installed the wheel: this test reads every import the packages make
and checks that the distribution behind it is in the closure of the declared dependencies.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES: list[str] = PROJECT["tool"]["setuptools"]["packages"]
FIRST_PARTY = {p.split(".")[0] for p in PACKAGES}
EXTRA_OF_PACKAGE = {"bbbsim": "sim"}
"""Packages that need an extra (the simulator needs moto and matplotlib)."""
EXTRA_OF_LAZY_IMPORT = {("bbbctl", "cfnlint"): "deploy"}
"""Imports made inside a function for one command, from an extra that command asks for when
it is missing (``bbbctl stack validate`` lints with cfn-lint: ``bbbfleet[deploy]``)."""


def _closure(specs: list[str]) -> set[str]:
    """The distributions ``pip install`` brings for ``specs`` on this interpreter."""
    seen: set[str] = set()
    todo = [canonicalize_name(Requirement(s).name) for s in specs]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def _imports(tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(top-level module, made inside a function) of every absolute import, TYPE_CHECKING
    blocks left out."""

    def walk(node: ast.AST, lazy: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from (x for stmt in child.orelse for x in walk_one(stmt, lazy))
                continue
            yield from walk_one(child, lazy)

    def walk_one(node: ast.AST, lazy: bool) -> Iterator[tuple[str, bool]]:
        if isinstance(node, ast.Import):
            yield from ((alias.name.split(".")[0], lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], lazy
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        yield from walk(node, inner)

    yield from walk(tree, False)


def test_every_import_of_a_shipped_package_is_a_declared_dependency() -> None:
    runtime = PROJECT["project"]["dependencies"]
    extras = PROJECT["project"]["optional-dependencies"]
    needed = {*EXTRA_OF_PACKAGE.values(), *EXTRA_OF_LAZY_IMPORT.values()}
    allowed = {"": _closure(runtime)} | {
        extra: _closure([*runtime, *extras[extra]]) for extra in needed
    }
    distributions = md.packages_distributions()
    missing: list[str] = []
    for package in {p.split(".")[0] for p in PACKAGES}:
        closure = allowed[EXTRA_OF_PACKAGE.get(package, "")]
        for path in sorted((ROOT / package).rglob("*.py")):
            for module, lazy in _imports(ast.parse(path.read_text(), str(path))):
                if (
                    module in sys.stdlib_module_names
                    or module in FIRST_PARTY
                    or module == "__future__"
                ):
                    continue
                extra = EXTRA_OF_LAZY_IMPORT.get((package, module)) if lazy else None
                dists = {canonicalize_name(d) for d in distributions.get(module, [module])}
                if not dists & (closure if extra is None else allowed[extra]):
                    missing.append(
                        f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(dists))})"
                    )
    assert not missing, "imported but not a dependency of the install:\n" + "\n".join(missing)
