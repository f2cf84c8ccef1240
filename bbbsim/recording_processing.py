"""BBB's recording processing on the host that ran the meeting, as the backtest models it.

What BBB does (bigbluebutton/bigbluebutton, docs and record-and-playback):

- When a meeting created with ``record=true`` ends, its host archives it, checks it
  (sanity), then processes and publishes each enabled format (``docs/docs/development/
  recording.md``, "Record and Playback Phases"). The ``presentation`` format is the
  default (``docs/docs/administration/customize.md``, "Install additional recording
  processing formats"); it renders webcams at 640x480, 15 fps and screen sharing at
  1280x720, 5 fps (``record-and-playback/presentation/scripts/presentation.yml``) into
  VP9 ``.webm`` files (customize.md, "Enable generating mp4 (H.264) video output").
- One worker does it all, one recording at a time, in order:
  ``bbb-rap-resque-worker.service`` runs with ``COUNT=1``
  (``record-and-playback/core/systemd``), and customize.md's "Increase the number of
  recording workers" is how an operator processes several at once.
- How long: "Processing and publishing the media for playback after the end of your
  session may take a few minutes" (recording.md, Overview). BBB documents no rate; the
  default here reads "a few minutes" for an hour-long class: 3 minutes of processing per
  hour of meeting (``ratio`` 0.05), on one busy core (``cores``; the encoders run in that
  one worker). Both are options of the backtest; heavier formats (``video``) or meetings
  full of cameras take longer.

The model: a recorded meeting that ends (or that Scalelite ends) queues
``ratio * its duration`` seconds of work on its host; the host's single worker works the
queue in order, adding ``cores`` busy cores while it does. Until the queue is empty the
host has a recording pending: bbbnode keeps its scale-in protection and holds its
termination in the lifecycle hook (bbbnode/drain.py waits for none pending), so the
instance runs, and costs, until its last recording is done.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecordingSpec:
    """How long processing takes and what it costs the host."""

    ratio: float = 0.05
    """Seconds of processing per second of recorded meeting."""
    cores: float = 1.0
    """Busy cores while the worker processes."""
    enabled: bool = True
    """False: the trace's ``recorded`` column is ignored (nothing is processed)."""

    def __post_init__(self) -> None:
        if self.ratio < 0 or self.cores < 0:
            raise ValueError("recording ratio and cores must be >= 0")

    def seconds(self, meeting_seconds: float) -> float:
        """Processing time of a recorded meeting that ran ``meeting_seconds``."""
        return self.ratio * meeting_seconds if self.enabled else 0.0
