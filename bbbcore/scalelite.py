"""Scalelite: async client of its server API, and its placement rule as pure functions.

Facts taken from Scalelite's sources (blindsidenetworks/scalelite):

- Endpoints live under ``/scalelite/api/``: ``getServers``, ``getServerInfo?id=``
  (GET) and ``addServer``, ``updateServer``, ``deleteServer`` (POST, JSON body).
- Checksum (``ApiHelper#verify_checksum``): ``hex(H(action + query + secret))``
  where ``query`` is the raw query string with the ``checksum`` parameter cut
  out. The JSON body is not part of it, so a POST whose only query parameter is
  the checksum is signed over ``action + secret``. The algorithm is picked by
  the checksum's length: 40 (sha1), 64 (sha256), 128 (sha512); sha384 (96) is
  always refused.
- A refused checksum is answered with HTTP 200 and BBB's XML error
  (``checksumError``), not with 401.
- ``getServers`` on an empty fleet answers 404 ``{"error": "No servers are
  configured"}``; an unknown ``id`` answers 404 ``{"error": "Couldn't find
  server with id=..."}``; a bad state or a zero multiplier answers 400.
- ``state`` reads ``enabled``/``cordoned``/``disabled``; ``updateServer`` takes the
  verbs ``enable``/``cordon``/``disable``. A server is added ``disabled`` and
  ``offline``; ``load`` is a number, or ``"unavailable"`` when unknown;
  ``load_multiplier`` is a decimal rendered as a string; ``online`` is
  ``"online"``/``"offline"``.
- Placement (``Server.find_available``, app/models/server.rb:289-335 at v1.8.5):
  the lowest load in the ``server_load`` sorted set, which holds exactly the
  enabled servers with a known load (a server offline or disabled has none).
  Equal loads go to the smaller id (Redis orders equal scores by member).
  Tags: see ``place_meeting``.
- Load (``lib/tasks/poll.rake``:48-71): for every non-breakout meeting,
  ``participantCount + moderatorCount``, raised to ``LOAD_MIN_USER_COUNT`` (15)
  while the meeting is younger than ``LOAD_JOIN_BUFFER_TIME`` (15 min); summed
  and multiplied by the server's ``load_multiplier``. Between polls
  ``increment_load(1)`` (server.rb:204-211, a Redis ``ZADD XX INCR``, so only a
  server in ``server_load`` moves) adds ``1 * load_multiplier`` for every
  ``create`` of a *new* meeting and every ``join``
  (bigbluebutton_api_controller.rb:203, 328). A cordoned server whose polled
  load is 0 becomes ``disabled`` (poll.rake:82).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base
from yarl import URL

from bbbcore import checksum, logs
from bbbcore.scalelite_tags import NO_TAG

log = logs.get(__name__)

T = TypeVar("T")

ServerState = Literal["enabled", "cordoned", "disabled"]
SERVER_STATES: Final[tuple[ServerState, ...]] = get_args(ServerState)
ScaleliteAlgorithm = Literal["sha1", "sha256", "sha512"]
SCALELITE_ALGORITHMS: Final[tuple[ScaleliteAlgorithm, ...]] = get_args(ScaleliteAlgorithm)

# updateServer takes verbs; getServers reports the resulting states.
STATE_VERBS: Final[Mapping[ServerState, str]] = {
    "enabled": "enable",
    "cordoned": "cordon",
    "disabled": "disable",
}
API_PATH: Final = "scalelite/api/"
NO_SERVERS_ERROR: Final = "No servers are configured"
DEFAULT_MAX_BYTES: Final = 8 * 1024 * 1024
LOAD_MIN_USER_COUNT: Final = 15
LOAD_JOIN_BUFFER_S: Final = 15 * 60.0


# --------------------------------------------------------------------------- errors


class ScaleliteError(Exception):
    """Base of every error talking to Scalelite's server API."""

    def __init__(self, action: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{action}: {message}" + (f" (HTTP {status})" if status else ""))
        self.action = action
        self.status = status


class ScaleliteTransientError(ScaleliteError):
    """Worth retrying: connection trouble, timeout, HTTP 5xx or 429."""


class ScalelitePermanentError(ScaleliteError):
    """Retrying cannot help: the request or the credentials are wrong."""


class ScaleliteAuthError(ScalelitePermanentError):
    """Checksum refused (Scalelite's XML ``checksumError``, or 401/403 from a proxy)."""


class ScaleliteNotFound(ScalelitePermanentError):
    """No server with that id."""


class ScaleliteRequestError(ScalelitePermanentError):
    """Scalelite refused the request (400, other 4xx, XML ``FAILED``)."""


class ScaleliteProtocolError(ScalelitePermanentError):
    """The answer is not what the API documents."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class ScaleliteServer:
    """One BBB server as Scalelite reports it; the secret is deliberately not kept."""

    id: str
    url: str
    state: ServerState
    online: bool
    load: float | None
    load_multiplier: float = 1.0
    tag: str | None = None
    meetings: int | None = None
    users: int | None = None


def normalize_url(url: str) -> str:
    """``url`` in a form where trivially different spellings compare equal."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}{query}"


def server_url(template: str, instance_id: str, domain: str, private_ip: str | None) -> str | None:
    """The URL an instance registers in Scalelite as (placeholders instance_id, domain,
    private_ip); None when the template needs an address the instance lacks."""
    if private_ip is None and "{private_ip" in template:
        return None
    return template.format(instance_id=instance_id, domain=domain, private_ip=private_ip or "")


def servers_by_url(servers: Iterable[ScaleliteServer]) -> dict[str, ScaleliteServer]:
    """Servers by normalised URL; of several with one URL the smallest id, as bbbnode picks."""
    by_url: dict[str, ScaleliteServer] = {}
    for server in sorted(servers, key=lambda s: s.id):
        key = normalize_url(server.url)
        if key in by_url:
            log.warning("scalelite_duplicate_url", url=server.url, ids=[by_url[key].id, server.id])
            continue
        by_url[key] = server
    return by_url


def _number(value: Any, what: str) -> float | None:
    if value is None or value == "" or value == "unavailable":
        return None
    if isinstance(value, bool):
        raise ScaleliteProtocolError("getServers", f"{what} is a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ScaleliteProtocolError("getServers", f"{what} is not a number") from None
    raise ScaleliteProtocolError("getServers", f"{what} has type {type(value).__name__}")


def _count(value: Any, what: str) -> int | None:
    number = _number(value, what)
    return None if number is None else int(number)


def _state(value: Any) -> ServerState:
    if value in SERVER_STATES:
        return cast(ServerState, value)
    raise ScaleliteProtocolError("getServers", f"unknown server state {value!r}")


def _online(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("online", "offline"):
        return bool(value == "online")
    raise ScaleliteProtocolError("getServers", f"unknown online value {value!r}")


def parse_server(data: Any) -> ScaleliteServer:
    """A server object from the API's JSON (its ``secret`` is dropped)."""
    if not isinstance(data, dict) or not data.get("id") or not isinstance(data.get("url"), str):
        raise ScaleliteProtocolError("getServers", "server object without id or url")
    multiplier = _number(data.get("load_multiplier"), "load_multiplier")
    tag = data.get("tag")
    return ScaleliteServer(
        id=str(data["id"]),
        url=data["url"],
        state=_state(data.get("state")),
        online=_online(data.get("online")),
        load=_number(data.get("load"), "load"),
        load_multiplier=1.0 if multiplier is None else multiplier,
        tag=tag if isinstance(tag, str) and tag else None,
        meetings=_count(data.get("meetings"), "meetings"),
        users=_count(data.get("users"), "users"),
    )


# --------------------------------------------------------------------------- placement


@dataclass(frozen=True, slots=True)
class LoadRule:
    """Scalelite's ``LOAD_MIN_USER_COUNT`` and ``LOAD_JOIN_BUFFER_TIME``."""

    min_user_count: int = LOAD_MIN_USER_COUNT
    join_buffer_s: float = LOAD_JOIN_BUFFER_S


@dataclass(frozen=True, slots=True)
class MeetingCount:
    """What the poller reads of one meeting in getMeetings."""

    participants: int
    moderators: int
    create_time_ms: int
    is_breakout: bool = False


def meeting_weight(meeting: MeetingCount, now_s: float, rule: LoadRule = LoadRule()) -> int:
    """One meeting's share of its server's load, before the multiplier.

    ``participants + moderators`` is what Scalelite adds, even though BBB's
    participantCount already includes moderators; kept so placements match.
    """
    if meeting.is_breakout:
        return 0
    attendees = meeting.participants + meeting.moderators
    # Scalelite truncates createTime to whole seconds and compares strictly.
    young = meeting.create_time_ms // 1000 > now_s - rule.join_buffer_s
    return max(attendees, rule.min_user_count) if young else attendees


def server_load(
    meetings: Iterable[MeetingCount],
    load_multiplier: float,
    now_s: float,
    rule: LoadRule = LoadRule(),
) -> float:
    """The load Scalelite's poller stores for a server hosting ``meetings``."""
    return sum(meeting_weight(m, now_s, rule) for m in meetings) * load_multiplier


@dataclass(frozen=True, slots=True)
class PlacementCandidate:
    """One server as the placement rule sees it; ``load`` None means unknown."""

    id: str
    state: ServerState
    online: bool
    load: float | None
    tag: str | None = None

    @property
    def available(self) -> bool:
        """In Scalelite's ``server_load`` set: enabled, online, load known."""
        return self.state == "enabled" and self.online and self.load is not None


@dataclass(frozen=True, slots=True)
class PlacementSnapshot:
    """The fleet at the instant a ``create`` arrives."""

    servers: tuple[PlacementCandidate, ...]


def _least_loaded(candidates: Iterable[PlacementCandidate]) -> PlacementCandidate | None:
    return min(candidates, key=lambda s: (cast(float, s.load), s.id), default=None)


class TagUnavailable(LookupError):
    """A required server tag (``meta_server-tag`` ending in ``!``) matches no available server.

    Scalelite answers it with ``serverTagUnavailable`` (app/controllers/concerns/bbb_errors.rb:61).
    """

    def __init__(self, tags: str) -> None:
        super().__init__(f"There is no available server with the required tag={tags}.")
        self.tags = tags


SERVER_TAG_UNAVAILABLE: Final = "serverTagUnavailable"


def _presence(text: str | None) -> str | None:
    """Rails' ``presence``: None for None, empty or blank text."""
    return text if text is not None and text.strip() else None


def place_meeting(snapshot: PlacementSnapshot, server_tag: str | None = None) -> str | None:
    """Id of the server Scalelite gives a new meeting, or None when no server is available.

    ``server_tag`` is the ``meta_server-tag`` create parameter, read as
    ``Server.find_available`` reads it (app/models/server.rb:289-316 at v1.8.5):
    a semicolon-separated list of tags, ``none`` standing for an untagged
    server; a trailing ``!`` makes a match required. The least-loaded server
    whose tag is in the list wins; if none matches, a required list raises
    TagUnavailable and any other falls back to the untagged servers. No tag at
    all (or only ``!``) means untagged servers only. With no available server
    at all the answer is None before any tag is looked at (server.rb:302).
    """
    available = [s for s in snapshot.servers if s.available]
    if not available:
        return None
    spec = _presence(server_tag)
    required = False
    if spec is not None and spec.endswith("!"):
        # "x!" requires x; a lone "!" is no tag at all (server.rb:293-296).
        spec = _presence(spec[:-1])
        required = spec is not None
    chosen: PlacementCandidate | None = None
    if spec is not None:
        # Ruby's split(";") drops trailing empty fields; names are compared as written.
        wanted = set(spec.split(";"))
        chosen = _least_loaded(s for s in available if (s.tag or NO_TAG) in wanted)
        if chosen is None and required:
            raise TagUnavailable(spec)
    if chosen is None:
        chosen = _least_loaded(s for s in available if not s.tag)
    return None if chosen is None else chosen.id


# --------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Jittered exponential backoff for transient errors only."""

    attempts: int = 5
    initial_s: float = 0.5
    max_s: float = 10.0

    def wait(self) -> wait_base:
        return wait_random_exponential(multiplier=self.initial_s, max=self.max_s)


Sleep = Callable[[float], Awaitable[None]]


class ScaleliteClient:
    """Calls Scalelite's server API with checksums, timeouts and retries."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        secret: str,
        *,
        algorithm: str = "sha256",
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Sleep = asyncio.sleep,
        wait: wait_base | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if algorithm not in SCALELITE_ALGORITHMS:
            raise ValueError(
                f"checksum algorithm {algorithm!r} is not accepted by Scalelite; "
                f"use one of {', '.join(SCALELITE_ALGORITHMS)}"
            )
        if not secret:
            raise ValueError("the Scalelite (LOADBALANCER_SECRET) secret is empty")
        self._session = session
        root = base_url if base_url.endswith("/") else base_url + "/"
        self._base = root + API_PATH
        self._secret = secret
        self._algorithm = cast(checksum.Algorithm, algorithm)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry
        self._sleep = sleep
        self._wait = wait if wait is not None else retry.wait()
        self._max_bytes = max_bytes

    def signed_url(self, action: str, params: Sequence[tuple[str, str]] = ()) -> str:
        """Full URL of ``action`` with its checksum (the body is never signed)."""
        query = checksum.signed_query(action, list(params), self._secret, self._algorithm)
        return f"{self._base}{action}?{query}"

    # ---- raw calls

    async def _request(
        self,
        action: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """One HTTP exchange; returns (status, parsed JSON) or raises a typed error."""
        # encoded=True: the checksum covers these exact bytes, so no re-quoting.
        url = URL(self.signed_url(action, params), encoded=True)
        method = "GET" if body is None else "POST"
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                received = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    received += chunk
                    if len(received) > self._max_bytes:
                        raise ScaleliteProtocolError(
                            action, f"answer larger than {self._max_bytes} bytes"
                        )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ScaleliteTransientError(action, type(exc).__name__) from None
        raw = bytes(received)
        if status >= 500 or status == 429:
            raise ScaleliteTransientError(action, "server busy or failing", status)
        if status in (401, 403):
            raise ScaleliteAuthError(action, "not authorised", status)
        if raw.lstrip().startswith(b"<"):
            self._raise_xml(action, raw, status)
        try:
            payload = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise ScaleliteProtocolError(action, "answer is not JSON", status) from None
        return status, payload

    @staticmethod
    def _raise_xml(action: str, raw: bytes, status: int) -> None:
        # Scalelite renders BBB-style XML errors (checksum, missing parameter) with 200.
        text = raw.decode("utf-8", "replace")
        if "checksumError" in text:
            raise ScaleliteAuthError(action, "checksum refused (check the secret)", status)
        raise ScaleliteRequestError(action, "Scalelite answered an XML error", status)

    @staticmethod
    def _error_text(payload: Any) -> str:
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            return str(payload["error"])
        return "request refused"

    def _check(self, action: str, status: int, payload: Any) -> None:
        if 200 <= status < 300:
            return
        if status == 404:
            raise ScaleliteNotFound(action, self._error_text(payload), status)
        raise ScaleliteRequestError(action, self._error_text(payload), status)

    async def _retrying(self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "scalelite_retry",
                action=action,
                attempt=state.attempt_number,
                error=str(exc),
                wait_s=round(state.upcoming_sleep, 3),
            )

        async for attempt in AsyncRetrying(
            sleep=self._sleep,
            stop=stop_after_attempt(self._retry.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(ScaleliteTransientError),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    # ---- API

    async def get_servers(self) -> tuple[ScaleliteServer, ...]:
        """Every configured server; ``()`` for Scalelite's 404 on an empty list."""
        return tuple(parse_server(s) for s in await self._retrying("getServers", self._raw_list))

    async def _raw_list(self) -> list[dict[str, Any]]:
        status, payload = await self._request("getServers")
        if status == 404 and self._error_text(payload) == NO_SERVERS_ERROR:
            return []
        self._check("getServers", status, payload)
        if not isinstance(payload, list):
            raise ScaleliteProtocolError("getServers", "answer is not a list", status)
        return [s for s in payload if isinstance(s, dict)]

    async def get_server_info(self, server_id: str) -> ScaleliteServer:
        """One server by id; raises ScaleliteNotFound if there is none."""

        async def call() -> ScaleliteServer:
            status, payload = await self._request("getServerInfo", params=[("id", server_id)])
            self._check("getServerInfo", status, payload)
            return parse_server(payload)

        return await self._retrying("getServerInfo", call)

    async def find_by_url(self, url: str) -> ScaleliteServer | None:
        """The server registered under ``url`` (trailing slash and case of host ignored)."""
        want = normalize_url(url)
        matches = sorted(
            (s for s in await self.get_servers() if normalize_url(s.url) == want),
            key=lambda s: s.id,
        )
        if len(matches) > 1:
            log.warning("scalelite_duplicate_url", url=url, ids=[s.id for s in matches])
        return matches[0] if matches else None

    async def add_server(
        self, url: str, secret: str, load_multiplier: float = 1.0, tag: str | None = None
    ) -> ScaleliteServer:
        """``addServer`` once, without retry: a retried add could register twice.

        Use ensure_registered, which looks the URL up again before each attempt.
        """
        server: dict[str, Any] = {
            "url": url,
            "secret": secret,
            "load_multiplier": load_multiplier,
            "tag": tag or "",
        }
        status, payload = await self._request("addServer", body={"server": server})
        self._check("addServer", status, payload)
        added = parse_server(payload)
        log.info("scalelite_server_added", id=added.id, url=added.url, tag=added.tag)
        return added

    async def update_server(
        self,
        server_id: str,
        *,
        state: ServerState | None = None,
        load_multiplier: float | None = None,
        secret: str | None = None,
        tag: str | None = None,
    ) -> ScaleliteServer:
        """``updateServer`` with the given fields; absolute values, so retrying is safe."""
        if state is not None and state not in STATE_VERBS:
            raise ValueError(f"unknown server state {state!r}; use one of {SERVER_STATES}")
        if load_multiplier is not None and load_multiplier <= 0:
            raise ValueError("load_multiplier must be positive")
        fields: dict[str, Any] = {}
        if state is not None:
            fields["state"] = STATE_VERBS[state]
        if load_multiplier is not None:
            fields["load_multiplier"] = load_multiplier
        if secret is not None:
            fields["secret"] = secret
        if tag is not None:
            fields["tag"] = tag
        if not fields:
            return await self.get_server_info(server_id)
        return await self._retrying("updateServer", lambda: self._update_once(server_id, fields))

    async def _update_once(self, server_id: str, fields: Mapping[str, Any]) -> ScaleliteServer:
        status, payload = await self._request(
            "updateServer", body={"id": server_id, "server": dict(fields)}
        )
        self._check("updateServer", status, payload)
        updated = parse_server(payload)
        log.info(
            "scalelite_server_updated",
            id=server_id,
            state=updated.state,
            load_multiplier=updated.load_multiplier,
            secret_changed="secret" in fields,
        )
        return updated

    async def set_state(self, server_id: str, state: ServerState) -> ScaleliteServer:
        """Enable, cordon or disable a server (setting the current state again is harmless)."""
        return await self.update_server(server_id, state=state)

    async def set_load_multiplier(self, server_id: str, multiplier: float) -> ScaleliteServer:
        """Weigh a server's load: above 1 makes Scalelite prefer it less."""
        return await self.update_server(server_id, load_multiplier=multiplier)

    async def delete(self, server_id: str) -> bool:
        """Remove a server; True if removed now, False if it was already gone."""

        async def call() -> bool:
            status, payload = await self._request("deleteServer", body={"id": server_id})
            if status == 404:
                return False
            self._check("deleteServer", status, payload)
            return True

        deleted = await self._retrying("deleteServer", call)
        log.info("scalelite_server_deleted", id=server_id, already_gone=not deleted)
        return deleted

    async def ensure_registered(
        self, url: str, secret: str, load_multiplier: float = 1.0, tag: str | None = None
    ) -> ScaleliteServer:
        """The server for ``url``, added if missing and corrected if its fields differ.

        Does not change its state: a new server stays disabled until enabled.
        """
        if load_multiplier <= 0:
            raise ValueError("load_multiplier must be positive")
        want = normalize_url(url)

        async def attempt() -> ScaleliteServer:
            # Looked up again on every attempt, so an add that timed out after
            # Scalelite stored it is found instead of added a second time.
            raw = [s for s in await self._raw_list() if normalize_url(str(s.get("url"))) == want]
            if not raw:
                return await self.add_server(url, secret, load_multiplier, tag)
            raw.sort(key=lambda s: str(s.get("id")))
            if len(raw) > 1:
                log.warning("scalelite_duplicate_url", url=url, ids=[s.get("id") for s in raw])
            return await self._reconcile(raw[0], secret, load_multiplier, tag)

        return await self._retrying("ensure_registered", attempt)

    async def _reconcile(
        self, raw: dict[str, Any], secret: str, load_multiplier: float, tag: str | None
    ) -> ScaleliteServer:
        server = parse_server(raw)
        current_secret = raw.get("secret")
        secret_differs = not (
            isinstance(current_secret, str)
            and hmac.compare_digest(current_secret.encode(), secret.encode())
        )
        multiplier_differs = abs(server.load_multiplier - load_multiplier) > 1e-9
        tag_differs = (server.tag or "") != (tag or "")
        if not (secret_differs or multiplier_differs or tag_differs):
            log.info("scalelite_server_registered", id=server.id, url=server.url, added=False)
            return server
        fields: dict[str, Any] = {}
        if secret_differs:
            fields["secret"] = secret
        if multiplier_differs:
            fields["load_multiplier"] = load_multiplier
        if tag_differs:
            fields["tag"] = tag or ""
        # Already inside ensure_registered's retry loop: one attempt here.
        return await self._update_once(server.id, fields)
