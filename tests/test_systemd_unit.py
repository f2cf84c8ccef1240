"""The bbbnode unit: systemd's own checks (verify, security) and the settings bbbnode relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "bbbnode.service"
CHECK = ROOT / "scripts" / "check-systemd"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    # configparser cannot read units: keys repeat (SystemCallFilter=) and
    # lines continue with a trailing backslash.
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return _parse_unit(UNIT.read_text())


def _last(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "60"),
        ("Restart", "always"),
        ("User", "bbbnode"),
        ("SupplementaryGroups", "bigbluebutton"),
        ("EnvironmentFile", "-/etc/default/bbbnode"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestartPreventExitStatus", "2"),
    ],
)
def test_service_setting(unit: dict[str, dict[str, list[str]]], key: str, value: str) -> None:
    assert _last(unit, "Service", key) == value


def test_exec_start_runs_the_installed_daemon(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _last(unit, "Service", "ExecStart").split() == [
        "/opt/bbbfleet/venv/bin/bbbnode",
        "run",
        "--config",
        "/etc/bbbfleet/bbbnode.toml",
    ]


def test_static_user_not_dynamic(unit: dict[str, dict[str, list[str]]]) -> None:
    # DynamicUser= would lose the bigbluebutton group that reads recordings.
    assert unit["Service"].get("DynamicUser", ["no"])[-1] == "no"


def test_proc_stat_stays_readable(unit: dict[str, dict[str, list[str]]]) -> None:
    # bbbnode_cpu_utilization_ratio comes from /proc/stat, which subset=pid hides.
    assert unit["Service"].get("ProcSubset", ["all"])[-1] == "all"


def test_restarts_are_rate_limited(unit: dict[str, dict[str, list[str]]]) -> None:
    restart_sec = float(_last(unit, "Service", "RestartSec"))
    watchdog_sec = float(_last(unit, "Service", "WatchdogSec"))
    burst = int(_last(unit, "Unit", "StartLimitBurst"))
    interval = float(_last(unit, "Unit", "StartLimitIntervalSec"))
    # Quick crashes must trip the limit, or a crash loop spins forever...
    assert restart_sec * burst < interval
    # ...but watchdog restarts (one per WatchdogSec at best) must not, or a
    # wedged collector would leave the host without bbbnode for good.
    assert interval // (watchdog_sec + restart_sec) + 1 < burst


def test_stop_and_start_timeouts_leave_room(unit: dict[str, dict[str, list[str]]]) -> None:
    assert float(_last(unit, "Service", "TimeoutStopSec")) >= 60
    # READY comes after the first collection, and systemd arms the watchdog
    # only after READY, so this timeout alone bounds start-up.
    assert float(_last(unit, "Service", "TimeoutStartSec")) >= 60


def test_memory_is_bounded(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _last(unit, "Service", "MemoryMax").endswith(("K", "M", "G"))


def test_parser_handles_repeats_and_continuations() -> None:
    parsed = _parse_unit("[Service]\nA=1\nA=2\n# note\nExecStart=/bin/x \\\n  --flag\n")

    assert parsed == {"Service": {"A": ["1", "2"], "ExecStart": ["/bin/x --flag"]}}


@needs_systemd_analyze
def test_check_systemd_passes_on_the_repo_units() -> None:
    result = subprocess.run(
        ["bash", str(CHECK)], capture_output=True, text=True, check=False, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "bbbnode.service: verify ok" in result.stdout
    assert "bbbnode.service: exposure" in result.stdout


@needs_systemd_analyze
def test_check_systemd_fails_on_an_exposed_unit(tmp_path: Path) -> None:
    (tmp_path / "loose.service").write_text(
        "[Unit]\nDescription=no hardening\n\n[Service]\nExecStart=/opt/missing/bin/loose --x\n"
    )

    result = subprocess.run(
        ["bash", str(CHECK), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 1
    # verify passed thanks to the stub for the missing binary; security did not.
    assert "loose.service: verify ok" in result.stdout
    assert "loose.service: exposure" in result.stderr
    assert "is above 3.0" in result.stderr


@needs_systemd_analyze
def test_check_systemd_fails_on_a_verify_warning(tmp_path: Path) -> None:
    (tmp_path / "typo.service").write_text(
        "[Unit]\nDescription=typo\n\n[Service]\nExecStart=/bin/true\nProtectSytem=strict\n"
    )

    result = subprocess.run(
        ["bash", str(CHECK), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 1
    assert "typo.service: systemd-analyze verify failed" in result.stderr
    assert "ProtectSytem" in result.stderr


# --- the privileged host helper and its socket ------------------------------------------

HELPER = ROOT / "systemd" / "bbbnode-host.service"
SOCKET = ROOT / "systemd" / "bbbnode-host.socket"


@pytest.fixture(scope="module")
def helper_unit() -> dict[str, dict[str, list[str]]]:
    return _parse_unit(HELPER.read_text())


def test_helper_holds_only_the_capabilities_it_names(
    helper_unit: dict[str, dict[str, list[str]]],
) -> None:
    service = helper_unit["Service"]
    assert set(_last(helper_unit, "Service", "CapabilityBoundingSet").split()) == {
        "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE", "CAP_NET_ADMIN", "CAP_NET_RAW",
    }  # fmt: skip
    assert _last(helper_unit, "Service", "AmbientCapabilities") == ""
    for key, value in (
        ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateMounts", "yes"),
        ("IPAddressDeny", "any"), ("IPAddressAllow", "localhost"),
        ("RestartPreventExitStatus", "2"),
    ):  # fmt: skip
        assert _last(helper_unit, "Service", key) == value, key
    assert "AF_PACKET" not in " ".join(service["RestrictAddressFamilies"])
    # Mounts are PID 1's (systemctl start <mount unit>): the helper may not mount.
    assert "@mount" in " ".join(service["SystemCallFilter"])
    assert _last(helper_unit, "Service", "ExecStart").split() == [
        "/opt/bbbfleet/venv/bin/bbbnode", "host-helper", "--config", "/etc/bbbfleet/bbbnode.toml",
    ]  # fmt: skip
    assert "bbbnode-host.socket" in _last(helper_unit, "Unit", "Requires")


def test_helper_may_write_every_path_it_writes_and_nothing_at_the_root(
    helper_unit: dict[str, dict[str, list[str]]],
) -> None:
    from bbbnode.certificate import CertFiles
    from bbbnode.hostconfig import HostPaths
    from bbbnode.settings import EfsSettings

    writable = [
        Path(entry.lstrip("-"))
        for line in helper_unit["Service"]["ReadWritePaths"]
        for entry in line.split()
    ]
    assert Path("/") not in writable
    efs = EfsSettings()
    written = [
        *HostPaths().targets(), CertFiles().fullchain, efs.fstab, efs.scalelite_config,
        efs.mount_point / efs.spool_subdir,
    ]  # fmt: skip
    for path in written:
        # Ubuntu 22.04 merges /lib into /usr/lib, where systemd applies the entry.
        real = Path("/usr") / path.relative_to("/") if path.parts[1] == "lib" else path
        assert any(real.is_relative_to(w) for w in writable), path


def test_only_root_and_the_bbbnode_group_reach_the_helper() -> None:
    from bbbnode.settings import HelperSettings

    socket = _parse_unit(SOCKET.read_text())["Socket"]
    defaults = HelperSettings()
    assert socket["ListenStream"] == [defaults.socket]
    assert socket["SocketUser"] == ["root"]
    assert socket["SocketGroup"] == [defaults.socket_group]
    assert socket["SocketMode"] == ["0660"]


def test_daemon_keeps_its_certificate_in_its_own_state_directory(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    from bbbnode.settings import TlsSettings

    assert _last(unit, "Service", "StateDirectory") == "bbbnode"
    assert _last(unit, "Service", "StateDirectoryMode") == "0700"
    assert TlsSettings().cert_dir.is_relative_to("/var/lib/bbbnode")
    assert TlsSettings().post_hook == ()
    assert "bbbnode-host.socket" in _last(unit, "Unit", "Wants")
    assert "ReadWritePaths" not in unit["Service"]


@needs_systemd_analyze
def test_check_systemd_holds_the_helper_to_its_own_limit() -> None:
    result = subprocess.run(
        ["bash", str(CHECK)], capture_output=True, text=True, check=False, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "bbbnode-host.service: verify ok" in result.stdout
    assert "bbbnode-host.socket: verify ok" in result.stdout
    limit = re.search(r"max-exposure=([0-9.]+)", HELPER.read_text())
    assert limit is not None
    assert "bbbnode-host.service: exposure" in result.stdout
    assert f"(max {limit.group(1)})" in result.stdout
