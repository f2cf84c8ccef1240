"""The exposition keeps bbb-exporter's names, types and labels, and never lies about zeros."""

import math
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from bbbcore.meetings import parse_meetings
from bbbnode.exposition import NodeMetrics, SnapshotCollector
from bbbnode.recordings import RecordingCounts
from bbbnode.snapshot import Snapshot, UniqueCounter, summarize

FIXTURES = Path(__file__).parent / "fixtures" / "bbb"
NOW = 1_700_000_500.0

# name -> (type, label names) as greenstatic/bigbluebutton-exporter exposes them.
EXPORTER_CONTRACT = {
    "bbb_meetings": ("gauge", set()),
    "bbb_meetings_participants": ("gauge", set()),
    "bbb_meetings_participants_max": ("gauge", set()),
    "bbb_meetings_listeners": ("gauge", set()),
    "bbb_meetings_voice_participants": ("gauge", set()),
    "bbb_meetings_video_participants": ("gauge", set()),
    "bbb_meetings_participant_clients": ("gauge", {"type"}),
    "bbb_meetings_participants_origin": ("gauge", {"server", "name"}),
    "bbb_api_latency": ("histogram", {"endpoint", "parameters"}),
    "bbb_api_up": ("gauge", set()),
    # Gauge histograms: the 0.0.4 text format (and so bbb-exporter) says "histogram",
    # with _gcount/_gsum gauges beside the buckets.
    "bbb_room_participants": ("histogram", set()),
    "bbb_room_listeners": ("histogram", set()),
    "bbb_room_voice_participants": ("histogram", set()),
    "bbb_room_video_participants": ("histogram", set()),
    "bbb_unique_meetings": ("counter", set()),
    "bbb_unique_breakout_rooms": ("counter", set()),
    "bbb_version": ("gauge", {"version"}),
    "bbb_exporter": ("gauge", {"version"}),
}


def good_snapshot() -> Snapshot:
    meetings = parse_meetings((FIXTURES / "meetings.xml").read_bytes())
    return Snapshot(
        taken_at=NOW,
        api_up=True,
        meetings=meetings,
        totals=summarize(meetings),
        meetings_at=NOW - 4,
        cpu_ratio=0.25,
        bbb_version="3.0.4",
        unique_meetings=UniqueCounter().advance(["a", "b"]),
        unique_breakouts=UniqueCounter().advance(["c"]),
    )


def render(snap: Snapshot | None) -> str:
    metrics = NodeMetrics(lambda: snap, lambda: NOW)
    metrics.set_identity("i-0123456789abcdef0")
    metrics.api_latency.labels("getMeetings", "").observe(0.02)
    return metrics.render().decode()


def families(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    out = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = (fam.type, [(s.name, s.labels, s.value) for s in fam.samples])
    return out


def value(
    fams: dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]], metric: str, **labels: str
) -> float:
    for fam_type, samples in fams.values():
        del fam_type
        for sample_name, sample_labels, sample_value in samples:
            if sample_name == metric and all(sample_labels.get(k) == v for k, v in labels.items()):
                return sample_value
    raise KeyError(metric)


def test_contract_names_types_labels() -> None:
    fams = families(render(good_snapshot()))
    for name, (fam_type, labels) in EXPORTER_CONTRACT.items():
        assert name in fams, name
        assert fams[name][0] == fam_type, name
        for sample_name, sample_labels, _ in fams[name][1]:
            extra = {"le"} if fam_type == "histogram" else set()
            assert set(sample_labels) - extra == labels, (sample_name, sample_labels)


def test_values_follow_bbb_exporter_meaning() -> None:
    fams = families(render(good_snapshot()))
    assert value(fams, "bbb_meetings") == 3
    assert value(fams, "bbb_meetings_participants") == 3 + 0 + 1204
    assert value(fams, "bbb_meetings_participants_max") == 1204
    assert value(fams, "bbb_meetings_listeners") == 1 + 1190
    assert value(fams, "bbb_meetings_voice_participants") == 2 + 14
    assert value(fams, "bbb_meetings_video_participants") == 1 + 2
    assert value(fams, "bbbnode_meetings_moderators") == 2
    assert value(fams, "bbb_meetings_participant_clients", type="html5") == 3
    assert value(fams, "bbb_meetings_participant_clients", type="dial-in") == 1
    assert (
        value(fams, "bbb_meetings_participants_origin", server="gl.example.org", name="greenlight")
        == 3
    )
    assert value(fams, "bbb_meetings_participants_origin", server="", name="") == 1204
    assert value(fams, "bbb_room_participants_bucket", le="0") == 1
    assert value(fams, "bbb_room_participants_bucket", le="5") == 2
    assert value(fams, "bbb_room_participants_bucket", le="+Inf") == 3
    assert value(fams, "bbb_room_participants_gcount") == 3
    assert value(fams, "bbb_room_participants_gsum") == 1207
    assert value(fams, "bbb_unique_meetings_total") == 2
    assert value(fams, "bbb_unique_breakout_rooms_total") == 1
    assert value(fams, "bbb_api_up") == 1
    assert value(fams, "bbb_version", version="3.0.4") == 1
    assert value(fams, "bbbnode_cpu_utilization_ratio") == 0.25
    assert value(fams, "bbbnode_snapshot_age_seconds") == 4
    assert value(fams, "bbbnode_info", instance_id="i-0123456789abcdef0") == 1
    assert value(fams, "bbb_api_latency_count", endpoint="getMeetings", parameters="") == 1


def test_bbb_down_omits_meeting_gauges_instead_of_zeros() -> None:
    stale = Snapshot(taken_at=NOW, api_up=False, api_error="unreachable", meetings_at=NOW - 95)
    fams = families(render(stale))
    assert value(fams, "bbb_api_up") == 0
    assert value(fams, "bbbnode_snapshot_age_seconds") == 95
    for name in (
        "bbb_meetings",
        "bbb_meetings_participants",
        "bbb_room_participants",
        "bbbnode_meetings_moderators",
    ):
        assert name not in fams


def test_never_collected() -> None:
    fams = families(render(None))
    assert value(fams, "bbb_api_up") == 0
    assert math.isinf(value(fams, "bbbnode_snapshot_age_seconds"))
    assert "bbb_meetings" not in fams
    assert value(fams, "bbbnode_collect_errors_total", reason="bbb_unreachable") == 0


def test_secrets_never_rendered() -> None:
    text = render(good_snapshot())
    assert "ap-secret" not in text
    assert "mp-secret" not in text
    assert "Prof. Ada" not in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
@pytest.mark.parametrize("snap", [good_snapshot(), None])
def test_promtool_check_metrics_is_clean(snap: Snapshot | None) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=render(snap),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""


def test_snapshot_rendered_once_age_and_instruments_on_every_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[Snapshot | None] = []
    collect = SnapshotCollector.collect

    def counted(self: SnapshotCollector) -> Iterator[Metric]:
        renders.append(self._snap)
        return collect(self)

    monkeypatch.setattr(SnapshotCollector, "collect", counted)
    clock = [NOW]
    current: list[Snapshot | None] = [good_snapshot()]
    metrics = NodeMetrics(lambda: current[0], lambda: clock[0])
    first = families(metrics.render().decode())
    clock[0] += 6
    metrics.collect_errors.labels("cpu").inc()
    second = families(metrics.render().decode())
    assert len(renders) == 1
    assert value(first, "bbbnode_snapshot_age_seconds") == 4
    assert value(second, "bbbnode_snapshot_age_seconds") == 10
    assert value(second, "bbbnode_collect_errors_total", reason="cpu") == 1
    assert value(second, "bbb_meetings") == 3

    current[0] = Snapshot(taken_at=NOW, api_up=False, meetings_at=NOW - 95)
    third = families(metrics.render().decode())
    assert len(renders) == 2
    assert renders[1] is current[0]
    assert value(third, "bbb_api_up") == 0
    assert "bbb_meetings" not in third
    assert value(third, "bbbnode_snapshot_age_seconds") == 101


def test_users_who_left_do_not_make_moderators_outnumber_participants() -> None:
    """BBB 3.0's getMeetings: participantCount is getNumUsersOnline() (get-meetings.ftlx,
    bigbluebutton#15993), <attendees> is getUsers() and moderatorCount getNumModerators(),
    both still holding users who left until usersTimeout (Meeting.java before #21766).
    The fixture is two such meetings, 20 s after users left."""
    meetings = parse_meetings((FIXTURES / "meetings_users_left.xml").read_bytes())
    assert [m.moderator_count for m in meetings] == [1, 1]  # as BBB says
    snap = Snapshot(
        taken_at=NOW, api_up=True, meetings=meetings, totals=summarize(meetings), meetings_at=NOW
    )
    fams = families(render(snap))
    # Users online, as participantCount says: what the load and the dashboards are about.
    assert value(fams, "bbb_meetings_participants") == 2
    assert value(fams, "bbb_room_participants_bucket", le="0") == 1
    # moderatorCount clamped to the users online: 0 for the emptied class (BBB says 1),
    # and never above its meeting's participants.
    assert value(fams, "bbbnode_meetings_moderators") == 1 + 0
    # bbb-exporter's definition, kept: attendee entries by client, left ones included
    # (documented in docs/metrics.md); the sum may exceed participants for a minute.
    assert value(fams, "bbb_meetings_participant_clients", type="html5") == 5
    assert value(fams, "bbb_meetings_participant_clients", type="dial-in") == 1
    # A meeting nobody is in is still a meeting: the host is not idle.
    assert value(fams, "bbb_meetings") == 2
    assert snap.has_meeting is True


# Every series greenstatic/bigbluebutton-exporter's Grafana dashboards query
# (extras/dashboards/*.json at bbb24ab), beside one place each is queried.
_GREENSTATIC = "greenstatic/bigbluebutton-exporter extras/dashboards/"
DASHBOARD_SERIES: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {
    ("bbb_api_up", ()): "all_servers.json:115",
    ("bbb_exporter", ()): "all_servers.json:283 (and every dashboard's $job variable)",
    ("bbb_meetings_participants", ()): "all_servers.json:200",
    ("bbb_meetings_listeners", ()): "server_instance_node_exporter.json:361",
    ("bbb_meetings_voice_participants", ()): "all_servers.json:435",
    ("bbb_meetings_video_participants", ()): "all_servers.json:531",
    ("bbb_meetings_participant_clients", ()): "all_servers.json:862",
    ("bbb_meetings_participants_origin", ()): "all_servers.json:1029",
    ("bbb_room_participants_gcount", ()): "all_servers.json:633",
    ("bbb_room_participants_bucket", ()): "all_servers.json:2005",
    ("bbb_room_listeners_bucket", ()): "all_servers.json:2079",
    ("bbb_room_voice_participants_bucket", ()): "all_servers.json:2153",
    ("bbb_room_video_participants_bucket", ()): "all_servers.json:2227",
    ("bbb_recordings_processing", ()): "all_servers.json:1537",
    ("bbb_recordings_unprocessed", ()): "all_servers.json:1607",
    ("bbb_recordings_published", ()): "all_servers.json:1677",
    ("bbb_recordings_deleted", ()): "all_servers.json:1747",
    ("bbb_recordings_unpublished", ()): "all_servers.json:1817",
    ("bbb_unique_meetings_total", ()): "server_instance_node_exporter.json:1031",
    ("bbb_unique_breakout_rooms_total", ()): "server_instance_node_exporter.json:1086",
    ("bbb_api_latency_bucket", ()): "all_servers.json:2325 (p95 summed over endpoints)",
    ("bbb_api_latency_bucket", (("endpoint", "getMeetings"),)): "all_servers.json:2441",
}
# bbbnode counts recordings from disk and never calls getRecordings, so these lines of
# the dashboards' "API latency" panels stay empty, as docs/metrics.md and the README
# say (all_servers.json:2449-2474). bbb-exporter reading recordings from disk leaves
# processing, published and deleted empty too (bbb-exporter/collector.py:83-102, only
# unpublished is still asked of the API), and never exports state=processed at all.
NOT_SERVED = {
    ("bbb_api_latency_bucket", (("endpoint", "getRecordings"), ("parameters", f"state={s}")))
    for s in ("processing", "processed", "published", "unpublished", "deleted")
}


def test_greenstatic_dashboards_find_every_series_but_get_recordings_latency() -> None:
    snap = replace(good_snapshot(), recordings=RecordingCounts(published=2, pending=1))
    samples = [s for _, (_, ss) in families(render(snap)).items() for s in ss]

    def served(name: str, labels: tuple[tuple[str, str], ...]) -> bool:
        return any(n == name and set(labels) <= set(ls.items()) for n, ls, _ in samples)

    missing = {
        f"{name}{dict(labels)} ({_GREENSTATIC}{where})"
        for (name, labels), where in DASHBOARD_SERIES.items()
        if not served(name, labels)
    }
    assert not missing
    assert not any(served(name, labels) for name, labels in NOT_SERVED)
    metrics_doc = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    compatibility = metrics_doc.split("## bbbnode's own")[0]
    assert 'bbb_api_latency{endpoint="getRecordings", parameters="state=…"}' in compatibility
