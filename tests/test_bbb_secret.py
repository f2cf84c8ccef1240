from pathlib import Path

import pytest

from bbbcore import checksum
from bbbcore.bbb_secret import (
    SCALELITE_SETTING,
    HostAlgorithms,
    UnusableAlgorithm,
    discover,
    discover_algorithms,
    read_property,
    scalelite_advice,
    scalelite_signing_algorithm,
    signing_algorithm,
)


def test_explicit_wins(tmp_path: Path) -> None:
    props = tmp_path / "bbb-web.properties"
    props.write_text("securitySalt=fromfile\n")
    assert discover("explicit", [props]) == "explicit"


def test_first_file_with_value_wins(tmp_path: Path) -> None:
    etc = tmp_path / "bbb-web.properties"
    etc.write_text("# overrides\nbigbluebutton.web.serverURL=https://x\n")
    packaged = tmp_path / "bigbluebutton.properties"
    packaged.write_text("securitySalt = packaged\n")
    assert discover(None, [tmp_path / "missing", etc, packaged]) == "packaged"
    etc.write_text("securitySalt=live\n#securitySalt=commented\n")
    assert discover(None, [etc, packaged]) == "live"


def test_last_assignment_and_empty(tmp_path: Path) -> None:
    props = tmp_path / "p"
    props.write_text("securitySalt=a\nsecuritySalt=b\n")
    assert read_property(props, "securitySalt") == "b"
    props.write_text("securitySalt=\n")
    assert discover(None, [props]) is None
    assert read_property(tmp_path, "securitySalt") is None


def test_algorithms_from_the_first_file_that_sets_them(tmp_path: Path) -> None:
    etc = tmp_path / "bbb-web.properties"
    packaged = tmp_path / "bigbluebutton.properties"
    packaged.write_text("securitySalt=x\nsupportedChecksumAlgorithms=sha1,sha256,sha384,sha512\n")
    etc.write_text("securitySalt=y\n")
    # bbb-web.properties overrides the packaged file key by key: unset here, the default holds.
    assert discover_algorithms([etc, packaged]) == HostAlgorithms(
        ("sha1", "sha256", "sha384", "sha512"), "sha1,sha256,sha384,sha512", packaged
    )
    etc.write_text("supportedChecksumAlgorithms=sha512\n")
    found = discover_algorithms([etc, packaged])
    assert found is not None
    assert (found.allowed, found.source) == (("sha512",), etc)
    # Set but empty is still set: bbb-web then refuses every checksum.
    etc.write_text("supportedChecksumAlgorithms=\n")
    found = discover_algorithms([etc, packaged])
    assert found is not None
    assert found.allowed == ()
    assert discover_algorithms([tmp_path / "missing"]) is None


def _host(value: str) -> HostAlgorithms:
    return HostAlgorithms(checksum.bbb_web_allows(value), value, Path("bbb-web.properties"))


def test_signing_algorithm() -> None:
    # auto: the strongest the host allows; with no file, sha256 (every bbb-web takes it).
    assert signing_algorithm("auto", None) == "sha256"
    assert signing_algorithm("auto", _host("sha1,sha256,sha384,sha512")) == "sha512"
    assert signing_algorithm("auto", _host("sha256,sha384")) == "sha384"
    assert signing_algorithm("sha256", _host("sha1,sha256,sha384,sha512")) == "sha256"
    assert signing_algorithm("sha1", None) == "sha1"
    with pytest.raises(UnusableAlgorithm, match="sha256 is not in"):
        signing_algorithm("sha256", _host("sha512"))
    with pytest.raises(UnusableAlgorithm, match="allows none"):
        signing_algorithm("auto", _host("SHA512"))


@pytest.mark.parametrize(
    ("env", "algorithm"),
    [
        # api_helper.rb:92: blank (unset) means SHA256, whatever the accepted list is.
        (None, "sha256"),
        ("  ", "sha256"),
        # :97-102: once set, SHA512 if listed, else SHA256, else SHA1.
        ("SHA1:SHA256:SHA512", "sha512"),
        ("SHA256", "sha256"),
        ("SHA1", "sha1"),
        ("sha512", "sha1"),  # Array#include? is exact: lower case names nothing
    ],
)
def test_scalelite_signs_bbb_calls_as_v1_8_5(env: str | None, algorithm: str) -> None:
    assert scalelite_signing_algorithm(env) == algorithm


def test_scalelite_advice_for_a_restricted_host() -> None:
    assert scalelite_advice(None) is None
    assert scalelite_advice(_host("sha1,sha256,sha384,sha512")) is None
    assert scalelite_advice(_host("sha256")) is None
    advice = scalelite_advice(_host("sha512"))
    assert advice is not None
    assert "LOADBALANCER_CHECKSUM_ALGORITHM=SHA1:SHA256:SHA512" in advice
    # The advised setting does make Scalelite sign with what the host takes.
    assert scalelite_signing_algorithm(SCALELITE_SETTING.partition("=")[2]) == "sha512"
    assert "instead" in (scalelite_advice(_host("sha1")) or "")
    assert "never" in (scalelite_advice(_host("sha384")) or "")
