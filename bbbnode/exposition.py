"""The Prometheus view of bbbnode: bbb-exporter's metric names plus bbbnode_*.

Everything derived from BBB is rendered from the latest Snapshot; a scrape
never calls BBB. Names, types and labels of greenstatic/bigbluebutton-exporter
are kept exactly so its Grafana dashboards work unchanged.

A snapshot's families are rendered once, when the first scrape sees it, and the
text is kept until the next snapshot: a scrape renders only bbbnode's own
instruments and the snapshot's age.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bbbcore import __version__
from bbbnode.snapshot import GaugeHistogram, Snapshot

# bbb-exporter emits no *_created series; neither do we (and scrapes stay smaller).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

API_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
COLLECT_ERROR_REASONS = (
    "bbb_unreachable",
    "bbb_failed",
    "bbb_malformed",
    "recordings",
    "cpu",
    "bbb_version",
)


class NodeMetrics:
    """The registry bbbnode serves, with the instruments its tasks update."""

    def __init__(self, snapshot: Callable[[], Snapshot | None], clock: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.api_latency = Histogram(
            "bbb_api_latency",
            "BigBlueButton API call latency",
            ["endpoint", "parameters"],
            buckets=API_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.collect_duration = Histogram(
            "bbbnode_collect_duration_seconds",
            "Wall time of one collection cycle (BBB API, recordings scan, CPU).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.collect_errors = Counter(
            "bbbnode_collect_errors",
            "Collection failures by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in COLLECT_ERROR_REASONS:
            self.collect_errors.labels(reason)
        self.task_restarts = Counter(
            "bbbnode_task_restarts",
            "Supervised task crashes that were restarted, by task.",
            ["task"],
            registry=self.registry,
        )
        self.startup_errors = Counter(
            "bbbnode_startup_errors",
            "Start-up steps that failed (the daemon exits and systemd restarts it), by step.",
            ["step"],
            registry=self.registry,
        )
        self.scale_in_protected = Gauge(
            "bbbnode_scale_in_protected",
            "1 while the instance has ASG scale-in protection, as last set or read.",
            registry=self.registry,
        )
        self.drain_phase = Gauge(
            "bbbnode_drain_phase",
            "1 for the drain phase the host is in (serving, cordoning, ..., completed).",
            ["phase"],
            registry=self.registry,
        )
        self.launch_phase = Gauge(
            "bbbnode_launch_phase",
            "1 for the phase of the way in the host is in (warming, in_pool, joining, ..., "
            "serving): a warm pool host settles in in_pool until it enters service.",
            ["phase"],
            registry=self.registry,
        )
        self.drain_actions = Counter(
            "bbbnode_drain_actions",
            "Drain actions by kind and outcome (ok, failed, forced).",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.aws_errors = Counter(
            "bbbnode_aws_errors",
            "AWS calls that failed after botocore's own retries, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.instance_id = Gauge(
            "bbbnode_info",
            "bbbnode build and host identity (always 1).",
            ["instance_id", "version"],
            registry=self.registry,
        )
        self._snapshot = snapshot
        self._clock = clock
        self._rendered: tuple[Snapshot | None, bytes] | None = None
        self.lifecycle_deadline: float | None = None
        """When AWS ends the termination's wait whatever the heartbeats (epoch seconds)."""
        self.registry.register(_DeadlineCollector(self, clock))

    def set_identity(self, instance_id: str) -> None:
        """Publish ``bbbnode_info`` for this host."""
        self.instance_id.clear()
        self.instance_id.labels(instance_id, __version__).set(1)

    def set_drain_phase(self, phase: str) -> None:
        """Mark ``phase`` as the current one (the others drop to 0)."""
        _one_hot(self.drain_phase, phase)

    def set_launch_phase(self, phase: str) -> None:
        """Mark ``phase`` as the way in's current one (the others drop to 0)."""
        _one_hot(self.launch_phase, phase)

    def render(self) -> bytes:
        """The text exposition format (0.0.4): instruments, the snapshot's families, its age."""
        snap = self._snapshot()
        rendered = self._rendered
        if rendered is None or rendered[0] is not snap:
            rendered = (snap, prometheus_client.generate_latest(SnapshotCollector(snap)))
            self._rendered = rendered
        age = prometheus_client.generate_latest(AgeCollector(snap, self._clock()))
        return prometheus_client.generate_latest(self.registry) + rendered[1] + age


def _one_hot(gauge: Gauge, phase: str) -> None:
    for sample in list(gauge._metrics):
        if sample != (phase,):
            gauge.labels(*sample).set(0)
    gauge.labels(phase).set(1)


class _DeadlineCollector(Collector):
    """``bbbnode_lifecycle_timeout_remaining_seconds``, at scrape time; absent unless known."""

    def __init__(self, metrics: NodeMetrics, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        deadline = self._metrics.lifecycle_deadline
        if deadline is None:
            return
        yield _gauge(
            "bbbnode_lifecycle_timeout_remaining_seconds",
            "Seconds until the termination hook's global timeout (the lesser of 100 x "
            "HeartbeatTimeout and 48 h) ends the drain with the hook's DefaultResult, "
            "heartbeats or not; only while terminating.",
            max(0.0, deadline - self._clock()),
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _le(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf"
    return str(int(bound)) if bound == int(bound) else str(bound)


def _gauge_histogram(name: str, doc: str, hist: GaugeHistogram) -> GaugeHistogramMetricFamily:
    # bbb-exporter writes integral bounds as le="5", not "5.0"; dashboards match on it.
    buckets = [(_le(b), float(c)) for b, c in hist.buckets]
    return GaugeHistogramMetricFamily(name, doc, buckets=buckets, gsum_value=hist.total)


class AgeCollector(Collector):
    """``bbbnode_snapshot_age_seconds``: the one snapshot family that changes between polls."""

    def __init__(self, snap: Snapshot | None, now: float) -> None:
        self._snap = snap
        self._now = now

    def collect(self) -> Iterator[Metric]:
        age = None if self._snap is None else self._snap.age(self._now)
        yield _gauge(
            "bbbnode_snapshot_age_seconds",
            "Seconds since BBB's meetings were last read successfully (+Inf: never).",
            math.inf if age is None else age,
        )


class SnapshotCollector(Collector):
    """The families of one snapshot (all but its age); free of I/O."""

    def __init__(self, snap: Snapshot | None) -> None:
        self._snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self._snap
        exporter = GaugeMetricFamily(
            "bbb_exporter", "BigBlueButton Exporter version", labels=["version"]
        )
        exporter.add_metric([__version__], 1)
        yield exporter
        if snap is None:
            yield _gauge("bbb_api_up", "1 if BigBlueButton API is responding 0 otherwise", 0)
            return
        yield _gauge(
            "bbb_api_up", "1 if BigBlueButton API is responding 0 otherwise", int(snap.api_up)
        )
        if snap.bbb_version:
            version = GaugeMetricFamily("bbb_version", "BigBlueButton version", labels=["version"])
            version.add_metric([snap.bbb_version], 1)
            yield version
        if snap.cpu_ratio is not None:
            yield _gauge(
                "bbbnode_cpu_utilization_ratio",
                "Host CPU busy ratio (0..1) averaged over the configured window, from /proc/stat.",
                snap.cpu_ratio,
            )
        yield from self._meetings(snap)
        yield from self._recordings(snap)
        yield from self._unique(snap)

    def _meetings(self, snap: Snapshot) -> Iterator[Metric]:
        totals = snap.totals
        if totals is None:
            return
        yield _gauge("bbb_meetings", "Number of BigBlueButton meetings", totals.meetings)
        yield _gauge(
            "bbb_meetings_participants",
            "Total number of participants in all BigBlueButton meetings",
            totals.participants,
        )
        yield _gauge(
            "bbb_meetings_participants_max",
            "Largest number of participants in one BigBlueButton meeting",
            totals.participants_max,
        )
        yield _gauge(
            "bbb_meetings_listeners",
            "Total number of listeners in all BigBlueButton meetings",
            totals.listeners,
        )
        yield _gauge(
            "bbb_meetings_voice_participants",
            "Total number of voice participants in all BigBlueButton meetings",
            totals.voice_participants,
        )
        yield _gauge(
            "bbb_meetings_video_participants",
            "Total number of video participants in all BigBlueButton meetings",
            totals.video_participants,
        )
        yield _gauge(
            "bbbnode_meetings_moderators",
            "Total number of moderators in all BigBlueButton meetings",
            totals.moderators,
        )
        clients = GaugeMetricFamily(
            "bbb_meetings_participant_clients",
            "Total number of participants in all BigBlueButton meetings by client",
            labels=["type"],
        )
        for client, count in sorted(totals.by_client.items()):
            clients.add_metric([client], count)
        yield clients
        origins = GaugeMetricFamily(
            "bbb_meetings_participants_origin",
            "Total number of participants in all BigBlueButton meetings by origin servername",
            labels=["server", "name"],
        )
        for (server, name), count in sorted(totals.by_origin.items()):
            origins.add_metric([server, name], count)
        yield origins
        yield _gauge_histogram(
            "bbb_room_participants",
            "BigBlueButton room participants histogram gauge",
            totals.room_participants,
        )
        yield _gauge_histogram(
            "bbb_room_listeners",
            "BigBlueButton room listeners histogram gauge",
            totals.room_listeners,
        )
        yield _gauge_histogram(
            "bbb_room_voice_participants",
            "BigBlueButton room voice participants histogram gauge",
            totals.room_voice_participants,
        )
        yield _gauge_histogram(
            "bbb_room_video_participants",
            "BigBlueButton room video participants histogram gauge",
            totals.room_video_participants,
        )

    def _recordings(self, snap: Snapshot) -> Iterator[Metric]:
        rec = snap.recordings
        if rec is None:
            return
        for name, doc, value in (
            ("processing", "Total number of BigBlueButton recordings processing", rec.processing),
            ("published", "Total number of BigBlueButton recordings published", rec.published),
            (
                "unpublished",
                "Total number of BigBlueButton recordings unpublished",
                rec.unpublished,
            ),
            ("deleted", "Total number of BigBlueButton recordings deleted", rec.deleted),
            (
                "unprocessed",
                "Total number of BigBlueButton recordings enqueued to be processed",
                rec.unprocessed,
            ),
        ):
            yield _gauge(f"bbb_recordings_{name}", doc, value)
        yield _gauge(
            "bbbnode_recordings_pending",
            "Recordings not yet published or failed; a draining host waits for 0.",
            rec.pending,
        )

    def _unique(self, snap: Snapshot) -> Iterator[Metric]:
        meetings = CounterMetricFamily(
            "bbb_unique_meetings", "Unique non-breakout meetings counter"
        )
        meetings.add_metric([], snap.unique_meetings.total)
        yield meetings
        breakouts = CounterMetricFamily(
            "bbb_unique_breakout_rooms", "Unique breakout rooms counter"
        )
        breakouts.add_metric([], snap.unique_breakouts.total)
        yield breakouts


def wall_clock() -> float:
    """The default clock for snapshot ages."""
    return time.time()
