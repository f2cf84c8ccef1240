"""What CloudFormation does to the stack's data when a resource is deleted or replaced.

CloudFormation's default for most types is Delete, silently: every resource that holds
data (database, cache, file system, secrets, log groups, buckets, keys) must say what
happens to it, and the ones that hold what cannot be rebuilt must keep it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bbbctl.iam_check import load_template
from bbbctl.stack import PRECIOUS
from bbbdeploy.paths import CFN_DIR

STATEFUL_TYPES = frozenset(
    {
        "AWS::RDS::DBCluster",
        "AWS::RDS::DBInstance",
        "AWS::ElastiCache::ReplicationGroup",
        "AWS::EFS::FileSystem",
        "AWS::SecretsManager::Secret",
        "AWS::Logs::LogGroup",
        "AWS::S3::Bucket",
        "AWS::KMS::Key",
    }
)
TEMPLATES = sorted(CFN_DIR.glob("*.yaml"))


def _resources(path: Path) -> Mapping[str, Mapping[str, Any]]:
    resources: Mapping[str, Mapping[str, Any]] = load_template(path).get("Resources", {})
    return resources


def _all_resources() -> dict[str, Mapping[str, Any]]:
    return {
        f"{path.name}:{name}": resource
        for path in TEMPLATES
        for name, resource in _resources(path).items()
    }


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_stateful_resource_says_what_deletion_and_replacement_do(path: Path) -> None:
    for name, resource in _resources(path).items():
        if resource["Type"] not in STATEFUL_TYPES:
            continue
        assert "DeletionPolicy" in resource, f"{path.name}: {name}"
        assert "UpdateReplacePolicy" in resource, f"{path.name}: {name}"


def test_what_cannot_be_rebuilt_is_kept() -> None:
    resources = _all_resources()
    kept = {
        "data.yaml:Database": "Snapshot",
        "data.yaml:Cache": "Snapshot",
        "storage.yaml:FileSystem": "Retain",
        # The application users live on in the database's snapshots.
        "data.yaml:ScaleliteDatabaseUser": "Retain",
        "data.yaml:GreenlightDatabaseUser": "Retain",
    }
    for name, policy in kept.items():
        assert resources[name]["DeletionPolicy"] == policy, name
        assert resources[name]["UpdateReplacePolicy"] == policy, name


def test_bbbctl_warns_before_it_replaces_or_removes_what_the_templates_keep() -> None:
    kept = {
        resource["Type"]
        for resource in _all_resources().values()
        if {resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy")}
        & {"Retain", "Snapshot"}
    }
    assert kept, "the templates keep nothing?"
    assert kept <= PRECIOUS.keys(), f"no warning for {sorted(kept - PRECIOUS.keys())}"


def test_valkey_has_auth_from_secrets_manager_and_keeps_snapshots() -> None:
    cache = _all_resources()["data.yaml:Cache"]["Properties"]
    assert cache["Engine"] == "valkey"
    # AUTH needs TLS in transit; the token never passes through a parameter.
    assert cache["TransitEncryptionEnabled"] is True
    token = cache["AuthToken"]["Fn::Sub"]
    assert token.startswith("{{resolve:secretsmanager:${CacheAuthToken}")
    assert int(cache["SnapshotRetentionLimit"]) >= 1
    secret = _all_resources()["data.yaml:CacheAuthToken"]["Properties"]["GenerateSecretString"]
    # Valkey accepts 16-128 characters; alphanumeric ones stand in a URL unescaped.
    assert 16 <= secret["PasswordLength"] <= 128
    assert secret["ExcludePunctuation"] is True


def test_applications_have_their_own_database_users() -> None:
    resources = _all_resources()
    master = resources["data.yaml:Database"]["Properties"]["MasterUsername"]
    users = set()
    for app in ("Scalelite", "Greenlight"):
        generated = resources[f"data.yaml:{app}DatabaseUser"]["Properties"]["GenerateSecretString"]
        template = json.loads(generated["SecretStringTemplate"])
        assert template["username"] != master, app
        users.add(template["username"])
        attachment = resources[f"data.yaml:{app}DatabaseUserTarget"]["Properties"]
        assert attachment["TargetType"] == "AWS::RDS::DBCluster"
    assert len(users) == 2
