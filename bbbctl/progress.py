"""The progress display of stack operations: one line per event on stderr.

On a terminal a status line (state and elapsed time) is kept under the events
and rewritten in place; anywhere else only the event lines are written, so
logs and CI output stay clean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from bbbctl.stack import StackEvent

_CLEAR = "\r\x1b[K"


def format_event(event: StackEvent) -> str:
    """``HH:MM:SS STATUS LogicalId (Type) reason`` for one event."""
    line = (
        f"{event.timestamp:%H:%M:%S}  {event.status:<28} {event.logical_id} ({event.resource_type})"
    )
    return f"{line}  {event.reason}" if event.reason else line


class Progress:
    """Writes events (and, on a tty, a live status line) to a stream."""

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._status_shown = False

    def event(self, event: StackEvent) -> None:
        """Print one event line above the status line."""
        self._clear()
        self._stream.write(format_event(event) + "\n")
        self._stream.flush()

    def status(self, text: str) -> None:
        """Show ``text`` as the live status line (terminals only)."""
        if not self._tty:
            return
        self._stream.write(_CLEAR + text)
        self._stream.flush()
        self._status_shown = True

    def done(self) -> None:
        """Remove the status line."""
        self._clear()
        self._stream.flush()

    def _clear(self) -> None:
        if self._status_shown:
            self._stream.write(_CLEAR)
            self._status_shown = False
