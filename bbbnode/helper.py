"""``bbbnode host-helper``: the privileged half of bbbnode, behind a unix socket.

systemd starts it from ``bbbnode-host.socket`` (root:bbbnode 0660, so only root
and the bbbnode group can connect); without socket activation it creates the
socket itself from ``helper.socket`` and ``helper.socket_group``. Each
connection carries one request of the fixed set in bbbnode/hostops.py; requests
run one at a time, because host configuration and certificate installation
both edit nginx. Every request is logged with the peer's uid and pid (from
SO_PEERCRED) and its outcome; nothing secret is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import signal
import socket
import stat
import struct
import time
from collections.abc import Mapping

from bbbcore import logs
from bbbcore.config import EXIT_CONFIG
from bbbnode.hostops import (
    MAX_MESSAGE,
    HostStepFailed,
    HostStepInvalid,
    HostSteps,
    decode_request,
    encode_error,
    encode_result,
)
from bbbnode.sdnotify import Notifier
from bbbnode.settings import HelperSettings

log = logs.get(__name__)

READ_TIMEOUT = 30.0
"""Seconds a client may take to send its request line."""
SD_LISTEN_FDS_START = 3


class HelperConfigError(ValueError):
    """The socket cannot be set up as configured; the message names the key."""


def _activated(environ: Mapping[str, str]) -> socket.socket | None:
    """The listening socket systemd passed (sd_listen_fds), if it passed one to us."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or environ.get("LISTEN_FDS") != "1":
        return None
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise HelperConfigError("the socket systemd passed is not a unix stream socket")
    sock.setblocking(False)
    return sock


def _own_socket(settings: HelperSettings) -> socket.socket:
    """A listening socket at helper.socket, root:socket_group 0660."""
    if not settings.socket:
        raise HelperConfigError("helper.socket (BBBNODE_HELPER__SOCKET) is empty")
    try:
        gid = grp.getgrnam(settings.socket_group).gr_gid
    except KeyError:
        key = "helper.socket_group (BBBNODE_HELPER__SOCKET_GROUP)"
        raise HelperConfigError(f"{key}: no group {settings.socket_group!r}") from None
    path = settings.socket
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise HelperConfigError(f"helper.socket: {path} exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chown(path, -1, gid)
    os.chmod(path, 0o660)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _peer(writer: asyncio.StreamWriter) -> tuple[int, int]:
    """(pid, uid) of the connected process."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return -1, -1
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


class Helper:
    """Answers requests on a listening socket, one operation at a time."""

    def __init__(self, steps: HostSteps) -> None:
        self._steps = steps
        self._lock = asyncio.Lock()
        self._running: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: read a request line, carry it out, answer, close."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        started = time.monotonic()
        pid, uid = _peer(writer)
        op = "unknown"
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                if not line:
                    return  # a client that only checked the socket is there
                if not line.endswith(b"\n"):
                    raise HostStepInvalid("no complete request line")
                request = decode_request(line)
                op = request.op
                async with self._lock:
                    answer = encode_result(await self._steps.run(request))
                outcome = "ok"
            except (ValueError, TimeoutError) as exc:
                # LimitOverrunError and over-long lines land here too.
                failure = exc if isinstance(exc, HostStepInvalid) else HostStepInvalid(str(exc))
                answer, outcome = encode_error(failure), "invalid"
            except HostStepFailed as exc:
                answer, outcome = encode_error(exc), "failed"
            except Exception as exc:
                log.exception("helper_request_crashed", op=op)
                answer = encode_error(HostStepFailed(f"{type(exc).__name__}: {exc}"))
                outcome = "failed"
            log.info(
                "helper_request", op=op, outcome=outcome, peer_uid=uid, peer_pid=pid,
                seconds=round(time.monotonic() - started, 3),
            )  # fmt: skip
            with contextlib.suppress(ConnectionError):
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if task is not None:
                self._running.discard(task)

    async def drain(self) -> None:
        """Wait for the requests under way (SIGTERM lets them finish)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


async def serve(
    settings: HelperSettings, steps: HostSteps, environ: Mapping[str, str] = os.environ
) -> int:
    """Serve until SIGTERM; returns the exit code (2: the socket cannot be set up)."""
    try:
        activated = _activated(environ)
        sock = activated or _own_socket(settings)
    except (HelperConfigError, OSError) as exc:
        log.error("config_invalid", key="helper.socket", problem=str(exc))
        return EXIT_CONFIG
    notifier = Notifier(environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    helper = Helper(steps)
    server = await asyncio.start_unix_server(helper.handle, sock=sock, limit=MAX_MESSAGE + 1)
    log.info("helper_started", socket=str(sock.getsockname()))
    notifier.ready(status="serving")
    await stop.wait()
    log.info("helper_stopping")
    notifier.stopping()
    server.close()
    await helper.drain()
    await server.wait_closed()
    if activated is None:
        # Our own socket; systemd's stays with systemd.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(settings.socket)
    log.info("helper_stopped")
    return 0
