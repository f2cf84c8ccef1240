"""Where the deploy artefacts live in the repository."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELM_DIR = ROOT / "helm"
MONITORING_DIR = HELM_DIR / "monitoring"
DASHBOARDS_DIR = MONITORING_DIR / "dashboards"
RULES_DIR = MONITORING_DIR / "rules"
METRICS_DOC = ROOT / "docs" / "metrics.md"
DOCKERFILE = ROOT / "Dockerfile"
CFN_DIR = ROOT / "cfn"
REVIEWED_FINDINGS = ROOT / "checkov" / "reviewed.yaml"
