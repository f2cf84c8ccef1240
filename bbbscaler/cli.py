"""``bbbscaler`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bbbcore import __version__, logs, native
from bbbcore.config import settings_for_command
from bbbscaler.settings import ScalerSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbbscaler",
        description="Sizes the BBB Auto Scaling Group: scale out fast, scale in only by draining.",
        epilog="Every config key is also BBBSCALER_<SECTION>__<KEY> in the environment "
        "(a top-level key: BBBSCALER_<KEY>). See docs/scaler.md.",
    )
    parser.add_argument("--version", action="version", version=f"bbbscaler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = (
        ("run", "run the control loop until SIGTERM (or one round with --once)"),
        ("explain", "observe and decide once, change nothing; print the fleet and the decision"),
        (
            "check-config",
            "validate the configuration and print it (secrets hidden) as JSON; warn about "
            "schedule windows above the group's MaxSize or policy.max_nodes",
        ),
    )
    for name, text in commands:
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
        if name == "run":
            cmd.add_argument(
                "--once",
                action="store_true",
                help="one round; the decision as one JSON line, the last line on stdout",
            )
            cmd.add_argument(
                "--dry-run",
                action="store_true",
                help="decide and log, change nothing (same as BBBSCALER_DRY_RUN=true)",
            )
    text = "print every configuration key as a Markdown table"
    sub.add_parser("config-reference", help=text, description=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bbbscaler`` console script."""
    args = _parser().parse_args(argv)
    if native.refuse_stale("bbbscaler"):
        return 2
    settings = settings_for_command(
        ScalerSettings, args.command, getattr(args, "config", None), "bbbscaler", _check
    )
    if isinstance(settings, int):
        return settings
    if getattr(args, "dry_run", False):
        settings = settings.model_copy(update={"dry_run": True})
    logs.configure(settings.log.level)
    from bbbscaler import daemon

    if args.command == "explain":
        return asyncio.run(daemon.explain(settings))
    if args.once:
        return asyncio.run(daemon.once(settings))
    return asyncio.run(daemon.run(settings))


def _check(settings: ScalerSettings) -> int:
    """check-config's look beyond the keys: windows against the group's MaxSize."""
    logs.configure(settings.log.level)
    from bbbscaler import daemon

    return asyncio.run(daemon.check_schedules(settings))


if __name__ == "__main__":
    sys.exit(main())
