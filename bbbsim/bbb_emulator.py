"""An emulated BigBlueButton API (bbb-web) with the XML shape of BBB 2.6/3.0.

``EmulatedBbb`` holds one host's meetings and answers ``/bigbluebutton/api/``
calls the way bbb-web does: checksum ``H(call + query + secret)`` checked by
length against ``supportedChecksumAlgorithms``, errors as ``returncode`` FAILED
with HTTP 200, ``noMeetings`` for an empty server. Tests and the simulator
change its state synchronously (meetings, participants, faults) while aiohttp
serves it. Counts in the XML are derived from the attendee list the way
bbb-web derives them from its users, including the unkind part: a user who
left stays in the attendee list and in ``moderatorCount`` until bbb-web forgets
him, while ``participantCount`` counts only users online. Meetings end by
themselves as akka-apps ends them: nobody joined within 5 minutes, the last
user left a minute ago (counted from when akka-apps removes him, after a grace for
a reconnect), or over their ``duration`` (``expires_at_ms``), checked on the
meeting's 10 s audit tick.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bbbcore import bbb_secret, checksum, logs
from bbbsim.host_model import DEFAULT_CORES, HostLoad, cpu_utilization, meeting_load, total_load

log = logs.get(__name__)

API_PATH = "/bigbluebutton/api"
ROOT_CALL = ""
"""Key under which requests to the API root are counted."""
CALLS = ("getMeetings", "create", "join", "end", "isMeetingRunning", "getMeetingInfo")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")
_DIAL_NUMBER = "613-555-1234"
_NO_MEETINGS = "no meetings were found on this server"
USERS_TIMEOUT_S = 60.0
"""bbb-web's ``usersTimeout`` (60000 ms in bigbluebutton.properties): how long a user who
left stays in its memory, hence in getMeetings' attendees, for a possible rejoin."""
EXPIRE_IF_NO_USER_JOINED_S = 300.0
"""bbb-web's ``meetingExpireIfNoUserJoinedInMinutes`` (5 in bigbluebutton-web/grails-app/
conf/bigbluebutton.properties at 0001331): a meeting nobody joined ends this long after its
create."""
EXPIRE_WHEN_LAST_USER_LEFT_S = 60.0
"""bbb-web's ``meetingExpireWhenLastUserLeftInMinutes`` (1 in the same file): a meeting ends
this long after its last user left (0: at once)."""
USER_LEFT_GRACE_S = 10.0
"""How long akka-apps keeps a user who left, for a reconnect, before removing him from the
meeting (``leftOn > 10000`` in Users2x.findAllExpiredUserLeftFlags; another version of the
file has 1000)."""
AUDIT_FIRST_S, AUDIT_EVERY_S = 5.0, 10.0
"""akka-apps checks a meeting's expiry on its audit tick, not continuously: first 5 s after
the meeting starts, then every 10 s (akka-bbb-apps/.../running/MeetingActorAudit.scala lines
47-49 at 11a7340: ``MonitorFrequency = 10 seconds``, ``schedule(5 seconds, MonitorFrequency,
...)``)."""


class FaultMode(enum.StrEnum):
    """How the emulated server misbehaves."""

    NONE = "none"
    DOWN = "down"
    """The connection is dropped without an HTTP answer."""
    SLOW = "slow"
    """The answer comes after ``delay`` seconds."""
    MALFORMED = "malformed"
    """HTTP 200 with a truncated XML body."""
    FAILED = "failed"
    """HTTP 200 with ``returncode`` FAILED."""
    HTTP_ERROR = "http_error"
    """HTTP 500."""


@dataclass(frozen=True, slots=True)
class Fault:
    """The active fault, optionally limited to some calls (``ROOT_CALL`` is the root)."""

    mode: FaultMode = FaultMode.NONE
    delay: float = 0.0
    calls: frozenset[str] | None = None

    def applies_to(self, call: str) -> bool:
        return self.mode is not FaultMode.NONE and (self.calls is None or call in self.calls)


@dataclass(frozen=True, slots=True)
class AttendeeState:
    """One user in an emulated meeting."""

    user_id: str
    full_name: str
    role: str = "VIEWER"
    is_presenter: bool = False
    is_listening_only: bool = False
    has_joined_voice: bool = False
    has_video: bool = False
    client_type: str = "HTML5"
    customdata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    left_at_ms: int | None = None
    """When the user left; bbb-web keeps him listed until ``usersTimeout`` after that."""

    @property
    def online(self) -> bool:
        return self.left_at_ms is None


@dataclass(frozen=True, slots=True)
class MeetingState:
    """One emulated meeting; every count is derived from ``attendees``."""

    meeting_id: str
    name: str
    internal_meeting_id: str
    create_time_ms: int
    voice_bridge: str
    attendee_pw: str
    moderator_pw: str
    dial_number: str = _DIAL_NUMBER
    running: bool = False
    duration: int = 0
    has_user_joined: bool = False
    recording: bool = False
    forcibly_ended: bool = False
    end_time_ms: int = 0
    max_users: int = 0
    attendees: tuple[AttendeeState, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    parent_meeting_id: str | None = None
    """A breakout room's parent, by the parent's *internal* id as bbb-web has it
    (bbb-common-web CreateBreakoutRoom.java: "The main meeting internal id")."""
    sequence: int = 0
    free_join: bool = False
    breakout_room_ids: tuple[str, ...] = ()
    last_user_left_ms: int | None = None
    """When the last online user left (None while someone is online, or nobody ever joined)."""
    expire_no_user_ms: int = int(EXPIRE_IF_NO_USER_JOINED_S * 1000)
    expire_last_left_ms: int = int(EXPIRE_WHEN_LAST_USER_LEFT_S * 1000)

    @property
    def is_breakout(self) -> bool:
        return self.parent_meeting_id is not None

    @property
    def participant_count(self) -> int:
        # get-meetings.ftlx: <participantCount>${meeting.getNumUsersOnline()}</participantCount>
        # (online users only since BBB 2.6, bigbluebutton/bigbluebutton#15993), while the
        # attendee list is meeting.getUsers(): everyone still in bbb-web's memory.
        return sum(1 for a in self.attendees if a.online)

    @property
    def listener_count(self) -> int:
        return sum(1 for a in self.attendees if a.is_listening_only)

    @property
    def voice_participant_count(self) -> int:
        return sum(1 for a in self.attendees if a.has_joined_voice)

    @property
    def video_count(self) -> int:
        return sum(1 for a in self.attendees if a.has_video)

    @property
    def moderator_count(self) -> int:
        # Meeting.getNumModerators() counts every user in memory, left or not: BBB 3.0
        # until the port of bigbluebutton/bigbluebutton#21750 (#21766, Nov 2024).
        return sum(1 for a in self.attendees if a.role == "MODERATOR")

    @property
    def dial_in_count(self) -> int:
        return sum(1 for a in self.attendees if a.online and a.client_type == "DIAL-IN")

    @property
    def load(self) -> HostLoad:
        """This meeting's input to the CPU model (dial-in callers receive no video)."""
        return meeting_load(
            participants=self.participant_count,
            voice=self.voice_participant_count,
            cameras=self.video_count,
            video_receivers=self.participant_count - self.dial_in_count,
        )


@dataclass(frozen=True, slots=True)
class JoinRecord:
    """One ``join`` call the emulator answered."""

    meeting_id: str
    user_id: str
    full_name: str
    role: str
    time_ms: int


def expires_at_ms(m: MeetingState) -> int | None:
    """When akka-apps ends ``m`` by its expiry rules, on the meeting's audit tick; None: not
    while nothing changes.

    The rules are MeetingExpiryTracker.hasMeetingExpired (akka-bbb-apps/src/main/scala/org/
    bigbluebutton/core/domain/MeetingTrackers.scala at 5143a61, lines 43-78): nobody joined within
    ``meetingExpireIfNoUserJoinedInMinutes`` of the start (not a breakout room), over its
    ``duration``, or the last user left ``meetingExpireWhenLastUserLeftInMinutes`` ago (not
    a breakout room; 0 ends it at once). Each compares strictly (``now - since > limit``).
    "Left" starts late: a user who leaves is flagged and kept for a reconnect, removed on
    the first tick more than ``USER_LEFT_GRACE_S`` later (at once with a limit of 0), and
    the tick that removes the last one sets lastUserLeftOn (MeetingActor.scala,
    removeUsersWithExpiredUserLeftFlag; Users2x.findAllExpiredUserLeftFlags).
    """
    if m.forcibly_ended:
        return None
    created = m.create_time_ms
    first, step = created + int(AUDIT_FIRST_S * 1000), int(AUDIT_EVERY_S * 1000)

    def tick(deadline: int, on: bool) -> int:
        """The first audit tick after ``deadline`` (``on``: or at it)."""
        ahead = deadline - first
        k = -(-ahead // step) if on else ahead // step + 1
        return first + max(0, k) * step

    ends: list[int] = []
    if not m.is_breakout:
        if not m.has_user_joined:
            ends.append(tick(created + m.expire_no_user_ms, False))
        elif m.last_user_left_ms is not None:
            limit = m.expire_last_left_ms
            if limit == 0:
                ends.append(tick(m.last_user_left_ms, True))
            else:
                removed = tick(m.last_user_left_ms + int(USER_LEFT_GRACE_S * 1000), False)
                ends.append(tick(removed + limit, False))
    if m.duration > 0:
        ends.append(tick(created + m.duration * 60_000, False))
    return min(ends, default=None)


def _attended(
    meeting: MeetingState, attendees: tuple[AttendeeState, ...], now_ms: int
) -> MeetingState:
    """``meeting`` with these attendees: joined once anyone was, and when its last online
    user left (setUserHasJoined clears it, setLastUserLeftOn sets it: MeetingTrackers.scala
    lines 19-29 at 5143a61).
    A dial-in caller counts: akka-apps adds him to Users2x as a "dial-in-user"
    (UserJoinedVoiceConfEvtMsgHdlr.scala, registerUserInUsers2x)."""
    online = any(a.online for a in attendees)
    joined = meeting.has_user_joined or bool(attendees)
    left = None
    if joined and not online:
        left = meeting.last_user_left_ms if meeting.last_user_left_ms is not None else now_ms
    return replace(
        meeting,
        attendees=attendees,
        has_user_joined=joined,
        running=joined and not meeting.forcibly_ended,
        last_user_left_ms=left,
    )


def make_attendees(
    meeting_id: str,
    participants: int,
    *,
    moderators: int = 1,
    listeners: int = 0,
    voice: int = 0,
    cameras: int = 0,
    dial_in: int = 0,
) -> tuple[AttendeeState, ...]:
    """``participants`` attendees with exactly the given counts.

    ``voice`` counts everyone in the voice conference, dial-in callers included
    (so ``dial_in <= voice``); ``listeners`` are listen-only and disjoint from
    ``voice``. Moderators, camera and microphone users are browser (HTML5)
    users; the first moderator presents.
    """
    web_users = participants - dial_in
    checks = {
        "participants >= 0": participants >= 0,
        "0 <= dial_in <= voice": 0 <= dial_in <= voice,
        "voice + listeners <= participants": voice + listeners <= participants,
        "0 <= moderators <= participants - dial_in": 0 <= moderators <= web_users,
        "0 <= cameras <= participants - dial_in": 0 <= cameras <= web_users,
        "listeners >= 0": listeners >= 0,
    }
    broken = [rule for rule, ok in checks.items() if not ok]
    if broken:
        raise ValueError(f"inconsistent attendee counts: {', '.join(broken)}")
    prefix = hashlib.sha1(meeting_id.encode(), usedforsecurity=False).hexdigest()[:6]
    web_voice = voice - dial_in
    result = [
        AttendeeState(
            user_id=f"w_{prefix}{i:04d}",
            full_name=f"User {i + 1}",
            role="MODERATOR" if i < moderators else "VIEWER",
            is_presenter=i == 0,
            has_joined_voice=i < web_voice,
            is_listening_only=web_voice <= i < web_voice + listeners,
            has_video=i < cameras,
        )
        for i in range(web_users)
    ]
    result += [
        AttendeeState(
            user_id=f"v_{prefix}{i:04d}",
            full_name=f"+1555{i:07d}",
            has_joined_voice=True,
            client_type="DIAL-IN",
        )
        for i in range(dial_in)
    ]
    return tuple(result)


# --- XML rendering (pure) -----------------------------------------------------


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _count(value: int, thousands: bool) -> str:
    # Some bbb-web builds render numbers through a locale-aware FreeMarker
    # format, which writes 1234 as "1,234"; consumers must cope.
    return f"{value:,}" if thousands else str(value)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def _create_date(create_time_ms: int) -> str:
    # java.util.Date#toString in UTC, as bbb-web prints it.
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(create_time_ms / 1000))


def meeting_fields(parent: ET.Element, m: MeetingState, thousands: bool = False) -> None:
    """Append the getMeetingInfo fields of ``m`` to ``parent`` in bbb-web's order."""
    _sub(parent, "meetingName", m.name)
    _sub(parent, "meetingID", m.meeting_id)
    _sub(parent, "internalMeetingID", m.internal_meeting_id)
    _sub(parent, "createTime", str(m.create_time_ms))
    _sub(parent, "createDate", _create_date(m.create_time_ms))
    _sub(parent, "voiceBridge", m.voice_bridge)
    _sub(parent, "dialNumber", m.dial_number)
    _sub(parent, "attendeePW", m.attendee_pw)
    _sub(parent, "moderatorPW", m.moderator_pw)
    _sub(parent, "running", _bool(m.running))
    _sub(parent, "duration", _count(m.duration, thousands))
    _sub(parent, "hasUserJoined", _bool(m.has_user_joined))
    _sub(parent, "recording", _bool(m.recording))
    _sub(parent, "hasBeenForciblyEnded", _bool(m.forcibly_ended))
    _sub(parent, "startTime", str(m.create_time_ms))
    _sub(parent, "endTime", _count(m.end_time_ms, thousands))
    _sub(parent, "participantCount", _count(m.participant_count, thousands))
    _sub(parent, "listenerCount", _count(m.listener_count, thousands))
    _sub(parent, "voiceParticipantCount", _count(m.voice_participant_count, thousands))
    _sub(parent, "videoCount", _count(m.video_count, thousands))
    _sub(parent, "maxUsers", _count(m.max_users, thousands))
    _sub(parent, "moderatorCount", _count(m.moderator_count, thousands))
    attendees = _sub(parent, "attendees")
    for a in m.attendees:
        elem = _sub(attendees, "attendee")
        _sub(elem, "userID", a.user_id)
        _sub(elem, "fullName", a.full_name)
        _sub(elem, "role", a.role)
        _sub(elem, "isPresenter", _bool(a.is_presenter))
        _sub(elem, "isListeningOnly", _bool(a.is_listening_only))
        _sub(elem, "hasJoinedVoice", _bool(a.has_joined_voice))
        _sub(elem, "hasVideo", _bool(a.has_video))
        _sub(elem, "clientType", a.client_type)
        custom = _sub(elem, "customdata")
        for key, value in a.customdata.items():
            _sub(custom, key, value)
    metadata = _sub(parent, "metadata")
    for key, value in m.metadata.items():
        _sub(metadata, key, value)
    _sub(parent, "isBreakout", _bool(m.is_breakout))
    if m.parent_meeting_id is not None:
        # Straight under <meeting>, no wrapper (get-meetings.ftlx:65-69 at 21f0493,
        # get-meeting-info.ftlx likewise); <breakout> exists only inside <breakoutRooms>.
        _sub(parent, "parentMeetingID", m.parent_meeting_id)
        _sub(parent, "sequence", str(m.sequence))
        _sub(parent, "freeJoin", _bool(m.free_join))
    if m.breakout_room_ids:
        rooms = _sub(parent, "breakoutRooms")
        for room in m.breakout_room_ids:
            _sub(rooms, "breakout", room)


def _response(code: str = "SUCCESS") -> ET.Element:
    root = ET.Element("response")
    _sub(root, "returncode", code)
    return root


def _serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="unicode").encode("utf-8")


def render_simple(
    code: str, message_key: str | None = None, message: str | None = None, **values: str
) -> bytes:
    """A flat ``<response>``: returncode, the given elements, then messageKey/message."""
    root = _response(code)
    for tag, text in values.items():
        _sub(root, tag, text)
    if message_key is not None:
        _sub(root, "messageKey", message_key)
        _sub(root, "message", message or "")
    return _serialize(root)


def render_failed(message_key: str, message: str) -> bytes:
    """bbb-web's error answer (sent with HTTP 200)."""
    return render_simple("FAILED", message_key, message)


def render_meetings(
    meetings: Iterable[MeetingState], thousands: bool = False, omit_empty: bool = False
) -> bytes:
    """A getMeetings answer; no meetings gives ``noMeetings`` (with ``<meetings/>``
    unless ``omit_empty``, as the FreeMarker template of some versions does)."""
    listed = tuple(meetings)
    root = _response()
    if listed or not omit_empty:
        container = _sub(root, "meetings")
        for m in listed:
            meeting_fields(_sub(container, "meeting"), m, thousands)
    if not listed:
        _sub(root, "messageKey", "noMeetings")
        _sub(root, "message", _NO_MEETINGS)
    return _serialize(root)


def render_meeting_info(m: MeetingState, thousands: bool = False) -> bytes:
    """A getMeetingInfo answer for ``m``."""
    root = _response()
    meeting_fields(root, m, thousands)
    return _serialize(root)


def strip_checksum(raw_query: str) -> tuple[str, str | None]:
    """The query string as signed (without ``checksum``) and the checksum sent."""
    kept: list[str] = []
    sent: str | None = None
    for part in raw_query.split("&") if raw_query else []:
        if part.startswith("checksum="):
            sent = part[len("checksum=") :]
        else:
            kept.append(part)
    return "&".join(kept), sent


# --- the emulator -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    body: bytes
    status: int = 200
    location: str | None = None


def _ok(body: bytes) -> _Answer:
    return _Answer(body=body)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _minutes(value: str | None) -> int | None:
    """A create parameter in minutes; None when absent (the property's value applies)."""
    return None if value is None or value == "" else _int_param(value)


def _int_param(value: str | None) -> int:
    try:
        return max(0, int(value or "0"))
    except ValueError:
        return 0


class EmulatedBbb:
    """One emulated BBB host: meetings, faults, request counts and an aiohttp app.

    All methods except the HTTP handlers are synchronous and meant to be
    called from the event loop thread that serves the app.
    """

    def __init__(
        self,
        secret: str,
        *,
        supported_checksum_algorithms: str = checksum.BBB_WEB_DEFAULT,
        clock: Callable[[], float] = time.time,
        thousands_separators: bool = False,
        omit_empty_meetings: bool = False,
        keep_ended: bool = False,
        bbb_version: str = "3.0.0",
        users_timeout: float = USERS_TIMEOUT_S,
        expire_if_no_user_joined: float = EXPIRE_IF_NO_USER_JOINED_S,
        expire_when_last_user_left: float = EXPIRE_WHEN_LAST_USER_LEFT_S,
    ) -> None:
        self._secret = secret
        self.supported_checksum_algorithms = supported_checksum_algorithms
        """bbb-web's property as written; matched as bbb-web matches it."""
        self._clock = clock
        self.thousands_separators = thousands_separators
        self.omit_empty_meetings = omit_empty_meetings
        self.keep_ended = keep_ended
        self.bbb_version = bbb_version
        self.users_timeout = users_timeout
        self.expire_if_no_user_joined = expire_if_no_user_joined
        """Seconds; bbb-web's property, which a create's own parameter overrides."""
        self.expire_when_last_user_left = expire_when_last_user_left
        self._meetings: dict[str, MeetingState] = {}
        self._fault = Fault()
        self._counts: Counter[str] = Counter()
        self._held: set[asyncio.Future[None]] = set()
        self._held_watchers: list[tuple[int, asyncio.Future[None]]] = []
        self.joins: list[JoinRecord] = []

    @classmethod
    def from_properties(cls, path: Path, **kwargs: Any) -> EmulatedBbb:
        """An emulator keyed as bbb-web would be by this ``bbb-web.properties``.

        ``securitySalt`` and ``supportedChecksumAlgorithms`` come from the file, the
        latter defaulting to bbb-web's packaged value when the file does not set it.
        """
        secret = bbb_secret.read_property(path, "securitySalt")
        if secret is None:
            raise ValueError(f"no securitySalt in {path}")
        host = bbb_secret.discover_algorithms([path])
        supported = checksum.BBB_WEB_DEFAULT if host is None else host.value
        return cls(secret, supported_checksum_algorithms=supported, **kwargs)

    # --- state --------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _forget_left_users(self) -> None:
        """Drop users who left more than ``users_timeout`` ago, as bbb-web's sweep does."""
        cutoff = self._now_ms() - int(self.users_timeout * 1000)
        for meeting_id, meeting in list(self._meetings.items()):
            kept = tuple(
                a for a in meeting.attendees if a.left_at_ms is None or a.left_at_ms > cutoff
            )
            if len(kept) != len(meeting.attendees):
                self._meetings[meeting_id] = replace(meeting, attendees=kept)

    def _expire_meetings(self) -> None:
        """End the meetings akka-apps would have ended by now (``expires_at_ms``)."""
        now = self._now_ms()
        for meeting_id, meeting in list(self._meetings.items()):
            at = expires_at_ms(meeting)
            if at is not None and at <= now and meeting_id in self._meetings:
                log.info("bbb_meeting_expired", meeting_id=meeting_id)
                self.end_meeting(meeting_id)

    def _new_meeting(
        self,
        meeting_id: str,
        name: str | None,
        metadata: Mapping[str, str] | None,
        attendee_pw: str | None = None,
        moderator_pw: str | None = None,
        voice_bridge: str | None = None,
        record: bool = False,
        max_users: int = 0,
        duration: int = 0,
        expire_no_user_min: int | None = None,
        expire_last_left_min: int | None = None,
    ) -> MeetingState:
        if not meeting_id:
            raise ValueError("meeting_id must not be empty")
        meta = dict(metadata or {})
        for key in meta:
            if not _XML_NAME.match(key):
                raise ValueError(f"metadata key {key!r} is not an XML element name")
        created = self._now_ms()
        # bbb-web's internal id: sha1 of the external id, a dash, the create time.
        digest = hashlib.sha1(meeting_id.encode(), usedforsecurity=False).hexdigest()
        return MeetingState(
            meeting_id=meeting_id,
            name=name or meeting_id,
            internal_meeting_id=f"{digest}-{created}",
            create_time_ms=created,
            voice_bridge=voice_bridge or str(70000 + int(digest[:8], 16) % 30000),
            attendee_pw=attendee_pw or f"ap-{digest[:8]}",
            moderator_pw=moderator_pw or f"mp-{digest[8:16]}",
            recording=record,
            max_users=max_users,
            duration=duration,
            metadata=MappingProxyType(meta),
            expire_no_user_ms=int(
                1000 * self.expire_if_no_user_joined
                if expire_no_user_min is None
                else 60_000 * expire_no_user_min
            ),
            expire_last_left_ms=int(
                1000 * self.expire_when_last_user_left
                if expire_last_left_min is None
                else 60_000 * expire_last_left_min
            ),
        )

    def add_meeting(
        self,
        meeting_id: str,
        participants: int = 0,
        *,
        moderators: int | None = None,
        listeners: int = 0,
        voice: int = 0,
        cameras: int = 0,
        dial_in: int = 0,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        record: bool = False,
        max_users: int = 0,
    ) -> MeetingState:
        """Create a running meeting with ``participants`` attendees (see ``make_attendees``).

        ``moderators`` defaults to 1 when there is a browser participant.
        """
        if meeting_id in self._meetings:
            raise ValueError(f"meeting {meeting_id!r} exists")
        meeting = self._new_meeting(meeting_id, name, metadata, record=record, max_users=max_users)
        self._meetings[meeting_id] = meeting
        return self.set_participants(
            meeting_id,
            participants,
            moderators=moderators,
            listeners=listeners,
            voice=voice,
            cameras=cameras,
            dial_in=dial_in,
        )

    def add_breakout(
        self,
        parent_id: str,
        participants: int = 0,
        *,
        meeting_id: str | None = None,
        free_join: bool = False,
        moderators: int = 0,
        listeners: int = 0,
        voice: int = 0,
        cameras: int = 0,
        dial_in: int = 0,
    ) -> MeetingState:
        """Create a breakout room of ``parent_id``, numbered after its existing rooms."""
        parent = self._get(parent_id)
        sequence = len(parent.breakout_room_ids) + 1
        room_id = meeting_id or f"{parent_id}-breakout-{sequence}"
        if room_id in self._meetings:
            raise ValueError(f"meeting {room_id!r} exists")
        room = replace(
            self._new_meeting(room_id, f"{parent.name} (Room {sequence})", None),
            parent_meeting_id=parent.internal_meeting_id,
            sequence=sequence,
            free_join=free_join,
        )
        self._meetings[room_id] = room
        self._meetings[parent_id] = replace(
            parent, breakout_room_ids=(*parent.breakout_room_ids, room_id)
        )
        return self.set_participants(
            room_id,
            participants,
            moderators=moderators,
            listeners=listeners,
            voice=voice,
            cameras=cameras,
            dial_in=dial_in,
        )

    def set_participants(
        self,
        meeting_id: str,
        participants: int,
        *,
        moderators: int | None = None,
        listeners: int = 0,
        voice: int = 0,
        cameras: int = 0,
        dial_in: int = 0,
    ) -> MeetingState:
        """Replace a meeting's attendees; a meeting that had users stays running."""
        meeting = self._get(meeting_id)
        mods = moderators if moderators is not None else min(1, participants - dial_in)
        attendees = make_attendees(
            meeting_id,
            participants,
            moderators=mods,
            listeners=listeners,
            voice=voice,
            cameras=cameras,
            dial_in=dial_in,
        )
        updated = _attended(meeting, attendees, self._now_ms())
        self._meetings[meeting_id] = updated
        return updated

    def leave(self, meeting_id: str, *user_ids: str) -> MeetingState:
        """These users leave: offline at once, listed until ``users_timeout`` has passed.

        Their microphones and cameras go with their clients, so they no longer
        count as listeners, voice or video; they still count in the attendee list
        and in ``moderatorCount`` (see MeetingState).
        """
        meeting = self._get(meeting_id)
        wanted = set(user_ids)
        known = {a.user_id for a in meeting.attendees if a.online}
        if not wanted or not wanted <= known:
            raise KeyError(f"not online in {meeting_id!r}: {sorted(wanted - known) or 'nobody'}")
        now = self._now_ms()
        attendees = tuple(
            replace(
                a,
                left_at_ms=now,
                is_presenter=False,
                is_listening_only=False,
                has_joined_voice=False,
                has_video=False,
            )
            if a.user_id in wanted
            else a
            for a in meeting.attendees
        )
        updated = _attended(meeting, attendees, now)
        self._meetings[meeting_id] = updated
        log.info("bbb_users_left", meeting_id=meeting_id, users=len(wanted))
        return updated

    def end_meeting(self, meeting_id: str, *, keep: bool | None = None) -> bool:
        """End a meeting and its breakout rooms; False if there is no such meeting.

        With ``keep`` (default: the emulator's ``keep_ended``) the meeting stays
        listed as ended, without attendees, until ``remove_meeting``.
        """
        meeting = self._meetings.get(meeting_id)
        if meeting is None:
            return False
        for room in meeting.breakout_room_ids:
            self.end_meeting(room, keep=keep)
        if self.keep_ended if keep is None else keep:
            self._meetings[meeting_id] = replace(
                meeting,
                running=False,
                forcibly_ended=True,
                attendees=(),
                end_time_ms=self._now_ms(),
            )
        else:
            self.remove_meeting(meeting_id)
        log.info("bbb_meeting_ended", meeting_id=meeting_id)
        return True

    def remove_meeting(self, meeting_id: str) -> None:
        """Forget a meeting and its breakout rooms (no-op if unknown)."""
        meeting = self._meetings.pop(meeting_id, None)
        if meeting is None:
            return
        for room in meeting.breakout_room_ids:
            self.remove_meeting(room)
        parent = next(
            (
                m
                for m in self._meetings.values()
                if m.internal_meeting_id == meeting.parent_meeting_id
            ),
            None,
        )
        if parent is not None:
            self._meetings[parent.meeting_id] = replace(
                parent,
                breakout_room_ids=tuple(r for r in parent.breakout_room_ids if r != meeting_id),
            )

    def clear(self) -> None:
        """Remove every meeting."""
        self._meetings.clear()

    def _get(self, meeting_id: str) -> MeetingState:
        try:
            return self._meetings[meeting_id]
        except KeyError:
            raise KeyError(f"no meeting {meeting_id!r}") from None

    def meeting(self, meeting_id: str) -> MeetingState | None:
        """The meeting with this external id, if any."""
        self._expire_meetings()
        self._forget_left_users()
        return self._meetings.get(meeting_id)

    def meetings(self) -> tuple[MeetingState, ...]:
        """All meetings, breakout rooms included, in creation order."""
        self._expire_meetings()
        self._forget_left_users()
        return tuple(self._meetings.values())

    def total_participants(self) -> int:
        """Attendees over all meetings (a user in a breakout room counts there)."""
        return sum(m.participant_count for m in self._meetings.values())

    def total_video_streams(self) -> int:
        """Cameras shared over all meetings (the sum of ``videoCount``)."""
        return sum(m.video_count for m in self._meetings.values())

    def host_load(self) -> HostLoad:
        """The input of the CPU model for everything on this host."""
        return total_load(m.load for m in self._meetings.values())

    def cpu_utilization(self, cores: int = DEFAULT_CORES) -> float:
        """The CPU model's utilisation for the current meetings."""
        return cpu_utilization(self.host_load(), cores)

    # --- faults and counts ----------------------------------------------------

    @property
    def fault(self) -> Fault:
        """The active fault."""
        return self._fault

    def set_fault(
        self, mode: FaultMode, *, delay: float = 30.0, calls: Iterable[str] | None = None
    ) -> None:
        """Switch to ``mode`` (for ``calls`` only, if given); ``delay`` is for SLOW."""
        self._fault = Fault(mode, delay, None if calls is None else frozenset(calls))
        if mode is not FaultMode.SLOW:
            self.release_held()
        log.info("bbb_fault_set", mode=str(mode), calls=None if calls is None else sorted(calls))

    def clear_fault(self) -> None:
        """Back to normal; requests held by SLOW are answered now."""
        self.set_fault(FaultMode.NONE)

    def release_held(self) -> None:
        """Let every request held by SLOW answer now."""
        for waiter in self._held:
            if not waiter.done():
                waiter.set_result(None)
        self._held.clear()

    @property
    def held_requests(self) -> int:
        """Requests SLOW is holding right now."""
        return sum(1 for waiter in self._held if not waiter.done())

    async def wait_held(self, count: int = 1) -> None:
        """Return once SLOW is holding at least ``count`` requests."""
        if self.held_requests >= count:
            return
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held_watchers.append((count, watcher))
        await watcher

    def _notify_held(self) -> None:
        held = self.held_requests
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        for count, watcher in self._held_watchers:
            if watcher.done():
                continue
            if held >= count:
                watcher.set_result(None)
            else:
                waiting.append((count, watcher))
        self._held_watchers = waiting

    def request_count(self, call: str | None = None) -> int:
        """Requests received for ``call`` (``ROOT_CALL`` for the root), or all of them."""
        return self._counts.total() if call is None else self._counts[call]

    def request_counts(self) -> dict[str, int]:
        """Requests received per call."""
        return dict(self._counts)

    def reset_counts(self) -> None:
        """Forget the request counts."""
        self._counts.clear()

    # --- HTTP -----------------------------------------------------------------

    def app(self) -> web.Application:
        """An aiohttp application serving this emulator under ``/bigbluebutton/api/``."""
        app = web.Application()
        app.router.add_get(API_PATH, self._handle_root)
        app.router.add_get(API_PATH + "/", self._handle_root)
        app.router.add_get(API_PATH + "/{call}", self._handle_call)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _: web.Application) -> None:
        self.release_held()

    async def _handle_root(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, ROOT_CALL)

    async def _handle_call(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, request.match_info["call"])

    async def _serve(self, request: web.Request, call: str) -> web.StreamResponse:
        self._counts[call] += 1
        fault = self._fault if self._fault.applies_to(call) else Fault()
        if fault.mode is FaultMode.DOWN:
            # Abort the socket: the client sees a disconnect, no HTTP status line.
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        if fault.mode is FaultMode.SLOW:
            await self._hold(fault.delay)
        if fault.mode is FaultMode.HTTP_ERROR:
            return web.Response(
                status=500,
                text="<html><body><h1>500 Internal Server Error</h1></body></html>",
                content_type="text/html",
            )
        if fault.mode is FaultMode.FAILED:
            answer = _ok(render_failed("internalError", "emulated failure"))
        elif call == ROOT_CALL:
            answer = _ok(
                render_simple(
                    "SUCCESS", version="2.0", apiVersion="2.0", bbbVersion=self.bbb_version
                )
            )
        else:
            answer = self._answer(call, request.rel_url.raw_query_string, request)
        body = answer.body
        if fault.mode is FaultMode.MALFORMED:
            # Any strict prefix of a one-root document is ill-formed XML.
            body = body[: max(1, len(body) // 2)]
        if answer.location is not None:
            raise web.HTTPFound(answer.location)
        return web.Response(
            body=body, status=answer.status, content_type="text/xml", charset="utf-8"
        )

    async def _hold(self, delay: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held.add(waiter)
        self._notify_held()
        try:
            await asyncio.wait({waiter}, timeout=delay)
        finally:
            self._held.discard(waiter)

    def _answer(self, call: str, raw_query: str, request: web.Request) -> _Answer:
        signed, sent = strip_checksum(raw_query)
        if sent is None:
            return _ok(
                render_failed("checksumError", "You did not pass the checksum security check")
            )
        # bbb-web picks the algorithm by the checksum's length and refuses one that
        # supportedChecksumAlgorithms does not name (GetChecksumValidator.java:49-80 at
        # 4b5d4e9) with the GetChecksum constraint's message (GetChecksum.java:8).
        allowed = checksum.bbb_web_allows(self.supported_checksum_algorithms)
        if not checksum.verify(call, signed, self._secret, sent, allowed):
            return _ok(render_failed("checksumError", "Checksums do not match"))
        self._expire_meetings()
        self._forget_left_users()
        params = dict(parse_qsl(signed, keep_blank_values=True))
        if call == "getMeetings":
            return _ok(
                render_meetings(
                    self._meetings.values(), self.thousands_separators, self.omit_empty_meetings
                )
            )
        if call == "create":
            return self._create(params)
        if call == "join":
            return self._join(params, request)
        if call == "end":
            return self._end(params)
        if call == "isMeetingRunning":
            meeting = self._meetings.get(params.get("meetingID", ""))
            running = meeting is not None and meeting.running
            return _ok(render_simple("SUCCESS", running=_bool(running)))
        if call == "getMeetingInfo":
            meeting = self._meetings.get(params.get("meetingID", ""))
            if meeting is None:
                return _ok(
                    render_failed("notFound", "We could not find a meeting with that meeting ID")
                )
            return _ok(render_meeting_info(meeting, self.thousands_separators))
        return _ok(render_failed("unsupportedRequest", "This request is not supported."))

    def _create(self, params: dict[str, str]) -> _Answer:
        meeting_id = params.get("meetingID", "")
        if not meeting_id:
            return _ok(render_failed("missingParamMeetingID", "You must specify a meeting ID."))
        existing = self._meetings.get(meeting_id)
        key: str | None = None
        message: str | None = None
        if existing is None:
            metadata = {k[5:].lower(): v for k, v in params.items() if k.startswith("meta_")}
            try:
                meeting = self._new_meeting(
                    meeting_id,
                    params.get("name"),
                    metadata,
                    attendee_pw=params.get("attendeePW"),
                    moderator_pw=params.get("moderatorPW"),
                    voice_bridge=params.get("voiceBridge"),
                    record=_truthy(params.get("record")),
                    max_users=_int_param(params.get("maxParticipants")),
                    duration=_int_param(params.get("duration")),
                    # create's own values, as the API documents them, win over the properties.
                    expire_no_user_min=_minutes(params.get("meetingExpireIfNoUserJoinedInMinutes")),
                    expire_last_left_min=_minutes(
                        params.get("meetingExpireWhenLastUserLeftInMinutes")
                    ),
                )
            except ValueError as exc:
                return _ok(render_failed("invalidParameter", str(exc)))
            self._meetings[meeting_id] = meeting
            log.info("bbb_meeting_created", meeting_id=meeting_id)
        else:
            meeting = existing
            key = "duplicateWarning"
            message = "This conference was already in existence and may currently be in progress."
        return _ok(
            render_simple(
                "SUCCESS",
                key,
                message,
                meetingID=meeting.meeting_id,
                internalMeetingID=meeting.internal_meeting_id,
                parentMeetingID=meeting.parent_meeting_id or "bbb-none",
                attendeePW=meeting.attendee_pw,
                moderatorPW=meeting.moderator_pw,
                createTime=str(meeting.create_time_ms),
                voiceBridge=meeting.voice_bridge,
                dialNumber=meeting.dial_number,
                createDate=_create_date(meeting.create_time_ms),
                hasUserJoined=_bool(meeting.has_user_joined),
                duration=str(meeting.duration),
                hasBeenForciblyEnded=_bool(meeting.forcibly_ended),
            )
        )

    def _join(self, params: dict[str, str], request: web.Request) -> _Answer:
        meeting = self._meetings.get(params.get("meetingID", ""))
        if meeting is None or meeting.forcibly_ended:
            return _ok(
                render_failed(
                    "invalidMeetingIdentifier",
                    "The meeting ID that you supplied did not match any existing meetings",
                )
            )
        role = params.get("role", "").upper()
        if role not in ("MODERATOR", "VIEWER"):
            password = params.get("password")
            if password == meeting.moderator_pw:
                role = "MODERATOR"
            elif password == meeting.attendee_pw:
                role = "VIEWER"
            else:
                return _ok(
                    render_failed(
                        "invalidPassword",
                        "You either did not supply a password or the password supplied is "
                        "neither the attendee or moderator password for this conference.",
                    )
                )
        index = len(self.joins)
        user_id = params.get("userID") or f"w_join{index:05d}"
        full_name = params.get("fullName") or f"Guest {index + 1}"
        attendee = AttendeeState(
            user_id=user_id,
            full_name=full_name,
            role=role,
            is_presenter=not meeting.attendees,
            has_joined_voice=True,
        )
        self._meetings[meeting.meeting_id] = _attended(
            meeting, (*meeting.attendees, attendee), self._now_ms()
        )
        self.joins.append(JoinRecord(meeting.meeting_id, user_id, full_name, role, self._now_ms()))
        log.info("bbb_user_joined", meeting_id=meeting.meeting_id, role=role)
        session_token = hashlib.sha256(f"{user_id}-{index}".encode()).hexdigest()[:16]
        client = f"{request.scheme}://{request.host}/html5client/join?sessionToken={session_token}"
        if params.get("redirect", "true").lower() == "false":
            return _ok(
                render_simple(
                    "SUCCESS",
                    "successfullyJoined",
                    "You have joined successfully.",
                    meeting_id=meeting.internal_meeting_id,
                    user_id=user_id,
                    auth_token=session_token[:12],
                    session_token=session_token,
                    url=client,
                )
            )
        return _Answer(body=b"", status=302, location=client)

    def _end(self, params: dict[str, str]) -> _Answer:
        meeting_id = params.get("meetingID", "")
        if not self.end_meeting(meeting_id):
            return _ok(
                render_failed(
                    "notFound",
                    "We could not find a meeting with that meeting ID - "
                    "perhaps the meeting is not yet running?",
                )
            )
        return _ok(
            render_simple(
                "SUCCESS",
                "sentEndMeetingRequest",
                "A request to end the meeting was sent.  Please wait a few seconds, and then "
                "use the getMeetingInfo or isMeetingRunning API calls to verify that it was "
                "ended.",
            )
        )


def client_url(port: int, host: str = "127.0.0.1") -> str:
    """The base URL a BBB client is given for an emulator on ``port``."""
    return f"http://{host}:{port}/bigbluebutton/"


async def serve(
    emulator: EmulatedBbb, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve ``emulator`` on ``host:port`` (0: any free port); returns the runner and port.

    Stop it with ``await runner.cleanup()``.
    """
    runner = web.AppRunner(emulator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    if not addresses:
        await runner.cleanup()
        raise RuntimeError("emulator did not bind a socket")
    bound = int(addresses[0][1])
    log.info("bbb_emulator_listening", host=host, port=bound)
    return runner, bound
