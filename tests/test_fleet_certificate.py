"""The fleet certificate: its secret document, versioned reads on moto, bbbscaler issuing and
renewing ``*.{domain}`` against pebble, and bbbnode installing it and following new versions.

Everything on loopback: moto_server (Route53 and Secrets Manager, behind the lifecycle
layer), pebble and pebble-challtestsrv bridged to moto's zone (tests/pebble_fixtures.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr
from structlog.testing import capture_logs

from bbbcore import acme_dns01 as acme
from bbbcore.certinfo import Reason
from bbbcore.fleet_certificate import FleetCertificate, FleetCertificateInvalid, decode
from bbbcore.secret_versions import VersionedSecret
from bbbnode.certificate import CertFiles, Install
from bbbnode.certificate_metrics import CertificateMetrics as NodeCertificateMetrics
from bbbnode.fleet_certificate import FleetCertificateMissing, FleetCertificateWatch
from bbbnode.hostops import InstallCertificateRequest
from bbbnode.hoststeps import LocalHostSteps
from bbbnode.runner import Completed, ScriptedRunner
from bbbnode.settings import NodeSettings
from bbbscaler.certificate import (
    CertificateMetrics,
    FleetCertificateJob,
    due,
    names_for,
    open_job,
)
from bbbscaler.settings import CertificateSettings, ScalerSettings
from bbbsim.node_process import free_port
from tests import certs

if TYPE_CHECKING:
    from types_aiobotocore_secretsmanager.client import SecretsManagerClient

    from tests.pebble_fixtures import Pebble, PebbleDns

DOMAIN = "bbb.example.test"
HOST = f"i-0123456789abcdef0.{DOMAIN}"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
NGINX_TEST = ("nginx", "-t", "-q")
# What installing a certificate runs (bbbnode/certificate.py): check and reload nginx, then
# coturn's SIGUSR2 (it re-reads certificate and key without dropping allocations).
INSTALL = [
    NGINX_TEST,
    ("systemctl", "reload", "nginx"),
    ("systemctl", "is-active", "--quiet", "coturn.service"),
    ("systemctl", "kill", "--signal=SIGUSR2", "coturn.service"),
]
FAST = acme.AcmeTiming(poll_interval=0.05, max_poll_interval=0.2, poll_timeout=30.0)


async def short_sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, 0.05))


def pair(names: list[str], not_after: dt.datetime | None = None) -> FleetCertificate:
    """A self-signed certificate and its key; valid for 80 more days by default."""
    not_after = not_after or dt.datetime.now(dt.UTC) + dt.timedelta(days=80)
    key = certs.new_key()
    return FleetCertificate.from_pem(certs.self_signed(names, not_after, key), certs.key_pem(key))


def installer(runner: ScriptedRunner, root: Path) -> Install:
    """What FleetNode hands the watch: the host steps' install_certificate, here in-process."""
    steps = LocalHostSteps(NodeSettings(), runner, root=root)

    async def install(chain: bytes, key: bytes) -> None:
        await steps.run(
            InstallCertificateRequest(fullchain_pem=chain.decode(), key_pem=SecretStr(key.decode()))
        )

    return install


def serial(cert: FleetCertificate) -> int:
    return x509.load_pem_x509_certificates(cert.fullchain_pem)[0].serial_number


# --------------------------------------------------------------- the document (pure)


def test_document_round_trip_and_checks() -> None:
    cert = pair([f"*.{DOMAIN}"])
    text = cert.encode()
    doc = json.loads(text)
    assert doc["format"] == "bbbfleet-certificate/1"
    assert doc["names"] == [f"*.{DOMAIN}"]
    assert doc["not_after"] == cert.not_after.isoformat()
    assert decode(text) == cert
    assert "PRIVATE KEY" not in repr(cert)
    assert cert.request_token() == decode(text).request_token()
    assert cert.request_token() != pair([f"*.{DOMAIN}"]).request_token()
    uuid.UUID(cert.request_token())


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: "not json", "not JSON"),
        (lambda d: json.dumps({**d, "format": "other/1"}), "not a bbbfleet-certificate/1"),
        (lambda d: json.dumps({**d, "privkey_pem": 3}), "must be strings"),
        (lambda d: json.dumps({**d, "fullchain_pem": "junk"}), "no readable certificate"),
        (lambda d: json.dumps({**d, "privkey_pem": "junk"}), "not an unencrypted PEM"),
        (lambda d: json.dumps({**d, "not_after": "2030-01-01T00:00:00+00:00"}), "not_after"),
    ],
)
def test_document_refusals_never_quote_the_key(mutate: Any, problem: str) -> None:
    cert = pair([f"*.{DOMAIN}"])
    doc = json.loads(cert.encode())
    with pytest.raises(FleetCertificateInvalid, match=problem) as raised:
        decode(mutate(doc))
    assert "PRIVATE KEY" not in str(raised.value)


def test_a_key_of_another_certificate_is_refused() -> None:
    cert, other = pair([f"*.{DOMAIN}"]), pair([f"*.{DOMAIN}"])
    doc = json.loads(cert.encode())
    doc["privkey_pem"] = other.privkey_pem.decode()
    with pytest.raises(FleetCertificateInvalid, match="does not belong"):
        decode(json.dumps(doc))


def test_due_for_missing_wrong_names_and_the_renewal_window() -> None:
    names = names_for(DOMAIN + ".")
    assert names == (f"*.{DOMAIN}",)
    assert due(None, names, NOW, 30) is Reason.MISSING
    assert due(pair([HOST]), names, NOW, 30) is Reason.WRONG_NAME
    fine = pair([f"*.{DOMAIN}"], NOW + dt.timedelta(days=31))  # NOW: a fixed date
    assert due(fine, names, NOW, 30) is None
    assert due(fine, names, NOW + dt.timedelta(days=1), 30) is Reason.EXPIRING


# ------------------------------------------------------------ Secrets Manager (moto)


@pytest_asyncio.fixture
async def secretsmanager(
    aws_endpoint: str, aws_session: Any
) -> AsyncIterator[SecretsManagerClient]:
    client: SecretsManagerClient
    async with aws_session.client("secretsmanager") as client:
        yield client


async def empty_secret(client: SecretsManagerClient, name: str) -> str:
    """A secret with no value yet, as cfn/secrets.yaml makes it."""
    answer = await client.create_secret(Name=name)
    return str(answer["ARN"])


async def test_versioned_secret_on_moto(secretsmanager: SecretsManagerClient) -> None:
    secret = VersionedSecret(secretsmanager, await empty_secret(secretsmanager, "fleet/cert"))
    assert await secret.current_version() is None
    assert await secret.read() is None

    first = await secret.put("one", "11111111-1111-4111-8111-111111111111")
    assert await secret.current_version() == first
    value = await secret.read()
    assert value is not None
    assert (value.version_id, value.text) == (first, "one")
    assert "one" not in repr(value)
    # A retried put with the same token is the same version, not a second one.
    assert await secret.put("one", "11111111-1111-4111-8111-111111111111") == first

    second = await secret.put("two", "22222222-2222-4222-8222-222222222222")
    assert second != first
    assert await secret.current_version() == second
    assert (await secret.read() or value).text == "two"


# ------------------------------------------- bbbscaler issues, bbbnode installs (pebble)


@dataclass
class Fleet:
    """The scaler's job and what a host needs to read its certificate."""

    job: FleetCertificateJob
    secret: VersionedSecret
    account: VersionedSecret
    registry: CollectorRegistry
    clock: list[dt.datetime]


@asynccontextmanager
async def fleet_job(
    pebble: Pebble, pebble_dns: PebbleDns, client: SecretsManagerClient, tmp_path: Path
) -> AsyncIterator[Fleet]:
    secret = VersionedSecret(client, await empty_secret(client, f"fleet/cert-{uuid.uuid4()}"))
    account = VersionedSecret(client, await empty_secret(client, f"fleet/acme-{uuid.uuid4()}"))
    settings = CertificateSettings(
        secret=secret.secret_id,
        account_secret=account.secret_id,
        domain=pebble_dns.domain,
        zone_id=pebble_dns.zone_id,
        acme_directory=pebble.directory_url,
        ca_bundle=pebble.ca_bundle,
        email="ops@example.test",
    )
    registry = CollectorRegistry()
    clock = [dt.datetime.now(dt.UTC)]
    job = FleetCertificateJob(
        settings, secret, account, pebble_dns.txt, CertificateMetrics(registry),
        verify=acme.trust_bundle(pebble.ca_bundle, tmp_path / "trust.pem"),
        now=lambda: clock[0], acme_sleep=short_sleep, timing=FAST,
    )  # fmt: skip
    yield Fleet(job, secret, account, registry, clock)


@pytest.mark.integration
async def test_scaler_issues_the_wildcard_once_and_renews_it_in_the_window(
    pebble: Pebble, pebble_dns: PebbleDns, secretsmanager: SecretsManagerClient, tmp_path: Path
) -> None:
    async with fleet_job(pebble, pebble_dns, secretsmanager, tmp_path) as f:
        with capture_logs() as logs:
            first = await f.job.check()
            again = await f.job.check()
        assert (first.result, first.reason) == ("issued", Reason.MISSING)
        assert (again.result, again.version_id) == ("ok", first.version_id)
        stored = await f.secret.read()
        assert stored is not None
        assert stored.version_id == first.version_id
        cert = decode(stored.text)
        assert cert.names == (f"*.{pebble_dns.domain}",)
        # Any host's name verifies against pebble's root; the base domain does not.
        leaf = certs.verify_chain(pebble.root, cert.fullchain_pem, pebble_dns.fqdn("i-0aaa"))
        certs.verify_chain(pebble.root, cert.fullchain_pem, pebble_dns.fqdn("i-0bbb"))
        with pytest.raises(x509.verification.VerificationError):
            certs.verify_chain(pebble.root, cert.fullchain_pem, pebble_dns.domain)
        assert certs.sans(leaf) == [f"*.{pebble_dns.domain}"]
        assert pebble_dns.txt.upserts == [f"_acme-challenge.{pebble_dns.domain}"]
        assert await pebble_dns.txt_records() == {}
        assert f.registry.get_sample_value("bbbscaler_certificate_issued_total") == 1
        assert (
            f.registry.get_sample_value("bbbscaler_certificate_expiry_timestamp_seconds")
            == cert.not_after.timestamp()
        )
        for entry in logs:
            assert "PRIVATE KEY" not in repr(entry)
        account_key = await f.account.read()
        assert account_key is not None

        # 61 days on, inside the 30-day window of a 90-day certificate: a new one, new key.
        f.clock[0] += dt.timedelta(days=61)
        with capture_logs() as logs:
            renewed = await f.job.check()
        assert (renewed.result, renewed.reason) == ("issued", Reason.EXPIRING)
        assert renewed.version_id != first.version_id
        new = decode((await f.secret.read() or stored).text)
        assert serial(new) != serial(cert)
        assert new.privkey_pem != cert.privkey_pem
        # The same ACME account, found again from the key in the account secret.
        assert [e["created"] for e in logs if e["event"] == "acme_account"] == [False]
        assert (await f.account.read() or account_key).version_id == account_key.version_id
        assert f.registry.get_sample_value("bbbscaler_certificate_issued_total") == 2
        assert await pebble_dns.txt_records() == {}


@pytest.mark.integration
async def test_scaler_waits_for_a_rate_limited_cas_time(
    pebble: Pebble, pebble_dns: PebbleDns, secretsmanager: SecretsManagerClient, tmp_path: Path
) -> None:
    from tests.rate_limited_ca import rate_limited_ca

    async with (
        rate_limited_ca(pebble) as ca,
        fleet_job(pebble, pebble_dns, secretsmanager, tmp_path) as f,
    ):
        f.job._settings = f.job._settings.model_copy(update={"acme_directory": ca.directory_url})
        check = await f.job.check()
    assert check.result == "rate_limited"
    assert check.retry_at is not None
    assert f.job.next_delay(check) == pytest.approx(
        (check.retry_at - f.clock[0]).total_seconds(), abs=2
    )
    assert (
        f.registry.get_sample_value("bbbscaler_certificate_rate_limited_until_timestamp_seconds")
        == check.retry_at.timestamp()
    )
    assert (
        f.registry.get_sample_value(
            "bbbscaler_certificate_errors_total", {"reason": "rate_limited"}
        )
        == 1
    )
    assert await f.secret.read() is None


@asynccontextmanager
async def tls_server(files: CertFiles) -> AsyncIterator[int]:
    """A loopback TLS listener serving the installed chain and key, as nginx would."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.fullchain, files.privkey)

    async def close(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close, "127.0.0.1", free_port(), ssl=context)
    async with server:
        yield int(server.sockets[0].getsockname()[1])


async def served_certificate(pebble: Pebble, port: int, name: str) -> x509.Certificate:
    """The certificate a client verifying pebble's root for ``name`` is served."""
    context = ssl.create_default_context(cadata=pebble.root_pem.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=name)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


@pytest.mark.integration
async def test_node_installs_the_fleet_certificate_and_follows_new_versions(
    pebble: Pebble, pebble_dns: PebbleDns, secretsmanager: SecretsManagerClient, tmp_path: Path
) -> None:
    fqdn = pebble_dns.fqdn()
    served = CertFiles().under(tmp_path / "host")
    runner = ScriptedRunner()
    registry = CollectorRegistry()
    metrics = NodeCertificateMetrics(registry)
    installed: list[str] = []

    async with fleet_job(pebble, pebble_dns, secretsmanager, tmp_path) as f:
        published: list[float] = []

        async def wait_for_scaler(seconds: float) -> None:
            # The host started before the scaler's first order: it waits, the scaler issues.
            published.append(seconds)
            await f.job.check()

        def on_installed(cert: FleetCertificate, version: str) -> None:
            installed.append(version)
            metrics.installed(cert.not_after)

        watch = FleetCertificateWatch(
            f.secret, fqdn, installer(runner, tmp_path / "host"),
            installed=on_installed,
            failed=lambda reason: metrics.update_errors.labels(reason).inc(),
            poll_interval=3600, wait=600, sleep=wait_for_scaler,
        )  # fmt: skip
        with capture_logs() as logs:
            first = await watch.first()
        assert published == [1.0]
        assert runner.calls == INSTALL
        assert served.fullchain.read_bytes() == first.fullchain_pem
        assert served.privkey.read_bytes() == first.privkey_pem
        assert stat.S_IMODE(served.privkey.stat().st_mode) == 0o600
        assert served.turn_privkey.read_bytes() == first.privkey_pem
        assert (
            registry.get_sample_value("bbbnode_certificate_expiry_timestamp_seconds")
            == first.not_after.timestamp()
        )
        async with tls_server(served) as port:
            seen = await served_certificate(pebble, port, fqdn)
        assert seen.serial_number == serial(first)

        # Nothing new: no read of the value, no reload.
        assert not await watch.refresh()
        assert runner.calls == INSTALL

        # The scaler renews; the host picks the new version up with one reload.
        f.clock[0] += dt.timedelta(days=61)
        assert (await f.job.check()).result == "issued"
        assert await watch.refresh()
        assert runner.calls == INSTALL + INSTALL
        assert len(set(installed)) == 2
        assert installed[-1] == watch.version_id
        renewed = watch.certificate
        assert renewed is not None
        assert serial(renewed) != serial(first)
        async with tls_server(served) as port:
            seen = await served_certificate(pebble, port, fqdn)
        assert seen.serial_number == serial(renewed)
        assert (
            registry.get_sample_value("bbbnode_certificate_expiry_timestamp_seconds")
            == renewed.not_after.timestamp()
        )
    # The key is in the files nginx reads, nowhere else.
    assert "PRIVATE KEY" not in generate_latest(registry).decode()
    for entry in logs:
        assert "PRIVATE KEY" not in repr(entry)


@pytest.mark.integration
async def test_node_refuses_a_version_it_must_not_serve_and_keeps_its_own(
    secretsmanager: SecretsManagerClient, tmp_path: Path
) -> None:
    secret = VersionedSecret(secretsmanager, await empty_secret(secretsmanager, "fleet/cert"))
    good = pair([f"*.{DOMAIN}"])
    await secret.put(good.encode(), good.request_token())
    served = CertFiles().under(tmp_path)
    failures: list[str] = []
    runner = ScriptedRunner()
    watch = FleetCertificateWatch(
        secret, HOST, installer(runner, tmp_path),
        installed=lambda *_: None, failed=failures.append, poll_interval=1, wait=1,
    )  # fmt: skip
    await watch.first()
    kept = watch.version_id

    other = pair(["*.other.example.test"])
    await secret.put(other.encode(), other.request_token())
    with capture_logs() as logs:
        assert not await watch.refresh()
    assert failures == ["invalid"]
    assert watch.version_id == kept
    assert served.fullchain.read_bytes() == good.fullchain_pem
    refused = [e for e in logs if e["event"] == "fleet_certificate_not_installed"]
    assert "not " + HOST in refused[0]["problem"]

    # A reload that fails: files in place, the version not taken, the hook run again later.
    fixed = pair([f"*.{DOMAIN}"])
    await secret.put(fixed.encode(), fixed.request_token())
    runner.script[NGINX_TEST] = lambda argv: Completed(argv, 1, "", "nginx: [emerg]")
    assert not await watch.refresh()
    assert failures == ["invalid", "install"]
    assert watch.version_id == kept
    runner.script.clear()
    assert await watch.refresh()
    # The refused files were put back; the retry installs and reloads.
    assert served.fullchain.read_bytes() == fixed.fullchain_pem
    assert runner.calls == [*INSTALL, NGINX_TEST, *INSTALL]


async def test_start_up_gives_up_on_a_secret_that_stays_empty(
    secretsmanager: SecretsManagerClient, tmp_path: Path
) -> None:
    secret = VersionedSecret(secretsmanager, await empty_secret(secretsmanager, "fleet/cert"))
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    watch = FleetCertificateWatch(
        secret, HOST, installer(ScriptedRunner(), tmp_path),
        installed=lambda *_: None, failed=lambda _: None, poll_interval=60, wait=100,
        sleep=sleep, clock=lambda: now[0],
    )  # fmt: skip
    with pytest.raises(FleetCertificateMissing, match="no certificate after 100 s"):
        await watch.first()
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 9.0]
    assert not CertFiles().under(tmp_path).fullchain.exists()


async def test_no_certificate_job_without_a_secret_or_in_a_dry_run() -> None:
    base: dict[str, Any] = {
        "aws": {"asg_name": "a"},
        "scalelite": {"url": "https://s", "secret": "x", "domain": DOMAIN},
    }
    certificate = {"secret": "fleet/cert", "domain": DOMAIN, "zone_id": "Z1"}
    for settings in (
        ScalerSettings.model_validate(base),
        ScalerSettings.model_validate({**base, "certificate": certificate, "dry_run": True}),
    ):
        async with open_job(settings, CollectorRegistry()) as job:
            assert job is None
