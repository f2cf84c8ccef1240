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
from typing import NamedTuple

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


class Attendee(NamedTuple):
    """One user in a meeting.

    A NamedTuple rather than a frozen dataclass: a busy host lists tens of
    thousands of attendees per poll, and a frozen dataclass's field-by-field
    ``__init__`` made up half of a collection's CPU time.
    """

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
        return self.role == "MODERATOR"


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
    sequence: int = 0
    """A breakout room's number among its parent's rooms (0 for a main meeting)."""
    free_join: bool = False
    breakout_room_ids: tuple[str, ...] = ()
    attendees: tuple[Attendee, ...] = ()
    """Empty unless the parser was asked for attendees (they cost most of a parse)."""
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    clients: tuple[tuple[str, int], ...] = ()
    """Attendees by client type (``HTML5``, ``DIAL-IN``, ...), always filled."""


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


def _children(elem: ET.Element) -> dict[str, ET.Element]:
    # One pass over the children instead of a find() per field: getMeetings on a
    # busy host has tens of thousands of elements, and this is the hot loop.
    return {child.tag: child for child in elem}


def _get(fields: dict[str, ET.Element], tag: str) -> str | None:
    child = fields.get(tag)
    return None if child is None else (child.text or "")


def _attendee(elem: ET.Element) -> Attendee:
    f = _children(elem)
    return Attendee(
        user_id=_get(f, "userID") or "",
        full_name=_get(f, "fullName") or "",
        role=(_get(f, "role") or "VIEWER").upper(),
        is_presenter=_bool(_get(f, "isPresenter")),
        is_listening_only=_bool(_get(f, "isListeningOnly")),
        has_joined_voice=_bool(_get(f, "hasJoinedVoice")),
        has_video=_bool(_get(f, "hasVideo")),
        client_type=(_get(f, "clientType") or "HTML5").upper(),
    )


def _client_counts(attendees_elem: ET.Element) -> tuple[tuple[tuple[str, int], ...], int]:
    """(attendees by client type, moderators) without building Attendee objects."""
    clients: dict[str, int] = {}
    moderators = 0
    for attendee in attendees_elem:
        client = "HTML5"
        for child in attendee:
            if child.tag == "clientType":
                client = (child.text or "HTML5").upper()
            elif child.tag == "role" and (child.text or "").upper() == "MODERATOR":
                moderators += 1
        clients[client] = clients.get(client, 0) + 1
    return tuple(sorted(clients.items())), moderators


def _meeting(elem: ET.Element, with_attendees: bool) -> Meeting:
    f = _children(elem)
    attendees_elem = f.get("attendees")
    attendees: tuple[Attendee, ...] = ()
    clients: tuple[tuple[str, int], ...] = ()
    counted_moderators = 0
    if attendees_elem is not None:
        clients, counted_moderators = _client_counts(attendees_elem)
        if with_attendees:
            attendees = tuple(_attendee(a) for a in attendees_elem)
    metadata_elem = f.get("metadata")
    metadata: Mapping[str, str] = _EMPTY
    if metadata_elem is not None and len(metadata_elem):
        metadata = MappingProxyType({m.tag: (m.text or "").strip() for m in metadata_elem})
    moderators = _get(f, "moderatorCount")
    # A breakout room's parentMeetingID, sequence and freeJoin are children of <meeting>
    # itself (get-meetings.ftlx:65-69 at 21f0493, unchanged through 3.x); a <breakout>
    # element only ever appears inside <breakoutRooms>, holding a room's id.
    rooms = f.get("breakoutRooms")
    return Meeting(
        meeting_id=_get(f, "meetingID") or "",
        internal_meeting_id=_get(f, "internalMeetingID") or "",
        name=_get(f, "meetingName") or "",
        create_time_ms=parse_count(_get(f, "createTime")),
        running=_bool(_get(f, "running")),
        participant_count=parse_count(_get(f, "participantCount")),
        listener_count=parse_count(_get(f, "listenerCount")),
        voice_participant_count=parse_count(_get(f, "voiceParticipantCount")),
        video_count=parse_count(_get(f, "videoCount")),
        # Older BBB omits moderatorCount: count the attendees instead.
        moderator_count=parse_count(moderators) if moderators is not None else counted_moderators,
        max_users=parse_count(_get(f, "maxUsers")),
        is_breakout=_bool(_get(f, "isBreakout")),
        parent_meeting_id=(_get(f, "parentMeetingID") or "").strip() or None,
        sequence=parse_count(_get(f, "sequence")),
        free_join=_bool(_get(f, "freeJoin")),
        breakout_room_ids=()
        if rooms is None
        else tuple((b.text or "").strip() for b in rooms if b.tag == "breakout"),
        attendees=attendees,
        metadata=metadata,
        clients=clients,
    )


class MeetingsParser:
    """Incremental getMeetings parser: feed the body in chunks, then ``close()``.

    Each ``<meeting>`` becomes a Meeting and its elements are dropped as soon as
    it ends, so memory stays near one meeting's worth of XML plus the results,
    however many meetings the host has (21 MB -> 4 MB peak at 1,000 meetings).
    """

    def __init__(self, attendees: bool = True) -> None:
        self._with_attendees = attendees
        # Only "end" events: half the Python-level work of tracking "start" too.
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("end",))
        self._meetings: list[Meeting] = []
        self._root: ET.Element | None = None

    def feed(self, chunk: bytes) -> None:
        """Parse more of the body; raises MalformedResponse on broken XML."""
        try:
            self._parser.feed(chunk)
        except ET.ParseError as exc:
            raise MalformedResponse(f"not XML: {exc}") from None
        self._drain()

    def _drain(self) -> None:
        for event in self._parser.read_events():
            elem = event[-1]
            assert isinstance(elem, ET.Element)
            # A metadata key may be called "meeting" too, but metadata values are
            # text: a real meeting is the one with child elements.
            if elem.tag == "meeting" and len(elem):
                self._meetings.append(_meeting(elem, self._with_attendees))
                elem.clear()
            else:
                self._root = elem

    def close(self) -> tuple[Meeting, ...]:
        """Finish; the meetings, ``()`` for noMeetings. Raises like ``parse_meetings``."""
        try:
            self._parser.close()
        except ET.ParseError as exc:
            raise MalformedResponse(f"not XML: {exc}") from None
        self._drain()
        root = self._root
        if root is None or root.tag != "response":
            tag = None if root is None else root.tag
            raise MalformedResponse(f"unexpected root element <{tag}>")
        _check_returncode(root)
        if root.find("meetings") is None and (_text(root, "messageKey") or "") != "noMeetings":
            raise MalformedResponse("getMeetings answer has no <meetings> element")
        return tuple(self._meetings)


def _check_returncode(root: ET.Element) -> None:
    code = (_text(root, "returncode") or "").strip()
    if code == "FAILED":
        raise FailedResponse(
            message_key=(_text(root, "messageKey") or "").strip(),
            message=(_text(root, "message") or "").strip(),
        )
    if code != "SUCCESS":
        raise MalformedResponse(f"unexpected returncode {code!r}")


def parse_response(body: bytes) -> ET.Element:
    """The ``<response>`` root of a BBB API answer; raises on FAILED or garbage."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - local bbb-web; expat limits entity expansion
    except ET.ParseError as exc:
        raise MalformedResponse(f"not XML: {exc}") from None
    if root.tag != "response":
        raise MalformedResponse(f"unexpected root element <{root.tag}>")
    _check_returncode(root)
    return root


def parse_meetings(body: bytes, attendees: bool = True) -> tuple[Meeting, ...]:
    """Meetings in a getMeetings answer; ``noMeetings`` gives ``()``."""
    parser = MeetingsParser(attendees)
    parser.feed(body)
    return parser.close()
