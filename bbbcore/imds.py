"""An async IMDSv2 client: who this instance is, and what its Auto Scaling group intends.

Every read carries a session token from ``PUT /latest/api/token``; the token is
renewed shortly before it expires and whenever IMDS answers 401 (the service may
have been restarted, or our clock and its clock disagree). Connection errors,
timeouts and 5xx/429 answers are retried with jittered backoff; 404 means "this
instance has no such value" and becomes None.

The endpoint is a constructor argument: the daemon passes
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` or :data:`DEFAULT_ENDPOINT`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from bbbcore import aws, logs

if TYPE_CHECKING:
    from botocore.config import Config
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_autoscaling.type_defs import AutoScalingInstanceDetailsTypeDef

log = logs.get(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_ENDPOINT = "http://169.254.169.254/"
TOKEN_PATH = "latest/api/token"  # noqa: S105 - a URL path, not a secret
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TOKEN_TTL = 21_600
ASG_NAME_TAG = "aws:autoscaling:groupName"


class ImdsError(RuntimeError):
    """IMDS answered something this client cannot use (or a value it needs is missing)."""


class ImdsUnavailable(ImdsError):
    """IMDS stayed unreachable or kept failing (5xx, 429, timeouts) through every retry."""


class _ServerError(ImdsUnavailable):
    def __init__(self, status: int, what: str) -> None:
        super().__init__(f"instance metadata answered HTTP {status} for {what}")
        self.status = status


@dataclass(frozen=True, slots=True)
class InstanceIdentity:
    """The instance as IMDS describes it; field names match ``bbbnode.identity.Identity``."""

    instance_id: str
    region: str
    availability_zone: str
    local_ipv4: str
    public_ipv4: str | None = None
    asg_name: str | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """An IMDSv2 session token and when (by our clock) it stops being usable."""

    value: str = field(repr=False)
    expires_at: float


def refresh_margin(ttl: float) -> float:
    """Seconds before expiry at which a token is renewed: a tenth of its life, at most 60 s."""
    return min(60.0, ttl / 10.0)


def token_usable(token: Token | None, now: float, margin: float) -> bool:
    """True when ``token`` can still be sent without risking a 401 in flight."""
    return token is not None and now < token.expires_at - margin


def _is_transient(exc: BaseException) -> bool:
    return isinstance(
        exc,
        _ServerError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError,
    )


def _classify(status: int, what: str) -> None:
    """Raise for an answer that is neither a value (200) nor "absent" (404)."""
    if status >= 500 or status == 429:
        raise _ServerError(status, what)
    if status not in (200, 404):
        raise ImdsError(f"instance metadata answered HTTP {status} for {what}")


class ImdsClient:
    """IMDSv2 reads with token handling and retries; use as ``async with ImdsClient(...)``."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 2.0,
        token_ttl: int = MAX_TOKEN_TTL,
        attempts: int = 5,
        max_backoff: float = 2.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        if not 1 <= token_ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"token_ttl must be 1..{MAX_TOKEN_TTL} seconds")
        self._base = endpoint.rstrip("/") + "/"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ttl = token_ttl
        self._attempts = attempts
        self._max_backoff = max_backoff
        self._clock = clock
        self._sleep = sleep
        self._http = http
        self._owns_http = http is None
        self._token: Token | None = None
        self._token_lock = asyncio.Lock()

    async def __aenter__(self) -> ImdsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def endpoint(self) -> str:
        return self._base

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # trust_env=False: IMDS refuses tokens to proxied requests, and a proxy
            # from the environment must never see the token.
            self._http = aiohttp.ClientSession(
                timeout=self._timeout,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    def _retrying(self) -> AsyncRetrying:
        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.info("imds_retry", attempt=state.attempt_number, error=str(exc))

        return AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            wait=wait_random_exponential(multiplier=0.1, max=self._max_backoff),
            stop=stop_after_attempt(self._attempts),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    async def _token_value(self) -> Token:
        async with self._token_lock:
            now = self._clock()
            if token_usable(self._token, now, refresh_margin(self._ttl)):
                assert self._token is not None
                return self._token
            async with self._session().put(
                self._base + TOKEN_PATH,
                headers={TTL_HEADER: str(self._ttl)},
                timeout=self._timeout,
            ) as response:
                body = await response.text()
                status = response.status
            if status == 404:
                raise ImdsError("instance metadata has no token endpoint (IMDSv2 off?)")
            _classify(status, "the session token")
            # Counted from before the request: never believe the token lives longer than it does.
            self._token = Token(body.strip(), now + self._ttl)
            log.debug("imds_token_renewed", ttl=self._ttl)
            return self._token

    def _drop(self, token: Token) -> None:
        # Only the token that failed: a concurrent reader may already have a new one.
        if self._token is token:
            self._token = None

    async def _read_once(self, path: str) -> str | None:
        url = self._base + "latest/" + path
        for renewed in (False, True):
            token = await self._token_value()
            async with self._session().get(
                url, headers={TOKEN_HEADER: token.value}, timeout=self._timeout
            ) as response:
                body = await response.text()
                status = response.status
            if status == 401 and not renewed:
                log.info("imds_token_rejected", path=path)
                self._drop(token)
                continue
            _classify(status, path)
            return body if status == 200 else None
        raise ImdsError(f"instance metadata refused a fresh token for {path}")

    async def read(self, path: str) -> str | None:
        """The value at ``/latest/<path>`` (e.g. ``meta-data/instance-id``); None on 404."""
        try:
            result: str | None = await self._retrying()(self._read_once, path)
        except ImdsError:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ImdsUnavailable(
                f"instance metadata at {self._base} unreachable for {path}: {exc!r}"
            ) from exc
        return result

    async def metadata(self, path: str) -> str | None:
        """A value under ``meta-data/``; None when the instance has no such value."""
        return await self.read("meta-data/" + path.lstrip("/"))

    async def _required(self, path: str) -> str:
        value = await self.metadata(path)
        if value is None or not value.strip():
            raise ImdsError(f"instance metadata has no {path}")
        return value.strip()

    async def _optional(self, path: str) -> str | None:
        value = await self.metadata(path)
        if value is None:
            return None
        return value.strip() or None

    async def identity(self) -> InstanceIdentity:
        """Instance id, placement, addresses and ASG name (None when tags are off in IMDS)."""
        instance_id, region, zone, local_ipv4, public_ipv4, asg_name = await asyncio.gather(
            self._required("instance-id"),
            self._required("placement/region"),
            self._required("placement/availability-zone"),
            self._required("local-ipv4"),
            self._optional("public-ipv4"),
            self._optional(f"tags/instance/{ASG_NAME_TAG}"),
        )
        return InstanceIdentity(
            instance_id=instance_id,
            region=region,
            availability_zone=zone,
            local_ipv4=local_ipv4,
            public_ipv4=public_ipv4,
            asg_name=asg_name,
        )

    async def target_lifecycle_state(self) -> str | None:
        """``autoscaling/target-lifecycle-state`` (InService, Terminated, ...); None if absent."""
        return await self._optional("autoscaling/target-lifecycle-state")


async def asg_name_fallback(
    session: Any,
    region: str,
    instance_id: str,
    *,
    config: Config | None = None,
    give_up_after: float = 300.0,
    sleep: Sleep = asyncio.sleep,
) -> str | None:
    """The instance's Auto Scaling group from DescribeAutoScalingInstances; None if in none.

    For hosts whose launch template keeps instance tags out of IMDS.
    """

    def on_retry(exc: BaseException) -> None:
        log.info("asg_lookup_retry", error_code=aws.error_code(exc), error=type(exc).__name__)

    client: AutoScalingClient
    async with session.client(
        "autoscaling", region_name=region, config=config or aws.client_config()
    ) as client:
        retrying = aws.retrying(give_up_after=give_up_after, on_retry=on_retry).copy(sleep=sleep)
        instances: list[AutoScalingInstanceDetailsTypeDef] = []
        # aiobotocore methods return coroutines without being coroutine functions, so
        # tenacity's call form would not await them: iterate the attempts instead.
        async for attempt in retrying:
            with attempt:
                answer = await client.describe_auto_scaling_instances(InstanceIds=[instance_id])
                instances = answer.get("AutoScalingInstances", [])
    for instance in instances:
        if instance.get("InstanceId") == instance_id:
            name = instance.get("AutoScalingGroupName")
            return str(name) if name else None
    return None
