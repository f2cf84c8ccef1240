"""The IAM wildcard check: the shipped templates pass, every rule catches its case."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from bbbctl import iam_check

CFN = Path(__file__).resolve().parent.parent / "cfn"


def role(*statements: dict[str, Any], managed: list[str] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "AssumeRolePolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "*"}]},
        "Policies": [{"PolicyName": "p", "PolicyDocument": {"Statement": list(statements)}}],
    }
    if managed:
        props["ManagedPolicyArns"] = managed
    return {"Resources": {"R": {"Type": "AWS::IAM::Role", "Properties": props}}}


def rules(template: dict[str, Any]) -> list[str]:
    return [f.rule for f in iam_check.check_template("t.yaml", template)]


def test_shipped_templates_pass() -> None:
    files = iam_check.template_files([CFN])
    assert len(files) >= 9
    assert iam_check.check_files(files) == []


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b"}, ["action-star"]),
        ({"Effect": "Allow", "Action": ["s3:*"], "Resource": "arn:aws:s3:::b"}, ["service-star"]),
        (
            {"Effect": "Allow", "Action": "autoscaling:SetDesiredCapacity", "Resource": "*"},
            ["resource-star"],
        ),
        (
            {
                "Effect": "Allow",
                "Action": "ec2:TerminateInstances",
                "Resource": "arn:aws:ec2:*:*:*",
            },
            ["resource-star"],
        ),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::b"}, ["not-action"]),
        ({"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "x"}, ["not-resource"]),
        # Read-only actions may have Resource "*" (many have no resource-level permissions).
        ({"Effect": "Allow", "Action": ["ec2:DescribeInstances", "s3:List*"], "Resource": "*"}, []),
        # A Deny never widens anything.
        ({"Effect": "Deny", "Action": "*", "Resource": "*"}, []),
        (
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": {"Ref": "S"},
            },
            [],
        ),
    ],
)
def test_statement_rules(statement: dict[str, Any], expected: list[str]) -> None:
    assert rules(role(statement)) == expected


def test_both_branches_of_a_condition_are_checked() -> None:
    statement = {
        "Fn::If": [
            "Scalable",
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"},
        ]
    }
    assert rules(role(statement)) == ["resource-star"]
    hidden = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": {"Fn::If": ["C", "*", "x"]}}
    assert rules(role(hidden)) == ["resource-star"]


def test_json_string_documents_are_read() -> None:
    doc = {"Fn::Sub": '{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "${B}"}]}'}
    template = {
        "Resources": {
            "P": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": doc}}
        }
    }
    assert rules(template) == ["action-star"]


def test_unreadable_policy_fails_closed() -> None:
    template = {
        "Resources": {"P": {"Type": "AWS::IAM::Policy", "Properties": {"PolicyDocument": "{no"}}}
    }
    assert rules(template) == ["unreadable"]


def test_broad_managed_policies() -> None:
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    assert rules(role(managed=[admin])) == ["broad-managed-policy"]
    assert rules(role(managed=["arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy"])) == []


def test_resource_policies_allow_self_star_but_not_action_star() -> None:
    key_policy = {"Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}
    template = {
        "Resources": {"K": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": key_policy}}}
    }
    assert rules(template) == []
    key_policy["Statement"][0]["Action"] = "*"
    assert rules(template) == ["action-star"]


def test_cli_fails_on_a_bad_template_and_names_the_resource(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            Resources:
              Scaler:
                Type: AWS::IAM::Role
                Properties:
                  AssumeRolePolicyDocument: {Statement: []}
                  Policies:
                    - PolicyName: p
                      PolicyDocument:
                        Statement:
                          - Effect: Allow
                            Action: autoscaling:TerminateInstanceInAutoScalingGroup
                            Resource: !If [C, "*", !Sub "arn:${AWS::Partition}:x"]
            """
        )
    )
    assert iam_check.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad.yaml:10: Scaler Policies[0].Statement[0]: [resource-star]" in out
    assert iam_check.main([str(CFN)]) == 0


def test_cli_fails_when_nothing_is_found(tmp_path: Path) -> None:
    assert iam_check.main([str(tmp_path)]) == 1
