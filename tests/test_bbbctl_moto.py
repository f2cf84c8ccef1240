"""bbbctl against moto_server (S3 and CloudFormation) on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bbbctl import commands
from bbbctl.settings import BucketSettings, CtlSettings, StackSettings, SyncSettings, WaitSettings
from bbbsim.moto_server import DEFAULT_REGION

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

    def settings(self) -> CtlSettings:
        return CtlSettings(
            stack=StackSettings(parameters_file=self.root / "params.json"),
            bucket=BucketSettings(name=BUCKET),
            sync=SyncSettings(root=self.root),
            wait=WaitSettings(poll_interval=0.01, timeout=60),
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
        ["Add", "Topic"], ["Add", "Data"], ["Add", "Child"],
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
    data = next(r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == "Data")
    async with tool.session.client("s3") as s3:
        await s3.put_object(Bucket=data, Key="x", Body=b"1")

    tool.answers.append(False)
    assert await commands.delete(tool.context(), yes=False) == 1
    assert await commands.status(tool.context()) == 0

    assert await commands.delete(tool.context(), yes=True) == 0
    out = tool.out.getvalue()
    assert f"emptied   s3://{data} (1 objects)" in out
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


async def test_validate_calls_validate_template(tool: Tool) -> None:
    assert await commands.validate(tool.context(), local=False) == 0
    assert "2 templates (cfn-lint, IAM check, ValidateTemplate): 0 errors" in tool.out.getvalue()
    (tool.root / "cfn" / "child.yaml").write_text("Resources: [not, a, map]\n")
    assert await commands.validate(tool.context(), local=False) == 1
    assert "child.yaml" in tool.out.getvalue()
