"""What other programs read of a bbbnode's /metrics: four series, fetched with a cap.

Only four metrics matter to a reader of a node (the scaler sizing the fleet,
bbbctl checking for meetings before it deletes the fleet) out of the hundred
or so lines a node exports, so the text is cut down to their lines before
prometheus_client parses it: parsing is what would otherwise dominate a round
over 1,000 nodes.
"""

from __future__ import annotations

from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bbbcore.http_body import TooLarge, read_body

CPU: Final = "bbbnode_cpu_utilization_ratio"
MEETINGS: Final = "bbb_meetings"
PARTICIPANTS: Final = "bbb_meetings_participants"
SNAPSHOT_AGE: Final = "bbbnode_snapshot_age_seconds"
NAMES: Final = (CPU, MEETINGS, PARTICIPANTS, SNAPSHOT_AGE)
"""The only series read from a node."""

DEFAULT_MAX_BYTES = 1024 * 1024
"""A node's whole exposition is a few KiB; anything far larger is not bbbnode."""

_WANTED = frozenset(NAMES)
# Cheap first test per line; the exact name is checked after it.
_PREFIXES = ("bbb_meetings", "bbbnode_cpu_utilization_ratio", "bbbnode_snapshot_age_seconds")


class Unreadable(Exception):
    """The node's metrics could not be read; ``str()`` says why in a word or two."""


def metrics_url(template: str, instance_id: str, private_ip: str | None) -> str | None:
    """The node's metrics URL, or None when the template needs an address it lacks."""
    if private_ip is None and "{private_ip" in template:
        return None
    return template.format(instance_id=instance_id, private_ip=private_ip or "")


def select_lines(text: str) -> str:
    """Only the sample, ``# TYPE`` and ``# HELP`` lines of the four series."""
    kept: list[str] = []
    for line in text.splitlines():
        if line.startswith(_PREFIXES):
            end = len(line)
            for stop in ("{", " "):
                found = line.find(stop)
                if 0 <= found < end:
                    end = found
            if line[:end] in _WANTED:
                kept.append(line)
        elif line.startswith(("# TYPE ", "# HELP ")):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2] in _WANTED:
                kept.append(line)
    kept.append("")
    return "\n".join(kept)


def parse_values(text: str) -> dict[str, float]:
    """Metric name → value of the four series in a text exposition.

    Raises ValueError when their lines do not parse. A labelled series is
    taken only when the metric has no unlabelled one.
    """
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(select_lines(text)):
        for sample in family.samples:
            if sample.name not in _WANTED:
                continue
            if not sample.labels or sample.name not in values:
                values[sample.name] = float(sample.value)
    return values


async def fetch_values(
    session: aiohttp.ClientSession,
    url: str,
    *,
    request_timeout: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, float]:
    """The four series at ``url`` (``request_timeout``: seconds for the whole answer);
    raises Unreadable (timeout, connection trouble, an HTTP
    error, too large, unparsable), never anything else for a node that misbehaves."""
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=request_timeout), allow_redirects=False
        ) as resp:
            if resp.status != 200:
                raise Unreadable(f"HTTP {resp.status}")
            body = await read_body(resp, max_bytes)
    except TimeoutError:
        raise Unreadable("timeout") from None
    except aiohttp.ClientError as exc:
        raise Unreadable(type(exc).__name__) from None
    except TooLarge:
        raise Unreadable("too large") from None
    try:
        return parse_values(body.decode("utf-8", "replace"))
    except ValueError:
        raise Unreadable("unparsable") from None
