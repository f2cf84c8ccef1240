"""``bbbsim demo``: one emulated BBB host and a real bbbnode process, live.

A short scripted story: meetings start, BBB goes down for a while (bbbnode
reports ``bbb_api_up 0`` and omits the meeting gauges rather than reporting an
empty host), BBB comes back, meetings end, bbbnode stops cleanly on SIGTERM.
The scaler issue grows this into the full fleet demo.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bbbsim.bbb_emulator import FaultMode
from bbbsim.host import EmulatedHost, start_host
from bbbsim.node_process import NodeProcess, free_port, node_env, start_node

SECRET = "demo-secret-0123456789abcdef"  # noqa: S105 - a throwaway secret for loopback


@dataclass
class Reading:
    """What one scrape of bbbnode showed."""

    t: float
    api_up: float | None
    meetings: float | None
    participants: float | None
    cpu: float | None
    age: float | None
    scrape_ms: float


@dataclass
class SummaryContract:
    """What every demo reports; these JSON keys are a contract (see README)."""

    meetings_started: int = 0
    meetings_ended_normally: int = 0
    meetings_ended_by_platform: int = 0
    scale_out_latency_s: float | None = None
    max_nodes: int = 0
    min_nodes: int = 0
    node_seconds: float = 0.0


@dataclass
class DemoSummary(SummaryContract):
    """The single-host story's outcome: one node throughout."""

    max_nodes: int = 1
    min_nodes: int = 1
    max_participants_seen: int = 0
    outage_detected: bool = False
    zeros_reported_during_outage: bool = False
    scrape_p50_ms: float = 0.0
    bbbnode_exit_code: int | None = None
    readings: list[Reading] = field(default_factory=list)


def parse_reading(t: float, text: str, scrape_ms: float) -> Reading:
    """The few values the demo shows, from an exposition text; None when absent."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return Reading(
        t=t,
        api_up=values.get("bbb_api_up"),
        meetings=values.get("bbb_meetings"),
        participants=values.get("bbb_meetings_participants"),
        cpu=values.get("bbbnode_cpu_utilization_ratio"),
        age=values.get("bbbnode_snapshot_age_seconds"),
        scrape_ms=scrape_ms,
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def progress_line(r: Reading, note: str) -> str:
    """One line of the live display."""
    return (
        f"t={r.t:5.1f}s  api_up={_fmt(r.api_up, '.0f')}  meetings={_fmt(r.meetings, '.0f'):>3}  "
        f"participants={_fmt(r.participants, '.0f'):>4}  cpu={_fmt(r.cpu, '.2f')}  "
        f"age={_fmt(r.age, '.1f')}s  scrape={r.scrape_ms:.1f}ms  {note}"
    )


def summary_table(s: DemoSummary) -> str:
    """The end-of-run table."""
    rows = [
        ("meetings started", str(s.meetings_started)),
        ("meetings ended normally", str(s.meetings_ended_normally)),
        ("meetings ended by the platform", str(s.meetings_ended_by_platform)),
        ("nodes (min..max)", f"{s.min_nodes}..{s.max_nodes}"),
        ("node-seconds", f"{s.node_seconds:.0f}"),
        ("most participants seen", str(s.max_participants_seen)),
        ("BBB outage seen as api_up=0", "yes" if s.outage_detected else "NO"),
        ("zeros reported during outage", "YES" if s.zeros_reported_during_outage else "no"),
        ("scrape latency p50", f"{s.scrape_p50_ms:.2f} ms"),
        ("bbbnode exit code on SIGTERM", str(s.bbbnode_exit_code)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


Step = Callable[[EmulatedHost, DemoSummary], None]


def _start(meeting_id: str, participants: int, cameras: int, voice: int) -> Step:
    def step(host: EmulatedHost, summary: DemoSummary) -> None:
        host.bbb.add_meeting(
            meeting_id, participants, cameras=cameras, voice=voice,
            listeners=participants - voice, metadata={"bbb-origin": "demo"},
        )  # fmt: skip
        summary.meetings_started += 1

    return step


def _end(meeting_id: str) -> Step:
    def step(host: EmulatedHost, summary: DemoSummary) -> None:
        if host.bbb.end_meeting(meeting_id, keep=False):
            summary.meetings_ended_normally += 1

    return step


def _both(*steps: Step) -> Step:
    def step(host: EmulatedHost, summary: DemoSummary) -> None:
        for each in steps:
            each(host, summary)

    return step


def _fault(mode: FaultMode) -> Step:
    def step(host: EmulatedHost, _: DemoSummary) -> None:
        host.bbb.set_fault(mode)

    return step


# (fraction of the run, label, action)
STORY: tuple[tuple[float, str, Step], ...] = (
    (0.10, "lecture starts (60 users, 2 cameras)", _start("lecture-1", 60, 2, 8)),
    (0.20, "seminar starts (14 users, 6 cameras)", _start("seminar-2", 14, 6, 14)),
    (0.30, "all-hands starts (120 users)", _start("all-hands", 120, 1, 10)),
    (0.50, "BBB goes down", _fault(FaultMode.DOWN)),
    (0.65, "BBB is back", _fault(FaultMode.NONE)),
    (0.80, "lecture and all-hands end", _both(_end("lecture-1"), _end("all-hands"))),
    (0.90, "seminar ends", _end("seminar-2")),
)  # fmt: skip


async def _scrape(session: aiohttp.ClientSession, node: NodeProcess, t: float) -> Reading | None:
    started = time.perf_counter()
    try:
        async with session.get(node.metrics_url) as resp:
            text = await resp.text()
    except aiohttp.ClientError:
        return None
    return parse_reading(t, text, (time.perf_counter() - started) * 1000)


async def _until(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def run(duration: float, out: TextIO, workdir: Path) -> DemoSummary:
    """Play the story over ``duration`` seconds and return what was observed."""
    summary = DemoSummary()
    host = await start_host("i-0demo0000000001", workdir, SECRET)
    port = free_port()
    poll = 0.5
    node = await start_node(node_env(host, SECRET, port, poll), port, workdir / "bbbnode.log")
    out.write(f"bbbsim demo: emulated BBB on {host.url}, bbbnode metrics on {node.metrics_url}\n")
    in_outage = False
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:

            async def ready() -> bool:
                if node.process.returncode is not None:
                    raise RuntimeError(f"bbbnode exited: {node.log_path.read_text()}")
                try:
                    async with session.get(node.metrics_url.replace("/metrics", "/readyz")) as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            if not await _until(ready, 30):
                raise RuntimeError(f"bbbnode never became ready: {node.log_path.read_text()}")
            started = time.monotonic()
            pending = list(STORY)
            while (now := time.monotonic() - started) < duration:
                note = ""
                while pending and pending[0][0] * duration <= now:
                    _, label, action = pending.pop(0)
                    action(host, summary)
                    in_outage = label == "BBB goes down" or (in_outage and label != "BBB is back")
                    note = f"<- {label}"
                host.tick()
                reading = await _scrape(session, node, now)
                if reading is not None:
                    summary.readings.append(reading)
                    if in_outage and reading.api_up == 0:
                        summary.outage_detected = True
                        if reading.meetings == 0:
                            summary.zeros_reported_during_outage = True
                    summary.max_participants_seen = max(
                        summary.max_participants_seen, int(reading.participants or 0)
                    )
                    out.write(progress_line(reading, note) + "\n")
                    out.flush()
                await asyncio.sleep(1.0)
            summary.node_seconds = time.monotonic() - started
    finally:
        summary.bbbnode_exit_code = await node.stop()
        await host.stop()
    if summary.readings:
        summary.scrape_p50_ms = statistics.median(r.scrape_ms for r in summary.readings)
    return summary


def main(duration: float, summary_json: Path | None, out: TextIO = sys.stdout) -> int:
    """Entry of ``bbbsim demo``; exit 0 only if the story went as it must."""
    with tempfile.TemporaryDirectory(prefix="bbbsim-demo-") as tmp:
        summary = asyncio.run(run(duration, out, Path(tmp)))
    out.write("\nsummary\n" + summary_table(summary) + "\n")
    if summary_json is not None:
        doc = asdict(summary)
        doc.pop("readings")
        summary_json.write_text(json.dumps(doc, indent=2) + "\n")
    ok = (
        summary.meetings_ended_by_platform == 0
        and summary.outage_detected
        and not summary.zeros_reported_during_outage
        and summary.bbbnode_exit_code == 0
    )
    return 0 if ok else 1
