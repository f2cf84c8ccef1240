"""What a PEM certificate chain and its key say, and whether a certificate must be (re)issued.

Pure functions over PEM bytes, shared by bbbnode (its own certificate, or the
fleet's) and bbbscaler (the fleet's wildcard certificate). Names are compared
as TLS clients compare them: only the subjectAltName's DNS names count, case
and a trailing dot do not, and a wildcard ``*.example.org`` covers exactly one
more label (RFC 6125 section 6.4.3: ``a.example.org``, never ``example.org``
or ``a.b.example.org``).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


class CertificateError(Exception):
    """Base of every error obtaining, checking or keeping a certificate raises."""


class Reason(enum.StrEnum):
    """Why a certificate has to be (re)issued."""

    MISSING = "missing"
    UNREADABLE = "unreadable"
    WRONG_NAME = "wrong_name"
    EXPIRING = "expiring"
    KEY_MISMATCH = "key_mismatch"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the decisions need from a leaf certificate."""

    names: frozenset[str]
    not_before: dt.datetime
    not_after: dt.datetime
    public_key_der: bytes


def norm_name(name: str) -> str:
    """A DNS name as certificates compare it: lower case, no trailing dot."""
    return name.rstrip(".").lower()


def covers(names: Iterable[str], name: str) -> bool:
    """Whether a certificate for ``names`` is valid for ``name`` (exact or one-label wildcard)."""
    wanted = norm_name(name)
    for candidate in (norm_name(n) for n in names):
        if candidate == wanted:
            return True
        if candidate.startswith("*.") and not wanted.startswith("*."):
            label, dot, rest = wanted.partition(".")
            if label and dot and rest == candidate[2:]:
                return True
    return False


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_info(cert_pem: bytes) -> CertInfo:
    """The leaf (first certificate) of a PEM chain; ValueError if there is none."""
    leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = frozenset(norm_name(n) for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = frozenset()
    return CertInfo(
        names=names,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        public_key_der=_public_der(leaf.public_key()),
    )


def key_public_der(key_pem: bytes) -> bytes:
    """The public half of a PEM private key (DER SubjectPublicKeyInfo); ValueError if unreadable."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return _public_der(key.public_key())


def new_ec_key_pem() -> bytes:
    """A new P-256 private key, PEM (PKCS#8, unencrypted)."""
    # P-256: what certbot defaults to, accepted by every ACME CA, nginx and coturn.
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def is_ec_key(pem: bytes | None) -> bool:
    """Whether ``pem`` is a readable unencrypted EC private key."""
    if pem is None:
        return False
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return False
    return isinstance(key, ec.EllipticCurvePrivateKey)


def needs_issue(
    cert_pem: bytes | None,
    name: str,
    now: dt.datetime,
    renew_before_days: int,
    *,
    key_pem: bytes | None = None,
) -> Reason | None:
    """Why the certificate must be issued now for ``name``, or None when it is fine.

    ``key_pem``, when given, is the private key the certificate must belong to.
    """
    if cert_pem is None:
        return Reason.MISSING
    try:
        info = cert_info(cert_pem)
    except ValueError:
        return Reason.UNREADABLE
    if not covers(info.names, name):
        return Reason.WRONG_NAME
    if info.not_after - now <= dt.timedelta(days=renew_before_days):
        return Reason.EXPIRING
    if key_pem is not None:
        try:
            if key_public_der(key_pem) != info.public_key_der:
                return Reason.KEY_MISMATCH
        except (ValueError, TypeError):
            return Reason.KEY_MISMATCH
    return None
