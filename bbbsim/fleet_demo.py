"""``bbbsim demo``: the whole fleet live on one machine.

moto_server with the lifecycle layer in front; the Scalelite emulator with its
poller; pebble (the ACME test CA, Debian) with its DNS fed from moto's Route53
zone; for every instance the ASG launches an emulated BBB host and a real
``bbbnode`` process (bbbsim.fleet) that installs the fleet certificate from
Secrets Manager; a real ``bbbscaler`` process sizing the group and issuing
that one ``*.{domain}`` certificate; and a time-compressed day of classes. Meetings are
created through Scalelite's API, as a front end creates them, so Scalelite places them
(least load among enabled servers) and forwards the create to the host. The demo never ends
a meeting itself before its time: a meeting whose host disappears counts as
ended by the platform, and the run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from bbbcore.bbb_api import BbbClient, api_base
from bbbcore.fleet_certificate import decode
from bbbcore.meetings import BbbApiError, parse_response
from bbbcore.secret_versions import VersionedSecret
from bbbnode.certificate import CertFiles
from bbbsim.demo import SummaryContract
from bbbsim.fleet import EmulatedFleet, FleetConfig, Instance
from bbbsim.lifecycle_layer import WARMED_STEADY, LifecycleLayer
from bbbsim.lifecycle_layer import serve as serve_layer
from bbbsim.moto_server import FleetSpec, MotoServer, aws_session, create_fleet
from bbbsim.node_process import free_port
from bbbsim.pebble import Pebble, ZoneMirror, available, start_challtestsrv, start_pebble
from bbbsim.router import Router
from bbbsim.scalelite_emulator import ScaleliteEmulator
from bbbsim.scalelite_emulator import serve as serve_scalelite

# The demo's day is compressed about 300 times; so are the scaler's waits.
SCALER_PACE = {
    "BBBSCALER_LOOP__INTERVAL": "1",
    "BBBSCALER_POLICY__SCALE_IN_AFTER": "4",
    "BBBSCALER_POLICY__COOLDOWN": "3",
    "BBBSCALER_POLICY__TREND_WINDOW": "10",
    "BBBSCALER_POLICY__BOOT_TIME": "3",
    "BBBSCALER_POLICY__WARM_START_TIME": "1",
    "BBBSCALER_POLICY__BOOT_GRACE": "60",
    "BBBSCALER_METRICS__STALE_AFTER": "10",
}
BOOT_DELAYS = (3.0, 0.75)
"""How long an emulated host boots before bbbnode starts: cold, and started from the warm
pool (180 s and 45 s compressed as the scaler's pace is, about 60 times)."""
BBB_SECRET = "demo-bbb-secret-0123456789abcdef"  # noqa: S105 - throwaway, loopback only
LB_SECRET = "demo-scalelite-secret-0123456789ab"  # noqa: S105 - throwaway, loopback only


@dataclass(frozen=True, slots=True)
class DemoMeeting:
    """One meeting of the story, its times as fractions of the run."""

    name: str
    start: float
    end: float
    participants: int
    cameras: int


def story() -> tuple[DemoMeeting, ...]:
    """A compressed morning: a steep ramp of classes, most end together, two run long."""
    meetings = [
        DemoMeeting(
            f"class-{k:02d}", 0.04 + 0.022 * k, 0.55 + 0.004 * k, 40 + 3 * (k % 5), 2 + k % 3
        )
        for k in range(14)
    ]
    meetings.append(DemoMeeting("seminar-long", 0.10, 0.97, 12, 1))
    meetings.append(DemoMeeting("office-hours", 0.30, 0.97, 6, 1))
    return tuple(meetings)


@dataclass
class Sample:
    t: float
    nodes: int
    desired: int
    meetings: int
    participants: int
    action: str


@dataclass
class DemoSummary(SummaryContract):
    """The fleet run's outcome: the contract keys plus what the fleet did."""

    final_nodes: int = 0
    meetings_not_created: int = 0
    """Creates Scalelite refused or could not forward to a host (each a line in the log)."""
    time_to_serving_s: float | None = None
    """Seconds from the ramp's first meeting (``scale_out_latency_s``'s start) until the
    first node the scale-out added serves: enabled and online in Scalelite."""
    first_serving_from_warm_pool: bool | None = None
    warm_pool: int = 0
    warm_starts: int = 0
    """Instances started from the warm pool (each with a new public address)."""
    meetings_on_warm_started: int = 0
    """Meetings Scalelite placed on an instance started from the warm pool."""
    certificates_issued: int = 0
    """Orders the CA (pebble) finalized during the run."""
    nodes_launched: int = 0
    nodes_with_fleet_certificate: int = 0
    """Launched nodes whose installed chain is the one in the fleet certificate's secret."""
    decisions: dict[str, int] = field(default_factory=dict)
    bbbscaler_exit_code: int | None = None
    samples: list[Sample] = field(default_factory=list)


def _serving(s: DemoSummary) -> str:
    if s.time_to_serving_s is None:
        return "-"
    how = {None: "", True: " (from the warm pool)", False: " (cold)"}
    return f"{s.time_to_serving_s:.1f} s{how[s.first_serving_from_warm_pool]}"


def summary_table(s: DemoSummary) -> str:
    """The end-of-run table."""
    latency = "-" if s.scale_out_latency_s is None else f"{s.scale_out_latency_s:.1f} s"
    actions = ", ".join(f"{k} {v}" for k, v in sorted(s.decisions.items()))
    rows = [
        ("meetings started", str(s.meetings_started)),
        ("meetings ended normally", str(s.meetings_ended_normally)),
        ("meetings ended by the platform", str(s.meetings_ended_by_platform)),
        ("meetings not created", str(s.meetings_not_created)),
        ("scale-out decision latency", latency),
        ("time to a serving node", _serving(s)),
        (
            "warm pool: size, starts, their meetings",
            f"{s.warm_pool}, {s.warm_starts}, {s.meetings_on_warm_started}",
        ),
        ("nodes (min..max, at the end)", f"{s.min_nodes}..{s.max_nodes}, {s.final_nodes}"),
        ("node-seconds", f"{s.node_seconds:.0f}"),
        (
            "certificates issued / nodes launched",
            f"{s.certificates_issued} / {s.nodes_launched} "
            f"({s.nodes_with_fleet_certificate} serving the fleet certificate)",
        ),
        (
            "scaler actions seen (per second)",
            actions or "-",
        ),
        ("bbbscaler exit code on SIGTERM", str(s.bbbscaler_exit_code)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def progress_line(s: Sample, note: str) -> str:
    return (
        f"t={s.t:5.1f}s  nodes={s.nodes}  desired={s.desired}  meetings={s.meetings:>2}  "
        f"participants={s.participants:>4}  scaler={s.action:<10} {note}"
    )


@dataclass
class World:
    layer: LifecycleLayer
    fleet: EmulatedFleet
    router: Router
    scalelite: ScaleliteEmulator
    scaler_env: dict[str, str]
    asg: str
    workdir: Path
    scalelite_url: str
    """Scalelite's front door (the BBB API a front end such as Greenlight calls)."""
    scaler: asyncio.subprocess.Process | None = None
    """Started by world() only with TLS on (it issues the certificate the nodes wait for)."""
    pebble: Pebble | None = None
    certificate: VersionedSecret | None = None


def _workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.asynccontextmanager
async def world(
    workdir: Path,
    node_env: Mapping[str, str] | None = None,
    *,
    tls: bool = True,
    warm_pool: int = 0,
    boot: tuple[float, float] = (0.0, 0.0),
) -> AsyncIterator[World]:
    """Everything up and the first node registered; with ``tls``, the scaler running too.

    With ``tls`` pebble is the CA and the real bbbscaler issues the fleet certificate
    every node waits for; without, the nodes run with TLS off and the caller starts a
    scaler if it wants one. ``node_env`` is added to every bbbnode's environment
    (benchmarks/footprint.py points the node at another BBB). ``warm_pool``: stopped hosts
    beside the group (with the launch hook); ``boot``: seconds a host boots before its
    bbbnode starts, cold and from the pool.
    """
    challtestsrv = (
        await asyncio.to_thread(start_challtestsrv, _workdir(workdir / "challtestsrv"))
        if tls
        else None
    )
    pebble: Pebble | None = None
    moto = MotoServer()
    endpoint = moto.start()
    env_backup = dict(os.environ)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    layer = LifecycleLayer(endpoint)
    layer_runner, layer_port = await serve_layer(layer, tick_interval=0.5)
    aws = f"http://127.0.0.1:{layer_port}"
    scalelite = ScaleliteEmulator(LB_SECRET)
    sl_runner, sl_port = await serve_scalelite(scalelite)
    scalelite.start_polling(0.5)
    router = Router()
    await router.start()
    fleet: EmulatedFleet | None = None
    scaler: asyncio.subprocess.Process | None = None
    stack = contextlib.AsyncExitStack()
    try:
        spec = FleetSpec(name="bbb-demo", min_size=1, desired=1, max_size=4, warm_pool=warm_pool)
        ids = await create_fleet(aws, spec)
        sl_url = f"http://127.0.0.1:{sl_port}"
        extra = tuple((node_env or {}).items())
        if challtestsrv is None:
            config = FleetConfig(
                ids, aws, sl_url, LB_SECRET, BBB_SECRET, workdir / "fleet", extra_env=extra,
                boot_delay=boot[0], warm_boot_delay=boot[1],
            )  # fmt: skip
            fleet = EmulatedFleet(layer, config, router)
            await fleet.start()
            scaler_env = fleet.scaler_env(
                BBBSCALER_HTTP__LISTEN=f"127.0.0.1:{free_port()}", **SCALER_PACE
            )
            w = World(layer, fleet, router, scalelite, scaler_env, ids.asg_name, workdir, sl_url)
            await _first_node_registered(w)
            await _pool_warmed(w, warm_pool)
            yield w
            return
        pebble = await asyncio.to_thread(start_pebble, challtestsrv, _workdir(workdir / "pebble"))
        session = aws_session()
        # The mirror reads moto itself: through the layer it would observe its own reads.
        direct = await stack.enter_async_context(
            session.create_client("route53", region_name=ids.region, endpoint_url=endpoint)
        )
        secrets = await stack.enter_async_context(
            session.create_client("secretsmanager", region_name=ids.region, endpoint_url=aws)
        )
        mirror = ZoneMirror(direct, ids.hosted_zone_id, challtestsrv)

        async def mirror_txt(service: str, _action: str) -> None:
            # Before the scaler hears its TXT change went through, pebble's DNS has it.
            if service == "route53":
                await mirror.sync()

        stack.callback(layer.add_observer(mirror_txt))
        # As cfn/secrets.yaml makes them: no value until the scaler's first order.
        cert_arn = (await secrets.create_secret(Name="bbb-demo/fleet-certificate"))["ARN"]
        account_arn = (await secrets.create_secret(Name="bbb-demo/acme-account"))["ARN"]
        config = FleetConfig(
            ids, aws, sl_url, LB_SECRET, BBB_SECRET, workdir / "fleet", tls_secret=cert_arn,
            extra_env=extra, boot_delay=boot[0], warm_boot_delay=boot[1],
        )  # fmt: skip
        fleet = EmulatedFleet(layer, config, router)
        await fleet.start()
        scaler_env = fleet.scaler_env(
            BBBSCALER_HTTP__LISTEN=f"127.0.0.1:{free_port()}",
            **SCALER_PACE,
            BBBSCALER_CERTIFICATE__SECRET=cert_arn,
            BBBSCALER_CERTIFICATE__ACCOUNT_SECRET=account_arn,
            BBBSCALER_CERTIFICATE__DOMAIN=ids.domain,
            BBBSCALER_CERTIFICATE__ZONE_ID=ids.hosted_zone_id,
            BBBSCALER_CERTIFICATE__ACME_DIRECTORY=pebble.directory_url,
            BBBSCALER_CERTIFICATE__CA_BUNDLE=str(pebble.ca_bundle),
            BBBSCALER_CERTIFICATE__DNS_PROPAGATION_TIMEOUT="30",
        )
        log = stack.enter_context((workdir / "bbbscaler.log").open("wb"))
        scaler = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bbbscaler.cli", "run",
            env=scaler_env, stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        w = World(
            layer, fleet, router, scalelite, scaler_env, ids.asg_name, workdir, sl_url, scaler,
            pebble, VersionedSecret(secrets, cert_arn),
        )  # fmt: skip
        await _first_node_registered(w)
        await _pool_warmed(w, warm_pool)
        yield w
    finally:
        if scaler is not None and scaler.returncode is None:
            scaler.terminate()
            await scaler.wait()
        if fleet is not None:
            await fleet.close()
        await stack.aclose()
        await scalelite.stop_polling()
        await scalelite.close()
        await sl_runner.cleanup()
        await router.close()
        await layer_runner.cleanup()
        moto.stop()
        if pebble is not None:
            pebble.process.stop()
        if challtestsrv is not None:
            challtestsrv.process.stop()
        os.environ.clear()
        os.environ.update(env_backup)


async def _first_node_registered(w: World) -> None:
    for _ in range(900):
        if any(s.state == "enabled" and s.online for s in w.scalelite.servers()):
            return
        if w.scaler is not None and w.scaler.returncode is not None:
            raise RuntimeError(f"bbbscaler exited {w.scaler.returncode}: see bbbscaler.log")
        await asyncio.sleep(0.1)
    raise RuntimeError("the first node never registered in Scalelite")


async def _pool_warmed(w: World, size: int) -> None:
    """Wait until the warm pool holds ``size`` stopped, ready hosts (warmed before the day)."""
    for _ in range(1200):
        ready = [i for i in w.layer.instances() if i.lifecycle_state in WARMED_STEADY]
        if len(ready) >= size:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the warm pool never had {size} ready hosts")


async def _serving_fleet_certificate(w: World) -> int:
    """Launched nodes whose installed chain (what nginx reads) is the secret's current one."""
    if w.certificate is None:
        return 0
    stored = await w.certificate.read()
    if stored is None:
        return 0
    chain = decode(stored.text).fullchain_pem
    root = w.workdir / "fleet"
    served = [CertFiles().under(root / iid / "hostroot").fullchain for iid in w.fleet.started]
    return sum(1 for path in served if path.is_file() and path.read_bytes() == chain)


async def _status(session: aiohttp.ClientSession, listen: str) -> dict[str, Any] | None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with session.get(f"http://{listen}/status") as resp:
            if resp.status == 200:
                doc: dict[str, Any] = await resp.json()
                return doc
    return None


async def _create(front: BbbClient, w: World, meeting_id: str) -> tuple[Instance | None, str]:
    """Create a meeting as a front end does, through Scalelite (its placement, its load
    count, its forward to the BBB host); the host it landed on, or None and why."""
    try:
        parse_response(
            await front.call("create", [("meetingID", meeting_id), ("name", meeting_id)])
        )
    except BbbApiError as exc:
        return None, str(exc) or type(exc).__name__
    host = next(
        (i for i in w.fleet.instances.values() if i.host.bbb.meeting(meeting_id) is not None),
        None,
    )
    return host, "" if host is not None else "created on no host of the group"


def _public_ip(w: World, instance_id: str) -> str:
    return next(
        (i.public_ip or "?" for i in w.layer.instances() if i.instance_id == instance_id), "?"
    )


async def run(duration: float, out: TextIO, workdir: Path, warm_pool: int = 2) -> DemoSummary:
    """Play the story over ``duration`` seconds against the live fleet."""
    summary = DemoSummary(warm_pool=warm_pool)
    pending = sorted(story(), key=lambda m: m.start)
    running: dict[str, tuple[DemoMeeting, str]] = {}  # name -> (meeting, instance id)
    async with world(workdir, warm_pool=warm_pool, boot=BOOT_DELAYS) as w:
        serving_before = {s.url for s in w.scalelite.servers() if s.state == "enabled"}
        from_pool: set[str] = set()
        listen = w.scaler_env["BBBSCALER_HTTP__LISTEN"]
        scaler = w.scaler
        assert scaler is not None, "world(tls=True) starts the scaler"
        out.write(f"bbbsim demo: fleet {w.asg} up; bbbscaler on {listen}; {duration:.0f}s\n")
        started = time.monotonic()
        ramp_at: float | None = None
        first_desired = len(w.fleet.instances)
        last_action = "-"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                front = BbbClient(session, api_base(w.scalelite_url + "/bigbluebutton"), LB_SECRET)
                while (now := time.monotonic() - started) < duration:
                    notes: list[str] = []
                    for event in w.layer.events():
                        if event.kind == "started" and event.instance_id not in from_pool:
                            from_pool.add(event.instance_id)
                            notes.append(
                                f"{event.instance_id} started from the warm pool at "
                                f"{_public_ip(w, event.instance_id)}"
                            )
                    for name, (meeting, iid) in list(running.items()):
                        inst = w.fleet.instances.get(iid)
                        if inst is None:
                            summary.meetings_ended_by_platform += 1
                            notes.append(f"!! {name} lost with {iid}")
                            del running[name]
                        elif meeting.end * duration <= now:
                            inst.host.bbb.end_meeting(name)
                            summary.meetings_ended_normally += 1
                            del running[name]
                    while pending and pending[0].start * duration <= now:
                        meeting = pending.pop(0)
                        inst, why = await _create(front, w, meeting.name)
                        if inst is None:
                            summary.meetings_not_created += 1
                            notes.append(f"!! {meeting.name} not created: {why}")
                            continue
                        # The users join the BBB host Scalelite chose (their joins are not
                        # counted in its load until the next poll, 0.5 s here).
                        voice = meeting.participants // 4
                        inst.host.bbb.set_participants(
                            meeting.name, meeting.participants, voice=voice,
                            cameras=meeting.cameras, listeners=meeting.participants - voice,
                        )  # fmt: skip
                        running[meeting.name] = (meeting, inst.instance_id)
                        summary.meetings_started += 1
                        if inst.instance_id in from_pool:
                            summary.meetings_on_warm_started += 1
                        ramp_at = ramp_at if ramp_at is not None else now
                    status = await _status(session, listen)
                    target = status["desired"]["target"] if status else None
                    desired = first_desired
                    if status:
                        desired = int(
                            target if target is not None else status["desired"]["current"]
                        )
                    action = str(status["action"]) if status else "-"
                    if status and action != "none":
                        summary.decisions[action] = summary.decisions.get(action, 0) + 1
                        last_action = action
                    # The round's target, or the group's desired once raised: on a loaded
                    # machine this loop can miss the round that set it (the next one reports
                    # none), and the latency is then read one poll late, not lost.
                    if (
                        summary.scale_out_latency_s is None
                        and ramp_at is not None
                        and desired > first_desired
                    ):
                        summary.scale_out_latency_s = round(now - ramp_at, 1)
                    if summary.time_to_serving_s is None and ramp_at is not None:
                        new = [
                            s.url for s in w.scalelite.servers()
                            if s.state == "enabled" and s.online and s.url not in serving_before
                        ]  # fmt: skip
                        if new:
                            summary.time_to_serving_s = round(now - ramp_at, 1)
                            iid = w.router.instance_of(new[0]) or "?"
                            summary.first_serving_from_warm_pool = iid in from_pool
                            notes.append(f"{iid} serves ({'warm' if iid in from_pool else 'cold'})")
                    nodes = sum(
                        1 for i in w.layer.instances()
                        if i.group == w.asg and i.lifecycle_state == "InService"
                    )  # fmt: skip
                    sample = Sample(
                        round(now, 1), nodes, desired, len(running),
                        sum(m.participants for m, _ in running.values()), last_action,
                    )  # fmt: skip
                    summary.samples.append(sample)
                    out.write(progress_line(sample, "  ".join(notes)) + "\n")
                    out.flush()
                    await asyncio.sleep(1.0)
        finally:
            for name, (_, iid) in running.items():
                inst = w.fleet.instances.get(iid)
                if inst is not None:
                    inst.host.bbb.end_meeting(name)
            if scaler.returncode is None:
                scaler.terminate()
            summary.bbbscaler_exit_code = await scaler.wait()
            summary.certificates_issued = 0 if w.pebble is None else w.pebble.certificates_issued()
            summary.nodes_launched = len(w.fleet.started)
            summary.warm_starts = len(from_pool)
            summary.nodes_with_fleet_certificate = await _serving_fleet_certificate(w)
    if summary.samples:
        counts = [s.nodes for s in summary.samples]
        summary.max_nodes, summary.min_nodes = max(counts), min(counts)
        summary.final_nodes = counts[-1]
        summary.node_seconds = float(sum(counts))  # one sample per second
    return summary


def plot(summary: DemoSummary, path: Path) -> None:
    """The timeline: participants, nodes and desired capacity, scaler actions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in summary.samples]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [s.participants for s in summary.samples], color="tab:blue", label="participants")
    ax.set_xlabel("seconds")
    ax.set_ylabel("participants")
    nodes_ax = ax.twinx()
    nodes_ax.step(t, [s.nodes for s in summary.samples], where="post", color="tab:green",
                  label="nodes in service")  # fmt: skip
    nodes_ax.step(t, [s.desired for s in summary.samples], where="post", color="tab:orange",
                  linestyle="--", label="desired")  # fmt: skip
    nodes_ax.set_ylabel("nodes")
    shown: set[str] = set()
    for prev, cur in zip(summary.samples, summary.samples[1:], strict=False):
        if cur.action != prev.action and cur.action not in ("-", "none", "hold"):
            nodes_ax.axvline(cur.t, color="grey", alpha=0.3)
            nodes_ax.annotate(cur.action, (cur.t, cur.nodes), fontsize=7, rotation=90)
            shown.add(cur.action)
    lines = ax.get_legend_handles_labels()[0] + nodes_ax.get_legend_handles_labels()[0]
    ax.legend(lines, [str(h.get_label()) for h in lines], loc="upper right", fontsize=8)
    ax.set_title("bbbsim demo: load, capacity and the scaler's decisions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(duration: float, summary_json: Path | None, plot_png: Path | None,
         out: TextIO = sys.stdout, warm_pool: int = 2) -> int:  # fmt: skip
    """Entry of ``bbbsim demo``; exit 0 only if every meeting was created and none ended,
    the fleet moved and one certificate served every node."""
    if not available():
        sys.stderr.write("bbbsim demo: pebble is not installed (apt-get install pebble)\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="bbbsim-demo-") as tmp:
        summary = asyncio.run(run(duration, out, Path(tmp), warm_pool))
    out.write("\nsummary\n" + summary_table(summary) + "\n")
    # The summary is kept before the picture is drawn: a failing plot loses no result.
    if summary_json is not None:
        doc = asdict(summary)
        doc.pop("samples")
        summary_json.write_text(json.dumps(doc, indent=2) + "\n")
    png = plot_png if plot_png is not None else Path("bbbsim-demo.png")
    plot(summary, png)
    out.write(f"timeline: {png}\n")
    ok = (
        summary.meetings_ended_by_platform == 0
        and summary.meetings_not_created == 0
        and summary.meetings_started > 0
        and summary.max_nodes > summary.min_nodes
        and summary.bbbscaler_exit_code == 0
        and summary.certificates_issued == 1
        and summary.nodes_with_fleet_certificate == summary.nodes_launched
    )
    return 0 if ok else 1
