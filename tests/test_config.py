"""The configuration contract: keys, environment names, precedence, exit 2 naming the key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bbbcore.config import ConfigError, load_settings
from bbbnode.settings import NodeSettings

CONTRACT_ENV = {
    "BBBNODE_BBB__URL": "http://127.0.0.1:1/bigbluebutton/",
    "BBBNODE_BBB__SECRET": "s3cr3t-value",
    "BBBNODE_BBB__CHECKSUM": "sha512",
    "BBBNODE_BBB__POLL_INTERVAL": "2.5",
    "BBBNODE_METRICS__LISTEN": "127.0.0.1:19688",
    "BBBNODE_HOST__PROCFS": "/tmp/fakeproc",
    "BBBNODE_RECORDINGS__ROOT": "/tmp/bbbrec",
    "BBBNODE_AWS__ENABLED": "false",
    "BBBNODE_DNS__ZONE_ID": "Z123",
    "BBBNODE_DNS__DOMAIN": "bbb.example.org",
    "BBBNODE_DNS__NAME_TEMPLATE": "{instance_id}.{domain}",
    "BBBNODE_DNS__ENABLED": "false",
    "BBBNODE_SCALELITE__SERVER_URL_TEMPLATE": "https://{fqdn}/bigbluebutton/api/",
    "BBBNODE_TLS__ENABLED": "false",
    "BBBNODE_EFS__ENABLED": "false",
    "BBBNODE_SCALELITE__URL": "https://sl.example.org",
    "BBBNODE_SCALELITE__SECRET": "lb-secret",
    "BBBNODE_PROTECTION__IDLE_GRACE": "120",
    "BBBNODE_LIFECYCLE__HOOK_NAME": "drain",
    "BBBNODE_LIFECYCLE__POLL_INTERVAL": "3",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("BBBNODE_"):
            monkeypatch.delenv(key)


def test_every_contract_key_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, val in CONTRACT_ENV.items():
        monkeypatch.setenv(key, val)
    s = load_settings(NodeSettings)
    assert s.bbb.url == "http://127.0.0.1:1/bigbluebutton/"
    assert s.bbb.secret is not None
    assert s.bbb.secret.get_secret_value() == "s3cr3t-value"
    assert s.bbb.checksum == "sha512"
    assert s.bbb.poll_interval == 2.5
    assert s.metrics.listen == "127.0.0.1:19688"
    assert s.host.procfs == Path("/tmp/fakeproc")
    assert s.recordings.root == Path("/tmp/bbbrec")
    assert s.aws.enabled is False
    assert (s.dns.zone_id, s.dns.domain, s.dns.enabled) == ("Z123", "bbb.example.org", False)
    assert s.dns.name_template == "{instance_id}.{domain}"
    assert s.scalelite.server_url_template == "https://{fqdn}/bigbluebutton/api/"
    assert (s.tls.enabled, s.efs.enabled) == (False, False)
    assert s.scalelite.url == "https://sl.example.org"
    assert s.protection.idle_grace == 120
    assert (s.lifecycle.hook_name, s.lifecycle.poll_interval) == ("drain", 3)


def test_defaults() -> None:
    s = load_settings(NodeSettings)
    assert s.bbb.url == "http://127.0.0.1:8090/bigbluebutton/"
    assert s.bbb.checksum == "auto"  # the strongest the host allows, read at start
    assert s.bbb.poll_interval == 10
    assert s.metrics.listen == "0.0.0.0:9688"
    assert s.host.procfs == Path("/proc")
    assert s.recordings.root == Path("/var/bigbluebutton")
    assert s.aws.enabled is True
    assert s.dns.name_template == "{instance_id}.{domain}"
    assert s.protection.idle_grace == 300


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "bbbnode.toml"
    conf.write_text('[bbb]\npoll_interval = 7\nchecksum = "sha1"\n')
    monkeypatch.setenv("BBBNODE_BBB__POLL_INTERVAL", "3")
    s = load_settings(NodeSettings, conf)
    assert s.bbb.poll_interval == 3
    assert s.bbb.checksum == "sha1"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BBBNODE_BBB__CHECKSUM": "md5"}, "BBBNODE_BBB__CHECKSUM"),
        ({"BBBNODE_BBB__POLL_INTERVAL": "-1"}, "BBBNODE_BBB__POLL_INTERVAL"),
        ({"BBBNODE_BBB__POLL_INTERVAL": "soon"}, "BBBNODE_BBB__POLL_INTERVAL"),
        ({"BBBNODE_METRICS__LISTEN": "9688"}, "BBBNODE_METRICS__LISTEN"),
        ({"BBBNODE_AWS__ENABLED": "perhaps"}, "BBBNODE_AWS__ENABLED"),
        ({"BBBNODE_BBB__URL": "ftp://x"}, "BBBNODE_BBB__URL"),
        ({"BBBNODE_BBB__POLL_INTERVALL": "1"}, "BBBNODE_BBB__POLL_INTERVALL"),
        ({"BBBNODE_DNS__NAME_TEMPLATE": "{instance}.{domain}"}, "BBBNODE_DNS__NAME_TEMPLATE"),
        (
            {"BBBNODE_SCALELITE__SERVER_URL_TEMPLATE": "https://{host}/api/"},
            "BBBNODE_SCALELITE__SERVER_URL_TEMPLATE",
        ),
        ({"BBBNODE_SCALELITE__CHECKSUM": "sha384"}, "BBBNODE_SCALELITE__CHECKSUM"),
    ],
)
def test_errors_name_the_key(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    with pytest.raises(ConfigError) as info:
        load_settings(NodeSettings)
    assert named in str(info.value)


def test_bad_file_named(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[bbb\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_settings(NodeSettings, conf)
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings(NodeSettings, tmp_path / "missing.toml")
    conf.write_text("[bbb]\nsecret = 'oops'\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"bbb\.bogus") as info:
        load_settings(NodeSettings, conf)
    assert "oops" not in str(info.value)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("BBBNODE_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bbbnode", *args],
        capture_output=True,
        text=True,
        env=base,
        check=False,
        timeout=60,
    )


def test_cli_exit_2_names_key_and_hides_secret() -> None:
    result = _cli("run", env={"BBBNODE_BBB__CHECKSUM": "md5", "BBBNODE_BBB__SECRET": "topsecret"})
    assert result.returncode == 2
    assert "BBBNODE_BBB__CHECKSUM" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout


def test_cli_check_config_hides_secrets() -> None:
    result = _cli("check-config", env={"BBBNODE_BBB__SECRET": "topsecret"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["bbb"]["secret"] == "**********"
    assert "topsecret" not in result.stdout


def test_cli_version_and_help() -> None:
    assert _cli("--version").stdout.startswith("bbbnode ")
    helped = _cli("--help")
    assert helped.returncode == 0
    assert "run" in helped.stdout
    assert _cli().returncode == 2


@pytest.mark.parametrize("bad", ["a;b", "exam!", "none", " exam"])
def test_a_scalelite_tag_no_create_can_ask_for_exits_2(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scalelite splits a create's tag list on ";", reads "none" as untagged and a trailing
    # "!" as required (app/models/server.rb:291-308): such a server tag would never be used.
    from bbbscaler.settings import ScalerSettings
    from tests.scaler_fleets import required_settings

    required_settings(monkeypatch)
    monkeypatch.setenv("BBBNODE_SCALELITE__TAG", bad)
    monkeypatch.setenv("BBBSCALER_SCALELITE__TAG", bad)
    for cls in (NodeSettings, ScalerSettings):
        with pytest.raises(ConfigError) as err:
            load_settings(cls, None)
        assert "scalelite.tag" in str(err.value)
    monkeypatch.setenv("BBBNODE_SCALELITE__TAG", "exam")
    monkeypatch.setenv("BBBSCALER_SCALELITE__TAG", "exam")
    assert load_settings(NodeSettings, None).scalelite.tag == "exam"
    assert load_settings(ScalerSettings, None).scalelite.tag == "exam"


def test_a_ca_bundle_that_is_not_a_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = _cli("check-config", env={"BBBNODE_TLS__CA_BUNDLE": str(tmp_path / "missing.pem")})
    assert result.returncode == 2
    assert "tls.ca_bundle (BBBNODE_TLS__CA_BUNDLE)" in result.stderr


def test_fleet_tls_without_its_secret_exits_2_naming_the_key(tmp_path: Path) -> None:
    """AWS on, tls.mode fleet (the default), no tls.fleet_secret: exit 2 before any AWS call."""
    properties = tmp_path / "bbb-web.properties"
    properties.write_text("securitySalt=0123456789abcdef0123456789abcdef\n")
    result = _cli(
        "run",
        env={
            "BBBNODE_BBB__PROPERTIES_FILES": json.dumps([str(properties)]),
            "BBBNODE_METRICS__LISTEN": "127.0.0.1:0",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        },
    )
    assert result.returncode == 2, result.stderr
    assert "BBBNODE_TLS__FLEET_SECRET" in result.stderr


def test_scaler_certificate_needs_its_domain_and_zone() -> None:
    from bbbscaler.settings import ScalerSettings

    base = {"aws": {"asg_name": "a"}, "scalelite": {"url": "https://s", "secret": "x",
            "domain": "bbb.example.org"}}  # fmt: skip
    with pytest.raises(ValueError, match="BBBSCALER_CERTIFICATE__DOMAIN") as info:
        ScalerSettings.model_validate({**base, "certificate": {"secret": "arn:aws:x"}})
    assert "BBBSCALER_CERTIFICATE__ZONE_ID" in str(info.value)
    settings = ScalerSettings.model_validate(
        {**base, "certificate": {"secret": "s", "domain": "bbb.example.org", "zone_id": "Z1"}}
    )
    assert settings.certificate.renew_before_days == 30
    assert ScalerSettings.model_validate(base).certificate.secret == ""
