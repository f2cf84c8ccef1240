"""Documentation that users rely on stays in step with the code."""

from pathlib import Path

from bbbcore.config import keys, reference
from bbbctl.settings import CtlSettings
from bbbnode.settings import NodeSettings
from bbbscaler.settings import ScalerSettings

ROOT = Path(__file__).resolve().parent.parent


def test_bbbnode_configuration_reference_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert reference(NodeSettings) in doc, "run: bbbnode config-reference"


def test_bbbscaler_configuration_reference_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert reference(ScalerSettings) in doc, "run: bbbscaler config-reference"


def test_bbbctl_configuration_reference_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert reference(CtlSettings) in doc, "run: bbbctl config-reference"


def test_every_key_has_a_meaning() -> None:
    for settings in (NodeSettings, ScalerSettings, CtlSettings):
        missing = [key for key, _, _, meaning in keys(settings) if not meaning]
        assert missing == []


def test_scaler_doc_names_every_bbbscaler_metric() -> None:
    doc = (ROOT / "docs" / "scaler.md").read_text()
    source = (ROOT / "bbbscaler" / "exposition.py").read_text()
    import re

    names = set(re.findall(r'"(bbbscaler_[a-z_]+)"', source))
    assert names
    for name in names:
        assert name in doc, name


def test_metrics_doc_names_every_bbbnode_metric() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    source = (ROOT / "bbbnode" / "exposition.py").read_text()
    import re

    for name in set(re.findall(r'"((?:bbb|bbbnode)_[a-z_]+)"', source)):
        assert name.removesuffix("_total") in doc, name
