"""bbbctl's one settings model.

Every key is also ``BBBCTL_<SECTION>__<KEY>`` in the environment, which wins
over the TOML file (``bbbctl --config FILE``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from bbbcore.config import ConfigError, Section, settings_config, template

_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StackSettings(Section):
    name: str = "bbbfleet"
    """CloudFormation stack name."""
    template_dir: Path = Path("cfn")
    """Directory of the templates, relative to sync.root; synced under bucket.prefix."""
    root_template: str = "root.yaml"
    """The root template inside template_dir."""
    parameters_file: Path | None = None
    """JSON parameters, {"Parameters": {"Key": "value", ...}} (cfn/parameters.example.json)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _STACK_NAME.match(value):
            raise ValueError("must start with a letter and hold only letters, digits and -")
        return value


class BucketSettings(Section):
    name: str = ""
    """S3 bucket for templates, scripts and the wheel (must exist; needed by all but validate)."""
    prefix: str = "bbbfleet/"
    """Key prefix of everything bbbctl puts in the bucket; delete empties it."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not _BUCKET_NAME.match(value):
            raise ValueError("is not an S3 bucket name")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # Never empty: delete removes everything under it.
        if not value.endswith("/") or value.startswith("/") or value == "/" or ".." in value:
            raise ValueError('must be a non-empty key prefix ending in "/", e.g. bbbfleet/')
        return value


class SyncSettings(Section):
    root: Path = Path(".")
    """Directory the patterns below are relative to (the project checkout)."""
    files: tuple[str, ...] = (
        "cfn/*.yaml",
        "packer/*.hcl",
        "packer/scripts/*",
        "packer/files/*",
        "dist/bbbfleet-*.whl",
    )
    """Glob patterns of what sync uploads; a file's key is bucket.prefix + its relative path."""


class AwsSettings(Section):
    region: str | None = None
    """AWS region; default AWS_DEFAULT_REGION / the profile's."""


class WaitSettings(Section):
    poll_interval: float = Field(default=5.0, gt=0)
    """Seconds between two reads of the stack's state and events."""
    timeout: float = Field(default=7200.0, gt=0)
    """Seconds to wait for a change set or a stack operation before giving up."""


class FleetSettings(Section):
    metrics_url_template: str = "http://{private_ip}:9688/metrics"
    """A host's bbbnode metrics, read before the fleet is deleted or replaced (placeholders:
    instance_id, private_ip). Port 9688 is open to the VPC only: from outside it, Scalelite
    answers for the hosts."""
    scalelite_url: str = ""
    """Scalelite's base URL; empty: the stack's ScaleliteUrl output."""
    scalelite_secret: SecretStr | None = None
    """Scalelite's LOADBALANCER_SECRET (also file:PATH or a Secrets Manager ARN); unset: the
    stack's ScaleliteSecretArn output."""
    scalelite_checksum: Literal["sha1", "sha256", "sha512"] = "sha256"
    """Checksum algorithm for Scalelite's API."""
    server_url_template: str = "https://{instance_id}.{domain}/bigbluebutton/api/"
    """The URL a host registers in Scalelite as (placeholders: instance_id, domain, private_ip)."""
    domain: str = ""
    """The fleet's DNS domain for {domain}; empty: the stack's Domain parameter."""
    timeout: float = Field(default=5.0, gt=0)
    """Seconds one read of a host or of Scalelite may take."""
    stale_after: float = Field(default=60.0, gt=0)
    """Seconds after which a host's meeting data is too old to say it has no meeting."""

    _metrics = field_validator("metrics_url_template")(template(("instance_id", "private_ip")))
    _servers = field_validator("server_url_template")(
        template(("instance_id", "domain", "private_ip"))
    )


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "warning"
    """Log level (JSON lines on stderr; progress and results are printed separately)."""


class CtlSettings(BaseSettings):
    """Everything bbbctl reads from its config file and environment."""

    model_config = settings_config("BBBCTL_")

    stack: StackSettings = StackSettings()
    bucket: BucketSettings = BucketSettings()
    sync: SyncSettings = SyncSettings()
    aws: AwsSettings = AwsSettings()
    wait: WaitSettings = WaitSettings()
    fleet: FleetSettings = FleetSettings()
    log: LogSettings = LogSettings()


def require_bucket(settings: CtlSettings) -> str:
    """The bucket name, or a ConfigError naming the key when it is unset."""
    if not settings.bucket.name:
        raise ConfigError(["bucket.name (BBBCTL_BUCKET__NAME): must be set for this command"])
    return settings.bucket.name
