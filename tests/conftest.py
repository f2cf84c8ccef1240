"""Shared test set-up: the AWS-on-loopback fixtures (moto_server + lifecycle layer)."""

import logging
from collections.abc import Iterator

import pytest
import structlog

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
