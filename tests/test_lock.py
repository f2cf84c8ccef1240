"""pyproject's pins and requirements.lock describe one tested set."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def test_pins_match_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs.extend(extra)
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[canonicalize_name(name)] = version
    for spec in specs:
        assert "==" in spec, f"not pinned: {spec}"
        version = spec.split("==", 1)[1]
        name = canonicalize_name(Requirement(spec).name)
        assert lock.get(name) == version, f"{spec} vs lock {lock.get(name)}"


def test_boto_stack_is_aioboto3s() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^botocore==1\.40\.\d+$", lock, re.M)
    assert re.search(r"^aiobotocore==2\.25\.\d+$", lock, re.M)
