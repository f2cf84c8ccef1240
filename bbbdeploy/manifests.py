"""Validating rendered manifests against the Kubernetes schemas, strictly.

kubernetes-validate ships the OpenAPI-derived JSON schemas of each Kubernetes release;
its strict variant rejects unknown fields, so a misspelt or misplaced key fails instead
of being dropped silently by the API server. Custom resources have no schema there: for
them the metadata is checked as ObjectMeta and the spec by the checks written for the
kinds this repository uses (ServiceMonitor, PrometheusRule).
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate

# EKS versions the charts must install on: the oldest in standard support when written
# and the newest the schemas know.
KUBE_VERSIONS = ("1.33.0", "1.37.0")

_SERVICE_MONITOR_SPEC = {
    "jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector",
    "namespaceSelector", "sampleLimit", "targetLimit", "attachMetadata",
}  # fmt: skip
_SERVICE_MONITOR_ENDPOINT = {
    "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
    "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig",
    "bearerTokenSecret", "authorization", "basicAuth", "followRedirects",
}  # fmt: skip


# external-secrets.io/v1 (External Secrets' CRDs): the fields the charts use.
_EXTERNAL_SECRETS_SPEC = {
    "SecretStore": {"provider", "refreshInterval", "retrySettings", "controller", "conditions"},
    "ExternalSecret": {
        "refreshInterval", "refreshPolicy", "secretStoreRef", "target", "data", "dataFrom",
    },
}  # fmt: skip
_EXTERNAL_SECRET_TARGET = {"name", "creationPolicy", "deletionPolicy", "template", "immutable"}
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


def _external_secrets_errors(kind: str, spec: dict[str, Any]) -> list[str]:
    problems = [f"spec.{k}: unknown field" for k in set(spec) - _EXTERNAL_SECRETS_SPEC[kind]]
    if kind == "SecretStore":
        aws = (spec.get("provider") or {}).get("aws") or {}
        if aws.get("service") not in ("SecretsManager", "ParameterStore") or not aws.get("region"):
            problems.append("spec.provider.aws: service and region are required")
        return problems
    if "refreshInterval" in spec and not _DURATION.match(str(spec["refreshInterval"])):
        problems.append(f"spec.refreshInterval: {spec['refreshInterval']!r} is not a duration")
    store = spec.get("secretStoreRef") or {}
    if not store.get("name") or store.get("kind") not in ("SecretStore", "ClusterSecretStore"):
        problems.append("spec.secretStoreRef: name and kind (SecretStore) are required")
    target = spec.get("target") or {}
    problems += [f"spec.target.{k}: unknown field" for k in set(target) - _EXTERNAL_SECRET_TARGET]
    if not target.get("name"):
        problems.append("spec.target.name: required")
    if not spec.get("data") and not spec.get("dataFrom"):
        problems.append("spec: data or dataFrom is required")
    return problems


def _schema_errors(obj: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        return [f"{path or '(root)'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [str(exc.message)]
    return []


def _custom_resource_errors(obj: dict[str, Any], version: str) -> list[str]:
    # Metadata of any object is an ObjectMeta: check it through a carrier kind.
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
    problems = _schema_errors(carrier, version)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [*problems, "spec: missing"]
    if obj["kind"] == "ServiceMonitor":
        problems += [f"spec.{k}: unknown field" for k in set(spec) - _SERVICE_MONITOR_SPEC]
        endpoints = spec.get("endpoints")
        if not isinstance(endpoints, list) or not endpoints:
            problems.append("spec.endpoints: at least one endpoint")
        else:
            for i, endpoint in enumerate(endpoints):
                unknown = set(endpoint) - _SERVICE_MONITOR_ENDPOINT
                problems += [f"spec.endpoints[{i}].{k}: unknown field" for k in unknown]
        selector = spec.get("selector", {})
        # A LabelSelector has the same schema everywhere: borrow a PDB's to check it.
        pdb = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "selector-check"},
            "spec": {"selector": selector, "maxUnavailable": 1},
        }
        problems += [f"spec.selector: {p}" for p in _schema_errors(pdb, version)]
    elif obj["kind"] == "PrometheusRule":
        groups = spec.get("groups")
        if set(spec) != {"groups"} or not isinstance(groups, list) or not groups:
            problems.append("spec: must hold exactly a non-empty groups list")
        # The rules themselves are promtool's to check (bbbdeploy.rules).
    elif obj["kind"] in _EXTERNAL_SECRETS_SPEC:
        problems += _external_secrets_errors(obj["kind"], spec)
    else:
        problems.append(f"{obj['kind']}: no checks written for this custom resource")
    return problems


def validate(obj: dict[str, Any], version: str) -> list[str]:
    """Problems of one manifest against Kubernetes `version`; empty when valid."""
    if "/" in obj.get("apiVersion", "") and obj["apiVersion"].split("/")[0] in (
        "monitoring.coreos.com",
        "external-secrets.io",
    ):
        return _custom_resource_errors(obj, version)
    return _schema_errors(obj, version)


def describe(obj: dict[str, Any]) -> str:
    """kind/name, for messages."""
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
