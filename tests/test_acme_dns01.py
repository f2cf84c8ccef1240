"""bbbcore.acme_dns01: the pure parts of the ACME flow, and a CA's rateLimited answer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from acme import challenges, errors, messages

from bbbcore import acme_dns01 as acme
from bbbcore import certinfo
from tests.rate_limited_ca import rate_limited_ca

if TYPE_CHECKING:
    from tests.pebble_fixtures import Pebble, PebbleDns

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


def test_retry_at_prefers_the_header_then_the_detail() -> None:
    detail = "too many certificates (50) already issued ..., retry after 2026-06-02T08:14:22Z: see"
    assert acme.retry_at("120", detail, NOW) == NOW + dt.timedelta(seconds=120)
    assert acme.retry_at("Tue, 02 Jun 2026 09:00:00 GMT", None, NOW) == dt.datetime(
        2026, 6, 2, 9, 0, tzinfo=dt.UTC
    )
    assert acme.retry_at(None, detail, NOW) == dt.datetime(2026, 6, 2, 8, 14, 22, tzinfo=dt.UTC)
    # Older Boulder releases spelled the time "2026-06-02 08:14:22 UTC".
    older = (
        "Error creating new order :: too many certificates ..., retry after 2026-06-02 08:14:22 UTC"
    )
    assert acme.retry_at("soon", older, NOW) == dt.datetime(2026, 6, 2, 8, 14, 22, tzinfo=dt.UTC)
    assert acme.retry_at(None, "too many certificates", NOW) is None
    assert acme.retry_at(None, None, NOW) is None


def test_describe_carries_the_retry_time() -> None:
    when = NOW + dt.timedelta(hours=3)
    fields = acme.describe(acme.AcmeRateLimited("new_order: rateLimited", when))
    assert fields == {
        "error_type": "AcmeRateLimited",
        "error": "new_order: rateLimited",
        "retry_after": when.isoformat(),
    }
    assert "retry_after" not in acme.describe(acme.AcmeRateLimited("x", None))


FAST = acme.AcmeTiming(poll_interval=0.05, max_poll_interval=0.2, poll_timeout=30.0)


@pytest.mark.integration
async def test_rate_limited_order_is_a_typed_error_with_the_cas_retry_time(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    calls: list[float] = []

    async def sleep(seconds: float) -> None:
        calls.append(seconds)

    async with rate_limited_ca(pebble) as ca:
        account = acme.AcmeAccount(
            ca.directory_url,
            certinfo.new_ec_key_pem(),
            verify=acme.trust_bundle(pebble.ca_bundle, tmp_path / "trust.pem"),
        )
        before = dt.datetime.now(dt.UTC)
        with pytest.raises(acme.AcmeRateLimited) as raised:
            await acme.obtain(
                account, [pebble_dns.fqdn()], certinfo.new_ec_key_pem(), pebble_dns.txt,
                timing=FAST, sleep=sleep,
            )  # fmt: skip

    exc = raised.value
    assert exc.code == "rateLimited"
    assert "too many certificates" in str(exc)
    assert exc.retry_after is not None
    assert before + dt.timedelta(seconds=3599) <= exc.retry_after
    assert exc.retry_after <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3601)
    # Refused once, never retried within the call, and no challenge was ever written.
    assert ca.orders_refused == 1
    assert calls == []
    assert pebble_dns.txt.upserts == []
