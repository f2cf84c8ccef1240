"""``bbbnode`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bbbcore import __version__, logs
from bbbcore.config import settings_for_command
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
        ("drain", "cordon this host in Scalelite and wait for its meetings to end (no shutdown)"),
        ("undrain", "re-enable this host in Scalelite after a drain (not while terminating)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    text = "print every configuration key as a Markdown table"
    sub.add_parser("config-reference", help=text, description=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bbbnode`` console script."""
    args = _parser().parse_args(argv)
    settings = settings_for_command(
        NodeSettings, args.command, getattr(args, "config", None), "bbbnode"
    )
    if isinstance(settings, int):
        return settings
    if args.command in ("drain", "undrain"):
        return asyncio.run(_operate(settings, args.command))
    logs.configure(settings.log.level)
    from bbbnode import daemon

    return asyncio.run(daemon.run(settings))


async def _operate(settings: NodeSettings, operation: str) -> int:
    """POST /drain or /undrain to the local daemon and print its answer."""
    import aiohttp

    host, _, port = settings.metrics.listen.rpartition(":")
    target = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host.strip("[]")  # noqa: S104
    url = f"http://{target}:{port}/{operation}"
    try:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url) as resp:
            body = await resp.text()
            print(body)
            accepted = resp.status == 200 and json.loads(body).get("accepted") is True
            return 0 if accepted else 1
    except aiohttp.ClientError as exc:
        print(f"bbbnode: cannot reach the daemon at {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
