"""bbbnode's memory in each mode: what it loads, RSS after its imports, RSS serving 1,000 meetings.

- After imports: a fresh interpreter imports what the mode's daemon imports
  (exporter only: ``bbbnode.cli`` and ``bbbnode.daemon``; the fleet adds
  ``bbbnode.fleet``, a host with its own certificate ``bbbnode.tls``). The
  third-party packages each mode adds over the exporter are listed.
- Serving: a real ``bbbnode`` reading 1,000 meetings of 10 attendees every
  second (the answer served by another process, as in exporter.py), RSS after
  ``--polls`` polls. Exporter only: nothing else. Fleet: joined to the emulated
  fleet of ``bbbsim demo`` (moto_server with the lifecycle layer, an IMDSv2
  emulator, the Scalelite emulator): identity, Route53, Scalelite registration,
  protection and the lifecycle drain, with TLS, EFS and host commands off as
  bbbsim runs it. A host with its own ACME certificate needs a CA, so it is
  shown after imports only.

Target (issue 18): exporter only <= 60 MB at 1,000 meetings.

    .venv/bin/python benchmarks/footprint.py [--polls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from readme_table import Column, Table, unit

from bbbcore import logs

if __name__ == "__main__":
    # Warnings only, on stderr: the table is stdout.
    logs.configure("warning")

from exporter import SECRET, bbb_url, memory_mb, start_bbb, wait_for_meetings

from bbbsim import fleet_demo
from bbbsim.host_model import ProcStat
from bbbsim.node_process import free_port, start_node

MEETINGS = 1000
MODES = (
    ("exporter only (`aws.enabled = false`)", ("bbbnode.cli", "bbbnode.daemon")),
    ("fleet, TLS off", ("bbbnode.cli", "bbbnode.daemon", "bbbnode.fleet")),
    ("fleet, host TLS (ACME)", ("bbbnode.cli", "bbbnode.daemon", "bbbnode.fleet", "bbbnode.tls")),
)
TABLES = {
    "modes": Table(
        (
            Column("bbbnode mode", r"[^|]+", numeric=False),
            Column("third-party packages (over the row above)", r"[^|]+", numeric=False),
            Column("RSS after imports", unit("MB")),
            Column("RSS serving 1,000 meetings", rf"{unit('MB')}|after imports only"),
        ),
        keys=tuple(name for name, _ in MODES),
    )
}

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
rss = next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]
import importlib.metadata
dists = importlib.metadata.packages_distributions()
top = {m.partition(".")[0] for m in sys.modules if not m.startswith("_")}
third = sorted({d for t in top for d in dists.get(t, ())} - {"bbbfleet"})
print(json.dumps({"rss_mb": int(rss) / 1024, "packages": third}))
"""


def after_imports(modules: tuple[str, ...]) -> tuple[float, set[str]]:
    """RSS (MB) of a fresh interpreter after importing ``modules``, and its packages."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, check=True
    )
    doc = json.loads(out.stdout)
    return float(doc["rss_mb"]), set(doc["packages"])


def node_env(port: int, bbb_port: int, tmp: Path) -> dict[str, str]:
    return {
        "BBBNODE_BBB__URL": bbb_url(bbb_port, MEETINGS),
        "BBBNODE_BBB__SECRET": SECRET,
        "BBBNODE_BBB__POLL_INTERVAL": "1",
        "BBBNODE_BBB__TIMEOUT": "10",
        "BBBNODE_BBB__PROPERTIES_FILES": "[]",
        "BBBNODE_METRICS__LISTEN": f"127.0.0.1:{port}",
        "BBBNODE_HOST__PROCFS": str(tmp / "proc"),
        "BBBNODE_RECORDINGS__ROOT": str(tmp / "bigbluebutton"),
        "BBBNODE_AWS__ENABLED": "false",
    }


async def exporter_rss(bbb_port: int, tmp: Path, polls: int) -> float:
    port = free_port()
    node = await start_node(node_env(port, bbb_port, tmp), port, tmp / "exporter.log")
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for_meetings(session, node.metrics_url, MEETINGS, node.log_path)
            await asyncio.sleep(polls)
            return memory_mb(node.process.pid, "VmRSS")
    finally:
        await node.stop()


async def fleet_rss(bbb_port: int, tmp: Path, polls: int) -> float:
    env = {
        "BBBNODE_BBB__URL": bbb_url(bbb_port, MEETINGS),
        "BBBNODE_BBB__POLL_INTERVAL": "1",
        "BBBNODE_BBB__TIMEOUT": "10",
    }
    # TLS off: the footprint of the fleet side without the certificate (as measured before).
    async with fleet_demo.world(tmp / "fleet", node_env=env, tls=False) as w:
        (instance,) = w.fleet.instances.values()
        node = instance.node
        async with aiohttp.ClientSession() as session:
            await wait_for_meetings(session, node.metrics_url, MEETINGS, node.log_path)
            status = node.metrics_url.replace("/metrics", "/status")
            for _ in range(600):  # start-up done: registered in Scalelite
                async with session.get(status) as resp:
                    if "scalelite_server_url" in await resp.text():
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("bbbnode never joined the fleet")
            await asyncio.sleep(polls)
            return memory_mb(node.process.pid, "VmRSS")


async def main(args: argparse.Namespace) -> None:
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; serving: {MEETINGS:,} "
        f"meetings of 10 attendees, poll 1 s, RSS after {args.polls} polls; no recordings; "
        "packages as distributions"
    )
    imported = [after_imports(modules) for _, modules in MODES]
    with tempfile.TemporaryDirectory(prefix="bbb-footprint-") as name:
        tmp = Path(name)
        ProcStat(tmp / "proc", utilization=0.3).write()
        child, bbb_port = await start_bbb(tmp)
        try:
            serving = [
                await exporter_rss(bbb_port, tmp, args.polls),
                await fleet_rss(bbb_port, tmp, args.polls),
            ]
        finally:
            child.terminate()
            await child.wait()
    table = TABLES["modes"]
    print(table.header())
    before: set[str] = set()
    for i, ((mode, _), (rss, packages)) in enumerate(zip(MODES, imported, strict=True)):
        # Each mode's packages over the one above it.
        added = ", ".join(sorted(packages - before, key=str.lower))
        before = packages
        live = f"{serving[i]:.1f} MB" if i < len(serving) else "after imports only"
        print(table.row(mode, ("+ " if i else "") + added, f"{rss:.1f} MB", live))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=10, help="polls before RSS is read")
    asyncio.run(main(parser.parse_args()))
