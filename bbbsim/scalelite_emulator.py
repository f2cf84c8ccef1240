"""A Scalelite emulator: the server API, the BBB front API passthrough and the poller.

It follows Scalelite's sources (see bbbcore.scalelite for the facts) closely
enough that bbbnode and bbbscaler cannot tell it apart where they look:

- the server API under ``/scalelite/api/`` with the same checksum rule (action +
  query string without ``checksum`` + secret; sha1/sha256/sha512 by length,
  sha384 refused), the same answers (404 on an empty list, XML
  ``checksumError`` with HTTP 200, state names ``enabled``/``cordoned``/
  ``disabled``, servers added ``disabled`` and ``offline``);
- the BBB API under ``/bigbluebutton/api/`` as
  app/controllers/bigbluebutton_api_controller.rb (v1.8.5) answers it:
  ``create`` of a meeting Scalelite knows goes to its server and adds no load
  (a stale one on a cordoned server, or one whose server is gone, is placed
  anew); a new meeting is placed by bbbcore.scalelite.place_meeting (the pure
  rule, also used by the backtest; tags included, ``serverTagUnavailable``)
  and adds ``1 x load_multiplier``; ``join`` adds ``1 x load_multiplier`` and
  redirects to the meeting's server (refused when it is offline or
  disabled); ``end``, ``isMeetingRunning`` and ``getMeetingInfo`` are
  forwarded, signed with the server's own secret;
- ``poll()`` is one round of lib/tasks/poll.rake: ``poll:servers`` and
  ``poll:meetings`` side by side, each on ``poller_threads - 1`` workers and cut
  off ``poller_wait_timeout + 5`` seconds after it began. A server's
  getMeetings gives its load (bbbcore.scalelite.server_load) and brings it
  online after ``healthy_threshold`` answers in a row; ``unhealthy_threshold``
  failures in a row (no answer within ``backend_timeout``, Scalelite's
  RESPONSE_TIMEOUT, or an error) take it offline, forget its meetings and
  send BBB ``end`` for each of them. A cordoned server at load 0 becomes
  ``disabled``. A meeting whose getMeetingInfo answers ``notFound`` is
  forgotten.

Tests drive it through a small programmatic API (list servers, force a server
offline, make the API fail or hang) and an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

from bbbcore import checksum, logs
from bbbcore.bbb_api import BbbClient, api_base
from bbbcore.httpd import is_loopback
from bbbcore.meetings import BbbApiError, FailedResponse, parse_response
from bbbcore.scalelite import (
    NO_SERVERS_ERROR,
    SCALELITE_ALGORITHMS,
    SERVER_TAG_UNAVAILABLE,
    LoadRule,
    MeetingCount,
    PlacementCandidate,
    PlacementSnapshot,
    ScaleliteAlgorithm,
    ServerState,
    TagUnavailable,
    place_meeting,
    server_load,
)

__all__ = [
    "EmulatedServer",
    "FaultKind",
    "LoadRule",
    "MeetingCount",
    "PlacementCandidate",
    "PlacementSnapshot",
    "ScaleliteEmulator",
    "place_meeting",
    "serve",
    "server_load",
]

log = logs.get(__name__)

FaultKind = Literal["http_503", "disconnect"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_VERB_TO_STATE: Final[Mapping[str, ServerState]] = {
    "enable": "enabled",
    "cordon": "cordoned",
    "disable": "disabled",
}
_CHECKSUM_LENGTHS: Final[Mapping[int, ScaleliteAlgorithm]] = {
    40: "sha1",
    64: "sha256",
    128: "sha512",
}
_MAX_BODY: Final = 32 * 1024 * 1024
POLLER_KILL_GRACE_S: Final = 5.0
"""poll.rake:136-137: after POLLER_WAIT_TIMEOUT the pool is shut down (queued polls still run)
and killed 5 s later."""


@dataclass(frozen=True, slots=True)
class EmulatedServer:
    """A read-only view of one registered server (no secret)."""

    id: str
    url: str
    state: ServerState
    online: bool
    load: float | None
    load_multiplier: float
    tag: str | None
    meetings: int
    users: int
    largest_meeting: int
    videos: int


@dataclass(slots=True)
class _Server:
    id: str
    url: str
    secret: str = field(repr=False)
    tag: str | None
    load_multiplier: Decimal
    state: ServerState = "disabled"
    online: bool = False
    load: float | None = None
    meetings: int = 0
    users: int = 0
    largest_meeting: int = 0
    videos: int = 0
    healthy_counter: int = 0
    unhealthy_counter: int = 0
    unreachable: bool = False

    def view(self) -> EmulatedServer:
        return EmulatedServer(
            id=self.id,
            url=self.url,
            state=self.state,
            online=self.online,
            load=self.load,
            load_multiplier=float(self.load_multiplier),
            tag=self.tag,
            meetings=self.meetings,
            users=self.users,
            largest_meeting=self.largest_meeting,
            videos=self.videos,
        )

    def to_json(self) -> dict[str, Any]:
        # Same shape and value types as Api::ServersController#server_to_json.
        return {
            "id": self.id,
            "url": self.url,
            "secret": self.secret,
            "tag": self.tag or "",
            "state": self.state,
            "load": "unavailable" if self.load is None else self.load,
            "load_multiplier": _decimal_text(self.load_multiplier),
            "online": "online" if self.online else "offline",
        }


@dataclass(slots=True)
class _Meeting:
    server_id: str
    moderator_pw: str = field(repr=False)


@dataclass(slots=True)
class _Faults:
    outage: FaultKind | None = None
    outage_left: int | None = None
    slow_s: float = 0.0
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _decimal_text(value: Decimal) -> str:
    """A decimal the way Rails renders BigDecimal in JSON: ``"1.0"``, ``"2.5"``."""
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


def _to_decimal(value: Any) -> Decimal:
    """Ruby's lenient ``to_d``: anything unparseable is zero."""
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _present(value: Any) -> bool:
    """Rails' ``present?`` for JSON values."""
    return value is not None and value != "" and not (isinstance(value, str) and not value.strip())


def _xml(root: ET.Element) -> web.Response:
    return web.Response(
        body=ET.tostring(root, encoding="utf-8", xml_declaration=True),
        content_type="application/xml",
    )


def _xml_error(key: str, message: str) -> web.Response:
    """BBB-style FAILED answer; Scalelite sends these with HTTP 200."""
    root = ET.Element("response")
    ET.SubElement(root, "returncode").text = "FAILED"
    ET.SubElement(root, "messageKey").text = key
    ET.SubElement(root, "message").text = message
    return _xml(root)


def _checksum_error() -> web.Response:
    return _xml_error("checksumError", "You did not pass the checksum security check")


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status)


class ScaleliteEmulator:
    """In-memory Scalelite; mount ``app`` or use ``serve``."""

    def __init__(
        self,
        secret: str | Sequence[str],
        *,
        algorithms: Sequence[str] = SCALELITE_ALGORITHMS,
        clock: Clock = time.time,
        load_rule: LoadRule | None = None,
        healthy_threshold: int = 1,
        unhealthy_threshold: int = 2,
        backend_algorithm: checksum.Algorithm = "sha256",
        backend_timeout: float = 10.0,
        poller_threads: int = 5,
        poller_wait_timeout: float = 10.0,
        poller_kill_grace: float = POLLER_KILL_GRACE_S,
        server_id_is_hostname: bool = False,
    ) -> None:
        """Defaults are Scalelite's (config/application.rb:60, 64, 72, 126, 129 at v1.8.5):
        SERVER_HEALTHY_THRESHOLD 1, SERVER_UNHEALTHY_THRESHOLD 2, RESPONSE_TIMEOUT 10 s
        (``backend_timeout``, here for the whole answer), POLLER_THREADS 5,
        POLLER_WAIT_TIMEOUT 10 s; ``poller_kill_grace`` is poll.rake's fixed 5 s (tests shorten
        it)."""
        if poller_threads < 2:
            # FixedThreadPool.new(POLLER_THREADS - 1) needs at least one thread (poll.rake:34).
            raise ValueError("poller_threads must be at least 2")
        self._secrets = (secret,) if isinstance(secret, str) else tuple(secret)
        if not self._secrets or not all(self._secrets):
            raise ValueError("the emulator needs a non-empty loadbalancer secret")
        # Scalelite's LOADBALANCER_CHECKSUM_ALGORITHM list; sha384 can be listed
        # but never matches, since only lengths 40/64/128 are recognised.
        self._algorithms = frozenset(a.lower() for a in algorithms)
        self._clock = clock
        self._rule = load_rule if load_rule is not None else LoadRule()
        self._healthy_threshold = healthy_threshold
        self._unhealthy_threshold = unhealthy_threshold
        self._backend_algorithm = backend_algorithm
        self._backend_timeout = backend_timeout
        self._poll_workers = poller_threads - 1
        self._poll_cutoff = poller_wait_timeout + poller_kill_grace
        self._id_is_hostname = server_id_is_hostname
        self._servers: dict[str, _Server] = {}
        self._meetings: dict[str, _Meeting] = {}
        self._faults = _Faults()
        self._session: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        self.app = self._make_app()

    # ------------------------------------------------------------------ programmatic API

    def servers(self) -> tuple[EmulatedServer, ...]:
        """Every registered server, in registration order."""
        return tuple(s.view() for s in self._servers.values())

    def server(self, server_id: str) -> EmulatedServer:
        """One server; KeyError if unknown."""
        return self._servers[server_id].view()

    def meetings(self) -> Mapping[str, str]:
        """Meeting id → id of the server hosting it, as Scalelite records it."""
        return MappingProxyType({m: rec.server_id for m, rec in self._meetings.items()})

    def snapshot(self) -> PlacementSnapshot:
        """What place_meeting would see for a create arriving now."""
        return PlacementSnapshot(
            tuple(
                PlacementCandidate(s.id, s.state, s.online, s.load, s.tag)
                for s in self._servers.values()
            )
        )

    def add_server(
        self,
        url: str,
        secret: str,
        *,
        load_multiplier: float = 1.0,
        tag: str | None = None,
        state: ServerState = "disabled",
    ) -> str:
        """Register a server directly (as ``rake servers:add``); returns its id."""
        multiplier = _to_decimal(load_multiplier)
        server = self._create(url, secret, multiplier if multiplier else Decimal(1), tag)
        server.state = state
        return server.id

    def set_state(self, server_id: str, state: ServerState) -> None:
        """Enable, cordon or disable a server directly."""
        self._apply_state(self._servers[server_id], state)

    def force_offline(self, server_id: str, offline: bool = True) -> None:
        """Make every poll of a server fail (as a host that is down), or succeed again.

        As in Scalelite, the server goes offline (and its meetings are ended) only
        after ``unhealthy_threshold`` failed polls, and comes back after
        ``healthy_threshold`` good ones.
        """
        self._servers[server_id].unreachable = offline

    def inject_outage(self, kind: FaultKind = "http_503", requests: int | None = None) -> None:
        """Fail the next ``requests`` API calls (all of them if None)."""
        self._faults.outage = kind
        self._faults.outage_left = requests

    def inject_slowness(self, seconds: float) -> None:
        """Hold every answer up to ``seconds`` (released early by clear_faults)."""
        self._faults.slow_s = seconds

    def clear_faults(self) -> None:
        """Answer normally again and release answers held by inject_slowness."""
        self._faults.release.set()
        self._faults = _Faults()

    # ------------------------------------------------------------------ poller

    async def poll(self) -> None:
        """One round of Scalelite's poller (poll.rake:207-208 runs its tasks as a multitask).

        ``poll:versions`` only reads bbbVersion and is left out.
        """
        servers = list(self._servers.values())
        meetings = list(self._meetings.items())
        await asyncio.gather(
            self._pool("servers", [functools.partial(self._poll_server, s) for s in servers]),
            self._pool(
                "meetings", [functools.partial(self._poll_meeting, m, r) for m, r in meetings]
            ),
        )

    async def _pool(self, task: str, jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """``jobs`` on ``poller_threads - 1`` workers, cut off as poll.rake:131-137 does."""
        workers = asyncio.Semaphore(self._poll_workers)

        async def run(job: Callable[[], Awaitable[None]]) -> None:
            async with workers:
                await job()

        tasks = [asyncio.create_task(run(job)) for job in jobs]
        if not tasks:
            return
        _, left = await asyncio.wait(tasks, timeout=self._poll_cutoff)
        for pending in left:
            # A killed poll counts neither as an answer nor as a failure.
            pending.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        if left:
            log.warning("scalelite_emulator_poll_cut_off", task=task, unfinished=len(left))

    def start_polling(self, interval_s: float, sleep: Sleep = asyncio.sleep) -> None:
        """Poll in the background every ``interval_s`` (with an injectable sleep)."""
        if self._poller is not None:
            raise RuntimeError("already polling")

        async def loop() -> None:
            while True:
                try:
                    await self.poll()
                except Exception as exc:  # the poller must outlive one bad round
                    log.warning("scalelite_emulator_poll_failed", error=repr(exc))
                await sleep(interval_s)

        self._poller = asyncio.create_task(loop(), name="scalelite-emulator-poller")

    async def stop_polling(self) -> None:
        """Stop the background poller, if running."""
        task, self._poller = self._poller, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop polling and close the session used to reach the BBB servers."""
        await self.stop_polling()
        self.clear_faults()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> ScaleliteEmulator:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def _client(self, server: _Server) -> BbbClient:
        return BbbClient(
            self._http(),
            server.url,
            server.secret,
            algorithm=self._backend_algorithm,
            timeout=self._backend_timeout,
        )

    async def _poll_server(self, server: _Server) -> None:
        # poll.rake:36-129 (poll:servers), one server.
        try:
            if server.unreachable:
                raise BbbApiError("forced offline")
            if not on_loopback(server.url):
                raise BbbApiError("not on loopback: the emulator calls no other address")
            meetings = await self._client(server).get_meetings()
        except BbbApiError as exc:
            if self._servers.get(server.id) is server:
                await self._poll_failed(server, str(exc))
            return
        if self._servers.get(server.id) is not server:
            return  # deleted while we were asking
        now = self._clock()
        counts = [
            MeetingCount(m.participant_count, m.moderator_count, m.create_time_ms, m.is_breakout)
            for m in meetings
        ]
        server.unhealthy_counter = 0
        load = server_load(counts, float(server.load_multiplier), now, self._rule)
        if not server.online:
            server.healthy_counter += 1
            if server.healthy_counter < self._healthy_threshold:
                return  # poll.rake:74: not online yet, nothing else recorded
            server.healthy_counter = 0
            server.online = True
            log.info("scalelite_emulator_server_online", id=server.id)
        server.load = None if server.state == "disabled" else load
        if server.state == "cordoned" and load == 0:
            # Scalelite's own end of a drain: nothing left, so no longer cordoned.
            self._apply_state(server, "disabled")
            log.info("scalelite_emulator_cordoned_to_disabled", id=server.id)
        server.meetings = len(meetings)
        server.users = sum(m.participant_count for m in meetings)
        server.largest_meeting = max((m.participant_count for m in meetings), default=0)
        server.videos = sum(m.video_count for m in meetings)

    async def _poll_failed(self, server: _Server, error: str) -> None:
        # poll.rake:87-118: only consecutive failures of an online server count.
        server.healthy_counter = 0
        if not server.online:
            return
        server.unhealthy_counter += 1
        log.warning("scalelite_emulator_poll_error", id=server.id, error=error)
        if server.unhealthy_counter < self._unhealthy_threshold:
            return
        # "Panicking and setting offline": every meeting record of the server is destroyed and
        # BBB is told to end it (poll.rake:100-110). A slow host may well obey.
        dropped = [(m, rec) for m, rec in self._meetings.items() if rec.server_id == server.id]
        for meeting_id, _ in dropped:
            del self._meetings[meeting_id]
        ended = 0
        for meeting_id, rec in dropped:
            ended += await self._end_on(server, meeting_id, rec.moderator_pw)
        server.online = False
        server.load = None
        server.healthy_counter = server.unhealthy_counter = 0
        server.meetings = server.users = server.largest_meeting = server.videos = 0
        log.warning(
            "scalelite_emulator_server_offline",
            id=server.id,
            meetings_dropped=len(dropped),
            meetings_ended=ended,
        )

    async def _end_on(self, server: _Server, meeting_id: str, moderator_pw: str) -> int:
        """BBB ``end`` for one meeting; 1 if the host said SUCCESS."""
        if server.unreachable or not on_loopback(server.url):
            return 0
        try:
            parse_response(
                await self._client(server).call(
                    "end", [("meetingID", meeting_id), ("password", moderator_pw)]
                )
            )
        except BbbApiError as exc:
            log.warning("scalelite_emulator_end_failed", id=server.id, error=str(exc))
            return 0
        return 1

    async def _poll_meeting(self, meeting_id: str, rec: _Meeting) -> None:
        # poll.rake:146-165 (poll:meetings): one getMeetingInfo per meeting Scalelite knows.
        server = self._servers.get(rec.server_id)
        if server is None or server.unreachable or not on_loopback(server.url):
            return
        try:
            parse_response(
                await self._client(server).call("getMeetingInfo", [("meetingID", meeting_id)])
            )
        except FailedResponse as exc:
            if exc.message_key == "notFound" and self._meetings.get(meeting_id) is rec:
                del self._meetings[meeting_id]
                log.info("scalelite_emulator_meeting_ended", meeting_id=meeting_id)
        except BbbApiError as exc:
            log.warning("scalelite_emulator_meeting_poll_failed", id=server.id, error=str(exc))

    # ------------------------------------------------------------------ state rules

    def _create(self, url: str, secret: str, multiplier: Decimal, tag: str | None) -> _Server:
        server_id = (urlsplit(url).hostname or url) if self._id_is_hostname else str(uuid.uuid4())
        if server_id in self._servers:
            raise ValueError(f"Server already exists with id '{server_id}'")
        server = _Server(server_id, url, secret, tag or None, multiplier)
        self._servers[server_id] = server
        return server

    @staticmethod
    def _apply_state(server: _Server, state: ServerState) -> None:
        # A cordoned server keeps its load (it still hosts meetings); a disabled
        # one has none, and re-enabling it waits for the next poll to know it.
        server.state = state
        if state == "disabled":
            server.load = None

    # ------------------------------------------------------------------ HTTP plumbing

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._fault_middleware])
        api = "/scalelite/api/"
        app.router.add_get(api + "getServers", self._get_servers)
        app.router.add_get(api + "getServerInfo", self._get_server_info)
        app.router.add_post(api + "addServer", self._add_server)
        app.router.add_post(api + "updateServer", self._update_server)
        app.router.add_post(api + "deleteServer", self._delete_server)
        bbb = "/bigbluebutton/api/"
        app.router.add_get(bbb, self._index)
        app.router.add_get(bbb.rstrip("/"), self._index)
        app.router.add_get(bbb + "create", self._create_meeting)
        app.router.add_post(bbb + "create", self._create_meeting)
        app.router.add_get(bbb + "join", self._join)
        app.router.add_get(bbb + "end", self._end)
        app.router.add_get(bbb + "isMeetingRunning", self._is_meeting_running)
        app.router.add_get(bbb + "getMeetingInfo", self._get_meeting_info)

        async def on_cleanup(_: web.Application) -> None:
            await self.close()

        app.on_cleanup.append(on_cleanup)
        return app

    @web.middleware
    async def _fault_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        faults = self._faults
        if faults.slow_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(faults.release.wait(), faults.slow_s)
        if faults.outage is not None and faults.outage_left != 0:
            if faults.outage_left is not None:
                faults.outage_left -= 1
            if faults.outage == "disconnect" and request.transport is not None:
                request.transport.close()
            return web.Response(status=503, text="Service Unavailable")
        return await handler(request)

    def _verify(self, action: str, request: web.Request) -> bool:
        """ApiHelper#verify_checksum against the loadbalancer secrets."""
        given = request.query.get("checksum", "")
        algorithm = _CHECKSUM_LENGTHS.get(len(given))
        # Scalelite compares with the lower-case hexdigest as sent, so case matters.
        if not given or given != given.lower() or algorithm not in self._algorithms:
            return False
        raw = request.rel_url.raw_query_string
        marker = re.escape(given)
        query = re.sub(f"&checksum={marker}|checksum={marker}&|checksum={marker}", "", raw)
        return any(
            checksum.verify(action, query, secret, given, allowed=(algorithm,))
            for secret in self._secrets
        )

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        """Rails-style params: query merged with a JSON body (only if sent as JSON)."""
        params: dict[str, Any] = {k: v for k, v in request.query.items() if k != "checksum"}
        if request.can_read_body and request.content_type == "application/json":
            try:
                body = json.loads(await request.read() or b"null")
            except ValueError:
                body = None
            if isinstance(body, dict):
                params.update(body)
        return params

    @staticmethod
    def _server_params(params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """``params.require(:server)``; Rails' JSON wrapper also accepts unwrapped keys."""
        wrapped = params.get("server")
        if isinstance(wrapped, dict):
            return wrapped if wrapped else None
        unwrapped = {k: v for k, v in params.items() if k != "id"}
        return unwrapped or None

    # ------------------------------------------------------------------ server API

    async def _get_servers(self, request: web.Request) -> web.StreamResponse:
        if not self._verify("getServers", request):
            return _checksum_error()
        if not self._servers:
            return _json({"error": NO_SERVERS_ERROR}, status=404)
        return _json([s.to_json() for s in self._servers.values()])

    def _find(self, params: Mapping[str, Any]) -> _Server | web.Response:
        server_id = str(params.get("id") or "")
        server = self._servers.get(server_id)
        if server is None:
            return _json({"error": f"Couldn't find server with id={server_id}"}, status=404)
        return server

    async def _get_server_info(self, request: web.Request) -> web.StreamResponse:
        if not self._verify("getServerInfo", request):
            return _checksum_error()
        found = self._find(await self._params(request))
        return found if isinstance(found, web.Response) else _json(found.to_json())

    async def _add_server(self, request: web.Request) -> web.StreamResponse:
        if not self._verify("addServer", request):
            return _checksum_error()
        fields = self._server_params(await self._params(request))
        if fields is None:
            return _xml_error("internalError", "param is missing or the value is empty: server")
        url, secret = fields.get("url"), fields.get("secret")
        if not _present(url) or not _present(secret):
            return _json({"error": "Server needs a URL and a secret"}, status=400)
        multiplier = (
            _to_decimal(fields["load_multiplier"])
            if _present(fields.get("load_multiplier"))
            else Decimal(1)
        )
        tag = fields.get("tag")
        try:
            server = self._create(
                str(url),
                str(secret),
                multiplier if multiplier else Decimal(1),
                str(tag) if _present(tag) else None,
            )
        except ValueError:
            # Scalelite does not rescue RecordNotSaved here: Rails answers 500.
            return web.Response(status=500, text="Internal Server Error")
        log.info("scalelite_emulator_server_added", id=server.id, url=server.url)
        return _json(server.to_json(), status=201)

    async def _update_server(self, request: web.Request) -> web.StreamResponse:
        if not self._verify("updateServer", request):
            return _checksum_error()
        params = await self._params(request)
        found = self._find(params)
        if isinstance(found, web.Response):
            return found
        wrapped = params.get("server")
        if not isinstance(wrapped, dict) or not wrapped:
            return _json({"error": "param is missing or the value is empty: server"}, status=400)
        # ServerUpdateService: validate everything, then save once.
        state: ServerState | None = None
        if _present(wrapped.get("state")):
            state = _VERB_TO_STATE.get(str(wrapped["state"]))
            if state is None:
                return _json({"error": f"Invalid state parameter: {wrapped['state']}"}, status=400)
        multiplier: Decimal | None = None
        if _present(wrapped.get("load_multiplier")):
            multiplier = _to_decimal(wrapped["load_multiplier"])
            if not multiplier:
                return _json({"error": "Load-multiplier must be a non-zero number"}, status=400)
        if state is not None:
            self._apply_state(found, state)
        if multiplier is not None:
            found.load_multiplier = multiplier
        if _present(wrapped.get("secret")):
            found.secret = str(wrapped["secret"])
        if "tag" in wrapped and wrapped["tag"] is not None:
            found.tag = str(wrapped["tag"]) or None
        log.info("scalelite_emulator_server_updated", id=found.id, state=found.state)
        return _json(found.to_json())

    async def _delete_server(self, request: web.Request) -> web.StreamResponse:
        if not self._verify("deleteServer", request):
            return _checksum_error()
        found = self._find(await self._params(request))
        if isinstance(found, web.Response):
            return found
        del self._servers[found.id]
        # Scalelite leaves such meetings dangling and answers notFound for them;
        # forgetting them here gives the same answers.
        for meeting_id, rec in list(self._meetings.items()):
            if rec.server_id == found.id:
                del self._meetings[meeting_id]
        log.info("scalelite_emulator_server_deleted", id=found.id)
        return _json({"success": f"Server id={found.id} was destroyed"})

    # ------------------------------------------------------------------ BBB front API

    async def _index(self, _: web.Request) -> web.StreamResponse:
        root = ET.Element("response")
        ET.SubElement(root, "returncode").text = "SUCCESS"
        ET.SubElement(root, "version").text = "2.0"
        return _xml(root)

    def _backend_url(self, server: _Server, call: str, params: Sequence[tuple[str, str]]) -> str:
        """A call to ``server`` signed with its own secret, as encode_bbb_uri does."""
        query = checksum.signed_query(call, list(params), server.secret, self._backend_algorithm)
        return f"{api_base(server.url)}{call}?{query}"

    async def _forward(
        self, server: _Server, call: str, params: Sequence[tuple[str, str]], body: bytes = b""
    ) -> web.StreamResponse:
        if not on_loopback(server.url):
            return _xml_error("internalError", f"Unable to access {call} on server.")
        # encoded=True: the checksum covers these exact bytes, so no re-quoting.
        url = URL(self._backend_url(server, call, params), encoded=True)
        timeout = aiohttp.ClientTimeout(total=self._backend_timeout)
        try:
            if body:
                headers = {"Content-Type": "application/xml"}
                req = self._http().post(url, data=body, headers=headers, timeout=timeout)
            else:
                req = self._http().get(url, timeout=timeout)
            async with req as resp:
                ok = resp.status == 200 and (resp.content_length or 0) <= _MAX_BODY
                answer = await resp.read() if ok else b""
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning(
                "scalelite_emulator_forward_failed", id=server.id, call=call, error=repr(exc)
            )
            ok, answer = False, b""
        if not ok or not answer.lstrip().startswith(b"<"):
            return _xml_error("internalError", f"Unable to access {call} on server.")
        return web.Response(body=answer, content_type="application/xml")

    @staticmethod
    def _pass_through(request: web.Request) -> list[tuple[str, str]]:
        return [
            (k, v)
            for k, v in parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
            if k != "checksum"
        ]

    def _meeting_call(
        self, call: str, request: web.Request, *, required: bool = False
    ) -> tuple[list[tuple[str, str]], str] | web.Response:
        """The checked parameters and meetingID of a front-API call, or the error answer."""
        if not self._verify(call, request):
            return _checksum_error()
        params = self._pass_through(request)
        meeting_id = dict(params).get("meetingID", "")
        if required and not meeting_id:
            return _xml_error(
                "missingParamMeetingID", "You must specify a meeting ID for the meeting."
            )
        return params, meeting_id

    async def _create_meeting(self, request: web.Request) -> web.StreamResponse:
        # bigbluebutton_api_controller.rb:166-268 at v1.8.5.
        checked = self._meeting_call("create", request, required=True)
        if isinstance(checked, web.Response):
            return checked
        params, meeting_id = checked
        given = dict(params)
        rec = self._meetings.get(meeting_id)
        server = None if rec is None else self._servers.get(rec.server_id)
        if (
            rec is not None
            and server is not None
            and server.state == "cordoned"
            and not await self._running_on(server, meeting_id)
        ):
            # A stale meeting on a cordoned server is placed anew (controller:175-180).
            del self._meetings[meeting_id]
            server = None
        if server is None:
            # A new meeting (or one whose server is gone: Server.find raises the same
            # RecordNotFound): place it, and only then count it (controller:183-206).
            try:
                chosen = place_meeting(self.snapshot(), given.get("meta_server-tag"))
            except TagUnavailable as exc:
                return _xml_error(SERVER_TAG_UNAVAILABLE, str(exc))
            if chosen is None:
                return _xml_error("internalError", "Could not find any available servers.")
            rec = _Meeting(chosen, given.get("moderatorPW") or secrets.token_hex(4))
            self._meetings[meeting_id] = rec
            server = self._servers[chosen]
            self._increment_load(server)
            # The generated moderatorPW goes along only on a new meeting's create.
            params = [(k, v) for k, v in params if k != "moderatorPW"]
            params.append(("moderatorPW", rec.moderator_pw))
        # The server's own tag goes to BBB, whatever was asked (controller:219-223).
        params = [(k, v) for k, v in params if k != "meta_server-tag"]
        if server.tag:
            params.append(("meta_server-tag", server.tag))
        log.info("scalelite_emulator_meeting_placed", meeting_id=meeting_id, server_id=server.id)
        body = await request.read() if request.method == "POST" else b""
        return await self._forward(server, "create", params, body)

    @staticmethod
    def _increment_load(server: _Server) -> None:
        """``increment_load(1)``: Redis ZADD XX INCR, a no-op outside ``server_load``
        (server.rb:204-211), which holds the enabled servers with a known load."""
        if server.state == "enabled" and server.load is not None:
            server.load += float(server.load_multiplier)

    async def _running_on(self, server: _Server, meeting_id: str) -> bool:
        """``meeting_running_on_server?`` (controller:583-591): any error reads as not running."""
        if server.unreachable or not on_loopback(server.url):
            return False
        try:
            root = parse_response(
                await self._client(server).call("isMeetingRunning", [("meetingID", meeting_id)])
            )
        except BbbApiError:
            return False
        return root.findtext("running") == "true"

    def _hosting(self, meeting_id: str) -> _Server | None:
        rec = self._meetings.get(meeting_id)
        return None if rec is None else self._servers.get(rec.server_id)

    async def _join(self, request: web.Request) -> web.StreamResponse:
        checked = self._meeting_call("join", request, required=True)
        if isinstance(checked, web.Response):
            return checked
        params, meeting_id = checked
        server = self._hosting(meeting_id)
        if server is None:
            return _meeting_not_found()
        if not server.online or server.state == "disabled":
            return _xml_error(
                "serverUnavailable", "The server for this meeting is disabled/offline."
            )
        # Every join counts until the next poll (controller:327-328).
        self._increment_load(server)
        raise web.HTTPFound(self._backend_url(server, "join", params))

    async def _end(self, request: web.Request) -> web.StreamResponse:
        checked = self._meeting_call("end", request)
        if isinstance(checked, web.Response):
            return checked
        params, meeting_id = checked
        server = self._hosting(meeting_id)
        if server is None:
            return _meeting_not_found()
        del self._meetings[meeting_id]
        return await self._forward(server, "end", params)

    async def _is_meeting_running(self, request: web.Request) -> web.StreamResponse:
        checked = self._meeting_call("isMeetingRunning", request)
        if isinstance(checked, web.Response):
            return checked
        params, meeting_id = checked
        server = self._hosting(meeting_id)
        if server is None:
            root = ET.Element("response")
            ET.SubElement(root, "returncode").text = "SUCCESS"
            ET.SubElement(root, "running").text = "false"
            return _xml(root)
        return await self._forward(server, "isMeetingRunning", params)

    async def _get_meeting_info(self, request: web.Request) -> web.StreamResponse:
        checked = self._meeting_call("getMeetingInfo", request)
        if isinstance(checked, web.Response):
            return checked
        params, meeting_id = checked
        server = self._hosting(meeting_id)
        if server is None:
            return _meeting_not_found()
        return await self._forward(server, "getMeetingInfo", params)


def on_loopback(url: str) -> bool:
    """The URL's host is this machine; servers elsewhere (moto's 10.x addresses, names in
    tests) are registered like any other but never called."""
    return is_loopback(urlsplit(url).hostname)


def _meeting_not_found() -> web.Response:
    return _xml_error(
        "notFound",
        "We could not find a meeting with that meeting ID - "
        "perhaps the meeting is not yet running?",
    )


async def serve(
    emulator: ScaleliteEmulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start the emulator's HTTP server; returns the runner (cleanup it) and the port."""
    runner = web.AppRunner(emulator.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    log.info("scalelite_emulator_listening", host=host, port=bound)
    return runner, bound
