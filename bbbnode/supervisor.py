"""Supervised tasks: a crash restarts that task with jittered backoff, never the daemon."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity import wait_exponential_jitter as _jitter

from bbbcore import logs

log = logs.get(__name__)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    on_crash: Callable[[str], None],
    initial_backoff: float = 1.0,
    max_backoff: float = 60.0,
) -> None:
    """Run ``run()`` until it returns; restart it after any exception.

    Cancellation is not an exception here (it is a BaseException) and passes
    straight through, so shutdown stays prompt.
    """

    def _crashed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        on_crash(name)
        log.error(
            "task_crashed",
            task=name,
            attempt=state.attempt_number,
            error=repr(exc),
            restart_in_s=round(state.upcoming_sleep, 2),
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(Exception),
        wait=_jitter(initial=initial_backoff, max=max_backoff),
        before_sleep=_crashed,
        reraise=True,
    ):
        with attempt:
            await run()
