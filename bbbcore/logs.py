"""structlog set-up: one JSON object per line on stderr with event, level, timestamp.

stdout stays free for command output. Values of keys that look like secrets are
replaced before rendering, so a careless ``log.info(..., secret=x)`` cannot leak.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

_SECRET_MARKERS = ("secret", "password", "token", "checksum", "authorization")


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event[key] = "<redacted>"
    return event


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog (and stdlib logging of libraries) to JSON lines on ``stream``."""
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiohttp, botocore) log through stdlib; keep them quiet and on stderr.
    logging.basicConfig(stream=out, level=max(numeric, logging.WARNING), force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _Named:
    """A logger carrying ``logger=name``, assembled from the configuration at each use.

    structlog's ``get_logger().bind()`` assembles at once, from the configuration of that
    moment: a module that binds its logger at import, before ``configure`` runs, would keep
    structlog's defaults (every level, console format, on stdout).
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(structlog.get_logger().bind(logger=self._name), attr)


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger carrying ``logger=name``; it follows ``configure`` whenever that runs."""
    return cast("structlog.typing.FilteringBoundLogger", _Named(name))
