"""Metric names: the ones PromQL expressions use, and the ones that exist.

Only names matter here, so the expression is not parsed: strings, label matchers,
range selectors and grouping clauses are cut out, and what is left that looks like an
identifier and is not a function, keyword or aggregation is a metric name.
"""

from __future__ import annotations

import re
from pathlib import Path

# bbbscaler's metrics (issue 6's contract with the scaler).
BBBSCALER_METRICS = frozenset({
    "bbbscaler_loop_duration_seconds",
    "bbbscaler_last_success_timestamp_seconds",
    "bbbscaler_decisions_total",
    "bbbscaler_observe_errors_total",
    "bbbscaler_desired_capacity",
    "bbbscaler_actual_capacity",
    "bbbscaler_draining_nodes",
    "bbbscaler_drifted_nodes",
    "bbbscaler_fleet_lowest_cpu_ratio",
    "bbbscaler_fleet_demand_nodes",
    "bbbscaler_forecast_nodes",
    "bbbscaler_forecast_demand_nodes",
    "bbbscaler_forecast_correction_ratio",
    "bbbscaler_forecast_status",
    "bbbscaler_forecast_history_reads_total",
    "bbbscaler_warm_pool_instances",
    "bbbscaler_launch_lag_seconds",
    "bbbscaler_schedule_late_seconds",
    "bbbscaler_schedule_short_nodes",
    "bbbscaler_certificate_expiry_timestamp_seconds",
    "bbbscaler_certificate_rate_limited_until_timestamp_seconds",
})  # fmt: skip

# node_exporter on the BBB hosts (the host image installs it): only these are used.
NODE_EXPORTER_METRICS = frozenset({
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
})  # fmt: skip

# Series Prometheus makes itself.
PROMETHEUS_METRICS = frozenset({"up"})

# Samples of histograms and bbb-exporter's gauge histograms carry these suffixes.
_SUFFIXES = ("_bucket", "_sum", "_count", "_gsum", "_gcount")

# Keywords, aggregations and literals: identifiers that are not metric names.
_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "sum", "min", "max", "avg", "count", "stddev",
    "stdvar", "topk", "bottomk", "quantile", "count_values", "group", "inf", "nan",
})  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (histogram suffixes kept)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping labels
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _WORDS:
            continue  # a function call or a keyword
        if re.fullmatch(r"\d+[smhdwy]", word) or word[0].isdigit():
            continue
        names.add(word)
    return names


def base_name(name: str) -> str:
    """A histogram sample's metric name (bbb_api_latency_bucket → bbb_api_latency)."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def documented_metrics(doc: Path) -> set[str]:
    """The names in the first column of docs/metrics.md's tables, with the shorthand
    `a_b` / `_c` (a_b and a_c) expanded."""
    names: set[str] = set()
    for line in doc.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        prefix = ""
        for token in re.findall(r"`([^`]+)`", cell):
            if token.startswith("_") and prefix:
                names.add(prefix + token)
            else:
                names.add(token)
                prefix = token.rsplit("_", 1)[0]
    # The same tables list HTTP paths (/metrics, POST /drain): not metrics.
    return {n for n in names if re.fullmatch(r"[a-z_:][a-z0-9_:]*", n)}
