"""The /status JSON document: the snapshot for humans and tools, without secrets.

Attendee names and meeting passwords are never included.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bbbcore import __version__
from bbbnode.snapshot import Snapshot, online_moderators


def render(
    snapshot: Snapshot | None, now: float, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON-ready dict of ``snapshot`` as seen at ``now``."""
    doc: dict[str, Any] = {"version": __version__}
    if extra:
        doc.update(extra)
    if snapshot is None:
        doc.update({"collected": False, "api_up": False})
        return doc
    totals = snapshot.totals
    doc.update(
        {
            "collected": True,
            "taken_at": snapshot.taken_at,
            "api_up": snapshot.api_up,
            "api_error": snapshot.api_error,
            "snapshot_age_seconds": snapshot.age(now),
            "cpu_utilization_ratio": snapshot.cpu_ratio,
            "bbb_version": snapshot.bbb_version,
            "has_meeting": snapshot.has_meeting,
            "totals": None
            if totals is None
            else {
                "meetings": totals.meetings,
                "participants": totals.participants,
                "participants_max": totals.participants_max,
                "listeners": totals.listeners,
                "voice_participants": totals.voice_participants,
                "video_participants": totals.video_participants,
                "moderators": totals.moderators,
                "breakout_rooms": totals.breakout_rooms,
            },
            "meetings": None
            if snapshot.meetings is None
            else [
                {
                    "meeting_id": m.meeting_id,
                    "internal_meeting_id": m.internal_meeting_id,
                    "name": m.name,
                    "create_time_ms": m.create_time_ms,
                    "running": m.running,
                    "is_breakout": m.is_breakout,
                    "participants": m.participant_count,
                    "listeners": m.listener_count,
                    "voice_participants": m.voice_participant_count,
                    "video_participants": m.video_count,
                    "moderators": online_moderators(m),
                }
                for m in snapshot.meetings
            ],
            "recordings": None if snapshot.recordings is None else asdict(snapshot.recordings),
            "recordings_error": snapshot.recordings_error,
        }
    )
    return doc
