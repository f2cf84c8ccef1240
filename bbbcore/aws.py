"""AWS sessions and the retry policy every bbbfleet AWS call uses.

botocore retries transient errors itself ("standard" mode: throttling, 5xx,
connection errors, with jittered backoff). Steps that must survive longer
outages wrap whole operations in ``retrying()``, which retries only what is
transient and never a programmer's error (validation, access denied, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def client_config(max_attempts: int = 5, timeout: float = 10.0) -> Config:
    """botocore config: standard retries, bounded timeouts."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=timeout,
        read_timeout=timeout,
    )


def session(region: str | None = None) -> aioboto3.Session:
    """An aioboto3 session; the endpoint comes from AWS_ENDPOINT_URL when set."""
    return aioboto3.Session(region_name=region)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: throttling, 5xx, connection trouble."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code in TRANSIENT_CODES or status >= 500
    return isinstance(
        exc,
        EndpointConnectionError
        | ConnectTimeoutError
        | ReadTimeoutError
        | ConnectionClosedError
        | aiohttp.ClientConnectionError
        | TimeoutError,
    )


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ClientError, else None."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def retrying(
    give_up_after: float = 300.0,
    max_wait: float = 30.0,
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncRetrying:
    """Retry transient errors with full-jitter backoff for up to ``give_up_after`` seconds.

    Use it as ``async for attempt in retrying(): with attempt: await call()``:
    aiobotocore methods return coroutines, which tenacity's call form would
    hand back un-awaited.
    """

    def before_sleep(state: object) -> None:
        outcome = getattr(state, "outcome", None)
        exc = outcome.exception() if outcome is not None else None
        if on_retry is not None and exc is not None:
            on_retry(exc)

    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_random_exponential(multiplier=0.5, max=max_wait),
        stop=stop_after_delay(give_up_after),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
