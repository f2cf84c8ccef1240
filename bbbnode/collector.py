"""The collector: polls BBB, scans recordings, samples CPU, publishes one Snapshot.

It is the only part of bbbnode that talks to BBB. Failures are counted by
reason and turn into ``None`` fields of the snapshot (unknown), never zeros.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bbbcore import logs
from bbbcore.bbb_api import BbbClient, Unreachable
from bbbcore.meetings import FailedResponse, MalformedResponse, Meeting
from bbbnode import recordings
from bbbnode.cpu import CpuSampler
from bbbnode.exposition import NodeMetrics
from bbbnode.snapshot import Snapshot, UniqueCounter, summarize

log = logs.get(__name__)


def read_bbb_version(release_file: Path) -> str | None:
    """``BIGBLUEBUTTON_RELEASE`` from bigbluebutton-release, None if absent."""
    try:
        text = release_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "BIGBLUEBUTTON_RELEASE" and value.strip():
            return value.strip()
    return None


class Collector:
    """Builds snapshots; ``latest`` is what every reader sees."""

    def __init__(
        self,
        client: BbbClient,
        metrics: NodeMetrics,
        cpu: CpuSampler | None,
        recordings_root: Path | None,
        release_file: Path | None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._cpu = cpu
        self._recordings_root = recordings_root
        self._release_file = release_file
        self._clock = clock
        self._monotonic = monotonic
        self.latest: Snapshot | None = None
        self._scanned: recordings.Scanned | None = None
        self.last_cycle_at: float | None = None
        """Monotonic time the last cycle finished, good or bad (for the watchdog)."""
        self._first = asyncio.Event()

    async def wait_first(self) -> Snapshot:
        """Return once the first cycle has finished."""
        await self._first.wait()
        assert self.latest is not None
        return self.latest

    def _error(self, reason: str, error: str) -> None:
        self._metrics.collect_errors.labels(reason).inc()
        log.warning("collect_failed", reason=reason, error=error)

    async def _meetings(self) -> tuple[tuple[Meeting, ...] | None, str | None]:
        started = self._monotonic()
        try:
            meetings = await self._client.get_meetings()
        except Unreachable as exc:
            self._error("bbb_unreachable", str(exc))
            return None, f"unreachable: {exc}"
        except FailedResponse as exc:
            # checksumError here means a wrong secret: the API is not usable, so not "up".
            self._error("bbb_failed", str(exc))
            return None, f"failed: {exc.message_key}"
        except MalformedResponse as exc:
            self._error("bbb_malformed", str(exc))
            return None, f"malformed: {exc}"
        finally:
            self._metrics.api_latency.labels("getMeetings", "").observe(self._monotonic() - started)
        return meetings, None

    async def _recordings(self) -> tuple[recordings.RecordingCounts | None, str | None]:
        if self._recordings_root is None:
            return None, None
        try:
            scanned = await asyncio.to_thread(
                recordings.rescan, self._recordings_root, self._scanned
            )
        except OSError as exc:
            self._error("recordings", repr(exc))
            return None, str(exc)
        self._scanned = scanned
        return scanned.counts, None

    def _cpu_ratio(self) -> float | None:
        if self._cpu is None:
            return None
        try:
            self._cpu.sample()
        except (OSError, ValueError) as exc:
            self._error("cpu", repr(exc))
            return None
        return self._cpu.ratio()

    def _version(self) -> str | None:
        if self._release_file is None:
            return None
        try:
            return read_bbb_version(self._release_file)
        except OSError as exc:
            self._error("bbb_version", repr(exc))
            return None

    async def collect_once(self) -> Snapshot:
        """One cycle; always publishes a snapshot, whatever failed."""
        started = self._monotonic()
        previous = self.latest
        (meetings, api_error), (rec, rec_error) = await asyncio.gather(
            self._meetings(), self._recordings()
        )
        now = self._clock()
        unique_meetings = previous.unique_meetings if previous else UniqueCounter()
        unique_breakouts = previous.unique_breakouts if previous else UniqueCounter()
        meetings_at = previous.meetings_at if previous else None
        if meetings is not None:
            meetings_at = now
            unique_meetings = unique_meetings.advance(
                m.internal_meeting_id for m in meetings if not m.is_breakout
            )
            unique_breakouts = unique_breakouts.advance(
                m.internal_meeting_id for m in meetings if m.is_breakout
            )
        snapshot = Snapshot(
            taken_at=now,
            api_up=meetings is not None,
            api_error=api_error,
            meetings=meetings,
            totals=None if meetings is None else summarize(meetings),
            meetings_at=meetings_at,
            recordings=rec,
            recordings_error=rec_error,
            cpu_ratio=self._cpu_ratio(),
            bbb_version=self._version(),
            unique_meetings=unique_meetings,
            unique_breakouts=unique_breakouts,
        )
        self.latest = snapshot
        self.last_cycle_at = self._monotonic()
        self._metrics.collect_duration.observe(self.last_cycle_at - started)
        self._first.set()
        return snapshot

    async def run(
        self, interval: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """Collect every ``interval`` seconds, measured start to start."""
        while True:
            started = self._monotonic()
            await self.collect_once()
            elapsed = self._monotonic() - started
            await sleep(max(0.0, interval - elapsed))
