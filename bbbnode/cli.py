"""``bbbnode`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bbbcore import __version__, logs
from bbbcore.config import EXIT_CONFIG, ConfigError, load_settings, reference
from bbbnode.settings import NodeSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbbnode",
        description="The bbbfleet daemon for a BigBlueButton host: metrics, lifecycle, drain.",
        epilog="Every config key is also BBBNODE_<SECTION>__<KEY> in the environment.",
    )
    parser.add_argument("--version", action="version", version=f"bbbnode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("run", "run the daemon until SIGTERM"),
        ("check-config", "validate the configuration and print it (secrets hidden) as JSON"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    text = "print every configuration key as a Markdown table"
    sub.add_parser("config-reference", help=text, description=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bbbnode`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "config-reference":
        print(reference(NodeSettings), end="")
        return 0
    try:
        settings = load_settings(NodeSettings, args.config)
    except ConfigError as exc:
        print(f"bbbnode: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(json.dumps(settings.model_dump(mode="json"), indent=2, sort_keys=True))
        return 0
    logs.configure(settings.log.level)
    from bbbnode import daemon

    return asyncio.run(daemon.run(settings))


if __name__ == "__main__":
    sys.exit(main())
