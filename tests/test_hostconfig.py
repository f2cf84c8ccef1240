"""bbbnode.hostconfig: per-host files from templates and key edits, restarts only on change.

The target files are fixtures shaped like a BBB 3.0 host installed by
bbb-install on an image-building instance (its name and addresses are the
ones a launched instance must replace); nginx, FreeSWITCH and coturn are not
here, so the tests check the files written and the commands the runner gets.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest
from structlog.testing import capture_logs

from bbbnode import hostconfig
from bbbnode.files import write_atomic
from bbbnode.hostconfig import (
    FileChange,
    HostConfigError,
    HostConfigFailed,
    HostFacts,
    HostPaths,
)
from bbbnode.runner import Completed, ScriptedRunner
from bbbsim.image_tree import (
    AKKA_CONF,
    BBB_WEB_PROPERTIES,
    FS_EXTERNAL,
    FS_VARS,
    NGINX_CONF,
    NGINX_SITE,
    RECORDING_YML,
    SIP_NGINX,
    TURNSERVER_CONF,
    WEBRTC_SFU_YML,
    make_host,
)

SECRET = "tUrN5ecret+/with=symbols"
FACTS = HostFacts(
    fqdn="i-0abc123def4567890.bbb.example.org",
    public_ip="198.51.100.7",
    local_ip="10.0.3.21",
    cert_file=Path("/etc/bbbfleet/tls/fullchain.pem"),
    key_file=Path("/etc/bbbfleet/tls/privkey.pem"),
    turn_secret=SECRET,
)


def snapshot(paths: HostPaths) -> dict[Path, tuple[str, int, int]]:
    return {
        p: (p.read_text(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in paths.targets()
        if p.exists()
    }


def read(path: Path | None) -> str:
    assert path is not None
    return path.read_text()


FIRST_RUN_COMMANDS = [
    ("systemctl", "restart", "bbb-web"),
    ("systemctl", "restart", "bbb-apps-akka"),
    ("nginx", "-t", "-q"),
    ("systemctl", "reload", "nginx"),
    ("systemctl", "restart", "freeswitch"),
    ("systemctl", "restart", "bbb-webrtc-sfu"),
    ("systemctl", "daemon-reload"),
    ("systemctl", "enable", "dummy-nic.service"),
    ("systemctl", "restart", "coturn"),
]


# --- the adapter, end to end on a temporary tree -------------------------------------


async def test_first_run_writes_every_file_and_restarts_each_service_once(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    runner = ScriptedRunner()

    result = await hostconfig.apply_host_config(FACTS, runner, paths=paths)

    assert set(result.changed) == set(paths.targets())
    assert runner.calls == FIRST_RUN_COMMANDS
    assert result.restarted == (
        "bbb-web", "bbb-apps-akka", "nginx", "freeswitch", "bbb-webrtc-sfu", "dummy-nic", "coturn",
    )  # fmt: skip


async def test_second_run_with_the_same_facts_changes_nothing(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)
    before = snapshot(paths)
    runner = ScriptedRunner()

    result = await hostconfig.apply_host_config(FACTS, runner, paths=paths)

    assert result == hostconfig.HostConfigResult((), ())
    assert runner.calls == []
    assert snapshot(paths) == before


async def test_new_public_ip_touches_only_what_names_it(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)
    runner = ScriptedRunner()

    result = await hostconfig.apply_host_config(
        replace(FACTS, public_ip="192.0.2.200"), runner, paths=paths
    )

    assert set(result.changed) == {
        paths.freeswitch_vars, paths.freeswitch_external, paths.webrtc_sfu, paths.sip_nginx,
        paths.dummy_nic, paths.iptables_rules, paths.coturn_conf,
    }  # fmt: skip
    assert runner.calls == [
        ("systemctl", "restart", "freeswitch"),
        ("systemctl", "restart", "bbb-webrtc-sfu"),
        ("nginx", "-t", "-q"),
        ("systemctl", "reload", "nginx"),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "dummy-nic.service"),
        ("systemctl", "restart", "coturn"),
    ]
    assert 'data="external_rtp_ip=192.0.2.200"' in read(paths.freeswitch_vars)
    assert "external-ip=192.0.2.200/10.0.3.21\n" in read(paths.coturn_conf)
    assert "ExecStart=/sbin/ip addr replace 192.0.2.200/32 dev lo\n" in read(paths.dummy_nic)
    rules = [line for line in read(paths.iptables_rules).splitlines() if "DNAT" in line]
    assert rules == [
        "-A OUTPUT -s 10.0.3.21/32 -d 192.0.2.200/32 -p udp -j DNAT --to-destination 10.0.3.21"
    ]


async def test_unrelated_keys_and_comments_are_preserved(tmp_path: Path) -> None:
    paths = make_host(tmp_path)

    await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)

    assert read(paths.bbb_web_properties) == BBB_WEB_PROPERTIES.replace(
        "https://builder.example.org", f"https://{FACTS.fqdn}"
    )
    assert read(paths.akka_apps_conf) == AKKA_CONF.replace(
        "https://builder.example.org", f"https://{FACTS.fqdn}"
    )
    assert read(paths.recording_config) == RECORDING_YML.replace("builder.example.org", FACTS.fqdn)
    site = read(paths.nginx_site)
    # bbb-install left TLS to haproxy; nginx gets it in the server with BBB's locations.
    assert site == NGINX_SITE.replace("builder.example.org", FACTS.fqdn).replace(
        "  listen [::1]:81;\n",
        "  listen [::1]:81;\n"
        "  listen 443 ssl;\n"
        "  listen [::]:443 ssl;\n"
        "  ssl_certificate /etc/bbbfleet/tls/fullchain.pem;\n"
        "  ssl_certificate_key /etc/bbbfleet/tls/privkey.pem;\n",
    )
    conf = read(paths.nginx_conf)
    assert conf == NGINX_CONF.replace("http {\n", "http {\n    server_names_hash_bucket_size 64;\n")
    fs_vars = read(paths.freeswitch_vars)
    assert fs_vars == (
        FS_VARS.replace('data="external_rtp_ip=203.0.113.9"', 'data="external_rtp_ip=198.51.100.7"')
        .replace('data="external_sip_ip=203.0.113.9"', 'data="external_sip_ip=198.51.100.7"')
        .replace("local_ip_v4=10.0.9.9", "local_ip_v4=10.0.3.21")
    )
    assert '<!-- <X-PRE-PROCESS cmd="set" data="external_rtp_ip=192.0.2.1"/> -->' in fs_vars
    external = read(paths.freeswitch_external)
    assert external == FS_EXTERNAL.replace("203.0.113.9:", "198.51.100.7:")
    sfu = read(paths.webrtc_sfu)
    assert sfu == WEBRTC_SFU_YML.replace("203.0.113.9", "198.51.100.7")
    assert read(paths.sip_nginx) == SIP_NGINX.replace("203.0.113.9", "198.51.100.7")


async def test_html5_settings_keep_the_admins_settings(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    paths = make_host(tmp_path)

    await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)

    text = read(paths.html5_settings)
    assert "    # keep this comment\n" in text
    assert yaml.safe_load(text) == {
        "public": {
            "app": {"appName": "Fleet BBB", "helpLink": "https://help.example.org/"},
            "kurento": {"wsUrl": f"wss://{FACTS.fqdn}/bbb-webrtc-sfu"},
            "media": {"audio": {"defaultFullAudioBridge": "fullaudio"}, "sipjsHackViaWs": True},
            "clientLog": {"server": [{"enabled": True, "level": "info"}]},
            "pads": {"url": f"https://{FACTS.fqdn}/pad"},
        },
        "private": {"app": {"host": "127.0.0.1"}},
    }


async def test_coturn_and_turn_list_share_the_secret(tmp_path: Path) -> None:
    paths = make_host(tmp_path)

    await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)

    conf = read(paths.coturn_conf)
    assert conf.splitlines() == [
        "listening-port=3478",
        "",
        "listening-ip=10.0.3.21",
        "relay-ip=10.0.3.21",
        "",
        "min-port=32769",
        "max-port=65535",
        "verbose",
        "",
        "fingerprint",
        "lt-cred-mech",
        "use-auth-secret",
        f"static-auth-secret={SECRET}",
        f"realm={FACTS.fqdn}",
        "",
        "keep-address-family",
        "",
        "no-cli",
        "no-tlsv1",
        "no-tlsv1_1",
        "",
        "no-loopback-peers",
        "no-multicast-peers",
        "",
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "allowed-peer-ip=10.0.3.21",
        "allowed-peer-ip=198.51.100.7",
        "tls-listening-port=5349",
        "external-ip=198.51.100.7/10.0.3.21",
        "cert=/etc/bbbfleet/tls/fullchain.pem",
        "pkey=/etc/bbbfleet/tls/privkey.pem",
    ]
    assert hostconfig.existing_turn_secret(conf) == SECRET
    assert paths.coturn_conf is not None
    assert paths.coturn_conf.stat().st_mode & 0o777 == 0o640

    assert paths.turn_stun_servers is not None
    assert paths.turn_stun_servers.stat().st_mode & 0o777 == 0o640
    ns = {"b": "http://www.springframework.org/schema/beans"}
    tree = ElementTree.parse(paths.turn_stun_servers)  # noqa: S314 (our own output)
    turns = {
        bean.get("id"): [arg.get("value") for arg in bean.findall("b:constructor-arg", ns)]
        for bean in tree.getroot().findall("b:bean", ns)
        if bean.get("class", "").endswith(".TurnServer")
    }
    assert turns == {
        "turn0": [SECRET, f"turn:{FACTS.fqdn}:3478", "86400"],
        "turn1": [SECRET, f"turns:{FACTS.fqdn}:5349?transport=tcp", "86400"],
    }


async def test_a_failed_restart_rolls_back_that_service_and_retries_next_run(
    tmp_path: Path,
) -> None:
    paths = make_host(tmp_path)
    runner = ScriptedRunner(
        script={
            ("systemctl", "restart", "freeswitch"): lambda argv: Completed(
                argv, 1, "", "Job for freeswitch.service failed."
            )
        }
    )

    with pytest.raises(HostConfigFailed, match="freeswitch"):
        await hostconfig.apply_host_config(FACTS, runner, paths=paths)

    assert read(paths.freeswitch_vars) == FS_VARS
    assert read(paths.freeswitch_external) == FS_EXTERNAL
    assert f"https://{FACTS.fqdn}" in read(paths.bbb_web_properties)
    assert ("systemctl", "restart", "coturn") not in runner.calls

    retry = ScriptedRunner()
    result = await hostconfig.apply_host_config(FACTS, retry, paths=paths)
    assert retry.calls == [
        ("systemctl", "restart", "freeswitch"),
        ("systemctl", "restart", "bbb-webrtc-sfu"),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "dummy-nic.service"),
        ("systemctl", "restart", "coturn"),
    ]
    assert set(result.changed) == {
        paths.freeswitch_vars,
        paths.freeswitch_external,
        paths.webrtc_sfu,
        paths.dummy_nic,
        paths.coturn_conf,
    }


async def test_nginx_is_not_reloaded_when_its_config_test_fails(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    runner = ScriptedRunner(
        script={("nginx", "-t"): lambda argv: Completed(argv, 1, "", "emerg: bad config")}
    )

    with pytest.raises(HostConfigFailed, match="nginx"):
        await hostconfig.apply_host_config(FACTS, runner, paths=paths)

    assert ("systemctl", "reload", "nginx") not in runner.calls
    assert read(paths.nginx_site) == NGINX_SITE
    assert read(paths.nginx_conf) == NGINX_CONF


async def test_a_new_file_that_fails_is_removed_again(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    assert paths.turn_stun_servers is not None
    paths.turn_stun_servers.unlink()
    runner = ScriptedRunner(
        script={("systemctl", "restart", "bbb-web"): lambda argv: Completed(argv, 1)}
    )

    with pytest.raises(HostConfigFailed):
        await hostconfig.apply_host_config(FACTS, runner, paths=paths)

    assert paths.turn_stun_servers is not None
    assert not paths.turn_stun_servers.exists()
    assert read(paths.bbb_web_properties) == BBB_WEB_PROPERTIES


async def test_missing_image_files(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    for optional in (paths.akka_apps_conf, paths.recording_config):
        assert optional is not None
        optional.unlink()
    for created in (paths.bbb_web_properties, paths.html5_settings, paths.coturn_conf):
        assert created is not None
        created.unlink()

    result = await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)

    # Like bbb-conf --setip: skip what is not installed, create the overrides.
    assert paths.akka_apps_conf not in result.changed
    assert paths.recording_config not in result.changed
    assert read(paths.bbb_web_properties) == f"bigbluebutton.web.serverURL=https://{FACTS.fqdn}\n"
    assert read(paths.html5_settings) == (
        "public:\n"
        "  kurento:\n"
        f"    wsUrl: wss://{FACTS.fqdn}/bbb-webrtc-sfu\n"
        "  media:\n"
        "    sipjsHackViaWs: true\n"
        "  pads:\n"
        f"    url: https://{FACTS.fqdn}/pad\n"
    )
    conf = read(paths.coturn_conf)
    assert conf.startswith(hostconfig.COTURN_TEMPLATE)
    assert f"static-auth-secret={SECRET}\n" in conf

    assert paths.nginx_site is not None
    paths.nginx_site.unlink()
    with pytest.raises(HostConfigError, match="nginx site is missing"):
        await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)


async def test_unmanaged_paths_are_left_alone(tmp_path: Path) -> None:
    paths = replace(make_host(tmp_path), coturn_conf=None, turn_stun_servers=None)
    runner = ScriptedRunner()

    await hostconfig.apply_host_config(FACTS, runner, paths=paths)

    assert ("systemctl", "restart", "coturn") not in runner.calls
    assert read(tmp_path / "etc/turnserver.conf") == TURNSERVER_CONF


async def test_secrets_stay_out_of_logs_and_reprs(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    with capture_logs() as captured:
        await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)
    changes = hostconfig.plan_host_config(
        replace(FACTS, turn_secret="another-secret-value"),
        hostconfig.read_current(paths),
        paths=paths,
    )

    assert any(event["event"] == "host_configured" for event in captured)
    assert SECRET not in repr(captured)
    assert SECRET not in repr(FACTS)
    assert changes
    assert all("another-secret-value" not in repr(c) for c in changes)


async def test_symlinked_target_keeps_its_link(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    assert paths.nginx_site is not None
    real = tmp_path / "real-site"
    paths.nginx_site.rename(real)
    paths.nginx_site.symlink_to(real)

    await hostconfig.apply_host_config(FACTS, ScriptedRunner(), paths=paths)

    assert paths.nginx_site.is_symlink()
    assert f"server_name {FACTS.fqdn};" in real.read_text()


# --- pure parts --------------------------------------------------------------------


def test_plan_lists_only_files_that_differ() -> None:
    current: dict[Path, str | None] = {
        Path("/p"): f"bigbluebutton.web.serverURL=https://{FACTS.fqdn}\n",
    }
    paths = HostPaths(
        bbb_web_properties=Path("/p"),
        html5_settings=None,
        akka_apps_conf=None,
        recording_config=None,
        turn_stun_servers=None,
        nginx_site=None,
        nginx_conf=None,
        freeswitch_vars=None,
        freeswitch_external=None,
        coturn_conf=None,
        webrtc_sfu=None,
        sip_nginx=None,
        dummy_nic=None,
        iptables_rules=None,
    )
    assert hostconfig.plan_host_config(FACTS, current, paths=paths) == ()

    current[Path("/p")] = "bigbluebutton.web.serverURL=http://old\n"
    (change,) = hostconfig.plan_host_config(FACTS, current, paths=paths)
    assert change == FileChange(
        Path("/p"),
        f"bigbluebutton.web.serverURL=https://{FACTS.fqdn}\n",
        "bbb-web",
        "bigbluebutton.web.serverURL=http://old\n",
    )


def test_service_commands() -> None:
    assert hostconfig.service_commands("nginx") == (
        ("nginx", "-t", "-q"),
        ("systemctl", "reload", "nginx"),
    )
    assert hostconfig.service_commands("coturn") == (("systemctl", "restart", "coturn"),)
    bbb26 = hostconfig.Services(html5_settings="bbb-html5")
    assert hostconfig.service_commands(bbb26.html5_settings, bbb26) == (
        ("systemctl", "restart", "bbb-html5"),
    )


def test_yaml_editor() -> None:
    set_value = hostconfig.set_yaml_value

    assert set_value("", ("a", "b"), "x") == "a:\n  b: x\n"
    text = "a:\n    b: 'x'  # why\nc: 1\n"
    assert set_value(text, ("a", "b"), "x") == text
    assert set_value(text, ("a", "b"), "y") == "a:\n    b: y\nc: 1\n"
    assert set_value(text, ("a", "d"), "z y") == "a:\n    b: 'x'  # why\n    d: \"z y\"\nc: 1\n"
    nested = "a:\n  b:\n    c: 1\n"
    assert set_value(nested, ("a", "b"), "v") == "a:\n  b: v\n"
    with pytest.raises(HostConfigError, match="inline"):
        set_value("a: {b: 1}\n", ("a", "b"), "x")
    with pytest.raises(HostConfigError, match="list"):
        set_value("a:\n- 1\n", ("a", "b"), "x")


def test_nginx_site_gets_cert_lines_when_it_had_none() -> None:
    site = "server {\n  listen 443 ssl;\n  server_name old;\n}\n"
    assert hostconfig.render_nginx_site(site, FACTS) == (
        "server {\n  listen 443 ssl;\n"
        "  ssl_certificate /etc/bbbfleet/tls/fullchain.pem;\n"
        "  ssl_certificate_key /etc/bbbfleet/tls/privkey.pem;\n"
        f"  server_name {FACTS.fqdn};\n}}\n"
    )
    with pytest.raises(HostConfigError, match="TLS listener"):
        hostconfig.render_nginx_site("server {\n  listen 80;\n  server_name x;\n}\n", FACTS)


def test_nginx_bucket_size() -> None:
    assert hostconfig.bucket_size_for(FACTS.fqdn) == 64
    long_name = "i-0abc123def4567890." + "a" * 40 + ".example.org"
    assert hostconfig.bucket_size_for(long_name) == 128
    conf = "http {\n    server_names_hash_bucket_size 32;\n}\n"
    assert hostconfig.render_nginx_conf(conf, FACTS) == conf.replace("32", "64")
    big = conf.replace("32", "128")
    assert hostconfig.render_nginx_conf(big, FACTS) == big


def test_freeswitch_vars_added_when_absent() -> None:
    text = hostconfig.render_freeswitch_vars("<include>\n</include>\n", FACTS)
    assert text == (
        "<include>\n"
        '  <X-PRE-PROCESS cmd="set" data="external_rtp_ip=198.51.100.7"/>\n'
        '  <X-PRE-PROCESS cmd="set" data="external_sip_ip=198.51.100.7"/>\n'
        "</include>\n"
    )
    assert hostconfig.render_freeswitch_vars(text, FACTS) == text


def test_facts_validation() -> None:
    with pytest.raises(HostConfigError, match="fqdn"):
        replace(FACTS, fqdn="Bad_Name")
    with pytest.raises(HostConfigError, match="public_ip"):
        replace(FACTS, public_ip="198.51.100")
    with pytest.raises(HostConfigError, match="cert_file"):
        replace(FACTS, cert_file=Path("/etc/tls/a b.pem"))
    with pytest.raises(HostConfigError) as err:
        replace(FACTS, turn_secret="has a space")
    assert "has a space" not in str(err.value)


def test_write_atomic_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    path.chmod(0o600)

    write_atomic(path, "new")

    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    write_atomic(tmp_path / "g", "x", mode_if_new=0o640)
    assert (tmp_path / "g").stat().st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "g").st_uid == os.geteuid()


def test_resolve_turn_secret(tmp_path: Path) -> None:
    conf = tmp_path / "turnserver.conf"

    assert hostconfig.resolve_turn_secret("configured-secret", conf) == "configured-secret"
    generated = hostconfig.resolve_turn_secret(None, conf)
    assert len(generated) >= 32
    assert generated != hostconfig.resolve_turn_secret(None, None)
    replace(FACTS, turn_secret=generated)  # valid as a HostFacts secret
    conf.write_text(TURNSERVER_CONF)
    assert hostconfig.resolve_turn_secret(None, conf) == "oldsecretfromtheimage"


def test_yaml_editor_sets_items_of_block_lists() -> None:
    set_value = hostconfig.set_yaml_value

    path = ("m", "listenIps", 0, "announcedIp")
    assert set_value("", path, "1.2.3.4") == "m:\n  listenIps:\n    - announcedIp: 1.2.3.4\n"
    text = (
        "m:\n  listenIps:\n    - ip: 0.0.0.0  # all\n      announcedIp: 5.6.7.8\n"
        "    - ip: x\nz: 1\n"
    )
    assert set_value(text, path, "5.6.7.8") == text
    assert set_value(text, path, "1.2.3.4") == text.replace("5.6.7.8", "1.2.3.4")
    assert set_value(text, ("m", "listenIps", 0, "ip"), "1.1.1.1") == text.replace(
        "- ip: 0.0.0.0  # all", "- ip: 1.1.1.1"
    )
    assert set_value(text, ("m", "listenIps", 1, "announcedIp"), "9.9.9.9") == text.replace(
        "    - ip: x\n", "    - ip: x\n      announcedIp: 9.9.9.9\n"
    )
    assert set_value(text, ("m", "listenIps", 2, "ip"), "7.7.7.7") == text.replace(
        "    - ip: x\n", "    - ip: x\n    - ip: 7.7.7.7\n"
    )
    # yq also writes a list at its key's own indentation.
    flush = "listenIps:\n- ip: a\n  announcedIp: b\n"
    assert set_value(flush, ("listenIps", 0, "announcedIp"), "c") == flush.replace(": b", ": c")
    with pytest.raises(HostConfigError, match="3 items"):
        set_value("l:\n  - 1\n  - 2\n  - 3\n", ("l", 5), "x")
    with pytest.raises(HostConfigError, match="expected a list"):
        set_value("l:\n  a: 1\n", ("l", 0, "b"), "x")


def test_webrtc_sfu_from_nothing_is_bbb_installs_block() -> None:
    pub = FACTS.public_ip
    assert hostconfig.render_webrtc_sfu(None, FACTS) == (
        f"freeswitch:\n  ip: {pub}\n  sip_ip: {pub}\n"
        f"mediasoup:\n  webrtc:\n    listenIps:\n      - ip: 0.0.0.0\n        announcedIp: {pub}\n"
        f"  plainRtp:\n    listenIp:\n      ip: 0.0.0.0\n      announcedIp: {pub}\n"
    )


def test_sip_nginx_and_freeswitch_bindings_follow_the_public_address() -> None:
    sip = "location /ws {\n  proxy_pass https://10.0.9.9:7443;\n  # proxy_pass http://10.0.9.9:1;\n}\n"
    assert hostconfig.render_sip_nginx(sip, FACTS) == sip.replace(
        "https://10.0.9.9:7443", f"https://{FACTS.public_ip}:7443"
    )
    profile = (
        "<profile><settings>\n"
        '  <param name="ws-binding" value=":5066"/>\n'
        '  <param name="wss-binding" value="203.0.113.9:7443"/>\n'
        '  <!-- <param name="ws-binding" value="203.0.113.9:5066"/> -->\n'
        '  <param name="ext-rtp-ip" value="auto-nat"/>\n'
        "</settings></profile>\n"
    )
    text = hostconfig.render_freeswitch_external(profile, FACTS)
    assert '"ws-binding" value=":5066"' in text
    assert f'"wss-binding" value="{FACTS.public_ip}:7443"' in text
    assert '<!-- <param name="ws-binding" value="203.0.113.9:5066"/> -->' in text
    assert '"ext-rtp-ip" value="$${external_rtp_ip}"' in text
    assert '"ext-sip-ip" value="$${external_sip_ip}"' in text


def test_nginx_site_without_tls_gets_it_where_bbb_is_served() -> None:
    site = (
        "server {\n  listen 80;\n  server_name a;\n  return 301 https://$host;\n}\n"
        "server {\n  listen 127.0.0.1:81 proxy_protocol;\n  server_name a;\n"
        "  include /etc/bigbluebutton/nginx/*.nginx;\n}\n"
    )
    text = hostconfig.render_nginx_site(site, FACTS)
    first, second = text.split("}\nserver {\n")
    assert "443" not in first
    assert second.startswith(
        "  listen 127.0.0.1:81 proxy_protocol;\n  listen 443 ssl;\n  listen [::]:443 ssl;\n"
        "  ssl_certificate /etc/bbbfleet/tls/fullchain.pem;\n"
    )
    assert hostconfig.render_nginx_site(text, FACTS) == text


def test_dummy_nic_unit_and_rules_follow_the_addresses() -> None:
    unit = hostconfig.render_dummy_nic(FACTS)
    assert "ExecStart=/sbin/ip addr replace 198.51.100.7/32 dev lo\n" in unit
    assert "Before=freeswitch.service\n" in unit
    rules = hostconfig.render_iptables_rules(None, FACTS)
    assert "-A OUTPUT -s 10.0.3.21/32 -d 198.51.100.7/32 -p udp -j DNAT" in rules
    assert hostconfig.service_commands("dummy-nic") == (
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "dummy-nic.service"),
    )


def test_coturn_reads_its_own_copy_of_the_key() -> None:
    facts = replace(FACTS, turn_key_file=Path("/etc/bbbfleet/tls/turnserver-privkey.pem"))
    conf = hostconfig.render_coturn_conf(None, facts)
    assert "pkey=/etc/bbbfleet/tls/turnserver-privkey.pem\n" in conf
    assert f"cert={FACTS.cert_file}\n" in conf
    assert "tls-listening-port=5349\n" in conf
