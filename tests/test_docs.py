"""Documentation that users rely on stays in step with the code."""

from pathlib import Path

from bbbcore.config import keys, reference
from bbbnode.settings import NodeSettings

ROOT = Path(__file__).resolve().parent.parent


def test_bbbnode_configuration_reference_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert reference(NodeSettings) in doc, "run: bbbnode config-reference"


def test_every_key_has_a_meaning() -> None:
    missing = [key for key, _, _, meaning in keys(NodeSettings) if not meaning]
    assert missing == []


def test_metrics_doc_names_every_bbbnode_metric() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    source = (ROOT / "bbbnode" / "exposition.py").read_text()
    import re

    for name in set(re.findall(r'"((?:bbb|bbbnode)_[a-z_]+)"', source)):
        assert name.removesuffix("_total") in doc, name
