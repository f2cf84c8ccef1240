"""bbbnode's side of the host helper's socket (HostSteps over ``helper.socket``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from bbbcore import logs
from bbbnode.hostops import MAX_MESSAGE, HostStepFailed, Request, decode_answer, encode_request

log = logs.get(__name__)

_NOT_LISTENING = (ConnectionRefusedError, FileNotFoundError)
"""The helper (or its socket unit) is not up yet: worth a few more tries."""


class HelperClient:
    """Sends each request to the helper on its own connection and waits for the answer."""

    def __init__(self, path: str, timeout: float, *, attempts: int = 5) -> None:
        self._path = path
        self._timeout = timeout
        self._attempts = attempts

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_NOT_LISTENING),
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.5, max=5),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "helper_unreachable", socket=self._path, attempt=state.attempt_number
            ),
        )
        async for attempt in retrying:
            with attempt:
                return await asyncio.open_unix_connection(self._path, limit=MAX_MESSAGE + 1)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, request: Request) -> dict[str, Any]:
        """The helper's result; HostStepInvalid or HostStepFailed as it reported them."""
        data = encode_request(request)
        try:
            reader, writer = await self._connect()
        except OSError as exc:
            raise HostStepFailed(f"cannot reach the host helper at {self._path}: {exc}") from exc
        try:
            writer.write(data)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), self._timeout)
        except TimeoutError:
            raise HostStepFailed(f"{request.op}: no answer within {self._timeout:g} s") from None
        except (OSError, ValueError) as exc:
            raise HostStepFailed(f"{request.op}: the connection failed: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not line:
            raise HostStepFailed(f"{request.op}: the helper closed the connection, no answer")
        return decode_answer(line)
