"""bbbnode.certificate: PEM checks and installing the certificate for nginx and coturn."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from bbbnode import certificate
from bbbnode.certificate import CertFiles, CertificateInstallFailed, CertificateInvalid
from bbbnode.runner import Completed, ScriptedRunner

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
FQDN = "i-0abc.bbb.example.org"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _chain(key: ec.EllipticCurvePrivateKey, days: int = 90, start: dt.datetime = NOW) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FQDN)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(days=1))
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(FQDN)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


KEY = _key()
KEY_PEM = _pem(KEY)
CHAIN = _chain(KEY, days=3650, start=dt.datetime.now(dt.UTC))

RELOADS = [
    ("nginx", "-t", "-q"),
    ("systemctl", "reload", "nginx"),
    ("systemctl", "is-active", "--quiet", "coturn.service"),
    ("systemctl", "kill", "--signal=SIGUSR2", "coturn.service"),
]


def test_check_pair() -> None:
    info = certificate.check_pair(_chain(KEY), KEY_PEM, now=NOW)
    assert info.names == frozenset({FQDN})
    with pytest.raises(CertificateInvalid, match="does not belong"):
        certificate.check_pair(_chain(KEY), _pem(_key()), now=NOW)
    with pytest.raises(CertificateInvalid, match="no readable certificate"):
        certificate.check_pair(b"garbage", KEY_PEM, now=NOW)
    with pytest.raises(CertificateInvalid, match="not a readable") as caught:
        certificate.check_pair(_chain(KEY), b"-----BEGIN PRIVATE KEY-----\nxx\n", now=NOW)
    assert "xx" not in str(caught.value)
    with pytest.raises(CertificateInvalid, match="expired"):
        certificate.check_pair(_chain(KEY, days=1), KEY_PEM, now=NOW + dt.timedelta(days=2))


async def test_install_writes_three_files_and_reloads_once(tmp_path: Path) -> None:
    files = CertFiles(tmp_path / "tls")
    runner = ScriptedRunner()

    result = await certificate.install_certificate(CHAIN, KEY_PEM, runner, files=files)

    assert result.changed == (files.fullchain, files.privkey, files.turn_privkey)
    assert runner.calls == RELOADS
    assert result.nginx_reloaded
    assert result.coturn_reloaded
    assert files.fullchain.read_bytes() == CHAIN
    assert files.turn_privkey.read_bytes() == KEY_PEM
    modes = {p.name: p.stat().st_mode & 0o777 for p in files.directory.iterdir()}
    assert modes == {"fullchain.pem": 0o644, "privkey.pem": 0o600, "turnserver-privkey.pem": 0o640}

    again = ScriptedRunner()
    result = await certificate.install_certificate(CHAIN, KEY_PEM, again, files=files)
    assert result.changed == ()
    assert again.calls == []


async def test_a_stopped_coturn_is_not_signalled(tmp_path: Path) -> None:
    runner = ScriptedRunner(
        script={("systemctl", "is-active"): lambda argv: Completed(argv, 3, "inactive")}
    )
    result = await certificate.install_certificate(
        CHAIN, KEY_PEM, runner, files=CertFiles(tmp_path)
    )
    assert not result.coturn_reloaded
    assert runner.calls == RELOADS[:3]


async def test_nginx_refusing_puts_the_old_files_back(tmp_path: Path) -> None:
    files = CertFiles(tmp_path)
    await certificate.install_certificate(CHAIN, KEY_PEM, ScriptedRunner(), files=files)
    other = _key()
    new_chain, new_key = _chain(other, days=3650, start=dt.datetime.now(dt.UTC)), _pem(other)
    runner = ScriptedRunner(script={("nginx", "-t"): lambda argv: Completed(argv, 1, "", "emerg")})

    with pytest.raises(CertificateInstallFailed, match="emerg"):
        await certificate.install_certificate(new_chain, new_key, runner, files=files)

    assert files.fullchain.read_bytes() == CHAIN
    assert files.privkey.read_bytes() == KEY_PEM
    # The next attempt sees the difference again and retries the reload.
    retry = ScriptedRunner()
    await certificate.install_certificate(new_chain, new_key, retry, files=files)
    assert retry.calls == RELOADS


async def test_files_only_runs_nothing_and_never_logs_the_key(tmp_path: Path) -> None:
    runner = ScriptedRunner()
    with capture_logs() as logs:
        result = await certificate.install_certificate(
            CHAIN, KEY_PEM, runner, files=CertFiles(tmp_path), commands=False
        )
    assert runner.calls == []
    assert len(result.changed) == 3
    assert KEY_PEM.decode() not in repr(logs)
