"""What bbbnode knows about its host at one moment: an immutable snapshot.

The collector builds one per poll; /metrics, /status, the protector and the
drain read the latest. Aggregates are computed once here, at collection time,
so a scrape costs the same with 10 meetings or 10,000.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from bbbcore.meetings import Meeting

if TYPE_CHECKING:
    from bbbnode.recordings import RecordingCounts

ROOM_PARTICIPANT_BUCKETS: tuple[float, ...] = (
    0, 1, 5, 15, 30, 60, 90, 120, 150, 200, 250, 300, 400, 500, math.inf,
)  # fmt: skip
ROOM_VOICE_BUCKETS: tuple[float, ...] = (0, 1, 5, 15, 30, 60, 90, 120, math.inf)
"""bbb-exporter's default buckets, kept so its dashboards read the same."""

# bbb-exporter always reports these client types, even at 0.
KNOWN_CLIENTS: tuple[str, ...] = ("html5", "dial-in")


@dataclass(frozen=True, slots=True)
class GaugeHistogram:
    """Cumulative bucket counts plus the sum, as a Prometheus gauge histogram."""

    buckets: tuple[tuple[float, int], ...]
    total: float

    @classmethod
    def of(cls, values: Sequence[int], bounds: Sequence[float]) -> GaugeHistogram:
        """Bucket ``values`` into cumulative ``bounds`` (the last bound must be +Inf)."""
        counts = [0] * len(bounds)
        for value in values:
            for i, bound in enumerate(bounds):
                if value <= bound:
                    counts[i] += 1
                    break
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip(bounds, counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cls(tuple(cumulative), float(sum(values)))


@dataclass(frozen=True, slots=True)
class MeetingTotals:
    """Fleet-facing sums over one host's meetings (bbb-exporter's gauges)."""

    meetings: int
    participants: int
    participants_max: int
    listeners: int
    voice_participants: int
    video_participants: int
    moderators: int
    breakout_rooms: int
    by_client: Mapping[str, int]
    by_origin: Mapping[tuple[str, str], int]
    room_participants: GaugeHistogram
    room_listeners: GaugeHistogram
    room_voice_participants: GaugeHistogram
    room_video_participants: GaugeHistogram


def online_moderators(meeting: Meeting) -> int:
    """``moderatorCount``, never more than the meeting's users online.

    BBB 3.0's getMeetings counts participantCount over users online only
    (get-meetings.ftlx: ``meeting.getNumUsersOnline()``, bigbluebutton#15993) but
    moderatorCount over every user still in bbb-web's memory, left ones included,
    for ``usersTimeout`` (60 s) after they leave (Meeting.java ``getNumModerators``,
    fixed only by bigbluebutton#21766, Nov 2024). Clamped, the number is exact on a
    fixed bbb-web, 0 for a meeting nobody is in, and otherwise an upper bound for
    at most a minute.
    """
    return min(meeting.moderator_count, meeting.participant_count)


def summarize(meetings: Sequence[Meeting]) -> MeetingTotals:
    """Aggregate meetings the way bbb-exporter's metrics define them."""
    clients: dict[str, int] = dict.fromkeys(KNOWN_CLIENTS, 0)
    origins: dict[tuple[str, str], int] = {}
    for meeting in meetings:
        for client, count in meeting.clients:
            key = client.lower()
            clients[key] = clients.get(key, 0) + count
        if meeting.participant_count:
            origin = (
                meeting.metadata.get("bbb-origin-server-name", "").lower(),
                meeting.metadata.get("bbb-origin", "").lower(),
            )
            origins[origin] = origins.get(origin, 0) + meeting.participant_count
    participants = [m.participant_count for m in meetings]
    listeners = [m.listener_count for m in meetings]
    voice = [m.voice_participant_count for m in meetings]
    video = [m.video_count for m in meetings]
    return MeetingTotals(
        meetings=len(meetings),
        participants=sum(participants),
        participants_max=max(participants, default=0),
        listeners=sum(listeners),
        voice_participants=sum(voice),
        video_participants=sum(video),
        moderators=sum(online_moderators(m) for m in meetings),
        breakout_rooms=sum(1 for m in meetings if m.is_breakout),
        by_client=MappingProxyType(clients),
        by_origin=MappingProxyType(origins),
        room_participants=GaugeHistogram.of(participants, ROOM_PARTICIPANT_BUCKETS),
        room_listeners=GaugeHistogram.of(listeners, ROOM_PARTICIPANT_BUCKETS),
        room_voice_participants=GaugeHistogram.of(voice, ROOM_VOICE_BUCKETS),
        room_video_participants=GaugeHistogram.of(video, ROOM_VOICE_BUCKETS),
    )


@dataclass(frozen=True, slots=True)
class UniqueCounter:
    """bbb-exporter's unique-meeting counters: IDs new since the previous poll."""

    total: int = 0
    last_seen: frozenset[str] = frozenset()

    def advance(self, ids: Iterable[str]) -> UniqueCounter:
        current = frozenset(ids)
        return UniqueCounter(self.total + len(current - self.last_seen), current)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The host at one poll. ``None`` means unknown, never zero.

    ``meetings``/``totals`` are None when the last getMeetings failed: the
    exporter then omits the meeting gauges rather than reporting an empty host,
    and ``meetings_at`` (the last good read) shows how old the last truth is.
    """

    taken_at: float
    """Wall-clock time of this poll (unix seconds)."""
    api_up: bool
    api_error: str | None = None
    meetings: tuple[Meeting, ...] | None = None
    totals: MeetingTotals | None = None
    meetings_at: float | None = None
    """Wall-clock time of the last successful getMeetings."""
    recordings: RecordingCounts | None = None
    recordings_error: str | None = None
    cpu_ratio: float | None = None
    bbb_version: str | None = None
    unique_meetings: UniqueCounter = field(default_factory=UniqueCounter)
    unique_breakouts: UniqueCounter = field(default_factory=UniqueCounter)

    @property
    def has_meeting(self) -> bool | None:
        """True/False when known; None when BBB could not be read."""
        return None if self.meetings is None else len(self.meetings) > 0

    def age(self, now: float) -> float | None:
        """Seconds since the last successful meetings read, None if never."""
        return None if self.meetings_at is None else max(0.0, now - self.meetings_at)
