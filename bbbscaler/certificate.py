"""The fleet certificate: one ``*.{domain}`` certificate, issued and renewed here, for every host.

Let's Encrypt allows 50 new certificates per registered domain per 7 days,
counted over every account of that domain (https://letsencrypt.org/docs/rate-limits/);
a fleet whose hosts each ordered ``{instance_id}.{domain}`` at launch would run
out in days. So bbbscaler, which runs once per fleet with an IAM role, orders
one wildcard certificate over ACME DNS-01 (bbbcore.acme_dns01; the TXT record
``_acme-challenge.{domain}`` in Route53) and publishes it as a new version of
one Secrets Manager secret (bbbcore.fleet_certificate); hosts only read it.

The job looks at the secret every ``check_interval``; a certificate that is
missing, for other names or inside ``renew_before_days`` of its expiry is
ordered again, with a new key. A failed order is tried again after
``retry_interval``, a rate-limited one not before the time the CA named. With
50 days of margin between renewal and expiry and an order a day at most while
failing, the 5-per-week limit on the exact same names is never the binding one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CollectorRegistry, Counter, Gauge

from bbbcore import aws, logs, route53
from bbbcore.acme_dns01 import (
    AcmeAccount,
    AcmeRateLimited,
    AcmeTiming,
    Route53Txt,
    TxtRecords,
    describe,
    obtain,
    trust_bundle,
)
from bbbcore.certinfo import CertificateError, Reason, covers, is_ec_key, new_ec_key_pem
from bbbcore.fleet_certificate import FleetCertificate, FleetCertificateInvalid, decode
from bbbcore.secret_versions import VersionedSecret
from bbbscaler.settings import CertificateSettings, ScalerSettings

if TYPE_CHECKING:
    from types_aiobotocore_secretsmanager.client import SecretsManagerClient

log = logs.get(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], dt.datetime]
USER_AGENT = "bbbfleet-bbbscaler"
ERROR_REASONS = ("read", "invalid", "acme", "rate_limited", "publish")
_ACCOUNT_NAMESPACE = uuid.UUID("0e7d4a52-3f55-4c4e-8a4b-5be7d1f0c9a3")


def names_for(domain: str) -> tuple[str, ...]:
    """The fleet certificate's names: every host's ``{instance_id}.{domain}`` and no other."""
    return (f"*.{domain.rstrip('.').lower()}",)


def due(
    current: FleetCertificate | None,
    names: tuple[str, ...],
    now: dt.datetime,
    renew_before_days: int,
) -> Reason | None:
    """Why the fleet certificate must be ordered now, or None while the published one is fine."""
    if current is None:
        return Reason.MISSING
    if not all(covers(current.names, name) for name in names):
        return Reason.WRONG_NAME
    if current.not_after - now <= dt.timedelta(days=renew_before_days):
        return Reason.EXPIRING
    return None


@dataclass(frozen=True, slots=True)
class Check:
    """One look at the fleet certificate and what came of it."""

    result: str
    """ok (nothing due), issued, failed or rate_limited."""
    reason: Reason | None
    not_after: dt.datetime | None
    version_id: str | None
    retry_at: dt.datetime | None = None


class CertificateMetrics:
    """The job's series, registered on bbbscaler's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.expiry = Gauge(
            "bbbscaler_certificate_expiry_timestamp_seconds",
            "When the fleet certificate published in Secrets Manager expires (epoch seconds; "
            "NaN until one is read).",
            registry=registry,
        )
        self.expiry.set(math.nan)
        self.issued = Counter(
            "bbbscaler_certificate_issued",
            "Fleet certificates ordered from the CA and published.",
            registry=registry,
        )
        self.errors = Counter(
            "bbbscaler_certificate_errors",
            "Failed certificate checks by reason (read, invalid, acme, rate_limited, publish).",
            ["reason"],
            registry=registry,
        )
        for reason in ERROR_REASONS:
            self.errors.labels(reason)
        self.rate_limited_until = Gauge(
            "bbbscaler_certificate_rate_limited_until_timestamp_seconds",
            "While the CA rate-limits the fleet's orders: the time it named (epoch seconds); "
            "0 otherwise.",
            registry=registry,
        )
        self.last_check = Gauge(
            "bbbscaler_certificate_last_check_timestamp_seconds",
            "When the job last finished a look at the fleet certificate (epoch seconds).",
            registry=registry,
        )


class FleetCertificateJob:
    """Keeps a valid ``*.{domain}`` certificate in the fleet's secret."""

    def __init__(
        self,
        settings: CertificateSettings,
        secret: VersionedSecret,
        account_secret: VersionedSecret | None,
        txt: TxtRecords,
        metrics: CertificateMetrics,
        *,
        verify: str | bool = True,
        now: Clock = lambda: dt.datetime.now(dt.UTC),
        acme_sleep: Sleep = asyncio.sleep,
        timing: AcmeTiming | None = None,
    ) -> None:
        self._settings = settings
        self._secret = secret
        self._account_secret = account_secret
        self._txt = txt
        self._metrics = metrics
        self._verify = verify
        self._now = now
        self._acme_sleep = acme_sleep
        self._timing = timing
        self._account_key: bytes | None = None
        self.names = names_for(settings.domain)
        self.last: Check | None = None

    async def _account_key_pem(self) -> bytes:
        if self._account_key is not None:
            return self._account_key
        if self._account_secret is None:
            log.warning("acme_account_key_ephemeral", hint="set certificate.account_secret")
            self._account_key = new_ec_key_pem()
            return self._account_key
        stored = await self._account_secret.read()
        if stored is not None and is_ec_key(stored.text.encode()):
            self._account_key = stored.text.encode()
            return self._account_key
        pem = new_ec_key_pem()
        token = str(uuid.uuid5(_ACCOUNT_NAMESPACE, pem.decode()))
        await self._account_secret.put(pem.decode(), token)
        log.info("acme_account_key_created", secret=self._account_secret.secret_id)
        self._account_key = pem
        return pem

    def _record(self, check: Check) -> Check:
        self.last = check
        self._metrics.last_check.set(time.time())
        if check.not_after is not None:
            self._metrics.expiry.set(check.not_after.timestamp())
        self._metrics.rate_limited_until.set(
            check.retry_at.timestamp() if check.result == "rate_limited" and check.retry_at else 0
        )
        return check

    async def check(self) -> Check:
        """Read the secret; order and publish a new certificate when one is due."""
        try:
            stored = await self._secret.read()
            current = None if stored is None else decode(stored.text)
        except FleetCertificateInvalid as exc:
            # A broken value is replaced, not served: hosts refuse it too.
            log.error("fleet_certificate_invalid", secret=self._secret.secret_id, problem=str(exc))
            self._metrics.errors.labels("invalid").inc()
            stored, current = None, None
        except (ClientError, BotoCoreError, ValueError) as exc:
            log.error("fleet_certificate_read_failed", secret=self._secret.secret_id,
                      error_code=aws.error_code(exc), error=type(exc).__name__)  # fmt: skip
            self._metrics.errors.labels("read").inc()
            return self._record(Check("failed", None, None, None))
        version = None if stored is None else stored.version_id
        not_after = None if current is None else current.not_after
        reason = due(current, self.names, self._now(), self._settings.renew_before_days)
        if reason is None:
            assert not_after is not None
            log.info("fleet_certificate_ok", not_after=not_after.isoformat(), version_id=version)
            return self._record(Check("ok", None, not_after, version))
        log.info("fleet_certificate_order", reason=str(reason), names=list(self.names))
        try:
            account = AcmeAccount(
                self._settings.acme_directory,
                await self._account_key_pem(),
                self._settings.email,
                self._verify,
                USER_AGENT,
            )
            key = new_ec_key_pem()
            chain = await obtain(
                account, self.names, key, self._txt, timing=self._timing, sleep=self._acme_sleep
            )
        except AcmeRateLimited as exc:
            log.error("fleet_certificate_rate_limited", **describe(exc))
            self._metrics.errors.labels("rate_limited").inc()
            return self._record(Check("rate_limited", reason, not_after, version, exc.retry_after))
        except CertificateError as exc:
            log.error("fleet_certificate_order_failed", **describe(exc))
            self._metrics.errors.labels("acme").inc()
            return self._record(Check("failed", reason, not_after, version))
        except (ClientError, BotoCoreError) as exc:
            # The account secret could not be read or written.
            log.error("fleet_certificate_order_failed", error_code=aws.error_code(exc),
                      error=type(exc).__name__)  # fmt: skip
            self._metrics.errors.labels("read").inc()
            return self._record(Check("failed", reason, not_after, version))
        issued = FleetCertificate.from_pem(chain, key)
        try:
            new_version = await self._secret.put(issued.encode(), issued.request_token())
        except (ClientError, BotoCoreError) as exc:
            log.error("fleet_certificate_publish_failed", secret=self._secret.secret_id,
                      error_code=aws.error_code(exc), error=type(exc).__name__)  # fmt: skip
            self._metrics.errors.labels("publish").inc()
            return self._record(Check("failed", reason, not_after, version))
        self._metrics.issued.inc()
        log.info("fleet_certificate_published", version_id=new_version, reason=str(reason),
                 not_after=issued.not_after.isoformat(), names=list(issued.names))  # fmt: skip
        return self._record(Check("issued", reason, issued.not_after, new_version))

    def next_delay(self, check: Check) -> float:
        """Seconds until the next look after ``check``."""
        s = self._settings
        if check.result == "rate_limited":
            wait = s.retry_interval
            if check.retry_at is not None:
                wait = max(wait, (check.retry_at - self._now()).total_seconds())
            return wait
        if check.result == "failed":
            return s.retry_interval
        return s.check_interval

    async def run(self, stop: asyncio.Event) -> None:
        """Check now and then on schedule until ``stop`` is set; a check in flight finishes."""
        while not stop.is_set():
            check = await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.next_delay(check))


@contextlib.asynccontextmanager
async def open_job(
    settings: ScalerSettings, registry: CollectorRegistry
) -> AsyncIterator[FleetCertificateJob | None]:
    """The job on its own AWS clients; None when ``certificate.secret`` is empty or in a
    dry run (publishing a certificate is a change like any other)."""
    c = settings.certificate
    if not c.secret or settings.dry_run:
        if c.secret:
            log.info("fleet_certificate_job_off", reason="dry_run", secret=c.secret)
        yield None
        return
    session = aws.session(settings.aws.region)
    config = aws.client_config(timeout=settings.aws.timeout)
    secrets: SecretsManagerClient
    with tempfile.TemporaryDirectory(prefix="bbbscaler-acme-") as scratch:
        async with (
            session.client("secretsmanager", config=config) as secrets,
            route53.open_route53(session, config=config) as records,
        ):
            txt = Route53Txt(records, c.zone_id, insync_timeout=c.dns_propagation_timeout)
            yield FleetCertificateJob(
                c,
                VersionedSecret(secrets, c.secret),
                VersionedSecret(secrets, c.account_secret) if c.account_secret else None,
                txt,
                CertificateMetrics(registry),
                verify=trust_bundle(c.ca_bundle, Path(scratch) / "acme-trust.pem"),
            )
