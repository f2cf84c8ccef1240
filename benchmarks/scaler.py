"""bbbscaler benchmark: observe 1,000 nodes, decide on 1,000 nodes, decision latency.

Targets (issue #4): observing 1,000 nodes (emulated on loopback) in at most 1 s
wall; ``decide`` on 1,000 nodes in at most 5 ms; from load crossing the
threshold to the AWS call in at most one loop interval.

- observe: moto_server holds an ASG of N instances; a second process serves
  every node's /metrics (the bytes a real bbbnode exports with 5 meetings, its
  CPU line set per request) and a Scalelite emulator with N enabled servers.
  The real Observer (ASG + EC2 + concurrent scrape + Scalelite) is timed; the
  AWS part (moto's speed, not ours) is also shown on its own.
- decide: the real ``decide`` on a synthetic 1,000-node snapshot with a full
  history, both presets.
- latency: the real Controller loop (interval ``--interval``) against the same
  fleet; the emulated CPU jumps at a random moment; the time until
  SetDesiredCapacity reaches moto is measured, in intervals.

    .venv/bin/python benchmarks/scaler.py [--nodes 1000] [--rounds 10] [--trials 6] [--interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from readme_table import TEXT, Column, Table

from bbbcore import logs, native

if __name__ == "__main__":
    # Warnings only, on stderr: the table is stdout.
    logs.configure("warning")
    # The live scaler's figures: its policy interpreted, as the container image runs it
    # (a checkout's compiled modules are the backtest's; bbbcore/native.py).
    native.interpreted()

from bbbscaler.actuate import Actuator
from bbbscaler.controller import Controller
from bbbscaler.exposition import ScalerMetrics
from bbbscaler.model import FleetSnapshot, Group, Node, NodeMetrics, ServerView
from bbbscaler.observe import build_observer
from bbbscaler.policy import History, PolicyConfig, Preset, decide
from bbbscaler.settings import ScalerSettings
from bbbsim.host import start_host
from bbbsim.moto_server import MotoServer
from bbbsim.node_process import free_port, node_env, start_node

BBB_SECRET = "benchmark-bbb-secret"  # noqa: S105 - loopback only
LB_SECRET = "benchmark-scalelite-secret"  # noqa: S105 - loopback only
CPU_LINE = b"bbbnode_cpu_utilization_ratio "
NODES, INTERVAL, TRIALS = 1000, 10.0, 6
"""The defaults, which the README's rows are measured with."""


def labels(nodes: int, interval: float, trials: int) -> tuple[str, str, str, str]:
    """The rows' first cells."""
    n = f"{nodes:,}"
    return (
        f"`decide` on {n} nodes with 100 rounds of history (p50 / p95), `default`; `seed`",
        f"observe {n} nodes: scrape + Scalelite, the scaler's own part (p50)",
        f"observe {n} nodes including ASG + EC2 reads *in moto* (p50, max; moto alone p50)",
        f"decision latency: emulated CPU jumps at a random moment → `SetDesiredCapacity` "
        f"reaches AWS, {interval:g} s loop, {trials} trials (p50, max)",
    )


TABLES = {
    "scaler": Table(
        (
            Column("what", TEXT, numeric=False),
            Column("measured", r"[^|]*\d[^|]*"),
            Column("target", TEXT),
        ),
        keys=labels(NODES, INTERVAL, TRIALS),
    )
}


# ----------------------------------------------------------------- the node side


async def real_exposition(tmp: Path) -> bytes:
    """What a real bbbnode serves for a host with 5 meetings of 10 attendees."""
    host = await start_host("bench-host", tmp, BBB_SECRET)
    for i in range(5):
        host.bbb.add_meeting(f"m{i}", 10, voice=3, cameras=1)
    port = free_port()
    node = await start_node(node_env(host, BBB_SECRET, port, poll=0.2), port, tmp / "node.log")
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                host.tick()  # the synthetic /proc/stat only moves when ticked
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(node.metrics_url) as resp:
                        body = await resp.read()
                        if b"\nbbb_meetings 5.0" in body and CPU_LINE in body:
                            return body
                await asyncio.sleep(0.1)
        raise RuntimeError("bbbnode never exported its meetings")
    finally:
        await node.stop()
        await host.stop()


def with_cpu(body: bytes, cpu: float) -> bytes:
    lines = body.split(b"\n")
    return b"\n".join(
        CPU_LINE + str(cpu).encode() if line.startswith(CPU_LINE) else line for line in lines
    )


async def serve_fleet(port_file: Path, body_file: Path, nodes: int) -> None:
    """The child process: every node's /metrics, plus Scalelite with every node enabled."""
    from bbbsim.scalelite_emulator import ScaleliteEmulator
    from bbbsim.scalelite_emulator import serve as serve_scalelite

    base = await asyncio.to_thread(body_file.read_bytes)
    state = {"body": with_cpu(base, 0.30)}

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=state["body"], content_type="text/plain")

    async def control(request: web.Request) -> web.Response:
        state["body"] = with_cpu(base, float(request.query["cpu"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{instance_id}/metrics", metrics)
    app.router.add_post("/control", control)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    node_port = runner.addresses[0][1]
    scalelite = ScaleliteEmulator(LB_SECRET)
    sl_runner, sl_port = await serve_scalelite(scalelite)
    urls = (await asyncio.to_thread(Path(str(body_file) + ".ids").read_text)).split()
    for iid in urls[:nodes]:
        scalelite.add_server(
            f"https://{iid}.bench.test/bigbluebutton/api/", BBB_SECRET, state="enabled"
        )
    await asyncio.to_thread(port_file.write_text, f"{node_port} {sl_port}")
    await asyncio.Event().wait()
    await sl_runner.cleanup()


# ------------------------------------------------------------------ the fleet


async def create_group(endpoint: str, nodes: int) -> list[str]:
    import aioboto3

    session = aioboto3.Session(region_name="eu-central-1")
    async with (
        session.client("ec2", endpoint_url=endpoint) as ec2,
        session.client("autoscaling", endpoint_url=endpoint) as autoscaling,
    ):
        vpc = await ec2.create_vpc(CidrBlock="10.30.0.0/16")
        subnet = await ec2.create_subnet(
            VpcId=vpc["Vpc"]["VpcId"], CidrBlock="10.30.0.0/20", AvailabilityZone="eu-central-1a"
        )
        template = await ec2.create_launch_template(
            LaunchTemplateName="bench",
            LaunchTemplateData={"ImageId": "ami-0bbb0000000000001", "InstanceType": "c5.2xlarge"},
        )
        await autoscaling.create_auto_scaling_group(
            AutoScalingGroupName="bench",
            MinSize=1,
            MaxSize=nodes + 50,
            DesiredCapacity=nodes,
            LaunchTemplate={"LaunchTemplateId": template["LaunchTemplate"]["LaunchTemplateId"]},
            VPCZoneIdentifier=subnet["Subnet"]["SubnetId"],
        )
        await autoscaling.suspend_processes(
            AutoScalingGroupName="bench", ScalingProcesses=["AZRebalance"]
        )
        group = await autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["bench"])
        return [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]]


@contextlib.asynccontextmanager
async def fleet(nodes: int, tmp: Path) -> AsyncIterator[tuple[str, int, int]]:
    moto = MotoServer()
    endpoint = moto.start()
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    started = time.monotonic()
    ids = await create_group(endpoint, nodes)
    print(f"moto: {len(ids)} instances in {time.monotonic() - started:.1f} s", file=sys.stderr)
    body_file = tmp / "metrics.txt"
    body = await real_exposition(tmp)
    await asyncio.to_thread(body_file.write_bytes, body)
    await asyncio.to_thread(Path(str(body_file) + ".ids").write_text, "\n".join(ids))
    port_file = tmp / "ports"
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(port_file), str(body_file), str(nodes),
        stderr=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # The child writes its ports once it serves: a file is the simplest way back.
        text: str | bool = ""
        for _ in range(600):
            text = await asyncio.to_thread(lambda: port_file.exists() and port_file.read_text())
            if text:
                break
            await asyncio.sleep(0.1)
        if not isinstance(text, str) or not text:
            raise RuntimeError("the fleet process did not start")
        node_port, sl_port = (int(p) for p in text.split())
        yield endpoint, node_port, sl_port
    finally:
        child.terminate()
        await child.wait()
        moto.stop()


def settings(node_port: int, sl_port: int, interval: float) -> ScalerSettings:
    return ScalerSettings(
        aws={"asg_name": "bench"},
        metrics={
            "url_template": f"http://127.0.0.1:{node_port}/{{instance_id}}/metrics",
            "timeout": 5.0,
        },
        scalelite={
            "url": f"http://127.0.0.1:{sl_port}",
            "secret": LB_SECRET,
            "domain": "bench.test",
        },
        loop={"interval": interval},
    )


# ---------------------------------------------------------------- measurements


async def measure_observe(node_port: int, sl_port: int, rounds: int) -> dict[str, float]:
    s = settings(node_port, sl_port, 10.0)
    async with build_observer(s) as kit:
        await kit.observer.observe()  # warm: connections, first EC2 read
        totals, aws_only = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            snap = await kit.observer.observe()
            totals.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, members = await kit.asg.describe_group()
            await kit.asg.with_ec2(members)
            aws_only.append(time.perf_counter() - t0)
            seen = sum(1 for n in snap.nodes if n.metrics is not None and n.server is not None)
            assert seen == len(snap.nodes), f"only {seen} of {len(snap.nodes)} nodes seen"
    return {
        "nodes": len(snap.nodes),
        "observe_p50_s": statistics.median(totals),
        "observe_max_s": max(totals),
        "aws_p50_s": statistics.median(aws_only),
        "ours_p50_s": statistics.median(t - a for t, a in zip(totals, aws_only, strict=True)),
    }


def synthetic(nodes: int, at: float) -> FleetSnapshot:
    rng = random.Random(7)
    return FleetSnapshot(
        at=at,
        group=Group("bench", nodes, 1, nodes + 50, frozenset({"AZRebalance"})),
        nodes=tuple(
            Node(
                f"i-{i:017x}",
                "InService",
                private_ip=f"10.0.{i // 250}.{i % 250}",
                launched_at=at - 3600,
                metrics=NodeMetrics(
                    rng.uniform(0.05, 0.7), rng.randint(0, 8), rng.randint(0, 90), 3.0
                ),
                server=ServerView(str(i), "enabled", float(rng.randint(0, 90)), True),
            )
            for i in range(nodes)
        ),
    )


def measure_decide(nodes: int, repeats: int = 300) -> dict[str, float]:
    out: dict[str, float] = {}
    presets: tuple[Preset, ...] = ("default", "seed")
    for preset in presets:
        config = PolicyConfig.preset_values(preset)
        now = 1_800_000_000.0
        history = History()
        snap = synthetic(nodes, now)
        for k in range(100):
            history = history.record(
                decide(snap, history, None, config, now - 1000 + 10 * k),
                now - 1000 + 10 * k,
                config,
            )
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            decide(snap, history, None, config, now)
            times.append(time.perf_counter() - t0)
        times.sort()
        out[f"decide_{preset}_p50_ms"] = 1000 * times[len(times) // 2]
        out[f"decide_{preset}_p95_ms"] = 1000 * times[int(len(times) * 0.95)]
    return out


async def measure_latency(
    node_port: int, sl_port: int, interval: float, trials: int
) -> list[float]:
    s = settings(node_port, sl_port, interval)
    config = PolicyConfig.from_settings(s)
    latencies: list[float] = []
    async with build_observer(s) as kit, aiohttp.ClientSession() as http:
        control = f"http://127.0.0.1:{node_port}/control"
        for _ in range(trials):
            await http.post(control, params={"cpu": "0.30"})
            group, _ = await kit.asg.describe_group()
            desired0 = group.desired
            seen = asyncio.Event()
            called: list[float] = []

            class Watch:
                """The real group port, noting when SetDesiredCapacity went out."""

                def __init__(self, seen: asyncio.Event, called: list[float]) -> None:
                    self.seen, self.called = seen, called

                async def set_desired(self, desired: int) -> None:
                    await kit.asg.set_desired(desired)
                    self.called.append(time.monotonic())
                    self.seen.set()

                def __getattr__(self, name: str) -> Any:
                    return getattr(kit.asg, name)

            actuator = Actuator(Watch(seen, called), kit.scalelite, kit.observer.recheck, config)
            controller = Controller(kit.observer, actuator, config, ScalerMetrics("default", False))
            stop = asyncio.Event()
            loop = asyncio.create_task(controller.run(interval, stop))
            await asyncio.sleep(interval * (1 + random.random()))
            crossed = time.monotonic()
            await http.post(control, params={"cpu": "0.92"})
            await asyncio.wait_for(seen.wait(), 5 * interval)
            latencies.append((called[0] - crossed) / interval)
            stop.set()
            await loop
            await kit.asg.set_desired(desired0)
    return latencies


async def main(args: argparse.Namespace) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} CPUs, load average {load} at the start, Python "
        f"{platform.python_version()}; moto_server holds a {args.nodes:,}-instance ASG; a second "
        "process serves every node's /metrics with the bytes a real bbbnode exports for 5 "
        f"meetings, and a Scalelite emulator lists all {args.nodes:,}; "
        f"{args.rounds} observe rounds",
        flush=True,
    )
    decided = measure_decide(args.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        async with fleet(args.nodes, Path(tmp)) as (_endpoint, node_port, sl_port):
            observed = await measure_observe(node_port, sl_port, args.rounds)
            assert int(observed["nodes"]) == args.nodes
            lat = await measure_latency(node_port, sl_port, args.interval, args.trials)
    table = TABLES["scaler"]
    rows = labels(args.nodes, args.interval, args.trials)
    print(table.header())
    print(
        table.row(
            rows[0],
            f"{decided['decide_default_p50_ms']:.2f} / {decided['decide_default_p95_ms']:.2f} ms; "
            f"{decided['decide_seed_p50_ms']:.2f} / {decided['decide_seed_p95_ms']:.2f} ms",
            "≤ 5 ms",
        )
    )
    print(table.row(rows[1], f"{observed['ours_p50_s']:.2f} s", "≤ 1 s"))
    print(
        table.row(
            rows[2],
            f"{observed['observe_p50_s']:.2f} s, {observed['observe_max_s']:.2f} s; "
            f"{observed['aws_p50_s']:.2f} s",
            "none: moto's speed (AWS answers in a fraction)",
        )
    )
    print(
        table.row(
            rows[3],
            f"{statistics.median(lat):.2f}, {max(lat):.2f} intervals",
            "≤ 1 interval",
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve_fleet(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    asyncio.run(main(parser.parse_args()))
