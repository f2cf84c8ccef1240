"""The real bbbnode process: systemd readiness, scraped by a real Prometheus, clean SIGTERM."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bbbsim.host import EmulatedHost, start_host
from bbbsim.node_process import free_port, node_env, start_node
from tests.processes import http_text, prometheus, prometheus_available, wait_for

pytestmark = pytest.mark.integration
SECRET = "node-process-secret-42"


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[EmulatedHost]:
    emulated = await start_host("i-0node0000000001", tmp_path, SECRET)
    yield emulated
    await emulated.stop()


async def test_ready_metrics_logs_and_sigterm(host: EmulatedHost, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    host.bbb.add_meeting("lecture", 30, cameras=2, voice=5, listeners=25)
    host.tick()
    port = free_port()
    env = node_env(host, SECRET, port, poll=0.2)
    env["NOTIFY_SOCKET"] = str(notify_path)
    node = await start_node(env, port, tmp_path / "node.log")
    messages: list[str] = []
    try:
        loop = asyncio.get_running_loop()

        async def ready() -> bool:
            assert node.process.returncode is None, node.log_path.read_text()
            try:
                data = await asyncio.wait_for(loop.sock_recv(notify, 4096), 0.2)
            except TimeoutError:
                return False
            messages.append(data.decode())
            return "READY=1" in data.decode()

        await wait_for(ready, what="READY=1 from bbbnode")
        status, text = await http_text(node.metrics_url)
        assert status == 200
        assert "bbb_meetings 1.0" in text
        assert "bbb_meetings_participants 30.0" in text
        assert 'bbbnode_info{instance_id="i-0node0000000001"' in text
        if shutil.which("promtool"):
            checked = await asyncio.to_thread(
                subprocess.run,
                ["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                check=False,
            )  # fmt: skip
            assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        code = await node.stop()
        notify.close()
    assert code == 0
    lines = [json.loads(line) for line in node.log_path.read_text().splitlines() if line.strip()]
    assert lines, "bbbnode logged nothing"
    for line in lines:
        assert {"event", "level", "timestamp"} <= set(line)
    events = [line["event"] for line in lines]
    assert "ready" in events
    assert events[-1] == "stopped"
    assert SECRET not in node.log_path.read_text()


async def test_bad_config_exits_2_and_missing_secret(host: EmulatedHost, tmp_path: Path) -> None:
    port = free_port()
    env = node_env(host, SECRET, port, poll=0.2)
    env["BBBNODE_BBB__POLL_INTERVAL"] = "zero"
    node = await start_node(env, port, tmp_path / "bad.log")
    assert await node.process.wait() == 2
    assert "BBBNODE_BBB__POLL_INTERVAL" in node.log_path.read_text()

    env = node_env(host, SECRET, port, poll=0.2)
    del env["BBBNODE_BBB__SECRET"]
    node = await start_node(env, port, tmp_path / "nosecret.log")
    assert await node.process.wait() == 2
    assert "BBBNODE_BBB__SECRET" in node.log_path.read_text()


async def test_secret_from_properties_file(host: EmulatedHost, tmp_path: Path) -> None:
    props = tmp_path / "bbb-web.properties"
    props.write_text(f"securitySalt={SECRET}\n")
    port = free_port()
    env = node_env(host, SECRET, port, poll=0.2)
    del env["BBBNODE_BBB__SECRET"]
    env["BBBNODE_BBB__PROPERTIES_FILES"] = json.dumps([str(props)])
    node = await start_node(env, port, tmp_path / "props.log")
    try:

        async def up() -> bool:
            assert node.process.returncode is None, node.log_path.read_text()
            status, text = await http_text(node.metrics_url)
            return status == 200 and "bbb_api_up 1.0" in text

        await wait_for(up, what="bbb_api_up 1 with the secret from the properties file")
    finally:
        assert await node.stop() == 0


async def test_sha512_only_host_is_read_with_sha512(tmp_path: Path) -> None:
    """A host restricted to sha512 in bbb-web.properties (the docs' own example,
    docs.bigbluebutton.org/development/api) refuses sha256 (GetChecksumValidator.java:68-80
    at 4b5d4e9); bbbnode reads the list beside securitySalt and is not blind."""
    props = tmp_path / "bbb-web.properties"
    props.write_text(f"securitySalt={SECRET}\nsupportedChecksumAlgorithms=sha512\n")
    host = await start_host("i-0node0000000512", tmp_path, "unused", properties=props)
    host.bbb.add_meeting("lecture", 4)
    port = free_port()
    env = node_env(host, SECRET, port, poll=0.2)
    del env["BBBNODE_BBB__SECRET"]
    env["BBBNODE_BBB__PROPERTIES_FILES"] = json.dumps([str(props)])
    try:
        node = await start_node(env, port, tmp_path / "sha512.log")
        try:

            async def up() -> bool:
                assert node.process.returncode is None, node.log_path.read_text()
                status, text = await http_text(node.metrics_url)
                return status == 200 and "bbb_api_up 1.0" in text

            await wait_for(up, what="bbb_api_up 1 on a sha512-only host")
            _, text = await http_text(node.metrics_url)
            assert "bbb_meetings_participants 4.0" in text
        finally:
            assert await node.stop() == 0
        signing = [
            line
            for line in map(json.loads, node.log_path.read_text().splitlines())
            if line["event"] == "bbb_api_signing"
        ]
        assert signing == [signing[0]]
        assert (signing[0]["algorithm"], signing[0]["allowed"]) == ("sha512", ["sha512"])

        # An explicit algorithm the host refuses would leave the node blind: refused at start.
        env["BBBNODE_BBB__CHECKSUM"] = "sha256"
        node = await start_node(env, port, tmp_path / "sha256.log")
        assert await node.process.wait() == 2
        assert "BBBNODE_BBB__CHECKSUM" in node.log_path.read_text()
    finally:
        await host.stop()


@pytest.mark.skipif(not prometheus_available(), reason="Debian prometheus not installed")
async def test_real_prometheus_scrapes_bbbnode(host: EmulatedHost, tmp_path: Path) -> None:
    host.bbb.add_meeting("a", 12, voice=3, listeners=9)
    host.bbb.add_meeting("b", 7, cameras=1, voice=7)
    port = free_port()
    node = await start_node(node_env(host, SECRET, port, poll=0.2), port, tmp_path / "n.log")
    try:
        async with prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prom:

            async def scraped() -> bool:
                result = await prom.query("bbb_meetings_participants")
                return bool(result) and result[0]["value"][1] == "19"  # type: ignore[index]

            await wait_for(
                scraped, within=60, what="Prometheus to scrape bbb_meetings_participants"
            )
            up = await prom.query('up{job="bbbnode"}')
            assert up[0]["value"][1] == "1"  # type: ignore[index]
            clients = await prom.query("bbb_meetings_participant_clients")
            assert {r["metric"]["type"] for r in clients} >= {"html5", "dial-in"}  # type: ignore[index]
    finally:
        assert await node.stop() == 0


async def test_drain_command_reaches_the_daemon(host: EmulatedHost, tmp_path: Path) -> None:
    port = free_port()
    env = node_env(host, SECRET, port, poll=0.2)
    node = await start_node(env, port, tmp_path / "drain.log")
    try:

        async def healthy() -> bool:
            assert node.process.returncode is None, node.log_path.read_text()
            status, _ = await http_text(node.metrics_url.replace("/metrics", "/healthz"))
            return status == 200

        await wait_for(healthy, what="bbbnode /healthz")
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bbbnode", "drain",
            env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await command.communicate()
        # Exporter-only mode has no fleet to leave: the daemon says so, and
        # the command prints why and exits 1.
        answer = json.loads(out)
        assert answer["accepted"] is False
        assert "aws.enabled" in answer["reason"]
        assert command.returncode == 1
    finally:
        assert await node.stop() == 0
