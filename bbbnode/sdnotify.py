"""The sd_notify protocol (READY, STATUS, STOPPING, watchdog) without libsystemd.

systemd passes a datagram socket in ``NOTIFY_SOCKET`` (a path, or an abstract
name written with a leading ``@``) and, with ``WatchdogSec=``, the deadline in
``WATCHDOG_USEC`` for the process in ``WATCHDOG_PID``. Outside systemd every
call is a no-op, so the daemon runs the same in a terminal or a test.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

from bbbcore import logs

log = logs.get(__name__)

Sleep = Callable[[float], Awaitable[None]]


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    raw_usec = environ.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    raw_pid = environ.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            target = int(raw_pid)
        except ValueError:
            log.warning("sd_watchdog_bad_pid", watchdog_pid=raw_pid)
            return None
        # The variables leak into children that did not reset their
        # environment; the watchdog belongs to the process systemd named.
        if target != pid:
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        log.warning("sd_watchdog_bad_usec", watchdog_usec=raw_usec)
        return None
    if usec <= 0:
        return None
    # Pinging at half the deadline leaves a whole period of slack for a late
    # tick, the same margin libsystemd recommends.
    return usec / 2 / 1_000_000


class Notifier:
    """Sends sd_notify messages; does nothing when NOTIFY_SOCKET is unset.

    Send errors are logged, never raised: systemd going away (or its queue
    being full) must not take the daemon down with it.
    """

    def __init__(self, environ: Mapping[str, str], *, pid: int | None = None) -> None:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from ``environ``.

        ``pid`` is the process the watchdog must belong to (this one by default).
        """
        raw = environ.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            # e.g. vsock: addresses from newer systemd; not used on a BBB host.
            log.warning("sd_notify_unsupported_socket", notify_socket=raw)
        own_pid = os.getpid() if pid is None else pid
        self._watchdog = _watchdog_interval(environ, own_pid) if self._address is not None else None
        self._sock: socket.socket | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to talk to."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete, optionally with a status line."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.send("\n".join(fields))

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.send(_status_field(text))

    def stopping(self) -> bool:
        """Tell systemd a graceful stop has begun."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Feed the watchdog once."""
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or None when the watchdog is not ours."""
        return self._watchdog

    def send(self, message: str) -> bool:
        """Send one raw notification; True if it left, False if disabled or failed."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # A wedged PID 1 must not block the event loop: a full queue
                # drops this message instead, and the next one tries again.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify_failed", error=str(exc), kind=message.split("=", 1)[0])
                self._failing = True
            return False
        if self._failing:
            log.info("sd_notify_recovered")
            self._failing = False
        return True

    def close(self) -> None:
        """Release the socket; later sends open a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_field(text: str) -> str:
    # A newline would end the field and start a bogus assignment.
    return "STATUS=" + " ".join(text.splitlines())


async def feed_watchdog(
    notifier: Notifier,
    healthy: Callable[[], bool],
    *,
    interval: float | None = None,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Send WATCHDOG=1 every ``interval`` seconds while ``healthy()`` is true.

    While unhealthy the pings stop, so systemd restarts a daemon whose collector
    is wedged; they resume if health returns before the deadline. ``interval``
    defaults to the notifier's; without one this returns at once. Runs until
    cancelled.
    """
    period = notifier.watchdog_interval() if interval is None else interval
    if period is None:
        log.info("sd_watchdog_disabled")
        return
    if period <= 0:
        raise ValueError(f"watchdog interval must be positive, got {period}")
    withheld = False
    while True:
        if _is_healthy(healthy):
            notifier.watchdog()
            if withheld:
                log.info("sd_watchdog_resumed")
                withheld = False
        elif not withheld:
            log.warning("sd_watchdog_withheld", interval=period)
            withheld = True
        await sleep(period)


def _is_healthy(healthy: Callable[[], bool]) -> bool:
    try:
        return bool(healthy())
    except Exception:
        # A broken health check is not evidence of health.
        log.warning("sd_watchdog_health_check_failed", exc_info=True)
        return False
