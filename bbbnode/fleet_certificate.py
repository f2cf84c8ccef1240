"""bbbnode's side of the fleet certificate: read it at start-up, install it, follow new versions.

bbbscaler publishes the fleet's ``*.{domain}`` certificate as versions of one
Secrets Manager secret (bbbcore.fleet_certificate). At start-up the host
reads the AWSCURRENT version (waiting up to ``tls.fleet_wait`` while the
secret has no value yet: a new fleet's first host may start before the
scaler's first order is through), checks that it covers the host's own name
and hands chain and key to an Install. Then, every ``tls.fleet_poll_interval``,
it asks DescribeSecret which version is current (the value itself is only
fetched when that changed) and installs a new one: nginx and coturn reload,
BBB is never restarted. A version that is unreadable or for other names is
refused and the installed certificate stays; the refusal is logged and
counted in ``bbbnode_certificate_update_errors_total``.

The host talks to Secrets Manager only (GetSecretValue, DescribeSecret on that
one secret), never to the CA: start-up does not wait on an ACME order, and
launches do not count against the CA's rate limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from bbbcore import aws, logs
from bbbcore.certinfo import CertificateError, covers
from bbbcore.fleet_certificate import FleetCertificate, FleetCertificateInvalid, decode
from bbbcore.secret_versions import SecretValue, VersionedSecret
from bbbnode.certificate import Install

log = logs.get(__name__)

Sleep = Callable[[float], Awaitable[None]]
Report = Callable[[FleetCertificate, str], None]


class FleetCertificateMissing(CertificateError):
    """The fleet certificate's secret still had no value when start-up stopped waiting."""


class InstallFailed(CertificateError):
    """The installer (the host helper) refused or failed; the version stays uninstalled."""


class FleetCertificateWatch:
    """Installs the fleet certificate's current version, at start-up and whenever it changes."""

    def __init__(
        self,
        secret: VersionedSecret,
        fqdn: str,
        install: Install,
        *,
        installed: Report,
        failed: Callable[[str], None],
        poll_interval: float,
        wait: float,
        retry_interval: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret
        self._fqdn = fqdn
        self._install = install
        self._installed = installed
        self._failed = failed
        self._poll_interval = poll_interval
        self._wait = wait
        self._retry_interval = retry_interval
        self._sleep = sleep
        self._clock = clock
        self.version_id: str | None = None
        self.certificate: FleetCertificate | None = None

    async def first(self) -> FleetCertificate:
        """Start-up: the current version installed; waits while the secret has no value.

        Raises FleetCertificateMissing after ``wait`` seconds without a value, InstallFailed
        when the installer failed (the watch tries again),
        FleetCertificateInvalid for a value this host must not serve, and AWS
        errors as they come (all end start-up; systemd starts bbbnode again).
        """
        deadline = self._clock() + self._wait
        delay = 1.0
        while True:
            value = await self._secret.read()
            if value is not None:
                return await self._take(value)
            left = deadline - self._clock()
            if left <= 0:
                raise FleetCertificateMissing(
                    f"secret {self._secret.secret_id} has no certificate after {self._wait:g} s "
                    "(is bbbscaler's certificate job running?)"
                )
            log.warning("fleet_certificate_not_published", secret=self._secret.secret_id,
                        retry_in_s=round(min(delay, left), 1))  # fmt: skip
            await self._sleep(min(delay, left))
            delay = min(delay * 2, 30.0)

    async def _take(self, value: SecretValue) -> FleetCertificate:
        certificate = decode(value.text)
        if not covers(certificate.names, self._fqdn):
            raise FleetCertificateInvalid(
                f"the fleet certificate names {', '.join(certificate.names)}, not {self._fqdn}"
            )
        try:
            await self._install(certificate.fullchain_pem, certificate.privkey_pem)
        except Exception as exc:
            # Whatever the installer raises (the helper's refusals, a failed reload):
            # this version is not served; the next look tries it again.
            raise InstallFailed(f"{type(exc).__name__}: {exc}") from exc
        self.version_id, self.certificate = value.version_id, certificate
        self._installed(certificate, value.version_id)
        log.info(
            "fleet_certificate_installed",
            version_id=value.version_id,
            not_after=certificate.not_after.isoformat(),
            names=list(certificate.names),
        )
        return certificate

    async def refresh(self) -> bool:
        """Install the current version if it is not the installed one; True when it did."""
        try:
            version = await self._secret.current_version()
            if version is None or version == self.version_id:
                return False
            value = await self._secret.read()
            if value is None:
                return False
            log.info("fleet_certificate_new_version", version_id=value.version_id,
                     installed=self.version_id)  # fmt: skip
            await self._take(value)
        except FleetCertificateInvalid as exc:
            self._refused("invalid", exc)
        except (ClientError, BotoCoreError) as exc:
            log.error("fleet_certificate_read_failed", secret=self._secret.secret_id,
                      error_code=aws.error_code(exc), error=type(exc).__name__)  # fmt: skip
            self._failed("read")
        except InstallFailed as exc:
            self._refused("install", exc)
        else:
            return True
        return False

    def _refused(self, reason: str, exc: Exception) -> None:
        log.error("fleet_certificate_not_installed", reason=reason, problem=str(exc),
                  kept_version_id=self.version_id)  # fmt: skip
        self._failed(reason)

    async def run(self) -> NoReturn:
        """Look for a new version every ``poll_interval`` seconds, for ever.

        While no version is installed (start-up could not install it, e.g. before
        nginx had its TLS server), every ``retry_interval`` seconds instead.
        """
        while True:
            pending = self.version_id is None
            await self._sleep(self._retry_interval if pending else self._poll_interval)
            await self.refresh()
