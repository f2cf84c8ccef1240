"""bbbctl against moto_server (S3 and CloudFormation) on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from bbbctl import commands
from bbbctl.progress import Progress
from bbbctl.settings import (
    BucketSettings,
    CtlSettings,
    FleetSettings,
    StackSettings,
    SyncSettings,
    WaitSettings,
)
from bbbctl.stack import Stacks
from bbbsim.moto_server import DEFAULT_REGION
from bbbsim.node_process import free_port
from bbbsim.scalelite_emulator import ScaleliteEmulator
from bbbsim.scalelite_emulator import serve as serve_scalelite
from tests.scaler_nodes import BbbHosts, NodeRouter, bbb_hosts, exposition, node_router

pytestmark = pytest.mark.integration

BUCKET = "deploy-bucket"
ROOT = """\
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  TemplateBucket: {Type: String}
  TemplatePrefix: {Type: String, Default: ""}
  TopicName: {Type: String}
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties: {TopicName: !Ref TopicName}
  Data:
    Type: AWS::S3::Bucket
  Logs:
    Type: AWS::S3::Bucket
    DeletionPolicy: Retain
    UpdateReplacePolicy: Retain
  Child:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: !Sub "https://${TemplateBucket}.s3.${AWS::Region}.${AWS::URLSuffix}/${TemplatePrefix}child.yaml"
Outputs:
  TopicArn: {Value: !Ref Topic}
"""
CHILD = """\
AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Queue: {Type: AWS::SQS::Queue}
  Spool: {Type: AWS::S3::Bucket}
"""


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@dataclass
class Tool:
    """A checkout with templates, a bucket in moto, and a way to run commands."""

    root: Path
    session: Any
    answers: list[bool]
    out: io.StringIO
    err: io.StringIO
    fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)

    def settings(self) -> CtlSettings:
        return CtlSettings(
            stack=StackSettings(parameters_file=self.root / "params.json"),
            bucket=BucketSettings(name=BUCKET),
            sync=SyncSettings(root=self.root),
            wait=WaitSettings(poll_interval=0.01, timeout=60),
            fleet=self.fleet,
        )

    def context(self) -> commands.Context:
        self.out, self.err = io.StringIO(), io.StringIO()
        return commands.Context(self.settings(), self.out, self.err, self.confirm, no_sleep)

    def confirm(self, question: str) -> bool:
        return self.answers.pop(0)

    def params(self, topic: str) -> None:
        (self.root / "params.json").write_text(f'{{"Parameters": {{"TopicName": "{topic}"}}}}')


@pytest_asyncio.fixture
async def tool(
    moto_endpoint: str, aws_session: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Tool:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    async with aws_session.client("s3") as s3:
        await s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": DEFAULT_REGION}
        )
    (tmp_path / "cfn").mkdir()
    (tmp_path / "cfn" / "root.yaml").write_text(ROOT)
    (tmp_path / "cfn" / "child.yaml").write_text(CHILD)
    (tmp_path / "packer" / "scripts").mkdir(parents=True)
    (tmp_path / "packer" / "scripts" / "base.sh").write_text("#!/bin/sh\n")
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "bbbfleet-0.1.0-py3-none-any.whl").write_bytes(b"PK wheel")
    t = Tool(tmp_path, aws_session, [], io.StringIO(), io.StringIO())
    t.params("alarms")
    return t


async def keys(tool: Tool) -> dict[str, str]:
    """Key -> stored sha256 metadata of everything in the deploy bucket."""
    out = {}
    async with tool.session.client("s3") as s3:
        listing = await s3.list_objects_v2(Bucket=BUCKET)
        for obj in listing.get("Contents", []):
            head = await s3.head_object(Bucket=BUCKET, Key=obj["Key"])
            out[obj["Key"]] = head["Metadata"].get("sha256", "")
    return out


async def test_sync_uploads_only_what_changed(tool: Tool) -> None:
    assert await commands.sync_command(tool.context()) == 0
    assert "sync: 4 uploaded, 0 unchanged, 0 deleted" in tool.out.getvalue()
    stored = await keys(tool)
    assert stored["bbbfleet/cfn/root.yaml"] == hashlib.sha256(ROOT.encode()).hexdigest()
    assert set(stored) == {
        "bbbfleet/cfn/root.yaml", "bbbfleet/cfn/child.yaml", "bbbfleet/packer/scripts/base.sh",
        "bbbfleet/dist/bbbfleet-0.1.0-py3-none-any.whl",
    }  # fmt: skip

    assert await commands.sync_command(tool.context()) == 0
    assert "sync: 0 uploaded, 4 unchanged, 0 deleted" in tool.out.getvalue()

    (tool.root / "cfn" / "child.yaml").write_text(CHILD + "# changed\n")
    (tool.root / "packer" / "scripts" / "base.sh").unlink()
    assert await commands.sync_command(tool.context()) == 0
    out = tool.out.getvalue()
    assert "uploaded  s3://deploy-bucket/bbbfleet/cfn/child.yaml" in out
    assert "deleted   s3://deploy-bucket/bbbfleet/packer/scripts/base.sh" in out
    assert "sync: 1 uploaded, 2 unchanged, 1 deleted" in out


async def test_create_status_update_delete(tool: Tool) -> None:
    assert await commands.deploy(tool.context(), "create", yes=True) == 0
    out, err = tool.out.getvalue(), tool.err.getvalue()
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("Add")] == [
        ["Add", "Topic"], ["Add", "Data"], ["Add", "Logs"], ["Add", "Child"],
    ]  # fmt: skip
    assert "CREATE_COMPLETE" in err  # the event display
    assert "status  CREATE_COMPLETE" in out

    assert await commands.deploy(tool.context(), "create", yes=True) == 1
    assert "exists (CREATE_COMPLETE); use `bbbctl stack update`" in tool.err.getvalue()

    assert await commands.status(tool.context()) == 0
    assert "status  CREATE_COMPLETE" in tool.out.getvalue()

    # Nothing changed: the change set is empty and nothing is executed.
    assert await commands.deploy(tool.context(), "update", yes=True) == 0
    assert "nothing to change" in tool.out.getvalue()

    tool.params("alarms-2")
    tool.answers.append(True)
    assert await commands.deploy(tool.context(), "update", yes=False) == 0
    assert "status  UPDATE_COMPLETE" in tool.out.getvalue()

    async with tool.session.client("cloudformation") as cfn:
        listed = await cfn.list_stack_resources(StackName="bbbfleet")
        resources = listed["StackResourceSummaries"]
        child = next(
            r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == "Child"
        )
        nested = (await cfn.list_stack_resources(StackName=child))["StackResourceSummaries"]
    ids = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in [*resources, *nested]}
    data, logs, spool = ids["Data"], ids["Logs"], ids["Spool"]
    async with tool.session.client("s3") as s3:
        for bucket in (data, logs, spool):
            await s3.put_object(Bucket=bucket, Key="x", Body=b"1")

    tool.answers.append(False)
    assert await commands.delete(tool.context(), yes=False) == 1
    assert await commands.status(tool.context()) == 0

    assert await commands.delete(tool.context(), yes=True) == 0
    out = tool.out.getvalue()
    assert f"emptied   s3://{data} (1 objects)" in out
    assert f"emptied   s3://{spool} (1 objects)" in out  # in the nested stack
    # The retained bucket outlives the stack with everything in it.
    assert f"kept      s3://{logs} (DeletionPolicy Retain)" in out
    async with tool.session.client("s3") as s3:
        kept = await s3.list_objects_v2(Bucket=logs)
    assert [o.get("Key") for o in kept.get("Contents", [])] == ["x"]
    assert "emptied   s3://deploy-bucket/bbbfleet/ (4 objects)" in out
    assert "stack bbbfleet deleted" in out
    assert await keys(tool) == {}
    assert await commands.status(tool.context()) == 1


async def test_declined_create_leaves_no_stack(tool: Tool) -> None:
    tool.answers.append(False)
    assert await commands.deploy(tool.context(), "create", yes=False) == 1
    assert "not executed" in tool.err.getvalue()
    assert await commands.status(tool.context()) == 1
    assert await commands.deploy(tool.context(), "update", yes=True) == 1
    assert "does not exist; use `bbbctl stack create`" in tool.err.getvalue()


async def test_unknown_parameter_is_named(tool: Tool) -> None:
    (tool.root / "params.json").write_text('{"Parameters": {"TopicName": "a", "TopicNmae": "b"}}')
    with pytest.raises(commands.ParameterError, match="not parameters of the template: TopicNmae"):
        await commands.deploy(tool.context(), "create", yes=True)


async def test_a_bucket_in_a_retained_nested_stack_is_kept_with_it(tool: Tool) -> None:
    inner = "Resources:\n  Spool: {Type: AWS::S3::Bucket}\n"
    outer = f"""\
Resources:
  Kept:
    Type: AWS::CloudFormation::Stack
    DeletionPolicy: Retain
    UpdateReplacePolicy: Retain
    Properties: {{TemplateURL: "https://{BUCKET}.s3.amazonaws.com/inner.yaml"}}
  Gone:
    Type: AWS::CloudFormation::Stack
    Properties: {{TemplateURL: "https://{BUCKET}.s3.amazonaws.com/inner.yaml"}}
"""
    async with tool.session.client("s3") as s3:
        await s3.put_object(Bucket=BUCKET, Key="inner.yaml", Body=inner.encode())
    async with tool.session.client("cloudformation") as cfn:
        await cfn.create_stack(StackName="outer", TemplateBody=outer)
        listed = (await cfn.list_stack_resources(StackName="outer"))["StackResourceSummaries"]
        ids = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in listed}
        spools = {
            name: (await cfn.list_stack_resources(StackName=ids[name]))["StackResourceSummaries"][
                0
            ]["PhysicalResourceId"]
            for name in ("Kept", "Gone")
        }
        stacks = Stacks(cfn, Progress(io.StringIO()), 0.01, 60, no_sleep)
        found = await stacks.deletion_policies("outer", "AWS::S3::Bucket")
    assert sorted(found) == sorted([(spools["Kept"], "Retain"), (spools["Gone"], "Delete")])


async def test_validate_calls_validate_template(tool: Tool) -> None:
    assert await commands.validate(tool.context(), local=False) == 0
    assert "2 templates (cfn-lint, IAM check, ValidateTemplate): 0 errors" in tool.out.getvalue()
    (tool.root / "cfn" / "child.yaml").write_text("Resources: [not, a, map]\n")
    assert await commands.validate(tool.context(), local=False) == 1
    assert "child.yaml" in tool.out.getvalue()


# --- the fleet check: a stack with an Auto Scaling Group, its hosts on loopback ----------

LB_SECRET = "bbbctl-test-loadbalancer-secret-0123456789"
BBB_SECRET = "bbbctl-test-bbb-secret-0123456789"
GROUP = """\
  LaunchTemplate:
    Type: AWS::EC2::LaunchTemplate
    Properties:
      LaunchTemplateData: {ImageId: ami-0bbb0000000000001, InstanceType: c5.large}
  Fleet:
    Type: AWS::AutoScaling::AutoScalingGroup
    Properties:
      AutoScalingGroupName: bbbctl-fleet
      AvailabilityZones: [eu-central-1a]
      LaunchTemplate:
        LaunchTemplateId: !Ref LaunchTemplate
        Version: !GetAtt LaunchTemplate.LatestVersionNumber
      MinSize: "0"
      MaxSize: "4"
      DesiredCapacity: "3"
"""
FLEET_CHILD = 'AWSTemplateFormatVersion: "2010-09-09"\nResources:\n' + GROUP


def fleet_root(group_here: bool) -> str:
    """The production shape: Scalelite's URL and secret as outputs, the group nested (or,
    ``group_here``, in the root, where moto's change sets can see it go)."""
    return (
        'AWSTemplateFormatVersion: "2010-09-09"\n'
        "Parameters:\n"
        "  TemplateBucket: {Type: String}\n"
        '  TemplatePrefix: {Type: String, Default: ""}\n'
        "  Domain: {Type: String, Default: bbb.example.test}\n"
        "  ScaleliteUrl: {Type: String}\n"
        "  ScaleliteSecretArn: {Type: String}\n"
        "Resources:\n"
        "  Topic: {Type: AWS::SNS::Topic}\n"
        + (
            GROUP
            if group_here
            else "  FleetStack:\n"
            "    Type: AWS::CloudFormation::Stack\n"
            "    Properties:\n"
            '      TemplateURL: !Sub "https://${TemplateBucket}.s3.${AWS::Region}.'
            '${AWS::URLSuffix}/${TemplatePrefix}child.yaml"\n'
        )
        + "Outputs:\n"
        "  ScaleliteUrl: {Value: !Ref ScaleliteUrl}\n"
        "  ScaleliteSecretArn: {Value: !Ref ScaleliteSecretArn}\n"
    )


@dataclass
class FleetWorld:
    """A created stack whose group runs three instances; bbbnode metrics and Scalelite
    (with a BBB emulator per instance) answer for them on loopback."""

    tool: Tool
    ids: tuple[str, ...]
    router: NodeRouter
    hosts: BbbHosts
    scalelite: ScaleliteEmulator
    scalelite_url: str

    def fleet_settings(self) -> FleetSettings:
        return FleetSettings(
            metrics_url_template=self.router.url_template,
            server_url_template=self.hosts.server_url_template,
            timeout=1.0,
        )

    def context(self) -> commands.Context:
        self.tool.fleet = self.fleet_settings()
        return self.tool.context()

    def idle(self) -> None:
        for iid in self.ids:
            self.router.nodes[iid] = exposition(meetings=0)

    async def exists(self) -> bool:
        return await commands.status(self.tool.context()) == 0


async def make_world(tool: Tool, group_here: bool) -> AsyncIterator[FleetWorld]:
    emulator = ScaleliteEmulator(LB_SECRET)
    runner, port = await serve_scalelite(emulator)
    async with tool.session.client("secretsmanager") as sm:
        secret = await sm.create_secret(Name="scalelite-lb", SecretString=LB_SECRET)
    (tool.root / "cfn" / "root.yaml").write_text(fleet_root(group_here))
    (tool.root / "cfn" / "child.yaml").write_text(FLEET_CHILD)
    (tool.root / "params.json").write_text(
        json.dumps(
            {
                "Parameters": {
                    "ScaleliteUrl": f"http://127.0.0.1:{port}",
                    "ScaleliteSecretArn": secret["ARN"],
                }
            }
        )
    )
    try:
        # Created directly, not through bbbctl's change set: moto gives a stack made by a
        # change set no outputs, and the outputs are where bbbctl finds Scalelite.
        assert await commands.sync_command(tool.context()) == 0
        prefix = commands.template_prefix(tool.settings())
        async with tool.session.client("cloudformation") as cfn:
            await cfn.create_stack(
                StackName="bbbfleet",
                TemplateURL=commands.template_url(BUCKET, DEFAULT_REGION, prefix + "root.yaml"),
                Parameters=[
                    {"ParameterKey": "TemplateBucket", "ParameterValue": BUCKET},
                    {"ParameterKey": "TemplatePrefix", "ParameterValue": prefix},
                    {"ParameterKey": "ScaleliteUrl", "ParameterValue": f"http://127.0.0.1:{port}"},
                    {"ParameterKey": "ScaleliteSecretArn", "ParameterValue": secret["ARN"]},
                ],
            )
        async with tool.session.client("autoscaling") as autoscaling:
            groups = await autoscaling.describe_auto_scaling_groups(
                AutoScalingGroupNames=["bbbctl-fleet"]
            )
        ids = tuple(sorted(i["InstanceId"] for i in groups["AutoScalingGroups"][0]["Instances"]))
        assert len(ids) == 3
        async with node_router() as router, bbb_hosts(list(ids), BBB_SECRET) as hosts:
            for iid in ids:
                emulator.add_server(hosts.url(iid), BBB_SECRET, state="enabled")
            await emulator.poll()
            yield FleetWorld(tool, ids, router, hosts, emulator, f"http://127.0.0.1:{port}")
    finally:
        await emulator.close()
        await runner.cleanup()


@pytest_asyncio.fixture
async def world(tool: Tool) -> AsyncIterator[FleetWorld]:
    async for w in make_world(tool, group_here=False):
        yield w


@pytest_asyncio.fixture
async def root_world(tool: Tool) -> AsyncIterator[FleetWorld]:
    async for w in make_world(tool, group_here=True):
        yield w


async def test_delete_is_refused_while_a_host_runs_meetings(world: FleetWorld) -> None:
    a, b, _c = world.ids
    world.idle()
    world.router.nodes[a] = exposition(meetings=2)
    before = await keys(world.tool)
    # No answer queued: asking would fail the test; the refusal comes first.
    assert await commands.delete(world.context(), yes=False) == 1
    err = world.tool.err.getvalue()
    assert f"  {a}  InService  2 meeting(s), 4 participant(s)" in err
    assert b not in err
    assert "refusing to delete stack bbbfleet: 1 host(s) run meetings (2 meeting(s)" in err
    assert "pass --force" in err
    assert "not deleted" in err
    assert await world.exists()
    assert await keys(world.tool) == before  # nothing emptied


async def test_scalelite_vouches_for_hosts_bbbnode_cannot_be_asked_about(
    world: FleetWorld,
) -> None:
    # From outside the VPC no host's :9688 answers; Scalelite's load says who is busy.
    a, _b, _c = world.ids
    world.hosts.hosts[a].add_meeting("lecture", 6)
    await world.scalelite.poll()
    assert await commands.delete(world.context(), yes=True) == 1
    err = world.tool.err.getvalue()
    assert f"  {a}  InService  Scalelite load 15" in err
    assert "refusing to delete stack bbbfleet: 1 host(s) run meetings" in err
    # The meeting ends and Scalelite polls: the stack may go.
    world.hosts.hosts[a].end_meeting("lecture")
    await world.scalelite.poll()
    assert await commands.delete(world.context(), yes=True) == 0
    assert "  no meeting running" in world.tool.err.getvalue()
    assert not await world.exists()


async def test_a_fleet_that_cannot_be_read_is_not_deleted_without_force(
    world: FleetWorld,
) -> None:
    world.scalelite.inject_outage("http_503")
    assert await commands.delete(world.context(), yes=True) == 1
    err = world.tool.err.getvalue()
    assert "the fleet could not be read (3 host(s) unknown)" in err
    assert "bbbnode: HTTP 404; Scalelite: getServers failed" in err
    assert await world.exists()

    assert await commands.delete(world.context(), yes=True, force=True) == 0
    err = world.tool.err.getvalue()
    assert "WARNING: --force: delete stack bbbfleet terminates every host and ENDS" in err
    assert "stack bbbfleet deleted" in world.tool.out.getvalue()
    assert not await world.exists()


async def test_the_settings_name_scalelite_over_the_stacks_outputs(world: FleetWorld) -> None:
    a = world.ids[0]
    world.hosts.hosts[a].add_meeting("lecture", 6)
    await world.scalelite.poll()
    wrong = world.fleet_settings().model_copy(
        update={
            "scalelite_url": f"http://127.0.0.1:{free_port()}",
            "scalelite_secret": SecretStr(LB_SECRET),
        }
    )
    world.tool.fleet = wrong
    assert await commands.delete(world.tool.context(), yes=True) == 1
    assert "Scalelite: getServers failed" in world.tool.err.getvalue()
    right = wrong.model_copy(update={"scalelite_url": world.scalelite_url})
    world.tool.fleet = right
    assert await commands.delete(world.tool.context(), yes=True) == 1
    assert f"  {a}  InService  Scalelite load 15" in world.tool.err.getvalue()


async def test_delete_looks_again_after_the_question(world: FleetWorld) -> None:
    a = world.ids[0]
    world.idle()

    def meeting_starts_while_asking(question: str) -> bool:
        world.router.nodes[a] = exposition(meetings=1)
        return True

    ctx = world.context()
    ctx = dataclasses.replace(ctx, confirm=meeting_starts_while_asking)
    assert await commands.delete(ctx, yes=False) == 1
    err = world.tool.err.getvalue()
    assert err.count("fleet: 3 host(s) in bbbctl-fleet") == 2
    assert "refusing to delete stack bbbfleet" in err
    assert await world.exists()


async def test_an_update_that_removes_the_group_is_refused_while_meetings_run(
    root_world: FleetWorld,
) -> None:
    world = root_world
    world.idle()
    world.router.nodes[world.ids[1]] = exposition(meetings=3)
    (world.tool.root / "cfn" / "root.yaml").write_text(fleet_root(group_here=False))
    assert await commands.deploy(world.context(), "update", yes=True) == 1
    err = world.tool.err.getvalue()
    assert "refusing to update stack bbbfleet (it removes or replaces bbbctl-fleet)" in err
    assert "not executed" in err
    async with world.tool.session.client("cloudformation") as cfn:
        listed = await cfn.list_change_sets(StackName="bbbfleet")
        resources = await cfn.list_stack_resources(StackName="bbbfleet")
    assert listed["Summaries"] == []  # discarded
    assert "Fleet" in {r["LogicalResourceId"] for r in resources["StackResourceSummaries"]}

    world.idle()
    assert await commands.deploy(world.context(), "update", yes=True) == 0
    assert "status  UPDATE_COMPLETE" in world.tool.out.getvalue()


async def test_an_update_that_keeps_the_group_reads_no_fleet(root_world: FleetWorld) -> None:
    world = root_world
    world.router.nodes[world.ids[0]] = exposition(meetings=3)
    # A new parameter value changes the Topic only: no check, no refusal.
    params = json.loads((world.tool.root / "params.json").read_text())
    params["Parameters"]["Domain"] = "other.example.test"
    (world.tool.root / "params.json").write_text(json.dumps(params))
    assert await commands.deploy(world.context(), "update", yes=True) == 0
    assert "fleet:" not in world.tool.err.getvalue()
