"""``bbbsim demo``: the whole fleet live on one machine.

moto_server with the lifecycle layer in front; the Scalelite emulator with its
poller; for every instance the ASG launches an emulated BBB host and a real
``bbbnode`` process (bbbsim.fleet); a real ``bbbscaler`` process sizing the
group; and a time-compressed day of classes. Meetings are placed by
Scalelite's own rule (least load among enabled servers). The demo never ends
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

from bbbcore.scalelite import place_meeting
from bbbsim.demo import SummaryContract
from bbbsim.fleet import EmulatedFleet, FleetConfig
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.lifecycle_layer import serve as serve_layer
from bbbsim.moto_server import FleetSpec, MotoServer, create_fleet
from bbbsim.node_process import free_port
from bbbsim.router import Router
from bbbsim.scalelite_emulator import ScaleliteEmulator
from bbbsim.scalelite_emulator import serve as serve_scalelite

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
    decisions: dict[str, int] = field(default_factory=dict)
    bbbscaler_exit_code: int | None = None
    samples: list[Sample] = field(default_factory=list)


def summary_table(s: DemoSummary) -> str:
    """The end-of-run table."""
    latency = "-" if s.scale_out_latency_s is None else f"{s.scale_out_latency_s:.1f} s"
    actions = ", ".join(f"{k} {v}" for k, v in sorted(s.decisions.items()))
    rows = [
        ("meetings started", str(s.meetings_started)),
        ("meetings ended normally", str(s.meetings_ended_normally)),
        ("meetings ended by the platform", str(s.meetings_ended_by_platform)),
        ("scale-out decision latency", latency),
        ("nodes (min..max, at the end)", f"{s.min_nodes}..{s.max_nodes}, {s.final_nodes}"),
        ("node-seconds", f"{s.node_seconds:.0f}"),
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


@contextlib.asynccontextmanager
async def world(workdir: Path, node_env: Mapping[str, str] | None = None) -> AsyncIterator[World]:
    """Everything but the scaler, up and with its first node registered.

    ``node_env`` is added to every bbbnode's environment (benchmarks/footprint.py
    points the node at another BBB).
    """
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
    try:
        ids = await create_fleet(aws, FleetSpec(name="bbb-demo", min_size=1, desired=1, max_size=4))
        sl_url = f"http://127.0.0.1:{sl_port}"
        config = FleetConfig(
            ids, aws, sl_url, LB_SECRET, BBB_SECRET, workdir / "fleet",
            extra_env=tuple((node_env or {}).items()),
        )  # fmt: skip
        fleet = EmulatedFleet(layer, config, router)
        await fleet.start()
        scaler_env = fleet.scaler_env(
            BBBSCALER_HTTP__LISTEN=f"127.0.0.1:{free_port()}",
            # The demo's day is compressed about 300 times; so are the scaler's waits.
            BBBSCALER_LOOP__INTERVAL="1",
            BBBSCALER_POLICY__SCALE_IN_AFTER="4",
            BBBSCALER_POLICY__COOLDOWN="3",
            BBBSCALER_POLICY__TREND_WINDOW="10",
            BBBSCALER_POLICY__BOOT_TIME="3",
            BBBSCALER_POLICY__BOOT_GRACE="60",
            BBBSCALER_METRICS__STALE_AFTER="10",
        )
        w = World(layer, fleet, router, scalelite, scaler_env, ids.asg_name, workdir)
        for _ in range(600):
            if any(s.state == "enabled" and s.online for s in scalelite.servers()):
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("the first node never registered in Scalelite")
        yield w
    finally:
        if fleet is not None:
            await fleet.close()
        await scalelite.stop_polling()
        await scalelite.close()
        await sl_runner.cleanup()
        await router.close()
        await layer_runner.cleanup()
        moto.stop()
        os.environ.clear()
        os.environ.update(env_backup)


async def _status(session: aiohttp.ClientSession, listen: str) -> dict[str, Any] | None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with session.get(f"http://{listen}/status") as resp:
            if resp.status == 200:
                doc: dict[str, Any] = await resp.json()
                return doc
    return None


async def run(duration: float, out: TextIO, workdir: Path) -> DemoSummary:
    """Play the story over ``duration`` seconds against the live fleet."""
    summary = DemoSummary()
    pending = sorted(story(), key=lambda m: m.start)
    running: dict[str, tuple[DemoMeeting, str]] = {}  # name -> (meeting, instance id)
    async with world(workdir) as w:
        listen = w.scaler_env["BBBSCALER_HTTP__LISTEN"]
        log = (workdir / "bbbscaler.log").open("wb")
        scaler = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bbbscaler.cli", "run",
            env=w.scaler_env, stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        out.write(f"bbbsim demo: fleet {w.asg} up; bbbscaler on {listen}; {duration:.0f}s\n")
        started = time.monotonic()
        ramp_at: float | None = None
        first_desired = len(w.fleet.instances)
        last_action = "-"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                while (now := time.monotonic() - started) < duration:
                    notes: list[str] = []
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
                        server_id = place_meeting(w.scalelite.snapshot())
                        if server_id is None:
                            notes.append(f"no server for {meeting.name}")
                            continue
                        host_id = w.router.instance_of(w.scalelite.server(server_id).url)
                        inst = w.fleet.instances.get(host_id) if host_id else None
                        if inst is None:
                            continue
                        voice = meeting.participants // 4
                        inst.host.bbb.add_meeting(
                            meeting.name, meeting.participants, voice=voice,
                            cameras=meeting.cameras, listeners=meeting.participants - voice,
                        )  # fmt: skip
                        running[meeting.name] = (meeting, inst.instance_id)
                        summary.meetings_started += 1
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
                    if (
                        summary.scale_out_latency_s is None
                        and ramp_at is not None
                        and target is not None
                        and int(target) > first_desired
                    ):
                        summary.scale_out_latency_s = round(now - ramp_at, 1)
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
            log.close()
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
         out: TextIO = sys.stdout) -> int:  # fmt: skip
    """Entry of ``bbbsim demo``; exit 0 only if no meeting was ended and the fleet moved."""
    with tempfile.TemporaryDirectory(prefix="bbbsim-demo-") as tmp:
        summary = asyncio.run(run(duration, out, Path(tmp)))
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
        and summary.meetings_started > 0
        and summary.max_nodes > summary.min_nodes
        and summary.bbbscaler_exit_code == 0
    )
    return 0 if ok else 1
