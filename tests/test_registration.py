"""Scalelite registration helpers against the Scalelite emulator (and a BBB emulator it polls)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from tenacity import wait_none

from bbbcore.scalelite import RetryPolicy, ScaleliteClient, ScaleliteTransientError
from bbbnode import registration
from bbbsim import bbb_emulator
from bbbsim.scalelite_emulator import ScaleliteEmulator, serve

LB_SECRET = "lb-secret"
BBB_SECRET = "bbb-secret"

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    scalelite: ScaleliteEmulator
    client: ScaleliteClient
    bbb: bbb_emulator.EmulatedBbb
    url: str


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    bbb = bbb_emulator.EmulatedBbb(BBB_SECRET)
    bbb_runner, bbb_port = await bbb_emulator.serve(bbb)
    emulator = ScaleliteEmulator(LB_SECRET)
    runner, port = await serve(emulator)
    try:
        async with aiohttp.ClientSession() as http:
            client = ScaleliteClient(
                http,
                f"http://127.0.0.1:{port}/",
                LB_SECRET,
                timeout=2,
                retry=RetryPolicy(attempts=2),
                wait=wait_none(),
            )
            url = f"http://127.0.0.1:{bbb_port}/bigbluebutton/api/"
            yield Rig(emulator, client, bbb, url)
    finally:
        await emulator.close()
        await runner.cleanup()
        await bbb_runner.cleanup()


async def test_register_adds_and_enables_once(rig: Rig) -> None:
    server = await registration.register(rig.client, rig.url, BBB_SECRET, 1.5, "eu", draining=False)
    assert server is not None
    assert server.state == "enabled"
    again = await registration.register(rig.client, rig.url, BBB_SECRET, 1.5, "eu", draining=False)
    assert again is not None
    assert again.id == server.id
    [only] = rig.scalelite.servers()
    assert (only.state, only.load_multiplier, only.tag) == ("enabled", 1.5, "eu")


async def test_register_finds_the_url_however_it_is_spelt(rig: Rig) -> None:
    existing = rig.scalelite.add_server("HTTP" + rig.url.removeprefix("http").rstrip("/"), "x")
    server = await registration.register(rig.client, rig.url, BBB_SECRET, draining=False)
    assert server is not None
    assert server.id == existing
    assert len(rig.scalelite.servers()) == 1


async def test_register_fixes_fields_and_enables_a_disabled_server(rig: Rig) -> None:
    server_id = rig.scalelite.add_server(rig.url, "old-secret", load_multiplier=3, tag="old")
    server = await registration.register(rig.client, rig.url, BBB_SECRET, 1.0, None, draining=False)
    assert server is not None
    view = rig.scalelite.server(server_id)
    assert (view.state, view.load_multiplier, view.tag) == ("enabled", 1.0, None)


@pytest.mark.parametrize("state", ["cordoned", "disabled"])
async def test_register_while_draining_never_enables(rig: Rig, state: str) -> None:
    server_id = rig.scalelite.add_server(rig.url, BBB_SECRET, state=state)  # type: ignore[arg-type]
    server = await registration.register(rig.client, rig.url, BBB_SECRET, draining=True)
    assert server is not None
    assert server.state == state
    assert rig.scalelite.server(server_id).state == state


async def test_register_while_draining_does_not_add_back(rig: Rig) -> None:
    assert await registration.register(rig.client, rig.url, BBB_SECRET, draining=True) is None
    assert rig.scalelite.servers() == ()


async def test_cordon_enable_and_presence(rig: Rig) -> None:
    assert await registration.presence(rig.client, rig.url) == "absent"
    assert await registration.cordon(rig.client, rig.url) is None
    assert await registration.enable(rig.client, rig.url) is None
    server_id = rig.scalelite.add_server(rig.url, BBB_SECRET, state="enabled")
    cordoned = await registration.cordon(rig.client, rig.url)
    assert cordoned is not None
    assert cordoned.state == "cordoned"
    assert await registration.presence(rig.client, rig.url) == "cordoned"
    enabled = await registration.enable(rig.client, rig.url)
    assert enabled is not None
    assert rig.scalelite.server(server_id).state == "enabled"


async def test_cordon_leaves_a_disabled_server_disabled(rig: Rig) -> None:
    server_id = rig.scalelite.add_server(rig.url, BBB_SECRET, state="enabled")
    await registration.cordon(rig.client, rig.url)
    # Scalelite's poller disables a cordoned server with no load by itself.
    await rig.scalelite.poll()
    assert rig.scalelite.server(server_id).state == "disabled"
    assert await registration.presence(rig.client, rig.url) == "disabled"
    server = await registration.cordon(rig.client, rig.url)
    assert server is not None
    assert server.state == "disabled"
    again = await registration.register(rig.client, rig.url, BBB_SECRET, draining=True)
    assert again is not None
    assert again.state == "disabled"


async def test_cordoned_server_with_meetings_stays_cordoned(rig: Rig) -> None:
    server_id = rig.scalelite.add_server(rig.url, BBB_SECRET, state="enabled")
    rig.bbb.add_meeting("talk", 4)
    await rig.scalelite.poll()
    await registration.cordon(rig.client, rig.url)
    await rig.scalelite.poll()
    assert rig.scalelite.server(server_id).state == "cordoned"
    assert rig.bbb.meeting("talk") is not None


async def test_deregister_removes_every_duplicate_and_absent_is_success(rig: Rig) -> None:
    rig.scalelite.add_server(rig.url, BBB_SECRET)
    rig.scalelite.add_server(rig.url.rstrip("/"), BBB_SECRET)
    other = rig.scalelite.add_server("https://other.example.org/bigbluebutton/api/", "y")
    assert await registration.deregister(rig.client, rig.url) is True
    assert [s.id for s in rig.scalelite.servers()] == [other]
    assert await registration.deregister(rig.client, rig.url) is False


async def test_outage_is_an_error_not_absent(rig: Rig) -> None:
    rig.scalelite.add_server(rig.url, BBB_SECRET, state="enabled")
    rig.scalelite.inject_outage("http_503")
    with pytest.raises(ScaleliteTransientError):
        await registration.presence(rig.client, rig.url)
    with pytest.raises(ScaleliteTransientError):
        await registration.deregister(rig.client, rig.url)
    rig.scalelite.clear_faults()
    assert await registration.presence(rig.client, rig.url) == "enabled"


def test_no_module_of_the_drain_ever_panics_a_server() -> None:
    root = Path(__file__).resolve().parent.parent / "bbbnode"
    for name in ("registration.py", "drain.py", "protector.py"):
        code = [
            line
            for line in (root / name).read_text().splitlines()
            if not line.lstrip().startswith("#")
        ]
        text = "\n".join(code)
        # The only mention allowed is the docstring saying it is never used.
        assert "panicServer(" not in text
        assert "panic_server" not in text
        assert "servers:panic" not in text
