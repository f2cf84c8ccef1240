"""bbbcore.acme_dns01: the pure parts of the ACME flow, and a CA's rateLimited answer."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from acme import challenges, errors, messages

from bbbcore import acme_dns01 as acme

FQDN = "i-0123456789abcdef0.bbb.example.test"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def _authz(status: str, *, dns01: bool = True, domain: str = FQDN) -> acme.Authz:
    challenge = (
        messages.ChallengeBody(
            chall=challenges.DNS01(token=b"t" * 16),
            uri="https://ca.test/chall/1",
            status=messages.Status.from_json("pending"),
        )
        if dns01
        else None
    )
    return acme.Authz(domain=domain, status=status, challenge=challenge, problem="boom")


def test_challenges_to_answer_skips_authorizations_the_ca_reused() -> None:
    pending = _authz("pending", domain="b.example.test")
    assert acme.challenges_to_answer([_authz("valid"), pending]) == (pending,)
    assert acme.challenges_to_answer([_authz("valid")]) == ()


@pytest.mark.parametrize("status", ["invalid", "deactivated", "expired", "revoked"])
def test_challenges_to_answer_dead_authorization_is_rejected(status: str) -> None:
    with pytest.raises(acme.ChallengeFailed, match=status):
        acme.challenges_to_answer([_authz(status)])


def test_challenges_to_answer_needs_dns01() -> None:
    with pytest.raises(acme.ChallengeFailed, match="no dns-01"):
        acme.challenges_to_answer([_authz("pending", dns01=False)])


def test_challenge_record_name() -> None:
    assert acme.challenge_record("Host.Example.Test.") == "_acme-challenge.host.example.test"


def test_poll_delay() -> None:
    assert acme.poll_delay(None, 2.0, 30.0, NOW) == 2.0
    assert acme.poll_delay("5", 2.0, 30.0, NOW) == 5.0
    assert acme.poll_delay("3600", 2.0, 30.0, NOW) == 30.0
    assert acme.poll_delay("Mon, 01 Jun 2026 12:00:10 GMT", 2.0, 30.0, NOW) == 10.0
    assert acme.poll_delay("Mon, 01 Jun 2026 11:00:00 GMT", 2.0, 30.0, NOW) == 0.0
    assert acme.poll_delay("soon", 2.0, 30.0, NOW) == 2.0


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (messages.Error.with_code("badNonce"), True),
        (messages.Error.with_code("serverInternal"), True),
        (messages.Error.with_code("unauthorized"), False),
        (messages.Error.with_code("rateLimited"), False),
        (messages.Error.with_code("rejectedIdentifier"), False),
        (errors.ConflictError("https://ca.test/acct/1"), False),
        (errors.BadNonce("x", ValueError()), True),
        (requests.exceptions.ConnectionError("refused"), True),
        (requests.exceptions.ReadTimeout("slow"), True),
        (requests.exceptions.SSLError("unknown CA"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert acme.is_transient(exc) is transient
