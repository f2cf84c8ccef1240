"""Carrying out the host helper's operations (bbbnode/hostops.py) in this process.

This is the privileged code: ``bbbnode host-helper`` runs it as root behind its
socket, ``bbbnode host-config`` runs it for an operator, and bbbsim's emulated
hosts run it inside bbbnode (with a scratch root and commands only written
down). Every path, port and file system comes from the configuration this
process read itself; a request only brings names, addresses and PEM material.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bbbcore import logs
from bbbnode import certificate, efs, hostconfig, netstate
from bbbnode.certificate import CertFiles
from bbbnode.hostops import (
    HostConfigRequest,
    HostStepFailed,
    HostStepInvalid,
    InstallCertificateRequest,
    MountEfsRequest,
    Request,
)
from bbbnode.runner import CommandFailed, Runner
from bbbnode.settings import NodeSettings

log = logs.get(__name__)


@dataclass(frozen=True, slots=True)
class LocalHostSteps:
    """HostSteps carried out here, against ``root`` (``/`` on a real host)."""

    settings: NodeSettings
    runner: Runner
    root: Path | None = None
    """None: the configured hostconfig.root."""
    files_only: bool = False
    """Write files under the root and run nothing (``host-config --root``)."""

    @property
    def tree(self) -> Path:
        return self.root if self.root is not None else self.settings.hostconfig.root

    @property
    def cert_files(self) -> CertFiles:
        """Where the certificate goes in this tree (nginx and coturn name CERT_DIR itself)."""
        return CertFiles().under(self.tree)

    def facts(self, request: HostConfigRequest) -> hostconfig.HostFacts:
        """The host facts a request and this process's configuration describe."""
        s = self.settings.hostconfig
        configured = request.turn_secret.get_secret_value() if request.turn_secret else None
        paths = hostconfig.HostPaths.under(self.tree)
        served = CertFiles()
        try:
            return hostconfig.HostFacts(
                fqdn=request.fqdn,
                public_ip=request.public_ip,
                local_ip=request.private_ip,
                cert_file=served.fullchain,
                key_file=served.privkey,
                turn_key_file=served.turn_privkey,
                turn_secret=hostconfig.resolve_turn_secret(configured, paths.coturn_conf),
                turn_port=s.turn_port,
                turns_port=s.turns_port,
            )
        except hostconfig.HostConfigError as exc:
            raise HostStepInvalid(str(exc)) from None

    def plan(self, request: HostConfigRequest) -> tuple[hostconfig.FileChange, ...]:
        """The files a host configuration would change (``--dry-run``)."""
        paths = hostconfig.HostPaths.under(self.tree)
        try:
            return hostconfig.plan_host_config(
                self.facts(request), hostconfig.read_current(paths), paths=paths
            )
        except (hostconfig.HostConfigError, netstate.NetStateError) as exc:
            raise HostStepFailed(str(exc)) from exc

    async def run(self, request: Request) -> dict[str, Any]:
        """Carry out one request; HostStepInvalid or HostStepFailed when it cannot be done."""
        if isinstance(request, HostConfigRequest):
            return await self._host_config(request)
        if isinstance(request, InstallCertificateRequest):
            return await self._install_certificate(request)
        return await self._mount_efs(request)

    async def _host_config(self, request: HostConfigRequest) -> dict[str, Any]:
        facts = self.facts(request)
        paths = hostconfig.HostPaths.under(self.tree)
        try:
            result = await hostconfig.apply_host_config(
                facts, self.runner, paths=paths, network=True, commands=not self.files_only
            )
        except (hostconfig.HostConfigError, hostconfig.HostConfigFailed, OSError) as exc:
            raise HostStepFailed(str(exc)) from exc
        except netstate.NetStateError as exc:
            raise HostStepFailed(str(exc)) from exc
        return {
            "changed": [str(path) for path in result.changed],
            "restarted": list(result.restarted),
        }

    async def _install_certificate(self, request: InstallCertificateRequest) -> dict[str, Any]:
        chain = request.fullchain_pem.encode()
        key = request.key_pem.get_secret_value().encode()
        try:
            result = await certificate.install_certificate(
                chain, key, self.runner, files=self.cert_files, commands=not self.files_only
            )
        except certificate.CertificateInvalid as exc:
            raise HostStepInvalid(str(exc)) from None
        except (certificate.CertificateInstallFailed, OSError) as exc:
            raise HostStepFailed(str(exc)) from exc
        return {
            "changed": [str(path) for path in result.changed],
            "not_after": result.not_after.isoformat(),
            "nginx_reloaded": result.nginx_reloaded,
            "coturn_reloaded": result.coturn_reloaded,
        }

    async def _mount_efs(self, request: MountEfsRequest) -> dict[str, Any]:
        s = self.settings.efs
        if self.files_only:
            raise HostStepInvalid("mount_efs changes kernel state: not with --root")
        if not s.enabled or not s.file_system_id:
            raise HostStepInvalid("efs is not enabled in the helper's configuration")
        try:
            target, paths = efs.from_settings(s, request.region)
            status = await efs.ensure_efs(target, self.runner, paths=paths)
        except efs.EfsConfigError as exc:
            raise HostStepInvalid(str(exc)) from None
        except (efs.EfsError, CommandFailed, OSError) as exc:
            raise HostStepFailed(str(exc)) from exc
        return {
            "mounted_now": status.mounted_now,
            "method": None if status.method is None else status.method.value,
            "fstab_changed": status.fstab_changed,
            "spool_dir": str(status.spool_dir),
        }
