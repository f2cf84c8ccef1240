"""Checksum vectors from coreutils sha*sum, so the test cannot agree with itself."""

import pytest

from bbbcore import checksum

SECRET = "639259d4-9dd8-4b25-bf01-95f9567eaf4b"
QUERY = "meetingID=abc+def&name=Caf%C3%A9"
VECTORS = {
    "sha1": "2df836635d8b374b2842ab6cb1fde9539e275418",
    "sha256": "18f9c5403f2cecd03aa63556f8d8618d228402e2fadf193aadfe5d8616132312",
    "sha384": "499f6bdaeaafe552fae0f165b0834cd783341d5bd2637c062bcbd46d1b30eae6"
    "4d4eaedae098107fc40665d56d56f0e0",
    "sha512": "b2481576c873aead5e5a0f5ac29aeab62aca61bc3b4934bfdfc69966e104aed7"
    "b19692de39df369760870e61dabc68527ca2a34a40101fbef430d5d84badac6e",
}


@pytest.mark.parametrize("algorithm", checksum.ALGORITHMS)
def test_vectors(algorithm: checksum.Algorithm) -> None:
    assert checksum.encode_query({"meetingID": "abc def", "name": "Café"}) == QUERY
    assert checksum.compute("getMeetings", QUERY, SECRET, algorithm) == VECTORS[algorithm]
    assert checksum.verify("getMeetings", QUERY, SECRET, VECTORS[algorithm])
    assert checksum.algorithm_of(VECTORS[algorithm]) == algorithm


def test_empty_query_and_signed_query() -> None:
    expected = "a5370c5f3d97d56d53b435684cdbc429c2898a3bf9f435518b4279e1e0dbfc8c"
    assert checksum.signed_query("getMeetings", [], SECRET, "sha256") == f"checksum={expected}"
    assert (
        checksum.signed_query(
            "getMeetings", {"meetingID": "abc def", "name": "Café"}, SECRET, "sha1"
        )
        == f"{QUERY}&checksum={VECTORS['sha1']}"
    )


def test_verify_rejects() -> None:
    good = VECTORS["sha256"]
    assert not checksum.verify("getMeetings", QUERY, SECRET + "x", good)
    assert not checksum.verify("create", QUERY, SECRET, good)
    assert not checksum.verify("getMeetings", QUERY, SECRET, good[:-1])
    assert not checksum.verify("getMeetings", QUERY, SECRET, good, allowed=("sha1",))
    assert checksum.verify("getMeetings", QUERY, SECRET, good.upper())


@pytest.mark.parametrize(
    ("supported", "allowed"),
    [
        # The packaged default (bigbluebutton.properties, below securitySalt).
        ("sha1,sha256,sha384,sha512", ("sha1", "sha256", "sha384", "sha512")),
        ("sha512", ("sha512",)),
        # GetChecksumValidator.java:51-69 (4b5d4e9): String.contains on the raw value.
        (" sha512 , sha256 ", ("sha256", "sha512")),
        ("sha384;sha1", ("sha1", "sha384")),
        ("SHA512", ()),
        ("md5", ()),
        ("", ()),
    ],
)
def test_bbb_web_allows_by_substring(
    supported: str, allowed: tuple[checksum.Algorithm, ...]
) -> None:
    assert checksum.bbb_web_allows(supported) == allowed


def test_strongest() -> None:
    assert checksum.strongest(checksum.ALGORITHMS) == "sha512"
    assert checksum.strongest(("sha256", "sha1")) == "sha256"
    assert checksum.strongest(("sha384",)) == "sha384"
    assert checksum.strongest(()) is None
