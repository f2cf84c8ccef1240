"""Running host commands (mount, systemctl, ...) through one injectable seam.

Production uses SubprocessRunner; tests use ScriptedRunner to check exactly
which commands would run, because this machine has no NFS, nginx or systemd.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandFailed(RuntimeError):
    """A command exited non-zero (raised by ``check``)."""

    def __init__(self, result: Completed) -> None:
        super().__init__(
            f"{' '.join(result.argv)} exited {result.returncode}: {result.stderr.strip()[:500]}"
        )
        self.result = result


class Runner(Protocol):
    """Runs one command; never raises for a non-zero exit (see ``check``)."""

    async def __call__(
        self, argv: Sequence[str], *, stdin: str | None = None, limit: float = 120.0
    ) -> Completed: ...


def runner_for(commands: str, command_log: Path) -> Runner:
    """Host commands run for real, or only written down (``host.commands = log``: bbbsim)."""
    if commands == "log":
        return LoggingRunner(command_log)
    return SubprocessRunner()


def check(result: Completed) -> Completed:
    """``result`` if it succeeded, else CommandFailed."""
    if not result.ok:
        raise CommandFailed(result)
    return result


class SubprocessRunner:
    """Runs commands as child processes; one still running after ``limit`` s is killed."""

    async def __call__(
        self, argv: Sequence[str], *, stdin: str | None = None, limit: float = 120.0
    ) -> Completed:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(None if stdin is None else stdin.encode()), limit
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return Completed(tuple(argv), -9, "", f"timed out after {limit}s")
        return Completed(
            tuple(argv),
            int(proc.returncode or 0),
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )


@dataclass
class ScriptedRunner:
    """Records every command; answers from ``script`` (argv prefix -> result) or success."""

    script: dict[tuple[str, ...], Callable[[tuple[str, ...]], Completed]] = field(
        default_factory=dict
    )
    calls: list[tuple[str, ...]] = field(default_factory=list)

    async def __call__(
        self, argv: Sequence[str], *, stdin: str | None = None, limit: float = 120.0
    ) -> Completed:
        command = tuple(argv)
        self.calls.append(command)
        for prefix in sorted(self.script, key=len, reverse=True):
            if command[: len(prefix)] == prefix:
                return self.script[prefix](command)
        return Completed(command, 0)


@dataclass
class LoggingRunner:
    """Appends each command to a JSON-lines file and reports success without running it.

    For hosts that only pretend to be BBB servers (bbbsim): the daemon's
    decisions are real, the system commands are written down instead.
    """

    path: Path

    async def __call__(
        self, argv: Sequence[str], *, stdin: str | None = None, limit: float = 120.0
    ) -> Completed:
        line = json.dumps({"argv": list(argv), "stdin": stdin is not None})
        with self.path.open("a", encoding="utf-8") as log:
            log.write(line + "\n")
        return Completed(tuple(argv), 0)
