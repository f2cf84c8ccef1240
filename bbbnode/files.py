"""Replacing files so readers see the old content or the new, never half of it."""

from __future__ import annotations

import grp
import os
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

from bbbcore import logs

log = logs.get(__name__)


def _gid(group: str | None) -> int:
    if group is None:
        return -1
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("group_missing", group=group)
        return -1


def write_atomic(
    path: Path,
    content: str | bytes,
    *,
    mode: int | None = None,
    mode_if_new: int = 0o644,
    group_if_new: str | None = None,
) -> None:
    """Replace ``path`` with ``content`` in one rename, then fsync the directory.

    ``mode`` forces the file's mode (private keys stay 0600 whatever was there);
    without it an existing file keeps its mode and owner, and a new one gets
    ``mode_if_new`` and ``group_if_new``. A symlink is followed, so the link
    stays and its target changes. The temporary file is created 0600, so the
    content is never readable by others before the final mode is set.
    """
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
        kept, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    except FileNotFoundError:
        kept, uid, gid = mode_if_new, -1, _gid(group_if_new)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, kept if mode is None else mode)
        own = os.stat(tmp)
        if (uid not in (-1, own.st_uid)) or (gid not in (-1, own.st_gid)):
            os.chown(tmp, uid, gid)
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
