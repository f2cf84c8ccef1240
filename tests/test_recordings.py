"""bbbnode.recordings: counts from recording trees built the way BBB's rap workers leave them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bbbnode import recordings
from bbbnode.recordings import RecordingCounts, RecordingTree, ScanError
from bbbsim.recording_tree import Stage, add_recording, make_dir, recording_id, touch

_ORDER: tuple[Stage, ...] = (
    "recorded",
    "archiving",
    "archived",
    "sanity_checked",
    "processing",
    "processed",
    "published",
)


def test_missing_root_counts_zero(tmp_path: Path) -> None:
    assert recordings.scan(tmp_path / "nope") == RecordingCounts()


def test_empty_root_counts_zero(tmp_path: Path) -> None:
    for sub in ("recording/status/sanity", "published/presentation", "recording/raw"):
        (tmp_path / sub).mkdir(parents=True)
    assert recordings.scan(tmp_path) == RecordingCounts()


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("recorded", RecordingCounts(unprocessed=1, pending=1)),
        ("archiving", RecordingCounts(unprocessed=1, pending=1)),
        ("archived", RecordingCounts(unprocessed=1, pending=1)),
        ("sanity_checked", RecordingCounts(unprocessed=1, pending=1)),
        ("processing", RecordingCounts(processing=1, pending=1)),
        ("processed", RecordingCounts(processing=1, pending=1)),
        ("published", RecordingCounts(published=1)),
        ("unpublished", RecordingCounts(unpublished=1)),
        ("deleted", RecordingCounts(deleted=1)),
        ("norecord", RecordingCounts()),
        ("archive_failed", RecordingCounts(failed=1)),
        ("sanity_failed", RecordingCounts(failed=1)),
        ("process_failed", RecordingCounts(failed=1)),
        ("publish_failed", RecordingCounts(failed=1)),
    ],
)
def test_each_stage(tmp_path: Path, stage: Stage, expected: RecordingCounts) -> None:
    add_recording(tmp_path, recording_id(1), stage)
    assert recordings.scan(tmp_path) == expected


def test_each_stage_with_formats_given(tmp_path: Path) -> None:
    for n, stage in enumerate(_ORDER):
        add_recording(tmp_path, recording_id(n), stage)
    counts = recordings.scan(tmp_path, formats=["presentation"])
    assert counts == RecordingCounts(unprocessed=4, processing=2, pending=6, published=1)


def test_several_formats_count_once(tmp_path: Path) -> None:
    both = ("presentation", "video")
    add_recording(tmp_path, recording_id(1), "published", both)
    add_recording(tmp_path, recording_id(2), "processing", both)
    add_recording(tmp_path, recording_id(3), "processed", both)
    add_recording(tmp_path, recording_id(4), "publish_failed", both)
    assert recordings.scan(tmp_path) == RecordingCounts(
        published=1, processing=2, pending=2, failed=1
    )


def test_sanity_done_kept_after_publish_is_not_unprocessed(tmp_path: Path) -> None:
    # BBB 2.3+ never deletes sanity/<id>.done; bbb-exporter's unprocessed would say 3.
    for n in range(3):
        add_recording(tmp_path, recording_id(n), "published")
    assert len(os.listdir(tmp_path / "recording/status/sanity")) == 3
    assert recordings.scan(tmp_path) == RecordingCounts(published=3)


def test_pre_23_pipeline_without_kept_markers(tmp_path: Path) -> None:
    # Before 2.3 the process worker removed sanity .done and the publish worker
    # processed .done; a started format is then the only sign sanity passed.
    add_recording(tmp_path, recording_id(1), "published")
    add_recording(tmp_path, recording_id(2), "processed")
    for record_id in (recording_id(1), recording_id(2)):
        (tmp_path / "recording/status/sanity" / f"{record_id}.done").unlink()
    (tmp_path / "recording/status/processed" / f"{recording_id(1)}-presentation.done").unlink()
    counts = recordings.scan(tmp_path, formats=["presentation"])
    assert counts == RecordingCounts(published=1, processing=1, pending=1)


def test_format_waiting_in_queue_needs_formats(tmp_path: Path) -> None:
    # Presentation is published while the video job still waits in Resque: no
    # file shows the video yet, only the list of enabled formats can.
    add_recording(tmp_path, recording_id(1), "published", ["presentation"])
    assert recordings.scan(tmp_path).pending == 0
    counts = recordings.scan(tmp_path, formats=["presentation", "video"])
    assert counts == RecordingCounts(published=1, processing=1, pending=1)


def test_sanity_checked_with_formats_is_unprocessed(tmp_path: Path) -> None:
    add_recording(tmp_path, recording_id(1), "sanity_checked")
    counts = recordings.scan(tmp_path, formats=["presentation", "video"])
    assert counts == RecordingCounts(unprocessed=1, pending=1)


def test_failed_format_is_not_waited_for(tmp_path: Path) -> None:
    add_recording(tmp_path, recording_id(1), "published", ["presentation"])
    add_recording(tmp_path, recording_id(1), "process_failed", ["video"])
    counts = recordings.scan(tmp_path, formats=["presentation", "video"])
    assert counts == RecordingCounts(published=1, failed=1)


def test_one_format_failed_another_running(tmp_path: Path) -> None:
    add_recording(tmp_path, recording_id(1), "process_failed", ["video"])
    add_recording(tmp_path, recording_id(1), "processing", ["presentation"])
    assert recordings.scan(tmp_path) == RecordingCounts(processing=1, pending=1, failed=1)


def test_failed_process_dir_left_behind_is_not_processing(tmp_path: Path) -> None:
    # bbb-exporter counts recording/process/presentation, which keeps failed ones.
    add_recording(tmp_path, recording_id(1), "process_failed")
    assert (tmp_path / "recording/process/presentation" / recording_id(1)).is_dir()
    assert recordings.scan(tmp_path).processing == 0


def test_publish_copy_in_progress_is_still_pending(tmp_path: Path) -> None:
    # The publish script fills published/<format>/<id> before it writes its .done.
    add_recording(tmp_path, recording_id(1), "processed")
    touch(tmp_path / "published/presentation" / recording_id(1) / "metadata.xml")
    assert recordings.scan(tmp_path) == RecordingCounts(published=1, processing=1, pending=1)


def test_rebuild_after_archive_failure_is_pending(tmp_path: Path) -> None:
    add_recording(tmp_path, recording_id(1), "archive_failed")
    touch(tmp_path / "recording/status/archived" / f"{recording_id(1)}.done")
    assert recordings.scan(tmp_path) == RecordingCounts(unprocessed=1, pending=1)


def test_locations_are_exclusive(tmp_path: Path) -> None:
    # A move between locations stopped half way: the visible state wins.
    add_recording(tmp_path, recording_id(1), "published", ["presentation"])
    touch(tmp_path / "unpublished/video" / recording_id(1) / "metadata.xml")
    add_recording(tmp_path, recording_id(2), "unpublished", ["presentation"])
    touch(tmp_path / "deleted/video" / recording_id(2) / "metadata.xml")
    add_recording(tmp_path, recording_id(3), "deleted", ["presentation", "video"])
    assert recordings.scan(tmp_path) == RecordingCounts(published=1, unpublished=1, deleted=1)


def test_deleted_is_not_status_minus_published(tmp_path: Path) -> None:
    # bbb-exporter: len(status/published) - len(published/presentation) = 6 - 1 = 5.
    add_recording(tmp_path, recording_id(1), "published", ["presentation", "video"])
    add_recording(tmp_path, recording_id(2), "unpublished", ["presentation", "video"])
    add_recording(tmp_path, recording_id(3), "deleted", ["presentation", "video"])
    counts = recordings.scan(tmp_path)
    assert (counts.published, counts.unpublished, counts.deleted) == (1, 1, 1)


def test_playback_without_markers_is_finished(tmp_path: Path) -> None:
    # Status files removed by a cleanup cron, raw and playback kept.
    add_recording(tmp_path, recording_id(1), "published")
    for sub in ("archived", "sanity", "processed", "published"):
        for name in os.listdir(tmp_path / "recording/status" / sub):
            (tmp_path / "recording/status" / sub / name).unlink()
    assert recordings.scan(tmp_path, formats=["presentation"]) == RecordingCounts(published=1)


def test_segment_ids_and_hyphenated_format(tmp_path: Path) -> None:
    segment = f"{recording_id(1)}-1700000123456"
    add_recording(tmp_path, segment, "processed")
    add_recording(tmp_path, recording_id(2), "processed", ["presentation-hd"])
    add_recording(tmp_path, recording_id(3), "published", ["presentation-hd"])
    expected = RecordingCounts(processing=2, published=1, pending=2)
    assert recordings.scan(tmp_path) == expected
    assert recordings.scan(tmp_path, formats=["presentation-hd"]) == expected


def test_junk_names_are_ignored(tmp_path: Path) -> None:
    add_recording(tmp_path, recording_id(1), "published")
    for junk in (
        "recording/status/recorded/README.done",
        "recording/status/archived/.nfs000123.done",
        "recording/status/sanity/notes.txt",
        "recording/status/processed/garbage.fail",
        "published/presentation/index.html",
    ):
        touch(tmp_path / junk)
    for junk_dir in ("recording/raw/lost+found", "published/presentation/lost+found"):
        make_dir(tmp_path / junk_dir)
    touch(tmp_path / "published/stray-file")
    assert recordings.scan(tmp_path) == RecordingCounts(published=1)


def test_mixed_tree(tmp_path: Path) -> None:
    stages: list[Stage] = [
        "recorded",
        "archiving",
        "archived",
        "sanity_checked",
        "processing",
        "processed",
        "published",
        "published",
        "unpublished",
        "deleted",
        "norecord",
        "archive_failed",
        "sanity_failed",
        "process_failed",
        "publish_failed",
    ]
    for n, stage in enumerate(stages):
        add_recording(tmp_path, recording_id(n), stage, ["presentation", "video"])
    assert recordings.scan(tmp_path, formats=["presentation", "video"]) == RecordingCounts(
        processing=2,
        published=2,
        unpublished=1,
        deleted=1,
        unprocessed=4,
        pending=6,
        failed=4,
    )


def test_many_recordings(tmp_path: Path) -> None:
    for n in range(300):
        add_recording(tmp_path, recording_id(n), "published" if n % 3 else "processing")
    assert recordings.scan(tmp_path) == RecordingCounts(published=200, processing=100, pending=100)


def test_unreadable_directory_raises(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a mode 000 directory anyway")
    add_recording(tmp_path, recording_id(1), "published")
    sanity = tmp_path / "recording/status/sanity"
    sanity.chmod(0)
    try:
        with pytest.raises(ScanError, match=r"cannot read recordings directory.*sanity"):
            recordings.scan(tmp_path)
    finally:
        sanity.chmod(0o755)


def test_file_where_directory_belongs_raises(tmp_path: Path) -> None:
    touch(tmp_path / "recording/status/processed")
    with pytest.raises(ScanError, match="processed") as info:
        recordings.scan(tmp_path)
    assert str(info.value.filename).endswith("processed")
    assert isinstance(info.value, OSError)  # what the collector catches


def test_root_is_a_file_raises(tmp_path: Path) -> None:
    touch(tmp_path / "root")
    with pytest.raises(ScanError):
        recordings.scan(tmp_path / "root")


def test_count_is_pure() -> None:
    tree = RecordingTree(
        sanity=(f"{recording_id(1)}.done", f"{recording_id(2)}.done"),
        processed=(f"{recording_id(1)}-presentation.done",),
        published_status=(f"{recording_id(1)}-presentation.done",),
        published=(recording_id(1),),
    )
    assert recordings.count(tree) == RecordingCounts(published=1, unprocessed=1, pending=1)
    assert recordings.count(tree, formats=()) == RecordingCounts(published=1)


LATER = time.time_ns() + 3600 * 10**9
"""A clock an hour ahead: every directory made by the test has settled by then."""


def test_rescan_skips_a_settled_unchanged_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_recording(tmp_path, recording_id(1), "processing")
    first = recordings.rescan(tmp_path, None, clock_ns=lambda: LATER)
    assert first.counts == RecordingCounts(processing=1, pending=1)
    assert first.settled

    def no_listing(path: str) -> list[str]:
        raise AssertionError(f"listed {path}")

    with monkeypatch.context() as patched:
        patched.setattr(os, "listdir", no_listing)
        assert recordings.rescan(tmp_path, first, clock_ns=lambda: LATER) is first


@pytest.mark.parametrize(
    "change",
    [
        lambda root: add_recording(root, recording_id(1), "published"),  # names move on
        lambda root: add_recording(root, recording_id(2), "recorded"),  # a stage dir appears
        lambda root: touch(root / "published" / "video" / recording_id(3) / "metadata.xml"),
    ],
)
def test_rescan_sees_every_change(tmp_path: Path, change: Callable[[Path], None]) -> None:
    add_recording(tmp_path, recording_id(1), "processing")
    first = recordings.rescan(tmp_path, None, clock_ns=lambda: LATER)
    change(tmp_path)
    second = recordings.rescan(tmp_path, first, clock_ns=lambda: LATER)
    assert second is not first
    assert second.counts == recordings.scan(tmp_path)
    assert second.counts != first.counts


def test_rescan_lists_again_until_the_tree_has_settled(tmp_path: Path) -> None:
    add_recording(tmp_path, recording_id(1), "processing")
    # Stamped at once: a change in the same timestamp tick could still be missed.
    fresh = recordings.rescan(tmp_path, None)
    assert not fresh.settled
    again = recordings.rescan(tmp_path, fresh, clock_ns=lambda: LATER)
    assert again is not fresh
    assert again.settled
    assert again.counts == fresh.counts
