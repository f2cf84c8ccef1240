"""bbbcore's BBB client against the emulator: signing survives odd characters, limits hold."""

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bbbcore import bbb_api
from bbbcore.bbb_api import PARSE_SLICE, BbbClient, Unreachable, api_base
from bbbcore.meetings import FailedResponse, MeetingsParser
from bbbsim.bbb_emulator import EmulatedBbb, client_url, serve

SECRET = "client-test-secret"


@pytest.fixture
async def bbb() -> AsyncIterator[tuple[EmulatedBbb, int]]:
    emulator = EmulatedBbb(SECRET)
    runner, port = await serve(emulator)
    yield emulator, port
    await runner.cleanup()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
async def test_query_is_sent_exactly_as_signed(
    bbb: tuple[EmulatedBbb, int], algorithm: str
) -> None:
    emulator, port = bbb
    meeting_id = "a!b*(c)'~ é/+&=x"
    emulator.add_meeting(meeting_id, 2)
    async with aiohttp.ClientSession() as session:
        client = BbbClient(session, client_url(port), SECRET, algorithm)  # type: ignore[arg-type]
        body = await client.call("getMeetingInfo", [("meetingID", meeting_id)])
    assert b"<returncode>SUCCESS</returncode>" in body


async def test_wrong_secret_raises_failed(bbb: tuple[EmulatedBbb, int]) -> None:
    _, port = bbb
    async with aiohttp.ClientSession() as session:
        client = BbbClient(session, client_url(port), "wrong")
        with pytest.raises(FailedResponse) as info:
            await client.get_meetings()
    assert info.value.message_key == "checksumError"


async def test_answer_size_is_capped(bbb: tuple[EmulatedBbb, int]) -> None:
    emulator, port = bbb
    for i in range(30):
        emulator.add_meeting(f"m{i}", 10)
    async with aiohttp.ClientSession() as session:
        client = BbbClient(session, client_url(port), SECRET, max_bytes=2048)
        with pytest.raises(Unreachable, match="larger than"):
            await client.get_meetings()


async def test_parse_yields_to_the_loop_between_slices(
    bbb: tuple[EmulatedBbb, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape served by the same loop never waits for a whole getMeetings parse."""
    emulator, port = bbb
    for i in range(100):
        emulator.add_meeting(f"m{i}", 10, voice=3, cameras=1, listeners=7)
    ticks = 0
    fed: list[tuple[int, int]] = []  # (bytes, ticks of the other task so far)

    class Watched(MeetingsParser):
        def feed(self, chunk: bytes) -> None:
            fed.append((len(chunk), ticks))
            super().feed(chunk)

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(bbb_api, "MeetingsParser", Watched)
    ticker = asyncio.create_task(other_task())
    async with aiohttp.ClientSession() as session:
        meetings = await BbbClient(session, client_url(port), SECRET).get_meetings()
    ticker.cancel()
    assert len(meetings) == 100
    assert len(fed) > 20
    assert all(size <= PARSE_SLICE for size, _ in fed)
    assert all(later > earlier for (_, earlier), (_, later) in itertools.pairwise(fed))


async def test_timeout_and_refused() -> None:
    async def hang(_: web.Request) -> web.Response:
        import asyncio

        await asyncio.Event().wait()
        raise AssertionError

    app = web.Application()
    app.router.add_get("/bigbluebutton/api/getMeetings", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        client = BbbClient(session, client_url(port), SECRET, timeout=0.2)
        with pytest.raises(Unreachable, match="TimeoutError"):
            await client.get_meetings()
        await runner.cleanup()
        with pytest.raises(Unreachable):
            await client.get_meetings()


def test_api_base() -> None:
    assert api_base("http://h:8090/bigbluebutton/") == "http://h:8090/bigbluebutton/api/"
    assert api_base("http://h:8090/bigbluebutton") == "http://h:8090/bigbluebutton/api/"
    assert api_base("https://h/bigbluebutton/api/") == "https://h/bigbluebutton/api/"
    assert api_base("https://h/bigbluebutton/api") == "https://h/bigbluebutton/api/"
