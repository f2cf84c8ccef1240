"""bbbctl's pure parts: sync plan, change sets, events, parameters, progress, settings, CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from bbbcore.config import ConfigError, load_settings
from bbbcore.node_metrics import CPU, MEETINGS, PARTICIPANTS, SNAPSHOT_AGE
from bbbcore.scalelite import ScaleliteServer
from bbbctl import cli, commands, fleet, sync
from bbbctl.progress import Progress, format_event
from bbbctl.settings import CtlSettings
from bbbctl.stack import (
    Change,
    ParameterError,
    StackEvent,
    Stacks,
    describe_failure,
    fleet_changes,
    is_terminal,
    parameter_list,
    parse_parameters,
    render_changes,
    root_cause,
    template_deletion_policies,
    unseen,
    warnings,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _restore_logging(restore_logging: None) -> None:
    """cli.main configures logging for the process; later tests must not inherit it."""


def event(
    n: int,
    logical: str = "R",
    status: str = "CREATE_IN_PROGRESS",
    reason: str = "",
    rtype: str = "AWS::SNS::Topic",
    stack: str = "s",
    physical: str = "",
) -> StackEvent:
    return StackEvent(
        f"e{n}", T0 + timedelta(seconds=n), stack, logical, physical, rtype, status, reason
    )


def local(key: str, digest: str) -> sync.LocalFile:
    return sync.LocalFile(key, Path(key), digest)


def test_sync_plan_is_a_checksum_diff() -> None:
    files = [local("p/a", "1"), local("p/b", "2"), local("p/c", "3")]
    remote: dict[str, str | None] = {"p/a": "1", "p/b": "old", "p/c": None, "p/gone": "9"}
    todo = sync.plan(files, remote)
    assert [f.key for f in todo.upload] == ["p/b", "p/c"]
    assert [f.key for f in todo.unchanged] == ["p/a"]
    assert todo.stale == ("p/gone",)
    assert sync.plan(files, {}).upload == tuple(files)


def test_collect_keys_and_checksums(tmp_path: Path) -> None:
    (tmp_path / "cfn").mkdir()
    (tmp_path / "cfn" / "root.yaml").write_bytes(b"root")
    (tmp_path / "cfn" / "notes.txt").write_bytes(b"x")
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "bbbfleet-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    found = sync.collect(tmp_path, ("cfn/*.yaml", "dist/bbbfleet-*.whl", "missing/*"), "pre/")
    assert [(f.key, f.sha256) for f in found] == [
        ("pre/cfn/root.yaml", hashlib.sha256(b"root").hexdigest()),
        ("pre/dist/bbbfleet-0.1.0-py3-none-any.whl", hashlib.sha256(b"wheel").hexdigest()),
    ]


def test_terminal_states() -> None:
    assert is_terminal("CREATE_COMPLETE")
    assert is_terminal("UPDATE_ROLLBACK_COMPLETE")
    assert not is_terminal("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    assert not is_terminal("DELETE_IN_PROGRESS")


def test_unseen_events_oldest_first() -> None:
    newest_first = [event(3), event(2), event(1)]
    assert [e.event_id for e in unseen(newest_first, {"e1"})] == ["e2", "e3"]
    assert unseen(newest_first, {"e3"}) == []


def test_root_cause_skips_cancelled_siblings() -> None:
    events = [
        event(1, "Stack", "CREATE_IN_PROGRESS", "User Initiated", "AWS::CloudFormation::Stack"),
        event(2, "Queue", "CREATE_FAILED", "Resource creation cancelled"),
        event(3, "Topic", "CREATE_FAILED", "Topic name is invalid"),
        event(
            4,
            "Stack",
            "ROLLBACK_IN_PROGRESS",
            "The following resource(s) failed: [Topic]",
            "AWS::CloudFormation::Stack",
        ),
    ]
    cause = root_cause(events)
    assert cause is not None
    assert describe_failure(cause, "ROLLBACK_COMPLETE") == (
        "Topic (AWS::SNS::Topic) CREATE_FAILED: Topic name is invalid"
    )
    assert root_cause(events[3:]) == events[3]
    assert "no failed resource" in describe_failure(None, "ROLLBACK_COMPLETE")


class _NestedEvents:
    """describe_stack_events of a root stack whose nested stack failed."""

    def __init__(self) -> None:
        nested = "arn:aws:cloudformation:eu-central-1:1:stack/root-Fleet-1/x"
        self.pages: dict[str, list[StackEvent]] = {
            nested: [
                event(
                    5,
                    "Fleet",
                    "ROLLBACK_IN_PROGRESS",
                    "failed: [Hook]",
                    "AWS::CloudFormation::Stack",
                    stack="root-Fleet-1",
                ),
                event(
                    4,
                    "Hook",
                    "CREATE_FAILED",
                    "HeartbeatTimeout must be <= 7200",
                    "AWS::AutoScaling::AutoScalingGroup",
                    stack="root-Fleet-1",
                ),
                event(0, "Old", "CREATE_FAILED", "an older failure", stack="root-Fleet-1"),
            ]
        }
        self.root = [
            event(
                2,
                "FleetStack",
                "CREATE_FAILED",
                "Embedded stack was not created",
                "AWS::CloudFormation::Stack",
                "root",
                nested,
            ),
        ]

    async def describe_stack_events(self, StackName: str, **_: Any) -> dict[str, Any]:
        return {
            "StackEvents": [
                {
                    "EventId": e.event_id,
                    "Timestamp": e.timestamp,
                    "StackName": e.stack_name,
                    "LogicalResourceId": e.logical_id,
                    "PhysicalResourceId": e.physical_id,
                    "ResourceType": e.resource_type,
                    "ResourceStatus": e.status,
                    "ResourceStatusReason": e.reason,
                }
                for e in self.pages[StackName]
            ]
        }


async def test_cause_follows_nested_stacks() -> None:
    fake = _NestedEvents()

    async def no_sleep(_: float) -> None:
        return None

    stacks = Stacks(cast(Any, fake), Progress(io.StringIO()), 1.0, 10.0, no_sleep)
    cause = await stacks.cause(fake.root, "ROLLBACK_COMPLETE")
    assert cause == (
        "Hook (AWS::AutoScaling::AutoScalingGroup) CREATE_FAILED: HeartbeatTimeout must be <= 7200"
    )


def test_changes_table_and_warnings() -> None:
    changes = [
        Change("Modify", "Fleet", "AWS::AutoScaling::AutoScalingGroup", "True", ("Properties",)),
        Change("Add", "Topic", "AWS::SNS::Topic"),
        Change("Remove", "FileSystem", "AWS::EFS::FileSystem"),
        Change("Modify", "LaunchTemplate", "AWS::EC2::LaunchTemplate", "False"),
        Change("Modify", "Cache", "AWS::ElastiCache::ReplicationGroup", "Conditional"),
        Change("Modify", "Database", "AWS::RDS::DBCluster", "False"),
    ]
    table = render_changes(changes).splitlines()
    assert table[0].split() == ["ACTION", "RESOURCE", "TYPE", "REPLACE", "SCOPE"]
    assert table[1].split() == [
        "Modify", "Fleet", "AWS::AutoScaling::AutoScalingGroup", "True", "Properties",
    ]  # fmt: skip
    assert render_changes([]) == "no changes\n"
    assert warnings(changes) == [
        "replacing Fleet terminates every BBB host, ending their meetings",
        "removing FileSystem loses the recordings on it",
        "replacing Cache empties Scalelite's server list and meeting map: running meetings "
        "can no longer be joined through Scalelite (a final snapshot is kept)",
    ]


def test_parse_parameters_both_shapes() -> None:
    text = '{"Parameters": {"A": "x", "N": 3, "B": true, "L": ["a", "b"]}}'
    assert parse_parameters(text, "f") == {"A": "x", "N": "3", "B": "true", "L": "a,b"}
    cli_form = '[{"ParameterKey": "A", "ParameterValue": "x"}]'
    assert parse_parameters(cli_form, "f") == {"A": "x"}
    with pytest.raises(ParameterError, match="f: not JSON"):
        parse_parameters("{", "f")
    with pytest.raises(ParameterError, match="parameter A: value"):
        parse_parameters('{"Parameters": {"A": {"x": 1}}}', "f")


def test_deletion_policies_as_cloudformation_applies_them() -> None:
    yaml_body = """\
AWSTemplateFormatVersion: "2010-09-09"
Conditions:
  Prod: !Equals [!Ref Env, prod]
Resources:
  Logs: {Type: AWS::S3::Bucket, DeletionPolicy: Retain}
  Scratch:
    Type: AWS::S3::Bucket
    Properties: {BucketName: !Sub "${AWS::StackName}-scratch"}
  Maybe: {Type: AWS::S3::Bucket, DeletionPolicy: !If [Prod, Retain, Delete]}
  Cluster: {Type: AWS::RDS::DBCluster}
  Member:
    Type: AWS::RDS::DBInstance
    Properties: {DBClusterIdentifier: !Ref Cluster}
  Alone: {Type: AWS::RDS::DBInstance}
"""
    assert template_deletion_policies(yaml_body) == {
        "Logs": "Retain",
        "Scratch": "Delete",
        "Maybe": "unknown",  # evaluated by CloudFormation only
        "Cluster": "Snapshot",
        "Member": "Delete",
        "Alone": "Snapshot",
    }
    # botocore hands a JSON template over already decoded.
    decoded = {
        "Resources": {"B": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "RetainExceptOnCreate"}}
    }
    assert template_deletion_policies(decoded) == {"B": "RetainExceptOnCreate"}
    # Nothing readable: no entry, so the caller knows no resource's policy.
    unreadable: object
    for unreadable in ("Resources: [", "just text", None, {"Resources": []}):
        assert template_deletion_policies(unreadable) == {}


def test_parameter_list() -> None:
    declared = {"Bucket": False, "Size": True, "Ami": False}
    assert parameter_list(declared, {"Bucket": "b", "Ami": "ami-1"}) == [
        {"ParameterKey": "Ami", "ParameterValue": "ami-1"},
        {"ParameterKey": "Bucket", "ParameterValue": "b"},
    ]
    assert parameter_list(declared, {"Bucket": "b"}, frozenset({"Ami", "Size"})) == [
        {"ParameterKey": "Ami", "UsePreviousValue": True},
        {"ParameterKey": "Bucket", "ParameterValue": "b"},
        {"ParameterKey": "Size", "UsePreviousValue": True},
    ]
    with pytest.raises(ParameterError, match="not parameters of the template: Typo"):
        parameter_list(declared, {"Bucket": "b", "Ami": "a", "Typo": "1"})
    with pytest.raises(ParameterError, match="required parameters: Ami"):
        parameter_list(declared, {"Bucket": "b"})


def test_progress_on_a_terminal_and_off_it() -> None:
    line = format_event(event(1, "Fleet", "CREATE_FAILED", "no capacity"))
    assert line.startswith("12:00:01  CREATE_FAILED")
    assert line.endswith("Fleet (AWS::SNS::Topic)  no capacity")
    plain = io.StringIO()
    progress = Progress(plain, tty=False)
    progress.status("CREATE_IN_PROGRESS 10 s")
    progress.event(event(1))
    progress.done()
    assert plain.getvalue() == format_event(event(1)) + "\n"
    term = io.StringIO()
    progress = Progress(term, tty=True)
    progress.status("waiting")
    progress.event(event(1))
    assert term.getvalue() == "\r\x1b[Kwaiting\r\x1b[K" + format_event(event(1)) + "\n"


def test_template_locations() -> None:
    settings = CtlSettings()
    assert commands.template_prefix(settings) == "bbbfleet/cfn/"
    assert commands.template_url("b", "eu-central-1", "k/root.yaml") == (
        "https://b.s3.eu-central-1.amazonaws.com/k/root.yaml"
    )
    assert commands.template_url("b", "cn-north-1", "k").endswith(".amazonaws.com.cn/k")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BBBCTL_BUCKET__PREFIX": ""}, "bucket.prefix (BBBCTL_BUCKET__PREFIX)"),
        ({"BBBCTL_BUCKET__NAME": "Not_A_Bucket"}, "bucket.name (BBBCTL_BUCKET__NAME)"),
        ({"BBBCTL_STACK__NAME": "1abc"}, "stack.name (BBBCTL_STACK__NAME)"),
        ({"BBBCTL_WAIT__TIMEOUT": "0"}, "wait.timeout (BBBCTL_WAIT__TIMEOUT)"),
    ],
)
def test_bad_settings_name_the_key(
    env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_settings(CtlSettings)
    assert cli.main(["stack", "status"]) == 2
    assert named in capsys.readouterr().err


def test_missing_bucket_and_region_are_config_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert cli.main(["stack", "sync"]) == 2
    assert "bucket.name (BBBCTL_BUCKET__NAME): must be set" in capsys.readouterr().err
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert cli.main(["stack", "status"]) == 2
    assert "aws.region (BBBCTL_AWS__REGION)" in capsys.readouterr().err


def test_version_help_and_reference(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("bbbctl ")
    with pytest.raises(SystemExit):
        cli.main(["stack", "--help"])
    out = capsys.readouterr().out
    for command in ("validate", "sync", "create", "update", "delete", "status"):
        assert command in out
    for command in ("delete", "update"):
        with pytest.raises(SystemExit):
            cli.main(["stack", command, "--help"])
        assert "--force" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["stack", "create", "--force"])
    assert "unrecognized arguments: --force" in capsys.readouterr().err
    assert cli.main(["config-reference"]) == 0
    assert "`BBBCTL_BUCKET__NAME`" in capsys.readouterr().out


def test_validate_local_passes_on_the_shipped_templates(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BBBCTL_SYNC__ROOT", str(Path(__file__).resolve().parent.parent))
    assert cli.main(["stack", "validate", "--local"]) == 0
    assert "(cfn-lint, IAM check): 0 errors" in capsys.readouterr().out


def test_validate_without_cfn_lint_says_so_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # cfn-lint is the deploy extra, not a dependency: a plain install lacks it.
    monkeypatch.setenv("BBBCTL_SYNC__ROOT", str(Path(__file__).resolve().parent.parent))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "cfnlint" else find_spec(name, *a),
    )
    assert cli.main(["stack", "validate", "--local"]) == 2
    captured = capsys.readouterr()
    assert "needs cfn-lint: pip install 'bbbfleet[deploy]'" in captured.err
    assert "errors" not in captured.out


# --- the fleet check before delete and update ------------------------------------------


class _NestedChangeSets:
    """describe_change_set of a root change set whose FleetStack replaces its group."""

    def __init__(self) -> None:
        self.sets: dict[str, list[dict[str, Any]]] = {
            "root": [
                {
                    "Action": "Modify",
                    "LogicalResourceId": "Topic",
                    "ResourceType": "AWS::SNS::Topic",
                },
                {
                    "Action": "Modify",
                    "LogicalResourceId": "FleetStack",
                    "ResourceType": "AWS::CloudFormation::Stack",
                    "PhysicalResourceId": "arn:aws:cloudformation:eu-central-1:1:stack/r-Fleet/x",
                    "Replacement": "False",
                    "ChangeSetId": "nested",
                },
            ],
            "nested": [
                {
                    "Action": "Modify",
                    "LogicalResourceId": "Fleet",
                    "ResourceType": "AWS::AutoScaling::AutoScalingGroup",
                    "PhysicalResourceId": "prod-bbb",
                    "Replacement": "True",
                }
            ],
        }

    async def create_change_set(self, **_: Any) -> dict[str, Any]:
        return {"Id": "root", "StackId": "stack-id"}

    async def describe_change_set(self, ChangeSetName: str, **_: Any) -> dict[str, Any]:
        return {
            "Status": "CREATE_COMPLETE",
            "Changes": [{"ResourceChange": raw} for raw in self.sets[ChangeSetName]],
        }


async def test_a_change_set_shows_the_nested_stacks_changes() -> None:
    async def no_sleep(_: float) -> None:
        return None

    stacks = Stacks(cast(Any, _NestedChangeSets()), Progress(io.StringIO()), 1.0, 10.0, no_sleep)
    change_set = await stacks.create_change_set("s", "url", [], "UPDATE", "c")
    assert [(c.logical_id, c.physical_id) for c in change_set.changes] == [
        ("Topic", ""),
        ("FleetStack", "arn:aws:cloudformation:eu-central-1:1:stack/r-Fleet/x"),
        ("FleetStack/Fleet", "prod-bbb"),
    ]
    assert warnings(change_set.changes) == [
        "replacing FleetStack/Fleet terminates every BBB host, ending their meetings"
    ]
    groups, nested = fleet_changes(change_set.changes)
    assert ([c.physical_id for c in groups], nested) == (["prod-bbb"], [])


def test_fleet_changes_are_removals_and_replacements_of_groups_and_nested_stacks() -> None:
    group, stack = "AWS::AutoScaling::AutoScalingGroup", "AWS::CloudFormation::Stack"
    changes = [
        Change("Modify", "A", group, "False"),
        Change("Modify", "B", group, "Conditional"),
        Change("Remove", "C", group),
        Change("Add", "D", group),
        Change("Remove", "S", stack),
        Change("Modify", "T", stack, "False"),
    ]
    groups, nested = fleet_changes(changes)
    assert [c.logical_id for c in groups] == ["B", "C"]
    assert [c.logical_id for c in nested] == ["S"]


MEMBER = fleet.Member("i-1", "bbb", "InService", "10.0.0.1")
FRESH = {MEETINGS: 2.0, PARTICIPANTS: 9.0, SNAPSHOT_AGE: 3.0, CPU: 0.4}


def server(load: float | None, state: Any = "enabled", online: bool = True) -> ScaleliteServer:
    return ScaleliteServer("s1", "https://i-1.x/bigbluebutton/api/", state, online, load)


def test_a_host_is_busy_when_either_source_says_so() -> None:
    host = fleet.host_from(MEMBER, FRESH, server(20.0), 60.0)
    assert (host.busy, host.meetings, host.participants, host.load) == (True, 2, 9, 20.0)
    assert host.describe() == "2 meeting(s), 9 participant(s), Scalelite load 20"
    idle = FRESH | {MEETINGS: 0.0, PARTICIPANTS: 0.0}
    # bbbnode says empty, Scalelite has just placed a meeting: busy.
    assert fleet.host_from(MEMBER, idle, server(15.0), 60.0).busy
    quiet = fleet.host_from(MEMBER, idle, server(0.0), 60.0)
    assert (quiet.busy, quiet.unknown) == (False, "")
    # Unreadable bbbnode: Scalelite's load alone decides.
    assert fleet.host_from(MEMBER, "timeout", server(3.0), 60.0).describe() == "Scalelite load 3"
    assert not fleet.host_from(MEMBER, "timeout", server(0.0), 60.0).busy


@pytest.mark.parametrize(
    ("metrics", "srv", "why"),
    [
        ("timeout", "getServers failed: x", "bbbnode: timeout; Scalelite: getServers failed: x"),
        (
            {MEETINGS: 0.0, PARTICIPANTS: 0.0, SNAPSHOT_AGE: 300.0},
            None,
            "bbbnode: meeting data 300 s old; Scalelite: no server registered as u",
        ),
        (
            {SNAPSHOT_AGE: 1.0, CPU: 0.1},
            server(None, "disabled", online=True),
            "bbbnode: no meeting gauges (bbbnode cannot read BBB); "
            "Scalelite: no load for its server (disabled, online)",
        ),
        ("HTTP 500", server(None, "enabled", online=False), "no load for its server (enabled"),
    ],
)
def test_a_host_nothing_can_vouch_for_is_unknown(metrics: Any, srv: Any, why: str) -> None:
    host = fleet.host_from(MEMBER, metrics, srv, 60.0, "u")
    assert not host.busy
    assert why in host.unknown


def test_a_launching_host_has_no_meeting() -> None:
    pending = fleet.Member("i-2", "bbb", "Pending", None)
    host = fleet.host_from(pending, "no private address", None, 60.0)
    assert (host.busy, host.unknown, host.describe()) == (False, "", "launching")


def test_judge_refuses_names_the_hosts_and_yields_to_force() -> None:
    busy = fleet.host_from(MEMBER, FRESH, server(20.0), 60.0)
    quiet = fleet.host_from(
        fleet.Member("i-2", "bbb", "InService"),
        FRESH | {MEETINGS: 0.0, PARTICIPANTS: 0.0},
        server(0.0),
        60.0,
    )
    lost = fleet.host_from(fleet.Member("i-3", "bbb", "InService"), "timeout", "down", 60.0)
    view = fleet.FleetView(("bbb",), (busy, quiet, lost))
    allowed, lines = fleet.judge(view, "delete stack s", force=False)
    assert not allowed
    assert lines[0] == "fleet: 3 host(s) in bbb"
    assert lines[1].split()[:3] == ["i-1", "InService", "2"]
    assert lines[2].startswith("  i-3  InService  unknown: bbbnode: timeout")
    assert not any("i-2" in line for line in lines)
    assert lines[-1].startswith("refusing to delete stack s: 1 host(s) run meetings (2 meeting(s)")
    assert "the fleet could not be read (1 host(s) unknown)" in lines[-1]
    assert "--force" in lines[-1]
    allowed, lines = fleet.judge(view, "delete stack s", force=True)
    assert allowed
    assert lines[-1].startswith("WARNING: --force: delete stack s terminates every host and ENDS")
    # Nothing running: allowed, and said.
    assert fleet.judge(fleet.FleetView(("bbb",), (quiet,)), "x", False) == (
        True,
        ["fleet: 1 host(s) in bbb", "  no meeting running"],
    )
    # A stack without a group: nothing to say.
    assert fleet.judge(fleet.FleetView((), ()), "x", False) == (True, [])
    # A fleet that could not be listed at all.
    allowed, lines = fleet.judge(
        fleet.FleetView((), (), ("the stack's groups: denied",)), "x", False
    )
    assert not allowed
    assert "  cannot read: the stack's groups: denied" in lines
