"""Scalelite's placement rule (pure) and the Scalelite emulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from bbbcore import checksum
from bbbcore.scalelite import (
    SERVER_STATES,
    SERVER_TAG_UNAVAILABLE,
    LoadRule,
    MeetingCount,
    PlacementCandidate,
    PlacementSnapshot,
    ScaleliteClient,
    TagUnavailable,
    meeting_weight,
    place_meeting,
    server_load,
)
from bbbsim.bbb_emulator import EmulatedBbb, FaultMode, client_url
from bbbsim.bbb_emulator import serve as serve_bbb
from bbbsim.scalelite_emulator import ScaleliteEmulator, serve

LB_SECRET = "lb-secret"
T0 = 1_800_000_000.0  # an arbitrary "now" in epoch seconds
MIN = 60.0


# ================================================================ pure rule


def test_meeting_weight_young_meetings_count_at_least_15() -> None:
    young = MeetingCount(participants=2, moderators=1, create_time_ms=int((T0 - 60) * 1000))
    old = MeetingCount(participants=2, moderators=1, create_time_ms=int((T0 - 16 * MIN) * 1000))
    big_young = MeetingCount(participants=30, moderators=2, create_time_ms=int(T0 * 1000))
    assert meeting_weight(young, T0) == 15
    # Scalelite adds moderatorCount on top of participantCount.
    assert meeting_weight(old, T0) == 3
    assert meeting_weight(big_young, T0) == 32


def test_meeting_weight_boundary_and_breakouts() -> None:
    # Strictly younger than the buffer, with createTime truncated to seconds.
    at_edge = MeetingCount(0, 0, int((T0 - 15 * MIN) * 1000) + 999)
    inside = MeetingCount(0, 0, int((T0 - 15 * MIN + 1) * 1000))
    assert meeting_weight(at_edge, T0) == 0
    assert meeting_weight(inside, T0) == 15
    breakout = MeetingCount(50, 1, int(T0 * 1000), is_breakout=True)
    assert meeting_weight(breakout, T0) == 0
    custom = LoadRule(min_user_count=5, join_buffer_s=60)
    assert meeting_weight(MeetingCount(1, 0, int((T0 - 30) * 1000)), T0, custom) == 5


def test_server_load_applies_the_multiplier() -> None:
    meetings = [
        MeetingCount(20, 2, int((T0 - 3600) * 1000)),
        MeetingCount(1, 1, int(T0 * 1000)),
    ]
    assert server_load(meetings, 1.0, T0) == 37
    assert server_load(meetings, 1.5, T0) == 55.5
    assert server_load([], 2.0, T0) == 0


def cand(
    sid: str,
    load: float | None,
    state: str = "enabled",
    online: bool = True,
    tag: str | None = None,
) -> PlacementCandidate:
    return PlacementCandidate(sid, state, online, load, tag)  # type: ignore[arg-type]


def test_place_least_load_with_id_tie_break() -> None:
    snap = PlacementSnapshot((cand("b", 10), cand("c", 3), cand("a", 3)))
    assert place_meeting(snap) == "a"


def test_place_skips_cordoned_disabled_offline_and_unknown_load() -> None:
    snap = PlacementSnapshot(
        (
            cand("cordoned", 0, state="cordoned"),
            cand("disabled", None, state="disabled"),
            cand("offline", None, online=False),
            cand("unpolled", None),
            cand("busy", 99),
        )
    )
    assert place_meeting(snap) == "busy"
    assert place_meeting(PlacementSnapshot(snap.servers[:4])) is None
    assert place_meeting(PlacementSnapshot(())) is None


def test_place_multiplier_is_already_in_the_load() -> None:
    # 10 users x 1.0 against 8 users x 2.0: the weighted server loses.
    light_box, heavy_box = cand("a", 10 * 1.0), cand("b", 8 * 2.0)
    assert place_meeting(PlacementSnapshot((light_box, heavy_box))) == "a"


def test_place_tags() -> None:
    # Server.find_available, app/models/server.rb:289-316 at v1.8.5.
    snap = PlacementSnapshot(
        (
            cand("bbb-1", 3, tag="test"),
            cand("bbb-2", 2),
            cand("bbb-3", 0),
            cand("bbb-4", 2, tag="test2"),
            cand("bbb-5", 1, tag="test,x"),
        )
    )
    # No tag (or blank, or a lone "!", server.rb:291-296): untagged servers only.
    for spec in (None, "", "  ", "!", " !"):
        assert place_meeting(snap, spec) == "bbb-3"
    assert place_meeting(snap, "test") == "bbb-1"
    assert place_meeting(snap, "test!") == "bbb-1"
    # A semicolon list (server.rb:297); the least-loaded match wins (server.rb:310).
    assert place_meeting(snap, "test;test2") == "bbb-4"
    # A comma is part of a tag name, not a separator.
    assert place_meeting(snap, "test,x") == "bbb-5"
    # "none" stands for the untagged servers (server.rb:308).
    assert place_meeting(snap, "none") == "bbb-3"
    assert place_meeting(snap, "test;none") == "bbb-3"
    # Unmatched: fall back to untagged (server.rb:314-315) ...
    assert place_meeting(snap, "test3") == "bbb-3"
    # ... unless required (server.rb:313): serverTagUnavailable.
    with pytest.raises(TagUnavailable) as refused:
        place_meeting(snap, "test3;other!")
    assert refused.value.tags == "test3;other"
    # Names are compared as written (no stripping).
    assert place_meeting(snap, " test") == "bbb-3"


def test_place_with_nothing_available_is_none_before_tags() -> None:
    # server.rb:302: "Could not find any available servers." comes before the tag check.
    snap = PlacementSnapshot((cand("a", None, tag="x"), cand("b", 0, state="cordoned")))
    assert place_meeting(snap, "x!") is None
    only_tagged = PlacementSnapshot((cand("t", 0, tag="x"),))
    assert place_meeting(only_tagged) is None
    with pytest.raises(TagUnavailable):
        place_meeting(only_tagged, "y!")


candidates = st.builds(
    PlacementCandidate,
    id=st.text(alphabet="abcdef", min_size=1, max_size=4),
    state=st.sampled_from(SERVER_STATES),
    online=st.booleans(),
    load=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False)),
    tag=st.one_of(st.none(), st.sampled_from(["big", "new"])),
)


@given(
    servers=st.lists(candidates, max_size=12),
    tag=st.one_of(st.none(), st.sampled_from(["", "big", "big!", "new;none", "x!"])),
)
def test_property_never_places_on_cordoned_disabled_or_offline(
    servers: list[PlacementCandidate], tag: str | None
) -> None:
    try:
        chosen = place_meeting(PlacementSnapshot(tuple(servers)), tag)
    except TagUnavailable:
        # Only a required list with no available match is refused.
        assert tag is not None
        assert tag.endswith("!")
        wanted = set(tag[:-1].split(";"))
        available = [s for s in servers if s.available]
        assert available
        assert not [s for s in available if (s.tag or "none") in wanted]
        return
    eligible = [s for s in servers if s.state == "enabled" and s.online and s.load is not None]
    if chosen is None:
        if tag is None:
            assert not [s for s in eligible if s.tag is None]
        return
    picked = [s for s in servers if s.id == chosen]
    assert any(s.state == "enabled" and s.online and s.load is not None for s in picked)
    if tag is None:
        untagged = [s for s in eligible if s.tag is None]
        best = min(s.load for s in untagged if s.load is not None)
        assert min(s.load for s in picked if s in untagged and s.load is not None) == best


# ================================================================ a tiny BBB backend


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class StubMeeting:
    participants: int = 0
    moderators: int = 0
    create_time_ms: int = 0
    is_breakout: bool = False
    videos: int = 0


@dataclass
class BbbStub:
    """Answers getMeetings/create/join/end in BBB's XML, checking BBB's checksum."""

    secret: str
    clock: Clock
    meetings: dict[str, StubMeeting] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bigbluebutton/api/{call}", self.handle)
        return app

    @staticmethod
    def _xml(**children: str) -> web.Response:
        root = ET.Element("response")
        for tag, text in children.items():
            ET.SubElement(root, tag).text = text
        return web.Response(body=ET.tostring(root), content_type="text/xml")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        call = request.match_info["call"]
        raw = request.rel_url.raw_query_string
        query, _, given_sum = raw.rpartition("checksum=")
        if not checksum.verify(call, query.rstrip("&"), self.secret, given_sum):
            return self._xml(returncode="FAILED", messageKey="checksumError")
        params = dict(parse_qsl(raw))
        self.calls.append((call, params))
        meeting_id = params.get("meetingID", "")
        if call == "getMeetings":
            root = ET.Element("response")
            ET.SubElement(root, "returncode").text = "SUCCESS"
            container = ET.SubElement(root, "meetings")
            for mid, m in self.meetings.items():
                el = ET.SubElement(container, "meeting")
                for tag, text in {
                    "meetingID": mid,
                    "internalMeetingID": mid + "-int",
                    "createTime": str(m.create_time_ms),
                    "running": "true",
                    "participantCount": str(m.participants),
                    "moderatorCount": str(m.moderators),
                    "videoCount": str(m.videos),
                    "isBreakout": "true" if m.is_breakout else "false",
                }.items():
                    ET.SubElement(el, tag).text = text
            return web.Response(body=ET.tostring(root), content_type="text/xml")
        if call == "create":
            self.meetings.setdefault(
                meeting_id, StubMeeting(create_time_ms=int(self.clock() * 1000))
            )
            return self._xml(returncode="SUCCESS", meetingID=meeting_id)
        if call == "join":
            return web.Response(text=f"joined {meeting_id} as {params.get('fullName')}")
        if call == "end":
            self.meetings.pop(meeting_id, None)
            return self._xml(returncode="SUCCESS", messageKey="sentEndMeetingRequest")
        if call == "getMeetingInfo" and meeting_id not in self.meetings:
            return self._xml(returncode="FAILED", messageKey="notFound", message="no meeting")
        if call in ("isMeetingRunning", "getMeetingInfo"):
            running = "true" if meeting_id in self.meetings else "false"
            return self._xml(returncode="SUCCESS", running=running)
        return self._xml(returncode="FAILED", messageKey="unsupportedRequest")


# ================================================================ fixtures


@dataclass
class Fleet:
    emulator: ScaleliteEmulator
    base: str
    clock: Clock
    http: aiohttp.ClientSession
    runners: dict[str, web.AppRunner] = field(default_factory=dict)
    stubs: dict[str, BbbStub] = field(default_factory=dict)

    async def backend(
        self,
        secret: str = "bbb-secret",  # noqa: S107
        **kw: Any,
    ) -> tuple[str, BbbStub]:
        """Start a BBB stub, register it (enabled) and return its server id."""
        stub = BbbStub(secret, self.clock)
        runner = web.AppRunner(stub.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/bigbluebutton/api/"
        sid = self.emulator.add_server(url, secret, state="enabled", **kw)
        self.runners[sid], self.stubs[sid] = runner, stub
        return sid, stub

    def front_url(self, call: str, params: list[tuple[str, str]], algo: str = "sha256") -> URL:
        query = checksum.signed_query(call, params, LB_SECRET, algo)  # type: ignore[arg-type]
        return URL(f"{self.base}/bigbluebutton/api/{call}?{query}", encoded=True)

    async def front(self, call: str, **params: str) -> ET.Element:
        async with self.http.get(self.front_url(call, list(params.items()))) as resp:
            assert resp.status == 200
            return parse_xml(await resp.read())

    async def create(self, meeting_id: str, **params: str) -> ET.Element:
        return await self.front("create", meetingID=meeting_id, name=meeting_id, **params)

    def host_of(self, meeting_id: str) -> str:
        return self.emulator.meetings()[meeting_id]


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    clock = Clock()
    emulator = ScaleliteEmulator(LB_SECRET, clock=clock)
    runner, port = await serve(emulator)
    async with aiohttp.ClientSession() as http:
        f = Fleet(emulator, f"http://127.0.0.1:{port}", clock, http)
        yield f
    for backend in f.runners.values():
        await backend.cleanup()
    await runner.cleanup()


def parse_xml(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 - our own emulator on loopback


def key(root: ET.Element) -> str:
    return root.findtext("messageKey") or root.findtext("returncode") or ""


# ================================================================ server API


def sign(action: str, query: str, algorithm: str, secret: str = LB_SECRET) -> str:
    return hashlib.new(algorithm, (action + query + secret).encode()).hexdigest()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
async def test_checksum_rule_for_get_and_post(fleet: Fleet, algorithm: str) -> None:
    api = fleet.base + "/scalelite/api/"
    async with fleet.http.get(f"{api}getServers?checksum={sign('getServers', '', algorithm)}") as r:
        assert (r.status, await r.json()) == (404, {"error": "No servers are configured"})
    # POST: signed over the action alone; the JSON body is not part of it.
    body = {"server": {"url": "http://127.0.0.1:9/bigbluebutton/api/", "secret": "x"}}
    url = f"{api}addServer?checksum={sign('addServer', '', algorithm)}"
    async with fleet.http.post(url, json=body) as r:
        assert r.status == 201
        added = await r.json()
    info = f"id={added['id']}"
    url = f"{api}getServerInfo?{info}&checksum={sign('getServerInfo', info, algorithm)}"
    async with fleet.http.get(url) as r:
        assert (await r.json())["id"] == added["id"]
    # The checksum may also come first in the query string.
    url = f"{api}getServerInfo?checksum={sign('getServerInfo', info, algorithm)}&{info}"
    async with fleet.http.get(url) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    "bad_checksum",
    [
        sign("getServers", "", "sha384"),  # a correct sha384 is still refused
        sign("getServers", "", "sha256", secret="other"),
        sign("getServers", "", "md5"),
        sign("getServers", "", "sha256").upper(),
        sign("getServers", '{"server":{}}', "sha256"),
        "",
    ],
)
async def test_checksum_refusals_are_xml_with_200(fleet: Fleet, bad_checksum: str) -> None:
    url = f"{fleet.base}/scalelite/api/getServers?checksum={bad_checksum}"
    async with fleet.http.get(url) as r:
        assert r.status == 200
        root = parse_xml(await r.read())
    assert (root.findtext("returncode"), key(root)) == ("FAILED", "checksumError")


async def test_sha384_refused_even_when_configured() -> None:
    emulator = ScaleliteEmulator(LB_SECRET, algorithms=("sha384", "sha256"))
    runner, port = await serve(emulator)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/scalelite/api/getServers"
            async with http.get(f"{url}?checksum={sign('getServers', '', 'sha384')}") as r:
                assert b"checksumError" in await r.read()
            async with http.get(f"{url}?checksum={sign('getServers', '', 'sha256')}") as r:
                assert r.status == 404
    finally:
        await runner.cleanup()


async def test_algorithm_list_is_honoured() -> None:
    emulator = ScaleliteEmulator(LB_SECRET, algorithms=("sha512",))
    runner, port = await serve(emulator)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/scalelite/api/getServers"
            async with http.get(f"{url}?checksum={sign('getServers', '', 'sha256')}") as r:
                assert b"checksumError" in await r.read()
    finally:
        await runner.cleanup()


async def post(fleet: Fleet, action: str, body: Any, content_type: str = "application/json") -> Any:
    url = f"{fleet.base}/scalelite/api/{action}?checksum={sign(action, '', 'sha256')}"
    data = json.dumps(body).encode()
    async with fleet.http.post(url, data=data, headers={"Content-Type": content_type}) as r:
        raw = await r.read()
        return r.status, (json.loads(raw) if raw.startswith((b"{", b"[")) else raw)


async def test_server_api_answers_like_scalelite(fleet: Fleet) -> None:
    status, added = await post(
        fleet, "addServer", {"server": {"url": "http://127.0.0.1:9/b/api/", "secret": "s"}}
    )
    assert status == 201
    assert added == {
        "id": added["id"],
        "url": "http://127.0.0.1:9/b/api/",
        "secret": "s",
        "tag": "",
        "state": "disabled",
        "load": "unavailable",
        "load_multiplier": "1.0",
        "online": "offline",
    }
    sid = added["id"]
    assert await post(fleet, "updateServer", {"id": sid, "server": {"state": "cordoned"}}) == (
        400,
        {"error": "Invalid state parameter: cordoned"},
    )
    assert await post(fleet, "updateServer", {"id": sid, "server": {"load_multiplier": 0}}) == (
        400,
        {"error": "Load-multiplier must be a non-zero number"},
    )
    status, updated = await post(
        fleet, "updateServer", {"id": sid, "server": {"state": "cordon", "load_multiplier": "2.5"}}
    )
    assert (status, updated["state"], updated["load_multiplier"]) == (200, "cordoned", "2.5")
    assert await post(fleet, "updateServer", {"id": "nope", "server": {"state": "enable"}}) == (
        404,
        {"error": "Couldn't find server with id=nope"},
    )
    assert await post(fleet, "addServer", {"server": {"url": "http://x/"}}) == (
        400,
        {"error": "Server needs a URL and a secret"},
    )
    status, raw = await post(fleet, "addServer", {})
    assert status == 200
    assert b"internalError" in raw
    # Rails' JSON params wrapper: unwrapped fields land under "server".
    status, unwrapped = await post(
        fleet, "addServer", {"url": "http://127.0.0.1:8/", "secret": "t"}
    )
    assert (status, unwrapped["url"]) == (201, "http://127.0.0.1:8/")
    # A body not sent as JSON is not parsed at all.
    status, raw = await post(fleet, "deleteServer", {"id": sid}, content_type="text/plain")
    assert status == 404
    assert await post(fleet, "deleteServer", {"id": sid}) == (
        200,
        {"success": f"Server id={sid} was destroyed"},
    )
    assert [s.url for s in fleet.emulator.servers()] == ["http://127.0.0.1:8/"]


async def test_hostname_ids() -> None:
    emulator = ScaleliteEmulator(LB_SECRET, server_id_is_hostname=True)
    sid = emulator.add_server("https://BBB1.example.org/bigbluebutton/api/", "s")
    assert sid == "bbb1.example.org"
    with pytest.raises(ValueError, match="already exists"):
        emulator.add_server("https://bbb1.example.org/other/api/", "s")


# ================================================================ poller


async def test_poll_brings_servers_online_and_computes_load(fleet: Fleet) -> None:
    sid, stub = await fleet.backend(load_multiplier=2.0)
    now_ms = int(fleet.clock() * 1000)
    stub.meetings["young"] = StubMeeting(2, 1, now_ms - 60_000, videos=1)
    stub.meetings["old"] = StubMeeting(20, 2, now_ms - 3_600_000, videos=3)
    stub.meetings["breakout"] = StubMeeting(5, 0, now_ms, is_breakout=True)
    assert fleet.emulator.server(sid).online is False
    await fleet.emulator.poll()
    server = fleet.emulator.server(sid)
    assert server.online is True
    assert server.load == (15 + 22) * 2.0
    assert (server.meetings, server.users, server.largest_meeting, server.videos) == (3, 27, 20, 4)
    fleet.clock.now += 15 * MIN
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).load == (3 + 22) * 2.0


async def test_disabled_servers_have_no_load_and_re_enabling_waits_for_a_poll(
    fleet: Fleet,
) -> None:
    sid, _ = await fleet.backend()
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).load == 0
    fleet.emulator.set_state(sid, "disabled")
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).load is None
    fleet.emulator.set_state(sid, "enabled")
    assert place_meeting(fleet.emulator.snapshot()) is None
    await fleet.emulator.poll()
    assert place_meeting(fleet.emulator.snapshot()) == sid


async def test_cordoned_server_turns_disabled_at_load_zero(fleet: Fleet) -> None:
    sid, _stub = await fleet.backend()
    other, _ = await fleet.backend()
    await fleet.emulator.poll()
    await fleet.create("m1")
    host = fleet.host_of("m1")
    assert host in (sid, other)
    fleet.emulator.set_state(host, "cordoned")
    fleet.stubs[host].meetings["m1"].participants = 3
    await fleet.emulator.poll()
    assert fleet.emulator.server(host).state == "cordoned"
    # Still counted at 15 while young, even with nobody in it.
    fleet.stubs[host].meetings["m1"].participants = 0
    await fleet.emulator.poll()
    assert fleet.emulator.server(host).state == "cordoned"
    fleet.clock.now += 16 * MIN
    await fleet.emulator.poll()
    assert fleet.emulator.server(host).state == "disabled"
    assert fleet.emulator.server(host).load is None


async def test_cordoned_server_turns_disabled_after_its_meetings_end(fleet: Fleet) -> None:
    sid, stub = await fleet.backend()
    await fleet.emulator.poll()
    await fleet.create("m1")
    fleet.emulator.set_state(sid, "cordoned")
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).state == "cordoned"
    assert (await fleet.front("end", meetingID="m1")).findtext("returncode") == "SUCCESS"
    assert "m1" not in stub.meetings
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).state == "disabled"


async def test_unreachable_server_goes_offline_after_two_failed_polls(fleet: Fleet) -> None:
    sid, _stub = await fleet.backend()
    await fleet.emulator.poll()
    await fleet.create("m1")
    await fleet.runners.pop(sid).cleanup()  # connection refused from now on
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).online is True
    await fleet.emulator.poll()
    server = fleet.emulator.server(sid)
    assert (server.online, server.load) == (False, None)
    assert "m1" not in fleet.emulator.meetings()  # Scalelite panics the meetings
    assert key(await fleet.create("m2")) == "internalError"


async def test_force_offline_and_back(fleet: Fleet) -> None:
    sid, _ = await fleet.backend()
    await fleet.emulator.poll()
    fleet.emulator.force_offline(sid)
    assert fleet.emulator.server(sid).online is True
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).online is True
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).online is False
    fleet.emulator.force_offline(sid, offline=False)
    await fleet.emulator.poll()
    assert fleet.emulator.server(sid).online is True


async def test_ended_meetings_are_forgotten_by_the_poll(fleet: Fleet) -> None:
    _sid, stub = await fleet.backend()
    await fleet.emulator.poll()
    await fleet.create("m1")
    del stub.meetings["m1"]
    await fleet.emulator.poll()
    assert "m1" not in fleet.emulator.meetings()


async def test_background_polling_uses_the_injected_sleep(fleet: Fleet) -> None:
    sid, _ = await fleet.backend()
    slept = asyncio.Event()
    intervals: list[float] = []

    async def sleep(seconds: float) -> None:
        intervals.append(seconds)
        slept.set()
        await asyncio.Event().wait()  # parked until stop_polling cancels it

    fleet.emulator.start_polling(42.0, sleep=sleep)
    with pytest.raises(RuntimeError):
        fleet.emulator.start_polling(1.0)
    await asyncio.wait_for(slept.wait(), 5)
    await fleet.emulator.stop_polling()
    assert intervals == [42.0]
    assert fleet.emulator.server(sid).online is True


# ================================================================ BBB front API


async def test_create_places_on_least_loaded_and_forwards_signed(fleet: Fleet) -> None:
    _busy, busy_stub = await fleet.backend(secret="secret-a")
    idle, idle_stub = await fleet.backend(secret="secret-b", load_multiplier=1.5)
    busy_stub.meetings["x"] = StubMeeting(40, 1, int((T0 - 3600) * 1000))
    await fleet.emulator.poll()
    answer = await fleet.create("m1", moderatorPW="mp")
    assert (answer.findtext("returncode"), answer.findtext("meetingID")) == ("SUCCESS", "m1")
    assert fleet.host_of("m1") == idle
    assert "m1" in idle_stub.meetings
    assert "m1" not in busy_stub.meetings
    # The stub only answered because the call was signed with its own secret.
    assert [c for c, _ in idle_stub.calls] == ["getMeetings", "create"]
    assert idle_stub.calls[1][1]["moderatorPW"] == "mp"
    # increment_load(1): one unit times the multiplier until the next poll.
    assert fleet.emulator.server(idle).load == 1.5
    await fleet.emulator.poll()
    assert fleet.emulator.server(idle).load == 15 * 1.5


async def test_placement_spreads_and_ties_go_to_the_smaller_id(fleet: Fleet) -> None:
    a, _ = await fleet.backend()
    b, _ = await fleet.backend()
    await fleet.emulator.poll()
    await fleet.create("m1")
    await fleet.create("m2")
    assert fleet.host_of("m1") == min(a, b)
    assert fleet.host_of("m2") == max(a, b)


async def test_load_multiplier_steers_placement(fleet: Fleet) -> None:
    light, light_stub = await fleet.backend()
    _heavy, heavy_stub = await fleet.backend(load_multiplier=2.0)
    old = int((T0 - 3600) * 1000)
    light_stub.meetings["x"] = StubMeeting(10, 0, old)
    heavy_stub.meetings["y"] = StubMeeting(8, 0, old)
    await fleet.emulator.poll()
    await fleet.create("m1")
    assert fleet.host_of("m1") == light


async def test_cordoned_server_gets_no_new_meetings_but_keeps_its_own(fleet: Fleet) -> None:
    a, a_stub = await fleet.backend()
    b, _ = await fleet.backend()
    a_stub.meetings["old"] = StubMeeting(1, 0, int((T0 - 3600) * 1000))
    await fleet.emulator.poll()
    fleet.emulator.set_state(b, "cordoned")
    await fleet.create("m1")
    assert fleet.host_of("m1") == a
    fleet.emulator.set_state(a, "cordoned")
    fleet.emulator.set_state(b, "enabled")
    await fleet.emulator.poll()
    await fleet.create("m2")
    assert fleet.host_of("m2") == b
    # Re-creating a known meeting keeps it where it is, cordoned or not.
    await fleet.create("m1")
    assert fleet.host_of("m1") == a
    # And joins still reach the cordoned server.
    async with fleet.http.get(
        fleet.front_url("join", [("meetingID", "m1"), ("fullName", "Ada")]),
        allow_redirects=False,
    ) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert location.startswith(fleet.emulator.server(a).url + "join?")


async def test_join_redirects_with_the_backend_checksum(fleet: Fleet) -> None:
    sid, _stub = await fleet.backend(secret="backend-only")
    await fleet.emulator.poll()
    await fleet.create("m1")
    async with fleet.http.get(
        fleet.front_url("join", [("meetingID", "m1"), ("fullName", "Ada L")], "sha1")
    ) as r:
        assert (r.status, await r.text()) == (200, "joined m1 as Ada L")
    location = str(r.url)
    assert urlsplit(location).port == urlsplit(fleet.emulator.server(sid).url).port
    assert LB_SECRET not in location
    assert "backend-only" not in location


async def test_join_refusals(fleet: Fleet) -> None:
    sid, _ = await fleet.backend()
    await fleet.emulator.poll()
    assert key(await fleet.front("join", meetingID="ghost", fullName="x")) == "notFound"
    assert key(await fleet.front("join", fullName="x")) == "missingParamMeetingID"
    await fleet.create("m1")
    fleet.emulator.set_state(sid, "disabled")
    assert key(await fleet.front("join", meetingID="m1", fullName="x")) == "serverUnavailable"


async def test_front_api_checks_its_checksum_and_reports_no_capacity(fleet: Fleet) -> None:
    bad = f"{fleet.base}/bigbluebutton/api/create?meetingID=m1&checksum={'0' * 64}"
    async with fleet.http.get(bad) as r:
        assert b"checksumError" in await r.read()
    answer = await fleet.create("m1")
    assert (key(answer), answer.findtext("message")) == (
        "internalError",
        "Could not find any available servers.",
    )
    assert key(await fleet.front("create", name="no id")) == "missingParamMeetingID"
    root = await fleet.front("")
    assert (root.findtext("returncode"), root.findtext("version")) == ("SUCCESS", "2.0")


async def test_is_meeting_running_and_info_are_forwarded(fleet: Fleet) -> None:
    await fleet.backend()
    await fleet.emulator.poll()
    assert (await fleet.front("isMeetingRunning", meetingID="m1")).findtext("running") == "false"
    assert key(await fleet.front("getMeetingInfo", meetingID="m1")) == "notFound"
    await fleet.create("m1")
    assert (await fleet.front("isMeetingRunning", meetingID="m1")).findtext("running") == "true"
    assert key(await fleet.front("getMeetingInfo", meetingID="m1")) == "SUCCESS"


async def test_tagged_create(fleet: Fleet) -> None:
    plain, _ = await fleet.backend()
    tagged, _ = await fleet.backend(tag="big")
    await fleet.emulator.poll()
    await fleet.create("m1")
    await fleet.create("m2", **{"meta_server-tag": "big!"})
    assert (fleet.host_of("m1"), fleet.host_of("m2")) == (plain, tagged)


# ================================================================ faults and the client


async def test_outage_and_slowness_faults(fleet: Fleet) -> None:
    fleet.emulator.inject_outage("http_503", requests=1)
    url = fleet.front_url("isMeetingRunning", [("meetingID", "m")])
    async with fleet.http.get(url) as r:
        assert r.status == 503
    async with fleet.http.get(url) as r:
        assert r.status == 200
    fleet.emulator.inject_slowness(30.0)
    with pytest.raises(TimeoutError):
        async with fleet.http.get(url, timeout=aiohttp.ClientTimeout(total=0.05)):
            pass
    fleet.emulator.clear_faults()
    async with fleet.http.get(url) as r:
        assert r.status == 200


async def test_client_drives_a_full_drain(fleet: Fleet) -> None:
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    api = ScaleliteClient(fleet.http, fleet.base, LB_SECRET, sleep=no_sleep)
    stub = BbbStub("node-secret", fleet.clock)
    runner = web.AppRunner(stub.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/bigbluebutton/api/"
        server = await api.ensure_registered(url, "node-secret")
        await api.set_state(server.id, "enabled")
        await fleet.emulator.poll()
        assert (await api.get_server_info(server.id)).online is True
        await fleet.create("m1")
        assert (await api.set_state(server.id, "cordoned")).state == "cordoned"
        await fleet.front("end", meetingID="m1")
        await fleet.emulator.poll()
        drained = await api.get_server_info(server.id)
        assert (drained.state, drained.load) == ("disabled", None)
        assert await api.delete(server.id) is True
        assert await api.get_servers() == ()
    finally:
        await runner.cleanup()
    assert sleeps == []


def test_load_rule_defaults_are_scalelites() -> None:
    # LOAD_MIN_USER_COUNT=15 and LOAD_JOIN_BUFFER_TIME=15 minutes.
    assert LoadRule().min_user_count == 15
    assert LoadRule().join_buffer_s == 900


async def test_servers_off_loopback_are_never_called() -> None:
    # moto hands instances 10.x addresses; a server registered there stays offline and
    # the poller never opens a connection (it would otherwise wait for a timeout).
    emulator = ScaleliteEmulator(LB_SECRET, backend_timeout=30.0)
    sid = emulator.add_server("http://10.20.0.5/bigbluebutton/api/", "s", state="enabled")
    try:
        await asyncio.wait_for(emulator.poll(), 1.0)
        await asyncio.wait_for(emulator.poll(), 1.0)
        assert emulator.server(sid).online is False
    finally:
        await emulator.close()


# ================================================================ Scalelite's own hand (v1.8.5)


@dataclass
class Hosts:
    """The Scalelite emulator in front of real emulated BBB hosts (bbbsim.bbb_emulator)."""

    emulator: ScaleliteEmulator
    base: str
    http: aiohttp.ClientSession
    bbbs: dict[str, EmulatedBbb] = field(default_factory=dict)
    runners: list[web.AppRunner] = field(default_factory=list)

    async def host(self, **kw: Any) -> tuple[str, EmulatedBbb]:
        bbb = EmulatedBbb("host-secret")
        runner, port = await serve_bbb(bbb)
        self.runners.append(runner)
        sid = self.emulator.add_server(client_url(port), "host-secret", state="enabled", **kw)
        self.bbbs[sid] = bbb
        return sid, bbb

    async def front(self, call: str, **params: str) -> ET.Element:
        query = checksum.signed_query(call, list(params.items()), LB_SECRET, "sha256")
        url = URL(f"{self.base}/bigbluebutton/api/{call}?{query}", encoded=True)
        async with self.http.get(url, allow_redirects=False) as resp:
            if resp.status == 302:
                return ET.Element("redirect")
            return parse_xml(await resp.read())


@asynccontextmanager
async def hosts(**kw: Any) -> AsyncIterator[Hosts]:
    emulator = ScaleliteEmulator(LB_SECRET, **kw)
    runner, port = await serve(emulator)
    async with aiohttp.ClientSession() as http:
        h = Hosts(emulator, f"http://127.0.0.1:{port}", http)
        try:
            yield h
        finally:
            for r in h.runners:
                await r.cleanup()
            await runner.cleanup()


async def test_a_slow_host_goes_offline_and_scalelite_ends_its_meetings() -> None:
    # poll.rake:87-118: SERVER_UNHEALTHY_THRESHOLD (2) polls without an answer within
    # RESPONSE_TIMEOUT, then the server's meetings are destroyed and BBB gets `end` for each.
    async with hosts(backend_timeout=0.2, healthy_threshold=2) as h:
        sid, bbb = await h.host()
        await h.emulator.poll()
        await h.emulator.poll()  # a new server is offline until two good answers
        assert key(await h.front("create", meetingID="m1", name="m1")) == "SUCCESS"
        bbb.set_participants("m1", 5)
        bbb.set_fault(FaultMode.SLOW, delay=30.0, calls={"getMeetings"})
        await h.emulator.poll()
        assert h.emulator.server(sid).online is True  # one failure is not enough
        assert bbb.meeting("m1") is not None
        await h.emulator.poll()
        server = h.emulator.server(sid)
        assert (server.online, server.load) == (False, None)
        assert "m1" not in h.emulator.meetings()
        assert bbb.meeting("m1") is None  # the slow but live host obeyed the end
        assert bbb.request_count("end") == 1
        # An offline server gets no meetings.
        assert key(await h.front("create", meetingID="m2", name="m2")) == "internalError"
        # SERVER_HEALTHY_THRESHOLD good polls in a row bring it back (poll.rake:72-79).
        bbb.clear_fault()
        await h.emulator.poll()
        assert h.emulator.server(sid).online is False
        await h.emulator.poll()
        assert h.emulator.server(sid).online is True


async def test_a_down_host_goes_offline_and_its_meetings_are_forgotten() -> None:
    async with hosts(backend_timeout=0.5) as h:
        sid, bbb = await h.host()
        await h.emulator.poll()
        await h.front("create", meetingID="m1", name="m1")
        bbb.set_fault(FaultMode.DOWN)
        await h.emulator.poll()
        await h.emulator.poll()
        assert h.emulator.server(sid).online is False
        assert "m1" not in h.emulator.meetings()
        # The end could not reach it: BBB still runs the meeting Scalelite forgot.
        assert bbb.meeting("m1") is not None


async def test_only_consecutive_failures_count() -> None:
    # poll.rake:67: a good answer resets the unhealthy counter.
    async with hosts(backend_timeout=0.2) as h:
        sid, bbb = await h.host()
        await h.emulator.poll()
        for _ in range(3):
            bbb.set_fault(FaultMode.SLOW, delay=30.0, calls={"getMeetings"})
            await h.emulator.poll()
            bbb.clear_fault()
            await h.emulator.poll()
        assert h.emulator.server(sid).online is True


async def test_load_between_polls_counts_new_creates_and_every_join() -> None:
    # bigbluebutton_api_controller.rb:171-206 (create) and 312-328 (join), server.rb:204-211.
    async with hosts() as h:
        sid, _ = await h.host(load_multiplier=2.0)
        await h.emulator.poll()
        assert h.emulator.server(sid).load == 0
        await h.front("create", meetingID="m1", name="m1")
        assert h.emulator.server(sid).load == 2.0
        # A re-create of a meeting Scalelite knows goes to its server and adds nothing.
        await h.front("create", meetingID="m1", name="m1")
        assert h.emulator.server(sid).load == 2.0
        for user in ("a", "b", "c"):
            answer = await h.front("join", meetingID="m1", fullName=user, role="VIEWER")
            assert answer.tag == "redirect"
        assert h.emulator.server(sid).load == 2.0 + 3 * 2.0
        # The next poll replaces it with the meeting's own weight.
        await h.emulator.poll()
        assert h.emulator.server(sid).load == 15 * 2.0


async def test_joins_on_a_cordoned_server_add_nothing() -> None:
    async with hosts() as h:
        sid, _ = await h.host()
        await h.emulator.poll()
        await h.front("create", meetingID="m1", name="m1")
        await h.emulator.poll()
        h.emulator.set_state(sid, "cordoned")
        before = h.emulator.server(sid).load
        assert (await h.front("join", meetingID="m1", fullName="a", role="VIEWER")).tag == (
            "redirect"
        )
        assert h.emulator.server(sid).load == before


async def test_a_stale_meeting_on_a_cordoned_server_is_placed_anew() -> None:
    # 1.8.5: controller:175-180, "re-creates no longer land on a cordoned server".
    async with hosts() as h:
        old, old_bbb = await h.host()
        new, new_bbb = await h.host()
        await h.emulator.poll()
        await h.front("create", meetingID="room", name="room")
        first = h.emulator.meetings()["room"]
        other = new if first == old else old
        first_bbb = old_bbb if first == old else new_bbb
        # Still running there: a re-create follows it even though it is cordoned.
        first_bbb.set_participants("room", 3)
        h.emulator.set_state(first, "cordoned")
        await h.front("create", meetingID="room", name="room")
        assert h.emulator.meetings()["room"] == first
        # Ended on BBB but not yet forgotten by poll:meetings: placed anew, and counted.
        first_bbb.end_meeting("room")
        load = h.emulator.server(other).load
        await h.front("create", meetingID="room", name="room")
        assert h.emulator.meetings()["room"] == other
        assert h.emulator.server(other).load == (load or 0) + 1


async def test_required_tag_refused_with_server_tag_unavailable() -> None:
    async with hosts() as h:
        plain, _ = await h.host()
        tagged, tagged_bbb = await h.host(tag="exam")
        await h.emulator.poll()
        refused = await h.front("create", meetingID="m0", name="m0", **{"meta_server-tag": "x!"})
        assert key(refused) == SERVER_TAG_UNAVAILABLE
        # (A list with "none" would match the plain server too, at equal load: pure tests.)
        await h.front("create", meetingID="m1", name="m1", **{"meta_server-tag": "exam"})
        await h.front("create", meetingID="m2", name="m2")
        assert h.emulator.meetings()["m2"] == plain
        assert h.emulator.meetings()["m1"] == tagged
        # BBB is told the server's own tag (controller:219-223).
        meta = tagged_bbb.meeting("m1")
        assert meta is not None
        assert meta.metadata.get("server-tag") == "exam"


async def test_a_round_is_cut_off_after_the_wait_timeout() -> None:
    # poll.rake:34 and 131-137: POLLER_THREADS - 1 workers; after POLLER_WAIT_TIMEOUT (+5 s)
    # the rest of the round is dropped: those servers are neither answered nor failed.
    async with hosts(
        poller_threads=2, poller_wait_timeout=0.2, poller_kill_grace=0.1, backend_timeout=5.0
    ) as h:
        slow, slow_bbb = await h.host()
        later, _ = await h.host()
        slow_bbb.set_fault(FaultMode.SLOW, delay=30.0, calls={"getMeetings"})
        await h.emulator.poll()
        assert h.emulator.server(slow).online is False
        assert h.emulator.server(later).online is False  # never polled: one worker, held
        slow_bbb.clear_fault()
        await h.emulator.poll()
        assert h.emulator.server(later).online is True
