"""bbbscaler's one settings model.

Every key is also ``BBBSCALER_<SECTION>__<KEY>`` in the environment (a top-level
key is ``BBBSCALER_<KEY>``, e.g. ``BBBSCALER_DRY_RUN``), which wins over the TOML
file (``bbbscaler run --config FILE``). See docs/configuration.md.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from bbbcore.config import (
    ListenAddress,
    LogSettings,
    Section,
    check_listen,
    settings_config,
    template,
)
from bbbcore.scalelite_tags import server_tag

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


class AwsSettings(Section):
    asg_name: str = ""
    """The BBB hosts' Auto Scaling Group (required)."""
    region: str | None = None
    """AWS region; unset means the SDK's own chain (AWS_DEFAULT_REGION, ...)."""
    timeout: float = Field(default=10.0, gt=0)
    """Seconds one AWS call may take before it is retried."""


class MetricsSettings(Section):
    source: Literal["direct", "prometheus"] = "direct"
    """Where node metrics come from: scrape every node, or ask a Prometheus server."""
    url_template: str = "http://{private_ip}:9688/metrics"
    """A node's metrics URL for ``direct`` (placeholders: instance_id, private_ip)."""
    prometheus_url: str = ""
    """Prometheus server base URL for ``prometheus``."""
    instance_label: str = "instance_id"
    """The series label that holds the EC2 instance id (``prometheus``)."""
    timeout: float = Field(default=3.0, gt=0)
    """Seconds one scrape or query may take; a node that does not answer has no data."""
    concurrency: int = Field(default=200, gt=0)
    """Scrapes in flight at once (``direct``)."""
    stale_after: float = Field(default=60.0, gt=0)
    """Seconds after which a node's meeting data is too old to scale in on."""

    _url = field_validator("url_template")(template(("instance_id", "private_ip")))

    @model_validator(mode="after")
    def _prometheus_needs_url(self) -> MetricsSettings:
        if self.source == "prometheus" and not self.prometheus_url:
            raise ValueError("prometheus_url is required when source is prometheus")
        return self


class ScaleliteSettings(Section):
    url: str = ""
    """Scalelite's base URL; its API lives under /scalelite/api/ (required)."""
    secret: SecretStr | None = None
    """Scalelite's LOADBALANCER_SECRET (also file:PATH or a Secrets Manager ARN)."""
    checksum: Literal["sha1", "sha256", "sha512"] = "sha256"
    """Checksum algorithm for Scalelite's API (Scalelite refuses sha384)."""
    domain: str = ""
    """The fleet's DNS domain, for the default server URL template."""
    server_url_template: str = "https://{instance_id}.{domain}/bigbluebutton/api/"
    """The URL a node registers as (placeholders: instance_id, domain, private_ip)."""
    timeout: float = Field(default=5.0, gt=0)
    """Seconds one Scalelite call may take."""
    tag: str | None = None
    """Scalelite server tag the fleet's nodes register with (bbbnode's scalelite.tag): only
    servers with this tag are counted and steered. Unset: untagged servers."""
    poll_interval: float = Field(default=60.0, gt=0, le=3600)
    """Scalelite's POLL_INTERVAL (its default 60; the scalelite chart's poller.interval, 20):
    a new node takes meetings only once a poll brought it online, so a schedule window's
    nodes are launched policy.boot_time plus this before it opens."""

    _url = field_validator("server_url_template")(template(("instance_id", "domain", "private_ip")))

    _tag = field_validator("tag")(server_tag)


class HttpSettings(Section):
    listen: ListenAddress = "0.0.0.0:9689"
    """host:port of /metrics and /healthz."""

    _v = field_validator("listen")(check_listen)


class ScheduleSettings(Section):
    name: str
    """Shown in decisions and logs."""
    days: tuple[str, ...] = DAYS
    """Days of week the window opens on (mon..sun)."""
    start: str
    """Local start time, HH:MM."""
    end: str
    """Local end time, HH:MM; before start means the window runs past midnight."""
    timezone: str = "UTC"
    """IANA time zone of start and end, e.g. Europe/Berlin."""
    min_nodes: int = Field(ge=0)
    """Nodes serving from start (less the lead time) until end."""

    @field_validator("days")
    @classmethod
    def _days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        days = tuple(d.lower()[:3] for d in value)
        bad = [d for d in days if d not in DAYS]
        if bad or not days:
            raise ValueError(f"days must be among {', '.join(DAYS)}")
        return days

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.fullmatch(value):
            raise ValueError("must be HH:MM (24 h)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return value


class PolicySettings(Section):
    preset: Literal["seed", "default", "forecast"] = "default"
    """seed: the write-up's lowest-CPU thresholds; default: headroom, sized steps, drain;
    forecast: default, plus capacity before the demand the fleet's earlier weeks forecast
    (reads them from Prometheus: the [forecast] section)."""
    scale_out_after: float | None = Field(default=None, ge=0)
    """Seconds the scale-out condition must hold (seed 180, default 0)."""
    scale_in_after: float | None = Field(default=None, ge=0)
    """Seconds the scale-in condition must hold (seed 900, default 600)."""
    cooldown: float | None = Field(default=None, ge=0)
    """Seconds after a capacity change before the next (seed 300 for both ways; default
    300 before a scale-in, none before a scale-out)."""
    min_nodes: int = Field(default=0, ge=0)
    """Never fewer serving nodes than this (the ASG's MinSize also holds)."""
    max_nodes: int = Field(default=0, ge=0)
    """Never more nodes than this; 0 means the ASG's MaxSize."""
    high_cpu: float = Field(default=0.80, gt=0, le=1)
    """Node CPU where BBB audio degrades; seed scales out above it."""
    low_cpu: float = Field(default=0.06, ge=0, lt=1)
    """seed: scale in while the lowest node CPU is below this."""
    target_cpu: float = Field(default=0.72, gt=0, le=1)
    """default: the node CPU it sizes for, below high_cpu so meetings fit."""
    headroom: float = Field(default=0.15, ge=0)
    """default: room below target_cpu, in nodes' worth of CPU, kept for the next meetings."""
    trend_window: float = Field(default=300.0, gt=0)
    """default: seconds of history the demand trend is measured over."""
    lookahead: float = Field(default=300.0, ge=0)
    """default: seconds ahead the trend is projected (boot, registration, Scalelite's first
    poll of a new node)."""
    steer_cpu: float = Field(default=0.70, gt=0, le=1)
    """default: node CPU from which Scalelite is steered away from the node."""
    steer_warm_cpu: float = Field(default=0.60, gt=0, le=1)
    """default: node CPU from which the warmest nodes are steered too, while fewer than
    steer_warm_share of the serving nodes are: a burst of creates between two rounds
    cannot carry one of them from here past 80 %."""
    steer_warm_share: float = Field(default=0.34, ge=0, le=1)
    """default: share of the serving nodes (at least one) steer_warm_cpu may steer, hot ones
    and those being emptied included; the rest stay open so Scalelite spreads the wave (0
    turns it off)."""
    steer_multiplier: float = Field(default=100.0, ge=1)
    """default: Scalelite load_multiplier of a steered node (1 turns steering off and leaves
    every load_multiplier alone)."""
    boot_time: float = Field(default=180.0, ge=0)
    """Seconds from launch to serving: how early a schedule window's nodes are launched."""
    warm_start_time: float = Field(default=45.0, ge=0)
    """Seconds from the start of a warm pool host to serving: the lag of a launch while the
    group's warm pool has ready hosts (boot_time after them)."""
    boot_grace: float = Field(default=900.0, gt=0)
    """Seconds a new instance may go without metrics before it counts as missing data."""
    max_draining: int = Field(default=2, gt=0)
    """Nodes draining at once at most (the scale-in budget; default: a drain of an idle node
    does not count, it ends in the next round)."""
    drift_budget: float = Field(default=0.10, ge=0, le=1)
    """Share of the fleet that may drain at once to replace nodes launched from an older
    launch template (at least one node); 0 turns rollouts off."""
    schedules: tuple[ScheduleSettings, ...] = ()
    """Scheduled capacity windows (TOML: [[policy.schedules]]; env: a JSON list)."""

    @model_validator(mode="after")
    def _thresholds(self) -> PolicySettings:
        if self.low_cpu >= self.high_cpu:
            raise ValueError("low_cpu must be below high_cpu")
        if self.max_nodes and self.min_nodes > self.max_nodes:
            raise ValueError("min_nodes must not exceed max_nodes")
        return self


class ForecastSettings(Section):
    prometheus_url: str = ""
    """Prometheus base URL the history is read from; empty: metrics.prometheus_url."""
    query: str = 'sum(avg_over_time(bbbnode_cpu_utilization_ratio{asg="$asg_name"}[5m]))'
    """PromQL of the fleet's CPU demand in nodes ($asg_name: aws.asg_name), read with
    query_range at 5-minute steps."""
    weeks: int = Field(default=4, ge=1, le=8)
    """Earlier weeks the forecast learns from (Prometheus must keep them: 35 days for 4)."""
    min_weeks: int = Field(default=2, ge=1, le=8)
    """Fewer earlier weeks covering the next hour than this: no forecast (reactive)."""
    quantile: float = Field(default=0.75, ge=0, le=1)
    """Quantile of the earlier weeks' demand at the same week-time."""
    margin: float = Field(default=300.0, ge=0, le=1800)
    """Seconds beyond policy.boot_time the forecast need is met before it arrives."""
    hold: float = Field(default=1800.0, ge=0, le=3000)
    """Seconds ahead within which a node with meetings the forecast needs is not drained."""
    steer_from: float = Field(default=600.0, ge=0, le=3000)
    """New meetings go to the nodes the forecast needs from this many seconds ahead to
    forecast.hold, and one more; the rest are steered away to empty as demand falls.
    0: off (new meetings spread over every node the round keeps)."""
    window: float = Field(default=3600.0, gt=0, le=86400)
    """Seconds of today the correction compares with their forecast."""
    headroom: float = Field(default=0.05, ge=0)
    """policy.headroom while the forecast is in use (the trend is not extrapolated then)."""
    stale_after: float = Field(default=900.0, gt=0)
    """Seconds after which the newest history value is too old to forecast on."""
    refresh_interval: float = Field(default=300.0, gt=0)
    """Seconds between two reads of the history."""
    timeout: float = Field(default=10.0, gt=0)
    """Seconds one history read may take."""

    @model_validator(mode="after")
    def _weeks(self) -> ForecastSettings:
        if self.min_weeks > self.weeks:
            raise ValueError("min_weeks must not exceed weeks")
        if self.steer_from > self.hold:
            raise ValueError("steer_from must not exceed hold")
        return self


class CertificateSettings(Section):
    secret: str = ""
    """Secrets Manager secret (ARN or name) the fleet's wildcard certificate is published to;
    empty: bbbscaler issues no certificate (hosts then need tls.mode = host)."""
    account_secret: str = ""
    """Secret (ARN or name) keeping the ACME account key, read and written only by bbbscaler;
    empty: a new ACME account at every start."""
    domain: str = ""
    """The fleet's domain: the certificate is for *.{domain} (required with secret)."""
    zone_id: str = ""
    """Route53 hosted zone of domain, for the DNS-01 TXT record (required with secret)."""
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    """ACME directory URL (Let's Encrypt production by default)."""
    email: str = ""
    """Contact address for the ACME account (optional)."""
    ca_bundle: FilePath | None = None
    """Extra CA bundle to trust for the ACME server (tests, private ACME)."""
    renew_before_days: int = Field(default=30, gt=0)
    """Renew when the certificate in the secret expires within this many days."""
    check_interval: float = Field(default=3600.0, gt=0)
    """Seconds between two looks at the secret (and a renewal when it is due)."""
    retry_interval: float = Field(default=3600.0, gt=0)
    """Seconds before another try after a failed issuance (a CA's named retry time wins)."""
    dns_propagation_timeout: float = Field(default=300.0, gt=0)
    """Seconds to wait for the challenge's TXT record to be INSYNC."""


class LoopSettings(Section):
    interval: float = Field(default=10.0, gt=0)
    """Seconds between two rounds of observe, decide, act."""


class ScalerSettings(BaseSettings):
    """Everything bbbscaler reads from its config file and environment."""

    model_config = settings_config("BBBSCALER_")

    dry_run: bool = False
    """Observe and decide, log what would be done, change nothing."""
    aws: AwsSettings = AwsSettings()
    metrics: MetricsSettings = MetricsSettings()
    scalelite: ScaleliteSettings = ScaleliteSettings()
    http: HttpSettings = HttpSettings()
    policy: PolicySettings = PolicySettings()
    loop: LoopSettings = LoopSettings()
    certificate: CertificateSettings = CertificateSettings()
    forecast: ForecastSettings = ForecastSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _required(self) -> ScalerSettings:
        # Named per key so the error says exactly what to set.
        missing = [
            f"{key} ({env}) is required"
            for key, env, value in (
                ("aws.asg_name", "BBBSCALER_AWS__ASG_NAME", self.aws.asg_name),
                ("scalelite.url", "BBBSCALER_SCALELITE__URL", self.scalelite.url),
                ("scalelite.secret", "BBBSCALER_SCALELITE__SECRET", self.scalelite.secret),
            )
            if not value
        ]
        if "{domain}" in self.scalelite.server_url_template and not self.scalelite.domain:
            missing.append(
                "scalelite.domain (BBBSCALER_SCALELITE__DOMAIN) is required by "
                "scalelite.server_url_template"
            )
        if self.certificate.secret:
            missing.extend(
                f"{key} ({env}) is required with certificate.secret"
                for key, env, value in (
                    (
                        "certificate.domain",
                        "BBBSCALER_CERTIFICATE__DOMAIN",
                        self.certificate.domain,
                    ),
                    (
                        "certificate.zone_id",
                        "BBBSCALER_CERTIFICATE__ZONE_ID",
                        self.certificate.zone_id,
                    ),
                )
                if not value
            )
        if self.policy.preset == "forecast" and not self.forecast_url:
            missing.append(
                "forecast.prometheus_url (BBBSCALER_FORECAST__PROMETHEUS_URL) or "
                "metrics.prometheus_url is required with policy.preset = forecast"
            )
        if missing:
            raise ValueError("; ".join(missing))
        return self

    @property
    def forecast_url(self) -> str:
        """Where the forecast's history is read from."""
        return self.forecast.prometheus_url or self.metrics.prometheus_url
