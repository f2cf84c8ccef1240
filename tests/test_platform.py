"""The platform install path: one source of truth for versions, the install commands the
README shows, the VPC-only Loki endpoint against what the pinned Loki chart deploys, and
the credentials path (External Secrets, own database users, Reloader)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bbbctl import platform
from bbbctl.iam_check import load_template
from bbbdeploy import charts
from bbbdeploy.paths import CFN_DIR, HELM_DIR, ROOT

VERSIONS = yaml.safe_load((ROOT / "versions.yaml").read_text())
LOKI_FACTS = ROOT / "tests/fixtures/loki-gateway.yaml"
PLATFORM = HELM_DIR / "platform"


def _values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PLATFORM / f"{name}.yaml").read_text())
    return loaded


def _entry(release: str) -> dict[str, str]:
    (entry,) = [e for e in VERSIONS["platform"] if e["release"] == release]
    return {k: str(v) for k, v in entry.items()}


# --- one source of truth ------------------------------------------------------------


def _chart_app_version(chart: str) -> str:
    return str(yaml.safe_load((HELM_DIR / chart / "Chart.yaml").read_text())["appVersion"])


def test_every_copy_of_a_version_is_the_one_in_versions_yaml() -> None:
    root = load_template(CFN_DIR / "root.yaml")["Parameters"]
    assert root["KubernetesVersion"]["Default"] == VERSIONS["kubernetes"]
    assert root["DatabaseEngineVersion"]["Default"] == VERSIONS["aurora_postgresql"]
    params = yaml.safe_load((CFN_DIR / "parameters.example.json").read_text())["Parameters"]
    assert params["KubernetesVersion"] == VERSIONS["kubernetes"]
    assert params["DatabaseEngineVersion"] == VERSIONS["aurora_postgresql"]

    assert _chart_app_version("scalelite") == VERSIONS["scalelite"]
    assert _chart_app_version("greenlight") == VERSIONS["greenlight"]
    for chart, key in (("scalelite", "scalelite"), ("greenlight", "greenlight")):
        example = yaml.safe_load((HELM_DIR / chart / "ci/example-values.yaml").read_text())
        assert example["image"]["tag"] == VERSIONS[key], chart

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG PYTHON_IMAGE={VERSIONS['python_image']}\n" in dockerfile

    pkrvars = (ROOT / "packer/example.pkrvars.hcl").read_text()
    assert f'scalelite_version  = "{VERSIONS["scalelite"]}"' in pkrvars
    assert f'alloy_version      = "{VERSIONS["alloy"]}"' in pkrvars
    variables = (ROOT / "packer/variables.pkr.hcl").read_text()
    assert f'default     = "-v jammy-300-{VERSIONS["bbb"]}"' in variables


def test_versions_are_the_current_lines() -> None:
    # The floor (December 2026): EKS 1.35, Python 3.11 on trixie, BBB 3.0.
    assert VERSIONS["kubernetes"] == "1.35"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-trixie", VERSIONS["python_image"])
    assert VERSIONS["bbb"].startswith("3.0.")
    assert VERSIONS["scalelite"] == "v1.8.5"
    assert VERSIONS["greenlight"].startswith("v3.")


def test_the_kubernetes_api_is_never_open_to_everyone() -> None:
    root = load_template(CFN_DIR / "root.yaml")["Parameters"]
    assert root["EksPublicAccessCidrs"]["Default"] == ""
    eks = load_template(CFN_DIR / "eks.yaml")["Parameters"]["PublicAccessCidrs"]
    pattern = re.compile(eks["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch("203.0.113.0/24,198.51.100.7/32")
    assert not pattern.fullmatch("0.0.0.0/0")
    assert not pattern.fullmatch("203.0.113.0/24,0.0.0.0/0")


# --- the install commands -----------------------------------------------------------


def test_install_order_pins_and_values_files() -> None:
    releases = platform.load_releases(ROOT)
    names = [r.release for r in releases]
    # Controllers first (the CRDs and webhooks the rest use), the fleet's chart last.
    assert names.index("external-secrets") < names.index("kube-prometheus-stack")
    assert names.index("kube-prometheus-stack") < names.index(platform.MONITORING_RELEASE)
    assert names.index("loki") < names.index(platform.MONITORING_RELEASE)
    assert names[-1] == platform.MONITORING_RELEASE
    for release in releases:
        assert (PLATFORM / f"{release.release}.yaml").is_file(), release.release
    argvs = platform.commands(releases, platform.outputs_as_placeholders())
    for release, argv in zip(releases, argvs, strict=True):
        assert argv[:5] == ["helm", "upgrade", "--install", release.release, release.chart]
        if not release.local:
            entry = _entry(release.release)
            assert argv[argv.index("--version") + 1] == entry["version"]
            assert argv[argv.index("--repo") + 1] == entry["repo"]
        assert argv[argv.index("--namespace") + 1] == release.namespace
        assert "--wait" in argv


def test_a_missing_stack_output_names_it() -> None:
    outputs = platform.outputs_as_placeholders()
    del outputs["LokiBucketName"]
    with pytest.raises(platform.PlatformError, match="LokiBucketName"):
        platform.commands(platform.load_releases(ROOT), outputs)


def test_every_output_the_install_reads_exists_in_the_root_stack() -> None:
    root_outputs = set(load_template(CFN_DIR / "root.yaml")["Outputs"])
    assert set(platform.outputs_as_placeholders()) <= root_outputs


def test_readme_shows_the_commands_bbbctl_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- platform-install -->\n```sh\n(.*?)```\n<!-- /platform-install -->", readme, re.S
    )
    assert block, "README: the platform-install block"
    expected = platform.render(
        platform.commands(platform.load_releases(ROOT), platform.outputs_as_placeholders())
    )
    assert block.group(1) == expected, "run: bbbctl platform install --print"


def test_irsa_service_accounts_are_the_ones_the_roles_trust() -> None:
    trust = str(load_template(CFN_DIR / "iam-platform.yaml")["Resources"])
    lbc = _entry("aws-load-balancer-controller")["namespace"]
    monitoring = _entry("loki")["namespace"]
    accounts = {
        f"{lbc}:{_values('aws-load-balancer-controller')['serviceAccount']['name']}",
        f"external-secrets:{_values('external-secrets')['serviceAccount']['name']}",
        f"{monitoring}:{_values('kube-prometheus-stack')['prometheus']['serviceAccount']['name']}",
        f"{monitoring}:{_values('loki')['serviceAccount']['name']}",
    }
    assert _entry("external-secrets")["namespace"] == "external-secrets"
    for account in accounts:
        if account.startswith(monitoring + ":"):
            account = "${MonitoringNamespace}:" + account.split(":", 1)[1]
        assert f"system:serviceaccount:{account}" in trust, account


def test_prometheus_reads_the_monitoring_charts_scrape_configs() -> None:
    spec = _values("kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    objects = charts.render(
        HELM_DIR / "monitoring", _values(platform.MONITORING_RELEASE),
        release=platform.MONITORING_RELEASE, namespace=platform.MONITORING_NAMESPACE,
    )  # fmt: skip
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    ref = spec["additionalScrapeConfigsSecret"]
    assert secret["metadata"]["name"] == ref["name"]
    assert ref["key"] in secret["stringData"]


# --- the VPC-only Loki endpoint against the pinned Loki chart -------------------------


def loki_gateway_facts(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """What a Service in front of the Loki chart's gateway depends on."""
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("gateway")
    ]
    pod = deployment["spec"]["template"]
    config = next(
        o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {})
    )
    return {
        "namespace": deployment["metadata"]["namespace"],
        "gateway_pod_labels": pod["metadata"]["labels"],
        "gateway_port_names": sorted(
            p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])
        ),
        "auth_enabled": yaml.safe_load(config["data"]["config.yaml"])["auth_enabled"],
    }


def _loki_render_values() -> dict[str, Any]:
    values = _values("loki")
    # What bbbctl sets from the stack's outputs.
    values["loki"]["storage"]["bucketNames"] = {"chunks": "b", "ruler": "b", "admin": "b"}
    values["loki"]["storage"]["s3"]["region"] = "eu-central-1"
    return values


def test_recorded_loki_facts_are_of_the_pinned_chart() -> None:
    facts = yaml.safe_load(LOKI_FACTS.read_text())
    assert facts["chart_version"] == _entry("loki")["version"], (
        "the Loki pin moved: re-record tests/fixtures/loki-gateway.yaml "
        "(BBBFLEET_LOKI_CHART=<unpacked chart> pytest tests/test_platform.py)"
    )


@pytest.mark.skipif(
    not os.environ.get("BBBFLEET_LOKI_CHART"),
    reason="needs the pinned Loki chart unpacked (helm pull --untar); nothing downloads here",
)
def test_the_pinned_loki_chart_still_deploys_the_recorded_gateway() -> None:
    chart = Path(os.environ["BBBFLEET_LOKI_CHART"])
    assert (
        yaml.safe_load((chart / "Chart.yaml").read_text())["version"] == _entry("loki")["version"]
    )
    objects = charts.render(chart, _loki_render_values(), release="loki", namespace="monitoring")
    recorded = yaml.safe_load(LOKI_FACTS.read_text())
    assert loki_gateway_facts(objects) == {k: recorded[k] for k in loki_gateway_facts(objects)}


def test_vpc_endpoint_selects_the_loki_gateway_pods() -> None:
    facts = yaml.safe_load(LOKI_FACTS.read_text())
    loki = _entry("loki")
    objects = charts.render(
        HELM_DIR / "monitoring", _values(platform.MONITORING_RELEASE),
        release=platform.MONITORING_RELEASE, namespace=platform.MONITORING_NAMESPACE,
    )  # fmt: skip
    (service,) = [o for o in objects if o["kind"] == "Service"]
    # A Service selects pods of its own namespace only.
    assert service["metadata"]["namespace"] == loki["namespace"] == facts["namespace"]
    selector = service["spec"]["selector"].items()
    assert selector <= facts["gateway_pod_labels"].items()
    # Release-scoped: another Loki in the namespace is not selected.
    assert service["spec"]["selector"]["app.kubernetes.io/instance"] == loki["release"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in facts["gateway_port_names"]
    # Multi-tenant Loki: the hosts and Grafana must name the tenant.
    assert facts["auth_enabled"] is True
    assert _values("loki")["loki"]["auth_enabled"] is True


# --- credentials that survive rotation -----------------------------------------------


def _render(chart: str, value_set: str = "example-values.yaml") -> list[dict[str, Any]]:
    path = HELM_DIR / chart
    (values,) = [vs.values for vs in charts.value_sets(path) if vs.name == value_set]
    return charts.render(path, values)


@pytest.mark.parametrize("chart", ["scalelite", "greenlight"])
def test_apps_use_their_own_database_user_and_roll_on_change(chart: str) -> None:
    objects = _render(chart)
    values = yaml.safe_load((HELM_DIR / chart / "ci/example-values.yaml").read_text())
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ExternalSecret"}
    database = secrets[values["secrets"]["database"]["name"]]
    (source,) = database["spec"]["dataFrom"]
    # The application's own user, never RDS's rotated master secret.
    assert "secret:bbbfleet/database/" in source["extract"]["key"]
    assert "rds!" not in source["extract"]["key"]
    (url,) = database["spec"]["target"]["template"]["data"].values()
    assert "{{ .username }}:{{ .password }}@{{ .host }}" in url
    redis = secrets[values["secrets"]["redis"]["name"]]
    (redis_url,) = redis["spec"]["target"]["template"]["data"].values()
    assert redis_url.startswith("rediss://:{{ .token }}@")
    for secret in secrets.values():
        assert secret["spec"]["refreshInterval"]
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        env = [e for c in obj["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])]
        if any("secretKeyRef" in e.get("valueFrom", {}) for e in env):
            annotations = obj["metadata"].get("annotations", {})
            assert annotations.get("reloader.stakater.com/auto") == "true", obj["metadata"]["name"]


def test_database_users_job_reads_the_master_fresh_and_makes_each_user() -> None:
    objects = _render("database-users")
    values = yaml.safe_load((HELM_DIR / "database-users/ci/example-values.yaml").read_text())
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ExternalSecret"}
    master = secrets["bbbfleet-master"]
    assert master["spec"]["dataFrom"][0]["extract"]["key"] == values["secrets"]["master"]
    (job,) = [o for o in objects if o["kind"] == "Job"]
    # A new Job per revision, so every upgrade runs it again.
    assert job["metadata"]["name"].endswith("-1")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == sorted(values["secrets"]["applications"])
    (config,) = [o for o in objects if o["kind"] == "ConfigMap"]
    shipped = {p.name: p.read_text() for p in (HELM_DIR / "database-users/files").iterdir()}
    assert config["data"] == shipped


async def test_install_runs_in_order_and_stops_at_the_first_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A helm that records its arguments and fails for the Loki release.
    log = tmp_path / "calls"
    helm = tmp_path / "helm"
    # $3 is the release: helm upgrade --install RELEASE CHART ...
    helm.write_text(f'#!/bin/sh\necho "$3" >> {log}\n[ "$3" != loki ] || exit 3\n')
    helm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    releases = platform.load_releases(ROOT)
    argvs = platform.commands(releases, platform.outputs_as_placeholders())
    out = io.StringIO()
    code = await platform.run(argvs, ROOT, out)
    assert code == 3
    names = [r.release for r in releases]
    assert log.read_text().split() == names[: names.index("loki") + 1]
    assert "loki failed (helm exited 3)" in out.getvalue()


def test_prometheus_keeps_the_forecast_s_five_weeks_on_a_volume() -> None:
    # bbbscaler's forecast reads 4 weeks and the hour ahead of the oldest (35 days).
    spec = _values("kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    assert spec["retention"].endswith("d")
    assert int(spec["retention"][:-1]) >= 35
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"].endswith("Gi")
