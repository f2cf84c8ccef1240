"""The checksum BigBlueButton and Scalelite put on every API call.

``hex(H(call_name + query_string + secret))`` where the query string is exactly
what is sent, without the ``checksum`` parameter itself.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal
from urllib.parse import urlencode

Algorithm = Literal["sha1", "sha256", "sha384", "sha512"]
ALGORITHMS: tuple[Algorithm, ...] = ("sha1", "sha256", "sha384", "sha512")
"""Weakest first, so the last allowed one is the strongest."""
_HEX_LENGTH = {"sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}

BBB_WEB_DEFAULT = "sha1,sha256,sha384,sha512"
"""bbb-web's packaged ``supportedChecksumAlgorithms`` (bigbluebutton-web/grails-app/conf/
bigbluebutton.properties, the key below ``securitySalt``: all four since BBB 2.5)."""


def bbb_web_allows(supported: str) -> tuple[Algorithm, ...]:
    """The algorithms bbb-web accepts for a ``supportedChecksumAlgorithms`` value, weakest first.

    bbb-web picks the algorithm by the checksum's length and tests its name with Java's
    ``String.contains`` on the raw value (bigbluebutton/bigbluebutton
    bbb-common-web/src/main/java/org/bigbluebutton/api/model/validator/
    GetChecksumValidator.java:49-76 at 4b5d4e9): case-sensitive, no splitting, so
    ``"sha256, sha512"`` allows both and ``"SHA512"`` allows nothing.
    """
    return tuple(name for name in ALGORITHMS if name in supported)


def strongest(allowed: tuple[Algorithm, ...]) -> Algorithm | None:
    """The strongest of ``allowed`` (sha512 > sha384 > sha256 > sha1), None if empty."""
    ranked = [name for name in ALGORITHMS if name in allowed]
    return ranked[-1] if ranked else None


def encode_query(params: dict[str, str] | list[tuple[str, str]]) -> str:
    """URL-encode parameters the way BBB expects (spaces as ``+``, UTF-8)."""
    return urlencode(params, encoding="utf-8")


def compute(call: str, query: str, secret: str, algorithm: Algorithm = "sha256") -> str:
    """Hex digest of ``call + query + secret`` with ``algorithm``."""
    digest = hashlib.new(algorithm)
    digest.update((call + query + secret).encode("utf-8"))
    return digest.hexdigest()


def algorithm_of(checksum: str) -> Algorithm | None:
    """Which algorithm a hex checksum of this length belongs to, if any."""
    for name, length in _HEX_LENGTH.items():
        if len(checksum) == length:
            return name  # type: ignore[return-value]
    return None


def verify(
    call: str,
    query: str,
    secret: str,
    checksum: str,
    allowed: tuple[Algorithm, ...] = ALGORITHMS,
) -> bool:
    """True if ``checksum`` is right for one of the ``allowed`` algorithms (by length)."""
    algorithm = algorithm_of(checksum.lower())
    if algorithm is None or algorithm not in allowed:
        return False
    return hmac.compare_digest(compute(call, query, secret, algorithm), checksum.lower())


def signed_query(
    call: str, params: dict[str, str] | list[tuple[str, str]], secret: str, algorithm: Algorithm
) -> str:
    """Query string with ``checksum`` appended, ready to put after ``?``."""
    query = encode_query(params)
    checksum = compute(call, query, secret, algorithm)
    return f"{query}&checksum={checksum}" if query else f"checksum={checksum}"
