"""The fleet certificate as it is stored in its Secrets Manager secret.

bbbscaler writes it, every bbbnode reads it. The SecretString is one JSON
object (docs/tls.md):

``{"format": "bbbfleet-certificate/1", "names": ["*.bbb.example.org"],
"not_after": "2026-09-01T12:00:00+00:00", "fullchain_pem": "-----BEGIN
CERTIFICATE-----...", "privkey_pem": "-----BEGIN PRIVATE KEY-----..."}``

Reading checks what a host is about to serve: a readable chain, a key that
belongs to its first certificate, ``names`` and ``not_after`` as the
certificate says. Nothing here ever renders the key: the dataclass hides it
from repr, and no error message quotes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field

from bbbcore.certinfo import cert_info, key_public_der

FORMAT = "bbbfleet-certificate/1"
# Secrets Manager's limit on a SecretString (API reference, PutSecretValue).
MAX_SECRET_BYTES = 65_536
_TOKEN_NAMESPACE = uuid.UUID("4c1b6f0e-9d1e-4a51-9a83-0f6b0b1f5e21")


class FleetCertificateInvalid(ValueError):
    """The secret's value is not a usable fleet certificate (the message never quotes the key)."""


@dataclass(frozen=True, slots=True)
class FleetCertificate:
    """The fleet's certificate chain, its key and what the chain says about itself."""

    fullchain_pem: bytes
    privkey_pem: bytes = field(repr=False)
    names: tuple[str, ...]
    not_after: dt.datetime

    @classmethod
    def from_pem(cls, fullchain_pem: bytes, privkey_pem: bytes) -> FleetCertificate:
        """Chain and key as the CA's chain says (FleetCertificateInvalid if they do not match)."""
        try:
            info = cert_info(fullchain_pem)
        except ValueError:
            raise FleetCertificateInvalid("the chain holds no readable certificate") from None
        try:
            public = key_public_der(privkey_pem)
        except (ValueError, TypeError):
            raise FleetCertificateInvalid("the key is not an unencrypted PEM private key") from None
        if public != info.public_key_der:
            raise FleetCertificateInvalid("the key does not belong to the chain's certificate")
        return cls(fullchain_pem, privkey_pem, tuple(sorted(info.names)), info.not_after)

    def encode(self) -> str:
        """The SecretString."""
        text = json.dumps(
            {
                "format": FORMAT,
                "names": list(self.names),
                "not_after": self.not_after.isoformat(),
                "fullchain_pem": self.fullchain_pem.decode("ascii"),
                "privkey_pem": self.privkey_pem.decode("ascii"),
            },
            indent=1,
        )
        if len(text.encode()) > MAX_SECRET_BYTES:
            raise FleetCertificateInvalid(f"the certificate is over {MAX_SECRET_BYTES} bytes")
        return text

    def request_token(self) -> str:
        """PutSecretValue's ClientRequestToken: the same chain always gives the same token."""
        return str(uuid.uuid5(_TOKEN_NAMESPACE, hashlib.sha256(self.fullchain_pem).hexdigest()))


def decode(secret_string: str) -> FleetCertificate:
    """The fleet certificate in a SecretString; FleetCertificateInvalid says what is wrong."""
    try:
        doc = json.loads(secret_string)
    except ValueError:
        raise FleetCertificateInvalid("the secret is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FleetCertificateInvalid(f"the secret is not a {FORMAT} document")
    chain, key = doc.get("fullchain_pem"), doc.get("privkey_pem")
    if not isinstance(chain, str) or not isinstance(key, str):
        raise FleetCertificateInvalid("fullchain_pem and privkey_pem must be strings")
    certificate = FleetCertificate.from_pem(chain.encode(), key.encode())
    claimed = doc.get("not_after")
    if claimed != certificate.not_after.isoformat():
        raise FleetCertificateInvalid("not_after differs from the certificate's own")
    return certificate
