"""AWS on loopback for tests: moto_server, the lifecycle layer, credentials, a fleet.

Use with ``pytest_plugins = ["tests.aws_fixtures"]`` in the root conftest.

* ``moto_server`` (session): one moto_server thread on 127.0.0.1.
* ``moto_endpoint``: moto reset for this test; its URL.
* ``fake_clock``: the clock the layer reads; ``advance()`` moves it.
* ``layer_server`` / ``lifecycle_layer`` / ``aws_endpoint``: the lifecycle layer in
  front of moto, served on a loopback port, with ``fake_clock`` injected.
* ``aws_env``: fake credentials, region, ``AWS_ENDPOINT_URL`` at the layer, IMDS
  lookups off and no shared config files, so a client that is not told where to go
  still only reaches loopback.
* ``aws_session``: an ``aioboto3.Session`` with the fake credentials and region.
* ``make_fleet``: creates the fleet fixture through the layer.
* ``asg`` / ``ec2``: clients on ``aws_endpoint`` that try each call once (``NO_RETRY``),
  so a test sees the layer's own answer.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aioboto3
import pytest
import pytest_asyncio
from aiobotocore.config import AioConfig

from bbbsim.lifecycle_layer import LifecycleLayer, serve
from bbbsim.moto_server import (
    DEFAULT_REGION,
    TEST_ACCESS_KEY_ID,
    TEST_SECRET_ACCESS_KEY,
    FleetIds,
    FleetSpec,
    MotoServer,
    create_fleet,
)

# 2026-01-01T00:00:00Z: a fixed start keeps deadlines in test output readable.
CLOCK_START = 1_767_225_600.0

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

NO_RETRY = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"})
"""One attempt a call: a test sees the layer's (or moto's) own answer, not a retry's."""


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = CLOCK_START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass(frozen=True, slots=True)
class LayerServer:
    """The running lifecycle layer and where to reach it."""

    layer: LifecycleLayer
    endpoint: str
    port: int


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_endpoint(moto_server: MotoServer) -> str:
    moto_server.reset()
    return moto_server.endpoint


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def layer_server(moto_endpoint: str, fake_clock: FakeClock) -> AsyncIterator[LayerServer]:
    layer = LifecycleLayer(moto_endpoint, clock=fake_clock, rng=random.Random(7))
    runner, port = await serve(layer)
    try:
        yield LayerServer(layer, f"http://127.0.0.1:{port}", port)
    finally:
        await runner.cleanup()


@pytest.fixture
def lifecycle_layer(layer_server: LayerServer) -> LifecycleLayer:
    return layer_server.layer


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    empty = tmp_path_factory.mktemp("aws-config") / "none"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", DEFAULT_REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    # Never let botocore reach for the real metadata address.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws_endpoint(layer_server: LayerServer, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", layer_server.endpoint)
    return layer_server.endpoint


@pytest.fixture
def aws_session(aws_env: None) -> Any:
    """An ``aioboto3.Session`` (untyped package: annotate clients at the use site)."""
    return aioboto3.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
        region_name=DEFAULT_REGION,
    )


@pytest.fixture
def make_fleet(aws_endpoint: str) -> Callable[[FleetSpec | None], Awaitable[FleetIds]]:
    async def make(spec: FleetSpec | None = None) -> FleetIds:
        return await create_fleet(aws_endpoint, spec)

    return make


@pytest_asyncio.fixture
async def asg(aws_session: Any, aws_endpoint: str) -> AsyncIterator[AutoScalingClient]:
    async with aws_session.client("autoscaling", config=NO_RETRY) as client:
        yield client


@pytest_asyncio.fixture
async def ec2(aws_session: Any, aws_endpoint: str) -> AsyncIterator[EC2Client]:
    async with aws_session.client("ec2", config=NO_RETRY) as client:
        yield client
