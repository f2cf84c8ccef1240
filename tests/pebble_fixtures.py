"""pebble (ACME test CA) and pebble-challtestsrv (its DNS) on loopback, bridged to moto's Route53.

Register with ``pytest_plugins = ["tests.pebble_fixtures"]``; needs ``tests.aws_fixtures``.

* ``challtestsrv`` (session): DNS on a free loopback port (UDP and TCP), management
  API on another, its HTTP-01/TLS-ALPN-01 listeners off.
* ``pebble`` (session): ACME on a free loopback port with a certificate from a test
  CA generated here (the Debian package ships no test certificate), ``-dnsserver``
  pointed at challtestsrv, ``PEBBLE_VA_NOSLEEP=1``; its root CA fetched from
  ``/roots/0`` so tests can verify issued chains.
* ``pebble_dns``: the fleet's hosted zone in moto and the TXT records seam
  for ``bbbnode.tls``, bridged so pebble really resolves what the code wrote.

The bridge: ``MirroredTxt`` wraps the production ``Route53Txt``. After each upsert
or delete it reads the zone's TXT records back *from moto* and makes challtestsrv
serve exactly those. Mirroring at the moment ``upsert`` returns is what INSYNC
means on real Route53 (every authoritative server answers with the change), and
reading moto rather than the arguments keeps the check honest: a record written
under the wrong name or with the wrong value is what pebble sees. A background
poller was the other option, but pebble with ``PEBBLE_VA_NOSLEEP`` validates the
moment the challenge is answered, so a poller would race it.

Other pebble settings, for deterministic tests: ``PEBBLE_AUTHZREUSE=0`` (fresh
authorizations for nearly every order, so nearly every issuance writes a TXT
record; the reuse branch is covered by pure tests) and 90-day certificates (Let's
Encrypt's lifetime, so the 30-day renewal window means what it does in
production). Nonce rejection stays at pebble's default 5 %: acme retries a bad
nonce and so does bbbnode, and the tests should see that work.

"Nearly": pebble (v2.4.0, the version Debian ships, and still v2.9.0) makes a new
authorization only when ``rand.Intn(100) > authzReusePercent`` (``wfe/wfe.go``,
``makeAuthorizations``, line 1505 at v2.4.0), so with ``PEBBLE_AUTHZREUSE=0`` a
draw of 0 still hands a new order the account's valid authorization for the
name: one order in a hundred. A test whose second order of one account must
answer a challenge again calls ``deactivate_valid_authorizations`` between the
orders: a deactivated authorization is never reused (``db/memorystore.go``,
``FindValidAuthorization``, wants status ``valid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import aiohttp
import pytest
import pytest_asyncio
from acme import client as acme_client
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from bbbcore import aws
from bbbnode import dns, tls
from bbbnode.tls import Route53Txt
from bbbsim.moto_server import DEFAULT_REGION, FleetSpec
from bbbsim.node_process import free_port

if TYPE_CHECKING:
    from types_aiobotocore_route53.client import Route53Client

T = TypeVar("T")

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
READY_WITHIN = 30.0
CERT_LIFETIME = dt.timedelta(days=90)


def pebble_available() -> bool:
    return os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)


# ----------------------------------------------------------------------- processes


def free_dns_port() -> int:
    """A loopback port free for both UDP and TCP a moment ago (challtestsrv binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no loopback port free for both UDP and TCP")


@dataclass
class Process:
    """A child process with its combined output in a log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.proc.args!r} exited {self.proc.returncode}:\n{self.output()[-4000:]}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> Process:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
    return Process(proc, log_path)


def wait_until(process: Process, check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds; the process dying or the deadline passing fails."""
    deadline = time.monotonic() + READY_WITHIN
    last: BaseException | None = None
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError) as exc:
            last = exc
        time.sleep(0.05)
    process.stop()
    raise TimeoutError(f"{what} not ready in {READY_WITHIN:g} s ({last!r}):\n{process.output()}")


# ------------------------------------------------------------------------ test CA


@dataclass(frozen=True, slots=True)
class ServerCert:
    """pebble's HTTPS certificate and the CA that signed it."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_server_cert(directory: Path) -> ServerCert:
    """A throwaway CA and a certificate for 127.0.0.1 and localhost, signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bbbfleet test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = ServerCert(directory / "test-ca.pem", directory / "cert.pem", directory / "key.pem")
    paths.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths.key_path.write_bytes(_pem_key(key))
    paths.key_path.chmod(0o600)
    return paths


# ------------------------------------------------------------------ challtestsrv


@dataclass
class Challtestsrv:
    """pebble-challtestsrv: the DNS server pebble asks, driven over its management API."""

    process: Process
    dns_port: int
    management_port: int

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def dns_address(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    async def _post(self, path: str, body: dict[str, str]) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.management_url}{path}", data=json.dumps(body)) as resp,
        ):
            if resp.status != 200:
                raise RuntimeError(f"challtestsrv {path}: HTTP {resp.status} {await resp.text()}")

    async def set_txt(self, host: str, value: str) -> None:
        """Add ``value`` to the TXT answers for ``host`` (challtestsrv keeps a list)."""
        await self._post("/set-txt", {"host": _fqdn(host), "value": value})

    async def clear_txt(self, host: str) -> None:
        """Drop every TXT answer for ``host``."""
        await self._post("/clear-txt", {"host": _fqdn(host)})


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


@pytest.fixture(scope="session")
def challtestsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Challtestsrv]:
    if not pebble_available():
        pytest.skip("pebble / pebble-challtestsrv not installed")
    directory = tmp_path_factory.mktemp("challtestsrv")
    dns_port, management_port = free_dns_port(), free_port()
    process = start(
        [
            CHALLTESTSRV,
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-management",
            f"127.0.0.1:{management_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            # Answer A/AAAA queries with nothing rather than with loopback.
            "-defaultIPv4",
            "",
            "-defaultIPv6",
            "",
        ],
        directory / "challtestsrv.log",
    )
    server = Challtestsrv(process, dns_port, management_port)

    def ready() -> bool:
        for port in (dns_port, management_port):
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        return True

    try:
        wait_until(process, ready, "pebble-challtestsrv")
        yield server
    finally:
        process.stop()


# ------------------------------------------------------------------------- pebble


@dataclass
class Pebble:
    """A running pebble and what a client needs to use it."""

    process: Process
    port: int
    management_port: int
    server_cert: ServerCert
    root_pem: bytes
    root_path: Path
    cert_lifetime: dt.timedelta = CERT_LIFETIME

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def ca_bundle(self) -> Path:
        """The CA that signed pebble's own HTTPS certificate (settings.tls.ca_bundle)."""
        return self.server_cert.ca_path

    @property
    def root(self) -> x509.Certificate:
        """The root that issued certificates chain to (regenerated per pebble run)."""
        return x509.load_pem_x509_certificate(self.root_pem)


@pytest.fixture(scope="session")
def pebble(
    challtestsrv: Challtestsrv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pebble]:
    directory = tmp_path_factory.mktemp("pebble")
    server_cert = make_server_cert(directory)
    port, management_port = free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(server_cert.cert_path),
            "privateKey": str(server_cert.key_path),
            # Ports pebble would validate HTTP-01/TLS-ALPN-01 on; DNS-01 tests never use them.
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": int(CERT_LIFETIME.total_seconds()),
        }
    }
    config_path = directory / "pebble-config.json"
    config_path.write_text(json.dumps(config))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_AUTHZREUSE": "0",
    }
    process = start(
        [PEBBLE, "-config", str(config_path), "-dnsserver", challtestsrv.dns_address],
        directory / "pebble.log",
        env=env,
    )
    context = ssl.create_default_context(cafile=str(server_cert.ca_path))

    def fetch(url: str) -> bytes:
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:  # noqa: S310
            body: bytes = resp.read()
            return body

    def ready() -> bool:
        return b"newOrder" in fetch(f"https://127.0.0.1:{port}/dir")

    try:
        wait_until(process, ready, "pebble")
        root_pem = fetch(f"https://127.0.0.1:{management_port}/roots/0")
        root_path = directory / "pebble-root.pem"
        root_path.write_bytes(root_pem)
        yield Pebble(process, port, management_port, server_cert, root_pem, root_path)
    finally:
        process.stop()


async def deactivate_valid_authorizations(pebble: Pebble, account_key_pem: bytes) -> list[str]:
    """Deactivate every valid authorization of the key's account (RFC 8555 7.5.2).

    The account's orders (pebble lists them at the account's ``orders`` URL), their
    authorizations, and each one still valid deactivated. Returns their URLs. Every
    call goes through bbbnode's own retry of transient ACME errors (pebble rejects
    5 % of nonces, acme retries a bad nonce only once).
    """
    key = serialization.load_pem_private_key(account_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    net = acme_client.ClientNetwork(
        JWKEC(key=key),
        alg=ES256,
        verify_ssl=str(pebble.ca_bundle),  # type: ignore[arg-type]
    )
    timing = tls.AcmeTiming(retry_attempts=5, retry_max_wait=0.2)

    async def call(what: str, fn: Callable[[], T]) -> T:
        return await tls.acme_call(what, fn, timing, asyncio.sleep)

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
class ZoneMirror:
    """Makes challtestsrv serve the TXT records one Route53 (moto) zone holds."""

    route53: Route53Client
    zone_id: str
    server: Challtestsrv
    served: dict[str, tuple[str, ...]] = field(default_factory=dict)

    async def zone_txt(self) -> dict[str, tuple[str, ...]]:
        """The zone's TXT records as Route53 has them: name -> texts."""
        found: dict[str, tuple[str, ...]] = {}
        pages = self.route53.get_paginator("list_resource_record_sets")
        async for page in pages.paginate(HostedZoneId=self.zone_id):
            for raw in page["ResourceRecordSets"]:
                if raw["Type"] == "TXT":
                    found[dns.normalise_name(raw["Name"])] = tuple(
                        sorted(dns.txt_text(r["Value"]) for r in raw.get("ResourceRecords", []))
                    )
        return found

    async def sync(self) -> None:
        """Bring challtestsrv in line with the zone (clear, then set, for changed names)."""
        wanted = await self.zone_txt()
        for name in sorted(set(self.served) | set(wanted)):
            if self.served.get(name) == wanted.get(name):
                continue
            await self.server.clear_txt(name)
            for value in wanted.get(name, ()):
                await self.server.set_txt(name, value)
        self.served = wanted

    async def clear(self) -> None:
        for name in self.served:
            await self.server.clear_txt(name)
        self.served = {}


@dataclass
class MirroredTxt:
    """``bbbnode.tls.TxtRecords`` that writes Route53 and then mirrors the zone to challtestsrv."""

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
