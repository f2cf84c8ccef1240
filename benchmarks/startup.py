"""bbbnode start-up in the emulated fleet: its own ACME order (``tls.mode host``) against the
fleet certificate from Secrets Manager (``tls.mode fleet``).

    .venv/bin/python benchmarks/startup.py [--runs 5] [--out FILE]

Everything on loopback: moto_server behind the lifecycle layer (AWS), pebble and
pebble-challtestsrv (the CA and its DNS, fed from moto's Route53 zone as each change
is answered), the Scalelite emulator. Each run is a new instance of the ASG with its
own emulated BBB host, IMDSv2 emulator and a real ``bbbnode`` process (AWS on: DNS,
TLS, host configuration with commands only logged, Scalelite registration). Measured:
from spawning the process to its READY=1 (sd_notify), and the TLS step alone (the
node's ``startup_step_done`` log event). The modes alternate run by run, so load from
other processes on the machine falls on both alike.

Conditions that flatter the per-host mode: pebble validates a challenge the moment
it is answered (``PEBBLE_VA_NOSLEEP``) and moto reports a Route53 change INSYNC at
once; Let's Encrypt and Route53 take tens of seconds for the same steps. Before the
fleet-mode runs, the fleet certificate is issued once by bbbscaler's job, in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from readme_table import TEXT, Column, Table, unit

from bbbcore import acme_dns01, logs, route53
from bbbcore.secret_versions import VersionedSecret
from bbbscaler.certificate import CertificateMetrics, FleetCertificateJob
from bbbscaler.settings import CertificateSettings
from bbbsim.host import start_host
from bbbsim.image_tree import make_host
from bbbsim.imds import ImdsEmulator, identity_from
from bbbsim.imds import serve as serve_imds
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.lifecycle_layer import serve as serve_layer
from bbbsim.moto_server import FleetIds, FleetSpec, MotoServer, aws_session, create_fleet
from bbbsim.node_process import fleet_node_env, free_port, start_node
from bbbsim.pebble import Pebble, ZoneMirror, available, start_challtestsrv, start_pebble
from bbbsim.scalelite_emulator import ScaleliteEmulator
from bbbsim.scalelite_emulator import serve as serve_scalelite

BBB_SECRET = "benchmark-bbb-secret-0123456789"  # noqa: S105 - loopback only
LB_SECRET = "benchmark-scalelite-secret-0123456789"  # noqa: S105 - loopback only
PUBLIC_IP = "203.0.113.10"
READY_WITHIN = 120.0
MODES = ("host", "fleet")
LABELS = {
    "host": "`host`: its own certificate over ACME DNS-01 against pebble",
    "fleet": "`fleet`: the fleet certificate from Secrets Manager (moto)",
}
TABLES = {
    "startup": Table(
        (
            Column("`tls.mode`", TEXT, numeric=False),
            Column("start-up to READY p50", unit("s")),
            Column("max", unit("s")),
            Column("the TLS step p50", unit("s")),
            Column("max", unit("s")),
        ),
        keys=tuple(LABELS[m] for m in MODES),
    ),
}


@dataclass
class World:
    layer: LifecycleLayer
    ids: FleetIds
    aws: str
    pebble: Pebble
    scalelite_url: str
    fleet_secret: str
    tmp: Path


@dataclass(frozen=True, slots=True)
class Run:
    mode: str
    instance_id: str
    ready_s: float
    tls_s: float


@contextlib.asynccontextmanager
async def world(tmp: Path, instances: int) -> AsyncIterator[World]:
    """moto + layer + pebble + Scalelite, and the fleet certificate published once."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ[key] = value
    (tmp / "challtestsrv").mkdir()
    (tmp / "pebble").mkdir()
    challtestsrv = await asyncio.to_thread(start_challtestsrv, tmp / "challtestsrv")
    pebble = await asyncio.to_thread(start_pebble, challtestsrv, tmp / "pebble")
    moto = MotoServer()
    endpoint = moto.start()
    layer = LifecycleLayer(endpoint)
    layer_runner, layer_port = await serve_layer(layer, tick_interval=0.5)
    aws = f"http://127.0.0.1:{layer_port}"
    scalelite = ScaleliteEmulator(LB_SECRET)
    sl_runner, sl_port = await serve_scalelite(scalelite)
    session = aws_session()
    try:
        spec = FleetSpec(name="bench", min_size=0, desired=instances, max_size=instances)
        ids = await create_fleet(aws, spec)
        region = ids.region
        async with (
            session.create_client("route53", region_name=region, endpoint_url=endpoint) as direct,
            session.create_client("route53", region_name=region, endpoint_url=aws) as r53,
            session.create_client("secretsmanager", region_name=region, endpoint_url=aws) as sm,
        ):
            mirror = ZoneMirror(direct, ids.hosted_zone_id, challtestsrv)

            async def mirror_txt(service: str, _action: str) -> None:
                if service == "route53":
                    await mirror.sync()

            remove = layer.add_observer(mirror_txt)
            arn = (await sm.create_secret(Name="bench/fleet-certificate"))["ARN"]
            settings = CertificateSettings(
                secret=arn, domain=ids.domain, zone_id=ids.hosted_zone_id,
                acme_directory=pebble.directory_url,
            )  # fmt: skip
            job = FleetCertificateJob(
                settings, VersionedSecret(sm, arn), None,
                acme_dns01.Route53Txt(route53.Route53Records(r53), ids.hosted_zone_id),
                CertificateMetrics(CollectorRegistry()),
                verify=acme_dns01.trust_bundle(pebble.ca_bundle, tmp / "trust.pem"),
            )  # fmt: skip
            check = await job.check()
            if check.result != "issued":
                raise RuntimeError(f"the fleet certificate was not issued: {check}")
            try:
                yield World(layer, ids, aws, pebble, f"http://127.0.0.1:{sl_port}", arn, tmp)
            finally:
                remove()
    finally:
        await scalelite.close()
        await sl_runner.cleanup()
        await layer_runner.cleanup()
        moto.stop()
        pebble.process.stop()
        challtestsrv.process.stop()


def tls_env(w: World, mode: str, root: Path) -> dict[str, str]:
    env = {"BBBNODE_TLS__MODE": mode, "BBBNODE_TLS__CERT_DIR": str(root / "tls")}
    if mode == "fleet":
        env["BBBNODE_TLS__FLEET_SECRET"] = w.fleet_secret
    else:
        env["BBBNODE_TLS__ACME_DIRECTORY"] = w.pebble.directory_url
        env["BBBNODE_TLS__CA_BUNDLE"] = str(w.pebble.ca_bundle)
    return env


def tls_seconds(log_path: Path) -> float:
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event: dict[str, Any] = json.loads(line)
            if event.get("event") == "startup_step_done" and event.get("step") == "tls":
                return float(event["seconds"])
    raise RuntimeError(f"no tls step in {log_path}")


async def one_run(w: World, mode: str, instance_id: str) -> Run:
    info = next(i for i in w.layer.instances() if i.instance_id == instance_id)
    root = w.tmp / instance_id
    root.mkdir()
    host = await start_host(instance_id, root, BBB_SECRET)
    make_host(root / "hostroot")
    identity = dataclasses.replace(identity_from(info), public_ipv4=PUBLIC_IP)
    imds = ImdsEmulator(identity, target_state=lambda: None)
    imds_runner, imds_port = await serve_imds(imds)
    notify_path = root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    port = free_port()
    env = fleet_node_env(
        host, BBB_SECRET, port, 1.0,
        aws_endpoint=w.aws, imds_port=imds_port, ids=w.ids, root=root,
        scalelite_url=w.scalelite_url, scalelite_secret=LB_SECRET,
        server_url=f"http://127.0.0.1:{host.port}/bigbluebutton/api/",
    )  # fmt: skip
    env.update(tls_env(w, mode, root))
    env["NOTIFY_SOCKET"] = str(notify_path)
    loop = asyncio.get_running_loop()
    try:
        started = time.monotonic()
        node = await start_node(env, port, root / "bbbnode.log")
        try:
            deadline = started + READY_WITHIN
            while True:
                if node.process.returncode is not None:
                    raise RuntimeError(f"bbbnode exited {node.process.returncode}: {root}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no READY=1 in {READY_WITHIN:g} s: {root}")
                with contextlib.suppress(TimeoutError):
                    data = await asyncio.wait_for(loop.sock_recv(notify, 4096), 0.5)
                    if b"READY=1" in data:
                        break
            ready = time.monotonic() - started
        finally:
            await node.stop()
        return Run(mode, instance_id, ready, tls_seconds(root / "bbbnode.log"))
    finally:
        notify.close()
        await imds_runner.cleanup()
        await host.stop()


def summary(runs: list[Run], mode: str) -> dict[str, float]:
    mine = [r for r in runs if r.mode == mode]
    ready = [r.ready_s for r in mine]
    tls = [r.tls_s for r in mine]
    return {
        "runs": len(mine),
        "ready_p50_s": round(statistics.median(ready), 2),
        "ready_max_s": round(max(ready), 2),
        "tls_p50_s": round(statistics.median(tls), 3),
        "tls_max_s": round(max(tls), 3),
    }


async def main_async(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bbbfleet-startup-") as tmp:
        async with world(Path(tmp), 2 * runs) as w:
            instances = [i.instance_id for i in w.layer.instances()]
            done: list[Run] = []
            for index, instance_id in enumerate(instances[: 2 * runs]):
                run = await one_run(w, MODES[index % 2], instance_id)
                print(
                    f"  {run.mode:<5} {run.instance_id}  ready {run.ready_s:6.2f} s"
                    f"  tls step {run.tls_s:6.3f} s",
                    file=sys.stderr,
                )
                done.append(run)
    return {
        "date": dt.date.today().isoformat(),
        "conditions": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "host": summary(done, "host"),
        "fleet": summary(done, "fleet"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per mode (default 5)")
    parser.add_argument(
        "--out", type=Path, help="write the result JSON here (stdout also carries the sim's logs)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    logs.configure("warning")
    if not available():
        print("benchmarks/startup.py: pebble is not installed (apt-get install pebble)",
              file=sys.stderr)  # fmt: skip
        return 2
    result = asyncio.run(main_async(args.runs))
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    c = result["conditions"]
    print(f"\n{c['cpus']} CPUs, Python {c['python']}, {args.runs} runs per mode, {result['date']}")
    table = TABLES["startup"]
    print(table.header())
    for mode in MODES:
        r = result[mode]
        print(
            table.row(
                LABELS[mode],
                f"{r['ready_p50_s']:.2f} s",
                f"{r['ready_max_s']:.2f} s",
                f"{r['tls_p50_s']:.2f} s",
                f"{r['tls_max_s']:.2f} s",
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
