"""bbbnode's one settings model.

Every key is also ``BBBNODE_<SECTION>__<KEY>`` in the environment, which wins
over the TOML file (``bbbnode run --config FILE``). See docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from bbbcore import bbb_api, bbb_secret
from bbbcore.config import Section, settings_config

ListenAddress = str


def _check_listen(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port with a port from 0 to 65535")
    return value


class BbbSettings(Section):
    url: str = bbb_api.DEFAULT_URL
    """bbb-web's own address, so nginx and TLS are not in the path."""
    secret: SecretStr | None = None
    """API secret; when unset, securitySalt from the properties files below."""
    checksum: Literal["sha1", "sha256", "sha384", "sha512"] = "sha256"
    poll_interval: float = Field(default=10.0, gt=0)
    timeout: float = Field(default=5.0, gt=0)
    max_response_bytes: int = Field(default=bbb_api.DEFAULT_MAX_BYTES, gt=0)
    properties_files: tuple[Path, ...] = bbb_secret.DEFAULT_PROPERTIES
    release_file: Path = Path("/etc/bigbluebutton/bigbluebutton-release")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class MetricsSettings(Section):
    listen: ListenAddress = "0.0.0.0:9688"
    stale_after: float = Field(default=0.0, ge=0)
    """Seconds after which /readyz fails; 0 means three poll intervals."""

    _v = field_validator("listen")(_check_listen)


class HostSettings(Section):
    instance_id: str = ""
    """Identity for bbbnode_info when AWS is off; empty means the hostname."""
    procfs: Path = Path("/proc")
    cpu_window: float = Field(default=60.0, gt=0)
    """Seconds over which bbbnode_cpu_utilization_ratio is averaged (sampled every poll)."""


class RecordingsSettings(Section):
    root: Path = Path("/var/bigbluebutton")
    enabled: bool = True


class AwsSettings(Section):
    enabled: bool = True
    """false: exporter only, no AWS call at all."""
    region: str | None = None


class DnsSettings(Section):
    enabled: bool = True
    zone_id: str = ""
    domain: str = ""
    name_template: str = "{instance_id}.{domain}"
    ttl: int = Field(default=60, gt=0)


class TlsSettings(Section):
    enabled: bool = True


class EfsSettings(Section):
    enabled: bool = True


class ScaleliteSettings(Section):
    url: str = ""
    secret: SecretStr | None = None
    server_url_template: str = "https://{fqdn}/bigbluebutton/api/"


class ProtectionSettings(Section):
    idle_grace: float = Field(default=300.0, ge=0)


class LifecycleSettings(Section):
    hook_name: str = "bbbfleet-drain"
    poll_interval: float = Field(default=5.0, gt=0)


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class NodeSettings(BaseSettings):
    """Everything bbbnode reads from its config file and environment."""

    model_config = settings_config("BBBNODE_")

    bbb: BbbSettings = BbbSettings()
    metrics: MetricsSettings = MetricsSettings()
    host: HostSettings = HostSettings()
    recordings: RecordingsSettings = RecordingsSettings()
    aws: AwsSettings = AwsSettings()
    dns: DnsSettings = DnsSettings()
    tls: TlsSettings = TlsSettings()
    efs: EfsSettings = EfsSettings()
    scalelite: ScaleliteSettings = ScaleliteSettings()
    protection: ProtectionSettings = ProtectionSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    log: LogSettings = LogSettings()
