"""The narrow door between bbbnode and its privileged host helper: a fixed set of typed requests.

bbbnode runs unprivileged; everything that changes the host (the recordings
mount, BBB's, nginx's, FreeSWITCH's and coturn's files, the certificate, lo's
address and the NAT rule, restarting services) is one of these operations,
carried out by ``bbbnode host-helper`` as root (bbbnode/helper.py). A request
names one operation and carries typed, validated arguments; paths, commands
and units are never arguments: the helper takes them from its own
configuration, so a compromised exporter can ask for a host configuration with
other addresses, but never for a command.

Wire format: one request per connection, one JSON object on one line each way,
at most ``MAX_MESSAGE`` bytes. An answer is ``{"ok": true, "result": {...}}`` or
``{"ok": false, "kind": "invalid"|"failed", "error": "..."}``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

MAX_MESSAGE = 256 * 1024
"""Bytes of one request or answer (a certificate chain and key fit many times over)."""

_FQDN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
_REGION = r"^[a-z]{2}(-[a-z]+)+-\d+$"
_TURN_SECRET = r"^[A-Za-z0-9+/=._~-]{8,256}$"  # noqa: S105 (a pattern, not a secret)
_PEM = 64 * 1024


class HostStepInvalid(ValueError):
    """A request the helper refuses to carry out (malformed, unknown or out of range)."""


class HostStepFailed(RuntimeError):
    """The helper carried out the request and it failed (a command, a file, a mount)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostConfigRequest(_Request):
    """Configure BBB, nginx, FreeSWITCH, bbb-webrtc-sfu, coturn, lo and the NAT rule for a host.

    One request converges everything, so a host that comes back with a new
    public address (a warm-pool instance) sends it again with the new one.
    """

    op: Literal["host_config"] = "host_config"
    fqdn: str = Field(pattern=_FQDN, max_length=253)
    public_ip: str
    private_ip: str
    turn_secret: SecretStr | None = None
    """coturn's shared secret as configured; None keeps coturn's (or makes one)."""

    @field_validator("public_ip", "private_ip")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ValueError("not an IPv4 address") from None

    @field_validator("turn_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(_TURN_SECRET, value.get_secret_value()):
            raise ValueError("must be 8-256 characters of [A-Za-z0-9+/=._~-]")
        return value


class InstallCertificateRequest(_Request):
    """Install this PEM chain and key for nginx and coturn and make them take it."""

    op: Literal["install_certificate"] = "install_certificate"
    fullchain_pem: str = Field(min_length=1, max_length=_PEM)
    key_pem: SecretStr = Field(min_length=1, max_length=_PEM)


class MountEfsRequest(_Request):
    """Mount the recordings file system named in the helper's configuration."""

    op: Literal["mount_efs"] = "mount_efs"
    region: str = Field(pattern=_REGION)


Request = Annotated[
    HostConfigRequest | InstallCertificateRequest | MountEfsRequest, Field(discriminator="op")
]
OPERATIONS = ("host_config", "install_certificate", "mount_efs")
_REQUEST: TypeAdapter[Request] = TypeAdapter(Request)


class HostSteps(Protocol):
    """Carries out one request: in this process, or in the helper over its socket."""

    async def run(self, request: Request) -> dict[str, Any]:
        """The operation's result; HostStepInvalid or HostStepFailed otherwise."""
        ...


def _plain(request: Request) -> dict[str, Any]:
    doc = request.model_dump()
    for key, value in doc.items():
        if isinstance(value, SecretStr):
            doc[key] = value.get_secret_value()
    return doc


def encode_request(request: Request) -> bytes:
    """One line of JSON, secrets included (the socket is root's and bbbnode's only)."""
    return _line(_plain(request))


def decode_request(data: bytes) -> Request:
    """The request ``data`` holds; HostStepInvalid naming the problem (never a secret)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HostStepInvalid("not a JSON object") from None
    if not isinstance(doc, dict):
        raise HostStepInvalid("not a JSON object")
    if doc.get("op") not in OPERATIONS:
        raise HostStepInvalid(f"unknown operation {str(doc.get('op'))[:40]!r}")
    try:
        return _REQUEST.validate_python(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'request'}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise HostStepInvalid(problems) from None


def encode_result(result: dict[str, Any]) -> bytes:
    """A success answer."""
    return _line({"ok": True, "result": result})


def encode_error(exc: HostStepInvalid | HostStepFailed) -> bytes:
    """A failure answer naming its kind."""
    kind = "invalid" if isinstance(exc, HostStepInvalid) else "failed"
    return _line({"ok": False, "kind": kind, "error": str(exc)[:2000]})


def decode_answer(data: bytes) -> dict[str, Any]:
    """The result of an answer; raises what the helper reported."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HostStepFailed("the helper's answer is not JSON") from None
    if not isinstance(doc, dict) or "ok" not in doc:
        raise HostStepFailed("the helper's answer has no outcome")
    if doc["ok"] is True and isinstance(doc.get("result"), dict):
        result: dict[str, Any] = doc["result"]
        return result
    error = str(doc.get("error", "no reason given"))
    if doc.get("kind") == "invalid":
        raise HostStepInvalid(error)
    raise HostStepFailed(error)


def _line(doc: dict[str, Any]) -> bytes:
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    if len(data) > MAX_MESSAGE:
        raise HostStepInvalid(f"message over {MAX_MESSAGE} bytes")
    return data
