"""Real processes for integration tests: bbbnode and Prometheus on loopback.

Every wait here is for a real external process to reach a state, bounded by a
deadline; nothing sleeps for time a clock could fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(
    check: Callable[[], object], within: float = 20.0, what: str = "condition"
) -> object:
    """Poll an async or sync ``check`` until it returns something truthy."""
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
            last_error = exc
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last_error!r})")


async def http_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextlib.asynccontextmanager
async def bbbnode(tmp: Path, env: Mapping[str, str]) -> AsyncIterator[NodeProcess]:
    """Start ``python -m bbbnode run`` with ``env`` (BBBNODE_* keys) until /healthz answers."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("BBBNODE_")}
    full.update(
        {
            "BBBNODE_METRICS__LISTEN": f"127.0.0.1:{port}",
            "BBBNODE_AWS__ENABLED": "false",
            "BBBNODE_BBB__PROPERTIES_FILES": "[]",
            "BBBNODE_BBB__RELEASE_FILE": str(tmp / "bigbluebutton-release"),
        }
    )
    full.update(env)
    stderr_path = tmp / f"bbbnode-{port}.log"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; the waits are async
            [sys.executable, "-m", "bbbnode", "run"],
            env=full,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
        )
    node = NodeProcess(proc, port, stderr_path)
    try:

        async def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"bbbnode exited {proc.returncode}: {node.logs()}")
            status, _ = await http_text(f"{node.base}/healthz")
            return status == 200

        await wait_for(healthy, what="bbbnode /healthz")
        yield node
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@dataclass
class PrometheusProcess:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def query(self, expr: str) -> list[dict[str, object]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.base}/api/v1/query", params={"query": expr}) as resp,
        ):
            doc = await resp.json()
        assert doc["status"] == "success", doc
        result: list[dict[str, object]] = doc["data"]["result"]
        return result


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None


@contextlib.asynccontextmanager
async def prometheus(tmp: Path, targets: list[str]) -> AsyncIterator[PrometheusProcess]:
    """A real Prometheus scraping ``targets`` (host:port) every second."""
    port = free_port()
    conf = tmp / "prometheus.yml"
    quoted = ", ".join(f"'{t}'" for t in targets)
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: bbbnode\n"
        f"    static_configs:\n      - targets: [{quoted}]\n"
    )
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; the waits are async
        [
            "prometheus",
            f"--config.file={conf}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    prom = PrometheusProcess(proc, port)
    try:

        async def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError((tmp / "prometheus.log").read_text())
            status, _ = await http_text(f"{prom.base}/-/ready")
            return status == 200

        await wait_for(ready, within=60, what="prometheus ready")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
