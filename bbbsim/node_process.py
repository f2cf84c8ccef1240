"""Starts real ``bbbnode`` processes for the simulator (one per emulated host)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bbbsim.host import EmulatedHost

if TYPE_CHECKING:
    # Only a type here: `bbbsim node-demo` runs without moto (the sim extra).
    from bbbsim.moto_server import FleetIds


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NodeProcess:
    """A running bbbnode and where it serves."""

    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        return int(self.process.returncode or 0)


def node_env(host: EmulatedHost, secret: str, port: int, poll: float) -> dict[str, str]:
    """bbbnode's environment for ``host``: exporter only, everything on loopback."""
    return {
        "BBBNODE_BBB__URL": host.url,
        "BBBNODE_BBB__SECRET": secret,
        "BBBNODE_BBB__POLL_INTERVAL": str(poll),
        "BBBNODE_BBB__TIMEOUT": str(max(0.5, poll)),
        "BBBNODE_BBB__PROPERTIES_FILES": "[]",
        "BBBNODE_BBB__RELEASE_FILE": str(host.procfs.parent / "bigbluebutton-release"),
        "BBBNODE_METRICS__LISTEN": f"127.0.0.1:{port}",
        "BBBNODE_HOST__PROCFS": str(host.procfs),
        "BBBNODE_HOST__CPU_WINDOW": str(max(2.0, 5 * poll)),
        "BBBNODE_HOST__INSTANCE_ID": host.name,
        "BBBNODE_RECORDINGS__ROOT": str(host.recordings),
        "BBBNODE_AWS__ENABLED": "false",
    }


def fleet_node_env(
    host: EmulatedHost,
    secret: str,
    port: int,
    poll: float,
    *,
    aws_endpoint: str,
    imds_port: int,
    ids: FleetIds,
    root: Path,
    scalelite_url: str,
    scalelite_secret: str,
    server_url: str,
) -> dict[str, str]:
    """bbbnode's environment for ``host`` as a fleet member: AWS on, every peer on loopback.

    EFS is off and host commands are only written down (``root/commands.jsonl``);
    TLS, timings and the like are the caller's to add.
    """
    env = node_env(host, secret, port, poll)
    env.update(
        {
            "AWS_ENDPOINT_URL": aws_endpoint,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{imds_port}/",
            "BBBNODE_AWS__ENABLED": "true",
            "BBBNODE_DNS__ZONE_ID": ids.hosted_zone_id,
            "BBBNODE_DNS__DOMAIN": ids.domain,
            "BBBNODE_EFS__ENABLED": "false",
            "BBBNODE_HOSTCONFIG__ROOT": str(root / "hostroot"),
            "BBBNODE_HOSTCONFIG__TURN_SECRET": "emulated-turn-secret-0123456789",
            "BBBNODE_HOST__COMMANDS": "log",
            "BBBNODE_HOST__COMMAND_LOG": str(root / "commands.jsonl"),
            "BBBNODE_SCALELITE__URL": scalelite_url,
            "BBBNODE_SCALELITE__SECRET": scalelite_secret,
            "BBBNODE_SCALELITE__SERVER_URL_TEMPLATE": server_url,
            "BBBNODE_LIFECYCLE__HOOK_NAME": ids.hook_name or "",
            "BBBNODE_LIFECYCLE__RECORDING_GRACE": "0",
        }
    )
    return env


async def start_node(env: Mapping[str, str], port: int, log_path: Path) -> NodeProcess:
    """Run ``python -m bbbnode run`` with ``env`` added to a clean BBBNODE_-free environment."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("BBBNODE_")}
    full.update(env)
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bbbnode", "run",
            env=full, stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    return NodeProcess(process, port, log_path)
