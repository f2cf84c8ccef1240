from pathlib import Path

import pytest

from bbbcore.meetings import (
    FailedResponse,
    MalformedResponse,
    parse_count,
    parse_meetings,
)

FIXTURES = Path(__file__).parent / "fixtures" / "bbb"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_no_meetings() -> None:
    assert parse_meetings(load("no_meetings.xml")) == ()


def test_no_meetings_without_container() -> None:
    body = (
        b"<response><returncode>SUCCESS</returncode><messageKey>noMeetings</messageKey></response>"
    )
    assert parse_meetings(body) == ()


def test_checksum_error_is_typed() -> None:
    with pytest.raises(FailedResponse) as info:
        parse_meetings(load("checksum_error.xml"))
    assert info.value.message_key == "checksumError"
    assert "do not match" in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b"<response><returncode>SUCCESS</returncode><meetings><meeting>",
        b"<response><returncode>MAYBE</returncode></response>",
        b"<response><returncode>SUCCESS</returncode></response>",
        b"<response><returncode>SUCCESS</returncode><meetings><meeting>"
        b"<participantCount>many</participantCount></meeting></meetings></response>",
    ],
)
def test_garbage_raises_malformed(body: bytes) -> None:
    with pytest.raises(MalformedResponse):
        parse_meetings(body)


def test_full_shape() -> None:
    physics, breakout, allhands = parse_meetings(load("meetings.xml"))

    assert physics.meeting_id == "phys-101"
    assert physics.participant_count == 3
    assert (physics.listener_count, physics.voice_participant_count, physics.video_count) == (
        1,
        2,
        1,
    )
    assert physics.moderator_count == 1
    assert physics.breakout_room_ids == ("9a8b7c-1700000100000",)
    assert physics.metadata["bbb-origin"] == "Greenlight"
    assert [a.client_type for a in physics.attendees] == ["HTML5", "HTML5", "DIAL-IN"]
    assert physics.attendees[0].is_moderator
    assert physics.attendees[0].has_video
    assert not physics.is_breakout

    # BBB 3.0 puts parentMeetingID, sequence and freeJoin straight under <meeting>
    # (get-meetings.ftlx:65-69 at 21f0493; CreateBreakoutRoom.java: the parent's internal id).
    assert breakout.is_breakout
    assert breakout.parent_meeting_id == physics.internal_meeting_id
    assert (breakout.sequence, breakout.free_join) == (1, True)
    assert (physics.parent_meeting_id, physics.sequence, physics.free_join) == (None, 0, False)
    assert breakout.attendees == ()
    assert dict(breakout.metadata) == {}

    # Thousands separators, and a missing moderatorCount counted from attendees.
    assert allhands.participant_count == 1204
    assert allhands.listener_count == 1190
    assert allhands.max_users == 2000
    assert allhands.moderator_count == 1
    # Missing booleans default to False, not to an error.
    assert allhands.attendees[0].is_presenter is False


def test_parse_count() -> None:
    assert parse_count(None) == 0
    assert parse_count("  ") == 0
    assert parse_count("12,345") == 12345
    assert parse_count(" 7 ") == 7


def test_metadata_key_named_meeting_is_not_a_meeting() -> None:
    body = (
        b"<response><returncode>SUCCESS</returncode><meetings><meeting>"
        b"<meetingID>x</meetingID><participantCount>2</participantCount>"
        b"<metadata><meeting>not a meeting</meeting></metadata>"
        b"</meeting></meetings></response>"
    )
    (only,) = parse_meetings(body)
    assert only.meeting_id == "x"
    assert only.metadata["meeting"] == "not a meeting"


def test_incremental_feed_any_chunking() -> None:
    from bbbcore.meetings import MeetingsParser

    body = load("meetings.xml")
    whole = parse_meetings(body)
    for size in (1, 7, 100, 4096):
        parser = MeetingsParser()
        for i in range(0, len(body), size):
            parser.feed(body[i : i + size])
        assert parser.close() == whole


def test_without_attendees_keeps_client_counts_and_moderators() -> None:
    physics, _, allhands = parse_meetings(load("meetings.xml"), attendees=False)
    assert physics.attendees == ()
    assert physics.clients == (("DIAL-IN", 1), ("HTML5", 2))
    # moderatorCount missing: still counted from the attendee list.
    assert allhands.moderator_count == 1
    assert parse_meetings(load("meetings.xml"), attendees=False)[0].participant_count == 3
