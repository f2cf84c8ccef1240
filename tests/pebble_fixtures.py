"""pebble (ACME test CA) and pebble-challtestsrv (its DNS) on loopback, bridged to moto's Route53.

Register with ``pytest_plugins = ["tests.pebble_fixtures"]``; needs ``tests.aws_fixtures``.
The processes and the bridge live in bbbsim/pebble.py (the demo uses them too).

* ``challtestsrv`` (session): DNS on a free loopback port (UDP and TCP), management
  API on another, its HTTP-01/TLS-ALPN-01 listeners off.
* ``pebble`` (session): ACME on a free loopback port (bbbsim.pebble.start_pebble).
* ``pebble_dns``: the fleet's hosted zone in moto and the TXT records seam
  for ``bbbcore.acme_dns01``, bridged so pebble really resolves what the code wrote.

The bridge: ``MirroredTxt`` wraps the production ``Route53Txt``. After each upsert
or delete it reads the zone's TXT records back *from moto* and makes challtestsrv
serve exactly those (bbbsim.pebble.ZoneMirror): what INSYNC means on real Route53.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import pytest
import pytest_asyncio

from bbbcore import aws
from bbbcore import route53 as dns
from bbbcore.acme_dns01 import Route53Txt
from bbbsim.moto_server import DEFAULT_REGION, FleetSpec
from bbbsim.pebble import (
    Challtestsrv,
    Pebble,
    ZoneMirror,
    available,
    start_challtestsrv,
    start_pebble,
)

if TYPE_CHECKING:
    from types_aiobotocore_route53.client import Route53Client

__all__ = ["Challtestsrv", "MirroredTxt", "Pebble", "PebbleDns", "ZoneMirror"]


@pytest.fixture(scope="session")
def challtestsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Challtestsrv]:
    if not available():
        pytest.skip("pebble / pebble-challtestsrv not installed")
    server = start_challtestsrv(tmp_path_factory.mktemp("challtestsrv"))
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="session")
def pebble(
    challtestsrv: Challtestsrv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pebble]:
    server = start_pebble(challtestsrv, tmp_path_factory.mktemp("pebble"))
    try:
        yield server
    finally:
        server.process.stop()


# ---------------------------------------------------------------- the DNS bridge


@dataclass
class MirroredTxt:
    """``acme_dns01.TxtRecords`` that writes Route53, then mirrors the zone to challtestsrv."""

    inner: Route53Txt
    mirror: ZoneMirror
    upserts: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    async def upsert(self, name: str, values: Sequence[str]) -> None:
        self.upserts.append(name)
        await self.inner.upsert(name, values)
        await self.mirror.sync()

    async def delete(self, name: str, values: Sequence[str]) -> None:
        self.deletes.append(name)
        await self.inner.delete(name, values)
        await self.mirror.sync()


@dataclass
class PebbleDns:
    """The fleet's hosted zone in moto, seen by pebble through challtestsrv."""

    zone_id: str
    domain: str
    route53: Route53Client
    records: dns.Route53Records
    route53_txt: Route53Txt
    """The production adapter alone: writes moto, pebble sees nothing."""
    txt: MirroredTxt
    """The production adapter bridged to challtestsrv: what pebble validates against."""
    mirror: ZoneMirror

    def fqdn(self, instance_id: str = "i-0123456789abcdef0") -> str:
        return f"{instance_id}.{self.domain}"

    async def txt_records(self) -> dict[str, tuple[str, ...]]:
        return await self.mirror.zone_txt()


@pytest_asyncio.fixture
async def pebble_dns(
    pebble: Pebble, challtestsrv: Challtestsrv, aws_endpoint: str
) -> AsyncIterator[PebbleDns]:
    session = aws.session(DEFAULT_REGION)
    route53: Route53Client
    async with session.client("route53", config=aws.client_config()) as route53:
        # Only the hosted zone matters here; the whole fleet (make_fleet) costs a second.
        zone = await route53.create_hosted_zone(
            Name=FleetSpec().domain, CallerReference=str(uuid.uuid4())
        )
        zone_id = dns.normalise_zone_id(zone["HostedZone"]["Id"])
        # moto answers INSYNC at once; the poll interval only matters if it did not.
        records = dns.Route53Records(route53, poll_interval=0.05, give_up_after=10.0)
        adapter = Route53Txt(records, zone_id, insync_timeout=10.0)
        mirror = ZoneMirror(route53, zone_id, challtestsrv)
        try:
            yield PebbleDns(
                zone_id=zone_id,
                domain=FleetSpec().domain,
                route53=route53,
                records=records,
                route53_txt=adapter,
                txt=MirroredTxt(adapter, mirror),
                mirror=mirror,
            )
        finally:
            with contextlib.suppress(aiohttp.ClientError, RuntimeError):
                await mirror.clear()
