"""Resolve a configured secret: plain text, ``file:/path``, or a Secrets Manager ARN.

* plain text is used as it is;
* ``file:/run/secrets/scalelite`` is the file's content, surrounding whitespace
  stripped (a trailing newline from ``echo`` is never part of a secret);
* ``arn:aws:secretsmanager:<region>:<account>:secret:<name>`` is the secret's
  SecretString; when that is a JSON object with one key, or the ARN ends in
  ``#key``, the value of that key.

Resolved values are never logged, and no error carries one: errors name the
setting and where the value was looked for (path or ARN), nothing else.

The boto stack is imported only when an ARN is resolved: bbbnode in
exporter-only mode reads its BBB secret through here and must not load it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bbbcore import logs

if TYPE_CHECKING:
    from botocore.config import Config
    from types_aiobotocore_secretsmanager.client import SecretsManagerClient

log = logs.get(__name__)

Sleep = Callable[[float], Awaitable[None]]
SessionFactory = Callable[[str], Any]

FILE_PREFIX = "file:"
# Other partitions (China, GovCloud) spell the ARN with their own partition name.
_ARN_PARTITIONS = ("arn:aws:", "arn:aws-cn:", "arn:aws-us-gov:")


class SecretError(ValueError):
    """A secret could not be resolved; the message names the setting, never the value."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a configured secret comes from."""

    kind: Literal["plain", "file", "secretsmanager"]
    location: str = ""
    """The path or the ARN (without ``#key``); empty for plain text."""
    region: str = ""
    json_key: str | None = None


def parse(value: str) -> SecretRef:
    """Classify a configured value without resolving it."""
    if value.startswith(FILE_PREFIX):
        return SecretRef("file", value[len(FILE_PREFIX) :])
    if value.startswith(_ARN_PARTITIONS) and ":secretsmanager:" in value:
        arn, sep, key = value.partition("#")
        parts = arn.split(":")
        region = parts[3] if len(parts) > 3 else ""
        return SecretRef("secretsmanager", arn, region, key if sep else None)
    return SecretRef("plain")


def select(secret_string: str, json_key: str | None, *, setting: str, arn: str) -> str:
    """The part of a SecretString that is the secret (pure; raises SecretError)."""
    try:
        document = json.loads(secret_string)
    except ValueError:
        document = None
    if json_key is not None:
        if not isinstance(document, dict):
            raise SecretError(
                f"{setting}: secret {arn} is not a JSON object, but #{json_key} asks for a key"
            )
        if json_key not in document:
            raise SecretError(f"{setting}: secret {arn} has no key {json_key!r}")
        return _scalar(document[json_key], setting=setting, arn=arn, key=json_key)
    if isinstance(document, dict):
        if len(document) != 1:
            raise SecretError(
                f"{setting}: secret {arn} is a JSON object with {len(document)} keys;"
                " append #KEY to the ARN to pick one"
            )
        ((only_key, only_value),) = document.items()
        return _scalar(only_value, setting=setting, arn=arn, key=str(only_key))
    return secret_string


def _scalar(value: object, *, setting: str, arn: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SecretError(f"{setting}: key {key!r} of secret {arn} is not a string")
    return str(value)


def _read_file(path: Path, setting: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretError(f"{setting}: cannot read secret file {path}: {reason}") from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        # The decode error would quote the offending bytes: part of the secret.
        raise SecretError(f"{setting}: secret file {path} is not UTF-8 text") from None
    if not text:
        raise SecretError(f"{setting}: secret file {path} is empty")
    return text


async def _fetch(
    ref: SecretRef,
    *,
    setting: str,
    session_factory: SessionFactory | None,
    config: Config | None,
    give_up_after: float,
    sleep: Sleep,
) -> str:
    from botocore.exceptions import ClientError

    from bbbcore import aws

    def on_retry(exc: BaseException) -> None:
        log.info("secret_fetch_retry", setting=setting, error_code=aws.error_code(exc))

    client: SecretsManagerClient
    try:
        async with (session_factory or aws.session)(ref.region).client(
            "secretsmanager", region_name=ref.region, config=config or aws.client_config()
        ) as client:
            retrying = aws.retrying(give_up_after=give_up_after, on_retry=on_retry).copy(
                sleep=sleep
            )
            secret_string: str | None = None
            # Attempts iterated, not tenacity's call form: that would not await
            # aiobotocore's methods (plain functions returning coroutines).
            async for attempt in retrying:
                with attempt:
                    answer = await client.get_secret_value(SecretId=ref.location)
                    secret_string = answer.get("SecretString")
    except ClientError as exc:
        code = aws.error_code(exc) or "error"
        raise SecretError(f"{setting}: cannot read secret {ref.location}: {code}") from None
    if secret_string is None:
        raise SecretError(f"{setting}: secret {ref.location} has no SecretString (binary secret?)")
    value = select(secret_string, ref.json_key, setting=setting, arn=ref.location)
    if not value:
        raise SecretError(f"{setting}: secret {ref.location} is empty")
    return value


async def resolve(
    value: str,
    *,
    setting: str,
    session_factory: SessionFactory | None = None,
    config: Config | None = None,
    give_up_after: float = 300.0,
    sleep: Sleep = asyncio.sleep,
) -> str:
    """The secret a configured ``value`` stands for; raises SecretError naming ``setting``.

    ``session_factory(region)`` gives the aioboto3 session for a Secrets Manager ARN
    (default: ``bbbcore.aws.session``).
    """
    ref = parse(value)
    if ref.kind == "plain":
        return value
    if ref.kind == "file":
        if not ref.location:
            raise SecretError(f"{setting}: 'file:' needs a path")
        text = await asyncio.to_thread(_read_file, Path(ref.location), setting)
        log.info("secret_resolved", setting=setting, source="file", path=ref.location)
        return text
    if not ref.region:
        raise SecretError(f"{setting}: {ref.location} is not a valid Secrets Manager ARN")
    if ref.json_key == "":
        raise SecretError(f"{setting}: {ref.location}# names no key")
    resolved = await _fetch(
        ref,
        setting=setting,
        session_factory=session_factory,
        config=config,
        give_up_after=give_up_after,
        sleep=sleep,
    )
    log.info("secret_resolved", setting=setting, source="secretsmanager", arn=ref.location)
    return resolved
