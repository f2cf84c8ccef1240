"""A BBB recordings tree on disk, as BBB's record-and-playback workers leave it.

What each stage leaves is written down in bbbnode/recordings.py's docstring
(from bbb-web and the rap workers of BBB 2.3+); bbbnode's tests and the
exporter benchmark build their trees with this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

Stage = Literal[
    "recorded",
    "archiving",
    "norecord",
    "archive_failed",
    "archived",
    "sanity_failed",
    "sanity_checked",
    "processing",
    "process_failed",
    "processed",
    "publish_failed",
    "published",
    "unpublished",
    "deleted",
]


def recording_id(n: int) -> str:
    """A realistic internal meeting ID: sha1 hex, dash, milliseconds."""
    digest = hashlib.sha1(str(n).encode(), usedforsecurity=False).hexdigest()
    return f"{digest}-{1_700_000_000_000 + n}"


def touch(path: Path) -> None:
    """An empty file, parents made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def make_dir(path: Path) -> None:
    """A directory, parents made; fine if it exists."""
    path.mkdir(parents=True, exist_ok=True)


def add_recording(
    root: Path,
    record_id: str,
    stage: Stage,
    formats: Iterable[str] = ("presentation",),
) -> None:
    """Leave the files BBB 2.3+ leaves for a recording that reached ``stage``.

    Earlier markers stay, as the Resque workers leave them. Calling it again for
    the same ID with other formats adds those formats' files.
    """
    status = root / "recording" / "status"
    if stage == "recorded":
        # bbb-web wrote it; rap-starter has not picked it up yet.
        touch(status / "recorded" / f"{record_id}.done")
        return
    # rap-starter: mkdir raw/<id>, enqueue archive, delete recorded .done.
    make_dir(root / "recording" / "raw" / record_id)
    if stage == "archiving":
        return
    if stage == "norecord":
        touch(status / "archived" / f"{record_id}.norecord")
        return
    if stage == "archive_failed":
        touch(status / "archived" / f"{record_id}.fail")
        return
    touch(status / "archived" / f"{record_id}.done")
    if stage == "archived":
        return
    if stage == "sanity_failed":
        touch(status / "sanity" / f"{record_id}.fail")
        return
    touch(status / "sanity" / f"{record_id}.done")
    if stage == "sanity_checked":
        return
    for fmt in formats:
        process_dir = root / "recording" / "process" / fmt / record_id
        make_dir(process_dir)
        if stage == "processing":
            continue
        if stage == "process_failed":
            touch(status / "processed" / f"{record_id}-{fmt}.fail")
            continue
        touch(status / "processed" / f"{record_id}-{fmt}.done")
        if stage == "processed":
            continue
        if stage == "publish_failed":
            touch(status / "published" / f"{record_id}-{fmt}.fail")
            continue
        # Publish succeeded: the worker removes the process directory.
        touch(status / "published" / f"{record_id}-{fmt}.done")
        process_dir.rmdir()
        location = {"published": "published", "unpublished": "unpublished", "deleted": "deleted"}
        touch(root / location.get(stage, "published") / fmt / record_id / "metadata.xml")
