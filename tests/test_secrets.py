"""Secret resolution: plain, file:, Secrets Manager ARNs in moto; values never in errors or logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from bbbcore import aws
from bbbcore.secrets import SecretError, SecretRef, parse, resolve, select
from bbbsim.lifecycle_layer import LifecycleLayer

if TYPE_CHECKING:
    from types_aiobotocore_secretsmanager.client import SecretsManagerClient

VALUE = "s3cr3t-Value-that-must-never-leak"
SETTING = "scalelite.secret"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def no_leak(text: str) -> None:
    assert VALUE not in text
    assert VALUE[:8] not in text


def test_parse() -> None:
    assert parse("plain words") == SecretRef("plain")
    assert parse("file:/run/secrets/x") == SecretRef("file", "/run/secrets/x")
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bbb/scalelite-AbCdEf"
    assert parse(arn) == SecretRef("secretsmanager", arn, "eu-west-1", None)
    assert parse(arn + "#password") == SecretRef("secretsmanager", arn, "eu-west-1", "password")
    china = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x-AbCdEf"
    assert parse(china).region == "cn-north-1"
    # Another service's ARN is not a reference: it is taken as the text it is.
    assert parse("arn:aws:s3:::bucket").kind == "plain"


def test_select() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:1:secret:x"
    assert select(VALUE, None, setting=SETTING, arn=arn) == VALUE
    assert select(json.dumps({"k": VALUE}), None, setting=SETTING, arn=arn) == VALUE
    assert select(json.dumps({"a": "1", "b": VALUE}), "b", setting=SETTING, arn=arn) == VALUE
    assert select(json.dumps({"port": 5432}), None, setting=SETTING, arn=arn) == "5432"
    # JSON that is not an object is a plain secret.
    assert select('"quoted"', None, setting=SETTING, arn=arn) == '"quoted"'
    failures = [
        (json.dumps({"a": VALUE, "b": VALUE}), None, "2 keys"),
        (json.dumps({"a": VALUE}), "b", "no key 'b'"),
        (VALUE, "a", "not a JSON object"),
        (json.dumps({"a": {"nested": VALUE}}), None, "not a string"),
        (json.dumps({"a": True}), None, "not a string"),
    ]
    for secret_string, key, message in failures:
        with pytest.raises(SecretError, match=message) as raised:
            select(secret_string, key, setting=SETTING, arn=arn)
        assert SETTING in str(raised.value)
        no_leak(str(raised.value))


async def test_plain_value_is_used_as_is() -> None:
    assert await resolve(VALUE, setting=SETTING) == VALUE
    assert await resolve("  spaced  ", setting=SETTING) == "  spaced  "


async def test_file_content_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(f"\n  {VALUE}\n")
    with capture_logs() as logs:
        assert await resolve(f"file:{path}", setting=SETTING) == VALUE
    no_leak(repr(logs))
    assert any(entry.get("setting") == SETTING for entry in logs)


async def test_file_errors_name_setting_and_path_never_the_value(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + VALUE.encode())
    cases = {
        tmp_path / "missing": "No such file",
        tmp_path: "Is a directory",
        empty: "is empty",
        binary: "not UTF-8",
    }
    for path, reason in cases.items():
        with pytest.raises(SecretError, match=reason) as raised:
            await resolve(f"file:{path}", setting=SETTING)
        message = str(raised.value)
        assert SETTING in message
        assert str(path) in message
        no_leak(message)
        # No chained exception that could carry the content into a traceback.
        assert raised.value.__cause__ is None
    with pytest.raises(SecretError, match="needs a path"):
        await resolve("file:", setting=SETTING)


@pytest.mark.integration
async def test_secrets_manager_arns(
    aws_session: Any, aws_endpoint: str, lifecycle_layer: LifecycleLayer
) -> None:
    client: SecretsManagerClient
    async with aws_session.client("secretsmanager") as client:
        plain = (await client.create_secret(Name="bbb/plain", SecretString=VALUE))["ARN"]
        single = (
            await client.create_secret(Name="bbb/single", SecretString=json.dumps({"k": VALUE}))
        )["ARN"]
        several = (
            await client.create_secret(
                Name="bbb/several",
                SecretString=json.dumps({"user": "scalelite", "password": VALUE}),
            )
        )["ARN"]
        binary = (await client.create_secret(Name="bbb/binary", SecretBinary=b"\x00\x01"))["ARN"]

    with capture_logs() as logs:
        assert await resolve(plain, setting=SETTING) == VALUE
        assert await resolve(single, setting=SETTING) == VALUE
        assert await resolve(f"{several}#password", setting=SETTING) == VALUE
        assert await resolve(f"{several}#user", setting=SETTING) == "scalelite"
    no_leak(repr(logs))

    missing = plain.replace("bbb/plain", "bbb/nothing")
    failures = [
        (several, "append #KEY"),
        (f"{several}#nope", "no key 'nope'"),
        (f"{several}#", "names no key"),
        (binary, "no SecretString"),
        (missing, "ResourceNotFoundException"),
    ]
    for value, message in failures:
        with pytest.raises(SecretError, match=message) as raised:
            await resolve(value, setting=SETTING)
        assert SETTING in str(raised.value)
        no_leak(str(raised.value))


@pytest.mark.integration
async def test_throttling_is_retried(
    aws_session: Any, aws_endpoint: str, lifecycle_layer: LifecycleLayer
) -> None:
    client: SecretsManagerClient
    async with aws_session.client("secretsmanager") as client:
        arn = (await client.create_secret(Name="bbb/throttled", SecretString=VALUE))["ARN"]
    lifecycle_layer.inject_fault("throttling", "GetSecretValue", count=2)
    lifecycle_layer.inject_fault("http503", "GetSecretValue", count=1)
    sleeps = Sleeps()
    # One attempt per botocore call: our whole-operation retry must carry it.
    value = await resolve(
        arn, setting=SETTING, config=aws.client_config(max_attempts=1), sleep=sleeps
    )
    assert value == VALUE
    assert len(sleeps.delays) == 3

    lifecycle_layer.inject_fault("throttling", "GetSecretValue", count=None)
    with pytest.raises(SecretError, match="Throttling"):
        await resolve(
            arn,
            setting=SETTING,
            config=aws.client_config(max_attempts=1),
            sleep=sleeps,
            give_up_after=0.0,
        )
