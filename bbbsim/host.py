"""One emulated BBB host: the BBB API emulator plus a /proc/stat that follows its load."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bbbsim.bbb_emulator import EmulatedBbb, client_url, serve
from bbbsim.host_model import DEFAULT_CORES, ProcStat
from bbbsim.host_recordings import RecordingPipeline
from bbbsim.recording_processing import RecordingSpec


@dataclass
class EmulatedHost:
    """A BBB host on loopback: ``url`` for bbbnode, ``procfs`` for its CPU reader."""

    name: str
    bbb: EmulatedBbb
    stat: ProcStat
    procfs: Path
    recordings: Path
    cores: int = DEFAULT_CORES
    runner: web.AppRunner | None = None
    port: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    pipeline: RecordingPipeline | None = None
    """Processes the recordings of recorded meetings that ended (BBB's marker files, CPU)."""

    @property
    def url(self) -> str:
        return client_url(self.port)

    def tick(self) -> float:
        """Book CPU time so far and follow the current load; returns the utilisation."""
        utilization = self.bbb.cpu_utilization(self.cores)
        if self.pipeline is not None:
            busy = self.pipeline.observe(self.bbb.meetings())
            utilization = min(1.0, utilization + busy / self.cores)
        self.stat.set_utilization(utilization)
        self.stat.write()
        return utilization

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def start_host(
    name: str,
    root: Path,
    secret: str,
    cores: int = DEFAULT_CORES,
    clock: Callable[[], float] = time.monotonic,
    properties: Path | None = None,
    recordings: RecordingSpec | None = None,
) -> EmulatedHost:
    """Create the host's directories, serve its BBB API and write its first /proc/stat.

    With ``properties`` (a bbb-web.properties) the API is keyed by that file's
    securitySalt and supportedChecksumAlgorithms instead of ``secret``.
    """
    procfs = root / name / "proc"
    recordings_root = root / name / "bigbluebutton"
    (recordings_root / "recording" / "status").mkdir(parents=True, exist_ok=True)
    bbb = EmulatedBbb(secret) if properties is None else EmulatedBbb.from_properties(properties)
    stat = ProcStat(procfs, cores=cores, clock=clock)
    host = EmulatedHost(name, bbb, stat, procfs, recordings_root, cores)
    host.pipeline = RecordingPipeline(recordings_root, recordings or RecordingSpec(), clock)
    host.runner, host.port = await serve(bbb)
    host.tick()
    return host
