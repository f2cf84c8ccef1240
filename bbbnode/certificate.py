"""The host's TLS certificate: reading PEM material, installing it for nginx and coturn.

Whoever obtains the certificate (bbbnode's own ACME client today, the fleet's
certificate from Secrets Manager later) hands over the PEM chain and key;
``install_certificate`` checks that they belong together, writes them where
nginx and coturn read them and makes both take them. It is one privileged
operation of the host helper (bbbnode/hoststeps.py).

Files, under ``/etc/bbbfleet/tls``: ``fullchain.pem`` (0644: a certificate is
public), ``privkey.pem`` (0600 root: nginx's master reads it as root) and
``turnserver-privkey.pem`` (0640 root:turnserver), the copy coturn reads: coturn
runs as user turnserver and never holds root, and a world-readable key is not
an option.

nginx takes a new certificate on reload. coturn re-reads its certificate and
key on SIGUSR2 without dropping allocations (coturn/coturn
``src/apps/relay/mainrelay.c``: the SIGUSR2 handler ``reload_ssl_certs``, since
4.5.2), so a renewal never cuts the relayed media of a live meeting the way a
restart would.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from bbbcore import logs
from bbbcore.certinfo import CertInfo, cert_info, key_public_der
from bbbnode.files import write_atomic
from bbbnode.runner import CommandFailed, Runner, check

log = logs.get(__name__)

Install = Callable[[bytes, bytes], Awaitable[None]]
"""Hands a PEM chain and key to whatever makes nginx and coturn serve them (in production
the helper's install_certificate behind its socket, bbbnode/fleet.py)."""

CERT_DIR = Path("/etc/bbbfleet/tls")
TURN_GROUP = "turnserver"
"""coturn's user and group on Ubuntu (the coturn package's unit runs as them)."""
MAX_PEM_BYTES = 64 * 1024


class CertificateInvalid(ValueError):
    """The PEM material is not a usable certificate chain and matching key."""


class CertificateInstallFailed(RuntimeError):
    """nginx or coturn refused the new certificate; the old files are back in place."""


def check_pair(chain_pem: bytes, key_pem: bytes, now: dt.datetime | None = None) -> CertInfo:
    """The leaf of ``chain_pem`` after checking that ``key_pem`` is its key and it is valid now.

    Never echoes the key: a message names only what is wrong.
    """
    if len(chain_pem) > MAX_PEM_BYTES or len(key_pem) > MAX_PEM_BYTES:
        raise CertificateInvalid(f"PEM material over {MAX_PEM_BYTES} bytes")
    try:
        info = cert_info(chain_pem)
    except ValueError:
        raise CertificateInvalid("the chain holds no readable certificate") from None
    try:
        public = key_public_der(key_pem)
    except (ValueError, TypeError):
        raise CertificateInvalid("the key is not a readable unencrypted PEM private key") from None
    if public != info.public_key_der:
        raise CertificateInvalid("the key does not belong to the chain's first certificate")
    if info.not_after <= (now or dt.datetime.now(dt.UTC)):
        raise CertificateInvalid(f"the certificate expired at {info.not_after.isoformat()}")
    return info


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where nginx and coturn read the installed certificate."""

    directory: Path = CERT_DIR

    @property
    def fullchain(self) -> Path:
        return self.directory / "fullchain.pem"

    @property
    def privkey(self) -> Path:
        return self.directory / "privkey.pem"

    @property
    def turn_privkey(self) -> Path:
        return self.directory / "turnserver-privkey.pem"

    def under(self, root: Path) -> CertFiles:
        """The same layout re-rooted at ``root`` (a tree being prepared, tests)."""
        return CertFiles(root / str(self.directory).lstrip("/"))


@dataclass(frozen=True, slots=True)
class CertFile:
    """One file of the installed certificate and who may read it."""

    path: Path
    content: bytes = field(repr=False)
    mode: int
    group: str | None = None


@dataclass(frozen=True, slots=True)
class CertInstallResult:
    """What one install_certificate run did."""

    changed: tuple[Path, ...]
    not_after: dt.datetime
    nginx_reloaded: bool
    coturn_reloaded: bool


def wanted_files(chain_pem: bytes, key_pem: bytes, files: CertFiles) -> tuple[CertFile, ...]:
    """The installed certificate's files with their modes."""
    return (
        CertFile(files.fullchain, chain_pem, 0o644),
        CertFile(files.privkey, key_pem, 0o600),
        CertFile(files.turn_privkey, key_pem, 0o640, TURN_GROUP),
    )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


async def install_certificate(
    chain_pem: bytes,
    key_pem: bytes,
    runner: Runner,
    *,
    files: CertFiles = CertFiles(),
    commands: bool = True,
) -> CertInstallResult:
    """Install the chain and key for nginx and coturn; reload them only when something changed.

    ``commands`` False writes the files only (a tree being prepared). When
    nginx refuses the new files, the old ones are put back (so the next call
    tries again) and CertificateInstallFailed is raised.
    """
    info = check_pair(chain_pem, key_pem)
    changed: list[tuple[CertFile, bytes | None]] = []
    for wanted in wanted_files(chain_pem, key_pem, files):
        old = _read(wanted.path)
        if old != wanted.content:
            changed.append((wanted, old))
    if not changed:
        return CertInstallResult((), info.not_after, False, False)
    files.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    for wanted, _old in changed:
        write_atomic(wanted.path, wanted.content, mode=wanted.mode, group_if_new=wanted.group)
        log.info("certificate_file_written", path=str(wanted.path))
    nginx = coturn = False
    if commands:
        try:
            for command in (("nginx", "-t", "-q"), ("systemctl", "reload", "nginx")):
                check(await runner(command))
            nginx = True
            coturn = await _reload_coturn(runner)
        except CommandFailed as exc:
            _restore(changed)
            raise CertificateInstallFailed(str(exc)) from exc
    log.info(
        "certificate_installed",
        not_after=info.not_after.isoformat(),
        files=len(changed),
        nginx_reloaded=nginx,
        coturn_reloaded=coturn,
    )
    return CertInstallResult(tuple(w.path for w, _ in changed), info.not_after, nginx, coturn)


async def _reload_coturn(runner: Runner) -> bool:
    """SIGUSR2 to a running coturn; a stopped one reads the files when it starts."""
    if not (await runner(("systemctl", "is-active", "--quiet", "coturn.service"))).ok:
        return False
    check(await runner(("systemctl", "kill", "--signal=SIGUSR2", "coturn.service")))
    return True


def _restore(changed: list[tuple[CertFile, bytes | None]]) -> None:
    for wanted, old in reversed(changed):
        if old is None:
            with suppress(FileNotFoundError):
                os.unlink(wanted.path)
        else:
            write_atomic(wanted.path, old, mode=wanted.mode)
        log.warning("certificate_file_restored", path=str(wanted.path))
