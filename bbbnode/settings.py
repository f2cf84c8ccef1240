"""bbbnode's one settings model.

Every key is also ``BBBNODE_<SECTION>__<KEY>`` in the environment, which wins
over the TOML file (``bbbnode run --config FILE``). See docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, field_validator
from pydantic_settings import BaseSettings

from bbbcore import bbb_api, bbb_secret
from bbbcore.config import (
    ListenAddress,
    LogSettings,
    Section,
    check_listen,
    settings_config,
    template,
)
from bbbcore.scalelite_tags import server_tag


class BbbSettings(Section):
    url: str = bbb_api.DEFAULT_URL
    """bbb-web's own address, so nginx and TLS are not in the path."""
    secret: SecretStr | None = None
    """API secret; when unset, securitySalt from the properties files below."""
    checksum: bbb_secret.Choice = "auto"
    """API checksum: auto (the strongest supportedChecksumAlgorithms in properties_files
    allows; sha256 if none sets it) or one of sha1, sha256, sha384, sha512 that it allows."""
    poll_interval: float = Field(default=10.0, gt=0)
    """Seconds between two collections (getMeetings, recordings scan, CPU sample)."""
    timeout: float = Field(default=5.0, gt=0)
    """Seconds one BBB API call may take."""
    max_response_bytes: int = Field(default=bbb_api.DEFAULT_MAX_BYTES, gt=0)
    """Answers larger than this are refused, so memory stays bounded."""
    properties_files: tuple[Path, ...] = bbb_secret.DEFAULT_PROPERTIES
    """Where to look for securitySalt and supportedChecksumAlgorithms, first match wins."""
    release_file: Path = Path("/etc/bigbluebutton/bigbluebutton-release")
    """Source of bbb_version."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class MetricsSettings(Section):
    listen: ListenAddress = "0.0.0.0:9688"
    """host:port of /metrics, /healthz, /readyz, /status."""
    stale_after: float = Field(default=0.0, ge=0)
    """Seconds after which /readyz fails; 0 means three poll intervals."""

    _v = field_validator("listen")(check_listen)


class HostSettings(Section):
    instance_id: str = ""
    """Identity for bbbnode_info when AWS is off; empty means the hostname."""
    procfs: Path = Path("/proc")
    """procfs root; CPU is read from <procfs>/stat."""
    commands: Literal["run", "log"] = "run"
    """run: execute host commands (mount, systemctl); log: only append them to command_log."""
    command_log: Path = Path("/var/log/bbbnode-commands.jsonl")
    """Where host commands are written when commands = log (bbbsim's emulated hosts)."""
    cpu_window: float = Field(default=60.0, gt=0)
    """Seconds over which bbbnode_cpu_utilization_ratio is averaged (sampled every poll)."""


class RecordingsSettings(Section):
    root: Path = Path("/var/bigbluebutton")
    """BBB's recordings tree (recording/status, published, unpublished, deleted)."""
    enabled: bool = True
    """false: no recordings scan, no bbb_recordings_* metrics."""


class AwsSettings(Section):
    enabled: bool = True
    """false: exporter only, no AWS call at all."""
    region: str | None = None
    """AWS region; default from IMDS or AWS_DEFAULT_REGION."""
    imds_endpoint: str | None = None
    """IMDS endpoint; default: AWS_EC2_METADATA_SERVICE_ENDPOINT, else 169.254.169.254."""
    asg_name: str | None = None
    """Auto Scaling group; default: instance metadata tags, else DescribeAutoScalingInstances."""
    imds_timeout: float = Field(default=2.0, gt=0)
    """Seconds one instance-metadata request may take."""


class DnsSettings(Section):
    enabled: bool = True
    """Manage the host's Route53 A record."""
    zone_id: str = ""
    """Route53 hosted zone id of the fleet's domain."""
    domain: str = ""
    """The fleet's domain, e.g. bbb.example.org."""
    name_template: str = "{instance_id}.{domain}"
    """The host's FQDN; every part of the fleet derives the same name."""
    ttl: int = Field(default=60, gt=0)
    """TTL of the A record, seconds."""

    _name = field_validator("name_template")(
        template(("instance_id", "domain", "region", "availability_zone"))
    )


class TlsSettings(Section):
    enabled: bool = True
    """Give nginx and coturn this host's certificate (from the fleet, or its own)."""
    mode: Literal["fleet", "host"] = "fleet"
    """fleet: install the fleet's wildcard certificate bbbscaler publishes in Secrets Manager;
    host: order this host's own certificate over ACME DNS-01 (small fleets: docs/tls.md)."""
    fleet_secret: str = ""
    """fleet: the Secrets Manager secret (ARN or name) holding the fleet certificate."""
    fleet_poll_interval: float = Field(default=3600.0, gt=0)
    """fleet: seconds between looks at the secret's current version (a renewal is picked up
    within this long; bbbscaler renews 30 days before expiry)."""
    fleet_wait: float = Field(default=600.0, gt=0)
    """fleet: seconds start-up waits for a secret that has no certificate yet."""
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    """host: ACME directory URL (Let's Encrypt production by default)."""
    email: str = ""
    """host: contact address for the ACME account (optional)."""
    cert_dir: Path = Path("/var/lib/bbbnode/tls")
    """host: bbbnode's own ACME account key, key and chain; nginx and coturn read the helper's
    copy."""
    renew_before_days: int = Field(default=30, gt=0)
    """host: renew when the certificate expires within this many days."""
    post_hook: tuple[str, ...] = ()
    """Command run, as bbbnode's user, after a new certificate was installed (argv, no shell)."""
    ca_bundle: FilePath | None = None
    """host: extra CA bundle to trust for the ACME server (tests, private ACME)."""
    dns_propagation_timeout: float = Field(default=300.0, gt=0)
    """host: seconds to wait for the TXT record to be INSYNC."""
    rate_limit_retry: float = Field(default=3600.0, gt=0)
    """host: seconds to wait after a rateLimited answer that names no retry time."""


class EfsSettings(Section):
    enabled: bool = True
    """Mount the shared recordings file system."""
    file_system_id: str = ""
    """EFS file system id (fs-...)."""
    access_point_id: str = ""
    """EFS access point for Scalelite's recording import (fsap-...)."""
    mount_point: Path = Path("/mnt/scalelite-recordings")
    """Where the file system is mounted."""
    fstab: Path = Path("/etc/fstab")
    """fstab kept in step with the mount."""
    mountinfo: Path = Path("/proc/self/mountinfo")
    """Read to detect an existing mount."""
    scalelite_config: Path = Path("/usr/local/bigbluebutton/core/scripts/scalelite.yml")
    """Scalelite's post-publish config, pointed at the mount's spool directory."""
    spool_subdir: str = "var/bigbluebutton/spool"
    """Spool directory inside the mount, where recordings are handed to Scalelite."""


class HostconfigSettings(Section):
    enabled: bool = True
    """Configure BBB, nginx, FreeSWITCH and coturn for this host's name and addresses."""
    root: Path = Path("/")
    """Prefix of every file this step edits (bbbsim points it at a scratch tree)."""
    turn_secret: SecretStr | None = None
    """coturn's shared secret (also file:PATH or an ARN); unset keeps coturn's or makes one."""
    turn_port: int = Field(default=3478, gt=0, lt=65536)
    """TURN port advertised to clients and configured in coturn."""
    turns_port: int = Field(default=5349, gt=0, lt=65536)
    """TURN-over-TLS port advertised to clients and configured in coturn."""


class HelperSettings(Section):
    socket: str = "/run/bbbnode-host.sock"
    """The privileged host helper's unix socket; empty: bbbnode does the host steps itself."""
    socket_group: str = "bbbnode"
    """Group allowed to connect when `bbbnode host-helper` creates the socket itself."""
    timeout: float = Field(default=900.0, gt=0)
    """Seconds one request may take (host configuration restarts BBB's services)."""


class ScaleliteSettings(Section):
    enabled: bool = True
    """Register this host in Scalelite (and drain it from there)."""
    url: str = ""
    """Scalelite's base URL; its API lives under /scalelite/api/."""
    secret: SecretStr | None = None
    """Scalelite's LOADBALANCER_SECRET (also file:PATH or a Secrets Manager ARN)."""
    checksum: Literal["sha1", "sha256", "sha512"] = "sha256"
    """Checksum algorithm for Scalelite's API (Scalelite refuses sha384)."""
    server_url_template: str = "https://{fqdn}/bigbluebutton/api/"
    """The URL this host registers as in Scalelite."""
    load_multiplier: float = Field(default=1.0, gt=0)
    """Scalelite load multiplier this host registers with."""
    tag: str | None = None
    """Scalelite server tag (optional)."""

    _url = field_validator("server_url_template")(template(("fqdn", "instance_id")))
    _tag = field_validator("tag")(server_tag)


class ProtectionSettings(Section):
    enabled: bool = True
    """Keep ASG scale-in protection on while the host has a meeting."""
    idle_grace: float = Field(default=300.0, ge=0)
    """Seconds without a meeting before scale-in protection is turned off."""
    recheck_interval: float = Field(default=180.0, gt=0)
    """Seconds between re-reads of the protection flag from AWS."""


class LifecycleSettings(Section):
    enabled: bool = True
    """Drain the host when the ASG terminates it."""
    hook_name: str = "bbbfleet-drain"
    """Name of the ASG's termination lifecycle hook."""
    launch_hook_name: str = ""
    """Name of the ASG's launch lifecycle hook, which a warm pool needs ("": none). The host
    completes it after its warm-up in the pool and after joining the fleet for service."""
    poll_interval: float = Field(default=5.0, gt=0)
    """Seconds between reads of the target lifecycle state from IMDS."""
    heartbeat_interval: float = Field(default=60.0, gt=0)
    """Seconds between lifecycle heartbeats while draining (well inside the hook's timeout)."""
    max_drain_time: float = Field(default=0.0, ge=0)
    """Seconds after which a drain completes even with meetings left; 0: never force."""
    recording_grace: float = Field(default=120.0, ge=0)
    """Seconds to wait after the last recording is published (post-publish transfer)."""


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
    hostconfig: HostconfigSettings = HostconfigSettings()
    helper: HelperSettings = HelperSettings()
    scalelite: ScaleliteSettings = ScaleliteSettings()
    protection: ProtectionSettings = ProtectionSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    log: LogSettings = LogSettings()
