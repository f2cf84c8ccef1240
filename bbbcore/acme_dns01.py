"""A certificate over ACME DNS-01 with the TXT record in Route53, for bbbnode and bbbscaler.

bbbscaler issues and renews the fleet's wildcard certificate with it; bbbnode,
in its per-host mode, its own. Both hand in the names, the certificate's key
and where TXT records go, and get back a checked PEM chain.

Why the ``acme`` library and not certbot the CLI: ``acme`` is certbot's own
protocol library, maintained in the certbot repository and released with it,
so it gets the same fixes and CA quirks certbot does. It is a library, not a
program: no second daemon or timer, no shelling out to a CLI and parsing its
output, no certbot config tree or DNS plugin to install. The library is
synchronous (requests); each call runs in a worker thread
(``asyncio.to_thread``), which fits asyncio programs that make a handful of
ACME calls a few times a year.

Rate limits. Let's Encrypt allows 50 new certificates per registered domain
per 7 days, counted across every account of that domain, 5 per exact set of
names per 7 days, and 300 new orders per account per 3 hours
(https://letsencrypt.org/docs/rate-limits/). Past a limit the CA answers with
the problem type ``urn:ietf:params:acme:error:rateLimited`` (RFC 8555 section
6.7) and, as RFC 8555 section 6.6 asks, a Retry-After header; Let's Encrypt's
detail text also ends in "retry after <time>". That answer becomes
:class:`AcmeRateLimited` with the time the CA named, never a retry within the
call: Let's Encrypt's limits refill over hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

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
from bbbcore import logs, route53
from bbbcore.certinfo import CertificateError, cert_info, covers, key_public_der, norm_name

log = logs.get(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

CHALLENGE_TTL = 60

# ACME problem types worth another try: the server's own hiccups. rateLimited is
# deliberately absent: Let's Encrypt's limits last hours, beyond any retry budget.
_TRANSIENT_PROBLEMS = frozenset({"badNonce", "serverInternal"})
RATE_LIMITED = "rateLimited"
# Let's Encrypt's rateLimited detail: "..., retry after 2024-10-12T08:14:22Z: see ..."
# (older Boulder releases: "retry after 2024-10-12 08:14:22 UTC").
_RETRY_AFTER_TEXT = re.compile(
    r"retry after (\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z| UTC)", re.IGNORECASE
)


# --------------------------------------------------------------------------- errors


class AcmeUnavailable(CertificateError):
    """The ACME server stayed unreachable or failing after the retry budget."""


class AcmeRejected(CertificateError):
    """The ACME server refused a request; retrying the same request will not help."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class AcmeRateLimited(AcmeRejected):
    """The CA answered ``rateLimited``; ``retry_after`` is when it said to try again (if it did)."""

    def __init__(self, message: str, retry_after: dt.datetime | None) -> None:
        super().__init__(message, RATE_LIMITED)
        self.retry_after = retry_after


class ChallengeFailed(AcmeRejected):
    """The CA could not validate the DNS-01 challenge (wrong or missing TXT record)."""


class AcmeTimeout(CertificateError):
    """An authorization or order stayed pending past the poll deadline."""


class ChallengeDnsError(CertificateError):
    """The TXT record could not be written to (or removed from) Route53."""


# ------------------------------------------------------------------- pure decisions


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
        # A wildcard's authorization names the base domain (RFC 8555 7.1.3), which is
        # also where its TXT record goes (RFC 8555 8.4).
        domain=norm_name(body.identifier.value),
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
    """The TXT record name the CA queries for ``domain`` (RFC 8555 8.4)."""
    return f"_acme-challenge.{norm_name(domain)}"


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


def retry_at(header: str | None, detail: str | None, now: dt.datetime) -> dt.datetime | None:
    """When a rateLimited CA said to come back: its Retry-After header, else the detail's time.

    The header is seconds or an HTTP date (RFC 9110 10.2.3); None when neither says.
    """
    if header:
        value = header.strip()
        if value.isdigit():
            return now + dt.timedelta(seconds=int(value))
        with contextlib.suppress(TypeError, ValueError):
            when = email.utils.parsedate_to_datetime(value)
            return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    match = _RETRY_AFTER_TEXT.search(detail or "")
    if match:
        with contextlib.suppress(ValueError):
            stamp = dt.datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}")
            return stamp.replace(tzinfo=dt.UTC)
    return None


def is_transient(exc: BaseException) -> bool:
    """True for ACME errors worth another try: connection trouble, 5xx, bad nonces."""
    if isinstance(exc, _RateLimitedProblem):
        return False
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


def checked_chain(fullchain: str, names: Sequence[str], key_pem: bytes) -> bytes:
    """The CA's chain as bytes, after checking it names ``names`` and belongs to ``key_pem``."""
    data = fullchain.encode()
    try:
        info = cert_info(data)
    except ValueError as exc:
        raise AcmeRejected(f"the CA returned no readable certificate: {exc}") from exc
    for name in names:
        if not covers(info.names, name):
            raise AcmeRejected(f"the CA's certificate does not name {name}")
    if info.public_key_der != key_public_der(key_pem):
        raise AcmeRejected("the CA's certificate is not for our key")
    return data


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
class AcmeAccount:
    """Where and as whom to order: the directory, the account key, whom to trust."""

    directory_url: str
    key_pem: bytes
    email: str = ""
    verify: str | bool = True
    """What requests verifies the CA's HTTPS against: True (public roots) or a bundle path."""
    user_agent: str = "bbbfleet"


def trust_bundle(extra: Path | None, bundle: Path) -> str | bool:
    """What requests verifies the ACME server against: the usual roots plus ``extra``.

    requests takes one bundle; the public roots are kept so an extra CA adds trust
    instead of replacing it. ``bundle`` is where the combination is written.
    """
    if extra is None:
        return True
    bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + extra.read_bytes())
    return str(bundle)


# ---------------------------------------------------------------------- DNS adapter


class TxtRecords(Protocol):
    """The DNS side of DNS-01: TXT records the CA can resolve."""

    async def upsert(self, name: str, values: Sequence[str]) -> None:
        """Create or replace the TXT record set; return once it is served (INSYNC)."""

    async def delete(self, name: str, values: Sequence[str]) -> None:
        """Remove the TXT record set; an absent record counts as removed."""


@dataclass(frozen=True, slots=True)
class Route53Txt:
    """TxtRecords in a Route53 hosted zone, through bbbcore.route53."""

    records: route53.Route53Records
    zone_id: str
    insync_timeout: float = 300.0
    ttl: int = CHALLENGE_TTL

    async def upsert(self, name: str, values: Sequence[str]) -> None:
        await self.records.upsert_txt(
            self.zone_id, name, values, self.ttl, insync_timeout=self.insync_timeout
        )

    async def delete(self, name: str, values: Sequence[str]) -> None:
        await self.records.delete_txt(self.zone_id, name, values)


# ------------------------------------------------------------------- ACME adapter


class _RateLimitedProblem(Exception):
    """A rateLimited problem document with the Retry-After header that came with it."""

    def __init__(self, error: messages.Error, retry_after: str | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class _Network(acme_client.ClientNetwork):
    """acme's ClientNetwork, keeping the Retry-After of a rateLimited answer.

    acme turns a problem document into ``messages.Error`` and drops the response's
    headers (acme/client.py, ``ClientNetwork._check_response``); the header is
    the CA's own word on when to come back, so it is kept here.
    """

    @classmethod
    def _check_response(
        cls, response: requests.Response, content_type: str | None = None
    ) -> requests.Response:
        try:
            return super()._check_response(response, content_type)
        except messages.Error as exc:
            if exc.code == RATE_LIMITED:
                raise _RateLimitedProblem(exc, response.headers.get("Retry-After")) from exc
            raise


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

    Raises AcmeUnavailable once the retry budget is spent, AcmeRateLimited when the
    CA rate-limits, AcmeRejected at once for everything else the server refused.
    """
    try:
        return await _retrying(what, timing, sleep)(asyncio.to_thread, fn)
    except _RateLimitedProblem as exc:
        when = retry_at(exc.retry_after, exc.error.detail, dt.datetime.now(dt.UTC))
        raise AcmeRateLimited(f"{what}: {exc.error}", when) from exc
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
    async def open(cls, account: AcmeAccount, *, timing: AcmeTiming, sleep: Sleep) -> AcmeSession:
        """Fetch the directory; the account is looked up by ``register``."""
        key = serialization.load_pem_private_key(account.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError("the ACME account key is not an EC key")
        jwk = JWKEC(key=key)
        net = _Network(
            jwk,
            alg=ES256,
            # requests takes a CA bundle path where acme's hint says bool.
            verify_ssl=cast(bool, account.verify),
            user_agent=f"{account.user_agent}/{bbbcore.__version__} acme-python",
            timeout=int(timing.request_timeout),
        )
        directory = await acme_call(
            "directory",
            lambda: acme_client.ClientV2.get_directory(account.directory_url, net),
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


def _delay(retry_after: str | None, timing: AcmeTiming) -> float:
    return poll_delay(
        retry_after, timing.poll_interval, timing.max_poll_interval, dt.datetime.now(dt.UTC)
    )


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
    names: Sequence[str],
    key_pem: bytes,
    txt: TxtRecords,
    *,
    timing: AcmeTiming,
    sleep: Sleep,
) -> str:
    """Order ``names``, answer dns-01 through ``txt``, finalize; the PEM full chain.

    The TXT records are removed again whether or not issuance succeeded.
    """
    csr_pem = crypto_util.make_csr(key_pem, [norm_name(n) for n in names])
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
            except CertificateError:
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


async def obtain(
    account: AcmeAccount,
    names: Sequence[str],
    key_pem: bytes,
    txt: TxtRecords,
    *,
    timing: AcmeTiming | None = None,
    sleep: Sleep = asyncio.sleep,
) -> bytes:
    """A certificate for ``names`` on ``key_pem``: register (or find) the account, order,
    prove control over DNS-01, finalize; the checked PEM chain.

    Raises a CertificateError subclass; AcmeRateLimited carries the CA's retry time.
    """
    timing = timing or AcmeTiming()
    session = await AcmeSession.open(account, timing=timing, sleep=sleep)
    await session.register(account.email)
    fullchain = await issue(session, names, key_pem, txt, timing=timing, sleep=sleep)
    return checked_chain(fullchain, names, key_pem)


def describe(exc: BaseException) -> dict[str, Any]:
    """Log fields for a failed issuance (the CA's retry time when it rate-limited)."""
    fields: dict[str, Any] = {"error_type": type(exc).__name__, "error": str(exc)}
    if isinstance(exc, AcmeRateLimited) and exc.retry_after is not None:
        fields["retry_after"] = exc.retry_after.isoformat()
    return fields
