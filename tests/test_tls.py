"""bbbnode.tls: the host's own certificate end to end with moto Route53 + pebble on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import ssl
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from bbbcore import acme_dns01 as acme
from bbbcore.certinfo import Reason
from bbbnode import tls
from bbbnode.certificate_metrics import CertificateMetrics
from bbbnode.files import write_atomic
from bbbnode.runner import Completed, ScriptedRunner
from bbbnode.settings import TlsSettings
from bbbsim.node_process import free_port
from tests import certs
from tests.pebble_fixtures import deactivate_valid_authorizations
from tests.rate_limited_ca import rate_limited_ca

if TYPE_CHECKING:
    from tests.pebble_fixtures import Pebble, PebbleDns

FQDN = "i-0123456789abcdef0.bbb.example.test"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
HOOK = ("systemctl", "reload", "nginx")
# Polls against a real pebble: short real waits; backoff between retries capped the same.
FAST = acme.AcmeTiming(poll_interval=0.05, max_poll_interval=0.2, poll_timeout=30.0)


async def short_sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, 0.05))


def test_write_atomic_sets_the_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "k.pem", b"secret", mode=0o600)
        write_atomic(tmp_path / "k.pem", b"secret2", mode=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "k.pem").read_bytes() == b"secret2"
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]


# ----------------------------------------------------------------- end to end


def settings_for(pebble: Pebble, cert_dir: Path, **overrides: object) -> TlsSettings:
    values: dict[str, object] = {
        "acme_directory": pebble.directory_url,
        "ca_bundle": pebble.ca_bundle,
        "cert_dir": cert_dir,
        "post_hook": HOOK,
        "email": "ops@example.test",
    }
    values.update(overrides)
    return TlsSettings.model_validate(values)


def verify_chain(pebble: Pebble, fullchain: bytes, fqdn: str) -> x509.Certificate:
    """The leaf, after checking the chain up to pebble's root for ``fqdn``."""
    return certs.verify_chain(pebble.root, fullchain, fqdn)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.integration
async def test_issues_once_then_does_nothing(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    fqdn = pebble_dns.fqdn()
    settings = settings_for(pebble, tmp_path / "tls")
    runner = ScriptedRunner()

    status = await tls.ensure_certificate(
        settings, fqdn, pebble_dns.txt, runner, sleep=short_sleep, timing=FAST
    )

    assert status.issued
    assert status.reason is Reason.MISSING
    assert status.hook_ran
    leaf = verify_chain(pebble, status.fullchain.read_bytes(), fqdn)
    assert certs.sans(leaf) == [fqdn]
    assert leaf.not_valid_after_utc == status.not_after
    key = serialization.load_pem_private_key(status.privkey.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == leaf.public_key()
    assert mode(status.privkey) == 0o600
    assert mode(settings.cert_dir / tls.ACCOUNT_KEY) == 0o600
    assert mode(status.fullchain) == 0o644
    assert not (settings.cert_dir / tls.HOOK_PENDING).exists()
    challenge = f"_acme-challenge.{fqdn}"
    assert pebble_dns.txt.upserts == [challenge]
    assert pebble_dns.txt.deletes == [challenge]
    assert await pebble_dns.txt_records() == {}
    assert pebble_dns.mirror.served == {}
    assert runner.calls == [HOOK]

    again = await tls.ensure_certificate(
        settings, fqdn, pebble_dns.txt, runner, sleep=short_sleep, timing=FAST
    )

    assert not again.issued
    assert again.reason is None
    assert not again.hook_ran
    assert again.not_after == status.not_after
    assert runner.calls == [HOOK]
    assert pebble_dns.txt.upserts == [challenge]


@pytest.mark.integration
async def test_account_and_key_survive_a_restart(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    fqdn = pebble_dns.fqdn()
    cert_dir = tmp_path / "tls"
    with capture_logs() as first_logs:
        first = await tls.ensure_certificate(
            settings_for(pebble, cert_dir),
            fqdn,
            pebble_dns.txt,
            ScriptedRunner(),
            sleep=short_sleep,
            timing=FAST,
        )
    account_key = (cert_dir / tls.ACCOUNT_KEY).read_bytes()
    privkey = first.privkey.read_bytes()

    # A new process: new settings, runner and clock 70 days on (inside the window).
    runner = ScriptedRunner()
    with capture_logs() as second_logs:
        second = await tls.ensure_certificate(
            settings_for(pebble, cert_dir),
            fqdn,
            pebble_dns.txt,
            runner,
            now=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=70),
            sleep=short_sleep,
            timing=FAST,
        )

    assert second.issued
    assert second.reason is Reason.EXPIRING
    assert (cert_dir / tls.ACCOUNT_KEY).read_bytes() == account_key
    assert second.privkey.read_bytes() == privkey
    accounts = [e for e in first_logs + second_logs if e["event"] == "acme_account"]
    assert [e["created"] for e in accounts] == [True, False]
    assert accounts[0]["account"] == accounts[1]["account"]
    assert runner.calls == [HOOK]
    verify_chain(pebble, second.fullchain.read_bytes(), fqdn)
    assert await pebble_dns.txt_records() == {}
    for entry in first_logs + second_logs:
        assert "PRIVATE KEY" not in repr(entry)


@dataclass
class Schedule:
    """renew_forever's sleep: moves the injected clock instead of waiting, stops on request."""

    clock: dt.datetime
    stop: Callable[[], bool]
    delays: list[float] = field(default_factory=list)

    def now(self) -> dt.datetime:
        return self.clock

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock += dt.timedelta(seconds=seconds)
        if self.stop():
            raise asyncio.CancelledError


@pytest.mark.integration
async def test_renews_when_the_clock_enters_the_window(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    fqdn = pebble_dns.fqdn()
    runner = ScriptedRunner()
    start = dt.datetime.now(dt.UTC)
    schedule = Schedule(start, stop=lambda: len(runner.calls) >= 2 or len(schedule.delays) > 200)
    settings = settings_for(pebble, tmp_path / "tls", renew_before_days=30)
    deactivated: list[str] = []

    async def sleep(seconds: float) -> None:
        if runner.calls and not deactivated:
            # pebble reuses a valid authorization one order in a hundred even with
            # PEBBLE_AUTHZREUSE=0 (tests/pebble_fixtures.py): without this the renewal
            # would now and then answer no challenge, and the TXT count below flake.
            account_key = (settings.cert_dir / tls.ACCOUNT_KEY).read_bytes()
            deactivated.extend(await deactivate_valid_authorizations(pebble, account_key))
        await schedule.sleep(seconds)

    with capture_logs() as logs, pytest.raises(asyncio.CancelledError):
        await tls.renew_forever(
            settings,
            fqdn,
            pebble_dns.txt,
            runner,
            sleep=sleep,
            now=schedule.now,
            acme_sleep=short_sleep,
            timing=FAST,
        )

    issued = [e for e in logs if e["event"] == "tls_certificate_issued"]
    assert len(issued) == 2
    assert runner.calls == [HOOK, HOOK]
    assert set(schedule.delays) == {tls.DAY}
    # Daily checks; the renewal came on the first check inside the 30-day window.
    first_not_after = dt.datetime.fromisoformat(issued[0]["not_after"])
    window_opens = first_not_after - dt.timedelta(days=30)
    expected_day = math.ceil((window_opens - start) / dt.timedelta(days=1))
    assert expected_day == pebble.cert_lifetime.days - 30
    checks = [e for e in logs if e["event"] in ("tls_certificate_ok", "tls_issue_start")]
    starts = [i for i, e in enumerate(checks) if e["event"] == "tls_issue_start"]
    assert starts == [0, expected_day]
    assert checks[expected_day]["reason"] == "expiring"
    assert len(deactivated) == 1
    assert len(pebble_dns.txt.upserts) == 2
    assert await pebble_dns.txt_records() == {}


@pytest.mark.integration
async def test_rejected_challenge_cleans_up_and_is_not_retried(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    @dataclass
    class Counting:
        """The Route53 adapter without the bridge: pebble never sees the record."""

        upserts: int = 0

        async def upsert(self, name: str, values: Sequence[str]) -> None:
            self.upserts += 1
            await pebble_dns.route53_txt.upsert(name, values)

        async def delete(self, name: str, values: Sequence[str]) -> None:
            await pebble_dns.route53_txt.delete(name, values)

    txt = Counting()
    runner = ScriptedRunner()
    settings = settings_for(pebble, tmp_path / "tls")

    with pytest.raises(acme.ChallengeFailed) as failure:
        await tls.ensure_certificate(
            settings, pebble_dns.fqdn(), txt, runner, sleep=short_sleep, timing=FAST
        )

    assert failure.value.code == "unauthorized"
    assert txt.upserts == 1
    assert await pebble_dns.txt_records() == {}
    assert not (settings.cert_dir / tls.FULLCHAIN).exists()
    assert runner.calls == []


@pytest.mark.integration
async def test_failed_hook_is_run_again_until_it_succeeds(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    fqdn = pebble_dns.fqdn()
    settings = settings_for(pebble, tmp_path / "tls")
    broken = ScriptedRunner(script={HOOK: lambda argv: Completed(argv, 1, "", "nginx: bad conf")})

    with pytest.raises(tls.HookFailed, match="bad conf") as failure:
        await tls.ensure_certificate(
            settings, fqdn, pebble_dns.txt, broken, sleep=short_sleep, timing=FAST
        )

    assert failure.value.status.issued
    assert (settings.cert_dir / tls.HOOK_PENDING).exists()
    verify_chain(pebble, (settings.cert_dir / tls.FULLCHAIN).read_bytes(), fqdn)

    fixed = ScriptedRunner()
    status = await tls.ensure_certificate(
        settings, fqdn, pebble_dns.txt, fixed, sleep=short_sleep, timing=FAST
    )
    assert not status.issued
    assert status.hook_ran
    assert fixed.calls == [HOOK]
    assert not (settings.cert_dir / tls.HOOK_PENDING).exists()

    status = await tls.ensure_certificate(
        settings, fqdn, pebble_dns.txt, fixed, sleep=short_sleep, timing=FAST
    )
    assert not status.hook_ran
    assert fixed.calls == [HOOK]
    assert len(pebble_dns.txt.upserts) == 1


@dataclass
class FlakyDirectory:
    """An ACME directory URL that answers 503 a few times, then pebble's directory."""

    pebble: Pebble
    failures: int
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.failures:
            return web.Response(status=503, text="<html>upstream unavailable</html>")
        ssl_context = ssl.create_default_context(cafile=str(self.pebble.ca_bundle))
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.pebble.directory_url, ssl=ssl_context) as resp,
        ):
            return web.Response(body=await resp.read(), content_type="application/json")


@pytest.fixture
async def flaky_directory(pebble: Pebble) -> AsyncIterator[tuple[FlakyDirectory, str]]:
    flaky = FlakyDirectory(pebble, failures=2)
    app = web.Application()
    app.router.add_get("/dir", flaky.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield flaky, f"http://127.0.0.1:{port}/dir"
    finally:
        await runner.cleanup()


@pytest.mark.integration
async def test_transient_acme_errors_are_retried(
    pebble: Pebble,
    pebble_dns: PebbleDns,
    flaky_directory: tuple[FlakyDirectory, str],
    tmp_path: Path,
) -> None:
    flaky, url = flaky_directory
    settings = settings_for(pebble, tmp_path / "tls", acme_directory=url)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await short_sleep(seconds)

    status = await tls.ensure_certificate(
        settings, pebble_dns.fqdn(), pebble_dns.txt, ScriptedRunner(), sleep=sleep, timing=FAST
    )

    assert status.issued
    assert flaky.requests == 3
    verify_chain(pebble, status.fullchain.read_bytes(), pebble_dns.fqdn())


async def test_unreachable_acme_server_gives_up_with_a_typed_error(tmp_path: Path) -> None:
    settings = TlsSettings(
        acme_directory=f"https://127.0.0.1:{free_port()}/dir", cert_dir=tmp_path / "tls"
    )
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    class NoDns:
        async def upsert(self, name: str, values: Sequence[str]) -> None:
            raise AssertionError("no TXT record before the ACME server answered")

        async def delete(self, name: str, values: Sequence[str]) -> None:
            raise AssertionError("nothing to delete")

    timing = acme.AcmeTiming(retry_attempts=3, request_timeout=2.0)
    with pytest.raises(acme.AcmeUnavailable, match="directory"):
        await tls.ensure_certificate(
            settings, FQDN, NoDns(), ScriptedRunner(), sleep=sleep, timing=timing
        )
    assert len(sleeps) == 2
    assert all(0 <= s <= timing.retry_max_wait for s in sleeps)


async def test_renew_forever_waits_retry_interval_after_a_failure(tmp_path: Path) -> None:
    settings = TlsSettings(
        acme_directory=f"https://127.0.0.1:{free_port()}/dir", cert_dir=tmp_path / "tls"
    )
    schedule = Schedule(NOW, stop=lambda: len(schedule.delays) >= 2)

    async def no_wait(_: float) -> None:
        return None

    class NoDns:
        async def upsert(self, name: str, values: Sequence[str]) -> None:
            raise AssertionError("unreachable")

        async def delete(self, name: str, values: Sequence[str]) -> None:
            raise AssertionError("unreachable")

    with pytest.raises(asyncio.CancelledError):
        await tls.renew_forever(
            settings,
            FQDN,
            NoDns(),
            ScriptedRunner(),
            sleep=schedule.sleep,
            now=schedule.now,
            retry_interval=600.0,
            acme_sleep=no_wait,
            timing=acme.AcmeTiming(retry_attempts=1, request_timeout=2.0),
        )
    assert schedule.delays == [600.0, 600.0]


@pytest.mark.integration
async def test_concurrent_callers_share_one_issuance(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    settings = settings_for(pebble, tmp_path / "tls")
    runner = ScriptedRunner()

    first, second = await asyncio.gather(
        *(
            tls.ensure_certificate(
                settings, pebble_dns.fqdn(), pebble_dns.txt, runner, sleep=short_sleep, timing=FAST
            )
            for _ in range(2)
        )
    )

    assert [first.issued, second.issued].count(True) == 1
    assert runner.calls == [HOOK]
    assert len(pebble_dns.txt.upserts) == 1


@pytest.mark.integration
async def test_host_mode_waits_out_a_rate_limit_then_issues(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    """A rateLimited answer at start-up: an error with the CA's time, a wait, no crash."""
    fqdn = pebble_dns.fqdn()
    runner = ScriptedRunner()
    registry = CollectorRegistry()
    metrics = CertificateMetrics(registry)
    told: list[tuple[dt.datetime, float]] = []
    waits: list[float] = []

    async with rate_limited_ca(pebble) as ca:
        settings = settings_for(pebble, tmp_path / "tls", acme_directory=ca.directory_url)

        def rate_limited(until: dt.datetime, wait: float) -> None:
            told.append((until, wait))
            metrics.rate_limited(until)

        async def sleep(seconds: float) -> None:
            # The CA's hour passes: its limit has refilled.
            waits.append(seconds)
            assert registry.get_sample_value(
                "bbbnode_certificate_rate_limited_until_timestamp_seconds"
            ) == pytest.approx(told[-1][0].timestamp())
            ca.limited = False

        with capture_logs() as logs:
            status = await tls.ensure_until_issued(
                settings, fqdn, pebble_dns.txt, runner, rate_limited=rate_limited,
                sleep=sleep, acme_sleep=short_sleep, timing=FAST,
            )  # fmt: skip
    metrics.installed(status.not_after)

    assert status.issued
    verify_chain(pebble, status.fullchain.read_bytes(), fqdn)
    assert ca.orders_refused == 1
    assert len(waits) == 1
    assert 3590 <= waits[0] <= 3600
    limited = [e for e in logs if e["event"] == "tls_rate_limited"]
    assert len(limited) == 1
    assert limited[0]["log_level"] == "error"
    assert limited[0]["error_type"] == "AcmeRateLimited"
    assert "too many certificates" in limited[0]["error"]
    # The CA's own time, as the log says it, is when bbbnode was told to wait for.
    ca_time = dt.datetime.fromisoformat(limited[0]["retry_after"])
    assert abs((told[0][0] - ca_time).total_seconds()) < 2
    assert (
        registry.get_sample_value("bbbnode_certificate_rate_limited_until_timestamp_seconds") == 0
    )
    assert (
        registry.get_sample_value("bbbnode_certificate_expiry_timestamp_seconds")
        == status.not_after.timestamp()
    )
    assert runner.calls == [HOOK]


async def test_renewal_after_a_rate_limit_waits_for_the_cas_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = TlsSettings(acme_directory="https://127.0.0.1:1/dir", cert_dir=tmp_path / "tls")
    schedule = Schedule(NOW, stop=lambda: len(schedule.delays) >= 2)
    told: list[float] = []
    answers = [NOW + dt.timedelta(hours=30), None]

    async def limited(*_: object, **__: object) -> tls.CertificateStatus:
        raise acme.AcmeRateLimited("new_order: rateLimited", answers.pop(0))

    monkeypatch.setattr(tls, "ensure_certificate", limited)
    with pytest.raises(asyncio.CancelledError):
        await tls.renew_forever(
            settings, FQDN, NoTxt(), ScriptedRunner(), sleep=schedule.sleep, now=schedule.now,
            retry_interval=600.0, rate_limited=lambda _until, wait: told.append(wait),
        )  # fmt: skip
    # The CA's 30 hours, then (no time named) the retry interval; never a quick retry.
    assert schedule.delays == [30 * 3600.0, 600.0]
    assert told == schedule.delays


class NoTxt:
    async def upsert(self, name: str, values: Sequence[str]) -> None:
        raise AssertionError("no TXT record while the CA refuses orders")

    async def delete(self, name: str, values: Sequence[str]) -> None:
        raise AssertionError("nothing to delete")


@pytest.mark.integration
async def test_the_certificate_is_handed_to_install_until_it_takes_it(
    pebble: Pebble, pebble_dns: PebbleDns, tmp_path: Path
) -> None:
    """The daemon cannot serve the certificate itself: the host helper's install gets it."""
    fqdn = pebble_dns.fqdn()
    settings = settings_for(pebble, tmp_path / "tls", post_hook=())
    delivered: list[tuple[bytes, bytes]] = []
    refuse = True

    async def install(chain: bytes, key: bytes) -> None:
        if refuse:
            raise RuntimeError("the helper is not up")
        delivered.append((chain, key))

    with pytest.raises(tls.HookFailed, match="the helper is not up"):
        await tls.ensure_certificate(
            settings, fqdn, pebble_dns.txt, ScriptedRunner(), sleep=short_sleep, timing=FAST,
            install=install,
        )  # fmt: skip
    assert (settings.cert_dir / tls.HOOK_PENDING).exists()

    refuse = False
    status = await tls.ensure_certificate(
        settings, fqdn, pebble_dns.txt, ScriptedRunner(), sleep=short_sleep, timing=FAST,
        install=install,
    )  # fmt: skip
    assert not status.issued
    assert status.hook_ran
    assert delivered == [(status.fullchain.read_bytes(), status.privkey.read_bytes())]
    assert not (settings.cert_dir / tls.HOOK_PENDING).exists()

    # Nothing pending: only start-up's deliver_always hands it over again.
    for always in (False, True):
        await tls.ensure_certificate(
            settings, fqdn, pebble_dns.txt, ScriptedRunner(), sleep=short_sleep, timing=FAST,
            install=install, deliver_always=always,
        )  # fmt: skip
    assert len(delivered) == 2
    assert len(pebble_dns.txt.upserts) == 1
