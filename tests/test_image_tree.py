"""The image, configured for a launched instance: no trace of the builder may remain.

bbbsim/image_tree.py lays out the files bbb-install wrote on a NAT'd EC2
builder, each naming the builder's name, public address or private address.
``bbbnode host-config --root`` (the operator's door, and the same operation the
host helper runs) configures that tree for an instance's addresses; then the
WHOLE tree is searched, every file, not only the ones bbbnode knows about.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbbnode import cli
from bbbsim.image_tree import (
    BUILDER_NAME,
    BUILDER_PRIVATE_IP,
    BUILDER_PUBLIC_IP,
    FIXTURES,
    make_host,
    traces,
)

FQDN = "i-0abc123def4567890.bbb.example.org"


def main(argv: list[str]) -> int:
    """The CLI in this process, minus its logging set-up: reconfiguring structlog
    here would detach the loggers other tests capture."""
    with mock.patch("bbbcore.logs.configure"):
        return cli.main(argv)


def host_config(root: Path, public: str, private: str, *extra: str) -> list[str]:
    """Run the CLI; the files it printed (SystemExit on an error)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["host-config", "--root", str(root), "--public-ip", public, "--private-ip", private,
             "--fqdn", FQDN, *extra]
        )  # fmt: skip
    if code != 0:
        raise SystemExit(code)
    return out.getvalue().splitlines()


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_builder_is_in_every_file_bbb_install_wrote(tmp_path: Path) -> None:
    make_host(tmp_path)
    # The fixture really is the builder's: each file names it somehow.
    named = {line.split(":")[0] for line in traces(tmp_path, BUILDER_NAME, BUILDER_PUBLIC_IP,
                                                   BUILDER_PRIVATE_IP)}  # fmt: skip
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert len(files) == len(FIXTURES)
    assert files - named == {"etc/nginx/nginx.conf"}


def test_no_builder_address_or_name_remains_anywhere(tmp_path: Path) -> None:
    make_host(tmp_path)

    changed = host_config(tmp_path, "198.51.100.7", "10.0.3.21")

    assert traces(tmp_path, BUILDER_NAME, BUILDER_PUBLIC_IP, BUILDER_PRIVATE_IP) == []
    # Every file bbb-install wrote was changed (nginx.conf: the name's hash bucket).
    assert sorted(changed) == sorted(str(p) for p in tmp_path.rglob("*") if p.is_file())
    # ...and now names this instance where the builder was named.
    assert FQDN in (tmp_path / "etc/bigbluebutton/bbb-web.properties").read_text()
    assert "10.0.3.21" in (tmp_path / "etc/iptables/rules.v4").read_text()


def test_a_second_run_changes_and_prints_nothing(tmp_path: Path) -> None:
    make_host(tmp_path)
    host_config(tmp_path, "198.51.100.7", "10.0.3.21")
    before = snapshot(tmp_path)

    assert host_config(tmp_path, "198.51.100.7", "10.0.3.21") == []
    assert snapshot(tmp_path) == before


def test_dry_run_prints_the_same_list_and_changes_nothing(tmp_path: Path) -> None:
    make_host(tmp_path)
    before = snapshot(tmp_path)

    planned = host_config(tmp_path, "198.51.100.7", "10.0.3.21", "--dry-run")

    assert snapshot(tmp_path) == before
    assert planned == host_config(tmp_path, "198.51.100.7", "10.0.3.21")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--public-ip", "198.51.100.300"], "--public-ip: not an IPv4 address"),
        (["--private-ip", "fe80::1"], "--private-ip"),
        (["--fqdn", "Not_A.Name"], "--fqdn: not a lower-case DNS name"),
    ],
)
def test_bad_input_exits_2_naming_the_flag_and_changes_nothing(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make_host(tmp_path)
    before = snapshot(tmp_path)
    argv = ["host-config", "--root", str(tmp_path), "--public-ip", "198.51.100.7",
            "--private-ip", "10.0.3.21", "--fqdn", FQDN, *args]  # fmt: skip

    assert main(argv) == 2

    assert message in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_a_missing_root_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["host-config", "--root", str(tmp_path / "nope"), "--public-ip", "198.51.100.7",
            "--private-ip", "10.0.3.21", "--fqdn", FQDN]  # fmt: skip
    assert main(argv) == 2
    assert "--root" in capsys.readouterr().err


_octet = st.integers(1, 254)
_public = st.builds(lambda a, b: f"198.51.{a}.{b}", _octet, _octet)
_private = st.builds(lambda a, b: f"10.20.{a}.{b}", _octet, _octet)


@settings(max_examples=15, deadline=None)
@given(first=st.tuples(_public, _private), then=st.tuples(_public, _private))
def test_a_new_address_replaces_every_trace_of_the_old_one(
    first: tuple[str, str], then: tuple[str, str]
) -> None:
    """A warm-pool instance starts again with a new public address (issue 17's case)."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        make_host(root)
        host_config(root, *first)
        host_config(root, *then)
        gone = [a for a in (*first, BUILDER_NAME, BUILDER_PUBLIC_IP, BUILDER_PRIVATE_IP)
                if a not in then]  # fmt: skip
        assert traces(root, *gone) == []
        rules = (root / "etc/iptables/rules.v4").read_text()
        assert rules.count("-j DNAT") == 1
        assert f"-s {then[1]}/32 -d {then[0]}/32" in rules
