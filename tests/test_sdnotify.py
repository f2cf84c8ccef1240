"""sd_notify against real AF_UNIX datagram sockets, the way systemd listens."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bbbnode.sdnotify import Notifier, feed_watchdog


def _receive_all(sock: socket.socket) -> list[bytes]:
    # Unix datagrams are queued before sendto() returns, so a non-blocking read
    # sees everything already sent without waiting.
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096))
        except BlockingIOError:
            return messages


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound path socket standing in for /run/systemd/notify."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    """A socket in the abstract namespace, named as systemd writes it (``@name``)."""
    name = f"bbbfleet-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    yield sock, "@" + name
    sock.close()


def test_messages_reach_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})

    assert notifier.enabled
    assert notifier.ready("first collection done")
    assert notifier.status("3 meetings")
    assert notifier.watchdog()
    assert notifier.stopping()
    notifier.close()

    assert _receive_all(sock) == [
        b"READY=1\nSTATUS=first collection done",
        b"STATUS=3 meetings",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]


def test_messages_reach_an_abstract_socket(
    abstract_listener: tuple[socket.socket, str],
) -> None:
    sock, name = abstract_listener
    notifier = Notifier({"NOTIFY_SOCKET": name})

    assert notifier.ready()
    notifier.close()

    assert _receive_all(sock) == [b"READY=1"]


def test_status_stays_on_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})

    notifier.status("bbb api down\nREADY=1")
    notifier.close()

    assert _receive_all(sock) == [b"STATUS=bbb api down READY=1"]


def test_socket_is_reopened_after_close(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})

    notifier.watchdog()
    notifier.close()
    notifier.watchdog()
    notifier.close()

    assert _receive_all(sock) == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_no_op_without_notify_socket() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "60000000"})

    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.status("x")
    assert not notifier.stopping()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval() is None


def test_unsupported_socket_address_disables_notifications() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "1000000"})

    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval() is None


def test_send_errors_are_logged_once_and_never_raise(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})

    with capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog()
    assert [entry["event"] for entry in logs] == ["sd_notify_failed"]

    # systemd is back (e.g. after daemon-reexec): delivery resumes.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        with capture_logs() as logs:
            assert notifier.watchdog()
        assert [entry["event"] for entry in logs] == ["sd_notify_recovered"]
        assert _receive_all(sock) == [b"WATCHDOG=1"]
    finally:
        notifier.close()
        sock.close()


def test_full_queue_drops_instead_of_blocking(listener: tuple[socket.socket, str]) -> None:
    _sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})

    # Nobody reads the listener, as with a wedged PID 1: sends must start
    # failing (EAGAIN) instead of blocking the event loop.
    results = [notifier.watchdog() for _ in range(10_000)]
    notifier.close()

    assert results[0]
    assert not all(results)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_PID": "4242"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", **env}, pid=4242)

    assert notifier.watchdog_interval() == expected


def test_watchdog_pid_defaults_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.getpid", lambda: 777)
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "2000000"}

    assert Notifier({**env, "WATCHDOG_PID": "777"}).watchdog_interval() == 1.0
    assert Notifier({**env, "WATCHDOG_PID": "778"}).watchdog_interval() is None


class _Done(Exception):
    """Ends a feed_watchdog loop from inside the injected sleep."""


async def test_feed_watchdog_pings_only_while_healthy(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    health = iter([True, True, False, False, True])
    pings_per_tick: list[int] = []
    periods: list[float] = []

    async def sleep(period: float) -> None:
        periods.append(period)
        pings_per_tick.append(len(_receive_all(sock)))
        if len(periods) == 5:
            raise _Done

    with pytest.raises(_Done):
        await feed_watchdog(notifier, lambda: next(health), interval=7.5, sleep=sleep)
    notifier.close()

    assert pings_per_tick == [1, 1, 0, 0, 1]
    assert periods == [7.5] * 5


async def test_feed_watchdog_takes_the_interval_from_systemd(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"})
    periods: list[float] = []

    async def sleep(period: float) -> None:
        periods.append(period)
        raise _Done

    with pytest.raises(_Done):
        await feed_watchdog(notifier, lambda: True, sleep=sleep)
    notifier.close()

    assert periods == [30.0]
    assert _receive_all(sock) == [b"WATCHDOG=1"]


async def test_feed_watchdog_returns_when_the_watchdog_is_off() -> None:
    slept: list[float] = []

    async def sleep(period: float) -> None:
        slept.append(period)

    await feed_watchdog(Notifier({}), lambda: True, sleep=sleep)

    assert slept == []


async def test_feed_watchdog_treats_a_failing_health_check_as_unhealthy(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})

    def healthy() -> bool:
        raise RuntimeError("snapshot missing")

    async def sleep(period: float) -> None:
        raise _Done

    with capture_logs() as logs, pytest.raises(_Done):
        await feed_watchdog(notifier, healthy, interval=1.0, sleep=sleep)
    notifier.close()

    assert _receive_all(sock) == []
    assert "sd_watchdog_health_check_failed" in [entry["event"] for entry in logs]


async def test_feed_watchdog_stops_on_cancel(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    parked = asyncio.Event()

    async def sleep(period: float) -> None:
        parked.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(feed_watchdog(notifier, lambda: True, interval=1.0, sleep=sleep))
    await parked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    notifier.close()

    assert _receive_all(sock) == [b"WATCHDOG=1"]


async def test_feed_watchdog_rejects_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        await feed_watchdog(Notifier({}), lambda: True, interval=0)
