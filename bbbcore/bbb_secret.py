"""What a BBB host's API needs from its callers: the secret, and which checksums it takes.

bbb-web reads both from its properties: ``/etc/bigbluebutton/bbb-web.properties``
(what bbb-conf and the operator set) overrides the packaged
``bigbluebutton.properties`` key by key (docs.bigbluebutton.org/development/api,
"API Security Model").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bbbcore import checksum

# bbb-conf writes the live value to the first; the second holds the packaged default.
DEFAULT_PROPERTIES: tuple[Path, ...] = (
    Path("/etc/bigbluebutton/bbb-web.properties"),
    Path("/usr/share/bbb-web/WEB-INF/classes/bigbluebutton.properties"),
)
ALGORITHMS_KEY = "supportedChecksumAlgorithms"

Choice = Literal["auto", "sha1", "sha256", "sha384", "sha512"]
"""bbbnode's ``bbb.checksum``: ``auto`` or one algorithm."""


def _lookup(path: Path, key: str) -> str | None:
    """Value of ``key`` in a Java properties file (last one wins), ``""`` if set empty."""
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
    return value


def read_property(path: Path, key: str) -> str | None:
    """Value of ``key`` in a Java properties file (last one wins), or None if unset or empty."""
    return _lookup(path, key) or None


def discover(explicit: str | None, paths: Sequence[Path] = DEFAULT_PROPERTIES) -> str | None:
    """The explicit secret if set, else ``securitySalt`` from the first file that has it."""
    if explicit:
        return explicit
    for path in paths:
        found = read_property(path, "securitySalt")
        if found:
            return found
    return None


@dataclass(frozen=True, slots=True)
class HostAlgorithms:
    """What the host's bbb-web accepts, and where that was read."""

    allowed: tuple[checksum.Algorithm, ...]
    value: str
    source: Path


def discover_algorithms(paths: Sequence[Path] = DEFAULT_PROPERTIES) -> HostAlgorithms | None:
    """``supportedChecksumAlgorithms`` from the first file that sets it, None if none does.

    A key set to an empty value counts as set: bbb-web then accepts nothing.
    """
    for path in paths:
        value = _lookup(path, ALGORITHMS_KEY)
        if value is not None:
            return HostAlgorithms(checksum.bbb_web_allows(value), value, path)
    return None


class UnusableAlgorithm(ValueError):
    """The host's bbb-web would refuse every call bbbnode could sign."""


FALLBACK: checksum.Algorithm = "sha256"
"""When no file says: bbb-web before 2.5 checks sha1 and sha256 only
(GetChecksumValidator.java at 0ee199d), and from 2.5 its default takes all four."""


def signing_algorithm(configured: Choice, host: HostAlgorithms | None) -> checksum.Algorithm:
    """The algorithm to sign with: ``configured``, or the host's strongest for ``auto``.

    Raises UnusableAlgorithm when the host's list is known and refuses it: a
    node signing with a refused algorithm is blind (checksumError on every
    poll), and a blind node blocks every scale-in of the fleet.
    """
    if host is None:
        return FALLBACK if configured == "auto" else configured
    if configured == "auto":
        best = checksum.strongest(host.allowed)
        if best is None:
            raise UnusableAlgorithm(
                f"{ALGORITHMS_KEY}={host.value!r} in {host.source} allows none of "
                f"{', '.join(checksum.ALGORITHMS)}"
            )
        return best
    if configured not in host.allowed:
        raise UnusableAlgorithm(
            f"{configured} is not in {ALGORITHMS_KEY}={host.value!r} ({host.source})"
        )
    return configured


def scalelite_signing_algorithm(loadbalancer_checksum_algorithm: str | None) -> checksum.Algorithm:
    """What Scalelite v1.8.5 signs its calls to BBB with (its poll's getMeetings included).

    ``ApiHelper#checksum_algorithm`` (app/controllers/concerns/api_helper.rb:90-104):
    SHA256 while ``LOADBALANCER_CHECKSUM_ALGORITHM`` is blank; once set, SHA512 if
    its ``:``-separated list names it, else SHA256 if named, else SHA1. The same
    variable is the list Scalelite accepts from its own clients
    (config/application.rb:51-53, default ``SHA1:SHA256:SHA512``).
    """
    value = (loadbalancer_checksum_algorithm or "").strip()
    if not value:
        return "sha256"
    names = value.split(":")
    if "SHA512" in names:
        return "sha512"
    if "SHA256" in names:
        return "sha256"
    return "sha1"


SCALELITE_SETTING = "LOADBALANCER_CHECKSUM_ALGORITHM=SHA1:SHA256:SHA512"
"""Scalelite's own default list, set explicitly: that alone makes it sign with SHA512."""


def scalelite_advice(host: HostAlgorithms | None) -> str | None:
    """What Scalelite needs so its poll is not refused by this host, None if its default works.

    A refused poll is a failed poll: a new server never comes online, and an
    online one is taken offline after SERVER_UNHEALTHY_THRESHOLD polls with its
    meetings forgotten (lib/tasks/poll.rake:38, 87-118).
    """
    if host is None or scalelite_signing_algorithm(None) in host.allowed:
        return None
    if scalelite_signing_algorithm(SCALELITE_SETTING.partition("=")[2]) in host.allowed:
        return (
            f"Scalelite signs its calls to BBB with SHA256 unless told otherwise: set "
            f"{SCALELITE_SETTING} in Scalelite's environment (it then signs with SHA512 "
            f"and still accepts its clients' SHA1, SHA256 and SHA512)"
        )
    if "sha1" in host.allowed:
        return (
            "Scalelite signs with SHA1 only when LOADBALANCER_CHECKSUM_ALGORITHM lists neither "
            "SHA256 nor SHA512, which also makes it refuse its clients' stronger checksums: "
            "allow sha256 or sha512 in supportedChecksumAlgorithms instead"
        )
    return (
        "Scalelite signs only with SHA1, SHA256 or SHA512 and this host allows none of them: "
        "Scalelite can never poll it; allow sha512 (or sha256) in supportedChecksumAlgorithms"
    )
