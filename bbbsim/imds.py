"""An IMDSv2 emulator: one small aiohttp app per emulated host.

Behaves like the real service with ``HttpTokens=required``: a session token comes from
``PUT /latest/api/token`` (TTL header required, 1..21600 s) and every read needs it
in ``X-aws-ec2-metadata-token`` (401 otherwise). Unknown paths answer 404. Point
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` at it and botocore's credential chain and
region lookup work against it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from bbbcore import logs
from bbbsim.lifecycle_layer import InstanceInfo, LifecycleLayer

log = logs.get(__name__)

Clock = Callable[[], float]
TargetState = Callable[[], str | None]

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TOKEN_TTL = 21_600
CREDENTIAL_LIFETIME = 6 * 3600
ASG_NAME_TAG = "aws:autoscaling:groupName"


@dataclass(frozen=True, slots=True)
class FakeCredentials:
    """Role credentials IMDS hands out; moto accepts any, botocore needs the shape."""

    access_key_id: str = "ASIAIMDSEMULATOR0001"
    secret_access_key: str = "imds-emulator-secret"  # noqa: S105 - fake, for moto only
    token: str = "imds-emulator-session-token"  # noqa: S105 - fake, for moto only


@dataclass(frozen=True, slots=True)
class InstanceIdentity:
    """What one emulated host's metadata describes."""

    instance_id: str
    region: str
    availability_zone: str
    local_ipv4: str
    public_ipv4: str | None = None
    group: str | None = None
    instance_type: str = "c5.2xlarge"
    ami_id: str = "ami-0bbb0000000000001"
    account_id: str = "123456789012"
    role_name: str | None = "bbbnode"
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata_tags: bool = True


def identity_from(info: InstanceInfo) -> InstanceIdentity:
    """The identity of an instance the lifecycle layer knows (``dataclasses.replace`` to adapt)."""
    return InstanceIdentity(
        instance_id=info.instance_id,
        region=info.region,
        availability_zone=info.availability_zone,
        local_ipv4=info.private_ip,
        public_ipv4=info.public_ip,
        group=info.group,
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def metadata_tree(
    identity: InstanceIdentity,
    target_state: str | None,
    credentials: FakeCredentials,
    now: float,
) -> dict[str, str]:
    """Every leaf under ``/latest/`` by path (no leading or trailing slash)."""
    md = "meta-data"
    dashed = identity.local_ipv4.replace(".", "-")
    hostname = f"ip-{dashed}.{identity.region}.compute.internal"
    leaves = {
        f"{md}/ami-id": identity.ami_id,
        f"{md}/instance-id": identity.instance_id,
        f"{md}/instance-type": identity.instance_type,
        f"{md}/local-ipv4": identity.local_ipv4,
        f"{md}/local-hostname": hostname,
        f"{md}/hostname": hostname,
        f"{md}/placement/region": identity.region,
        f"{md}/placement/availability-zone": identity.availability_zone,
    }
    if identity.public_ipv4:
        leaves[f"{md}/public-ipv4"] = identity.public_ipv4
    if target_state is not None:
        leaves[f"{md}/autoscaling/target-lifecycle-state"] = target_state
    if identity.metadata_tags:
        tags = dict(identity.tags)
        if identity.group is not None:
            tags.setdefault(ASG_NAME_TAG, identity.group)
        for key, value in tags.items():
            leaves[f"{md}/tags/instance/{key}"] = value
    if identity.role_name is not None:
        role_arn = f"arn:aws:iam::{identity.account_id}:instance-profile/{identity.role_name}"
        leaves[f"{md}/iam/info"] = json.dumps(
            {
                "Code": "Success",
                "LastUpdated": _iso(now),
                "InstanceProfileArn": role_arn,
                "InstanceProfileId": "AIPAIMDSEMULATOR0001",
            }
        )
        leaves[f"{md}/iam/security-credentials/{identity.role_name}"] = json.dumps(
            {
                "Code": "Success",
                "LastUpdated": _iso(now),
                "Type": "AWS-HMAC",
                "AccessKeyId": credentials.access_key_id,
                "SecretAccessKey": credentials.secret_access_key,
                "Token": credentials.token,
                "Expiration": _iso(now + CREDENTIAL_LIFETIME),
            }
        )
    leaves["dynamic/instance-identity/document"] = json.dumps(
        {
            "accountId": identity.account_id,
            "architecture": "x86_64",
            "availabilityZone": identity.availability_zone,
            "imageId": identity.ami_id,
            "instanceId": identity.instance_id,
            "instanceType": identity.instance_type,
            "pendingTime": _iso(now),
            "privateIp": identity.local_ipv4,
            "region": identity.region,
            "version": "2017-09-30",
        },
        indent=2,
    )
    return leaves


def lookup(leaves: Mapping[str, str], path: str) -> str | None:
    """A leaf's value or a directory listing (sub-directories end in '/'); None: 404."""
    key = path.strip("/")
    if key in leaves:
        return leaves[key]
    prefix = f"{key}/" if key else ""
    children: dict[str, None] = {}
    for leaf in leaves:
        if leaf.startswith(prefix):
            rest = leaf[len(prefix) :]
            head, sep, _ = rest.partition("/")
            children[head + sep] = None
    if not children:
        return None
    return "\n".join(sorted(children))


class ImdsEmulator:
    """Token store and request handling for one host."""

    def __init__(
        self,
        identity: InstanceIdentity,
        *,
        target_state: TargetState | None = None,
        clock: Clock = time.time,
        credentials: FakeCredentials | None = None,
    ) -> None:
        self.identity = identity
        self._target_state = target_state
        self._clock = clock
        self._credentials = credentials if credentials is not None else FakeCredentials()
        self._tokens: dict[str, float] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", TOKEN_PATH, self._token)
        app.router.add_get("/latest/{path:.*}", self._read)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        if request.method != "PUT":
            return web.Response(status=405, text="Method Not Allowed")
        # Real IMDS refuses tokens to requests that went through a proxy.
        if "X-Forwarded-For" in request.headers:
            return web.Response(status=403, text="Forbidden")
        raw = request.headers.get(TTL_HEADER)
        try:
            ttl = int(raw) if raw is not None else 0
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return web.Response(status=400, text="Bad Request")
        now = self._clock()
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = secrets.token_urlsafe(40)
        self._tokens[token] = now + ttl
        return web.Response(text=token, headers={TTL_HEADER: str(ttl)})

    async def _read(self, request: web.Request) -> web.Response:
        token = request.headers.get(TOKEN_HEADER)
        expiry = self._tokens.get(token) if token else None
        if expiry is None or expiry <= self._clock():
            return web.Response(status=401, text="Unauthorized")
        state = self._target_state() if self._target_state is not None else None
        leaves = metadata_tree(self.identity, state, self._credentials, self._clock())
        value = lookup(leaves, request.match_info["path"])
        if value is None:
            return web.Response(status=404, text="Not Found")
        content_type = "application/json" if value.startswith("{") else "text/plain"
        return web.Response(text=value, content_type=content_type)


def for_instance(
    layer: LifecycleLayer, instance_id: str, *, clock: Clock = time.time
) -> ImdsEmulator:
    """The emulator for an instance the layer knows; its target state follows the layer."""
    info = next((i for i in layer.instances() if i.instance_id == instance_id), None)
    if info is None:
        raise KeyError(instance_id)
    return ImdsEmulator(
        identity_from(info),
        target_state=lambda: layer.target_lifecycle_state(instance_id),
        clock=clock,
    )


async def serve(
    emulator: ImdsEmulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve one host's metadata; returns the runner (cleanup stops it) and the port."""
    runner = web.AppRunner(emulator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    log.info("imds_listening", instance_id=emulator.identity.instance_id, port=bound)
    return runner, bound
