"""pebble (the ACME test CA, Debian package) and pebble-challtestsrv (its DNS) on loopback.

For the tests (tests/pebble_fixtures.py) and the demo: processes on free
loopback ports, pebble's HTTPS certificate from a test CA made here (the
Debian package ships none), ``-dnsserver`` pointed at challtestsrv,
``PEBBLE_VA_NOSLEEP=1``, and its root CA fetched from ``/roots/0`` so issued
chains can be verified.

Settings, for determinism: ``PEBBLE_AUTHZREUSE=0`` (fresh authorizations for
nearly every order, so nearly every issuance writes a TXT record) and 90-day
certificates (Let's Encrypt's lifetime, so a 30-day renewal window means what
it does in production). Nonce rejection stays at pebble's default 5 %: acme
retries a bad nonce and so does bbbfleet's ACME client.

:class:`ZoneMirror` makes challtestsrv serve exactly the TXT records a moto
Route53 zone holds, read back from moto (not from what a client meant to
write), so a record written under the wrong name or value is what pebble sees.
Mirrored at the moment a change is answered, it is what INSYNC means on real
Route53 (every authoritative server answers with the change). A background
poller would race pebble, which validates the moment a challenge is answered.
"""

from __future__ import annotations

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bbbcore import route53
from bbbsim.node_process import free_port

if TYPE_CHECKING:
    from types_aiobotocore_route53.client import Route53Client

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
READY_WITHIN = 30.0
CERT_LIFETIME = dt.timedelta(days=90)
ISSUED_LINE = "Issued certificate serial"


def available() -> bool:
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
    """Start ``argv`` with stdout and stderr in ``log_path``."""
    with log_path.open("wb") as log:
        # argv: pebble's own binaries and arguments built here, never user input.
        proc = subprocess.Popen(  # noqa: S603
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


def start_challtestsrv(directory: Path) -> Challtestsrv:
    """pebble-challtestsrv on free loopback ports, its HTTP-01/TLS-ALPN-01 listeners off."""
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

    def ready() -> bool:
        for port in (dns_port, management_port):
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        return True

    wait_until(process, ready, "pebble-challtestsrv")
    return Challtestsrv(process, dns_port, management_port)


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
        """The CA that signed pebble's own HTTPS certificate (a client's extra CA bundle)."""
        return self.server_cert.ca_path

    @property
    def root(self) -> x509.Certificate:
        """The root that issued certificates chain to (regenerated per pebble run)."""
        return x509.load_pem_x509_certificate(self.root_pem)

    def certificates_issued(self) -> int:
        """Orders pebble finalized so far: its "Issued certificate serial" log lines
        (``ca/ca.go``, ``CAImpl.CompleteOrder``)."""
        return self.process.output().count(ISSUED_LINE)


def start_pebble(challtestsrv: Challtestsrv, directory: Path) -> Pebble:
    """pebble on free loopback ports with its own test CA, asking ``challtestsrv`` for DNS."""
    server_cert = make_server_cert(directory)
    port, management_port = free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(server_cert.cert_path),
            "privateKey": str(server_cert.key_path),
            # Ports pebble would validate HTTP-01/TLS-ALPN-01 on; DNS-01 never uses them.
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
    except BaseException:
        process.stop()
        raise
    root_path = directory / "pebble-root.pem"
    root_path.write_bytes(root_pem)
    return Pebble(process, port, management_port, server_cert, root_pem, root_path)


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
                    found[route53.normalise_name(raw["Name"])] = tuple(
                        sorted(route53.txt_text(r["Value"]) for r in raw.get("ResourceRecords", []))
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
