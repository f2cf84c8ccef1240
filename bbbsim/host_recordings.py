"""An emulated BBB host's record-and-playback pipeline: the marker files BBB writes, and the
CPU its worker takes, for the recordings of meetings that ended.

It follows ``bbbsim.recording_processing`` (one worker, in the order the meetings ended,
``ratio`` seconds of work per second of meeting, ``cores`` busy cores meanwhile) and writes
what BBB's workers write under ``/var/bigbluebutton`` (``bbbnode.recordings`` reads them):

- the meeting ends: ``recording/status/recorded/<id>.done`` and ``recording/raw/<id>/``
  (unprocessed, pending);
- the worker takes it: the recorded marker goes, ``status/archived/<id>.done``,
  ``status/sanity/<id>.done`` and ``recording/process/presentation/<id>/`` appear
  (processing, pending);
- the worker is done: ``status/processed/<id>-presentation.done``,
  ``status/published/<id>-presentation.done`` and ``published/presentation/<id>/``; the
  process directory goes (published, nothing pending).
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bbbsim.bbb_emulator import MeetingState
from bbbsim.recording_processing import RecordingSpec

FORMAT = "presentation"


@dataclass(slots=True)
class _Job:
    recording_id: str
    work: float
    queued_at: float


class RecordingPipeline:
    """The recordings of one emulated host, driven by ``observe`` on every tick."""

    def __init__(self, root: Path, spec: RecordingSpec, clock: Callable[[], float]) -> None:
        self._root = root
        self._spec = spec
        self._clock = clock
        self._recorded: dict[str, tuple[str, float]] = {}
        """meeting id -> (recording id, first seen) of running recorded meetings."""
        self._queue: deque[_Job] = deque()
        self._busy_until: float | None = None
        self._free_at = float("-inf")

    @property
    def pending(self) -> int:
        """Recordings queued or being processed."""
        return len(self._queue)

    def busy_cores(self) -> float:
        """Cores the worker takes right now."""
        return self._spec.cores if self._busy_until is not None else 0.0

    def observe(self, meetings: Iterable[MeetingState]) -> float:
        """Queue the recordings of recorded meetings gone since the last call, work the queue
        up to now; returns the worker's busy cores."""
        now = self._clock()
        running = {m.meeting_id: m for m in meetings if not m.forcibly_ended}
        for m in running.values():
            if m.recording and m.meeting_id not in self._recorded:
                self._recorded[m.meeting_id] = (m.internal_meeting_id, now)
        for meeting_id in [k for k in self._recorded if k not in running]:
            recording_id, since = self._recorded.pop(meeting_id)
            self._mark(("recording", "status", "recorded", f"{recording_id}.done"))
            self._dir(("recording", "raw", recording_id))
            self._queue.append(_Job(recording_id, self._spec.seconds(now - since), now))
        self._work(now)
        return self.busy_cores()

    def _work(self, now: float) -> None:
        while self._queue:
            job = self._queue[0]
            if self._busy_until is None:
                self._start(job.recording_id)
                self._busy_until = max(self._free_at, job.queued_at) + job.work
            if self._busy_until > now:
                return
            self._finish(job.recording_id)
            self._queue.popleft()
            self._free_at, self._busy_until = self._busy_until, None

    def _start(self, recording_id: str) -> None:
        (self._root / "recording" / "status" / "recorded" / f"{recording_id}.done").unlink(
            missing_ok=True
        )
        self._mark(("recording", "status", "archived", f"{recording_id}.done"))
        self._mark(("recording", "status", "sanity", f"{recording_id}.done"))
        self._dir(("recording", "process", FORMAT, recording_id))

    def _finish(self, recording_id: str) -> None:
        self._mark(("recording", "status", "processed", f"{recording_id}-{FORMAT}.done"))
        self._mark(("recording", "status", "published", f"{recording_id}-{FORMAT}.done"))
        self._dir(("published", FORMAT, recording_id))
        shutil.rmtree(
            self._root / "recording" / "process" / FORMAT / recording_id, ignore_errors=True
        )

    def _mark(self, parts: tuple[str, ...]) -> None:
        path = self._root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def _dir(self, parts: tuple[str, ...]) -> None:
        self._root.joinpath(*parts).mkdir(parents=True, exist_ok=True)
