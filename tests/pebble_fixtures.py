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

"Nearly every order gets fresh authorizations": pebble (v2.4.0, the version Debian
ships, and still v2.9.0) makes a new authorization only when ``rand.Intn(100) >
authzReusePercent`` (``wfe/wfe.go``, ``makeAuthorizations``, line 1505 at v2.4.0), so
with ``PEBBLE_AUTHZREUSE=0`` a draw of 0 still hands a new order the account's valid
authorization for the name: one order in a hundred. A test whose second order of one
account must answer a challenge again calls ``deactivate_valid_authorizations``
between the orders: a deactivated authorization is never reused
(``db/memorystore.go``, ``FindValidAuthorization``, wants status ``valid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, TypeVar, cast

import aiohttp
import pytest
import pytest_asyncio
from acme import client as acme_client
from acme import messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from bbbcore import acme_dns01 as acme
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

T = TypeVar("T")


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


async def deactivate_valid_authorizations(pebble: Pebble, account_key_pem: bytes) -> list[str]:
    """Deactivate every valid authorization of the key's account (RFC 8555 7.5.2).

    The account's orders (pebble lists them at the account's ``orders`` URL), their
    authorizations, and each one still valid deactivated. Returns their URLs. Every
    call goes through bbbfleet's own retry of transient ACME errors (pebble rejects
    5 % of nonces, acme retries a bad nonce only once).
    """
    key = serialization.load_pem_private_key(account_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    net = acme_client.ClientNetwork(
        JWKEC(key=key),
        alg=ES256,
        verify_ssl=str(pebble.ca_bundle),  # type: ignore[arg-type]
    )
    timing = acme.AcmeTiming(retry_attempts=5, retry_max_wait=0.2)

    async def call(what: str, fn: Callable[[], T]) -> T:
        return await acme.acme_call(what, fn, timing, asyncio.sleep)

    directory = await call(
        "directory", lambda: acme_client.ClientV2.get_directory(pebble.directory_url, net)
    )
    client = acme_client.ClientV2(directory, net)
    nonce_url = directory["newNonce"]

    def find_account() -> str:
        # Signed with the key itself (no account yet): onlyReturnExisting answers the account.
        net.account = None
        found = net.post(
            directory["newAccount"],
            messages.Registration(only_return_existing=True),
            new_nonce_url=nonce_url,
        )
        net.account = messages.RegistrationResource(
            uri=found.headers["Location"], body=messages.Registration()
        )
        return str(found.json()["orders"])

    def read(url: str) -> dict[str, object]:
        answer: dict[str, object] = net.post(url, None, new_nonce_url=nonce_url).json()
        return answer

    orders_url = await call("find_account", find_account)
    listing = await call("list_orders", lambda: read(orders_url))
    deactivated: list[str] = []
    for order_url in cast(list[str], listing.get("orders", [])):
        order = await call("read_order", partial(read, order_url))
        for authz_url in cast(list[str], order.get("authorizations", [])):
            authz = await call("read_authorization", partial(read, authz_url))
            if authz.get("status") != "valid":
                continue
            resource = messages.AuthorizationResource(
                uri=authz_url, body=messages.Authorization.from_json(authz)
            )
            await call("deactivate", partial(client.deactivate_authorization, resource))
            deactivated.append(authz_url)
    return deactivated


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
