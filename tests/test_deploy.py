"""The charts, alert rules and dashboards against what the programs really do.

scripts/check-k8s proves the manifests are valid Kubernetes; these tests prove they
say the right things: names the programs export, config keys bbbscaler accepts, pods
locked down, services that reach their pods.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bbbcore.config import keys, load_settings
from bbbdeploy import charts, dashboards, promql
from bbbdeploy.paths import DASHBOARDS_DIR, HELM_DIR, METRICS_DOC, ROOT, RULES_DIR
from bbbscaler.certificate import CertificateMetrics
from bbbscaler.exposition import ScalerMetrics
from bbbscaler.model import Action
from bbbscaler.settings import ScalerSettings

CHARTS = [c.name for c in charts.charts()]
RENDERS = [(c.name, vs.name) for c in charts.charts() for vs in charts.value_sets(c)]
# The monitoring chart has no workloads: its one Service fronts the Loki chart's pods.
WORKLOAD_RENDERS = [r for r in RENDERS if r[0] != "monitoring"]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

# Scalelite's nginx image starts as root to write its config and bind :80 (see the
# template's comment): the one pod allowed to run as root with a writable root fs.
ROOT_ALLOWED = {("scalelite", "nginx")}


@functools.cache
def _render(chart: str, value_set: str) -> tuple[dict[str, Any], ...]:
    path = HELM_DIR / chart
    (values,) = [vs.values for vs in charts.value_sets(path) if vs.name == value_set]
    return tuple(charts.render(path, values))


def _pod_specs(objects: tuple[dict[str, Any], ...]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in WORKLOAD_KINDS
    ]


def _allowed_metrics() -> set[str]:
    return (
        promql.documented_metrics(METRICS_DOC)
        | promql.BBBSCALER_METRICS
        | promql.NODE_EXPORTER_METRICS
        | promql.PROMETHEUS_METRICS
    )


def _rule_exprs() -> list[tuple[str, str]]:
    exprs = []
    for path in RULES_DIR.glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                exprs.append((rule.get("alert") or rule["record"], rule["expr"]))
    return exprs


def _dashboard_exprs() -> list[tuple[str, str]]:
    exprs = []
    for path in DASHBOARDS_DIR.glob("*.json"):
        model = json.loads(path.read_text())
        for panel in model["panels"]:
            for target in panel["targets"]:
                exprs.append((f"{path.name}: {panel['title']}", target["expr"]))
        for variable in model["templating"]["list"]:
            if variable["type"] == "query":
                # label_values(<series>, <label>): only the series is a metric.
                series = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", variable["definition"])
                exprs.append((f"{path.name}: ${variable['name']}", series))
    return exprs


def test_documented_metrics_are_read_from_the_doc() -> None:
    names = promql.documented_metrics(METRICS_DOC)
    # Spot checks of both tables and of the `a_b` / `_c` shorthand.
    assert {"bbb_api_up", "bbbnode_drain_phase", "bbb_recordings_unprocessed"} <= names
    assert not any(n.startswith("/") for n in names)


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, instance_id) (rate(bbb_api_latency_bucket{job="x",'
        ' asg=~"$asg"}[5m]))) > 2 unless on () count(up{job="bbbnode"} == 0) or vector(0)'
    )
    assert promql.metric_names(expr) == {"bbb_api_latency_bucket", "up"}


def test_every_metric_in_rules_and_dashboards_exists() -> None:
    allowed = _allowed_metrics()
    unknown = [
        (where, name)
        for where, expr in _rule_exprs() + _dashboard_exprs()
        for name in promql.metric_names(expr)
        if promql.base_name(name) not in allowed and name not in allowed
    ]
    assert not unknown, f"metrics neither in docs/metrics.md nor known exporters: {unknown}"


def test_rules_and_dashboards_cover_the_issue() -> None:
    alerts = {name for name, _ in _rule_exprs()}
    # host down, api down, drain stuck, scaler not acting, recordings piling up
    for alert in ("BBBHostDown", "BBBApiDown", "BBBDrainPastWindow", "BBBScalerNotActing",
                  "BBBRecordingsPilingUp", "BBBFleetCertificateNotRenewed",
                  "BBBHostCertificateExpiring", "BBBCertificateRateLimited"):  # fmt: skip
        assert alert in alerts
    used = {promql.base_name(n) for _, e in _rule_exprs() + _dashboard_exprs()
            for n in promql.metric_names(e)}  # fmt: skip
    assert used >= promql.BBBSCALER_METRICS, promql.BBBSCALER_METRICS - used


def test_scaler_metrics_exist_in_bbbscaler() -> None:
    # A configured schedule window gives the per-window gauges their series.
    metrics = ScalerMetrics("default", dry_run=False, windows=("exam",))
    # The certificate job registers its series on the same registry (certificate.secret set).
    CertificateMetrics(metrics.registry)
    exposition = metrics.render().decode()
    exported = {
        promql.base_name(line.split("{")[0].split()[0])
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }
    missing = sorted(promql.BBBSCALER_METRICS - exported)
    assert not missing, f"the rules and dashboards use metrics bbbscaler lacks: {missing}"
    # BBBScalerNotActing counts this label value.
    assert "scale_out" in {a.value for a in Action}


def test_committed_dashboards_are_the_generated_ones() -> None:
    committed = {p.name: p.read_text() for p in DASHBOARDS_DIR.glob("*.json")}
    assert committed == dashboards.rendered(), "run: python -m bbbdeploy dashboards"


@pytest.mark.parametrize(("chart", "value_set"), RENDERS)
def test_pods_are_locked_down(chart: str, value_set: str) -> None:
    for name, spec in _pod_specs(_render(chart, value_set)):
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits), where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            if (chart, container["name"]) in ROOT_ALLOWED:
                continue
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            assert spec["securityContext"]["runAsUser"] > 0, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert not security.get("capabilities", {}).get("add"), where


@pytest.mark.parametrize(("chart", "value_set"), RENDERS)
def test_serving_containers_have_probes(chart: str, value_set: str) -> None:
    for name, spec in _pod_specs(_render(chart, value_set)):
        for container in spec["containers"]:
            if container.get("ports"):
                assert "livenessProbe" in container, f"{name}/{container['name']}"
                assert "readinessProbe" in container, f"{name}/{container['name']}"


@pytest.mark.parametrize(("chart", "value_set"), WORKLOAD_RENDERS)
def test_services_and_monitors_reach_their_pods(chart: str, value_set: str) -> None:
    objects = _render(chart, value_set)
    pods = [o["spec"]["template"] for o in objects if o["kind"] in WORKLOAD_KINDS]
    services = [o for o in objects if o["kind"] == "Service"]
    for service in services:
        selector = service["spec"]["selector"].items()
        matching = [p for p in pods if selector <= p["metadata"]["labels"].items()]
        assert matching, f"Service {service['metadata']['name']} selects no pod"
        port_names = {
            port["name"] for p in matching for c in p["spec"]["containers"]
            for port in c.get("ports", [])
        }  # fmt: skip
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, service["metadata"]["name"]
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        selected = [s for s in services if wanted <= s["metadata"]["labels"].items()]
        assert selected, monitor["metadata"]["name"]
        names = {p["name"] for s in selected for p in s["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names


def _scaler_env(value_set: str) -> dict[str, str]:
    (deployment,) = [o for o in _render("bbbscaler", value_set) if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # A Secret's value is not in the manifest: any non-empty secret stands in for it.
    return {e["name"]: e.get("value", "from-a-secret") for e in container["env"]}


@pytest.mark.parametrize("value_set", [vs.name for vs in charts.value_sets(HELM_DIR / "bbbscaler")])
def test_bbbscaler_chart_config_is_what_bbbscaler_accepts(
    value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _scaler_env(value_set)
    known = {variable for _, variable, _, _ in keys(ScalerSettings)}
    assert set(env) <= known, set(env) - known
    for name in os.environ:
        if name.startswith("BBBSCALER_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if value_set == "defaults":
        # The defaults leave the fleet-specific keys to the operator.
        monkeypatch.setenv("BBBSCALER_AWS__ASG_NAME", "asg")
        monkeypatch.setenv("BBBSCALER_SCALELITE__URL", "https://scalelite.example.org")
        monkeypatch.setenv("BBBSCALER_SCALELITE__DOMAIN", "bbb.example.org")
    settings = load_settings(ScalerSettings)
    assert settings.http.listen.endswith(":9689")
    assert settings.scalelite.secret is not None


def test_bbbscaler_is_one_replica_recreated_whatever_the_values() -> None:
    objects = charts.render(HELM_DIR / "bbbscaler", {"replicas": 3, "replicaCount": 3})
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (account,) = [o for o in _render("bbbscaler", "example-values.yaml")
                  if o["kind"] == "ServiceAccount"]  # fmt: skip
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )


def test_bbbscaler_secret_never_as_plain_value() -> None:
    with pytest.raises(Exception, match="scaleliteSecret"):
        charts.render(HELM_DIR / "bbbscaler", {"config": {"scalelite": {"secret": "x"}}})


@pytest.mark.parametrize("chart", ["scalelite", "greenlight"])
def test_database_and_redis_come_from_secrets(chart: str) -> None:
    for name, spec in _pod_specs(_render(chart, "example-values.yaml")):
        for container in spec["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            if "DATABASE_URL" not in env:
                continue
            for variable in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY_BASE"):
                assert "secretKeyRef" in env[variable]["valueFrom"], f"{name}: {variable}"


def test_scalelite_components_and_recordings_volume() -> None:
    objects = _render("scalelite", "example-values.yaml")
    images = {c["image"].split("@")[0].rsplit("-", 1)[-1].rsplit(":", 1)[-1]
              for _, s in _pod_specs(objects) for c in s["containers"]}  # fmt: skip
    assert {"api", "poller", "importer", "nginx"} <= images
    (pv,) = [o for o in objects if o["kind"] == "PersistentVolume"]
    assert pv["spec"]["csi"]["driver"] == "efs.csi.aws.com"
    assert pv["spec"]["csi"]["volumeHandle"] == "fs-0123456789abcdef0::fsap-0123456789abcdef0"
    (importer,) = [o for o in objects if o["metadata"]["name"].endswith("recording-importer")]
    assert importer["spec"]["replicas"] == 1
    assert importer["spec"]["strategy"] == {"type": "Recreate"}
    # nginx proxies to this fixed name (Scalelite's nginx template).
    assert any(o["kind"] == "Service" and o["metadata"]["name"] == "scalelite-api" for o in objects)


def test_scrape_config_discovers_the_fleet() -> None:
    values = yaml.safe_load((HELM_DIR / "monitoring/ci/example-values.yaml").read_text())
    (secret,) = [o for o in _render("monitoring", "example-values.yaml") if o["kind"] == "Secret"]
    (job,) = yaml.safe_load(secret["stringData"]["scrape-configs.yaml"])
    assert job["job_name"] == "bbbnode"
    (sd,) = job["ec2_sd_configs"]
    assert sd["port"] == 9688
    assert sd["region"] == values["fleet"]["region"]
    assert {"name": "tag:aws:autoscaling:groupName", "values": [values["fleet"]["asgName"]]} in sd[
        "filters"
    ]
    # bbbscaler's metrics.instance_label default and the dashboards key on instance_id.
    assert any(r.get("target_label") == "instance_id" for r in job["relabel_configs"])


def test_loki_is_reachable_only_from_the_vpc() -> None:
    values = yaml.safe_load((HELM_DIR / "monitoring/ci/example-values.yaml").read_text())
    (service,) = [o for o in _render("monitoring", "example-values.yaml")
                  if o["kind"] == "Service"]  # fmt: skip
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert service["spec"]["loadBalancerSourceRanges"] == [values["lokiVpcEndpoint"]["vpcCidr"]]


def test_dockerfile_runs_bbbscaler_as_the_charts_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["bbbscaler"]' in text
    assert 'CMD ["run"]' in text
    assert "USER 10001:10001" in text
    assert not re.search(r"^HEALTHCHECK", text, re.M)
    (deployment,) = [o for o in _render("bbbscaler", "defaults") if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert Path(ROOT / ".dockerignore").exists()
