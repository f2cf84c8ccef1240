from pathlib import Path

from bbbcore.bbb_secret import discover, read_property


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
