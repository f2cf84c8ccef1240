"""Checks for what bbbfleet deploys: Helm charts rendered and validated against the
Kubernetes schemas, Prometheus rules and Grafana dashboards held to the metric names the
programs really export. Development tooling: not installed with the product."""
