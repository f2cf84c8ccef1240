"""The emulated fleet as the end-to-end tests share it (a fixture plugin, see conftest).

AWS is moto_server behind the lifecycle layer; every instance the ASG launches
gets an emulated BBB host and a real bbbnode (bbbsim.fleet), reached through one
loopback router keyed by instance id; Scalelite is the emulator with its poller
running. ``world`` builds it from the ``spec`` fixture (a test overrides it with
``@pytest.mark.parametrize("spec", [...])``); ``scaler`` runs a real bbbscaler.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bbbsim.fleet import EmulatedFleet, FleetConfig
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import FleetIds, FleetSpec
from bbbsim.router import Router
from bbbsim.scalelite_emulator import ScaleliteEmulator
from bbbsim.scalelite_emulator import serve as serve_scalelite
from tests.processes import wait_for

BBB_SECRET = "scaler-e2e-bbb-secret-0123456789"
LB_SECRET = "scaler-e2e-scalelite-secret-0123456789"


@dataclass
class World:
    ids: FleetIds
    fleet: EmulatedFleet
    scalelite: ScaleliteEmulator
    tmp: Path
    autoscaling: Any
    ec2: Any

    def scaler_env(self, **extra: str) -> dict[str, str]:
        settings = {
            "BBBSCALER_LOOP__INTERVAL": "0.5",
            "BBBSCALER_POLICY__SCALE_IN_AFTER": "3",
            "BBBSCALER_POLICY__COOLDOWN": "2",
            "BBBSCALER_POLICY__BOOT_GRACE": "120",
        }
        return self.fleet.scaler_env(**(settings | extra))

    async def group(self) -> dict[str, Any]:
        answer = await self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.ids.asg_name]
        )
        group: dict[str, Any] = answer["AutoScalingGroups"][0]
        return group

    def enabled(self) -> set[str]:
        return {s.url for s in self.scalelite.servers() if s.state == "enabled" and s.online}


@pytest.fixture
def spec() -> FleetSpec:
    """The group the world starts from (a test overrides it with its own fixture)."""
    return FleetSpec(min_size=1, desired=1, max_size=3)


@pytest.fixture
async def world(
    make_fleet: Callable[[FleetSpec | None], Awaitable[FleetIds]],
    lifecycle_layer: LifecycleLayer,
    aws_endpoint: str,
    aws_session: Any,
    tmp_path: Path,
    spec: FleetSpec,
) -> AsyncIterator[World]:
    ids = await make_fleet(spec)
    scalelite = ScaleliteEmulator(LB_SECRET)
    sl_runner, sl_port = await serve_scalelite(scalelite)
    scalelite.start_polling(0.5)
    router = Router()
    await router.start()
    sl_url = f"http://127.0.0.1:{sl_port}"
    config = FleetConfig(ids, aws_endpoint, sl_url, LB_SECRET, BBB_SECRET, tmp_path / "fleet")
    fleet = EmulatedFleet(lifecycle_layer, config, router)
    ticker = asyncio.create_task(lifecycle_layer.run_ticker(0.5))
    await fleet.start()
    try:
        async with (
            aws_session.client("autoscaling") as autoscaling,
            aws_session.client("ec2") as ec2,
        ):
            yield World(ids, fleet, scalelite, tmp_path, autoscaling, ec2)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await fleet.close()
        await scalelite.stop_polling()
        await scalelite.close()
        await sl_runner.cleanup()
        await router.close()


@contextlib.asynccontextmanager
async def scaler(env: dict[str, str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bbbscaler.cli", "run",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return "(no log yet)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def until(
    check: Callable[[], Awaitable[bool] | bool], what: str, logs: Path, within: float = 90
) -> None:
    async def probe() -> bool:
        result = check()
        return bool(await result) if asyncio.iscoroutine(result) else bool(result)

    try:
        await wait_for(probe, within=within, what=what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- log ---\n{tail(logs)}") from None
