"""The retry policy: transient errors retried, programmer errors not."""

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from bbbcore import aws


def client_error(code: str, status: int) -> ClientError:
    meta = {"HTTPStatusCode": status, "HTTPHeaders": {}, "HostId": "", "RequestId": "r",
            "RetryAttempts": 0}  # fmt: skip
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": meta},  # type: ignore[typeddict-item]
                       "SetInstanceProtection")  # fmt: skip


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (client_error("Throttling", 400), True),
        (client_error("RequestLimitExceeded", 503), True),
        (client_error("InternalFailure", 500), True),
        (client_error("Whatever", 502), True),
        (client_error("ValidationError", 400), False),
        (client_error("AccessDenied", 403), False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (TimeoutError(), True),
        (ValueError("bug"), False),
        (KeyError("bug"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert aws.is_transient(exc) is transient


async def test_retrying_retries_transient_only() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise client_error("Throttling", 400)
        return "ok"

    async for attempt in aws.retrying(sleep=sleep):
        with attempt:
            result = await flaky()
    assert result == "ok"
    assert calls == 3
    assert len(slept) == 2

    async def invalid() -> None:
        async for attempt in aws.retrying(sleep=sleep):
            with attempt:
                raise client_error("ValidationError", 400)

    with pytest.raises(ClientError):
        await invalid()
    assert len(slept) == 2
    assert aws.error_code(client_error("Throttling", 400)) == "Throttling"
