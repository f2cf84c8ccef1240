"""Shared test set-up: the AWS-on-loopback fixtures (moto_server + lifecycle layer)."""

import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from bbbcore import native

if os.environ.get("BBBFLEET_INTERPRETED") == "1":
    native.interpreted()  # before any test module imports the policy

pytest_plugins = ["tests.aws_fixtures", "tests.pebble_fixtures", "tests.fleet_world"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests that run a CLI's main() in-process: it configures logging for the
    whole process, and later tests (capture_logs) must not inherit that."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_configure(config: pytest.Config) -> None:
    """Compiled modules older than their sources would test the old code: stop at once."""
    try:
        native.check()
    except native.StaleError as e:
        pytest.exit(str(e), returncode=2)
