"""bbbnode exporter benchmark: /metrics latency while collections run, CPU per collection, RSS.

A real ``bbbnode`` process in exporter-only mode (``aws.enabled = false``)
polls getMeetings every ``--poll`` seconds (1 s: ten times the default rate)
from a separate process that serves the answer bbbsim's BBB emulator renders
for 10, 300 and 1,000 meetings of 10 attendees (1 camera, 3 on the
microphone, 7 listening; 3.6 MB at 1,000), rendered once so the emulator
costs no CPU while bbbnode is measured; ``--recordings`` recordings on disk
(2 % of them still processing), their directories checked every poll. Scrapes are sequential
with a random pause of 0 to ``--pause`` seconds after each, so they land at
every phase of the poll, in the middle of parses and scans too.

Targets (issues 2 and 18): /metrics p50 <= 2 ms and p95 <= 10 ms at 1,000
meetings over 200 scrapes; a collection <= 100 ms of CPU; RSS <= 60 MB.
Tables (README.md): ``scrape``; ``recordings`` (for ``--scan-recordings``
recordings, in this process: listing and counting the tree, the peak memory
of both, and a poll's check that no directory changed); ``parse`` (the
getMeetings parser alone).

    .venv/bin/python benchmarks/exporter.py [--scrapes 200] [--poll 1] [--recordings 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from readme_table import INT, Column, Table, unit

from bbbcore.meetings import MeetingsParser
from bbbnode import recordings
from bbbsim.bbb_emulator import EmulatedBbb, render_meetings
from bbbsim.host_model import ProcStat
from bbbsim.node_process import free_port, start_node
from bbbsim.recording_tree import add_recording, recording_id

SECRET = "benchmark-secret"  # noqa: S105 - loopback only
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIZES = (10, 300, 1000)

TABLES = {
    "scrape": Table(
        (
            Column("meetings (10 attendees)", INT),
            Column("/metrics p50", unit("ms")),
            Column("/metrics p95", unit("ms")),
            Column("/metrics max", unit("ms")),
            Column("CPU per collection", unit("ms")),
            Column("RSS", unit("MB")),
            Column("peak RSS", unit("MB")),
        ),
        keys=tuple(f"{n:,}" for n in SIZES),
    ),
    "recordings": Table(
        (
            Column("recordings on disk", INT),
            Column("list the tree", unit("ms")),
            Column("count", unit("ms")),
            Column("peak memory of both", unit("MB")),
            Column("poll with no directory changed", unit("ms")),
        )
    ),
    "parse": Table(
        (
            Column("meetings (10 attendees)", INT),
            Column("getMeetings answer", unit("MB")),
            Column("parse CPU", unit("ms")),
            Column("peak memory, streamed", unit("MB")),
            Column("peak memory, whole document", unit("MB")),
        ),
        keys=(f"{SIZES[-1]:,}",),
    ),
}


@dataclass(frozen=True, slots=True)
class Result:
    meetings: int
    latencies_ms: tuple[float, ...]
    cpu_ms_per_cycle: float
    rss_mb: float
    peak_rss_mb: float


def bbb_with(meetings: int) -> EmulatedBbb:
    """The emulated BBB with ``meetings`` meetings of 10 attendees."""
    bbb = EmulatedBbb(SECRET)
    for i in range(meetings):
        bbb.add_meeting(f"m{i}", 10, cameras=1, voice=3, listeners=7)
    return bbb


async def serve_bbb(port_file: Path) -> None:
    """The child process: ``/<meetings>/bigbluebutton/api/getMeetings`` for each size."""
    bodies = {str(n): render_meetings(bbb_with(n).meetings()) for n in SIZES}

    async def get_meetings(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.match_info["meetings"]], content_type="text/xml")

    app = web.Application()
    app.router.add_get("/{meetings}/bigbluebutton/api/getMeetings", get_meetings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await asyncio.to_thread(port_file.write_text, str(runner.addresses[0][1]))
    await asyncio.Event().wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int, key: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key}")


async def wait_for_meetings(
    session: aiohttp.ClientSession, metrics_url: str, meetings: int, log_path: Path
) -> None:
    """Until bbbnode exports ``meetings`` meetings; its log in the error after 60 s."""
    deadline = time.monotonic() + 60
    while True:
        try:
            async with session.get(metrics_url) as resp:
                if f"bbb_meetings {float(meetings)}" in await resp.text():
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(await asyncio.to_thread(log_path.read_text))
        await asyncio.sleep(0.1)


async def start_bbb(tmp: Path) -> tuple[asyncio.subprocess.Process, int]:
    """The child process serving getMeetings for every size, and its port."""
    port_file = tmp / "bbb-port"
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(port_file),
    )  # fmt: skip
    for _ in range(600):
        if port_file.exists() and port_file.read_text():
            return child, int(port_file.read_text())
        await asyncio.sleep(0.1)
    child.terminate()
    raise RuntimeError("the BBB process did not start")


def bbb_url(port: int, meetings: int) -> str:
    """bbbnode's ``bbb.url`` for the answer with ``meetings`` meetings."""
    return f"http://127.0.0.1:{port}/{meetings}/bigbluebutton/"


def make_recordings(root: Path, count: int) -> None:
    for n in range(count):
        add_recording(root, recording_id(n), "processing" if n % 50 == 0 else "published")


async def measure(
    meetings: int, bbb_port: int, args: argparse.Namespace, tmp: Path, rng: random.Random
) -> Result:
    port = free_port()
    release = tmp / "bigbluebutton-release"
    release.write_text("BIGBLUEBUTTON_RELEASE=3.0.4\n")
    env = {
        "BBBNODE_BBB__URL": bbb_url(bbb_port, meetings),
        "BBBNODE_BBB__SECRET": SECRET,
        "BBBNODE_BBB__POLL_INTERVAL": str(args.poll),
        "BBBNODE_BBB__TIMEOUT": "10",
        "BBBNODE_BBB__PROPERTIES_FILES": "[]",
        "BBBNODE_BBB__RELEASE_FILE": str(release),
        "BBBNODE_METRICS__LISTEN": f"127.0.0.1:{port}",
        "BBBNODE_HOST__PROCFS": str(tmp / "proc"),
        "BBBNODE_HOST__INSTANCE_ID": "i-bench",
        "BBBNODE_RECORDINGS__ROOT": str(tmp / "bigbluebutton"),
        "BBBNODE_AWS__ENABLED": "false",
    }
    node = await start_node(env, port, tmp / f"node-{meetings}.log")
    pid = node.process.pid
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for_meetings(session, node.metrics_url, meetings, node.log_path)
            # Past start-up and the first listings of the recordings:
            await asyncio.sleep(3 * args.poll)
            # Collection cost: CPU the process uses over `cycles` polls with no scrapes.
            before = cpu_seconds(pid)
            await asyncio.sleep(args.cycles * args.poll)
            cpu_per_cycle = (cpu_seconds(pid) - before) / args.cycles
            latencies = []
            for _ in range(args.scrapes):
                started = time.perf_counter()
                async with session.get(node.metrics_url) as resp:
                    await resp.read()
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(rng.uniform(0, args.pause))
            rss, peak = memory_mb(pid, "VmRSS"), memory_mb(pid, "VmHWM")
    finally:
        await node.stop()
    return Result(meetings, tuple(sorted(latencies)), cpu_per_cycle * 1000, rss, peak)


def scrape_row(r: Result) -> str:
    lat = r.latencies_ms
    return TABLES["scrape"].row(
        f"{r.meetings:,}",
        f"{statistics.median(lat):.2f} ms",
        f"{lat[round(0.95 * (len(lat) - 1))]:.2f} ms",
        f"{lat[-1]:.2f} ms",
        f"{r.cpu_ms_per_cycle:.1f} ms",
        f"{r.rss_mb:.1f} MB",
        f"{r.peak_rss_mb:.1f} MB",
    )


def median_ms(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def recordings_row(root: Path, count: int) -> str:
    tree = recordings.read_tree(root)
    # An hour on: every directory has settled, so the stamps alone decide.
    scanned = recordings.rescan(root, None, clock_ns=lambda: time.time_ns() + 3600 * 10**9)
    assert scanned.settled
    return TABLES["recordings"].row(
        f"{count:,}",
        f"{median_ms(5, lambda: recordings.read_tree(root)):.1f} ms",
        f"{median_ms(5, lambda: recordings.count(tree)):.1f} ms",
        f"{peak_mb(lambda: recordings.count(recordings.read_tree(root))):.1f} MB",
        f"{median_ms(5, lambda: recordings.rescan(root, scanned)):.2f} ms",
    )


def peak_mb(work: Callable[[], object]) -> float:
    """Peak Python allocations while ``work()`` runs, in MB (tracemalloc)."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def parse_row(meetings: int) -> str:
    body = render_meetings(bbb_with(meetings).meetings())
    chunk = 65536

    def streamed() -> None:
        parser = MeetingsParser(attendees=False)
        for start in range(0, len(body), chunk):
            parser.feed(body[start : start + chunk])
        parser.close()

    def whole() -> None:
        ET.fromstring(body)  # noqa: S314 - our own emulator's bytes

    started = time.process_time()
    for _ in range(5):
        streamed()
    cpu_ms = (time.process_time() - started) / 5 * 1000
    return TABLES["parse"].row(
        f"{meetings:,}",
        f"{len(body) / 1e6:.1f} MB",
        f"{cpu_ms:.0f} ms",
        f"{peak_mb(streamed):.1f} MB",
        f"{peak_mb(whole):.1f} MB",
    )


def conditions(args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs, load average {load} at the start, Python "
        f"{platform.python_version()}; bbbnode exporter-only, poll {args.poll:g} s, "
        f"{args.recordings:,} recordings on disk; {args.scrapes} sequential scrapes with "
        f"0-{args.pause * 1000:.0f} ms random pauses; CPU over {args.cycles} polls"
    )


async def main(args: argparse.Namespace) -> None:
    print(conditions(args), flush=True)
    rng = random.Random(18)
    with tempfile.TemporaryDirectory(prefix="bbb-bench-") as name:
        tmp = Path(name)
        ProcStat(tmp / "proc", utilization=0.3).write()
        started = time.monotonic()
        await asyncio.to_thread(make_recordings, tmp / "bigbluebutton", args.recordings)
        print(f"({args.recordings:,} recordings made in {time.monotonic() - started:.0f} s)",
              file=sys.stderr)  # fmt: skip
        child, bbb_port = await start_bbb(tmp)
        try:
            print(TABLES["scrape"].header(), flush=True)
            for meetings in SIZES:
                result = await measure(meetings, bbb_port, args, tmp, rng)
                print(scrape_row(result), flush=True)
        finally:
            child.terminate()
            await child.wait()
        await asyncio.to_thread(make_recordings, tmp / "scan", args.scan_recordings)
        print()
        print(TABLES["recordings"].header())
        print(recordings_row(tmp / "scan", args.scan_recordings))
    print()
    print(TABLES["parse"].header())
    print(parse_row(SIZES[-1]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve_bbb(Path(sys.argv[2])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=10, help="polls over which CPU is measured")
    parser.add_argument("--poll", type=float, default=1.0, help="bbbnode poll interval (s)")
    parser.add_argument("--pause", type=float, default=0.1, help="longest pause between scrapes")
    parser.add_argument("--recordings", type=int, default=1000, help="on the node's disk")
    parser.add_argument("--scan-recordings", type=int, default=10_000, help="for the scan table")
    asyncio.run(main(parser.parse_args()))
