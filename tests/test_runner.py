import json
import sys
from pathlib import Path

import pytest

from bbbnode.runner import (
    CommandFailed,
    Completed,
    LoggingRunner,
    ScriptedRunner,
    SubprocessRunner,
    check,
)


async def test_subprocess_runner_success_failure_timeout() -> None:
    run = SubprocessRunner()
    ok = await run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
                   stdin="hi")  # fmt: skip
    assert ok.ok
    assert ok.stdout.strip() == "HI"
    bad = await run([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert bad.returncode == 3
    with pytest.raises(CommandFailed, match="exited 3"):
        check(bad)
    slow = await run([sys.executable, "-c", "import time; time.sleep(30)"], limit=0.2)
    assert not slow.ok
    assert "timed out" in slow.stderr


async def test_scripted_runner_longest_prefix_wins() -> None:
    run = ScriptedRunner(
        script={
            ("mount",): lambda argv: Completed(argv, 32, stderr="busy"),
            ("mount", "-t", "efs"): lambda argv: Completed(argv, 0),
        }
    )
    assert (await run(["mount", "-t", "efs", "fs-1:", "/mnt"])).ok
    assert (await run(["mount", "/x"])).returncode == 32
    assert (await run(["systemctl", "restart", "nginx"])).ok
    assert run.calls[-1] == ("systemctl", "restart", "nginx")


async def test_logging_runner_writes_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "commands.jsonl"
    run = LoggingRunner(log)
    assert (await run(["systemctl", "reload", "nginx"])).ok
    assert (await run(["mount", "-t", "efs"], stdin="x")).ok
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [
        {"argv": ["systemctl", "reload", "nginx"], "stdin": False},
        {"argv": ["mount", "-t", "efs"], "stdin": True},
    ]
