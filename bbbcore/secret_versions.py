"""One Secrets Manager secret read and written by version (AWSCURRENT).

Secrets Manager keeps every value as a version; PutSecretValue makes the new
one AWSCURRENT and the previous one AWSPREVIOUS (API reference, PutSecretValue).
Readers that only need to know whether the value changed ask DescribeSecret,
whose ``VersionIdsToStages`` names the AWSCURRENT version without handing out
the value. A secret created without a value (CreateSecret without SecretString:
"If you include SecretString or SecretBinary then Secrets Manager creates an
initial secret version") has no AWSCURRENT version until the first put; that
is "no value yet", distinct from a secret that does not exist, which is an error.

Values are never logged; errors name the secret and AWS's error code only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from bbbcore import aws, logs

if TYPE_CHECKING:
    from types_aiobotocore_secretsmanager.client import SecretsManagerClient

log = logs.get(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
CURRENT = "AWSCURRENT"


@dataclass(frozen=True, slots=True)
class SecretValue:
    """One version of a secret."""

    version_id: str
    text: str = field(repr=False)


def current_version_of(versions_to_stages: dict[str, list[str]] | None) -> str | None:
    """The version id labelled AWSCURRENT in DescribeSecret's ``VersionIdsToStages``."""
    for version_id, stages in (versions_to_stages or {}).items():
        if CURRENT in stages:
            return version_id
    return None


class VersionedSecret:
    """A secret read by its AWSCURRENT version; transient AWS errors retried."""

    def __init__(
        self,
        client: SecretsManagerClient,
        secret_id: str,
        *,
        give_up_after: float = 300.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._client = client
        self.secret_id = secret_id
        self._give_up_after = give_up_after
        self._sleep = sleep

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        def on_retry(exc: BaseException) -> None:
            log.info("secret_call_retry", secret=self.secret_id, error_code=aws.error_code(exc))

        retrying = aws.retrying(give_up_after=self._give_up_after, on_retry=on_retry)
        # Attempts iterated, not tenacity's call form: that would not await
        # aiobotocore's methods (plain functions returning coroutines).
        async for attempt in retrying.copy(sleep=self._sleep):
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def current_version(self) -> str | None:
        """The AWSCURRENT version id, None while the secret has no value; the value is not read."""
        answer = await self._retry(lambda: self._client.describe_secret(SecretId=self.secret_id))
        return current_version_of(answer.get("VersionIdsToStages"))

    async def read(self) -> SecretValue | None:
        """The AWSCURRENT value, None while the secret has none."""
        version = await self.current_version()
        if version is None:
            return None
        answer = await self._retry(
            lambda: self._client.get_secret_value(SecretId=self.secret_id, VersionId=version)
        )
        text = answer.get("SecretString")
        if text is None:
            raise ValueError(f"secret {self.secret_id} holds binary data, not text")
        return SecretValue(str(answer.get("VersionId", version)), text)

    async def put(self, text: str, token: str) -> str:
        """Store ``text`` as the new AWSCURRENT version; returns its id.

        ``token`` (ClientRequestToken) makes a retried put of the same value one
        version, not two.
        """
        answer = await self._retry(
            lambda: self._client.put_secret_value(
                SecretId=self.secret_id, SecretString=text, ClientRequestToken=token
            )
        )
        version_id = str(answer["VersionId"])
        log.info("secret_version_put", secret=self.secret_id, version_id=version_id)
        return version_id
