"""The IMDSv2 client against the emulator (token flow, 404s, the layer) and a fault stub."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from bbbcore import aws
from bbbcore import imds as client_mod
from bbbcore.imds import ImdsClient, ImdsError, ImdsUnavailable, InstanceIdentity
from bbbnode.identity import Identity
from bbbsim import imds as emulator_mod
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import FleetIds, FleetSpec
from tests.aws_fixtures import FakeClock

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HOST = emulator_mod.InstanceIdentity(
    instance_id="i-0123456789abcdef0",
    region="eu-central-1",
    availability_zone="eu-central-1b",
    local_ipv4="10.20.1.17",
    public_ipv4="203.0.113.17",
    group="bbb-fleet",
)


class Sleeps:
    """An injected sleep that records what it was asked to wait and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def counted(emulator: emulator_mod.ImdsEmulator, counts: Counter[str]) -> web.Application:
    """The emulator's app with a middleware counting requests by method."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        counts[request.method] += 1
        return await handler(request)

    app = emulator.app()
    app.middlewares.append(count)
    return app


async def test_identity_from_the_emulator_with_one_token(fake_clock: FakeClock) -> None:
    counts: Counter[str] = Counter()
    emulator = emulator_mod.ImdsEmulator(HOST, target_state=lambda: "InService", clock=fake_clock)
    async with (
        served(counted(emulator, counts)) as url,
        ImdsClient(url, clock=fake_clock, token_ttl=300) as client,
    ):
        identity = await client.identity()
        assert await client.target_lifecycle_state() == "InService"
    assert identity == InstanceIdentity(
        instance_id=HOST.instance_id,
        region="eu-central-1",
        availability_zone="eu-central-1b",
        local_ipv4="10.20.1.17",
        public_ipv4="203.0.113.17",
        asg_name="bbb-fleet",
    )
    # Six concurrent reads and one more: a single token serves them all.
    assert counts == Counter({"PUT": 1, "GET": 7})
    # bbbnode's Identity is built from this one field for field.
    node = Identity(**dataclasses.asdict(identity))
    assert dataclasses.asdict(node) == dataclasses.asdict(identity)


async def test_absent_values_are_none(fake_clock: FakeClock) -> None:
    bare = dataclasses.replace(HOST, public_ipv4=None, metadata_tags=False)
    emulator = emulator_mod.ImdsEmulator(bare, clock=fake_clock)
    async with served(emulator.app()) as url, ImdsClient(url, clock=fake_clock) as client:
        identity = await client.identity()
        assert await client.target_lifecycle_state() is None
        assert await client.metadata("no/such/thing") is None
    assert identity.public_ipv4 is None
    assert identity.asg_name is None
    assert identity.instance_id == HOST.instance_id


async def test_token_renewed_before_it_expires(fake_clock: FakeClock) -> None:
    counts: Counter[str] = Counter()
    emulator = emulator_mod.ImdsEmulator(HOST, clock=fake_clock)
    async with (
        served(counted(emulator, counts)) as url,
        ImdsClient(url, clock=fake_clock, token_ttl=60) as client,
    ):
        await client.metadata("instance-id")
        assert counts["PUT"] == 1
        fake_clock.advance(50)  # 10 s left, more than the 6 s margin of a 60 s token
        await client.metadata("instance-id")
        assert counts["PUT"] == 1
        fake_clock.advance(5)  # 5 s left: renew before a request could race the expiry
        await client.metadata("instance-id")
        assert counts["PUT"] == 2
        fake_clock.advance(3600)
        assert await client.metadata("instance-id") == HOST.instance_id
        assert counts["PUT"] == 3
    # Never a 401 on the way: renewal happened before expiry every time.
    assert counts["GET"] == 4


async def test_token_renewed_on_401(fake_clock: FakeClock) -> None:
    counts: Counter[str] = Counter()
    emulator = emulator_mod.ImdsEmulator(HOST, clock=fake_clock)
    client_clock = FakeClock(fake_clock.now)  # the client's clock lags the service's
    async with (
        served(counted(emulator, counts)) as url,
        ImdsClient(url, clock=client_clock, token_ttl=60) as client,
    ):
        assert await client.metadata("local-ipv4") == HOST.local_ipv4
        fake_clock.advance(120)  # IMDS considers the token expired, the client does not
        assert await client.metadata("local-ipv4") == HOST.local_ipv4
    assert counts == Counter({"PUT": 2, "GET": 3})


def flaky_app(
    *,
    get_failures: list[int] | None = None,
    put_failures: list[int] | None = None,
    hang_first_get: asyncio.Event | None = None,
    get_status_always: int | None = None,
) -> tuple[web.Application, Counter[str]]:
    """A tiny IMDS stand-in answering with the given statuses before succeeding.

    ``hang_first_get``: the first read waits for this event (set it before shutdown).
    """
    counts: Counter[str] = Counter()
    gets = list(get_failures or [])
    puts = list(put_failures or [])

    async def token(request: web.Request) -> web.Response:
        counts["PUT"] += 1
        if puts:
            return web.Response(status=puts.pop(0))
        return web.Response(text="stub-token")

    async def read(request: web.Request) -> web.Response:
        counts["GET"] += 1
        if hang_first_get is not None and counts["GET"] == 1:
            await hang_first_get.wait()
        if get_status_always is not None:
            return web.Response(status=get_status_always)
        if gets:
            return web.Response(status=gets.pop(0))
        assert request.headers[emulator_mod.TOKEN_HEADER] == "stub-token"
        return web.Response(text="i-stub")

    app = web.Application()
    app.router.add_put("/latest/api/token", token)
    app.router.add_get("/latest/{path:.*}", read)
    return app, counts


async def test_server_errors_are_retried_with_backoff() -> None:
    app, counts = flaky_app(get_failures=[500, 503, 429], put_failures=[503])
    sleeps = Sleeps()
    async with served(app) as url, ImdsClient(url, sleep=sleeps) as client:
        assert await client.metadata("instance-id") == "i-stub"
    assert counts == Counter({"PUT": 2, "GET": 4})
    assert len(sleeps.delays) == 4
    assert all(0 <= delay <= 2.0 for delay in sleeps.delays)


async def test_persistent_server_error_gives_up() -> None:
    app, counts = flaky_app(get_status_always=500)
    sleeps = Sleeps()
    async with served(app) as url, ImdsClient(url, sleep=sleeps, attempts=3) as client:
        with pytest.raises(ImdsUnavailable, match="HTTP 500"):
            await client.metadata("instance-id")
    assert counts["GET"] == 3
    assert len(sleeps.delays) == 2


async def test_other_statuses_are_not_retried() -> None:
    app, _counts = flaky_app(get_status_always=403)
    sleeps = Sleeps()
    async with served(app) as url, ImdsClient(url, sleep=sleeps) as client:
        with pytest.raises(ImdsError, match="HTTP 403") as raised:
            await client.metadata("instance-id")
    assert not isinstance(raised.value, ImdsUnavailable)
    assert sleeps.delays == []


async def test_timeout_is_retried() -> None:
    release = asyncio.Event()
    app, counts = flaky_app(hang_first_get=release)
    sleeps = Sleeps()
    # A real (tiny) timeout: aiohttp's timer cannot take an injected clock.
    async with served(app) as url, ImdsClient(url, sleep=sleeps, timeout=0.2) as client:
        try:
            assert await client.metadata("instance-id") == "i-stub"
        finally:
            release.set()
    assert counts["GET"] == 2
    assert len(sleeps.delays) == 1


async def test_unreachable_endpoint_gives_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: every connection is refused.
    sleeps = Sleeps()
    async with ImdsClient(f"http://127.0.0.1:{port}", sleep=sleeps, attempts=4) as client:
        with pytest.raises(ImdsUnavailable, match="unreachable"):
            await client.identity()
    assert len(sleeps.delays) >= 3


def test_token_pure_rules() -> None:
    assert client_mod.refresh_margin(21_600) == 60.0
    assert client_mod.refresh_margin(60) == 6.0
    token = client_mod.Token("secret-token-value", expires_at=100.0)
    assert "secret-token-value" not in repr(token)
    assert client_mod.token_usable(token, 93.9, 6.0)
    assert not client_mod.token_usable(token, 94.0, 6.0)
    assert not client_mod.token_usable(None, 0.0, 6.0)
    with pytest.raises(ValueError, match="token_ttl"):
        ImdsClient(token_ttl=0)


@pytest.mark.integration
async def test_lifecycle_state_follows_the_layer(
    make_fleet: MakeFleet,
    aws_session: Any,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    victim = lifecycle_layer.instances()[0]
    emulator = emulator_mod.for_instance(lifecycle_layer, victim.instance_id, clock=fake_clock)
    async with served(emulator.app()) as url, ImdsClient(url, clock=fake_clock) as client:
        identity = await client.identity()
        assert identity.instance_id == victim.instance_id
        assert identity.asg_name == fleet.asg_name
        assert await client.target_lifecycle_state() == "InService"
        asg: AutoScalingClient
        async with aws_session.client("autoscaling") as asg:
            await asg.terminate_instance_in_auto_scaling_group(
                InstanceId=victim.instance_id, ShouldDecrementDesiredCapacity=True
            )
        assert await client.target_lifecycle_state() == "Terminated"


@pytest.mark.integration
async def test_asg_name_fallback_when_tags_are_off(
    make_fleet: MakeFleet,
    aws_session: Any,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=1))
    instance = lifecycle_layer.instances()[0]
    emulator = emulator_mod.for_instance(lifecycle_layer, instance.instance_id, clock=fake_clock)
    emulator.identity = dataclasses.replace(emulator.identity, metadata_tags=False)
    async with served(emulator.app()) as url, ImdsClient(url, clock=fake_clock) as client:
        identity = await client.identity()
    assert identity.asg_name is None

    sleeps = Sleeps()
    # One attempt per call: the throttling must be survived by our retry, not botocore's.
    single = aws.client_config(max_attempts=1)
    lifecycle_layer.inject_fault("throttling", "DescribeAutoScalingInstances", count=2)
    name = await client_mod.asg_name_fallback(
        aws_session, identity.region, identity.instance_id, config=single, sleep=sleeps
    )
    assert name == fleet.asg_name
    assert len(sleeps.delays) == 2

    unknown = await client_mod.asg_name_fallback(
        aws_session, identity.region, "i-00000000000000000", config=single, sleep=sleeps
    )
    assert unknown is None
