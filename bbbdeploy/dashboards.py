"""The Grafana dashboards, written as data.

Six dashboards of the same few panel shapes: generated here, so their layout, data
source variable and host filter stay consistent and every query is one line to read.
``python -m bbbdeploy dashboards`` writes them to helm/monitoring/dashboards/ (the chart
loads the JSON from there); a test keeps the committed files equal to this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbbdeploy.paths import DASHBOARDS_DIR

# Every query that reads a node filters on the fleet's ASG (label `asg`, set by the
# EC2 service-discovery relabelling), so one Grafana can show several fleets.
NODE = 'job="bbbnode", asg=~"$asg"'
SCALER = 'job="bbbscaler"'

_GRID_WIDTH = 24


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"  # timeseries | stat | bargauge
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    max_value: float | None = None
    stack: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    tags: tuple[str, ...] = field(default=("bbbfleet",))


def t(expr: str, legend: str = "") -> Target:
    return Target(expr, legend)


def stat(
    title: str, expr: str, width: int = 4, unit: str = "short", max_value: float | None = None
) -> Panel:
    """A small tile with one number: the top row of most dashboards."""
    return Panel(title, (t(expr),), "stat", unit=unit, width=width, height=4, max_value=max_value)


def sums(title: str, *series: tuple[str, str]) -> Panel:
    """One line per node metric, summed over the fleet: (metric, legend) pairs."""
    return Panel(title, tuple(t(f"sum({metric}{{{NODE}}})", legend) for metric, legend in series))


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.max_value is not None:
        defaults["min"] = 0
        defaults["max"] = panel.max_value
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": target.expr,
                "legendFormat": target.legend or "__auto",
            }
            for i, target in enumerate(panel.targets)
        ],
    }
    if panel.kind == "timeseries":
        body["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        body["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "auto",
        }
    return body


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard (panels flow left to right, top down)."""
    panels = []
    x = y = row_height = 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > _GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "asg",
                    "label": "Fleet (ASG)",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": 'label_values(bbbnode_info{job="bbbnode"}, asg)',
                        "refId": "asg",
                    },
                    "definition": 'label_values(bbbnode_info{job="bbbnode"}, asg)',
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


FLEET_HEALTH = Dashboard(
    uid="bbbfleet-health",
    title="bbbfleet / Fleet health",
    description="Are the hosts up, is BBB answering, is bbbnode healthy, who is draining.",
    panels=(
        Panel("Hosts scraped", (t(f"count(up{{{NODE}}} == 1)"),), "stat", width=4, height=4),
        Panel(
            "Hosts down", (t(f"count(up{{{NODE}}} == 0) or vector(0)"),), "stat", width=4, height=4
        ),
        stat("BBB API down", f"count(bbb_api_up{{{NODE}}} == 0) or vector(0)", width=4),
        stat(
            "Stale BBB data (> 2 min)",
            f"count(bbbnode_snapshot_age_seconds{{{NODE}}} > 120) or vector(0)",
            width=4,
        ),
        stat(
            "Draining hosts",
            f'count(bbbnode_drain_phase{{{NODE}, phase!="serving"}} == 1) or vector(0)',
            width=4,
        ),
        stat("Scale-in protected", f"sum(bbbnode_scale_in_protected{{{NODE}}})", width=4),
        Panel(
            "Drain phase per host",
            (
                t(
                    f"max by (instance_id, phase) (bbbnode_drain_phase{{{NODE}}} == 1)",
                    "{{instance_id}} {{phase}}",
                ),
            ),
            description="1 while a host is in that phase; serving hosts are not draining.",
        ),
        Panel(
            "Seconds since BBB was last read",
            (t(f"bbbnode_snapshot_age_seconds{{{NODE}}}", "{{instance_id}}"),),
            unit="s",
        ),
        Panel(
            "Collection errors by reason",
            (
                t(
                    f"sum by (reason) (rate(bbbnode_collect_errors_total{{{NODE}}}[5m]))",
                    "{{reason}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Task restarts and AWS errors",
            (
                t(
                    f"sum by (task) (increase(bbbnode_task_restarts_total{{{NODE}}}[15m]))",
                    "restart {{task}}",
                ),
                t(
                    f"sum by (operation) (increase(bbbnode_aws_errors_total{{{NODE}}}[15m]))",
                    "AWS {{operation}}",
                ),
            ),
            description="Per 15 minutes.",
        ),
        Panel(
            "Start-up failures by step",
            (
                t(
                    f"sum by (step) (increase(bbbnode_startup_errors_total{{{NODE}}}[1h]))",
                    "{{step}}",
                ),
            ),
        ),
        Panel(
            "Versions",
            (
                t(f"count by (version) (bbbnode_info{{{NODE}}})", "bbbnode {{version}}"),
                t(f"count by (version) (bbb_version{{{NODE}}})", "BBB {{version}}"),
            ),
            "bargauge",
        ),
    ),
)

LIVE_CAPACITY = Dashboard(
    uid="bbbfleet-capacity",
    title="bbbfleet / Live capacity",
    description="How much room the fleet has for the next meetings, and what the scaler asks.",
    panels=(
        stat(
            "Serving hosts", f'count(bbbnode_drain_phase{{{NODE}, phase="serving"}} == 1)', width=6
        ),
        stat(
            "Lowest host CPU (where the next meeting goes)",
            f"min(bbbnode_cpu_utilization_ratio{{{NODE}}})",
            unit="percentunit",
            width=6,
            max_value=1,
        ),
        stat(
            "Mean host CPU",
            f"avg(bbbnode_cpu_utilization_ratio{{{NODE}}})",
            unit="percentunit",
            width=6,
            max_value=1,
        ),
        Panel(
            "Participants per serving host",
            (
                t(
                    f"sum(bbb_meetings_participants{{{NODE}}}) / "
                    f'count(bbbnode_drain_phase{{{NODE}, phase="serving"}} == 1)'
                ),
            ),
            "stat",
            width=6,
            height=4,
        ),
        Panel(
            "Desired and actual capacity",
            (
                t(f"bbbscaler_desired_capacity{{{SCALER}}}", "desired"),
                t(f"bbbscaler_actual_capacity{{{SCALER}}}", "actual"),
                t(f"bbbscaler_draining_nodes{{{SCALER}}}", "draining"),
            ),
            description="What bbbscaler set on the ASG, what the ASG has, what is draining.",
        ),
        Panel(
            "Fleet CPU: lowest, mean, highest",
            (
                t(f"min(bbbnode_cpu_utilization_ratio{{{NODE}}})", "lowest"),
                t(f"avg(bbbnode_cpu_utilization_ratio{{{NODE}}})", "mean"),
                t(f"max(bbbnode_cpu_utilization_ratio{{{NODE}}})", "highest"),
                t(f"bbbscaler_fleet_lowest_cpu_ratio{{{SCALER}}}", "lowest (scaler's view)"),
            ),
            unit="percentunit",
            max_value=1,
            description="The seed policy scales out above 80 % lowest CPU; BBB audio "
            "degrades there.",
        ),
        Panel(
            "Host CPU",
            (t(f"bbbnode_cpu_utilization_ratio{{{NODE}}}", "{{instance_id}}"),),
            unit="percentunit",
            max_value=1,
            width=24,
        ),
    ),
)

MEETINGS = Dashboard(
    uid="bbbfleet-meetings",
    title="bbbfleet / Meetings and participants",
    description="Meetings and people on the whole fleet and per host.",
    panels=(
        Panel("Meetings", (t(f"sum(bbb_meetings{{{NODE}}})"),), "stat", width=4, height=4),
        stat("Participants", f"sum(bbb_meetings_participants{{{NODE}}})", width=4),
        stat("On the microphone", f"sum(bbb_meetings_voice_participants{{{NODE}}})", width=4),
        stat("Cameras", f"sum(bbb_meetings_video_participants{{{NODE}}})", width=4),
        stat("Largest meeting", f"max(bbb_meetings_participants_max{{{NODE}}})", width=4),
        stat(
            "Meetings started (1 h)",
            f"sum(increase(bbb_unique_meetings_total{{{NODE}}}[1h]))",
            width=4,
        ),
        sums(
            "Participants by kind",
            ("bbb_meetings_participants", "participants"),
            ("bbb_meetings_listeners", "listen only"),
            ("bbb_meetings_voice_participants", "voice"),
            ("bbb_meetings_video_participants", "video"),
            ("bbbnode_meetings_moderators", "moderators"),
        ),
        Panel(
            "Participants by client",
            (t(f"sum by (type) (bbb_meetings_participant_clients{{{NODE}}})", "{{type}}"),),
            stack=True,
        ),
        Panel("Meetings per host", (t(f"bbb_meetings{{{NODE}}}", "{{instance_id}}"),), stack=True),
        Panel(
            "Participants per host",
            (t(f"bbb_meetings_participants{{{NODE}}}", "{{instance_id}}"),),
            stack=True,
        ),
        Panel(
            "Meetings by size (participants)",
            (t(f"sum by (le) (bbb_room_participants_bucket{{{NODE}}})", "≤ {{le}}"),),
            "bargauge",
            width=12,
        ),
        Panel(
            "Meetings and breakout rooms started",
            (
                t(f"sum(increase(bbb_unique_meetings_total{{{NODE}}}[10m]))", "meetings"),
                t(
                    f"sum(increase(bbb_unique_breakout_rooms_total{{{NODE}}}[10m]))",
                    "breakout rooms",
                ),
            ),
            description="Per 10 minutes.",
        ),
        Panel(
            "Participants by origin",
            (
                t(
                    f"sum by (server, name) (bbb_meetings_participants_origin{{{NODE}}})",
                    "{{server}} {{name}}",
                ),
            ),
            width=24,
        ),
    ),
)

RECORDINGS = Dashboard(
    uid="bbbfleet-recordings",
    title="bbbfleet / Recording processing",
    description="Recordings from the end of a meeting to publication and the Scalelite spool.",
    panels=(
        stat("Pending (fleet)", f"sum(bbbnode_recordings_pending{{{NODE}}})", width=6),
        stat("Processing", f"sum(bbb_recordings_processing{{{NODE}}})", width=6),
        stat("Unprocessed", f"sum(bbb_recordings_unprocessed{{{NODE}}})", width=6),
        stat("Published on hosts", f"sum(bbb_recordings_published{{{NODE}}})", width=6),
        sums(
            "Recordings by state",
            ("bbb_recordings_unprocessed", "unprocessed"),
            ("bbb_recordings_processing", "processing"),
            ("bbb_recordings_published", "published"),
            ("bbb_recordings_unpublished", "unpublished"),
            ("bbb_recordings_deleted", "deleted"),
        ),
        Panel(
            "Pending per host",
            (t(f"bbbnode_recordings_pending{{{NODE}}}", "{{instance_id}}"),),
            description="A draining host waits for 0 before it leaves the fleet.",
        ),
        Panel(
            "Recordings scan errors",
            (
                t(
                    f"sum by (instance_id) (rate(bbbnode_collect_errors_total{{{NODE}, "
                    f'reason="recordings"}}[5m]))',
                    "{{instance_id}}",
                ),
            ),
            unit="ops",
            width=24,
        ),
    ),
)

NODE_SATURATION = Dashboard(
    uid="bbbfleet-saturation",
    title="bbbfleet / Node saturation",
    description="CPU, memory, network and disk of each BBB host, and how fast BBB answers.",
    panels=(
        Panel(
            "CPU",
            (t(f"bbbnode_cpu_utilization_ratio{{{NODE}}}", "{{instance_id}}"),),
            unit="percentunit",
            max_value=1,
        ),
        Panel(
            "Memory in use",
            (
                t(
                    '1 - node_memory_MemAvailable_bytes{job="node", asg=~"$asg"} / '
                    'node_memory_MemTotal_bytes{job="node", asg=~"$asg"}',
                    "{{instance_id}}",
                ),
            ),
            unit="percentunit",
            max_value=1,
        ),
        Panel(
            "Network received",
            (
                t(
                    'sum by (instance_id) (rate(node_network_receive_bytes_total{job="node", '
                    'asg=~"$asg", device!="lo"}[5m]))',
                    "{{instance_id}}",
                ),
            ),
            unit="Bps",
        ),
        Panel(
            "Network sent",
            (
                t(
                    'sum by (instance_id) (rate(node_network_transmit_bytes_total{job="node", '
                    'asg=~"$asg", device!="lo"}[5m]))',
                    "{{instance_id}}",
                ),
            ),
            unit="Bps",
        ),
        Panel(
            "Root disk free",
            (
                t(
                    'node_filesystem_avail_bytes{job="node", asg=~"$asg", mountpoint="/"} / '
                    'node_filesystem_size_bytes{job="node", asg=~"$asg", mountpoint="/"}',
                    "{{instance_id}}",
                ),
            ),
            unit="percentunit",
            max_value=1,
        ),
        Panel(
            "Participants and cameras per host",
            (
                t(f"bbb_meetings_participants{{{NODE}}}", "{{instance_id}} participants"),
                t(f"bbb_meetings_video_participants{{{NODE}}}", "{{instance_id}} cameras"),
            ),
        ),
        Panel(
            "getMeetings latency (p95)",
            (
                t(
                    f"histogram_quantile(0.95, sum by (le, instance_id) "
                    f"(rate(bbb_api_latency_bucket{{{NODE}}}[5m])))",
                    "{{instance_id}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "bbbnode collection time (p95)",
            (
                t(
                    f"histogram_quantile(0.95, sum by (le, instance_id) "
                    f"(rate(bbbnode_collect_duration_seconds_bucket{{{NODE}}}[5m])))",
                    "{{instance_id}}",
                ),
            ),
            unit="s",
        ),
    ),
)

SCALER_DECISIONS = Dashboard(
    uid="bbbfleet-scaler",
    title="bbbfleet / Scaler decisions",
    description="What bbbscaler decided, how its loop runs, what it could not observe.",
    panels=(
        stat(
            "Seconds since the last successful round",
            f"time() - bbbscaler_last_success_timestamp_seconds{{{SCALER}}}",
            unit="s",
            width=6,
        ),
        stat("Desired capacity", f"bbbscaler_desired_capacity{{{SCALER}}}", width=6),
        stat("Actual capacity", f"bbbscaler_actual_capacity{{{SCALER}}}", width=6),
        Panel("Draining", (t(f"bbbscaler_draining_nodes{{{SCALER}}}"),), "stat", width=6, height=4),
        Panel(
            "Decisions by action",
            (
                t(
                    f"sum by (action) (increase(bbbscaler_decisions_total{{{SCALER}}}[10m]))",
                    "{{action}}",
                ),
            ),
            stack=True,
            description="Per 10 minutes.",
        ),
        Panel(
            "Capacity",
            (
                t(f"bbbscaler_desired_capacity{{{SCALER}}}", "desired"),
                t(f"bbbscaler_actual_capacity{{{SCALER}}}", "actual"),
                t(f"bbbscaler_draining_nodes{{{SCALER}}}", "draining"),
                t(f"bbbscaler_drifted_nodes{{{SCALER}}}", "drifted (rollout)"),
            ),
            description="Drifted: hosts of an older launch template version a rollout "
            "replaces through the drain.",
        ),
        Panel(
            "Fleet's lowest CPU (decision input)",
            (t(f"bbbscaler_fleet_lowest_cpu_ratio{{{SCALER}}}", "lowest CPU"),),
            unit="percentunit",
            max_value=1,
        ),
        Panel(
            "Reconcile round duration",
            (
                t(
                    f"histogram_quantile(0.5, sum by (le) "
                    f"(rate(bbbscaler_loop_duration_seconds_bucket{{{SCALER}}}[5m])))",
                    "p50",
                ),
                t(
                    f"histogram_quantile(0.95, sum by (le) "
                    f"(rate(bbbscaler_loop_duration_seconds_bucket{{{SCALER}}}[5m])))",
                    "p95",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Observe errors by source",
            (
                t(
                    f"sum by (source) (increase(bbbscaler_observe_errors_total{{{SCALER}}}[10m]))",
                    "{{source}}",
                ),
            ),
            description="Missing data blocks scale-in: persistent errors mean a fleet that "
            "does not shrink.",
            width=24,
        ),
        Panel(
            "Forecast against actual: nodes",
            (
                t(f"bbbscaler_forecast_nodes{{{SCALER}}}", "forecast need"),
                t(f"bbbscaler_actual_capacity{{{SCALER}}}", "actual"),
                t(f"bbbscaler_desired_capacity{{{SCALER}}}", "desired"),
            ),
            description="forecast preset: the nodes the forecast demand needs by now + "
            "boot_time + forecast.margin, against the nodes the fleet has. Gaps: the round "
            "fell back to the reactive rules (the status panel says why).",
        ),
        Panel(
            "Forecast against actual: demand (nodes of CPU)",
            (
                t(f"bbbscaler_forecast_demand_nodes{{{SCALER}}}", "forecast"),
                t(f"bbbscaler_fleet_demand_nodes{{{SCALER}}}", "actual"),
                t(f"bbbscaler_forecast_correction_ratio{{{SCALER}}}", "correction"),
            ),
            description="The forecast's demand for now against the serving nodes' measured "
            "demand; the correction is today's demand over the earlier weeks'.",
        ),
        Panel(
            "Forecast status",
            (
                t(f"max by (status) (bbbscaler_forecast_status{{{SCALER}}}) > 0", "{{status}}"),
                t(
                    "increase(bbbscaler_forecast_history_reads_total"
                    f'{{{SCALER}, result="failed"}}[30m])',
                    "failed history reads (30 min)",
                ),
            ),
            description="ok: the forecast is in use; short (too few earlier weeks), stale, "
            "unreadable, off: the round used the reactive rules alone.",
            width=24,
        ),
        Panel(
            "Warm pool and launch lag",
            (
                t(f"bbbscaler_warm_pool_instances{{{SCALER}}}", "pool {{state}}"),
                t(f"bbbscaler_launch_lag_seconds{{{SCALER}}} / 60", "next launch serves in (min)"),
            ),
            description="Hosts stopped and ready in the warm pool, warming up, leaving; how "
            "soon the next launch serves (warm_start_time while one is ready, boot_time "
            "after). Ready at 0 during a ramp: launches are cold.",
        ),
        Panel(
            "Planned windows the fleet will miss",
            (
                t(f"bbbscaler_schedule_late_seconds{{{SCALER}}} > 0", "{{window}}: late (s)"),
                t(f"bbbscaler_schedule_short_nodes{{{SCALER}}} > 0", "{{window}}: short nodes"),
            ),
            description="A schedule window in effect whose nodes serve after it opens (it "
            "became known less than boot_time ahead), or that asks for more than MaxSize.",
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (
    FLEET_HEALTH,
    LIVE_CAPACITY,
    MEETINGS,
    RECORDINGS,
    NODE_SATURATION,
    SCALER_DECISIONS,
)


def rendered() -> dict[str, str]:
    """File name → JSON text of every dashboard, as committed."""
    return {
        f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, ensure_ascii=False) + "\n"
        for d in DASHBOARDS
    }


def write(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """Writes the dashboards and removes JSON files no dashboard owns any more."""
    directory.mkdir(parents=True, exist_ok=True)
    files = rendered()
    for stale in directory.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
