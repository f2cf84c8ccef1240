"""``bbbctl`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from bbbcore import __version__, logs
from bbbcore.config import EXIT_CONFIG, ConfigError, settings_for_command
from bbbctl.settings import CtlSettings

if TYPE_CHECKING:
    from bbbctl import commands

_COMMANDS = (
    ("validate", "cfn-lint, the IAM wildcard check and CloudFormation ValidateTemplate"),
    ("sync", "upload templates, scripts and the wheel to the bucket (only what changed)"),
    ("create", "create the stack through a change set and wait for it"),
    ("update", "update the stack through a change set and wait for it"),
    (
        "delete",
        "refuse while the fleet runs meetings; else empty the buckets the delete removes "
        "(a retained one is kept) and its synced files, then delete it",
    ),
    ("status", "show the stack's state and outputs"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbbctl",
        description="Deploy and operate the bbbfleet CloudFormation stack.",
        epilog="Every config key is also BBBCTL_<SECTION>__<KEY> in the environment.",
    )
    parser.add_argument("--version", action="version", version=f"bbbctl {__version__}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    text = "print every configuration key as a Markdown table"
    groups.add_parser("config-reference", help=text, description=text)
    stack = groups.add_parser("stack", help="the CloudFormation stack", description="The stack.")
    sub = stack.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in _COMMANDS:
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
        if name == "validate":
            cmd.add_argument(
                "--local", action="store_true", help="skip ValidateTemplate (no AWS call)"
            )
        if name in ("create", "update", "delete"):
            cmd.add_argument(
                "--yes", action="store_true", help="do not ask before changing anything"
            )
        if name in ("update", "delete"):
            cmd.add_argument(
                "--force",
                action="store_true",
                help="go ahead even while the fleet's hosts run meetings, or cannot be read: "
                "ENDS THOSE MEETINGS (checked when the update removes or replaces the group)",
            )
    text = "the controllers and monitoring stack in EKS (versions.yaml platform)"
    plat = groups.add_parser("platform", help=text, description=text)
    psub = plat.add_subparsers(dest="command", required=True, metavar="COMMAND")
    text = (
        "helm upgrade --install each pinned chart in order, with helm/platform values "
        "and the stack's outputs"
    )
    install = psub.add_parser("install", help=text, description=text)
    install.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    install.add_argument(
        "--print",
        action="store_true",
        dest="print_only",
        help="print the commands ($Output placeholders), call nothing",
    )
    return parser


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} no terminal to ask on: pass --yes", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bbbctl`` console script."""
    args = _parser().parse_args(argv)
    settings = settings_for_command(
        CtlSettings, args.group, getattr(args, "config", None), "bbbctl"
    )
    if isinstance(settings, int):
        return settings
    logs.configure(settings.log.level)
    # Imported once logging is configured: modules bind their loggers on import.
    from bbbctl import commands
    from bbbctl.stack import ParameterError

    ctx = commands.Context(settings, sys.stdout, sys.stderr, _confirm)
    try:
        return asyncio.run(_run(ctx, args))
    except (ConfigError, ParameterError) as exc:
        print(f"bbbctl: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ClientError, BotoCoreError, RuntimeError, TimeoutError) as exc:
        print(f"bbbctl: {exc}", file=sys.stderr)
        return 1


async def _run(ctx: commands.Context, args: argparse.Namespace) -> int:
    from bbbctl import commands

    command: str = args.command
    if args.group == "platform":
        return await commands.platform_install(ctx, args.print_only)
    if command == "validate":
        return await commands.validate(ctx, args.local)
    if command == "sync":
        return await commands.sync_command(ctx)
    if command == "create":
        return await commands.deploy(ctx, "create", args.yes)
    if command == "update":
        return await commands.deploy(ctx, "update", args.yes, args.force)
    if command == "delete":
        return await commands.delete(ctx, args.yes, args.force)
    return await commands.status(ctx)


if __name__ == "__main__":
    sys.exit(main())
