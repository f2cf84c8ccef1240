"""The host helper: its fixed set of typed requests, its socket, and the steps it carries out.

The server runs on a real unix socket in a temporary directory: in this
process for the protocol's cases, and as the real ``bbbnode host-helper``
program for its own socket, systemd's socket activation and SIGTERM.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from bbbnode import hostops
from bbbnode.helper import Helper
from bbbnode.helper_client import HelperClient
from bbbnode.hostops import (
    HostConfigRequest,
    HostStepFailed,
    HostStepInvalid,
    InstallCertificateRequest,
    MountEfsRequest,
    Request,
)
from bbbnode.hoststeps import LocalHostSteps
from bbbnode.settings import NodeSettings
from bbbsim.image_tree import make_host
from tests.test_netstate import Kernel

SECRET = "helper-turn-secret-0123"
CONFIG = HostConfigRequest(
    fqdn="i-0abc.bbb.example.org",
    public_ip="198.51.100.7",
    private_ip="10.0.3.21",
    turn_secret=SecretStr(SECRET),
)


class FakeSteps:
    """Records requests; answers, fails or waits as told."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.error: Exception | None = None
        self.delay = 0.0
        self.running = 0
        self.most_at_once = 0

    async def run(self, request: Request) -> dict[str, Any]:
        self.requests.append(request)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.error is not None:
                raise self.error
            return {"op": request.op}
        finally:
            self.running -= 1


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Path, FakeSteps]]:
    steps = FakeSteps()
    path = tmp_path / "helper.sock"
    server = await asyncio.start_unix_server(
        Helper(steps).handle, path=str(path), limit=hostops.MAX_MESSAGE + 1
    )
    try:
        yield path, steps
    finally:
        server.close()
        await server.wait_closed()


async def raw(path: Path, data: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    if not data.endswith(b"\n"):
        writer.write_eof()
    await writer.drain()
    answer = await reader.readline()
    writer.close()
    result: dict[str, Any] = json.loads(answer)
    return result


async def test_a_request_crosses_the_socket_with_its_secret_and_is_logged_without(
    served: tuple[Path, FakeSteps],
) -> None:
    path, steps = served
    with capture_logs() as logs:
        result = await HelperClient(str(path), timeout=5).run(CONFIG)

    assert result == {"op": "host_config"}
    (got,) = steps.requests
    assert got == CONFIG
    assert isinstance(got, HostConfigRequest)
    assert got.turn_secret is not None
    assert got.turn_secret.get_secret_value() == SECRET
    (event,) = [e for e in logs if e["event"] == "helper_request"]
    assert event["op"] == "host_config"
    assert event["outcome"] == "ok"
    assert event["peer_uid"] == os.getuid()
    assert SECRET not in repr(logs)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"op": "run_command", "argv": ["sh", "-c", "id"]}\n', "unknown operation"),
        (b"not json\n", "not a JSON object"),
        (b'["host_config"]\n', "not a JSON object"),
        (b'{"op": "mount_efs", "region": "eu-central-1", "mount_point": "/etc"}\n', "mount_point"),
        (b'{"op": "mount_efs", "region": "eu-central-1; reboot"}\n', "region"),
        (
            b'{"op": "host_config", "fqdn": "a.example.org", "public_ip": "1.2.3.4/8",'
            b' "private_ip": "10.0.0.1"}\n',
            "public_ip",
        ),
        (b'{"op": "mount_efs", "region": "eu-central-1"}', "no complete request line"),
        (b'{"op": "mount_efs", "region": "' + b"x" * hostops.MAX_MESSAGE + b'"}\n', "limit"),
    ],
)
async def test_anything_but_a_well_formed_known_request_is_refused(
    served: tuple[Path, FakeSteps], data: bytes, problem: str
) -> None:
    path, steps = served

    answer = await raw(path, data)

    assert answer["ok"] is False
    assert answer["kind"] == "invalid"
    assert problem in answer["error"]
    assert steps.requests == []


async def test_failures_come_back_as_failures_and_the_helper_stays_up(
    served: tuple[Path, FakeSteps],
) -> None:
    path, steps = served
    client = HelperClient(str(path), timeout=5)
    steps.error = HostStepFailed("freeswitch: Job for freeswitch.service failed.")
    with pytest.raises(HostStepFailed, match=r"freeswitch\.service failed"):
        await client.run(CONFIG)
    steps.error = HostStepInvalid("efs is not enabled")
    with pytest.raises(HostStepInvalid, match="efs is not enabled"):
        await client.run(MountEfsRequest(region="eu-central-1"))
    steps.error = RuntimeError("a bug")
    with capture_logs(), pytest.raises(HostStepFailed, match="RuntimeError: a bug"):
        await client.run(CONFIG)
    steps.error = None
    assert await client.run(CONFIG) == {"op": "host_config"}


async def test_requests_run_one_at_a_time(served: tuple[Path, FakeSteps]) -> None:
    path, steps = served
    steps.delay = 0.05
    client = HelperClient(str(path), timeout=5)

    await asyncio.gather(*(client.run(CONFIG) for _ in range(4)))

    assert len(steps.requests) == 4
    assert steps.most_at_once == 1


async def test_the_client_without_a_helper(tmp_path: Path) -> None:
    client = HelperClient(str(tmp_path / "missing.sock"), timeout=1, attempts=2)
    with pytest.raises(HostStepFailed, match="cannot reach the host helper"):
        await client.run(CONFIG)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    path = tmp_path / "rude.sock"
    server = await asyncio.start_unix_server(hang_up, path=str(path))
    try:
        with pytest.raises(HostStepFailed, match="no answer"):
            await HelperClient(str(path), timeout=1).run(CONFIG)
    finally:
        server.close()
        await server.wait_closed()


def test_wire_format_keeps_secrets_out_of_reprs() -> None:
    cert = InstallCertificateRequest(fullchain_pem="CHAIN", key_pem=SecretStr("KEYPEM"))
    assert "KEYPEM" not in repr(cert)
    data = hostops.encode_request(cert)
    assert b'"key_pem":"KEYPEM"' in data
    assert hostops.decode_request(data) == cert
    with pytest.raises(HostStepFailed, match="no outcome"):
        hostops.decode_answer(b"{}")


# --- the real program -----------------------------------------------------------------------


def _helper_env(tmp_path: Path, group: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BBBNODE_")}
    env.update(
        {
            "BBBNODE_HELPER__SOCKET": str(tmp_path / "helper.sock"),
            "BBBNODE_HELPER__SOCKET_GROUP": group,
            "BBBNODE_HOSTCONFIG__ROOT": str(tmp_path / "root"),
            "BBBNODE_HOST__COMMANDS": "log",
            "BBBNODE_HOST__COMMAND_LOG": str(tmp_path / "commands.jsonl"),
            "BBBNODE_EFS__ENABLED": "false",
        }
    )
    return env


async def _wait_for_socket(path: Path, process: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        if process.returncode is not None:
            raise AssertionError(f"host-helper exited {process.returncode}")
        if await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no socket")


async def test_the_program_makes_its_socket_for_the_group_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    make_host(tmp_path / "root")
    env = _helper_env(tmp_path, group)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bbbnode", "host-helper", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    socket_path = tmp_path / "helper.sock"
    try:
        await _wait_for_socket(socket_path, process)
        info = socket_path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert info.st_mode & 0o777 == 0o660
        assert info.st_gid == os.getgid()
        client = HelperClient(str(socket_path), timeout=30)
        result = await client.run(CONFIG)
        assert str(tmp_path / "root/etc/turnserver.conf") in result["changed"]
        assert (
            f"static-auth-secret={SECRET}\n" in (tmp_path / "root/etc/turnserver.conf").read_text()
        )
        with pytest.raises(HostStepInvalid, match="efs is not enabled"):
            await client.run(MountEfsRequest(region="eu-central-1"))
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert b'"event": "helper_stopped"' in err
    assert not socket_path.exists()


async def test_the_program_refuses_an_unknown_group(tmp_path: Path) -> None:
    env = _helper_env(tmp_path, "no-such-group-bbbfleet")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bbbnode", "host-helper", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert b"helper.socket_group" in err


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is missing"
)
async def test_socket_activation_serves_the_socket_systemd_passes(tmp_path: Path) -> None:
    """As bbbnode-host.socket does: systemd listens, starts the helper on the first connection."""
    path = tmp_path / "activated.sock"
    env = _helper_env(tmp_path, "no-such-group-bbbfleet")  # unused: systemd made the socket
    process = await asyncio.create_subprocess_exec(
        "systemd-socket-activate", "-l", str(path), sys.executable, "-m", "bbbnode", "host-helper",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _wait_for_socket(path, process)
        with pytest.raises(HostStepInvalid, match="efs is not enabled"):
            await HelperClient(str(path), timeout=30).run(MountEfsRequest(region="eu-central-1"))
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert b'"event": "helper_started"' in err
    assert not (tmp_path / "helper.sock").exists()


# --- the steps themselves -------------------------------------------------------------------


async def test_host_config_puts_lo_and_the_rule_in_place_before_freeswitch_restarts(
    tmp_path: Path,
) -> None:
    make_host(tmp_path)
    kernel = Kernel()
    runner = kernel.runner()
    steps = LocalHostSteps(NodeSettings(), runner, root=tmp_path)

    result = await steps.run(CONFIG)

    assert "freeswitch" in result["restarted"]
    add_lo = runner.calls.index(("ip", "addr", "add", "198.51.100.7/32", "dev", "lo"))
    assert add_lo < runner.calls.index(("systemctl", "restart", "freeswitch"))
    assert [r.public_ip for r in kernel.hairpins()] == ["198.51.100.7"]
    coturn = (tmp_path / "etc/turnserver.conf").read_text()
    assert f"static-auth-secret={SECRET}\n" in coturn
    assert "pkey=/etc/bbbfleet/tls/turnserver-privkey.pem\n" in coturn


async def test_without_a_secret_coturns_own_is_kept(tmp_path: Path) -> None:
    make_host(tmp_path)
    steps = LocalHostSteps(NodeSettings(), Kernel().runner(), root=tmp_path, files_only=True)
    await steps.run(CONFIG.model_copy(update={"turn_secret": None}))
    coturn = (tmp_path / "etc/turnserver.conf").read_text()
    assert "static-auth-secret=oldsecretfromtheimage\n" in coturn


async def test_refusals_of_the_steps(tmp_path: Path) -> None:
    steps = LocalHostSteps(NodeSettings(), Kernel().runner(), root=tmp_path)
    with pytest.raises(HostStepInvalid, match="no readable certificate"):
        await steps.run(InstallCertificateRequest(fullchain_pem="x", key_pem=SecretStr("y")))
    with pytest.raises(HostStepInvalid, match="efs is not enabled"):
        await steps.run(MountEfsRequest(region="eu-central-1"))
    files_only = LocalHostSteps(NodeSettings(), Kernel().runner(), root=tmp_path, files_only=True)
    with pytest.raises(HostStepInvalid, match="not with --root"):
        await files_only.run(MountEfsRequest(region="eu-central-1"))
    with pytest.raises(HostStepFailed, match="nginx site is missing"):
        await steps.run(CONFIG)
