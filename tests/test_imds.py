"""The IMDSv2 emulator: token flow, metadata paths, lifecycle state from the layer, botocore."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import pytest_asyncio
from aiobotocore.session import get_session

from bbbsim import imds
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import FleetIds, FleetSpec
from tests.aws_fixtures import FakeClock

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]

IDENTITY = imds.InstanceIdentity(
    instance_id="i-0123456789abcdef0",
    region="eu-central-1",
    availability_zone="eu-central-1b",
    local_ipv4="10.20.1.17",
    public_ipv4="203.0.113.17",
    group="bbb-fleet",
    tags={"Name": "bbb-host"},
)


@contextlib.asynccontextmanager
async def running(emulator: imds.ImdsEmulator) -> AsyncIterator[str]:
    runner, port = await imds.serve(emulator)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def static_imds(fake_clock: FakeClock) -> AsyncIterator[str]:
    state = {"value": "InService"}
    emulator = imds.ImdsEmulator(IDENTITY, target_state=lambda: state["value"], clock=fake_clock)
    async with running(emulator) as url:
        yield url


async def token(http: aiohttp.ClientSession, url: str, ttl: str = "60") -> str:
    async with http.put(f"{url}/latest/api/token", headers={imds.TTL_HEADER: ttl}) as response:
        assert response.status == 200
        return await response.text()


async def get(
    http: aiohttp.ClientSession, url: str, path: str, session_token: str | None
) -> tuple[int, str]:
    headers = {imds.TOKEN_HEADER: session_token} if session_token is not None else {}
    async with http.get(f"{url}/latest/{path}", headers=headers) as response:
        return response.status, await response.text()


async def test_token_is_required_and_expires(
    http: aiohttp.ClientSession, static_imds: str, fake_clock: FakeClock
) -> None:
    for headers in ({}, {imds.TTL_HEADER: "0"}, {imds.TTL_HEADER: "21601"}, {imds.TTL_HEADER: "x"}):
        async with http.put(f"{static_imds}/latest/api/token", headers=headers) as response:
            assert response.status == 400
    async with http.put(
        f"{static_imds}/latest/api/token",
        headers={imds.TTL_HEADER: "60", "X-Forwarded-For": "198.51.100.1"},
    ) as response:
        assert response.status == 403
    async with http.get(f"{static_imds}/latest/api/token") as response:
        assert response.status == 405

    assert await get(http, static_imds, "meta-data/instance-id", None) == (401, "Unauthorized")
    assert (await get(http, static_imds, "meta-data/instance-id", "forged"))[0] == 401

    session_token = await token(http, static_imds, "60")
    assert await get(http, static_imds, "meta-data/instance-id", session_token) == (
        200,
        IDENTITY.instance_id,
    )
    fake_clock.advance(59)
    assert (await get(http, static_imds, "meta-data/instance-id", session_token))[0] == 200
    fake_clock.advance(1)
    assert (await get(http, static_imds, "meta-data/instance-id", session_token))[0] == 401


async def test_metadata_paths(http: aiohttp.ClientSession, static_imds: str) -> None:
    session_token = await token(http, static_imds)
    expected = {
        "meta-data/local-ipv4": "10.20.1.17",
        "meta-data/public-ipv4": "203.0.113.17",
        "meta-data/placement/region": "eu-central-1",
        "meta-data/placement/availability-zone": "eu-central-1b",
        # botocore asks with a trailing slash.
        "meta-data/placement/availability-zone/": "eu-central-1b",
        "meta-data/tags/instance/aws:autoscaling:groupName": "bbb-fleet",
        "meta-data/tags/instance/Name": "bbb-host",
        "meta-data/autoscaling/target-lifecycle-state": "InService",
        "meta-data/iam/security-credentials/": "bbbnode",
    }
    for path, value in expected.items():
        assert await get(http, static_imds, path, session_token) == (200, value), path

    status, listing = await get(http, static_imds, "meta-data/", session_token)
    assert status == 200
    assert {"instance-id", "placement/", "tags/", "autoscaling/", "iam/"} <= set(listing.split())
    status, listing = await get(http, static_imds, "meta-data/tags/instance", session_token)
    assert set(listing.split()) == {"Name", "aws:autoscaling:groupName"}

    for unknown in ("meta-data/nope", "meta-data/placement/nope", "user-data"):
        assert (await get(http, static_imds, unknown, session_token))[0] == 404, unknown


async def test_tags_off_and_no_role(http: aiohttp.ClientSession, fake_clock: FakeClock) -> None:
    bare = imds.InstanceIdentity(
        instance_id="i-1",
        region="eu-central-1",
        availability_zone="eu-central-1a",
        local_ipv4="10.0.0.1",
        group="g",
        role_name=None,
        metadata_tags=False,
    )
    async with running(imds.ImdsEmulator(bare, clock=fake_clock)) as url:
        session_token = await token(http, url)
        for path in (
            "meta-data/tags/instance/aws:autoscaling:groupName",
            "meta-data/iam/security-credentials/",
            "meta-data/public-ipv4",
            "meta-data/autoscaling/target-lifecycle-state",
        ):
            assert (await get(http, url, path, session_token))[0] == 404, path


@pytest.mark.integration
async def test_target_lifecycle_state_follows_the_layer(
    http: aiohttp.ClientSession,
    make_fleet: MakeFleet,
    aws_session: Any,
    lifecycle_layer: LifecycleLayer,
    fake_clock: FakeClock,
) -> None:
    fleet = await make_fleet(FleetSpec(desired=2))
    victim = lifecycle_layer.instances()[0]
    emulator = imds.for_instance(lifecycle_layer, victim.instance_id, clock=fake_clock)
    assert emulator.identity.local_ipv4 == victim.private_ip
    async with running(emulator) as url:
        session_token = await token(http, url)
        state_path = "meta-data/autoscaling/target-lifecycle-state"
        assert await get(http, url, state_path, session_token) == (200, "InService")
        assert await get(
            http, url, "meta-data/tags/instance/aws:autoscaling:groupName", session_token
        ) == (200, fleet.asg_name)

        client: AutoScalingClient
        async with aws_session.client("autoscaling") as client:
            await client.terminate_instance_in_auto_scaling_group(
                InstanceId=victim.instance_id, ShouldDecrementDesiredCapacity=True
            )
            assert await get(http, url, state_path, session_token) == (200, "Terminated")
            await client.complete_lifecycle_action(
                AutoScalingGroupName=fleet.asg_name,
                LifecycleHookName="bbbnode-drain",
                InstanceId=victim.instance_id,
                LifecycleActionResult="CONTINUE",
            )
        assert await get(http, url, state_path, session_token) == (200, "Terminated")


@pytest.mark.integration
async def test_botocore_takes_credentials_from_the_emulator(
    aws_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real time here: botocore judges the credentials' expiry by the wall clock.
    emulator = imds.ImdsEmulator(IDENTITY)
    async with running(emulator) as url:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        monkeypatch.setenv("AWS_EC2_METADATA_V1_DISABLED", "true")
        session = get_session()
        credentials = await session.get_credentials()
        assert credentials is not None
        assert credentials.method == "iam-role"
        frozen = await credentials.get_frozen_credentials()
        assert frozen.access_key == imds.FakeCredentials().access_key_id
        assert frozen.token == imds.FakeCredentials().token
        # moto takes them: the chain works end to end on loopback only.
        async with session.create_client("autoscaling") as client:
            answer = await client.describe_auto_scaling_groups()
        assert answer["AutoScalingGroups"] == []


def test_lookup_lists_directories() -> None:
    leaves = {"meta-data/a": "1", "meta-data/b/c": "2", "dynamic/x": "3"}
    assert imds.lookup(leaves, "") == "dynamic/\nmeta-data/"
    assert imds.lookup(leaves, "meta-data") == "a\nb/"
    assert imds.lookup(leaves, "/meta-data/b/c/") == "2"
    assert imds.lookup(leaves, "meta-data/z") is None
