"""Host snapshots for tests of the parts that read them (drain, protector)."""

from __future__ import annotations

from bbbcore.meetings import Meeting
from bbbnode.recordings import RecordingCounts
from bbbnode.snapshot import Snapshot


def _meeting(i: int) -> Meeting:
    return Meeting(
        meeting_id=f"m{i}",
        internal_meeting_id=f"i{i}",
        name=f"m{i}",
        create_time_ms=0,
        running=True,
        participant_count=2,
        listener_count=0,
        voice_participant_count=0,
        video_count=0,
        moderator_count=1,
        max_users=0,
        is_breakout=False,
    )


def make_snapshot(
    meetings: int | None, pending: int | None, at: float, meetings_at: float | None
) -> Snapshot:
    return Snapshot(
        taken_at=at,
        api_up=meetings is not None,
        meetings=None if meetings is None else tuple(_meeting(i) for i in range(meetings)),
        meetings_at=meetings_at,
        recordings=None if pending is None else RecordingCounts(pending=pending),
    )
