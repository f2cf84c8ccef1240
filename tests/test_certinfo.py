"""bbbcore.certinfo: names as TLS clients compare them, and when a certificate must be issued."""

from __future__ import annotations

import datetime as dt

from bbbcore import certinfo
from tests.certs import key_pem, new_key, self_signed

FQDN = "i-0123456789abcdef0.bbb.example.test"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def test_covers_exact_names_and_one_label_wildcards() -> None:
    assert certinfo.covers(["*.bbb.example.test"], FQDN)
    assert certinfo.covers(["*.BBB.example.test."], FQDN.upper() + ".")
    assert certinfo.covers([FQDN], FQDN)
    assert certinfo.covers(["*.bbb.example.test"], "*.bbb.example.test")
    # RFC 6125 6.4.3: one label, never the base name or two labels.
    assert not certinfo.covers(["*.bbb.example.test"], "bbb.example.test")
    assert not certinfo.covers(["*.bbb.example.test"], "a.i-1.bbb.example.test")
    assert not certinfo.covers(["*.example.test"], FQDN)
    assert not certinfo.covers([FQDN], "*.bbb.example.test")
    assert not certinfo.covers([], FQDN)


def test_needs_issue_missing_and_unreadable() -> None:
    assert certinfo.needs_issue(None, FQDN, NOW, 30) is certinfo.Reason.MISSING
    assert certinfo.needs_issue(b"", FQDN, NOW, 30) is certinfo.Reason.UNREADABLE
    assert certinfo.needs_issue(b"not a certificate", FQDN, NOW, 30) is certinfo.Reason.UNREADABLE


def test_needs_issue_wrong_name() -> None:
    later = NOW + dt.timedelta(days=80)
    assert certinfo.needs_issue(self_signed(["other.example.test"], later), FQDN, NOW, 30) == (
        certinfo.Reason.WRONG_NAME
    )
    # The common name does not count, only the SAN (as browsers do).
    assert certinfo.needs_issue(self_signed([], later), FQDN, NOW, 30) is certinfo.Reason.WRONG_NAME


def test_needs_issue_fine_certificate_names_compared_like_dns() -> None:
    cert = self_signed(["www.example.test", FQDN.upper()], NOW + dt.timedelta(days=80))
    assert certinfo.needs_issue(cert, FQDN, NOW, 30) is None
    assert certinfo.needs_issue(cert, FQDN + ".", NOW, 30) is None


def test_needs_issue_renewal_window_edges() -> None:
    not_after = NOW + dt.timedelta(days=30)
    cert = self_signed([FQDN], not_after)
    assert certinfo.needs_issue(cert, FQDN, NOW - dt.timedelta(seconds=1), 30) is None
    assert certinfo.needs_issue(cert, FQDN, NOW, 30) is certinfo.Reason.EXPIRING
    assert certinfo.needs_issue(cert, FQDN, not_after + dt.timedelta(days=1), 30) is (
        certinfo.Reason.EXPIRING
    )
    assert certinfo.needs_issue(cert, FQDN, NOW, 29) is None


def test_needs_issue_key_must_match() -> None:
    key = new_key()
    cert = self_signed([FQDN], NOW + dt.timedelta(days=80), key)
    assert certinfo.needs_issue(cert, FQDN, NOW, 30, key_pem=key_pem(key)) is None
    assert certinfo.needs_issue(cert, FQDN, NOW, 30, key_pem=key_pem(new_key())) is (
        certinfo.Reason.KEY_MISMATCH
    )
    assert (
        certinfo.needs_issue(cert, FQDN, NOW, 30, key_pem=b"garbage")
        is certinfo.Reason.KEY_MISMATCH
    )


def test_needs_issue_for_a_wildcard() -> None:
    later = NOW + dt.timedelta(days=80)
    cert = self_signed(["*.bbb.example.test"], later)
    assert certinfo.needs_issue(cert, FQDN, NOW, 30) is None
    assert certinfo.needs_issue(cert, "*.bbb.example.test", NOW, 30) is None
    assert certinfo.needs_issue(cert, "*.other.example.test", NOW, 30) is certinfo.Reason.WRONG_NAME
    assert certinfo.needs_issue(cert, "bbb.example.test", NOW, 30) is certinfo.Reason.WRONG_NAME


def test_keys_are_p256_and_recognised() -> None:
    pem = certinfo.new_ec_key_pem()
    assert certinfo.is_ec_key(pem)
    assert b"PRIVATE KEY" in pem
    assert not certinfo.is_ec_key(None)
    assert not certinfo.is_ec_key(b"garbage")
