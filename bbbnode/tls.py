"""The host's TLS certificate: files in ``cert_dir``, per-host ACME, and installing PEM material.

Two ways a host gets its certificate (``tls.mode``):

* ``fleet`` (the default): bbbscaler issues one wildcard certificate for the
  fleet and publishes it in Secrets Manager; bbbnode reads it
  (bbbnode/fleet_certificate.py) and hands it to an :data:`Install`.
* ``host``: this module orders the host's own certificate over ACME DNS-01
  (bbbcore.acme_dns01) for ``{instance_id}.{domain}``. Every launch is a new
  certificate, so Let's Encrypt's 50 per registered domain per 7 days bound
  the fleet (docs/tls.md has the arithmetic); a ``rateLimited`` answer makes
  bbbnode wait for the time the CA named instead of failing and restarting.

Either way the daemon cannot give nginx and coturn the certificate itself: it
hands chain and key to an :data:`Install` (the host helper's
install_certificate, bbbnode/certificate.py), then runs the optional post hook.

Files in ``cert_dir`` (host mode; the daemon's own state directory):
``account.key`` (ACME account key, 0600), ``privkey.pem`` (the certificate's
key, 0600, kept across renewals), ``fullchain.pem`` (leaf and intermediates,
0644), and ``post-hook.pending`` while the certificate still has to be
delivered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bbbcore import logs
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
from bbbcore.certinfo import (
    CertificateError,
    Reason,
    cert_info,
    is_ec_key,
    needs_issue,
    new_ec_key_pem,
    norm_name,
)
from bbbcore.route53 import Route53Records
from bbbnode.certificate import Install
from bbbnode.files import write_atomic
from bbbnode.runner import Runner
from bbbnode.settings import TlsSettings

log = logs.get(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], dt.datetime]
RateLimited = Callable[[dt.datetime, float], None]
"""Told (retry time, seconds to wait) when the CA rate-limits this host's order."""

ACCOUNT_KEY = "account.key"
PRIVKEY = "privkey.pem"
FULLCHAIN = "fullchain.pem"
HOOK_PENDING = "post-hook.pending"
TRUST_BUNDLE = "acme-trust.pem"

DAY = 86_400.0
USER_AGENT = "bbbfleet-bbbnode"

_LOCKS: dict[Path, asyncio.Lock] = {}


class CertStoreError(CertificateError):
    """Keys or certificate could not be read or written in cert_dir."""


class HookFailed(CertificateError):
    """Installing the certificate or the post hook failed; both are retried."""

    def __init__(self, message: str, status: CertificateStatus) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where the files of one host's certificate live."""

    cert_dir: Path

    @property
    def account_key(self) -> Path:
        return self.cert_dir / ACCOUNT_KEY

    @property
    def privkey(self) -> Path:
        return self.cert_dir / PRIVKEY

    @property
    def fullchain(self) -> Path:
        return self.cert_dir / FULLCHAIN

    @property
    def hook_pending(self) -> Path:
        return self.cert_dir / HOOK_PENDING

    @property
    def trust_bundle(self) -> Path:
        return self.cert_dir / TRUST_BUNDLE


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    """The outcome of ensure_certificate."""

    fqdn: str
    issued: bool
    reason: Reason | None
    not_after: dt.datetime
    fullchain: Path
    privkey: Path
    hook_ran: bool


def route53_txt(records: Route53Records, zone_id: str, settings: TlsSettings) -> Route53Txt:
    """The challenge records' adapter with the configured INSYNC timeout."""
    return Route53Txt(records, zone_id, insync_timeout=settings.dns_propagation_timeout)


# ---------------------------------------------------------------------- file store


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _ensure_key(path: Path) -> tuple[bytes, bool]:
    """The EC key kept at ``path`` (created 0600 if missing or unreadable); (pem, created)."""
    pem = _read(path)
    if pem is not None and is_ec_key(pem):
        return pem, False
    pem = new_ec_key_pem()
    write_atomic(path, pem, mode=0o600)
    return pem, True


@dataclass(frozen=True, slots=True)
class _Stored:
    fullchain: bytes | None
    privkey: bytes | None
    hook_pending: bool


def _read_stored(paths: CertPaths) -> _Stored:
    return _Stored(
        fullchain=_read(paths.fullchain),
        privkey=_read(paths.privkey),
        hook_pending=paths.hook_pending.exists(),
    )


def _prepare(paths: CertPaths, extra_ca: Path | None) -> tuple[bytes, bytes, str | bool]:
    paths.cert_dir.mkdir(parents=True, exist_ok=True)
    account_pem, created = _ensure_key(paths.account_key)
    if created:
        log.info("acme_account_key_created", path=str(paths.account_key))
    key_pem, created = _ensure_key(paths.privkey)
    if created:
        log.info("tls_key_created", path=str(paths.privkey))
    return account_pem, key_pem, trust_bundle(extra_ca, paths.trust_bundle)


def _store(paths: CertPaths, chain: bytes) -> None:
    # Mark first: a crash between the rename and the hook still reloads nginx next time.
    write_atomic(paths.hook_pending, b"", mode=0o600)
    write_atomic(paths.fullchain, chain, mode=0o644)


# --------------------------------------------------------------------------- shell


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _run_hook(
    settings: TlsSettings,
    runner: Runner,
    paths: CertPaths,
    status: CertificateStatus,
    install: Install | None,
) -> CertificateStatus:
    if install is not None:
        try:
            chain, key = await asyncio.to_thread(
                lambda: (paths.fullchain.read_bytes(), paths.privkey.read_bytes())
            )
            await install(chain, key)
        except Exception as exc:
            log.error("tls_install_failed", error_type=type(exc).__name__, error=str(exc))
            raise HookFailed(f"installing the certificate: {exc}", status) from exc
        log.info("tls_certificate_delivered", not_after=status.not_after.isoformat())
    if not settings.post_hook:
        await asyncio.to_thread(paths.hook_pending.unlink, missing_ok=True)
        return dataclasses.replace(status, hook_ran=install is not None or status.hook_ran)
    result = await runner(settings.post_hook)
    if not result.ok:
        log.error("tls_post_hook_failed", argv=list(settings.post_hook), rc=result.returncode)
        raise HookFailed(
            f"{' '.join(settings.post_hook)} exited {result.returncode}: "
            f"{result.stderr.strip()[:300]}",
            status,
        )
    await asyncio.to_thread(paths.hook_pending.unlink, missing_ok=True)
    log.info("tls_post_hook_ran", argv=list(settings.post_hook))
    return dataclasses.replace(status, hook_ran=True)


async def ensure_certificate(
    settings: TlsSettings,
    fqdn: str,
    txt: TxtRecords,
    runner: Runner,
    *,
    now: Clock = _utc_now,
    sleep: Sleep = asyncio.sleep,
    timing: AcmeTiming | None = None,
    install: Install | None = None,
    deliver_always: bool = False,
) -> CertificateStatus:
    """Issue the certificate for ``fqdn`` if it is missing, wrong or expiring; else nothing.

    ``install`` and the post hook run only after a new certificate was written
    (or when an earlier delivery failed), never for a certificate that was
    already fine, unless ``deliver_always`` (start-up: the helper's copy may be
    older than ours, and installing is idempotent).
    """
    # Start-up and the renewal loop may both ask at once; one issuance per cert_dir.
    lock = _LOCKS.setdefault(settings.cert_dir.resolve(), asyncio.Lock())
    async with lock:
        return await _ensure(
            settings, fqdn, txt, runner, now=now, sleep=sleep, timing=timing,
            install=install, deliver_always=deliver_always,
        )  # fmt: skip


async def _ensure(
    settings: TlsSettings,
    fqdn: str,
    txt: TxtRecords,
    runner: Runner,
    *,
    now: Clock,
    sleep: Sleep,
    timing: AcmeTiming | None,
    install: Install | None,
    deliver_always: bool,
) -> CertificateStatus:
    fqdn = norm_name(fqdn)
    paths = CertPaths(settings.cert_dir)
    try:
        stored = await asyncio.to_thread(_read_stored, paths)
    except OSError as exc:
        raise CertStoreError(f"reading {paths.cert_dir}: {exc}") from exc
    reason = needs_issue(
        stored.fullchain, fqdn, now(), settings.renew_before_days, key_pem=stored.privkey
    )
    if reason is None:
        assert stored.fullchain is not None
        status = CertificateStatus(
            fqdn=fqdn,
            issued=False,
            reason=None,
            not_after=cert_info(stored.fullchain).not_after,
            fullchain=paths.fullchain,
            privkey=paths.privkey,
            hook_ran=False,
        )
        log.info("tls_certificate_ok", fqdn=fqdn, not_after=status.not_after.isoformat())
        if stored.hook_pending or deliver_always:
            return await _run_hook(settings, runner, paths, status, install)
        return status

    log.info("tls_issue_start", fqdn=fqdn, reason=str(reason))
    try:
        account_pem, key_pem, verify = await asyncio.to_thread(_prepare, paths, settings.ca_bundle)
    except OSError as exc:
        raise CertStoreError(f"preparing {paths.cert_dir}: {exc}") from exc
    account = AcmeAccount(settings.acme_directory, account_pem, settings.email, verify, USER_AGENT)
    chain = await obtain(account, [fqdn], key_pem, txt, timing=timing, sleep=sleep)
    try:
        await asyncio.to_thread(_store, paths, chain)
    except OSError as exc:
        raise CertStoreError(f"writing {paths.fullchain}: {exc}") from exc
    info = cert_info(chain)
    if needs_issue(chain, fqdn, now(), settings.renew_before_days) is not None:
        # A CA whose lifetime is shorter than the window would make every check reissue.
        log.warning("tls_certificate_inside_renewal_window", not_after=info.not_after.isoformat())
    log.info("tls_certificate_issued", fqdn=fqdn, not_after=info.not_after.isoformat())
    status = CertificateStatus(
        fqdn=fqdn,
        issued=True,
        reason=reason,
        not_after=info.not_after,
        fullchain=paths.fullchain,
        privkey=paths.privkey,
        hook_ran=False,
    )
    return await _run_hook(settings, runner, paths, status, install)


def rate_limit_wait(exc: AcmeRateLimited, now: dt.datetime, fallback: float) -> float:
    """Seconds until the CA's retry time (``fallback`` when it named none), at least 1."""
    if exc.retry_after is None:
        return max(fallback, 1.0)
    return max((exc.retry_after - now).total_seconds(), 1.0)


async def ensure_until_issued(
    settings: TlsSettings,
    fqdn: str,
    txt: TxtRecords,
    runner: Runner,
    *,
    rate_limited: RateLimited,
    now: Clock = _utc_now,
    sleep: Sleep = asyncio.sleep,
    acme_sleep: Sleep = asyncio.sleep,
    retry_interval: float = 3600.0,
    timing: AcmeTiming | None = None,
    install: Install | None = None,
    deliver_always: bool = False,
) -> CertificateStatus:
    """ensure_certificate at start-up, waiting out a CA's rate limit instead of failing.

    A ``rateLimited`` answer is logged at error level with the CA's retry time and
    passed to ``rate_limited``; the next order goes out only after that time
    (``retry_interval`` when the CA named none). Every other error is raised.
    """
    while True:
        try:
            return await ensure_certificate(
                settings, fqdn, txt, runner, now=now, sleep=acme_sleep, timing=timing,
                install=install, deliver_always=deliver_always,
            )  # fmt: skip
        except AcmeRateLimited as exc:
            wait = rate_limit_wait(exc, now(), retry_interval)
            until = now() + dt.timedelta(seconds=wait)
            log.error("tls_rate_limited", fqdn=fqdn, wait_s=round(wait), **describe(exc))
            rate_limited(until, wait)
            await sleep(wait)


async def renew_forever(
    settings: TlsSettings,
    fqdn: str,
    txt: TxtRecords,
    runner: Runner,
    *,
    sleep: Sleep,
    now: Clock = _utc_now,
    interval: float = DAY,
    retry_interval: float = 3600.0,
    acme_sleep: Sleep = asyncio.sleep,
    timing: AcmeTiming | None = None,
    issued: Callable[[CertificateStatus], None] | None = None,
    rate_limited: RateLimited | None = None,
    install: Install | None = None,
) -> NoReturn:
    """Check the certificate now and then every ``interval`` seconds, renewing in the window.

    ``sleep`` paces the schedule; ``acme_sleep`` the polls inside one issuance. A
    failed attempt is tried again after ``retry_interval``, not at once: a CA that
    rejected an order counts failed validations against the account; after a
    ``rateLimited`` answer, not before the time the CA named.
    """
    while True:
        try:
            status = await ensure_certificate(
                settings, fqdn, txt, runner, now=now, sleep=acme_sleep, timing=timing,
                install=install,
            )  # fmt: skip
        except AcmeRateLimited as exc:
            delay = max(retry_interval, rate_limit_wait(exc, now(), retry_interval))
            log.error("tls_renewal_failed", wait_s=round(delay), **describe(exc))
            if rate_limited is not None:
                rate_limited(now() + dt.timedelta(seconds=delay), delay)
        except CertificateError as exc:
            log.error("tls_renewal_failed", **describe(exc))
            delay = retry_interval
        else:
            if issued is not None:
                issued(status)
            delay = interval
        await sleep(delay)
