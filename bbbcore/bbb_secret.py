"""Where a BBB host keeps its API secret, when the config does not say."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# bbb-conf writes the live value to the first; the second holds the packaged default.
DEFAULT_PROPERTIES: tuple[Path, ...] = (
    Path("/etc/bigbluebutton/bbb-web.properties"),
    Path("/usr/share/bbb-web/WEB-INF/classes/bigbluebutton.properties"),
)


def read_property(path: Path, key: str) -> str | None:
    """Value of ``key`` in a Java properties file (last one wins), or None."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None
    value: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        for sep in ("=", ":"):
            name, found, rest = line.partition(sep)
            if found and name.strip() == key:
                value = rest.strip()
                break
    return value or None


def discover(explicit: str | None, paths: Sequence[Path] = DEFAULT_PROPERTIES) -> str | None:
    """The explicit secret if set, else ``securitySalt`` from the first file that has it."""
    if explicit:
        return explicit
    for path in paths:
        found = read_property(path, "securitySalt")
        if found:
            return found
    return None
