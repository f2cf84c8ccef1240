"""``bbbctl platform``: the controllers and the monitoring stack the charts run on.

The pins come from versions.yaml (``platform``), the values from helm/platform/
<release>.yaml, and what only the deployed stack knows (the cluster, the VPC, the IRSA
roles, Loki's bucket) from the root stack's outputs, given with ``--set``. Each
release is one ``helm upgrade --install ... --wait``, in order: a release that fails
stops the rest, and running it again resumes (helm upgrades what is there).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

VERSIONS_FILE = Path("versions.yaml")
VALUES_DIR = Path("helm/platform")
# The fleet's own monitoring configuration, installed last (it needs the CRDs
# kube-prometheus-stack brings and points at Loki's gateway).
MONITORING_CHART = Path("helm/monitoring")
MONITORING_RELEASE = "bbbfleet-monitoring"
MONITORING_NAMESPACE = "monitoring"
WAIT_TIMEOUT = "15m"


@dataclass(frozen=True, slots=True)
class Release:
    """One chart to install: where it comes from, its pin, where it goes."""

    release: str
    chart: str
    namespace: str
    repo: str = ""
    version: str = ""

    @property
    def local(self) -> bool:
        return not self.repo


class PlatformError(ValueError):
    """The stack or versions.yaml cannot give what an install needs."""


def load_releases(root: Path) -> list[Release]:
    """The releases in install order: versions.yaml's platform list, then the fleet's
    monitoring chart."""
    data = yaml.safe_load((root / VERSIONS_FILE).read_text())
    releases = []
    for entry in data.get("platform") or []:
        missing = {"release", "chart", "repo", "version", "namespace"} - set(entry)
        if missing:
            raise PlatformError(f"versions.yaml platform entry {entry}: missing {sorted(missing)}")
        releases.append(Release(**{k: str(v) for k, v in entry.items()}))
    releases.append(Release(MONITORING_RELEASE, MONITORING_CHART.as_posix(), MONITORING_NAMESPACE))
    return releases


# The service account annotation IRSA reads (dots escaped for --set).
_ROLE = "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn"

# What each release takes from the root stack's outputs: --set key -> output key.
_FROM_OUTPUTS: Mapping[str, Mapping[str, str]] = {
    "aws-load-balancer-controller": {
        "clusterName": "ClusterName",
        "region": "Region",
        "vpcId": "VpcId",
        _ROLE: "LoadBalancerControllerRoleArn",
    },
    "external-secrets": {
        _ROLE: "ExternalSecretsRoleArn",
    },
    "kube-prometheus-stack": {
        f"prometheus.{_ROLE}": "PrometheusRoleArn",
    },
    "loki": {
        "loki.storage.bucketNames.chunks": "LokiBucketName",
        "loki.storage.bucketNames.ruler": "LokiBucketName",
        "loki.storage.bucketNames.admin": "LokiBucketName",
        "loki.storage.s3.region": "Region",
        _ROLE: "LokiRoleArn",
    },
    MONITORING_RELEASE: {
        "fleet.region": "Region",
        "fleet.asgName": "AutoScalingGroupName",
        "lokiVpcEndpoint.vpcCidr": "VpcCidr",
    },
}


def settings_from_outputs(release: str, outputs: Mapping[str, str]) -> list[tuple[str, str]]:
    """The ``--set`` pairs of one release; a PlatformError names a missing output."""
    pairs = []
    for key, output in _FROM_OUTPUTS.get(release, {}).items():
        value = outputs.get(output, "")
        if not value:
            raise PlatformError(
                f"{release}: the stack has no output {output} (is EnvironmentType scalable "
                "and the stack complete?)"
            )
        pairs.append((key, value))
    return pairs


def helm_command(release: Release, sets: Sequence[tuple[str, str]]) -> list[str]:
    """``helm upgrade --install`` for one release: idempotent, waits until it is ready."""
    argv = ["helm", "upgrade", "--install", release.release, release.chart]
    if not release.local:
        argv += ["--repo", release.repo, "--version", release.version]
    argv += [
        "--namespace", release.namespace, "--create-namespace",
        "--values", (VALUES_DIR / f"{release.release}.yaml").as_posix(),
        "--wait", "--timeout", WAIT_TIMEOUT,
    ]  # fmt: skip
    for key, value in sets:
        argv += ["--set-string", f"{key}={value}"]
    return argv


def commands(releases: Sequence[Release], outputs: Mapping[str, str]) -> list[list[str]]:
    """Every release's command, in order."""
    return [helm_command(r, settings_from_outputs(r.release, outputs)) for r in releases]


def outputs_as_placeholders() -> dict[str, str]:
    """Every output the install reads, as $OutputName: the commands as the README shows
    them, with the stack's values left for the reader to fill in."""
    return {o: f"${o}" for keys in _FROM_OUTPUTS.values() for o in keys.values()}


def render(argvs: Sequence[Sequence[str]]) -> str:
    """The commands as shell lines."""
    return "".join(shlex.join(argv) + "\n" for argv in argvs)


async def run(argvs: Sequence[Sequence[str]], cwd: Path, out: Any) -> int:
    """Runs the commands one after another; the first failure's exit code stops the rest."""
    for argv in argvs:
        print(f"$ {shlex.join(argv)}", file=out, flush=True)
        process = await asyncio.create_subprocess_exec(*argv, cwd=cwd)
        code = await process.wait()
        if code != 0:
            print(f"bbbctl: {argv[3]} failed (helm exited {code}); fix it and run again", file=out)
            return code
    return 0
