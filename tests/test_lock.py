"""pyproject's pins and requirements.lock describe one tested set."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(spec: str) -> str:
    return re.split(r"[\[=<>~! ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_pins_match_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs.extend(extra)
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[name.lower().replace("_", "-")] = version
    for spec in specs:
        assert "==" in spec, f"not pinned: {spec}"
        version = spec.split("==", 1)[1]
        assert lock.get(_name(spec)) == version, f"{spec} vs lock {lock.get(_name(spec))}"


def test_boto_stack_is_aioboto3s() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^botocore==1\.40\.\d+$", lock, re.M)
    assert re.search(r"^aiobotocore==2\.25\.\d+$", lock, re.M)
