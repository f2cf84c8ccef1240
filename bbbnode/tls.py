"""The host's TLS certificate for its FQDN, over ACME DNS-01 with the TXT record in Route53.

Why the ``acme`` library and not certbot the CLI: ``acme`` is certbot's own
protocol library, maintained in the certbot repository and released with it,
so it gets the same fixes and CA quirks certbot does. It is a library, not a
program: no second daemon or timer, no shelling out to a CLI and parsing its
output, no certbot config tree or DNS plugin to install on the image. bbbnode
already holds the Route53 client, the runner for the reload hook and the
retry policy, so issuance becomes one more supervised step of the daemon with
typed errors and JSON logs. The library is synchronous (requests); each call
runs in a worker thread (``asyncio.to_thread``), which fits an asyncio daemon
that makes a handful of ACME calls a few times a year.

Files in ``cert_dir`` (the daemon's own state directory): ``account.key``
(ACME account key, 0600), ``privkey.pem`` (the certificate's key, 0600, kept
across renewals), ``fullchain.pem`` (leaf and intermediates, 0644), and
``post-hook.pending`` while the certificate still has to be delivered. The
daemon cannot give nginx and coturn the certificate itself: it hands chain and
key to ``install`` (the host helper's install_certificate), then runs the
optional post hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import email.utils
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar, cast

import certifi
import requests
from acme import challenges, crypto_util, messages
from acme import client as acme_client
from acme import errors as acme_errors
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

import bbbcore
from bbbcore import logs
from bbbnode import dns
from bbbnode.certificate import cert_info, key_public_der
from bbbnode.certificate import norm_name as _norm
from bbbnode.files import write_atomic
from bbbnode.runner import Runner
from bbbnode.settings import TlsSettings

log = logs.get(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], dt.datetime]
Install = Callable[[bytes, bytes], Awaitable[None]]
"""Hands the PEM chain and key to whatever serves them (the host helper's install_certificate)."""

ACCOUNT_KEY = "account.key"
PRIVKEY = "privkey.pem"
FULLCHAIN = "fullchain.pem"
HOOK_PENDING = "post-hook.pending"
TRUST_BUNDLE = "acme-trust.pem"

CHALLENGE_TTL = 60
DAY = 86_400.0

_LOCKS: dict[Path, asyncio.Lock] = {}

# ACME problem types worth another try: the server's own hiccups. rateLimited is
# deliberately absent: Let's Encrypt's limits last hours, beyond any retry budget.
_TRANSIENT_PROBLEMS = frozenset({"badNonce", "serverInternal"})


# --------------------------------------------------------------------------- errors


class TlsError(Exception):
    """Base of every error this module raises."""


class AcmeUnavailable(TlsError):
    """The ACME server stayed unreachable or failing after the retry budget."""


class AcmeRejected(TlsError):
    """The ACME server refused a request; retrying the same request will not help."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ChallengeFailed(AcmeRejected):
    """The CA could not validate the DNS-01 challenge (wrong or missing TXT record)."""


class AcmeTimeout(TlsError):
    """An authorization or order stayed pending past the poll deadline."""


class ChallengeDnsError(TlsError):
    """The TXT record could not be written to (or removed from) Route53."""


class CertStoreError(TlsError):
    """Keys or certificate could not be read or written in cert_dir."""


class HookFailed(TlsError):
    """Installing the certificate or the post hook failed; both are retried."""

    def __init__(self, message: str, status: CertificateStatus) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------- pure decisions


class Reason(enum.StrEnum):
    """Why a certificate has to be (re)issued."""

    MISSING = "missing"
    UNREADABLE = "unreadable"
    WRONG_NAME = "wrong_name"
    EXPIRING = "expiring"
    KEY_MISMATCH = "key_mismatch"


def needs_issue(
    cert_pem: bytes | None,
    fqdn: str,
    now: dt.datetime,
    renew_before_days: int,
    *,
    key_pem: bytes | None = None,
) -> Reason | None:
    """Why the certificate must be issued now, or None when it is fine.

    ``key_pem``, when given, is the private key the certificate must belong to.
    """
    if cert_pem is None:
        return Reason.MISSING
    try:
        info = cert_info(cert_pem)
    except ValueError:
        return Reason.UNREADABLE
    if _norm(fqdn) not in info.names:
        return Reason.WRONG_NAME
    if info.not_after - now <= dt.timedelta(days=renew_before_days):
        return Reason.EXPIRING
    if key_pem is not None:
        try:
            if key_public_der(key_pem) != info.public_key_der:
                return Reason.KEY_MISMATCH
        except (ValueError, TypeError):
            return Reason.KEY_MISMATCH
    return None


@dataclass(frozen=True, slots=True)
class Authz:
    """What the order flow needs from one ACME authorization."""

    domain: str
    status: str
    challenge: messages.ChallengeBody | None
    problem: str | None = None
    problem_code: str | None = None


def authz_view(authzr: messages.AuthorizationResource) -> Authz:
    """The ACME authorization as an Authz (its dns-01 challenge, status and first problem)."""
    body = authzr.body
    dns01 = next((c for c in body.challenges if isinstance(c.chall, challenges.DNS01)), None)
    error = next((c.error for c in body.challenges if c.error is not None), None)
    return Authz(
        domain=_norm(body.identifier.value),
        status=str(body.status.name),
        challenge=dns01,
        problem=str(error) if error is not None else None,
        problem_code=error.code if error is not None else None,
    )


def challenges_to_answer(authzs: Sequence[Authz]) -> tuple[Authz, ...]:
    """The pending authorizations to answer; valid ones (reused by the CA) need nothing.

    Raises ChallengeFailed when an authorization is already dead or offers no dns-01.
    """
    todo = []
    for authz in authzs:
        if authz.status == "valid":
            continue
        if authz.status != "pending":
            raise ChallengeFailed(
                f"authorization for {authz.domain} is {authz.status}: {authz.problem}",
                authz.problem_code,
            )
        if authz.challenge is None:
            raise ChallengeFailed(f"the CA offers no dns-01 challenge for {authz.domain}")
        todo.append(authz)
    return tuple(todo)


def challenge_record(domain: str) -> str:
    """The TXT record name the CA queries for ``domain``."""
    return f"_acme-challenge.{_norm(domain)}"


def poll_delay(retry_after: str | None, default: float, cap: float, now: dt.datetime) -> float:
    """Seconds until the next poll: the server's Retry-After if it gave one, within ``cap``."""
    seconds = default
    if retry_after:
        value = retry_after.strip()
        if value.isdigit():
            seconds = float(value)
        else:
            with contextlib.suppress(TypeError, ValueError):
                seconds = (email.utils.parsedate_to_datetime(value) - now).total_seconds()
    return min(max(seconds, 0.0), cap)


def is_transient(exc: BaseException) -> bool:
    """True for ACME errors worth another try: connection trouble, 5xx, bad nonces."""
    if isinstance(exc, messages.Error):
        return exc.code in _TRANSIENT_PROBLEMS
    if isinstance(exc, acme_errors.NonceError):
        return True
    if isinstance(exc, acme_errors.ConflictError):
        return False
    if isinstance(exc, acme_errors.ClientError):
        # acme raises ClientError(response) for an answer that is no problem document,
        # e.g. a proxy's 502 page.
        status = getattr(exc.args[0], "status_code", 0) if exc.args else 0
        return isinstance(status, int) and (status >= 500 or status == 429)
    if isinstance(exc, requests.exceptions.SSLError):
        # A certificate the client does not trust will not become trusted by waiting.
        return False
    return isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout)


# ------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class AcmeTiming:
    """Polling and retry budget of one issuance (tests shrink it)."""

    poll_interval: float = 2.0
    max_poll_interval: float = 30.0
    poll_timeout: float = 300.0
    request_timeout: float = 30.0
    retry_attempts: int = 8
    retry_give_up_after: float = 300.0
    retry_max_wait: float = 30.0


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


# ---------------------------------------------------------------------- DNS adapter


class TxtRecords(Protocol):
    """The DNS side of DNS-01: TXT records the CA can resolve."""

    async def upsert(self, name: str, values: Sequence[str]) -> None:
        """Create or replace the TXT record set; return once it is served (INSYNC)."""

    async def delete(self, name: str, values: Sequence[str]) -> None:
        """Remove the TXT record set; an absent record counts as removed."""


@dataclass(frozen=True, slots=True)
class Route53Txt:
    """TxtRecords in a Route53 hosted zone, through bbbnode.dns."""

    records: dns.Route53Records
    zone_id: str
    insync_timeout: float = 300.0
    ttl: int = CHALLENGE_TTL

    @classmethod
    def for_settings(
        cls, records: dns.Route53Records, zone_id: str, settings: TlsSettings
    ) -> Route53Txt:
        return cls(records, zone_id, insync_timeout=settings.dns_propagation_timeout)

    async def upsert(self, name: str, values: Sequence[str]) -> None:
        await self.records.upsert_txt(
            self.zone_id, name, values, self.ttl, insync_timeout=self.insync_timeout
        )

    async def delete(self, name: str, values: Sequence[str]) -> None:
        await self.records.delete_txt(self.zone_id, name, values)


# ---------------------------------------------------------------------- file store


def _new_ec_key_pem() -> bytes:
    # P-256: what certbot defaults to, accepted by every ACME CA, nginx and coturn.
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _load_key(pem: bytes | None) -> ec.EllipticCurvePrivateKey | None:
    if pem is None:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _ensure_key(path: Path) -> tuple[bytes, bool]:
    """The EC key kept at ``path`` (created 0600 if missing or unreadable); (pem, created)."""
    pem = _read(path)
    if pem is not None and _load_key(pem) is not None:
        return pem, False
    pem = _new_ec_key_pem()
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


def _trust_file(paths: CertPaths, extra: Path | None) -> str | bool:
    """What requests verifies the ACME server against: the usual roots plus ``extra``."""
    if extra is None:
        return True
    # requests takes one bundle; keep the public roots so an extra CA adds trust
    # instead of replacing it.
    bundle = Path(certifi.where()).read_bytes() + b"\n" + extra.read_bytes()
    write_atomic(paths.trust_bundle, bundle, mode=0o644)
    return str(paths.trust_bundle)


# ------------------------------------------------------------------- ACME adapter


def _retrying(what: str, timing: AcmeTiming, sleep: Sleep) -> AsyncRetrying:
    def retrying(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "acme_retry",
            call=what,
            attempt=state.attempt_number,
            error=type(exc).__name__,
            retry_in_s=round(state.upcoming_sleep, 2),
        )

    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_random_exponential(multiplier=0.5, max=timing.retry_max_wait),
        stop=stop_after_attempt(timing.retry_attempts)
        | stop_after_delay(timing.retry_give_up_after),
        sleep=sleep,
        before_sleep=retrying,
        reraise=True,
    )


async def acme_call(what: str, fn: Callable[[], T], timing: AcmeTiming, sleep: Sleep) -> T:
    """``fn()`` (a blocking acme call) in a worker thread, transient errors retried.

    Raises AcmeUnavailable once the retry budget is spent, AcmeRejected at once
    for everything the server refused.
    """
    try:
        return await _retrying(what, timing, sleep)(asyncio.to_thread, fn)
    except messages.Error as exc:
        if is_transient(exc):
            raise AcmeUnavailable(f"{what}: {exc}") from exc
        raise AcmeRejected(f"{what}: {exc}", exc.code) from exc
    except (acme_errors.Error, requests.exceptions.RequestException) as exc:
        if is_transient(exc):
            raise AcmeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise AcmeRejected(f"{what}: {type(exc).__name__}: {exc}") from exc


class AcmeSession:
    """acme's synchronous ClientV2 behind async calls (worker threads, retried when transient)."""

    def __init__(
        self, client: acme_client.ClientV2, account_key: JWKEC, timing: AcmeTiming, sleep: Sleep
    ) -> None:
        self._client = client
        self._key = account_key
        self._timing = timing
        self._sleep = sleep

    @classmethod
    async def open(
        cls,
        directory_url: str,
        account_key_pem: bytes,
        *,
        verify: str | bool,
        timing: AcmeTiming,
        sleep: Sleep,
    ) -> AcmeSession:
        """Fetch the directory; the account is looked up by ``register``."""
        key = serialization.load_pem_private_key(account_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertStoreError(f"{ACCOUNT_KEY} is not an EC key")
        jwk = JWKEC(key=key)
        net = acme_client.ClientNetwork(
            jwk,
            alg=ES256,
            # requests takes a CA bundle path where acme's hint says bool.
            verify_ssl=cast(bool, verify),
            user_agent=f"bbbfleet-bbbnode/{bbbcore.__version__} acme-python",
            timeout=int(timing.request_timeout),
        )
        directory = await acme_call(
            "directory",
            lambda: acme_client.ClientV2.get_directory(directory_url, net),
            timing,
            sleep,
        )
        return cls(acme_client.ClientV2(directory, net), jwk, timing, sleep)

    async def call(self, what: str, fn: Callable[[], T]) -> T:
        return await acme_call(what, fn, self._timing, self._sleep)

    @property
    def account_key(self) -> JWKEC:
        return self._key

    async def register(self, email: str) -> str:
        """Register the account of this key, or find it again; returns the account URL."""
        new = messages.NewRegistration.from_data(email=email or None, terms_of_service_agreed=True)

        def register() -> tuple[str, bool]:
            try:
                regr = self._client.new_account(new)
            except acme_errors.ConflictError as exc:
                # RFC 8555 7.3.1: the key already has an account; the server names it.
                self._client.net.account = messages.RegistrationResource(
                    uri=exc.location, body=messages.Registration()
                )
                return str(exc.location), False
            return str(regr.uri), True

        uri, created = await self.call("new_account", register)
        log.info("acme_account", created=created, account=uri)
        return uri

    async def new_order(self, csr_pem: bytes) -> messages.OrderResource:
        return await self.call("new_order", lambda: self._client.new_order(csr_pem))

    async def answer(self, challb: messages.ChallengeBody) -> None:
        chall = challb.chall
        assert isinstance(chall, challenges.DNS01)
        response = chall.response(self._key)
        await self.call("answer_challenge", lambda: self._client.answer_challenge(challb, response))

    async def poll_authz(
        self, authzr: messages.AuthorizationResource
    ) -> tuple[messages.AuthorizationResource, str | None]:
        updated, response = await self.call("poll_authorization", lambda: self._client.poll(authzr))
        return updated, response.headers.get("Retry-After")

    def _post_as_get(self, url: str) -> requests.Response:
        # RFC 8555 6.3: reads are signed POSTs with an empty payload.
        return self._client.net.post(url, None, new_nonce_url=self._client.directory["newNonce"])

    async def finalize(self, orderr: messages.OrderResource) -> messages.Order:
        def begin() -> messages.Order:
            try:
                return self._client.begin_finalization(orderr).body
            except messages.Error as exc:
                # A reused order may already be past "ready"; polling tells the truth.
                if exc.code != "orderNotReady":
                    raise
                return orderr.body

        return await self.call("finalize", begin)

    async def poll_order(self, url: str) -> tuple[messages.Order, str | None]:
        def poll() -> tuple[messages.Order, str | None]:
            response = self._post_as_get(url)
            return messages.Order.from_json(response.json()), response.headers.get("Retry-After")

        return await self.call("poll_order", poll)

    async def download(self, url: str) -> str:
        return await self.call("download_certificate", lambda: self._post_as_get(url).text)


# ----------------------------------------------------------------------- issuance


async def _wait_authorizations(
    session: AcmeSession,
    authzrs: Sequence[messages.AuthorizationResource],
    timing: AcmeTiming,
    sleep: Sleep,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timing.poll_timeout
    for authzr in authzrs:
        while True:
            updated, retry_after = await session.poll_authz(authzr)
            view = authz_view(updated)
            if view.status == "valid":
                break
            if view.status != "pending":
                raise ChallengeFailed(
                    f"dns-01 for {view.domain} is {view.status}: {view.problem}",
                    view.problem_code,
                )
            if loop.time() >= deadline:
                raise AcmeTimeout(f"authorization for {view.domain} still pending")
            await sleep(_delay(retry_after, timing))


def _delay(retry_after: str | None, timing: AcmeTiming) -> float:
    return poll_delay(
        retry_after, timing.poll_interval, timing.max_poll_interval, dt.datetime.now(dt.UTC)
    )


async def _finalize(
    session: AcmeSession, orderr: messages.OrderResource, timing: AcmeTiming, sleep: Sleep
) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timing.poll_timeout
    body = await session.finalize(orderr)
    retry_after: str | None = None
    while True:
        status = str(body.status.name)
        if status == "valid" and body.certificate:
            return await session.download(body.certificate)
        if status == "invalid":
            raise AcmeRejected(f"order invalid: {body.error}", code="orderInvalid")
        if loop.time() >= deadline:
            raise AcmeTimeout(f"order still {status}")
        await sleep(_delay(retry_after, timing))
        body, retry_after = await session.poll_order(orderr.uri)
        if str(body.status.name) == "ready":
            # The finalization did not take (e.g. its answer was lost and retried): again.
            body = await session.finalize(orderr)


async def issue(
    session: AcmeSession,
    fqdn: str,
    key_pem: bytes,
    txt: TxtRecords,
    *,
    timing: AcmeTiming,
    sleep: Sleep,
) -> str:
    """Order, answer dns-01 through ``txt``, finalize; the PEM full chain.

    The TXT records are removed again whether or not issuance succeeded.
    """
    csr_pem = crypto_util.make_csr(key_pem, [fqdn])
    orderr = await session.new_order(csr_pem)
    todo = challenges_to_answer([authz_view(a) for a in orderr.authorizations])
    records: dict[str, list[str]] = {}
    for authz in todo:
        assert authz.challenge is not None
        chall = authz.challenge.chall
        assert isinstance(chall, challenges.DNS01)
        records.setdefault(challenge_record(authz.domain), []).append(
            chall.validation(session.account_key)
        )
    written: list[str] = []
    try:
        for name, values in records.items():
            written.append(name)
            try:
                await txt.upsert(name, values)
            except TlsError:
                raise
            except Exception as exc:
                raise ChallengeDnsError(f"TXT {name}: {exc!r}") from exc
            log.info("acme_txt_written", record=name, values=len(values))
        for authz in todo:
            assert authz.challenge is not None
            await session.answer(authz.challenge)
        pending = [a for a in orderr.authorizations if authz_view(a).status != "valid"]
        await _wait_authorizations(session, pending, timing, sleep)
        fullchain = await _finalize(session, orderr, timing, sleep)
    finally:
        for name in written:
            await _remove_txt(txt, name, records[name])
    return fullchain


async def _remove_txt(txt: TxtRecords, name: str, values: Sequence[str]) -> None:
    # Cleanup must not hide the error that brought us here; a leftover challenge
    # record is harmless (it proves nothing without the account key) and the
    # next issuance overwrites it.
    try:
        await txt.delete(name, values)
    except Exception as exc:
        log.warning("acme_txt_cleanup_failed", record=name, error=repr(exc))
    else:
        log.info("acme_txt_removed", record=name)


def _checked_chain(fullchain: str, fqdn: str, key_pem: bytes) -> bytes:
    data = fullchain.encode()
    try:
        info = cert_info(data)
    except ValueError as exc:
        raise AcmeRejected(f"the CA returned no readable certificate: {exc}") from exc
    if _norm(fqdn) not in info.names:
        raise AcmeRejected(f"the CA's certificate does not name {fqdn}")
    if info.public_key_der != key_public_der(key_pem):
        raise AcmeRejected("the CA's certificate is not for our key")
    return data


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


def _prepare(paths: CertPaths, extra_ca: Path | None) -> tuple[bytes, bytes, str | bool]:
    paths.cert_dir.mkdir(parents=True, exist_ok=True)
    account_pem, created = _ensure_key(paths.account_key)
    if created:
        log.info("acme_account_key_created", path=str(paths.account_key))
    key_pem, created = _ensure_key(paths.privkey)
    if created:
        log.info("tls_key_created", path=str(paths.privkey))
    return account_pem, key_pem, _trust_file(paths, extra_ca)


def _store(paths: CertPaths, chain: bytes) -> None:
    # Mark first: a crash between the rename and the hook still reloads nginx next time.
    write_atomic(paths.hook_pending, b"", mode=0o600)
    write_atomic(paths.fullchain, chain, mode=0o644)


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
    timing = timing or AcmeTiming()
    fqdn = _norm(fqdn)
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
    session = await AcmeSession.open(
        settings.acme_directory, account_pem, verify=verify, timing=timing, sleep=sleep
    )
    await session.register(settings.email)
    fullchain = await issue(session, fqdn, key_pem, txt, timing=timing, sleep=sleep)
    chain = _checked_chain(fullchain, fqdn, key_pem)
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
    install: Install | None = None,
) -> NoReturn:
    """Check the certificate now and then every ``interval`` seconds, renewing in the window.

    ``sleep`` paces the schedule; ``acme_sleep`` the polls inside one issuance. A
    failed attempt is tried again after ``retry_interval``, not at once: a CA that
    rejected an order counts failed validations against the account.
    """
    while True:
        try:
            await ensure_certificate(
                settings, fqdn, txt, runner, now=now, sleep=acme_sleep, timing=timing,
                install=install,
            )  # fmt: skip
        except TlsError as exc:
            log.error("tls_renewal_failed", error_type=type(exc).__name__, error=str(exc))
            delay = retry_interval
        else:
            delay = interval
        await sleep(delay)
