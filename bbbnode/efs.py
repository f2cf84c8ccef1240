"""The shared recordings file system (EFS) and Scalelite's hand-over directory.

Pure core: mountinfo parsing, deciding whether the mount point already holds
our file system, the fstab line, its mount unit's name and Scalelite's
``scalelite.yml``. Imperative shell: ``ensure_efs`` reads the host's state,
runs the commands through the injected runner and writes files atomically.

The mount itself is systemd's: the fstab line is written first, then
``systemctl daemon-reload`` and ``systemctl start <mount unit>`` have PID 1
mount it. The host helper runs in its own mount namespace (ProtectSystem=
and friends), where a ``mount`` of its own would stay invisible to the rest of
the host; a mount PID 1 makes is everyone's, the helper sees it through mount
propagation, and it is the same mount unit every later boot starts from fstab
(with efs-utils' TLS tunnel in that unit's cgroup).

Facts this relies on (amazon-efs-utils, Scalelite's shared-volume guide):

- ``mount -t efs -o tls,iam,accesspoint=fsap-… fs-…:/ DIR`` goes through the
  efs-utils TLS tunnel, so the kernel mount shows up in mountinfo as
  ``nfs4`` from ``127.0.0.1:/`` with ``port=<tunnel port>``; efs-utils keeps
  a state file ``<fs-id>.<mount point with / as .>.<port>`` in /var/run/efs.
- Scalelite's importer runs as uid 1000; BBB hosts write through a group with
  a fixed gid (2000 in Scalelite's guide), so the spool is 1000:2000, 0775.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import stat as stat_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bbbcore import logs
from bbbnode.files import write_atomic
from bbbnode.runner import CommandFailed, Runner, check
from bbbnode.settings import EfsSettings

log = logs.get(__name__)

NFS_OPTIONS = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
"""AWS's recommended options for a plain NFS client of EFS."""
FSTAB_OPTIONS = "_netdev,nofail"
"""A network mount that must never hold up or fail the boot."""
DEFAULT_WORK_DIR = "/var/bigbluebutton/recording/scalelite"
"""Scalelite's default local work directory (the post-publish script requires the key)."""
HELPER_SEARCH_PATH = "/sbin:/usr/sbin:/bin:/usr/bin"
"""Where mount(8) looks for mount.<type> helpers, independent of the daemon's PATH."""

_FS_ID = re.compile(r"^fs-[0-9a-f]{8,40}$")
_AP_ID = re.compile(r"^fsap-[0-9a-f]{8,40}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_OCTAL = re.compile(r"\\([0-7]{3})")


class EfsError(RuntimeError):
    """The recordings file system cannot be brought into the wanted state."""


class EfsConfigError(EfsError, ValueError):
    """A file system id, access point, region or path is not usable."""


class ForeignMount(EfsError):
    """Something other than our file system is mounted at the mount point."""


class MountState(enum.Enum):
    ABSENT = "absent"
    OURS = "ours"
    FOREIGN = "foreign"


class Method(enum.Enum):
    EFS = "efs"
    NFS4 = "nfs4"


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One line of /proc/self/mountinfo, escapes decoded."""

    mount_id: int
    parent_id: int
    device: str
    root: str
    mount_point: str
    mount_options: str
    optional_fields: tuple[str, ...]
    fs_type: str
    source: str
    super_options: str

    def super_option(self, name: str) -> str | None:
        """Value of ``name=…`` among the super options (None if absent)."""
        for item in self.super_options.split(","):
            key, sep, value = item.partition("=")
            if key == name:
                return value if sep else ""
        return None


@dataclass(frozen=True, slots=True)
class EfsTarget:
    """What should be mounted where."""

    file_system_id: str
    mount_point: Path
    region: str
    access_point_id: str = ""
    spool_subdir: str = "var/bigbluebutton/spool"
    nfs_export: str = "/"
    """Path exported to the nfs4 fallback (an access point's root is not applied there)."""

    def __post_init__(self) -> None:
        if not _FS_ID.match(self.file_system_id):
            raise EfsConfigError(f"file_system_id {self.file_system_id!r} is not fs-<hex>")
        if self.access_point_id and not _AP_ID.match(self.access_point_id):
            raise EfsConfigError(f"access_point_id {self.access_point_id!r} is not fsap-<hex>")
        if not _REGION.match(self.region):
            raise EfsConfigError(f"region {self.region!r} is not an AWS region name")
        _check_path("mount_point", str(self.mount_point))
        if not self.mount_point.is_absolute() or self.mount_point == Path("/"):
            raise EfsConfigError("mount_point must be an absolute path other than /")
        sub = Path(self.spool_subdir)
        if sub.is_absolute() or ".." in sub.parts or not sub.parts:
            raise EfsConfigError("spool_subdir must be a relative path inside the mount")
        _check_path("spool_subdir", self.spool_subdir)
        if not self.nfs_export.startswith("/"):
            raise EfsConfigError("nfs_export must start with /")
        _check_path("nfs_export", self.nfs_export)

    @property
    def spool_dir(self) -> Path:
        return self.mount_point / self.spool_subdir

    def dns_name(self) -> str:
        return f"{self.file_system_id}.efs.{self.region}.amazonaws.com"


@dataclass(frozen=True, slots=True)
class EfsPaths:
    """Files ensure_efs reads and writes (real locations by default)."""

    fstab: Path = Path("/etc/fstab")
    mountinfo: Path = Path("/proc/self/mountinfo")
    scalelite_config: Path = Path("/usr/local/bigbluebutton/core/scripts/scalelite.yml")
    efs_state_dir: Path = Path("/var/run/efs")


@dataclass(frozen=True, slots=True)
class SpoolOwner:
    """Owner, group and mode Scalelite's importer expects on the spool directory."""

    uid: int = 1000
    gid: int = 2000
    mode: int = 0o775


@dataclass(frozen=True, slots=True)
class SpoolState:
    """What is at the spool path now."""

    is_dir: bool
    uid: int
    gid: int
    mode: int


@dataclass(frozen=True, slots=True)
class MountPlan:
    """What it takes to have the file system mounted and fstab in step."""

    state: MountState
    reason: str
    method: Method
    commands: tuple[tuple[str, ...], ...]
    fstab: str | None
    """New fstab content, or None when it is already right."""


@dataclass(frozen=True, slots=True)
class EfsStatus:
    """Outcome of one ensure_efs run."""

    mounted_now: bool
    method: Method | None
    """How it was mounted now; None when it already was."""
    reason: str
    fstab_changed: bool
    scalelite_config_changed: bool
    spool_dir: Path
    spool_fixed: bool


def from_settings(settings: EfsSettings, region: str) -> tuple[EfsTarget, EfsPaths]:
    """The target and file paths an ``[efs]`` settings section describes."""
    target = EfsTarget(
        file_system_id=settings.file_system_id,
        access_point_id=settings.access_point_id,
        mount_point=settings.mount_point,
        region=region,
        spool_subdir=settings.spool_subdir,
    )
    paths = EfsPaths(
        fstab=settings.fstab,
        mountinfo=settings.mountinfo,
        scalelite_config=settings.scalelite_config,
    )
    return target, paths


def _check_path(name: str, value: str) -> None:
    # These strings end up in argv, fstab (escaped) and YAML (quoted); control
    # characters would still split lines there.
    if not value or any(ord(ch) < 32 or ord(ch) == 127 for ch in value) or "#" in value:
        raise EfsConfigError(f"{name} {value!r} must not be empty or hold control characters or #")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def _escape(field: str) -> str:
    # The kernel's and fstab's escaping of the characters that would split fields.
    return "".join(f"\\{ord(ch):03o}" if ch in " \t\n\\" else ch for ch in field)


def parse_mountinfo(text: str) -> tuple[MountEntry, ...]:
    """Entries of /proc/self/mountinfo; lines that do not parse are skipped."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        try:
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        entries.append(
            MountEntry(
                mount_id=mount_id,
                parent_id=parent_id,
                device=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                mount_options=fields[5],
                optional_fields=tuple(fields[6:sep]),
                fs_type=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                super_options=" ".join(fields[sep + 3 :]),
            )
        )
    return tuple(entries)


def find_mount(entries: Sequence[MountEntry], mount_point: str | Path) -> MountEntry | None:
    """The mount visible at ``mount_point``: the last one stacked there, if any."""
    wanted = os.path.normpath(str(mount_point))
    found: MountEntry | None = None
    for entry in entries:
        if os.path.normpath(entry.mount_point) == wanted:
            found = entry
    return found


def state_file_suffix(mount_point: Path, port: str) -> str:
    """The part after ``<fs-id>.`` of efs-utils' state file for this mount."""
    mangled = os.path.abspath(str(mount_point)).replace(os.sep, ".").lstrip(".")
    return f"{mangled}.{port}"


def classify(
    entry: MountEntry | None,
    target: EfsTarget,
    state_files: Sequence[str] | None = None,
) -> tuple[MountState, str]:
    """Whether the mount at the mount point is ours, something else, or absent.

    ``state_files`` are the names in efs-utils' state directory (None when it
    could not be read): they tell which file system hides behind a TLS tunnel.
    """
    if entry is None:
        return MountState.ABSENT, "nothing mounted"
    if entry.fs_type not in ("nfs4", "nfs"):
        return MountState.FOREIGN, f"{entry.fs_type} from {entry.source} is mounted there"
    host, _, export = entry.source.rpartition(":")
    if host.startswith(f"{target.file_system_id}.efs."):
        if os.path.normpath(export or "/") != os.path.normpath(target.nfs_export):
            return MountState.FOREIGN, f"{export} of this file system is mounted, not the export"
        return MountState.OURS, "mounted over nfs4 from the file system's DNS name"
    if host.startswith("fs-") and ".efs." in host:
        return MountState.FOREIGN, f"another EFS file system ({host.split('.')[0]}) is mounted"
    if host == "127.0.0.1":
        port = entry.super_option("port")
        if state_files is None or port is None:
            return MountState.OURS, "efs-utils tunnel mount; file system not verifiable"
        suffix = "." + state_file_suffix(target.mount_point, port)
        owners = {name[: -len(suffix)] for name in state_files if name.endswith(suffix)}
        if not owners:
            return MountState.OURS, "efs-utils tunnel mount; no state file to verify it"
        if owners == {target.file_system_id}:
            return MountState.OURS, "efs-utils tunnel mount of this file system"
        return MountState.FOREIGN, f"efs-utils tunnel mount of {', '.join(sorted(owners))}"
    return MountState.FOREIGN, f"nfs from {entry.source} is mounted there"


_UNIT_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def mount_unit(mount_point: Path) -> str:
    """The mount unit systemd makes for ``mount_point`` (systemd-escape --path --suffix=mount)."""
    parts = [part for part in str(mount_point).split("/") if part]
    if not parts:
        return "-.mount"
    out: list[str] = []
    for i, ch in enumerate("/".join(parts)):
        if ch == "/":
            out.append("-")
        elif ch in _UNIT_PLAIN and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{byte:02x}" for byte in ch.encode())
    return "".join(out) + ".mount"


def mount_commands(target: EfsTarget) -> tuple[tuple[str, ...], ...]:
    """What has PID 1 mount the fstab entry for ``target``."""
    return (("systemctl", "daemon-reload"), ("systemctl", "start", mount_unit(target.mount_point)))


def _efs_options(target: EfsTarget) -> str:
    options = "tls,iam"
    if target.access_point_id:
        options += f",accesspoint={target.access_point_id}"
    return options


def fstab_line(target: EfsTarget, method: Method) -> str:
    """The fstab entry that mounts the same thing at boot."""
    mount_point = _escape(str(target.mount_point))
    if method is Method.EFS:
        return (
            f"{target.file_system_id}:/ {mount_point} efs "
            f"{FSTAB_OPTIONS},{_efs_options(target)} 0 0"
        )
    return (
        f"{target.dns_name()}:{target.nfs_export} {mount_point} nfs4 "
        f"{FSTAB_OPTIONS},{NFS_OPTIONS} 0 0"
    )


def update_fstab(text: str, mount_point: Path, line: str) -> str:
    """``text`` with the entry for ``mount_point`` set to ``line``; other lines untouched."""
    wanted = os.path.normpath(str(mount_point))
    out: list[str] = []
    placed = False
    for existing in text.splitlines():
        fields = existing.split()
        ours = len(fields) >= 2 and not fields[0].startswith("#")
        if ours and os.path.normpath(_unescape(fields[1])) == wanted:
            # Duplicates for the same mount point would race at boot: keep one.
            if not placed:
                out.append(line)
                placed = True
            continue
        out.append(existing)
    if not placed:
        out.append(line)
    return "\n".join(out) + "\n"


def plan_mount(
    target: EfsTarget,
    entry: MountEntry | None,
    fstab_text: str,
    *,
    helper_available: bool,
    state_files: Sequence[str] | None = None,
) -> MountPlan:
    """The commands and fstab content that get ``target`` mounted; ForeignMount if occupied."""
    state, reason = classify(entry, target, state_files)
    if state is MountState.FOREIGN:
        raise ForeignMount(f"{target.mount_point}: {reason}")
    method = Method.EFS if helper_available else Method.NFS4
    commands: tuple[tuple[str, ...], ...] = ()
    if state is MountState.ABSENT:
        commands = mount_commands(target)
    new_fstab = update_fstab(fstab_text, target.mount_point, fstab_line(target, method))
    return MountPlan(
        state=state,
        reason=reason,
        method=method,
        commands=commands,
        fstab=None if new_fstab == fstab_text else new_fstab,
    )


_YAML_PLAIN = re.compile(r"^[A-Za-z0-9_./@+-][A-Za-z0-9_./@+:-]*$")
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:(\s|$)")


def _yaml_scalar(value: str) -> str:
    if _YAML_PLAIN.match(value) and not value.endswith(":"):
        return value
    return "'" + value.replace("'", "''") + "'"


SCALELITE_TEMPLATE = """\
# Scalelite recording transfer (scalelite_post_publish.rb).
# bbbfleet keeps spool_dir pointed at the shared recordings file system;
# the other keys are yours.
work_dir: {work_dir}
spool_dir: {spool_dir}
"""


def render_scalelite_config(current: str | None, spool_dir: Path) -> str:
    """scalelite.yml with ``spool_dir`` set; every other line of ``current`` kept."""
    value = _yaml_scalar(str(spool_dir))
    if current is None:
        return SCALELITE_TEMPLATE.format(work_dir=DEFAULT_WORK_DIR, spool_dir=value)
    out: list[str] = []
    placed = False
    has_work_dir = False
    for line in current.splitlines():
        match = _TOP_KEY.match(line)
        key = match.group(1) if match else None
        if key == "work_dir":
            has_work_dir = True
        if key == "spool_dir":
            if not placed:
                out.append(f"spool_dir: {value}")
                placed = True
            continue
        out.append(line)
    if not has_work_dir:
        # The post-publish script refuses to run without it.
        out.append(f"work_dir: {DEFAULT_WORK_DIR}")
    if not placed:
        out.append(f"spool_dir: {value}")
    return "\n".join(out) + "\n"


def spool_commands(
    current: SpoolState | None, spool_dir: Path, owner: SpoolOwner = SpoolOwner()
) -> tuple[tuple[str, ...], ...]:
    """The command that gives the spool directory its owner and mode; none if it has them."""
    if current is not None and not current.is_dir:
        raise EfsError(f"{spool_dir} exists and is not a directory")
    if (
        current is not None
        and current.uid == owner.uid
        and current.gid == owner.gid
        and current.mode == owner.mode
    ):
        return ()
    # install -d creates missing parents and sets owner and mode on the last
    # component whether or not it existed: one idempotent command.
    return (
        (
            "install",
            "-d",
            "-o",
            str(owner.uid),
            "-g",
            str(owner.gid),
            "-m",
            f"{owner.mode:04o}",
            str(spool_dir),
        ),
    )


def efs_helper_installed() -> bool:
    """Whether amazon-efs-utils' mount helper is installed."""
    return shutil.which("mount.efs", path=HELPER_SEARCH_PATH) is not None


def stat_spool(path: Path) -> SpoolState | None:
    """What is at ``path`` (None when nothing is)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return SpoolState(
        is_dir=stat_module.S_ISDIR(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mode=stat_module.S_IMODE(st.st_mode),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _state_files(directory: Path) -> tuple[str, ...] | None:
    try:
        return tuple(sorted(os.listdir(directory)))
    except FileNotFoundError:
        return ()
    except OSError:
        return None


async def ensure_efs(
    target: EfsTarget,
    runner: Runner,
    *,
    paths: EfsPaths = EfsPaths(),
    spool_owner: SpoolOwner = SpoolOwner(),
    helper_available: Callable[[], bool] = efs_helper_installed,
    stat_spool_dir: Callable[[Path], SpoolState | None] = stat_spool,
) -> EfsStatus:
    """Mount the recordings file system, keep fstab and scalelite.yml in step, prepare the spool.

    Idempotent: a second run with nothing changed runs no command and writes no file.
    """
    entries = parse_mountinfo(_read(paths.mountinfo) or "")
    fstab_text = _read(paths.fstab) or ""
    plan = plan_mount(
        target,
        find_mount(entries, target.mount_point),
        fstab_text,
        helper_available=helper_available(),
        state_files=_state_files(paths.efs_state_dir),
    )
    method: Method | None = None
    reason = plan.reason
    if plan.fstab is not None:
        # First: the mount unit systemd starts below is made from this line.
        write_atomic(paths.fstab, plan.fstab, mode_if_new=0o644)
        log.info("fstab_updated", path=str(paths.fstab), mount_point=str(target.mount_point))
    if plan.commands:
        for command in plan.commands:
            check(await runner(command))
        method = plan.method
        after = find_mount(parse_mountinfo(_read(paths.mountinfo) or ""), target.mount_point)
        state, reason = classify(after, target, _state_files(paths.efs_state_dir))
        if state is not MountState.OURS:
            raise EfsError(f"{target.mount_point} still not mounted after mount: {reason}")
        log.info("efs_mounted", method=method.value, mount_point=str(target.mount_point))

    config_changed = False
    current_config = _read(paths.scalelite_config)
    wanted_config = render_scalelite_config(current_config, target.spool_dir)
    if wanted_config != current_config:
        write_atomic(paths.scalelite_config, wanted_config, mode_if_new=0o644)
        config_changed = True
        log.info("scalelite_config_updated", path=str(paths.scalelite_config))

    spool_fixed = await _prepare_spool(target.spool_dir, runner, spool_owner, stat_spool_dir)

    return EfsStatus(
        mounted_now=method is not None,
        method=method,
        reason=reason,
        fstab_changed=plan.fstab is not None,
        scalelite_config_changed=config_changed,
        spool_dir=target.spool_dir,
        spool_fixed=spool_fixed,
    )


async def _prepare_spool(
    spool_dir: Path,
    runner: Runner,
    owner: SpoolOwner,
    stat_spool_dir: Callable[[Path], SpoolState | None],
) -> bool:
    fixes = spool_commands(stat_spool_dir(spool_dir), spool_dir, owner)
    for command in fixes:
        result = await runner(command)
        if result.ok:
            continue
        now = stat_spool_dir(spool_dir)
        if now is None or not now.is_dir:
            raise CommandFailed(result)
        # An access point that enforces its own POSIX user may refuse the
        # chown; the directory Scalelite's side created is then what counts.
        log.warning(
            "spool_dir_owner_unchanged",
            path=str(spool_dir),
            uid=now.uid,
            gid=now.gid,
            mode=f"{now.mode:04o}",
        )
        return False
    if fixes:
        log.info("spool_dir_prepared", path=str(spool_dir))
    return bool(fixes)
