"""The emulated BBB API as bbbnode's client and parser see it."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest

from bbbcore import checksum
from bbbcore.bbb_api import BbbClient, Unreachable
from bbbcore.meetings import FailedResponse, MalformedResponse, parse_meetings, parse_response
from bbbsim.bbb_emulator import (
    ROOT_CALL,
    EmulatedBbb,
    FaultMode,
    client_url,
    expires_at_ms,
    make_attendees,
    serve,
    strip_checksum,
)
from bbbsim.host_model import HostLoad

SECRET = "639259d4-9dd8-4b25-bf01-95f9567eaf4b"
NOW = 1_715_261_728.123


@dataclass
class Served:
    bbb: EmulatedBbb
    port: int
    session: aiohttp.ClientSession

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/bigbluebutton/api/"

    def client(self, algorithm: checksum.Algorithm = "sha256", timeout: float = 5.0) -> BbbClient:
        return BbbClient(self.session, client_url(self.port), SECRET, algorithm, timeout=timeout)

    async def get(self, path_and_query: str) -> tuple[int, bytes]:
        async with self.session.get(self.api + path_and_query, allow_redirects=False) as resp:
            return resp.status, await resp.read()


async def _serve(bbb: EmulatedBbb) -> AsyncIterator[Served]:
    runner, port = await serve(bbb)
    try:
        async with aiohttp.ClientSession() as session:
            yield Served(bbb, port, session)
    finally:
        await runner.cleanup()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for s in _serve(EmulatedBbb(SECRET, clock=lambda: NOW)):
        yield s


def _hand_checksum(algorithm: str, call: str, query: str, secret: str = SECRET) -> str:
    return hashlib.new(algorithm, (call + query + secret).encode()).hexdigest()


# --- checksums ----------------------------------------------------------------


def test_documented_vector_matches_the_hand_computation() -> None:
    # The example in BBB's API reference (sha1 of call + query + secret).
    query = "name=Test+Meeting&meetingID=abc123&attendeePW=111222&moderatorPW=333444"
    assert _hand_checksum("sha1", "create", query) == "1fcbb0c4fc1f039f73aa6d697d2db9ba7f803f17"


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
async def test_checksum_accepted_for_every_algorithm(served: Served, algorithm: str) -> None:
    query = "name=Test+Meeting&meetingID=abc123&attendeePW=111222&moderatorPW=333444"
    digest = _hand_checksum(algorithm, "create", query)
    status, body = await served.get(f"create?{query}&checksum={digest}")
    assert status == 200
    root = parse_response(body)
    assert root.findtext("meetingID") == "abc123"
    assert root.findtext("attendeePW") == "111222"
    created = served.bbb.meeting("abc123")
    assert created is not None
    assert created.name == "Test Meeting"


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
async def test_wrong_checksum_rejected_with_http_200(served: Served, algorithm: str) -> None:
    digest = _hand_checksum(algorithm, "getMeetings", "", secret="not-the-secret")
    status, body = await served.get(f"getMeetings?checksum={digest}")
    assert status == 200
    with pytest.raises(FailedResponse) as info:
        parse_response(body)
    assert info.value.message_key == "checksumError"


async def test_checksum_covers_the_query_exactly_as_sent(served: Served) -> None:
    signed = _hand_checksum("sha256", "isMeetingRunning", "meetingID=a&x=1")
    _, body = await served.get(f"isMeetingRunning?x=1&meetingID=a&checksum={signed}")
    with pytest.raises(FailedResponse, match="checksumError"):
        parse_response(body)
    # The checksum parameter may sit anywhere; it is cut out before hashing.
    _, body = await served.get(f"isMeetingRunning?checksum={signed}&meetingID=a&x=1")
    assert parse_response(body).findtext("running") == "false"


async def test_missing_checksum_and_wrong_call_name_rejected(served: Served) -> None:
    _, body = await served.get("getMeetings")
    with pytest.raises(FailedResponse, match="checksumError"):
        parse_response(body)
    other_call = _hand_checksum("sha256", "getMeetingInfo", "")
    _, body = await served.get(f"getMeetings?checksum={other_call}")
    with pytest.raises(FailedResponse, match="checksumError"):
        parse_response(body)


@pytest.mark.parametrize(
    ("supported", "accepted"),
    [
        # bigbluebutton.properties' packaged value: all four.
        ("sha1,sha256,sha384,sha512", {"sha1", "sha256", "sha384", "sha512"}),
        # The docs' sha512-only example (docs.bigbluebutton.org/development/api).
        ("sha512", {"sha512"}),
        # GetChecksumValidator.java:51-69 (4b5d4e9) tests String.contains: spaces do
        # not matter, case does, and there is no list parsing at all.
        ("sha256, sha512", {"sha256", "sha512"}),
        ("SHA512", set()),
        ("", set()),
    ],
)
async def test_only_supported_checksum_algorithms_accepted(
    supported: str, accepted: set[str]
) -> None:
    bbb = EmulatedBbb(SECRET, supported_checksum_algorithms=supported)
    async for s in _serve(bbb):
        for algorithm in checksum.ALGORITHMS:
            if algorithm in accepted:
                assert await s.client(algorithm).get_meetings() == ()
                continue
            # A refused algorithm is answered as a wrong checksum, with HTTP 200
            # (GetChecksum.java:8's message under the checksumError key).
            _, body = await s.get(
                f"getMeetings?checksum={_hand_checksum(algorithm, 'getMeetings', '')}"
            )
            with pytest.raises(FailedResponse) as info:
                parse_response(body)
            assert (info.value.message_key, info.value.message) == (
                "checksumError",
                "Checksums do not match",
            )


def test_from_properties_reads_salt_and_algorithms(tmp_path: Path) -> None:
    props = tmp_path / "bbb-web.properties"
    props.write_text("securitySalt=abc\nsupportedChecksumAlgorithms=sha384\n")
    bbb = EmulatedBbb.from_properties(props)
    assert bbb.supported_checksum_algorithms == "sha384"
    props.write_text("securitySalt=abc\n")
    assert EmulatedBbb.from_properties(props).supported_checksum_algorithms == (
        "sha1,sha256,sha384,sha512"
    )
    props.write_text("supportedChecksumAlgorithms=sha512\n")
    with pytest.raises(ValueError, match="securitySalt"):
        EmulatedBbb.from_properties(props)


def test_strip_checksum() -> None:
    assert strip_checksum("a=1&checksum=ff&b=2") == ("a=1&b=2", "ff")
    assert strip_checksum("checksum=ff") == ("", "ff")
    assert strip_checksum("") == ("", None)


# --- XML shape ------------------------------------------------------------------


async def test_root_answers_without_checksum(served: Served) -> None:
    await served.client().ping()
    status, body = await served.get("")
    root = parse_response(body)
    assert status == 200
    assert root.findtext("version") == "2.0"
    assert served.bbb.request_count(ROOT_CALL) == 2


async def test_no_meetings(served: Served) -> None:
    body = await served.client().call("getMeetings")
    assert b"<meetings />" in body
    root = parse_response(body)
    assert root.findtext("messageKey") == "noMeetings"
    assert parse_meetings(body) == ()


async def test_no_meetings_without_container() -> None:
    async for s in _serve(EmulatedBbb(SECRET, omit_empty_meetings=True)):
        body = await s.client().call("getMeetings")
        assert b"<meetings" not in body
        assert parse_meetings(body) == ()


async def test_meetings_round_trip_through_the_parser(served: Served) -> None:
    bbb = served.bbb
    bbb.add_meeting(
        "class-a",
        20,
        moderators=2,
        voice=6,
        listeners=10,
        cameras=2,
        dial_in=1,
        name="Class A",
        metadata={"bbb-origin": "Greenlight", "bbb-origin-server-name": "bbb1.example.test"},
    )
    bbb.add_meeting("lecture", 50, voice=1, listeners=40, cameras=1)
    room = bbb.add_breakout("class-a", 4, voice=2, cameras=1)
    meetings = {m.meeting_id: m for m in await served.client().get_meetings(attendees=True)}

    assert set(meetings) == {"class-a", "lecture", room.meeting_id}
    a = meetings["class-a"]
    assert (a.name, a.running, a.is_breakout) == ("Class A", True, False)
    assert a.participant_count == 20 == len(a.attendees)
    assert a.voice_participant_count == 6
    assert a.listener_count == 10
    assert a.video_count == 2
    assert a.moderator_count == 2
    assert a.metadata == {
        "bbb-origin": "Greenlight",
        "bbb-origin-server-name": "bbb1.example.test",
    }
    assert a.breakout_room_ids == (room.meeting_id,)
    assert a.create_time_ms == int(NOW * 1000)
    assert a.internal_meeting_id.startswith(
        hashlib.sha1(b"class-a", usedforsecurity=False).hexdigest()
    )
    dial_in = [x for x in a.attendees if x.client_type == "DIAL-IN"]
    assert len(dial_in) == 1
    assert dial_in[0].has_joined_voice
    assert not dial_in[0].has_video
    assert sum(1 for x in a.attendees if x.is_presenter) == 1

    r = meetings[room.meeting_id]
    assert r.is_breakout
    assert r.parent_meeting_id == a.internal_meeting_id
    assert (r.sequence, r.free_join) == (1, False)
    assert (r.participant_count, r.voice_participant_count, r.video_count) == (4, 2, 1)

    assert bbb.total_participants() == 74
    assert bbb.total_video_streams() == 4


async def test_every_documented_element_is_present(served: Served) -> None:
    served.bbb.add_meeting("m", 3, cameras=1)
    served.bbb.add_breakout("m", 1, free_join=True)
    body = await served.client().call("getMeetings")
    root = parse_response(body)
    parent, room = root.findall("meetings/meeting")
    expected = [
        *("meetingName", "meetingID", "internalMeetingID", "createTime", "createDate"),
        *("voiceBridge", "dialNumber", "attendeePW", "moderatorPW", "running", "duration"),
        *("hasUserJoined", "recording", "hasBeenForciblyEnded", "startTime", "endTime"),
        *("participantCount", "listenerCount", "voiceParticipantCount", "videoCount"),
        *("maxUsers", "moderatorCount", "attendees", "metadata", "isBreakout"),
    ]
    assert [child.tag for child in parent] == [*expected, "breakoutRooms"]
    # BBB 3.0: the breakout fields are children of <meeting> (get-meetings.ftlx:63-69 at
    # 21f0493); <breakout> appears only inside the parent's <breakoutRooms>.
    assert [child.tag for child in room] == [*expected, "parentMeetingID", "sequence", "freeJoin"]
    assert room.findtext("freeJoin") == "true"
    assert room.findtext("sequence") == "1"
    assert room.findtext("parentMeetingID") == parent.findtext("internalMeetingID")
    assert parent.findtext("breakoutRooms/breakout") == room.findtext("meetingID")
    attendee = parent.find("attendees/attendee")
    assert attendee is not None
    assert [c.tag for c in attendee] == [
        "userID",
        "fullName",
        "role",
        "isPresenter",
        "isListeningOnly",
        "hasJoinedVoice",
        "hasVideo",
        "clientType",
        "customdata",
    ]
    assert parent.findtext("createDate") == "Thu May 09 13:35:28 UTC 2024"


async def test_thousands_separators() -> None:
    bbb = EmulatedBbb(SECRET, thousands_separators=True)
    bbb.add_meeting("big", 1234, voice=1001, listeners=200, cameras=3, max_users=5000)
    async for s in _serve(bbb):
        body = await s.client().call("getMeetings")
        assert b"<participantCount>1,234</participantCount>" in body
        assert b"<voiceParticipantCount>1,001</voiceParticipantCount>" in body
        (m,) = parse_meetings(body)
        assert (m.participant_count, m.voice_participant_count, m.max_users) == (1234, 1001, 5000)
        assert m.listener_count == 200


async def test_create_join_info_end(served: Served) -> None:
    client = served.client()
    params = [("name", "Room 1"), ("meetingID", "r1"), ("attendeePW", "ap"), ("moderatorPW", "mp")]
    params.append(("meta_bbb-origin", "Moodle"))
    created = parse_response(await client.call("create", params))
    assert created.findtext("parentMeetingID") == "bbb-none"
    again = parse_response(await client.call("create", params))
    assert again.findtext("messageKey") == "duplicateWarning"
    running = parse_response(await client.call("isMeetingRunning", [("meetingID", "r1")]))
    assert running.findtext("running") == "false"

    join = [("meetingID", "r1"), ("fullName", "Ann"), ("password", "mp"), ("redirect", "false")]
    joined = parse_response(await client.call("join", join))
    assert joined.findtext("messageKey") == "successfullyJoined"
    with pytest.raises(Unreachable, match="HTTP 302"):
        await client.call("join", [("meetingID", "r1"), ("fullName", "Bob"), ("role", "viewer")])
    with pytest.raises(FailedResponse, match="invalidPassword"):
        parse_response(
            await client.call("join", [("meetingID", "r1"), ("fullName", "Eve"), ("password", "x")])
        )
    assert [(j.full_name, j.role) for j in served.bbb.joins] == [
        ("Ann", "MODERATOR"),
        ("Bob", "VIEWER"),
    ]

    info = parse_response(await client.call("getMeetingInfo", [("meetingID", "r1")]))
    assert info.findtext("running") == "true"
    assert info.findtext("participantCount") == "2"
    assert info.findtext("moderatorCount") == "1"
    assert info.findtext("metadata/bbb-origin") == "Moodle"

    ended = parse_response(await client.call("end", [("meetingID", "r1")]))
    assert ended.findtext("messageKey") == "sentEndMeetingRequest"
    assert served.bbb.meeting("r1") is None
    with pytest.raises(FailedResponse, match="notFound"):
        parse_response(await client.call("getMeetingInfo", [("meetingID", "r1")]))
    with pytest.raises(FailedResponse, match="notFound"):
        parse_response(await client.call("end", [("meetingID", "r1")]))


async def test_ended_meeting_kept_when_asked(served: Served) -> None:
    served.bbb.add_meeting("m", 5)
    served.bbb.add_breakout("m", 2)
    assert served.bbb.end_meeting("m", keep=True)
    meetings = await served.client().get_meetings(attendees=True)
    assert len(meetings) == 2
    assert all(not m.running and m.participant_count == 0 for m in meetings)
    served.bbb.remove_meeting("m")
    assert served.bbb.meetings() == ()


def test_removing_a_breakout_unlinks_it_from_the_parent() -> None:
    bbb = EmulatedBbb(SECRET)
    bbb.add_meeting("p", 10)
    one = bbb.add_breakout("p", 3)
    two = bbb.add_breakout("p", 3)
    assert (one.sequence, two.sequence) == (1, 2)
    bbb.remove_meeting(one.meeting_id)
    parent = bbb.meeting("p")
    assert parent is not None
    assert parent.breakout_room_ids == (two.meeting_id,)


def test_counts_stay_consistent_and_invalid_counts_are_refused() -> None:
    attendees = make_attendees("m", 10, moderators=2, voice=4, listeners=5, cameras=3, dial_in=2)
    assert len(attendees) == 10
    assert sum(a.has_joined_voice for a in attendees) == 4
    assert sum(a.is_listening_only for a in attendees) == 5
    assert not any(a.has_joined_voice and a.is_listening_only for a in attendees)
    assert sum(a.has_video for a in attendees) == 3
    with pytest.raises(ValueError, match="dial_in <= voice"):
        make_attendees("m", 10, dial_in=2, voice=1)
    with pytest.raises(ValueError, match="voice \\+ listeners"):
        make_attendees("m", 10, voice=6, listeners=5)
    with pytest.raises(ValueError, match="cameras"):
        make_attendees("m", 3, cameras=3, voice=1, dial_in=1)
    bbb = EmulatedBbb(SECRET)
    with pytest.raises(ValueError, match="XML element name"):
        bbb.add_meeting("m", 1, metadata={"bad key": "x"})


def test_host_load_counts_video_to_web_viewers_only() -> None:
    bbb = EmulatedBbb(SECRET)
    bbb.add_meeting("m", 10, voice=3, cameras=2, dial_in=1)
    # 9 browser users: each of the 2 cameras reaches the 8 other browsers.
    assert bbb.host_load() == HostLoad(participants=10, voice=3, cameras=2, video_downstreams=16)
    assert 0 < bbb.cpu_utilization() < 1


async def test_users_who_left_stay_listed_but_not_counted_online() -> None:
    """participantCount counts users online (get-meetings.ftlx: getNumUsersOnline(),
    bigbluebutton#15993) while <attendees> is getUsers() and moderatorCount is
    getNumModerators(), both over every user bbb-web still holds (Meeting.java before
    bigbluebutton#21766), until usersTimeout (60000 ms, bigbluebutton.properties)."""
    clock = [NOW]
    bbb = EmulatedBbb(SECRET, clock=lambda: clock[0])
    bbb.add_meeting("class", 5, moderators=2, voice=3, cameras=1)
    teacher, co_teacher, *students = (a.user_id for a in bbb.meetings()[0].attendees)
    bbb.leave("class", teacher, students[0])
    async for s in _serve(bbb):
        (m,) = await s.client().get_meetings(attendees=True)
        assert m.participant_count == 3
        assert len(m.attendees) == 5
        assert m.moderator_count == 2  # the teacher who left still counts
        # Their media went with their clients.
        assert (m.voice_participant_count, m.video_count) == (1, 0)
        assert bbb.host_load().participants == 3

        clock[0] += 59.0
        (m,) = await s.client().get_meetings(attendees=True)
        assert len(m.attendees) == 5
        clock[0] += 1.0
        (m,) = await s.client().get_meetings(attendees=True)
        assert [a.user_id for a in m.attendees] == [co_teacher, *students[1:]]
        assert (m.participant_count, m.moderator_count) == (3, 1)

    bbb.leave("class", co_teacher, *students[1:])
    (gone,) = bbb.meetings()
    assert (gone.participant_count, gone.moderator_count, len(gone.attendees)) == (0, 1, 3)
    with pytest.raises(KeyError, match="not online"):
        bbb.leave("class", co_teacher)


# --- faults and request counts ----------------------------------------------------


async def test_fault_down_drops_the_connection(served: Served) -> None:
    served.bbb.set_fault(FaultMode.DOWN)
    with pytest.raises(Unreachable):
        await served.client().get_meetings()
    with pytest.raises(Unreachable):
        await served.client().ping()
    served.bbb.clear_fault()
    assert await served.client().get_meetings() == ()


async def test_fault_slow_times_the_client_out(served: Served) -> None:
    served.bbb.set_fault(FaultMode.SLOW, delay=60.0)
    with pytest.raises(Unreachable, match="Timeout"):
        await served.client(timeout=0.05).get_meetings()


async def test_fault_slow_answers_when_released(served: Served) -> None:
    served.bbb.add_meeting("m", 3)
    served.bbb.set_fault(FaultMode.SLOW, delay=60.0)
    pending = asyncio.create_task(served.client().get_meetings())
    async with asyncio.timeout(5):
        await served.bbb.wait_held(1)
    assert not pending.done()
    served.bbb.clear_fault()
    (meeting,) = await pending
    assert meeting.participant_count == 3


async def test_fault_malformed(served: Served) -> None:
    served.bbb.add_meeting("m", 3)
    served.bbb.set_fault(FaultMode.MALFORMED)
    with pytest.raises(MalformedResponse):
        await served.client().get_meetings()


async def test_fault_failed(served: Served) -> None:
    served.bbb.set_fault(FaultMode.FAILED)
    with pytest.raises(FailedResponse):
        await served.client().get_meetings()


async def test_fault_http_error(served: Served) -> None:
    served.bbb.set_fault(FaultMode.HTTP_ERROR)
    with pytest.raises(Unreachable, match="HTTP 500"):
        await served.client().get_meetings()


async def test_fault_limited_to_some_calls(served: Served) -> None:
    served.bbb.set_fault(FaultMode.HTTP_ERROR, calls=["getMeetings"])
    await served.client().ping()
    with pytest.raises(Unreachable):
        await served.client().get_meetings()


async def test_requests_are_counted_per_call(served: Served) -> None:
    client = served.client()
    await client.get_meetings()
    await client.get_meetings()
    await client.call("isMeetingRunning", [("meetingID", "x")])
    # Requests answered with a fault count too (DOWN may count twice: aiohttp
    # retries an idempotent request once when a pooled connection is dropped).
    served.bbb.set_fault(FaultMode.FAILED)
    with pytest.raises(FailedResponse):
        await client.get_meetings()
    assert served.bbb.request_count("getMeetings") == 3
    assert served.bbb.request_counts() == {"getMeetings": 3, "isMeetingRunning": 1}
    assert served.bbb.request_count() == 4
    served.bbb.reset_counts()
    assert served.bbb.request_count() == 0


# --- meeting expiry (akka-apps MeetingTrackers.scala, on MeetingActorAudit's 10 s tick) -----

START = 1_715_261_728.0
"""A whole second: the audit ticks fall on exact milliseconds from the create."""


def test_a_meeting_nobody_joins_ends_at_the_audit_tick_after_five_minutes() -> None:
    # meetingExpireIfNoUserJoinedInMinutes=5: ``now - start > 300 s`` first holds on the
    # tick at 305 s (ticks at 5 s, then every 10 s).
    clock = [START]
    bbb = EmulatedBbb(SECRET, clock=lambda: clock[0])
    bbb.add_meeting("empty")
    clock[0] = START + 304.9
    assert bbb.meeting("empty") is not None
    clock[0] = START + 305.0
    assert bbb.meeting("empty") is None
    assert bbb.meetings() == ()


def test_a_meeting_ends_a_minute_after_its_last_user_left_unless_one_comes_back() -> None:
    clock = [START]
    bbb = EmulatedBbb(SECRET, clock=lambda: clock[0])
    bbb.add_meeting("class", 2)
    clock[0] = START + 600  # long past five minutes: someone joined
    users = [a.user_id for a in bbb.meetings()[0].attendees]
    bbb.leave("class", *users)
    # Left at 600 s: akka-apps keeps them 10 s for a reconnect and removes them on the tick
    # at 615 s, which sets lastUserLeftOn; ``now - 615 s > 60 s`` first holds at 685 s.
    clock[0] = START + 684.9
    assert bbb.meeting("class") is not None
    clock[0] = START + 685.0
    assert bbb.meeting("class") is None
    # A user back within the minute keeps it (setUserHasJoined clears lastUserLeftOn).
    bbb.add_meeting("again", 1)
    bbb.leave("again", bbb.meetings()[0].attendees[0].user_id)
    clock[0] = START + 700
    bbb.set_participants("again", 1)
    clock[0] = START + 900
    assert bbb.meeting("again") is not None
    # Everyone gone at 900 s; created at 685 s, its ticks fall on 690 s + 10 s steps:
    # removed at 920 s, ended at 990 s.
    bbb.set_participants("again", 0)
    clock[0] = START + 989.9
    assert bbb.meeting("again") is not None
    clock[0] = START + 990.0
    assert bbb.meeting("again") is None
    # With a limit of 0 it ends on the first tick after the last user left.
    zero = EmulatedBbb(SECRET, clock=lambda: clock[0], expire_when_last_user_left=0.0)
    zero.add_meeting("now", 1)  # created at 990 s: ticks at 995 s + 10 s steps
    zero.set_participants("now", 0)
    clock[0] = START + 994.9
    assert zero.meeting("now") is not None
    clock[0] = START + 995.0
    assert zero.meeting("now") is None


def test_breakout_rooms_do_not_expire_for_want_of_users() -> None:
    clock = [START]
    bbb = EmulatedBbb(SECRET, clock=lambda: clock[0])
    bbb.add_meeting("class", 3)
    bbb.add_breakout("class")
    clock[0] = START + 3600
    assert [m.meeting_id for m in bbb.meetings()] == ["class", "class-breakout-1"]


def test_duration_and_the_creates_own_expiry_win() -> None:
    clock = [START]
    bbb = EmulatedBbb(SECRET, clock=lambda: clock[0], expire_if_no_user_joined=3600.0)
    bbb.add_meeting("long", 1)
    clock[0] = START + 1800
    assert bbb.meeting("long") is not None
    assert expires_at_ms(replace(bbb.meetings()[0], duration=10)) == int((START + 605) * 1000)


async def test_create_takes_its_own_expiry_parameters() -> None:
    clock = [START]
    async for s in _serve(EmulatedBbb(SECRET, clock=lambda: clock[0])):
        query = "meetingID=quick&meetingExpireIfNoUserJoinedInMinutes=1"
        status, _ = await s.get(
            f"create?{query}&checksum={_hand_checksum('sha1', 'create', query)}"
        )
        assert status == 200
        clock[0] = START + 64.9
        assert [m.meeting_id for m in await s.client().get_meetings()] == ["quick"]
        clock[0] = START + 65.0
        assert await s.client().get_meetings() == ()


def test_a_dial_in_caller_alone_keeps_the_meeting() -> None:
    # akka-apps adds a dial-in caller to Users2x (registerUserInUsers2x): he counts as a user.
    clock = [START]
    bbb = EmulatedBbb(SECRET, clock=lambda: clock[0])
    bbb.add_meeting("phone", 1, voice=1, dial_in=1)
    clock[0] = START + 3600
    assert bbb.meeting("phone") is not None
