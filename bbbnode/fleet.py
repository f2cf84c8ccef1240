"""bbbnode's fleet side: join the pool at start, stay protected, drain on termination.

Start-up runs the issue's steps in order, each idempotent (it reads the truth
from AWS, Scalelite and the host before acting), so a restart resumes:

1. identity from IMDSv2, secrets resolved;
2. where the instance is headed (IMDS target lifecycle state, bbbnode/launch.py):
   into a warm pool, the warm-up only (EFS mount, TLS certificate), then the launch
   hook is completed so AWS stops the instance, and nothing is published; out of
   the pool (terminated there), the termination hook is completed, no drain;
3. into service: Route53 A record, EFS mount and TLS certificate (the fleet's,
   read from Secrets Manager; or, with ``tls.mode = host``, the host's own over
   ACME), concurrently, for the current public address (a warm host that starts
   has a new one);
4. host configuration (needs the name and the certificate);
5. the launch hook completed (with a warm pool), then the drain's phase from the
   truth and Scalelite registration (enabled only when the host is not draining
   or terminating).

bbbnode itself changes nothing on the host: the EFS mount, installing the
certificate and the host configuration are requests to the privileged host
helper (bbbnode/hostops.py, bbbnode/helper.py), or, with ``helper.socket``
empty, carried out in this process (bbbsim's emulated hosts).

Afterwards the protector, the drain, the certificate's renewal (host mode) or
new versions of the fleet certificate, and DNS re-assertion run as supervised
tasks. Nothing here ends a meeting: there is no panic call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from pydantic import SecretStr

from bbbcore import aws, logs, route53, secrets
from bbbcore.fleet_certificate import FleetCertificate
from bbbcore.imds import DEFAULT_ENDPOINT, ImdsClient, asg_name_fallback
from bbbcore.scalelite import ScaleliteClient
from bbbcore.secret_versions import VersionedSecret
from bbbnode import registration
from bbbnode.certificate_metrics import CertificateMetrics
from bbbnode.drain import (
    AsgLifecycle,
    Drain,
    DrainConfig,
    DrainReport,
    FleetDrainPort,
    LifecycleActionGone,
)
from bbbnode.exposition import NodeMetrics
from bbbnode.fleet_certificate import FleetCertificateWatch, InstallFailed
from bbbnode.helper_client import HelperClient
from bbbnode.hostops import (
    HostConfigRequest,
    HostStepInvalid,
    HostSteps,
    InstallCertificateRequest,
    MountEfsRequest,
)
from bbbnode.identity import Identity, fqdn, server_url
from bbbnode.launch import SETTLED, AsgLaunch, Launch, LaunchState, Phase
from bbbnode.protector import AsgProtection, Protector, ProtectorConfig, ProtectorReport
from bbbnode.runner import Runner
from bbbnode.sdnotify import Notifier
from bbbnode.settings import NodeSettings
from bbbnode.snapshot import Snapshot

if TYPE_CHECKING:
    # Imported where used: acme is loaded only when this host orders its own
    # certificate (tls.mode host); the fleet certificate needs none of it.
    from bbbcore.acme_dns01 import Route53Txt
    from bbbnode import tls

log = logs.get(__name__)


def host_steps_for(settings: NodeSettings, runner: Runner) -> HostSteps:
    """The helper behind ``helper.socket``, or this process when it is empty."""
    if settings.helper.socket:
        return HelperClient(settings.helper.socket, settings.helper.timeout)
    from bbbnode.hoststeps import LocalHostSteps

    return LocalHostSteps(settings, runner)


class StartupError(RuntimeError):
    """A start-up step failed for good; the daemon exits and systemd restarts it."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"{step}: {type(error).__name__}: {error}")
        self.step = step


@dataclass(frozen=True, slots=True)
class Membership:
    """What start-up established about this host."""

    identity: Identity
    fqdn: str
    server_url: str
    registered: bool
    phase: Phase = Phase.SERVING
    """Where the way in stopped: SERVING, or IN_POOL / LEFT_POOL for a warm pool host."""


class FleetNode:
    """Owns the AWS and Scalelite clients and the fleet tasks of one host."""

    def __init__(
        self,
        settings: NodeSettings,
        environ: Mapping[str, str],
        snapshot: Callable[[], Snapshot | None],
        metrics: NodeMetrics,
        runner: Runner,
        stale_after: float,
        bbb_secret: str,
        host: HostSteps | None = None,
        *,
        notifier: Notifier | None = None,
    ) -> None:
        self._settings = settings
        self._host = host or host_steps_for(settings, runner)
        self._notifier = notifier
        self._certificate_metrics = CertificateMetrics(metrics.registry)
        self._fleet_certificate: FleetCertificateWatch | None = None
        self._certificate: dict[str, Any] = {}
        # What Scalelite signs its calls to this host with (getMeetings, create, ...):
        # BBB's own securitySalt, never Scalelite's LOADBALANCER_SECRET.
        self._bbb_secret = bbb_secret
        self._environ = environ
        self._snapshot = snapshot
        self._metrics = metrics
        self._runner = runner
        self._stale_after = stale_after
        self._stack = contextlib.AsyncExitStack()
        self._session = aws.session(settings.aws.region)
        self.membership: Membership | None = None
        self.drain: Drain | None = None
        self.protector: Protector | None = None
        self._imds: ImdsClient | None = None
        self._records: route53.Route53Records | None = None
        self._txt: Route53Txt | None = None
        self._scalelite: ScaleliteClient | None = None
        self._scalelite_secret = ""
        self._autoscaling: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: dict[str, Callable[[], Awaitable[None]]] = {}
        self._ident: Identity | None = None
        self._turn_secret = ""
        self._registered = False
        self.launch: Launch | None = None

    async def close(self) -> None:
        """Release every client; in-flight calls have finished or been cancelled."""
        await self._stack.aclose()

    # --- start-up -----------------------------------------------------------

    async def _step(self, name: str, run: Callable[[], Awaitable[Any]]) -> Any:
        started = time.monotonic()
        try:
            result = await run()
        except Exception as exc:
            self._metrics.startup_errors.labels(name).inc()
            log.error("startup_step_failed", step=name, error=f"{type(exc).__name__}: {exc}")
            raise StartupError(name, exc) from exc
        log.info("startup_step_done", step=name, seconds=round(time.monotonic() - started, 3))
        return result

    async def _identity(self) -> Identity:
        s = self._settings
        if self._imds is None:
            endpoint = (
                s.aws.imds_endpoint
                or self._environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                or DEFAULT_ENDPOINT
            )
            self._imds = await self._stack.enter_async_context(
                ImdsClient(endpoint, timeout=s.aws.imds_timeout)
            )
        ident = await self._imds.identity()
        asg = s.aws.asg_name or ident.asg_name
        if asg is None:
            asg = await asg_name_fallback(self._session, ident.region, ident.instance_id)
        return dataclasses.replace(ident, asg_name=asg, region=s.aws.region or ident.region)

    async def _secret(self, value: Any, setting: str) -> str:
        if value is None:
            return ""
        plain = str(value.get_secret_value())
        return await secrets.resolve(
            plain, setting=setting, session_factory=lambda _r: self._session
        )

    async def start(self) -> Membership:
        """Run start-up until the host serves, or settles in (or out of) a warm pool;
        raises StartupError naming the step that failed."""
        s = self._settings
        ident: Identity = await self._step("identity", self._identity)
        self._ident = ident
        self._metrics.set_identity(ident.instance_id)
        self._scalelite_secret = await self._step(
            "secrets", lambda: self._secret(s.scalelite.secret, "scalelite.secret")
        )
        self._turn_secret = await self._step(
            "secrets", lambda: self._secret(s.hostconfig.turn_secret, "hostconfig.turn_secret")
        )
        self._records = await self._stack.enter_async_context(
            route53.open_route53(self._session, config=aws.client_config())
        )
        self._autoscaling = await self._stack.enter_async_context(
            self._session.client("autoscaling", config=aws.client_config())
        )
        self._http = await self._stack.enter_async_context(aiohttp.ClientSession())
        if s.tls.enabled and s.tls.mode == "fleet":
            name, _ = self._names(ident)
            self._fleet_certificate = await self._watch_fleet_certificate(name)
        elif s.tls.enabled:
            from bbbnode import tls

            self._txt = tls.route53_txt(self._records, s.dns.zone_id, s.tls)
        self.launch = Launch(
            self,
            hooked=bool(s.lifecycle.launch_hook_name),
            poll_interval=s.lifecycle.poll_interval,
            report=self._launch_report,
        )
        state = await self.launch.until(SETTLED)
        self.membership = self._membership(state.phase)
        name, url = self.membership.fqdn, self.membership.server_url
        if state.phase is Phase.SERVING:
            log.info("joined_fleet", fqdn=name, server_url=url, registered=self._registered)
        else:
            log.info("warm_pool_settled", phase=state.phase, fqdn=name)
        return self.membership

    async def until_serving(self) -> None:
        """After a start that settled in the warm pool: wait until the instance enters
        service (a pool kept running or hibernated; a stopped one boots anew), then join."""
        assert self.launch is not None
        await self.launch.until(frozenset({Phase.SERVING}))
        self.membership = self._membership(Phase.SERVING)
        log.info(
            "joined_fleet", fqdn=self.membership.fqdn, server_url=self.membership.server_url,
            registered=self._registered,
        )  # fmt: skip

    def _membership(self, phase: Phase) -> Membership:
        ident = self._ident
        assert ident is not None
        name, url = self._names(ident)
        return Membership(ident, name, url, self._registered, phase)

    @property
    def serving(self) -> bool:
        return self.launch is not None and self.launch.state.phase is Phase.SERVING

    def _names(self, ident: Identity | None) -> tuple[str, str]:
        assert ident is not None
        s = self._settings
        name = fqdn(s.dns.name_template, ident, s.dns.domain)
        return name, server_url(s.scalelite.server_url_template, name, ident)

    def _launch_report(self, state: LaunchState) -> None:
        self._metrics.set_launch_phase(str(state.phase))

    # --- the way in (bbbnode.launch.LaunchPort) ---------------------------------

    async def target_state(self) -> str | None:
        assert self._imds is not None
        return await self._imds.target_lifecycle_state()

    def _launch_action(self) -> AsgLaunch:
        ident = self._ident
        assert ident is not None
        return AsgLaunch(
            self._autoscaling, ident.asg_name or "", ident.instance_id,
            self._settings.lifecycle.launch_hook_name,
        )  # fmt: skip

    async def asg_state(self) -> str | None:
        return await self._launch_action().state()

    async def complete(self) -> None:
        await self._launch_action().complete()

    async def _ensure_efs(self) -> None:
        if self._settings.efs.enabled:
            assert self._ident is not None
            await self._host.run(MountEfsRequest(region=self._ident.region))

    async def _ensure_tls(self, name: str) -> None:
        s = self._settings
        # A certificate that is ours but not yet nginx's is no failure of start-up:
        # installing it checks nginx, whose TLS server the host configuration sets up;
        # the fleet certificate's watch or the renewal task tries again.
        if self._fleet_certificate is not None:
            try:
                await self._fleet_certificate.first()
            except InstallFailed as exc:
                log.warning("tls_install_deferred", error=str(exc))
        elif self._txt is not None:
            from bbbnode import tls

            try:
                status = await tls.ensure_until_issued(
                    s.tls, name, self._txt, self._runner, rate_limited=self._rate_limited_at_start,
                    retry_interval=s.tls.rate_limit_retry,
                    install=self._install_certificate, deliver_always=True,
                )  # fmt: skip
            except tls.HookFailed as exc:
                log.warning("tls_install_deferred", error=str(exc))
                status = exc.status
            self._host_certificate(status)

    async def warm_up(self) -> None:
        """Into the warm pool: what needs neither the public address nor serving. The first
        collection (BBB answers) came before; the EFS mount and the certificate go through
        the host helper. No A record, no host configuration, no Scalelite."""
        name, _ = self._names(self._ident)
        await asyncio.gather(
            self._step("efs", self._ensure_efs), self._step("tls", lambda: self._ensure_tls(name))
        )

    async def clean_up(self) -> None:
        """Terminated from the warm pool: nothing was served, so no drain. An A record left
        from an earlier life goes (only if it still points here), then the termination hook
        is completed so the instance does not wait out its heartbeat timeout."""
        s = self._settings
        ident = self._ident
        assert ident is not None
        assert self._records is not None
        name, _ = self._names(ident)
        if s.dns.enabled:
            ip = ident.public_ipv4 or ident.local_ipv4
            await self._records.delete_a_record_if_ours(s.dns.zone_id, name, ip)
        if not s.lifecycle.enabled:
            return
        hook = AsgLifecycle(
            self._autoscaling, ident.asg_name or "", ident.instance_id, s.lifecycle.hook_name
        )
        await self._step("leave_pool", lambda: complete_pool_termination(
            hook, s.lifecycle.poll_interval
        ))  # fmt: skip

    async def join(self) -> None:
        """Into service: the A record, the mount, the certificate and the host
        configuration for the addresses the instance has now (a warm host that started has
        a new public address: read again, never reused from the warm-up)."""
        s = self._settings
        ident: Identity = await self._step("identity", self._identity)
        self._ident = ident
        name, url = self._names(ident)
        assert self._records is not None
        records = self._records

        async def ensure_dns() -> None:
            if s.dns.enabled:
                ip = ident.public_ipv4 or ident.local_ipv4
                await records.ensure_a_record(s.dns.zone_id, name, ip, s.dns.ttl)

        await asyncio.gather(
            self._step("dns", ensure_dns), self._step("efs", self._ensure_efs),
            self._step("tls", lambda: self._ensure_tls(name)),
        )  # fmt: skip

        async def configure() -> None:
            if s.hostconfig.enabled:
                if not ident.public_ipv4:
                    raise HostStepInvalid("the instance has no public IPv4 address for media")
                secret = self._turn_secret
                await self._host.run(
                    HostConfigRequest(
                        fqdn=name, public_ip=ident.public_ipv4, private_ip=ident.local_ipv4,
                        turn_secret=SecretStr(secret) if secret else None,
                    )
                )  # fmt: skip

        await self._step("hostconfig", configure)
        self._build_fleet_tasks(ident, name, url)

    async def register(self) -> None:
        _, url = self._names(self._ident)
        self._registered = await self._step("scalelite", lambda: self._register(url))

    async def _watch_fleet_certificate(self, fqdn: str) -> FleetCertificateWatch:
        s = self._settings.tls
        client = await self._stack.enter_async_context(
            self._session.client("secretsmanager", config=aws.client_config())
        )
        return FleetCertificateWatch(
            VersionedSecret(client, s.fleet_secret),
            fqdn,
            self._install_certificate,
            installed=self._fleet_certificate_installed,
            failed=lambda reason: self._certificate_metrics.update_errors.labels(reason).inc(),
            poll_interval=s.fleet_poll_interval,
            wait=s.fleet_wait,
        )

    def _fleet_certificate_installed(self, certificate: FleetCertificate, version_id: str) -> None:
        self._certificate_metrics.installed(certificate.not_after)
        self._certificate = {
            "mode": "fleet",
            "names": list(certificate.names),
            "not_after": certificate.not_after.isoformat(),
            "version_id": version_id,
        }

    def _host_certificate(self, status: tls.CertificateStatus) -> None:
        self._certificate_metrics.installed(status.not_after)
        self._certificate = {
            "mode": "host",
            "names": [status.fqdn],
            "not_after": status.not_after.isoformat(),
        }

    def _rate_limited(self, until: dt.datetime, _wait: float) -> None:
        self._certificate_metrics.rate_limited(until)
        self._certificate["rate_limited_until"] = until.isoformat()

    def _rate_limited_at_start(self, until: dt.datetime, wait: float) -> None:
        self._rate_limited(until, wait)
        if self._notifier is not None:
            # Waiting out the CA is not a hung start: systemd would otherwise kill us at
            # TimeoutStartSec and the restart would only ask the CA again.
            self._notifier.send(f"EXTEND_TIMEOUT_USEC={int((wait + 120) * 1_000_000)}")
            self._notifier.status(f"rate-limited by the ACME CA until {until.isoformat()}")

    async def _install_certificate(self, chain: bytes, key: bytes) -> None:
        await self._host.run(
            InstallCertificateRequest(fullchain_pem=chain.decode(), key_pem=SecretStr(key.decode()))
        )

    async def _register(self, url: str) -> bool:
        """Resume the drain from the truth, then register; never enable a draining host."""
        assert self.drain is not None
        state = await self.drain.resume()
        if self._scalelite is None:
            return False
        server = await registration.register(
            self._scalelite, url, self._bbb_secret,
            self._settings.scalelite.load_multiplier, self._settings.scalelite.tag,
            draining=not state.may_enable,
        )  # fmt: skip
        return server is not None

    # --- long-running parts ---------------------------------------------------

    def _build_fleet_tasks(self, ident: Identity, name: str, url: str) -> None:
        s = self._settings
        self._tasks = {}
        assert self._imds is not None
        assert self._records is not None
        imds, records = self._imds, self._records
        asg_name = ident.asg_name or ""

        async def delete_dns() -> None:
            if s.dns.enabled:
                ip = ident.public_ipv4 or ident.local_ipv4
                await records.delete_a_record_if_ours(s.dns.zone_id, name, ip)

        autoscaling = self._autoscaling
        lifecycle = AsgLifecycle(autoscaling, asg_name, ident.instance_id, s.lifecycle.hook_name)
        if s.scalelite.enabled:
            assert self._http is not None
            self._scalelite = ScaleliteClient(
                self._http, s.scalelite.url, self._scalelite_secret,
                algorithm=s.scalelite.checksum,
            )  # fmt: skip
        port = FleetDrainPort(
            self._scalelite, url, lifecycle, imds.target_lifecycle_state, delete_dns
        )

        self.drain = Drain(
            port,
            DrainConfig.from_settings(s.lifecycle),
            self._snapshot,
            stale_after=self._stale_after,
            poll_interval=s.lifecycle.poll_interval,
            recordings_tracked=s.recordings.enabled,
            report=self._drain_report,
            deadline=lifecycle.deadline,
        )
        self.protector = Protector(
            AsgProtection(autoscaling, asg_name, ident.instance_id),
            ProtectorConfig.from_settings(s.protection),
            self._snapshot,
            stale_after=self._stale_after,
            interval=s.bbb.poll_interval,
            terminating=lambda: (
                self.drain is not None
                and self.drain.state is not None
                and self.drain.state.terminating
            ),
            report=self._protector_report,
        )
        if s.lifecycle.enabled:
            self._tasks["drain"] = self.drain.run
        if s.protection.enabled:
            self._tasks["protector"] = self.protector.run
        if self._fleet_certificate is not None:
            self._tasks["fleet_certificate"] = self._fleet_certificate.run
        elif self._txt is not None:
            from bbbnode import tls

            txt = self._txt
            self._tasks["tls_renewal"] = lambda: tls.renew_forever(
                s.tls, name, txt, self._runner, sleep=asyncio.sleep,
                retry_interval=s.tls.rate_limit_retry, issued=self._host_certificate,
                rate_limited=self._rate_limited,
                install=self._install_certificate,
            )  # fmt: skip
        if s.dns.enabled:
            self._tasks["dns_reassert"] = lambda: reassert_dns_forever(
                imds.metadata, records.ensure_a_record, s.dns.zone_id, name, s.dns.ttl
            )

    def tasks(self) -> Mapping[str, Callable[[], Awaitable[None]]]:
        """The supervised tasks to run after start-up, by name."""
        return dict(self._tasks)

    def _drain_report(self, report: DrainReport) -> None:
        self._metrics.set_drain_phase(str(report.state.phase))
        self._metrics.lifecycle_deadline = report.deadline
        for action in report.executed:
            outcome = "forced" if getattr(action, "forced", False) else "ok"
            self._metrics.drain_actions.labels(str(action.kind), outcome).inc()
        for kind in report.failed:
            self._metrics.drain_actions.labels(str(kind), "failed").inc()

    def _protector_report(self, report: ProtectorReport) -> None:
        if report.protected is not None:
            self._metrics.scale_in_protected.set(int(report.protected))
        if report.error is not None:
            self._metrics.aws_errors.labels("protection").inc()

    # --- operator requests ----------------------------------------------------

    async def request(self, kind: str) -> dict[str, Any]:
        """``drain`` or ``undrain`` from the operator (CLI or POST)."""
        if self.drain is None:
            return {"accepted": False, "reason": "start-up has not finished"}
        accepted = self.drain.request(kind)  # type: ignore[arg-type]
        state = self.drain.state
        return {
            "accepted": accepted,
            "request": kind,
            "phase": None if state is None else str(state.phase),
        }

    def status(self) -> dict[str, Any]:
        """The fleet part of /status."""
        doc: dict[str, Any] = {}
        if self.launch is not None:
            doc["launch_phase"] = str(self.launch.state.phase)
        if self.membership is not None:
            doc["instance_id"] = self.membership.identity.instance_id
            doc["fqdn"] = self.membership.fqdn
            doc["scalelite_server_url"] = self.membership.server_url
        if self.drain is not None and self.drain.state is not None:
            doc["drain_phase"] = str(self.drain.state.phase)
            doc["terminating"] = self.drain.state.terminating
        if self.protector is not None:
            doc["scale_in_protected"] = self.protector.state.actual
        if self._certificate:
            # Names, expiry and the secret's version: never the key.
            doc["certificate"] = dict(self._certificate)
        return doc


async def complete_pool_termination(
    hook: AsgLifecycle,
    poll_interval: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Complete the termination hook of an instance leaving the warm pool, once it waits.

    A warm pool instance AWS terminates is ``Warmed:Terminating`` for a moment, then
    ``Warmed:Terminating:Wait`` while the termination hooks hold it. Only the wait has an
    action to complete; a describe that shows it past the wait (or no more) ends this.
    """
    while True:
        state = await hook.state()
        if state == "Warmed:Terminating:Wait":
            try:
                await hook.complete()
                log.info("pool_termination_completed")
            except LifecycleActionGone:
                pass  # completed by a run before this one, or timed out: see next round
        elif state != "Warmed:Terminating":
            return
        await sleep(poll_interval)


async def reassert_dns_forever(
    metadata: Callable[[str], Awaitable[str | None]],
    ensure_a_record: Callable[[str, str, str, int], Awaitable[bool]],
    zone_id: str,
    name: str,
    ttl: int,
    interval: float = 300.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Keep the A record on the host's current public IP (an Elastic IP may move)."""
    while True:
        await sleep(interval)
        ip = await metadata("public-ipv4") or await metadata("local-ipv4")
        if ip and await ensure_a_record(zone_id, name, ip, ttl):
            log.info("dns_reasserted", fqdn=name, ip=ip)
