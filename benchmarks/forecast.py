"""The forecast's costs in the live scaler: the history read, and a round's forecast.

Targets (issue 16): the history read under 2 s for 5 weeks at 5-minute steps; a forecast
round (``forecast_from`` over that history, then ``decide`` of the forecast preset)
under 5 ms. The history is real: ``--hosts`` hosts' ``bbbnode_cpu_utilization_ratio``,
one sample every ``--interval`` seconds for 5 weeks, backfilled with ``promtool tsdb
create-blocks-from openmetrics`` into a real Prometheus (Debian's) on loopback, read with
bbbscaler's own ``PrometheusHistory`` (one ``query_range`` of the default query).

    .venv/bin/python benchmarks/forecast.py [--hosts 20] [--interval 60] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from readme_table import TEXT, Column, Table

from bbbcore import native

if __name__ == "__main__":
    # The live scaler's figures: its policy interpreted, as the container image runs it
    # (a checkout's compiled modules are the backtest's; bbbcore/native.py).
    native.interpreted()

from scaler import synthetic

from bbbscaler.history_source import PrometheusHistory
from bbbscaler.policy import History, PolicyConfig, decide, forecast_from
from bbbscaler.policy.forecast import WEEK

WEEKS = 5
QUERY = 'sum(avg_over_time(bbbnode_cpu_utilization_ratio{asg="bench"}[5m]))'
ROWS = (
    "history read: 5 weeks at 5-minute steps (p50 / max)",
    "forecast round: forecast_from + decide, 100 nodes (p50 / p95)",
)
TABLES = {
    "forecast": Table(
        (
            Column("what", TEXT, numeric=False),
            Column("measured", TEXT),
            Column("target", TEXT),
        ),
        keys=ROWS,
    )
}


def _load(t: float) -> float:
    """One host's CPU: busy on weekday working hours."""
    day, hour = int(t % WEEK // 86_400), t % 86_400 / 3600
    return 0.65 if day < 5 and 8 <= hour < 17 else 0.08


def backfill(root: Path, now: float, hosts: int, interval: float) -> None:
    source = root / "history.om"
    with source.open("w") as out:
        out.write("# TYPE bbbnode_cpu_utilization_ratio gauge\n")
        t = math.floor((now - WEEKS * WEEK - 3600) / interval) * interval
        while t < now - interval:
            value = _load(t)
            for h in range(hosts):
                out.write(
                    f'bbbnode_cpu_utilization_ratio{{asg="bench",instance_id="i-{h:05d}"}} '
                    f"{value:.3f} {t:.0f}\n"
                )
            t += interval
        out.write("# EOF\n")
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(source),
         str(root / "tsdb")],
        check=True,
    )  # fmt: skip
    source.unlink()


def start_prometheus(root: Path, port: int) -> subprocess.Popen[bytes]:
    (root / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            "--storage.tsdb.retention.time=60d",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("prometheus did not become ready")


async def read_times(port: int, now: float, repeat: int) -> tuple[list[float], int]:
    async with aiohttp.ClientSession() as http:
        source = PrometheusHistory(http, f"http://127.0.0.1:{port}/", QUERY, weeks=WEEKS,
                                   timeout=60.0)  # fmt: skip
        times = []
        known = 0
        for _ in range(repeat):
            began = time.perf_counter()
            history = await source.read(now)
            times.append(time.perf_counter() - began)
            known = sum(v is not None for v in history.values)
        return times, known


def round_times(port: int, now: float, repeat: int) -> list[float]:
    history = asyncio.run(_history(port, now))
    config = PolicyConfig.preset_values("forecast")
    snap = synthetic(100, now)
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        made = forecast_from(history, now, config)
        decide(snap, History(), made, config, now)
        times.append(time.perf_counter() - began)
    assert made.usable, made.reason
    return times


async def _history(port: int, now: float):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        source = PrometheusHistory(http, f"http://127.0.0.1:{port}/", QUERY, weeks=WEEKS,
                                   timeout=60.0)  # fmt: skip
        return await source.read(now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--port", type=int, default=19090)
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        backfill(root, now, args.hosts, args.interval)
        proc = start_prometheus(root, args.port)
        try:
            reads, known = asyncio.run(read_times(args.port, now, args.repeat))
            rounds = round_times(args.port, now, 200)
        finally:
            proc.terminate()
            proc.wait(30)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} CPUs, load average {load}, Python {platform.python_version()}; "
        f"Prometheus {args.hosts} hosts, a sample every {args.interval:g} s for {WEEKS} weeks "
        f"(backfilled), {known:,} steps read; {args.repeat} reads, 200 rounds"
    )
    table = TABLES["forecast"]
    print(table.header())
    p50 = statistics.median(reads)
    print(table.row(ROWS[0], f"{p50:.2f} / {max(reads):.2f} s", "≤ 2 s"))
    ordered = sorted(rounds)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]
    print(
        table.row(ROWS[1], f"{statistics.median(rounds) * 1e3:.2f} / {p95 * 1e3:.2f} ms", "≤ 5 ms")
    )


if __name__ == "__main__":
    main()
