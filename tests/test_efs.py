"""bbbnode.efs: mountinfo parsing, mount planning, fstab, scalelite.yml and the ensure_efs adapter.

This kernel has no NFS and no systemd as PID 1: the adapter tests script the
runner so that ``systemctl start <mount unit>`` mounts what fstab says for it,
appending the line the kernel would show to a fake mountinfo file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bbbnode import efs
from bbbnode.efs import (
    EfsConfigError,
    EfsError,
    EfsPaths,
    EfsTarget,
    ForeignMount,
    Method,
    MountState,
    SpoolOwner,
    SpoolState,
)
from bbbnode.runner import CommandFailed, Completed, ScriptedRunner
from bbbnode.settings import EfsSettings

FS = "fs-0123456789abcdef0"
AP = "fsap-0fedcba9876543210"
MP = Path("/mnt/scalelite-recordings")
TUNNEL_OPTS = (
    "rw,vers=4.1,rsize=1048576,wsize=1048576,namlen=255,hard,noresvport,proto=tcp,"
    "port=20257,timeo=600,retrans=2,sec=sys,clientaddr=127.0.0.1,local_lock=none,addr=127.0.0.1"
)

MOUNTINFO = f"""\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw,discard,errors=remount-ro
25 22 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
26 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4010132k,mode=755
98 22 0:52 / /mnt/scalelite-recordings rw,relatime shared:52 - nfs4 127.0.0.1:/ {TUNNEL_OPTS}
105 22 0:60 / /mnt/with\\040space rw,relatime - nfs4 {FS}.efs.eu-central-1.amazonaws.com:/ \
rw,vers=4.1,hard,noresvport,proto=tcp,timeo=600,retrans=2,addr=10.0.1.23
110 22 259:3 / /srv/data rw,relatime shared:60 master:3 - ext4 /dev/nvme1n1 rw
120 22 0:62 /sub\\134dir /mnt/back\\134slash rw - tmpfs tmp\\011fs rw,size=1024k
not a mountinfo line
"""

FSTAB = """\
# /etc/fstab: static file system information.
LABEL=cloudimg-rootfs\t/\text4\tdiscard,errors=remount-ro\t0 1
LABEL=UEFI\t/boot/efi\tvfat\tumask=0077\t0 1
/swapfile none swap sw 0 0
"""


BASE = EfsTarget(file_system_id=FS, access_point_id=AP, mount_point=MP, region="eu-central-1")


def target(**overrides: Any) -> EfsTarget:
    return replace(BASE, **overrides)


def tunnel_line(mount_point: Path = MP, port: int = 20257) -> str:
    opts = TUNNEL_OPTS.replace("port=20257", f"port={port}")
    return f"140 22 0:70 / {mount_point} rw,relatime shared:70 - nfs4 127.0.0.1:/ {opts}\n"


def state_file(fs: str = FS, mount_point: Path = MP, port: int = 20257) -> str:
    return f"{fs}.{efs.state_file_suffix(mount_point, str(port))}"


# --- mountinfo ---------------------------------------------------------------


def test_parse_mountinfo_fields_escapes_and_optional_fields() -> None:
    entries = efs.parse_mountinfo(MOUNTINFO)

    assert [e.mount_id for e in entries] == [22, 25, 26, 98, 105, 110, 120]
    root = entries[0]
    assert (root.parent_id, root.device, root.root, root.mount_point) == (1, "259:1", "/", "/")
    assert (root.fs_type, root.source, root.optional_fields) == ("ext4", "/dev/root", ("shared:1",))
    assert entries[5].optional_fields == ("shared:60", "master:3")
    assert entries[6].optional_fields == ()
    assert entries[4].mount_point == "/mnt/with space"
    assert entries[6].mount_point == "/mnt/back\\slash"
    assert entries[6].root == "/sub\\dir"
    assert entries[6].source == "tmp\tfs"
    tunnel = entries[3]
    assert (tunnel.fs_type, tunnel.source) == ("nfs4", "127.0.0.1:/")
    assert tunnel.super_option("port") == "20257"
    assert tunnel.super_option("hard") == ""
    assert tunnel.super_option("missing") is None


def test_find_mount_takes_the_top_of_a_stack_and_normalises() -> None:
    stacked = MOUNTINFO + "150 98 0:80 / /mnt/scalelite-recordings rw - tmpfs tmpfs rw\n"
    entries = efs.parse_mountinfo(stacked)

    found = efs.find_mount(entries, "/mnt/scalelite-recordings/")
    assert found is not None
    assert found.mount_id == 150
    assert efs.find_mount(entries, Path("/mnt/with space")) is not None
    assert efs.find_mount(entries, "/mnt/nothing") is None


def test_parse_mountinfo_of_empty_text() -> None:
    assert efs.parse_mountinfo("") == ()


# --- classification and planning ----------------------------------------------


def entry_at(text: str, mount_point: Path = MP) -> efs.MountEntry | None:
    return efs.find_mount(efs.parse_mountinfo(text), mount_point)


def test_classify_tunnel_mount_by_efs_utils_state_file() -> None:
    entry = entry_at(MOUNTINFO)

    assert efs.classify(entry, target(), [state_file()])[0] is MountState.OURS
    other = state_file(fs="fs-00000000000000001")
    state, reason = efs.classify(entry, target(), [other])
    assert state is MountState.FOREIGN
    assert "fs-00000000000000001" in reason
    # A state file for another mount point or port says nothing about this one.
    unrelated = [state_file(mount_point=Path("/mnt/x")), state_file(port=20999)]
    assert efs.classify(entry, target(), unrelated)[0] is MountState.OURS
    assert efs.classify(entry, target(), None)[0] is MountState.OURS


def test_classify_dns_name_mounts_and_other_file_systems() -> None:
    space = target(mount_point=Path("/mnt/with space"))
    assert efs.classify(entry_at(MOUNTINFO, space.mount_point), space)[0] is MountState.OURS
    other_fs = target(mount_point=space.mount_point, file_system_id="fs-00000000000000001")
    assert efs.classify(entry_at(MOUNTINFO, space.mount_point), other_fs)[0] is MountState.FOREIGN
    sub = target(mount_point=space.mount_point, nfs_export="/recordings")
    assert efs.classify(entry_at(MOUNTINFO, space.mount_point), sub)[0] is MountState.FOREIGN
    data = target(mount_point=Path("/srv/data"))
    assert efs.classify(entry_at(MOUNTINFO, data.mount_point), data)[0] is MountState.FOREIGN
    ip_source = "160 22 0:90 / /mnt/scalelite-recordings rw - nfs4 10.0.1.23:/ rw,addr=10.0.1.23\n"
    assert efs.classify(entry_at(ip_source), target())[0] is MountState.FOREIGN
    assert efs.classify(None, target())[0] is MountState.ABSENT


def test_plan_not_mounted_mounts_with_the_efs_helper() -> None:
    plan = efs.plan_mount(target(), None, FSTAB, helper_available=True)

    assert plan.state is MountState.ABSENT
    assert plan.method is Method.EFS
    assert plan.commands == (
        ("systemctl", "daemon-reload"),
        ("systemctl", "start", "mnt-scalelite\\x2drecordings.mount"),
    )
    assert plan.fstab == FSTAB + (f"{FS}:/ {MP} efs _netdev,nofail,tls,iam,accesspoint={AP} 0 0\n")


def test_plan_without_access_point_omits_the_option() -> None:
    plan = efs.plan_mount(target(access_point_id=""), None, "", helper_available=True)
    assert plan.fstab == f"{FS}:/ {MP} efs _netdev,nofail,tls,iam 0 0\n"


def test_mount_unit_names_match_systemd_escape() -> None:
    # Expected values from systemd-escape --path --suffix=mount (systemd 252).
    assert efs.mount_unit(MP) == "mnt-scalelite\\x2drecordings.mount"
    assert efs.mount_unit(Path("/mnt/a b")) == "mnt-a\\x20b.mount"
    assert efs.mount_unit(Path("//var/.x/")) == "var-.x.mount"
    assert efs.mount_unit(Path("/")) == "-.mount"


def test_plan_mounted_right_does_nothing() -> None:
    fstab = efs.plan_mount(target(), None, FSTAB, helper_available=True).fstab
    assert fstab is not None

    plan = efs.plan_mount(
        target(), entry_at(MOUNTINFO), fstab, helper_available=True, state_files=[state_file()]
    )

    assert plan.state is MountState.OURS
    assert plan.commands == ()
    assert plan.fstab is None


def test_plan_refuses_when_something_else_is_mounted() -> None:
    with pytest.raises(ForeignMount, match="ext4"):
        efs.plan_mount(
            target(mount_point=Path("/srv/data")),
            entry_at(MOUNTINFO, Path("/srv/data")),
            FSTAB,
            helper_available=True,
        )
    with pytest.raises(ForeignMount):
        efs.plan_mount(
            target(),
            entry_at(MOUNTINFO),
            FSTAB,
            helper_available=True,
            state_files=[state_file(fs="fs-00000000000000001")],
        )


def test_plan_helper_missing_falls_back_to_nfs4() -> None:
    plan = efs.plan_mount(target(), None, FSTAB, helper_available=False)

    dns = f"{FS}.efs.eu-central-1.amazonaws.com"
    assert plan.method is Method.NFS4
    assert plan.fstab is not None
    assert plan.fstab.endswith(
        f"{dns}:/ {MP} nfs4 _netdev,nofail,nfsvers=4.1,rsize=1048576,wsize=1048576,"
        "hard,timeo=600,retrans=2,noresvport 0 0\n"
    )


# --- fstab -----------------------------------------------------------------------


def test_fstab_replaces_only_this_mount_point_and_drops_duplicates() -> None:
    old = FSTAB + f"{FS}:/ {MP}/ efs _netdev,tls 0 0\n# {FS}:/ {MP} efs old 0 0\n"
    old += f"{FS}:/ {MP} nfs4 defaults 0 0\n"
    line = efs.fstab_line(target(), Method.EFS)

    new = efs.update_fstab(old, MP, line)

    assert new == FSTAB + f"{line}\n# {FS}:/ {MP} efs old 0 0\n"
    assert efs.update_fstab(new, MP, line) == new


def test_fstab_escapes_a_mount_point_with_a_space() -> None:
    spaced = target(mount_point=Path("/mnt/with space"))
    line = efs.fstab_line(spaced, Method.EFS)

    assert line.split()[1] == "/mnt/with\\040space"
    text = efs.update_fstab("", spaced.mount_point, line)
    assert efs.update_fstab(text, spaced.mount_point, line) == text == line + "\n"


def test_fstab_without_trailing_newline_keeps_its_lines() -> None:
    new = efs.update_fstab("/swapfile none swap sw 0 0", MP, "x y z")
    assert new == "/swapfile none swap sw 0 0\nx y z\n"


# --- scalelite.yml -------------------------------------------------------------------

SCALELITE_YML = """\
# Directory for temporary storage of working files
work_dir: /var/bigbluebutton/recording/scalelite
#
# Directory to place recording files for scalelite to import
spool_dir: /var/bigbluebutton/spool
# If you are using rsync over ssh, this should be of the form [USER@]HOST:DEST
#spool_dir: scalelite-spool@scalelite-import.example.com:/var/bigbluebutton/spool
extra_rsync_opts: []
delete_recording: false
"""


def test_scalelite_config_rendered_when_missing() -> None:
    text = efs.render_scalelite_config(None, MP / "var/bigbluebutton/spool")

    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(text) == {
        "work_dir": "/var/bigbluebutton/recording/scalelite",
        "spool_dir": "/mnt/scalelite-recordings/var/bigbluebutton/spool",
    }


def test_scalelite_config_keeps_the_users_keys_and_comments() -> None:
    spool = MP / "var/bigbluebutton/spool"
    text = efs.render_scalelite_config(SCALELITE_YML, spool)

    assert text == SCALELITE_YML.replace(
        "spool_dir: /var/bigbluebutton/spool", f"spool_dir: {spool}"
    )
    assert efs.render_scalelite_config(text, spool) == text


def test_scalelite_config_adds_work_dir_and_quotes_odd_paths() -> None:
    text = efs.render_scalelite_config("delete_recording: true\n", Path("/mnt/a b/spool"))

    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(text) == {
        "delete_recording": True,
        "work_dir": "/var/bigbluebutton/recording/scalelite",
        "spool_dir": "/mnt/a b/spool",
    }


# --- spool directory -------------------------------------------------------------------


def test_spool_commands() -> None:
    spool = MP / "var/bigbluebutton/spool"
    install = ("install", "-d", "-o", "1000", "-g", "2000", "-m", "0775", str(spool))

    assert efs.spool_commands(None, spool) == (install,)
    assert efs.spool_commands(SpoolState(True, 1000, 2000, 0o775), spool) == ()
    assert efs.spool_commands(SpoolState(True, 1000, 2000, 0o755), spool) == (install,)
    assert efs.spool_commands(SpoolState(True, 0, 0, 0o775), spool) == (install,)
    with pytest.raises(EfsError, match="not a directory"):
        efs.spool_commands(SpoolState(False, 1000, 2000, 0o775), spool)


def test_target_validation() -> None:
    with pytest.raises(EfsConfigError, match="file_system_id"):
        target(file_system_id="fs-; rm -rf /")
    with pytest.raises(EfsConfigError, match="access_point_id"):
        target(access_point_id="ap-1")
    with pytest.raises(EfsConfigError, match="region"):
        target(region="Europe")
    with pytest.raises(EfsConfigError, match="mount_point"):
        target(mount_point=Path("relative"))
    with pytest.raises(EfsConfigError, match="mount_point"):
        target(mount_point=Path("/mnt/a\nb"))
    with pytest.raises(EfsConfigError, match="spool_subdir"):
        target(spool_subdir="../etc")


# --- ensure_efs ---------------------------------------------------------------------------


class Host:
    """A temporary tree standing in for the host, and a runner that acts on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mount_point = root / "mnt" / "scalelite-recordings"
        self.paths = EfsPaths(
            fstab=root / "etc" / "fstab",
            mountinfo=root / "proc" / "mountinfo",
            scalelite_config=root / "scripts" / "scalelite.yml",
            efs_state_dir=root / "run" / "efs",
        )
        for path in (self.paths.fstab, self.paths.mountinfo, self.paths.scalelite_config):
            path.parent.mkdir(parents=True, exist_ok=True)
        self.paths.efs_state_dir.mkdir(parents=True)
        self.paths.fstab.write_text(FSTAB)
        self.paths.mountinfo.write_text(
            MOUNTINFO.replace("98 22 0:52 / /mnt/scalelite-", "98 22 0:52 / /mnt/other-")
        )
        self.runner = ScriptedRunner(
            script={
                ("systemctl", "start"): self._start,
                ("install",): self._install,
            }
        )
        self.unit = efs.mount_unit(self.mount_point)
        self.target = target(mount_point=self.mount_point)
        self.owner = SpoolOwner(uid=os.getuid(), gid=os.getgid(), mode=0o775)

    def _start(self, argv: tuple[str, ...]) -> Completed:
        """systemd: the unit made from fstab's line for the mount point, mount point created."""
        assert argv[-1] == self.unit
        for line in self.paths.fstab.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == str(self.mount_point):
                self.mount_point.mkdir(parents=True, exist_ok=True)
                mount = self._mount_efs if fields[2] == "efs" else self._mount_nfs
                return mount((*argv, fields[0]))
        return Completed(argv, 5, "", f"Unit {self.unit} not found.")

    def _mount_efs(self, argv: tuple[str, ...]) -> Completed:
        with self.paths.mountinfo.open("a") as handle:
            handle.write(tunnel_line(self.mount_point))
        (self.paths.efs_state_dir / state_file(mount_point=self.mount_point)).write_text("{}")
        return Completed(argv, 0)

    def _mount_nfs(self, argv: tuple[str, ...]) -> Completed:
        with self.paths.mountinfo.open("a") as handle:
            handle.write(
                f"141 22 0:71 / {self.mount_point} rw - nfs4 {argv[-1]} rw,addr=10.0.1.23\n"
            )
        return Completed(argv, 0)

    def _install(self, argv: tuple[str, ...]) -> Completed:
        path = Path(argv[-1])
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(int(argv[argv.index("-m") + 1], 8))
        return Completed(argv, 0)

    async def ensure(self, helper: bool = True) -> efs.EfsStatus:
        return await efs.ensure_efs(
            self.target,
            self.runner,
            paths=self.paths,
            spool_owner=self.owner,
            helper_available=lambda: helper,
        )

    def snapshot(self) -> dict[Path, tuple[str, int]]:
        files = (self.paths.fstab, self.paths.scalelite_config)
        return {p: (p.read_text(), p.stat().st_mtime_ns) for p in files if p.exists()}


async def test_ensure_efs_first_run_then_idempotent(tmp_path: Path) -> None:
    host = Host(tmp_path)

    first = await host.ensure()

    spool = host.mount_point / "var/bigbluebutton/spool"
    assert host.runner.calls == [
        ("systemctl", "daemon-reload"),
        ("systemctl", "start", host.unit),
        ("install", "-d", "-o", str(os.getuid()), "-g", str(os.getgid()), "-m", "0775", str(spool)),
    ]
    assert first.mounted_now
    assert first.method is Method.EFS
    assert first.fstab_changed
    assert first.scalelite_config_changed
    assert first.spool_fixed
    fstab = host.paths.fstab.read_text()
    assert fstab.startswith(FSTAB)
    assert fstab.endswith(
        f"{FS}:/ {host.mount_point} efs _netdev,nofail,tls,iam,accesspoint={AP} 0 0\n"
    )
    assert f"spool_dir: {spool}\n" in host.paths.scalelite_config.read_text()
    assert oct(spool.stat().st_mode & 0o7777) == oct(0o775)

    before = host.snapshot()
    calls = len(host.runner.calls)
    second = await host.ensure()

    assert len(host.runner.calls) == calls
    assert host.snapshot() == before
    assert not second.mounted_now
    assert second.method is None
    assert not (second.fstab_changed)
    assert not (second.scalelite_config_changed)
    assert not second.spool_fixed
    assert "this file system" in second.reason


async def test_ensure_efs_keeps_an_existing_scalelite_config(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.paths.scalelite_config.write_text(SCALELITE_YML)
    host.paths.scalelite_config.chmod(0o640)

    await host.ensure()

    text = host.paths.scalelite_config.read_text()
    assert "extra_rsync_opts: []\ndelete_recording: false\n" in text
    assert "#spool_dir: scalelite-spool@" in text
    assert host.paths.scalelite_config.stat().st_mode & 0o777 == 0o640


async def test_ensure_efs_without_helper_mounts_nfs4(tmp_path: Path) -> None:
    host = Host(tmp_path)

    status = await host.ensure(helper=False)

    assert status.method is Method.NFS4
    assert host.runner.calls[1] == ("systemctl", "start", host.unit)
    assert " nfs4 _netdev,nofail,nfsvers=4.1," in host.paths.fstab.read_text()
    calls = len(host.runner.calls)
    assert not (await host.ensure(helper=False)).mounted_now
    assert len(host.runner.calls) == calls


async def test_ensure_efs_refuses_a_foreign_mount(tmp_path: Path) -> None:
    host = Host(tmp_path)
    with host.paths.mountinfo.open("a") as handle:
        handle.write(f"170 22 259:5 / {host.mount_point} rw - ext4 /dev/nvme2n1 rw\n")
    before = host.snapshot()

    with pytest.raises(ForeignMount, match="ext4"):
        await host.ensure()

    assert host.runner.calls == []
    assert host.snapshot() == before


async def test_ensure_efs_mount_failure_is_raised(tmp_path: Path) -> None:
    host = Host(tmp_path)
    failed = "Job for mnt-scalelite\\x2drecordings.mount failed."
    host.runner.script[("systemctl", "start")] = lambda argv: Completed(argv, 1, "", failed)

    with pytest.raises(CommandFailed, match="failed"):
        await host.ensure()

    # The line stays (nofail: it never holds up a boot); the next run starts the unit again.
    assert host.paths.fstab.read_text().startswith(FSTAB + f"{FS}:/ ")
    host.runner.script[("systemctl", "start")] = host._start
    assert (await host.ensure()).mounted_now


async def test_ensure_efs_mount_that_does_not_show_up(tmp_path: Path) -> None:
    host = Host(tmp_path)
    silent: Callable[[tuple[str, ...]], Completed] = lambda argv: Completed(argv, 0)  # noqa: E731
    host.runner.script[("systemctl", "start")] = silent

    with pytest.raises(EfsError, match="still not mounted"):
        await host.ensure()


async def test_ensure_efs_tolerates_a_refused_chown_of_an_existing_spool(tmp_path: Path) -> None:
    host = Host(tmp_path)
    spool = host.mount_point / "var/bigbluebutton/spool"
    spool.mkdir(parents=True)
    spool.chmod(0o755)
    refused = "install: cannot change owner of '...': Operation not permitted"
    host.runner.script[("install",)] = lambda argv: Completed(argv, 1, "", refused)

    status = await host.ensure()

    assert not status.spool_fixed
    assert status.fstab_changed


async def test_ensure_efs_raises_when_the_spool_cannot_be_created(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.runner.script[("install",)] = lambda argv: Completed(argv, 1, "", "Permission denied")

    with pytest.raises(CommandFailed, match="Permission denied"):
        await host.ensure()


def test_from_settings() -> None:
    settings = EfsSettings(file_system_id=FS, access_point_id=AP, fstab=Path("/tmp/fstab"))

    found, paths = efs.from_settings(settings, "eu-central-1")

    assert found == BASE
    assert paths == EfsPaths(fstab=Path("/tmp/fstab"))
    with pytest.raises(EfsConfigError, match="file_system_id"):
        efs.from_settings(EfsSettings(), "eu-central-1")
