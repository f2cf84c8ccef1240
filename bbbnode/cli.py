"""``bbbnode`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bbbcore import __version__, logs
from bbbcore.config import EXIT_CONFIG, settings_for_command
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
    text = (
        "configure BBB, nginx, FreeSWITCH, bbb-webrtc-sfu, coturn, lo and the NAT rule for a "
        "host's name and addresses, and print each file changed"
    )
    cmd = sub.add_parser("host-config", help=text, description=text)
    cmd.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    cmd.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="treat DIR as / and change files only: no service restart, no kernel state",
    )
    cmd.add_argument("--public-ip", required=True, metavar="A", help="the public IPv4 address")
    cmd.add_argument("--private-ip", required=True, metavar="B", help="the private IPv4 address")
    cmd.add_argument("--fqdn", required=True, metavar="F", help="the host's DNS name")
    cmd.add_argument("--dry-run", action="store_true", help="print the changes, change nothing")
    text = "run the privileged host helper on its socket until SIGTERM (as root, from systemd)"
    cmd = sub.add_parser("host-helper", help=text, description=text)
    cmd.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
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
    if args.command == "host-config":
        return asyncio.run(_host_config(settings, args))
    if args.command == "host-helper":
        return asyncio.run(_host_helper(settings))
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


_FLAGS = {"public_ip": "--public-ip", "private_ip": "--private-ip", "fqdn": "--fqdn"}


async def _host_config(settings: NodeSettings, args: argparse.Namespace) -> int:
    """``host-config``: the host helper's host_config, in this process."""
    from pydantic import SecretStr, ValidationError

    from bbbcore import secrets
    from bbbnode.hostops import HostConfigRequest, HostStepFailed, HostStepInvalid
    from bbbnode.hoststeps import LocalHostSteps
    from bbbnode.runner import runner_for

    prog = "bbbnode host-config"
    configured = settings.hostconfig.turn_secret
    turn_secret = None
    if configured is not None:
        try:
            turn_secret = await secrets.resolve(
                configured.get_secret_value(), setting="hostconfig.turn_secret"
            )
        except secrets.SecretError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        request = HostConfigRequest(
            fqdn=args.fqdn,
            public_ip=args.public_ip,
            private_ip=args.private_ip,
            turn_secret=SecretStr(turn_secret) if turn_secret else None,
        )
    except ValidationError as exc:
        for error in exc.errors(include_input=False):
            name = str(error["loc"][0]) if error["loc"] else "request"
            problem = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] in ("string_pattern_mismatch", "string_too_long"):
                problem = "not a lower-case DNS name"
            print(f"{prog}: {_FLAGS.get(name, name)}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.root is not None and not args.root.is_dir():
        print(f"{prog}: --root: {args.root} is not a directory", file=sys.stderr)
        return EXIT_CONFIG
    steps = LocalHostSteps(
        settings,
        runner_for(settings.host.commands, settings.host.command_log),
        root=args.root,
        files_only=args.root is not None,
    )
    try:
        if args.dry_run:
            changed = [str(change.path) for change in steps.plan(request)]
        else:
            changed = list((await steps.run(request))["changed"])
    except HostStepInvalid as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except HostStepFailed as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    for path in changed:
        print(path)
    return 0


async def _host_helper(settings: NodeSettings) -> int:
    """``host-helper``: serve the host helper's socket until SIGTERM."""
    from bbbnode import helper
    from bbbnode.hoststeps import LocalHostSteps
    from bbbnode.runner import runner_for

    runner = runner_for(settings.host.commands, settings.host.command_log)
    return await helper.serve(settings.helper, LocalHostSteps(settings, runner))


if __name__ == "__main__":
    sys.exit(main())
