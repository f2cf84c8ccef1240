"""BigBlueButton meetings as immutable values, and the getMeetings XML parser.

Parsing is lenient where BBB is inconsistent (missing elements, counts written
with thousands separators) and strict where a silent default would lie: a
response that is not XML, or not a BBB response, raises MalformedResponse.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})


class BbbApiError(Exception):
    """Base of every error talking to a BBB API."""


class MalformedResponse(BbbApiError):
    """The body is not a BBB XML response."""


class FailedResponse(BbbApiError):
    """BBB answered ``returncode`` FAILED (``checksumError``, ``notFound``, ...)."""

    def __init__(self, message_key: str, message: str) -> None:
        super().__init__(f"{message_key}: {message}")
        self.message_key = message_key
        self.message = message


@dataclass(frozen=True, slots=True)
class Attendee:
    """One user in a meeting."""

    user_id: str
    full_name: str
    role: str
    is_presenter: bool
    is_listening_only: bool
    has_joined_voice: bool
    has_video: bool
    client_type: str

    @property
    def is_moderator(self) -> bool:
        return self.role.upper() == "MODERATOR"


@dataclass(frozen=True, slots=True)
class Meeting:
    """One running (or created) meeting as getMeetings reports it."""

    meeting_id: str
    internal_meeting_id: str
    name: str
    create_time_ms: int
    running: bool
    participant_count: int
    listener_count: int
    voice_participant_count: int
    video_count: int
    moderator_count: int
    max_users: int
    is_breakout: bool
    parent_meeting_id: str | None = None
    breakout_room_ids: tuple[str, ...] = ()
    attendees: tuple[Attendee, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


def parse_count(text: str | None) -> int:
    """A BBB count: ``None``/empty is 0; ``"1,234"`` is 1234."""
    if text is None:
        return 0
    cleaned = text.strip().replace(",", "").replace("_", "")
    if not cleaned:
        return 0
    try:
        return int(cleaned)
    except ValueError:
        raise MalformedResponse(f"not a count: {text!r}") from None


def _bool(text: str | None) -> bool:
    return (text or "").strip().lower() == "true"


def _text(elem: ET.Element, tag: str) -> str | None:
    child = elem.find(tag)
    return None if child is None else (child.text or "")


def _attendee(elem: ET.Element) -> Attendee:
    return Attendee(
        user_id=_text(elem, "userID") or "",
        full_name=_text(elem, "fullName") or "",
        role=(_text(elem, "role") or "VIEWER").upper(),
        is_presenter=_bool(_text(elem, "isPresenter")),
        is_listening_only=_bool(_text(elem, "isListeningOnly")),
        has_joined_voice=_bool(_text(elem, "hasJoinedVoice")),
        has_video=_bool(_text(elem, "hasVideo")),
        client_type=(_text(elem, "clientType") or "HTML5").upper(),
    )


def _meeting(elem: ET.Element) -> Meeting:
    attendees = tuple(_attendee(a) for a in elem.iterfind("attendees/attendee"))
    metadata_elem = elem.find("metadata")
    metadata: Mapping[str, str] = _EMPTY
    if metadata_elem is not None and len(metadata_elem):
        metadata = MappingProxyType({m.tag: (m.text or "").strip() for m in metadata_elem})
    moderators = _text(elem, "moderatorCount")
    breakout = elem.find("breakout")
    parent = None if breakout is None else (_text(breakout, "parentMeetingID") or None)
    return Meeting(
        meeting_id=_text(elem, "meetingID") or "",
        internal_meeting_id=_text(elem, "internalMeetingID") or "",
        name=_text(elem, "meetingName") or "",
        create_time_ms=parse_count(_text(elem, "createTime")),
        running=_bool(_text(elem, "running")),
        participant_count=parse_count(_text(elem, "participantCount")),
        listener_count=parse_count(_text(elem, "listenerCount")),
        voice_participant_count=parse_count(_text(elem, "voiceParticipantCount")),
        video_count=parse_count(_text(elem, "videoCount")),
        # Older BBB omits moderatorCount: count the attendees instead.
        moderator_count=(
            parse_count(moderators)
            if moderators is not None
            else sum(1 for a in attendees if a.is_moderator)
        ),
        max_users=parse_count(_text(elem, "maxUsers")),
        is_breakout=_bool(_text(elem, "isBreakout")),
        parent_meeting_id=parent,
        breakout_room_ids=tuple(
            (b.text or "").strip() for b in elem.iterfind("breakoutRooms/breakout")
        ),
        attendees=attendees,
        metadata=metadata,
    )


def parse_response(body: bytes) -> ET.Element:
    """The ``<response>`` root of a BBB API answer; raises on FAILED or garbage."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - local bbb-web; expat limits entity expansion
    except ET.ParseError as exc:
        raise MalformedResponse(f"not XML: {exc}") from None
    if root.tag != "response":
        raise MalformedResponse(f"unexpected root element <{root.tag}>")
    code = (_text(root, "returncode") or "").strip()
    if code == "FAILED":
        raise FailedResponse(
            message_key=(_text(root, "messageKey") or "").strip(),
            message=(_text(root, "message") or "").strip(),
        )
    if code != "SUCCESS":
        raise MalformedResponse(f"unexpected returncode {code!r}")
    return root


def parse_meetings(body: bytes) -> tuple[Meeting, ...]:
    """Meetings in a getMeetings answer; ``noMeetings`` gives ``()``."""
    root = parse_response(body)
    container = root.find("meetings")
    if container is None:
        if (_text(root, "messageKey") or "").strip() == "noMeetings":
            return ()
        raise MalformedResponse("getMeetings answer has no <meetings> element")
    return tuple(_meeting(m) for m in container.iterfind("meeting"))
