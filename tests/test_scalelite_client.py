"""bbbcore.scalelite.ScaleliteClient against a scripted stub and the Scalelite emulator."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from tenacity import wait_none

from bbbcore.scalelite import (
    RetryPolicy,
    ScaleliteAuthError,
    ScaleliteClient,
    ScaleliteNotFound,
    ScaleliteProtocolError,
    ScaleliteRequestError,
    ScaleliteServer,
    ScaleliteTransientError,
    normalize_url,
    parse_server,
)
from bbbsim.scalelite_emulator import ScaleliteEmulator, serve

SECRET = "s3cret"
# printf '<string>' | sha1sum / sha256sum / sha512sum, so the test cannot agree with itself.
VECTORS: dict[str, dict[str, str]] = {
    "getServerss3cret": {
        "sha1": "b86e7abe8c8fe5a5e0d4f73e259fa242d7341ed7",
        "sha256": "f2313c34f982507b01e1a7c9cba7c168df056676ec257bf3ad3f85105fcb1461",
        "sha512": "a217f7922422c140722666145ca40413e86ad54a1a81ff9c50195258375d243f"
        "1a14bfc135b36b1aae4a31481c0040559e2c10d273945612efaeabbede5b82e5",
    },
    "addServers3cret": {
        "sha1": "3a71b9035df8d9fe05f9144a9af22e62d4e5c8c2",
        "sha256": "8ce26ddc0b2f3693cfe30a7db97786b359452afa82161a1fffd2a22b29cbb94e",
        "sha512": "40b6a6c246ce81bab94ca2ac78f901ea2578fd9be4836ee6787b25c946f2f62e"
        "c837bb3a917bbf63ec4f89a43f1a202b17fae2101f10de3db7fba9d4e861244f",
    },
    "getServerInfoid=abc-1s3cret": {
        "sha1": "5977ae34425762c7c50dc198bb0a24328f9c25e0",
        "sha256": "f6cb756276bde91919f2d8ea5334afadfc4c84c44efe3f18ae90e5ff52a5f9b0",
        "sha512": "ea721d5921092ca9bba2eea0485e25ca0036b8f2d60a24d7a2000b70f3612a47"
        "95201f965fd8346e4b6e1471385e051b45af49cec4ab594fe6b04195e632f67b",
    },
}
SERVER_JSON: dict[str, Any] = {
    "id": "abc-1",
    "url": "https://bbb1.example.org/bigbluebutton/api/",
    "secret": "backend-secret",
    "tag": "",
    "state": "enabled",
    "load": 21.0,
    "load_multiplier": "1.5",
    "online": "online",
}


@dataclass
class Seen:
    method: str
    path: str
    query: str
    body: bytes


class Scripted:
    """A stub API that records requests and plays back (status, body) answers."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.seen: list[Seen] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.rel_url.raw_query_string,
                await request.read(),
            )
        )
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(body, str) and body.startswith("<"):
            return web.Response(status=status, text=body, content_type="application/xml")
        return web.json_response(body, status=status)


class Sleeps:
    """An injected sleep that records the backoff instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def start() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def run(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield run
    for runner in runners:
        await runner.cleanup()


async def stub(start: Callable[[web.Application], Awaitable[str]], script: Scripted) -> str:
    app = web.Application()
    app.router.add_route("*", "/scalelite/api/{action}", script.handle)
    return await start(app)


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[ScaleliteEmulator, str]]:
    emu = ScaleliteEmulator(SECRET)
    runner, port = await serve(emu)
    yield emu, f"http://127.0.0.1:{port}/"
    await runner.cleanup()


def client(
    http: aiohttp.ClientSession, base: str, sleeps: Sleeps | None = None, **kw: Any
) -> ScaleliteClient:
    return ScaleliteClient(
        http,
        base,
        kw.pop("secret", SECRET),
        sleep=sleeps if sleeps is not None else Sleeps(),
        **kw,
    )


# ---------------------------------------------------------------- checksums


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
async def test_checksum_vectors_get_and_post(
    http: aiohttp.ClientSession,
    start: Callable[[web.Application], Awaitable[str]],
    algorithm: str,
) -> None:
    script = Scripted((200, [SERVER_JSON]), (200, SERVER_JSON), (201, SERVER_JSON))
    api = client(http, await stub(start, script), algorithm=algorithm)

    await api.get_servers()
    await api.get_server_info("abc-1")
    await api.add_server("https://bbb1.example.org/bigbluebutton/api/", "backend-secret")

    get_servers, info, add = script.seen
    assert (get_servers.method, get_servers.path) == ("GET", "/scalelite/api/getServers")
    assert get_servers.query == f"checksum={VECTORS['getServerss3cret'][algorithm]}"
    assert info.query == f"id=abc-1&checksum={VECTORS['getServerInfoid=abc-1s3cret'][algorithm]}"
    # POST: the JSON body is not signed, only action + (empty) query + secret.
    assert (add.method, add.path) == ("POST", "/scalelite/api/addServer")
    assert add.query == f"checksum={VECTORS['addServers3cret'][algorithm]}"
    assert json.loads(add.body) == {
        "server": {
            "url": "https://bbb1.example.org/bigbluebutton/api/",
            "secret": "backend-secret",
            "load_multiplier": 1.0,
            "tag": "",
        }
    }


def test_signed_url_shape(http: aiohttp.ClientSession) -> None:
    api = client(http, "https://sl.example.org", algorithm="sha1")
    assert api.signed_url("getServers") == (
        "https://sl.example.org/scalelite/api/getServers?checksum="
        + VECTORS["getServerss3cret"]["sha1"]
    )


@pytest.mark.parametrize("algorithm", ["sha384", "md5", "SHA256"])
def test_unaccepted_algorithm_refused_at_construction(
    http: aiohttp.ClientSession, algorithm: str
) -> None:
    with pytest.raises(ValueError, match="not accepted by Scalelite"):
        client(http, "https://sl.example.org", algorithm=algorithm)


def test_empty_secret_refused(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        client(http, "https://sl.example.org", secret="")


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
async def test_every_accepted_algorithm_passes_the_emulator(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str], algorithm: str
) -> None:
    _, base = emulator
    api = client(http, base, algorithm=algorithm)
    added = await api.add_server("http://127.0.0.1:1/bigbluebutton/api/", "x")
    assert (await api.get_server_info(added.id)).id == added.id
    assert await api.get_servers() == (added,)


async def test_wrong_secret_is_a_permanent_auth_error(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    _, base = emulator
    sleeps = Sleeps()
    api = client(http, base, sleeps, secret="wrong")
    with pytest.raises(ScaleliteAuthError, match="checksum"):
        await api.get_servers()
    assert sleeps.calls == []


# ---------------------------------------------------------------- parsing


def test_parse_server_drops_the_secret_and_reads_rails_types() -> None:
    server = parse_server(SERVER_JSON)
    assert server == ScaleliteServer(
        id="abc-1",
        url="https://bbb1.example.org/bigbluebutton/api/",
        state="enabled",
        online=True,
        load=21.0,
        load_multiplier=1.5,
        tag=None,
    )
    assert "secret" not in {f.name for f in fields(ScaleliteServer)}
    assert "backend-secret" not in repr(server)
    unknown = parse_server(
        {**SERVER_JSON, "load": "unavailable", "online": "offline", "tag": "big", "users": "7"}
    )
    assert (unknown.load, unknown.online, unknown.tag, unknown.users) == (None, False, "big", 7)


def test_normalize_url() -> None:
    assert normalize_url("HTTPS://BBB1.Example.org/bigbluebutton/api/") == normalize_url(
        "https://bbb1.example.org/bigbluebutton/api"
    )
    assert normalize_url("https://a/bigbluebutton/api") != normalize_url("https://a/bigbluebutton")


# ---------------------------------------------------------------- API behaviour


async def test_empty_list_404_is_an_empty_tuple(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    _, base = emulator
    assert await client(http, base).get_servers() == ()


async def test_other_404_on_get_servers_is_an_error(
    http: aiohttp.ClientSession, start: Callable[[web.Application], Awaitable[str]]
) -> None:
    api = client(http, await stub(start, Scripted((404, {"error": "Not here"}))))
    with pytest.raises(ScaleliteNotFound):
        await api.get_servers()


async def test_ensure_registered_is_idempotent(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    emu, base = emulator
    api = client(http, base)
    url = "http://127.0.0.1:1/bigbluebutton/api/"
    first = await api.ensure_registered(url, "bbb-secret", 1.0, None)
    second = await api.ensure_registered(url.rstrip("/"), "bbb-secret", 1.0, None)
    assert second == first
    assert len(emu.servers()) == 1
    assert (first.state, first.online, first.load) == ("disabled", False, None)
    assert await api.find_by_url(url) == first
    assert await api.find_by_url("http://127.0.0.1:2/bigbluebutton/api/") is None


async def test_ensure_registered_corrects_secret_multiplier_and_tag(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    emu, base = emulator
    api = client(http, base)
    url = "http://127.0.0.1:1/bigbluebutton/api/"
    first = await api.ensure_registered(url, "old", 1.0, None)
    fixed = await api.ensure_registered(url, "new", 2.5, "big")
    assert fixed.id == first.id
    assert (fixed.load_multiplier, fixed.tag) == (2.5, "big")
    assert len(emu.servers()) == 1
    # The secret is only visible in the API's own JSON, never in ScaleliteServer.
    async with http.get(api.signed_url("getServerInfo", [("id", first.id)])) as resp:
        assert (await resp.json())["secret"] == "new"


async def test_ensure_registered_does_not_add_twice_after_a_lost_answer(
    http: aiohttp.ClientSession,
) -> None:
    # Scalelite stores the server but the answer is lost (a 503 from a proxy):
    # the retry must find it by URL instead of adding it again.
    emu = ScaleliteEmulator(SECRET)
    lost = {"done": False}

    @web.middleware
    async def lose_first_add(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if request.path.endswith("/addServer") and not lost["done"]:
            lost["done"] = True
            return web.Response(status=503)
        return response

    emu.app.middlewares.append(lose_first_add)
    runner, port = await serve(emu)
    try:
        sleeps = Sleeps()
        api = client(http, f"http://127.0.0.1:{port}", sleeps)
        server = await api.ensure_registered("http://127.0.0.1:1/bigbluebutton/api/", "x")
        assert [s.id for s in emu.servers()] == [server.id]
        assert len(sleeps.calls) == 1
    finally:
        await runner.cleanup()


async def test_state_transitions(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    emu, base = emulator
    api = client(http, base)
    server = await api.ensure_registered("http://127.0.0.1:1/bigbluebutton/api/", "x")
    assert (await api.set_state(server.id, "enabled")).state == "enabled"
    assert (await api.set_state(server.id, "cordoned")).state == "cordoned"
    assert emu.server(server.id).state == "cordoned"
    assert (await api.set_state(server.id, "disabled")).state == "disabled"
    assert (await api.set_state(server.id, "disabled")).state == "disabled"
    assert (await api.set_load_multiplier(server.id, 3.0)).load_multiplier == 3.0
    with pytest.raises(ValueError, match="unknown server state"):
        await api.set_state(server.id, "drained")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        await api.set_load_multiplier(server.id, 0)


async def test_update_and_info_of_unknown_server(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    _, base = emulator
    sleeps = Sleeps()
    api = client(http, base, sleeps)
    with pytest.raises(ScaleliteNotFound, match="Couldn't find server"):
        await api.set_state("nope", "enabled")
    with pytest.raises(ScaleliteNotFound):
        await api.get_server_info("nope")
    assert sleeps.calls == []


async def test_delete_is_idempotent(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    emu, base = emulator
    api = client(http, base)
    server = await api.ensure_registered("http://127.0.0.1:1/bigbluebutton/api/", "x")
    assert await api.delete(server.id) is True
    assert await api.delete(server.id) is False
    assert emu.servers() == ()


# ---------------------------------------------------------------- retries


async def test_retries_503_then_succeeds(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    emu, base = emulator
    emu.inject_outage("http_503", requests=2)
    sleeps = Sleeps()
    api = client(http, base, sleeps, retry=RetryPolicy(attempts=5, initial_s=0.5, max_s=10.0))
    assert await api.get_servers() == ()
    assert len(sleeps.calls) == 2
    # Full jitter: each wait is within [0, min(max, initial * 2**attempt)].
    assert 0 <= sleeps.calls[0] <= 1.0
    assert 0 <= sleeps.calls[1] <= 2.0


async def test_retries_dropped_connections(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    emu, base = emulator
    # aiohttp itself retries a dropped idempotent request once, so drop two.
    emu.inject_outage("disconnect", requests=2)
    sleeps = Sleeps()
    assert await client(http, base, sleeps).get_servers() == ()
    assert 1 <= len(sleeps.calls) <= 2


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((401, {"error": "Unauthorized"}), ScaleliteAuthError),
        ((403, {"error": "Forbidden"}), ScaleliteAuthError),
        ((400, {"error": "Invalid state parameter: x"}), ScaleliteRequestError),
        ((422, {"error": "nope"}), ScaleliteRequestError),
        (
            (200, "<response><returncode>FAILED</returncode><messageKey>internalError"),
            ScaleliteRequestError,
        ),
    ],
)
async def test_no_retry_on_client_errors(
    http: aiohttp.ClientSession,
    start: Callable[[web.Application], Awaitable[str]],
    answer: tuple[int, Any],
    error: type[Exception],
) -> None:
    script = Scripted(answer)
    sleeps = Sleeps()
    api = client(http, await stub(start, script), sleeps)
    with pytest.raises(error):
        await api.set_state("abc-1", "cordoned")
    assert len(script.seen) == 1
    assert sleeps.calls == []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_transient_statuses_are_retried_until_attempts_run_out(
    http: aiohttp.ClientSession, start: Callable[[web.Application], Awaitable[str]], status: int
) -> None:
    script = Scripted((status, {"error": "busy"}))
    sleeps = Sleeps()
    api = client(http, await stub(start, script), sleeps, retry=RetryPolicy(attempts=3))
    with pytest.raises(ScaleliteTransientError) as caught:
        await api.delete("abc-1")
    assert caught.value.status == status
    assert len(script.seen) == 3
    assert len(sleeps.calls) == 2


async def test_connection_refused_is_transient(http: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    api = client(http, f"http://127.0.0.1:{port}", sleeps, retry=RetryPolicy(attempts=2))
    with pytest.raises(ScaleliteTransientError, match="getServers"):
        await api.get_servers()
    assert len(sleeps.calls) == 1


async def test_slow_answer_times_out_as_transient(
    http: aiohttp.ClientSession, emulator: tuple[ScaleliteEmulator, str]
) -> None:
    emu, base = emulator
    emu.inject_slowness(30.0)
    sleeps = Sleeps()
    api = client(http, base, sleeps, timeout=0.05, retry=RetryPolicy(attempts=2), wait=wait_none())
    try:
        with pytest.raises(ScaleliteTransientError, match="Timeout"):
            await api.get_servers()
    finally:
        emu.clear_faults()
    assert sleeps.calls == [0.0]


async def test_add_server_alone_is_not_retried(
    http: aiohttp.ClientSession, start: Callable[[web.Application], Awaitable[str]]
) -> None:
    script = Scripted((503, {"error": "busy"}))
    sleeps = Sleeps()
    api = client(http, await stub(start, script), sleeps)
    with pytest.raises(ScaleliteTransientError):
        await api.add_server("https://bbb1.example.org/bigbluebutton/api/", "x")
    assert len(script.seen) == 1


async def test_secrets_stay_out_of_errors(
    http: aiohttp.ClientSession, start: Callable[[web.Application], Awaitable[str]]
) -> None:
    script = Scripted((400, {"error": "Server needs a URL and a secret"}))
    api = client(http, await stub(start, script))
    with pytest.raises(ScaleliteRequestError) as caught:
        await api.add_server("https://bbb1.example.org/bigbluebutton/api/", "very-secret-value")
    assert "very-secret-value" not in str(caught.value)
    assert SECRET not in str(caught.value)
    assert "checksum=" not in str(caught.value)
    assert dict(parse_qsl(script.seen[0].query)).keys() == {"checksum"}


async def test_oversized_answer_is_refused(
    http: aiohttp.ClientSession, start: Callable[[web.Application], Awaitable[str]]
) -> None:
    script = Scripted((200, [SERVER_JSON] * 50))
    api = client(http, await stub(start, script), max_bytes=1000)
    with pytest.raises(ScaleliteProtocolError, match="larger than 1000 bytes"):
        await api.get_servers()
