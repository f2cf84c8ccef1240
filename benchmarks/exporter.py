"""bbbnode exporter benchmark: scrape latency, collection CPU per cycle, RSS.

Runs the real ``bbbnode`` process against the BBB emulator on loopback with
10, 300 and 1,000 meetings of 10 attendees each, then prints a table.
Targets (issue #2): /metrics p50 <= 2 ms at 1,000 meetings, a collection
cycle <= 100 ms CPU, RSS <= 60 MB.

    .venv/bin/python benchmarks/exporter.py [--scrapes 500] [--cycles 25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bbbsim.host import start_host
from bbbsim.node_process import free_port, node_env, start_node

SECRET = "benchmark-secret"  # noqa: S105 - loopback only
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Result:
    meetings: int
    p50_ms: float
    p95_ms: float
    cpu_ms_per_cycle: float
    rss_mb: float


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def measure(meetings: int, scrapes: int, cycles: int, poll: float, tmp: Path) -> Result:
    host = await start_host(f"i-bench{meetings:09d}", tmp, SECRET)
    for i in range(meetings):
        host.bbb.add_meeting(f"m{i}", 10, cameras=1, voice=3, listeners=7)
    host.tick()
    port = free_port()
    env = node_env(host, SECRET, port, poll)
    env["BBBNODE_BBB__TIMEOUT"] = "10"
    node = await start_node(env, port, tmp / f"node-{meetings}.log")
    pid = node.process.pid
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with session.get(node.metrics_url) as resp:
                        if f"bbb_meetings {float(meetings)}" in await resp.text():
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(node.log_path.read_text())
                await asyncio.sleep(0.1)
            # Collection cost: CPU the process uses over `cycles` polls with no scrapes.
            before = cpu_seconds(pid)
            await asyncio.sleep(cycles * poll)
            cpu_per_cycle = (cpu_seconds(pid) - before) / cycles
            latencies = []
            for _ in range(scrapes):
                started = time.perf_counter()
                async with session.get(node.metrics_url) as resp:
                    await resp.read()
                latencies.append((time.perf_counter() - started) * 1000)
            rss = rss_mb(pid)
    finally:
        await node.stop()
        await host.stop()
    latencies.sort()
    return Result(
        meetings,
        statistics.median(latencies),
        latencies[int(0.95 * (len(latencies) - 1))],
        cpu_per_cycle * 1000,
        rss,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=25)
    parser.add_argument("--poll", type=float, default=0.2, help="bbbnode poll interval (s)")
    args = parser.parse_args()
    print(f"bbbnode exporter benchmark: {os.cpu_count()} CPUs, poll {args.poll}s, "
          f"{args.scrapes} sequential scrapes, CPU over {args.cycles} cycles")  # fmt: skip
    print("| meetings (10 attendees) | /metrics p50 | /metrics p95 | CPU per collection | RSS |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bbb-bench-") as tmp:
        for meetings in (10, 300, 1000):
            r = await measure(meetings, args.scrapes, args.cycles, args.poll, Path(tmp))
            print(f"| {r.meetings:,} | {r.p50_ms:.2f} ms | {r.p95_ms:.2f} ms | "
                  f"{r.cpu_ms_per_cycle:.1f} ms | {r.rss_mb:.1f} MB |", flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
