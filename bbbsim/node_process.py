"""Starts real ``bbbnode`` processes for the simulator (one per emulated host)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
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

    EFS is off, bbbnode does the host steps itself (no helper) with host
    commands only written down (``root/commands.jsonl``); TLS, timings and the
    like are the caller's to add.
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
            "BBBNODE_HELPER__SOCKET": "",
            "BBBNODE_SCALELITE__URL": scalelite_url,
            "BBBNODE_SCALELITE__SECRET": scalelite_secret,
            "BBBNODE_SCALELITE__SERVER_URL_TEMPLATE": server_url,
            "BBBNODE_LIFECYCLE__HOOK_NAME": ids.hook_name or "",
            "BBBNODE_LIFECYCLE__LAUNCH_HOOK_NAME": ids.launch_hook_name or "",
            "BBBNODE_LIFECYCLE__RECORDING_GRACE": "0",
        }
    )
    return env


def _can_run(python: str, uid: int, gid: int, env: Mapping[str, str]) -> bool:
    check = "import sys, bbbnode; assert sys.version_info[:2] == (3, 11)"
    try:
        result = subprocess.run(  # noqa: S603 (our own interpreter, fixed arguments)
            [python, "-c", check], user=uid, group=gid, extra_groups=[],
            env={**os.environ, **env}, capture_output=True, timeout=30, check=False, cwd="/",
        )  # fmt: skip
    except OSError:
        return False
    return result.returncode == 0


@dataclass(frozen=True, slots=True)
class RunAs:
    """An unprivileged identity for a child process (the daemon, as on a real host)."""

    uid: int
    gid: int
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to the child's environment (PYTHONPATH for another interpreter)."""

    @classmethod
    def user(cls, name: str) -> RunAs:
        """``name``'s identity and a Python 3.11 it can run with this environment's packages.

        This interpreter may live where the user cannot reach (pyenv under
        root's home); another 3.11 then runs with our packages on PYTHONPATH.
        """
        entry = pwd.getpwnam(name)
        uid, gid = entry.pw_uid, entry.pw_gid
        if _can_run(sys.executable, uid, gid, {}):
            return cls(uid, gid)
        paths = sysconfig.get_paths()
        repo = str(Path(__file__).resolve().parents[1])
        path = dict.fromkeys((repo, paths["purelib"], paths["platlib"]))
        env = {"PYTHONPATH": os.pathsep.join(path)}
        for candidate in ("/usr/bin/python3.11", "/usr/local/bin/python3.11"):
            if Path(candidate).exists() and _can_run(candidate, uid, gid, env):
                return cls(uid, gid, candidate, env)
        raise RuntimeError(f"no Python 3.11 that user {name} can run")


async def _spawn(
    command: str, env: Mapping[str, str], log_path: Path, run_as: RunAs | None
) -> asyncio.subprocess.Process:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BBBNODE_")}
    full.update(env)
    if run_as is None:
        with log_path.open("wb") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bbbnode", command,
                env=full, stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
    full.update(run_as.env)
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            run_as.python, "-m", "bbbnode", command,
            env=full, stdout=asyncio.subprocess.DEVNULL, stderr=log,
            user=run_as.uid, group=run_as.gid, extra_groups=[], cwd="/",
        )  # fmt: skip


async def start_node(
    env: Mapping[str, str], port: int, log_path: Path, *, run_as: RunAs | None = None
) -> NodeProcess:
    """Run ``python -m bbbnode run`` with ``env`` added to a clean BBBNODE_-free environment."""
    return NodeProcess(await _spawn("run", env, log_path, run_as), port, log_path)


def helper_env(root: Path, socket_path: Path, group: str, command_log: Path) -> dict[str, str]:
    """The host helper's environment: the tree at ``root`` as /, host commands written down."""
    return {
        "BBBNODE_HOSTCONFIG__ROOT": str(root),
        "BBBNODE_HOST__COMMANDS": "log",
        "BBBNODE_HOST__COMMAND_LOG": str(command_log),
        "BBBNODE_HELPER__SOCKET": str(socket_path),
        "BBBNODE_HELPER__SOCKET_GROUP": group,
        "BBBNODE_EFS__ENABLED": "false",
    }


@dataclass
class HelperProcess:
    """A running ``bbbnode host-helper`` and its socket."""

    process: asyncio.subprocess.Process
    socket_path: Path
    log_path: Path

    async def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        return await NodeProcess(self.process, 0, self.log_path).stop(grace)


async def start_helper(env: Mapping[str, str], log_path: Path) -> HelperProcess:
    """Run ``python -m bbbnode host-helper``; returns once its socket accepts connections."""
    socket_path = Path(env["BBBNODE_HELPER__SOCKET"])
    process = await _spawn("host-helper", env, log_path, None)
    helper = HelperProcess(process, socket_path, log_path)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"host-helper exited {process.returncode}, log in {log_path}")
        try:
            _, writer = await asyncio.open_unix_connection(str(socket_path))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return helper
    await helper.stop()
    raise TimeoutError(f"host-helper did not listen on {socket_path}")
