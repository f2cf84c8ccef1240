"""bbbcore.logs: JSON lines on the configured stream, whenever the logger was made."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from bbbcore import logs


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("restore_structlog")
def test_a_logger_made_before_configure_follows_it() -> None:
    early = logs.get("early")  # as a module does at import, before main() configures
    out = io.StringIO()
    logs.configure("warning", stream=out)
    early.info("dropped_below_the_level")
    early.warning("kept", password="hunter2")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["level"], e["logger"]) for e in lines] == [("kept", "warning", "early")]
    assert lines[0]["password"] == "<redacted>"
    assert "timestamp" in lines[0]
