"""Recording counts read from BBB's data directory, replacing bbb-exporter's getRecordings calls.

bbb-web answers ``getRecordings`` by parsing the ``metadata.xml`` of every
recording, so a scrape gets slower as recordings pile up. The record-and-playback
(rap) workers already leave a marker file for every step, so a walk over names
(no file is opened) says where each recording is.

What BBB writes (``<root>`` is ``/var/bigbluebutton``; ``<id>`` is the internal
meeting ID ``<sha1 hex>-<ms timestamp>``; a recording segment adds ``-<break ms>``
and counts as a recording of its own, as BBB treats it):

- ``recording/status/recorded/<id>.done``: bbb-web, when a meeting created with
  ``record=true`` ends. rap-starter enqueues the archive job and deletes the file
  at once. ``recording/raw/<id>/`` exists from then on (rap-starter creates it
  before enqueueing; older archive.rb when it starts) and usually stays.
- ``recording/status/archived/<id>.done|.norecord|.fail``: archive worker.
  ``.norecord``: nobody pressed record, no recording will be made.
- ``recording/status/sanity/<id>.done|.fail``: sanity worker. Since BBB 2.5 a
  captions step follows that writes no marker.
- ``recording/status/processed/<id>-<format>.done|.fail``: one process job per
  enabled format (the ``process:<format>`` steps of recording.yml).
- ``recording/process/<format>/<id>/``: from the start of that format's
  processing until its publish succeeds; it stays after a failure.
- ``recording/status/published/<id>-<format>.done|.fail``: publish worker; the
  ``post_publish`` scripts (Scalelite's transfer among them) run after it.
- ``published|unpublished|deleted/<format>/<id>/``: the playback; bbb-web moves
  it between the three on ``publishRecordings`` and ``deleteRecordings``.

Every worker deletes its own ``.done``/``.fail`` before it runs, so a marker on
disk is the outcome of the latest attempt. Before BBB 2.3 the process worker
deleted ``sanity/<id>.done`` and the publish worker ``processed/<id>-<f>.done``;
the Resque workers of 2.3 and later delete neither, so both directories only grow.

The counts, each a number of recording IDs (several formats count once), and
the ``bbb_recordings_*`` metric of bbb-exporter with the same name:

- ``published``: IDs with a directory in ``published/<any format>/``, which is
  what getRecordings ``state=published`` (the exporter's API mode) lists. The
  exporter's disk mode counts ``published/presentation`` only.
- ``unpublished``: IDs in ``unpublished/<format>/`` and not published. The
  exporter always asks getRecordings ``state=unpublished``: the same directories.
- ``deleted``: IDs in ``deleted/<format>/`` and neither published nor unpublished
  (getRecordings ``state=deleted``). The exporter's disk mode computes
  ``entries of status/published - entries of published/presentation``, right
  only with one format, no failure and nothing unpublished: status files exist
  per format and per failure (two formats add one "deleted" per recording), an
  unpublished recording counts as deleted, and ``deleted/`` is never read.
- ``unprocessed``: recordings waiting before processing: a ``recorded`` marker;
  a ``raw/<id>/`` with no other trace (being archived: the recorded marker is
  gone, the archived one not written yet); an archived ``.done`` with no sanity
  outcome and no playback; or sanity passed and no format started. The
  exporter's disk mode counts the entries of ``status/sanity``: "sanity checked,
  not processed yet" before 2.3, but since then every recording ever checked,
  failures included, so it never goes down.
- ``processing``: at least one format has started (a process directory or a
  processed/published marker) and one is not finished. The exporter counts
  ``recording/process/presentation`` (disk mode) or asks getRecordings
  ``state=processing``, which lists ``recording/process/*``: both keep failed
  recordings forever, since their process directory stays.
- ``pending = unprocessed + processing``: recordings of ended meetings whose
  pipeline is still running, so the host must not go yet (bbbnode's drain waits
  for 0). A format is finished when its published ``.done`` or a processed or
  published ``.fail`` exists. A recording is finished when every format it has
  started is, or, given ``formats`` (the enabled ones), every one of those; it
  is never pending after ``.norecord``, an archive failure or a sanity failure.
  Formats queued but not started leave no file, so without ``formats``
  presentation published while video waits in the queue looks finished. Not
  visible at all: the ``post_publish`` scripts that run after the last marker,
  so the drain should hold a grace period after 0. The exporter has no such count.
- ``failed``: IDs with at least one failure marker (archive, sanity, or a format's
  process or publish). It may overlap ``published`` (one format failed, another
  published) and ``pending`` (one failed, another still running). Not in the
  exporter.

Names that are not recording IDs (``lost+found``, editor or NFS leftovers) are
ignored, as BBB's own scripts ignore them. A playback without any marker (status
files cleaned by hand or cron) is an old, finished recording.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_ID = r"[0-9a-f]+-[0-9]+(?:-[0-9]+)?"
_ID_RE = re.compile(_ID)
_ID_FORMAT_RE = re.compile(rf"({_ID})-(.+)")


class ScanError(OSError):
    """A directory of the recordings tree exists but cannot be read (``filename`` says which)."""

    def __init__(self, path: str, cause: OSError) -> None:
        reason = cause.strerror or type(cause).__name__
        super().__init__(cause.errno, f"cannot read recordings directory: {reason}", path)


@dataclass(frozen=True, slots=True)
class RecordingCounts:
    """Recordings on one host by state; the module docstring defines each count."""

    processing: int = 0
    published: int = 0
    unpublished: int = 0
    deleted: int = 0
    unprocessed: int = 0
    pending: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class RecordingTree:
    """The names a scan found under the data root, unfiltered: the input of :func:`count`."""

    recorded: tuple[str, ...] = ()
    archived: tuple[str, ...] = ()
    sanity: tuple[str, ...] = ()
    processed: tuple[str, ...] = ()
    published_status: tuple[str, ...] = ()
    raw: tuple[str, ...] = ()
    process: tuple[tuple[str, str], ...] = ()
    """``(format, name)`` for each entry of ``recording/process/<format>/``."""
    published: tuple[str, ...] = ()
    """Entries of every ``published/<format>/`` (an ID appears once per format)."""
    unpublished: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


DirStamp = tuple[str, int, int]
"""``(path, inode, mtime in ns)`` of a directory as a scan found it; inode 0 when absent."""


def _stamp(path: str) -> DirStamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (path, 0, 0)
    except OSError as exc:
        raise ScanError(path, exc) from exc
    return (path, st.st_ino, st.st_mtime_ns)


def _names(path: str, stamps: list[DirStamp] | None = None) -> list[str]:
    if stamps is not None:
        # Before listing: a change after the stamp shows in the next one.
        stamps.append(_stamp(path))
    # A missing directory is an empty stage (BBB creates them lazily); anything
    # else (permissions, a file where a directory belongs, I/O) must not read as 0.
    # Leaf directories hold thousands of names and need no file type, so listdir
    # (the same getdents walk as scandir without a DirEntry per name) is enough.
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ScanError(path, exc) from exc


def _subdirs(path: str, stamps: list[DirStamp] | None = None) -> list[tuple[str, str]]:
    """``(name, path)`` of the directories in ``path`` (the format level: a few entries)."""
    if stamps is not None:
        stamps.append(_stamp(path))
    try:
        with os.scandir(path) as it:
            return [(e.name, e.path) for e in it if e.is_dir()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ScanError(path, exc) from exc


def _by_format(path: str, stamps: list[DirStamp] | None) -> tuple[str, ...]:
    return tuple(name for _, sub in _subdirs(path, stamps) for name in _names(sub, stamps))


def read_tree(root: Path, stamps: list[DirStamp] | None = None) -> RecordingTree:
    """List the names under ``root`` that :func:`count` needs; raises :class:`ScanError`.

    ``stamps``, when given, receives the stamp of every directory read, taken
    before it is listed.
    """
    base = os.fspath(root)
    recording = os.path.join(base, "recording")
    status = os.path.join(recording, "status")
    return RecordingTree(
        recorded=tuple(_names(os.path.join(status, "recorded"), stamps)),
        archived=tuple(_names(os.path.join(status, "archived"), stamps)),
        sanity=tuple(_names(os.path.join(status, "sanity"), stamps)),
        processed=tuple(_names(os.path.join(status, "processed"), stamps)),
        published_status=tuple(_names(os.path.join(status, "published"), stamps)),
        raw=tuple(_names(os.path.join(recording, "raw"), stamps)),
        process=tuple(
            (fmt, name)
            for fmt, sub in _subdirs(os.path.join(recording, "process"), stamps)
            for name in _names(sub, stamps)
        ),
        published=_by_format(os.path.join(base, "published"), stamps),
        unpublished=_by_format(os.path.join(base, "unpublished"), stamps),
        deleted=_by_format(os.path.join(base, "deleted"), stamps),
    )


def _strip(names: Iterable[str], suffix: str) -> set[str]:
    cut = -len(suffix)
    return {name[:cut] for name in names if name.endswith(suffix)}


def _others(names: tuple[str, ...]) -> list[str]:
    """The names not ending in ``.done``: failures, ``.norecord`` and junk, a few at most."""
    return [name for name in names if not name.endswith(".done")]


def _outcomes(names: tuple[str, ...]) -> tuple[set[str], set[str], set[str]]:
    """``(done, fail, norecord)`` recording IDs of ``<id>.<outcome>`` names."""
    done = _strip(names, ".done")
    if len(done) == len(names):
        return done, set(), set()
    others = _others(names)
    return done, _strip(others, ".fail"), _strip(others, ".norecord")


def _split(stems: Iterable[str]) -> set[str]:
    """Recording IDs of ``<id>-<format>`` stems, the exact (slow) way."""
    return {m[1] for m in map(_ID_FORMAT_RE.fullmatch, stems) if m is not None}


def _started_ids(names: set[str], known: set[str]) -> set[str]:
    """Recording IDs of ``<id>-<format>.<outcome>`` names.

    Format names have no ``-`` in practice, so the ID is what precedes the last
    one (segment IDs included). The exact split runs only for names whose quick
    ID is not known from another directory, so a hyphenated format still works.
    """
    quick = {name.rpartition("-")[0] for name in names}
    unknown = quick.difference(known)
    if not unknown:
        return quick
    stems = (n.rpartition(".")[0] for n in names if n.rpartition("-")[0] in unknown)
    return (quick - unknown) | _split(stems)


def _valid(ids: set[str], known: set[str] | None = None) -> set[str]:
    """``ids`` without junk names; members of ``known`` are taken as valid unchecked."""
    if known is None:
        return {i for i in ids if _ID_RE.fullmatch(i)}
    unchecked = ids - known
    return (ids & known) | {i for i in unchecked if _ID_RE.fullmatch(i)}


def count(tree: RecordingTree, *, formats: Iterable[str] | None = None) -> RecordingCounts:
    """Classify the recordings in ``tree``.

    ``formats``: the enabled playback formats (the ``process:<format>`` steps of
    BBB's recording.yml). With them a recording stays pending until every one
    has an outcome; without them, only formats that have started are waited for.
    """
    # Per-format markers stay as full "<id>-<format>.done" names where possible:
    # on a busy host they are tens of thousands, and set algebra on them is cheap
    # while cutting each one is not.
    recorded = _strip(tree.recorded, ".done")
    archived, archive_failed, norecord = _outcomes(tree.archived)
    # bbb-record --rebuild writes archived .done beside an old archive .fail.
    archive_failed -= archived
    sanity, sanity_failed, _ = _outcomes(tree.sanity)
    processed_other = _others(tree.processed)
    published_other = _others(tree.published_status)
    processed = set(tree.processed).difference(processed_other)
    published_ok = set(tree.published_status).difference(published_other)
    format_failed = _strip(processed_other, ".fail") | _strip(published_other, ".fail")
    in_process = {f"{name}-{fmt}" for fmt, name in tree.process}

    located = set(tree.published).union(tree.unpublished, tree.deleted)
    known = sanity | archived
    started_ids = _started_ids(processed | published_ok, known)
    started_ids |= _split(format_failed | in_process)
    running = (_strip(processed - published_ok, ".done") | in_process) - format_failed
    running = {stem for stem in running if f"{stem}.done" not in published_ok}
    stopped = norecord | archive_failed | sanity_failed
    # Before 2.3 sanity .done went away once processing finished, so a started
    # format proves a passed sanity check as well.
    sane = sanity | started_ids

    incomplete: set[str] = set()
    if formats is None:
        queued = sanity - started_ids
    else:
        for fmt in (formats,) if isinstance(formats, str) else formats:
            stem = f"-{fmt}"
            incomplete |= {
                rid
                for rid in sane
                if f"{rid}{stem}.done" not in published_ok and f"{rid}{stem}" not in format_failed
            }
        queued = incomplete - started_ids

    processing = _valid((_split(running) | (incomplete & started_ids)) - stopped)
    archiving = set(tree.raw).difference(
        recorded, archived, norecord, archive_failed, sanity_failed, sane, located
    )
    # A playback whose later markers are gone (status files cleaned by hand or
    # by cron) is an old, finished recording, not one waiting for sanity.
    waiting = recorded | (archived - sane - located) | queued | archiving
    unprocessed = _valid(waiting - stopped - processing)
    failed = _valid(archive_failed | sanity_failed | _split(format_failed))

    published = _valid(set(tree.published), known)
    unpublished = _valid(set(tree.unpublished), known) - published
    deleted = _valid(set(tree.deleted), known) - published - unpublished
    return RecordingCounts(
        processing=len(processing),
        published=len(published),
        unpublished=len(unpublished),
        deleted=len(deleted),
        unprocessed=len(unprocessed),
        pending=len(processing) + len(unprocessed),
        failed=len(failed),
    )


def scan(root: Path, *, formats: Iterable[str] | None = None) -> RecordingCounts:
    """Count the recordings under BBB's data root (``/var/bigbluebutton``).

    A missing root or stage directory counts as empty; one that cannot be read
    raises :class:`ScanError`. ``formats``: see :func:`count`.
    """
    return count(read_tree(root), formats=formats)


SETTLE_NS = 2_000_000_000
"""How long a directory must have been unmodified before a scan for its stamp to
prove it unchanged later: longer than any file system's timestamp granularity
(2 s on FAT; ext4 and xfs keep nanoseconds, ticking with the kernel's clock)."""


@dataclass(frozen=True, slots=True)
class Scanned:
    """A scan's counts and the directories it read, to tell whether the next may be skipped."""

    counts: RecordingCounts
    stamps: tuple[DirStamp, ...]
    settled: bool
    """Every directory read was unmodified for SETTLE_NS before the scan began."""


def rescan(
    root: Path,
    previous: Scanned | None,
    *,
    formats: Iterable[str] | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
) -> Scanned:
    """:func:`scan`, skipped while no directory it read has changed since ``previous``.

    Adding or removing a name changes its directory's mtime, so equal stamps
    mean equal names, provided the directory had been still for a while when it
    was stamped: a change in the same timestamp tick as the stamp would keep the
    mtime. Until every directory is settled, each poll lists the tree again.
    Recordings change a few times an hour; listing and counting 10,000 of them
    costs tens of milliseconds of CPU, holds the GIL the event loop needs to
    answer scrapes, and churns several megabytes of names.
    """
    if (
        previous is not None
        and previous.settled
        and all(_stamp(stamp[0]) == stamp for stamp in previous.stamps)
    ):
        return previous
    started = clock_ns()
    stamps: list[DirStamp] = []
    counts = count(read_tree(root, stamps), formats=formats)
    settled = all(mtime < started - SETTLE_NS for _, _, mtime in stamps)
    return Scanned(counts, tuple(stamps), settled)
