"""The ``bbbscaler`` command line: its promises to operators, from outside."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any
from unittest import mock

import pytest
from structlog.testing import capture_logs

from bbbcore import __version__, logs
from bbbscaler import cli, daemon
from bbbscaler.settings import ScalerSettings

REQUIRED = {
    "BBBSCALER_AWS__ASG_NAME": "bbb-fleet",
    "BBBSCALER_SCALELITE__URL": "http://127.0.0.1:9",
    "BBBSCALER_SCALELITE__SECRET": "cli-test-scalelite-secret-0123456789",
    "BBBSCALER_SCALELITE__DOMAIN": "bbb.example.test",
}


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key, value in REQUIRED.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"bbbscaler {__version__}"


def test_missing_required_keys_exit_2_naming_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config"]) == 2
    err = capsys.readouterr().err
    for env_name in REQUIRED:
        assert env_name in err


def test_a_bad_value_exits_2_naming_the_key(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("BBBSCALER_POLICY__PRESET", "aggressive")
    assert cli.main(["run", "--once"]) == 2
    err = capsys.readouterr().err
    assert "policy.preset (BBBSCALER_POLICY__PRESET)" in err
    assert "aggressive" in err


def test_a_ca_bundle_that_is_not_a_file_exits_2_naming_the_key(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    env.setenv("BBBSCALER_CERTIFICATE__CA_BUNDLE", str(tmp_path / "missing.pem"))
    assert cli.main(["check-config"]) == 2
    assert "certificate.ca_bundle (BBBSCALER_CERTIFICATE__CA_BUNDLE)" in capsys.readouterr().err


def test_check_config_prints_json_with_the_secret_hidden(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("BBBSCALER_DRY_RUN", "true")
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert doc["dry_run"] is True
    assert doc["aws"]["asg_name"] == "bbb-fleet"
    assert REQUIRED["BBBSCALER_SCALELITE__SECRET"] not in out


def test_dry_run_flag_reaches_the_daemon(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[ScalerSettings] = []

    async def once(settings: ScalerSettings) -> int:
        seen.append(settings)
        return 0

    env.setattr(daemon, "once", once)
    assert cli.main(["run", "--once", "--dry-run"]) == 0
    assert seen[0].dry_run is True


async def test_once_without_the_group_exits_1_with_a_json_line(
    env: pytest.MonkeyPatch, aws_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ScalerSettings()
    assert await daemon.once(settings) == daemon.EXIT_ROUND_FAILED
    last: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["action"] == "error"


SCHEDULES = json.dumps(
    [
        {"name": "exam", "start": "08:00", "end": "10:00", "min_nodes": 6},
        {"name": "lecture", "start": "10:00", "end": "12:00", "min_nodes": 3},
    ]
)


async def check_config(capsys: pytest.CaptureFixture[str]) -> list[MutableMapping[str, Any]]:
    """``bbbscaler check-config`` in-process: exit 0, its JSON on stdout, and the events it
    logged (its own logging set-up is skipped, or it would replace the capture)."""
    with capture_logs() as logged, mock.patch.object(logs, "configure"):
        assert await asyncio.to_thread(cli.main, ["check-config"]) == 0
    out = capsys.readouterr().out
    # The in-process AWS fixtures print their own log lines on stdout too.
    doc = json.loads(out[out.index("{\n") :])
    assert doc["policy"]["schedules"][0]["name"] == "exam"
    return logged


@pytest.mark.integration
async def test_check_config_warns_about_windows_above_the_groups_max_size(
    env: pytest.MonkeyPatch,
    make_fleet: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_fleet(None)  # bbb-fleet, MaxSize 4
    env.setenv("BBBSCALER_POLICY__SCHEDULES", SCHEDULES)
    logged = await check_config(capsys)
    warned = [e for e in logged if e["event"] == "schedule_exceeds_upper_bound"]
    assert [(e["window"], e["min_nodes"], e["upper"], e["short_nodes"]) for e in warned] == [
        ("exam", 6, 4, 2)
    ]
    assert warned[0]["bound"] == "MaxSize of bbb-fleet"
    assert warned[0]["log_level"] == "warning"
    # policy.max_nodes below MaxSize is the bound then.
    env.setenv("BBBSCALER_POLICY__MAX_NODES", "2")
    logged = await check_config(capsys)
    warned = [e for e in logged if e["event"] == "schedule_exceeds_upper_bound"]
    assert [(e["window"], e["upper"], e["bound"]) for e in warned] == [
        ("exam", 2, "policy.max_nodes"),
        ("lecture", 2, "policy.max_nodes"),
    ]


@pytest.mark.integration
async def test_check_config_says_when_it_cannot_read_the_group(
    env: pytest.MonkeyPatch, aws_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("BBBSCALER_AWS__ASG_NAME", "no-such-group")
    env.setenv("BBBSCALER_POLICY__SCHEDULES", SCHEDULES)
    env.setenv("BBBSCALER_POLICY__MAX_NODES", "5")
    logged = await check_config(capsys)
    incomplete = [e for e in logged if e["event"] == "schedule_check_incomplete"]
    assert len(incomplete) == 1
    assert "no-such-group" in incomplete[0]["reason"]
    assert incomplete[0]["checked_against"] == ["policy.max_nodes"]
    warned = [e for e in logged if e["event"] == "schedule_exceeds_upper_bound"]
    assert [(e["window"], e["upper"]) for e in warned] == [("exam", 5)]
