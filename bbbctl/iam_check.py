"""The IAM wildcard check over CloudFormation templates.

Rules, for every ``Allow`` statement of an identity policy (roles, users,
groups, managed and inline policies):

* ``action-star``: no ``Action: "*"``;
* ``service-star``: no ``service:*`` (every action of a service);
* ``not-action`` / ``not-resource``: no ``NotAction`` or ``NotResource`` with
  ``Allow`` (both grant everything except a list);
* ``resource-star``: ``Resource: "*"`` (or an ARN whose every part is ``*``)
  only for read-only actions (``Describe*``, ``Get*``, ``List*``);
* ``broad-managed-policy``: no AWS managed policy that grants all of a
  service or all of IAM (AdministratorAccess, PowerUserAccess, IAMFullAccess).

Resource policies (bucket, topic, key, file-system policies) are checked for
``action-star`` and ``not-action`` only: there ``Resource: "*"`` means the
resource itself.

Every ``Fn::If`` branch is checked, so a condition cannot hide a wildcard.
A policy that cannot be read counts as a finding: the check fails closed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READ_ONLY_VERBS = ("Describe", "Get", "List")
BROAD_MANAGED_POLICIES = frozenset({"AdministratorAccess", "PowerUserAccess", "IAMFullAccess"})

# Where each resource type keeps its policy documents.
_IDENTITY_INLINE = frozenset({"AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"})
_IDENTITY_DOCUMENT = frozenset(
    {
        "AWS::IAM::Policy",
        "AWS::IAM::ManagedPolicy",
        "AWS::IAM::RolePolicy",
        "AWS::IAM::UserPolicy",
        "AWS::IAM::GroupPolicy",
    }
)
_RESOURCE_POLICIES = {
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
    "AWS::EFS::FileSystem": "FileSystemPolicy",
    "AWS::SecretsManager::ResourcePolicy": "ResourcePolicy",
}

# "*", or an ARN whose resource part is "*" (arn:aws:s3:::*, arn:aws:ec2:*:*:*).
_ALL_RESOURCES = re.compile(r"^(\*|arn:[^:]*:[^:]*:[^:]*:[^:]*:\*)$")
_OPAQUE = "\x00"
"""Stands for a value only known at deploy time (Ref, GetAtt, ...): never a wildcard."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken rule, located well enough to fix it."""

    template: str
    resource: str
    where: str
    rule: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        at = f"{self.template}:{self.line}" if self.line else self.template
        return f"{at}: {self.resource} {self.where}: [{self.rule}] {self.message}"


def possible_values(value: Any) -> list[Any]:
    """Every value an intrinsic can take (both Fn::If branches); unknowable parts are opaque."""
    if isinstance(value, Mapping) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Fn::If" and isinstance(arg, Sequence) and len(arg) == 3:
            return possible_values(arg[1]) + possible_values(arg[2])
        if key == "Fn::Sub":
            text = arg[0] if isinstance(arg, Sequence) and not isinstance(arg, str) else arg
            return [str(text)]
        if key == "Fn::Join" and isinstance(arg, Sequence) and len(arg) == 2:
            parts = arg[1] if isinstance(arg[1], Sequence) else [_OPAQUE]
            return [str(arg[0]).join(p if isinstance(p, str) else _OPAQUE for p in parts)]
        if key.startswith("Fn::") or key == "Ref":
            return [_OPAQUE]
    return [value]


def _strings(value: Any) -> list[str]:
    """The strings a string-or-list property can hold, over every branch."""
    out: list[str] = []
    for candidate in possible_values(value):
        if isinstance(candidate, str):
            out.append(candidate)
        elif isinstance(candidate, Sequence):
            for item in candidate:
                out.extend(_strings(item))
    return out


def is_read_only(action: str) -> bool:
    """True for actions that only read (by IAM's naming: Describe*, Get*, List*)."""
    _, _, verb = action.partition(":")
    return verb.startswith(READ_ONLY_VERBS)


def _statements(document: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for doc in possible_values(document):
        if doc is None or doc == _OPAQUE:
            continue
        if isinstance(doc, str):
            # A JSON document in Fn::Sub: ${...} placeholders sit inside strings.
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError as exc:
                raise ValueError(f"policy document is not JSON: {exc}") from None
        if not isinstance(doc, Mapping):
            raise ValueError("policy document is not an object")
        statement = doc.get("Statement", [])
        for candidate in possible_values(statement):
            items = [candidate] if isinstance(candidate, Mapping) else candidate
            if not isinstance(items, Sequence):
                raise ValueError("Statement is neither an object nor a list")
            for index, item in enumerate(items):
                for stmt in possible_values(item):
                    if stmt is None or stmt == _OPAQUE:
                        continue
                    if not isinstance(stmt, Mapping):
                        raise ValueError(f"Statement[{index}] is not an object")
                    yield f"Statement[{index}]", stmt


def check_statement(stmt: Mapping[str, Any], identity: bool) -> list[tuple[str, str]]:
    """(rule, message) for each rule ``stmt`` breaks; a Deny breaks none."""
    if "Allow" not in _strings(stmt.get("Effect", "")):
        return []
    problems: list[tuple[str, str]] = []
    actions = _strings(stmt.get("Action", []))
    if "NotAction" in stmt:
        problems.append(("not-action", "Allow with NotAction grants every other action"))
    if "*" in actions:
        problems.append(("action-star", 'Action "*" grants every action of every service'))
    problems.extend(
        ("service-star", f"{action} grants every action of the service")
        for action in actions
        if action != "*" and action.endswith(":*")
    )
    if not identity:
        return problems
    if "NotResource" in stmt:
        problems.append(("not-resource", "Allow with NotResource grants every other resource"))
    resources = _strings(stmt.get("Resource", []))
    if any(_ALL_RESOURCES.match(r) for r in resources):
        mutating = sorted({a for a in actions if a != "*" and not is_read_only(a)})
        if mutating:
            problems.append(
                (
                    "resource-star",
                    f'Resource "*" on actions that change things: {", ".join(mutating)}',
                )
            )
    return problems


def _line(node: Any) -> int | None:
    mark = getattr(node, "start_mark", None)
    return int(mark.line) + 1 if mark is not None else None


def _documents(rtype: str, props: Mapping[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    """(where, document, is_identity_policy) of every policy a resource holds."""
    if rtype in _IDENTITY_INLINE:
        for policies in possible_values(props.get("Policies", [])):
            if isinstance(policies, Sequence) and not isinstance(policies, str):
                for index, policy in enumerate(policies):
                    for p in possible_values(policy):
                        if isinstance(p, Mapping):
                            yield f"Policies[{index}]", p.get("PolicyDocument"), True
    elif rtype in _IDENTITY_DOCUMENT:
        yield "PolicyDocument", props.get("PolicyDocument"), True
    elif rtype in _RESOURCE_POLICIES:
        key = _RESOURCE_POLICIES[rtype]
        if key in props:
            yield key, props[key], False


def check_template(name: str, template: Mapping[str, Any]) -> list[Finding]:
    """Every finding in one parsed template."""
    findings: list[Finding] = []
    resources = template.get("Resources", {})
    if not isinstance(resources, Mapping):
        return [Finding(name, "(template)", "Resources", "unreadable", "Resources is not a map")]
    for logical_id, resource in resources.items():
        if not isinstance(resource, Mapping):
            continue
        rtype = str(resource.get("Type", ""))
        props = resource.get("Properties", {})
        if not isinstance(props, Mapping):
            continue
        for arn in _strings(props.get("ManagedPolicyArns", [])):
            policy = arn.rsplit("/", 1)[-1]
            if ":iam::aws:policy/" in arn and policy in BROAD_MANAGED_POLICIES:
                findings.append(
                    Finding(
                        name,
                        logical_id,
                        "ManagedPolicyArns",
                        "broad-managed-policy",
                        f"{policy} grants far more than any bbbfleet part needs",
                        _line(props),
                    )
                )
        for where, document, identity in _documents(rtype, props):
            try:
                for stmt_where, stmt in _statements(document):
                    for rule, message in check_statement(stmt, identity):
                        findings.append(
                            Finding(
                                name,
                                logical_id,
                                f"{where}.{stmt_where}",
                                rule,
                                message,
                                _line(stmt),
                            )
                        )
            except ValueError as exc:
                findings.append(
                    Finding(name, logical_id, where, "unreadable", str(exc), _line(props))
                )
    return findings


def load_template(path: Path) -> Mapping[str, Any]:
    """A template (YAML with CloudFormation's short tags, or JSON) as a mapping with line marks."""
    from cfnlint.decode import decode

    template, errors = decode(str(path))
    if errors or template is None:
        detail = "; ".join(str(e.message) for e in errors) or "empty"
        raise ValueError(f"{path}: cannot parse: {detail}")
    return template  # type: ignore[no-any-return]


def check_files(paths: Sequence[Path]) -> list[Finding]:
    """Findings over every file; a file that cannot be parsed is a finding too."""
    findings: list[Finding] = []
    for path in paths:
        try:
            template = load_template(path)
        except ValueError as exc:
            findings.append(Finding(str(path), "(template)", "", "unreadable", str(exc)))
            continue
        findings.extend(check_template(str(path), template))
    return findings


def template_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given, directories expanded to their *.yaml, *.yml and *.json templates."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                p
                for p in sorted(path.iterdir())
                if p.suffix in (".yaml", ".yml") or (p.suffix == ".json" and "param" not in p.name)
            )
        else:
            out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bbbctl.iam_check [PATH ...]``: exit 1 on any finding."""
    parser = argparse.ArgumentParser(
        prog="python -m bbbctl.iam_check",
        description="Fail on IAM wildcards in CloudFormation templates (see the module doc).",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path("cfn")],
        help="templates or directories (default: cfn)",
    )
    args = parser.parse_args(argv)
    files = template_files(args.paths)
    if not files:
        print("iam-check: no templates found", file=sys.stderr)
        return 1
    findings = check_files(files)
    for finding in findings:
        print(finding)
    print(f"iam-check: {len(files)} templates, {len(findings)} findings", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
