"""Real processes for integration tests: Prometheus on loopback, and waiting helpers.

Every wait here is for a real external process to reach a state, bounded by a
deadline; nothing sleeps for time a clock could fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bbbsim.node_process import free_port


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
async def prometheus(
    tmp: Path,
    targets: list[str],
    labels: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> AsyncIterator[PrometheusProcess]:
    """A real Prometheus scraping ``targets`` (host:port) every second.

    ``labels`` maps a target to the ``instance_id`` label its series get, as the
    EC2 service discovery of the monitoring chart would set it. Its data directory is
    ``tmp / "tsdb"`` (blocks made there beforehand are served); ``args`` go to it as well.
    """
    port = free_port()
    conf = tmp / "prometheus.yml"
    groups = "".join(
        f"      - targets: ['{t}']\n"
        + (f"        labels: {{instance_id: '{labels[t]}'}}\n" if labels and t in labels else "")
        for t in targets
    )
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: bbbnode\n"
        f"    static_configs:\n{groups}"
    )
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; the waits are async
        [
            "prometheus",
            f"--config.file={conf}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *args,
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
