"""``bbbsim`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from bbbcore import __version__, logs, native
from bbbsim import backtest_cli

SIM_EXTRA = "bbbfleet[sim]"
"""What installs moto and matplotlib (pyproject's optional dependencies ``sim``)."""


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbbsim", description="The bbbfleet BigBlueButton fleet on one machine."
    )
    parser.add_argument("--version", action="version", version=f"bbbsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the whole fleet live: moto, Scalelite, a bbbnode per instance, bbbscaler",
        description="The whole fleet on this machine, live, with a summary and a timeline.",
    )
    demo.add_argument("--duration", type=_positive, default=120.0, metavar="S",
                      help="seconds the compressed day takes (default 120)")  # fmt: skip
    demo.add_argument("--summary-json", type=Path, metavar="FILE",
                      help="also write the summary as JSON")  # fmt: skip
    demo.add_argument("--plot", type=Path, metavar="PNG", default=Path("bbbsim-demo.png"),
                      help="timeline picture (default bbbsim-demo.png)")  # fmt: skip
    demo.add_argument("--warm-pool", type=backtest_cli.count, default=2, metavar="N",
                      help="stopped hosts in the warm pool (default 2; 0: none)")  # fmt: skip
    node_demo = sub.add_parser(
        "node-demo",
        help="one emulated BBB host and a real bbbnode: the exporter through a BBB outage",
        description="An emulated BBB host and a real bbbnode, live, with a summary at the end.",
    )
    node_demo.add_argument("--duration", type=_positive, default=40.0, metavar="S",
                           help="seconds the story takes (default 40)")  # fmt: skip
    node_demo.add_argument("--summary-json", type=Path, metavar="FILE",
                           help="also write the summary as JSON")  # fmt: skip
    backtest_cli.add_commands(sub, _positive)
    return parser


def needs(args: argparse.Namespace) -> tuple[str, ...]:
    """The modules of the sim extra that the parsed command will import."""
    if args.command == "demo":
        return ("moto.server", "matplotlib")
    if args.command == "backtest" and args.plot is not None:
        return ("matplotlib",)
    return ()


def missing_module(names: Sequence[str]) -> str | None:
    """The first of ``names`` that cannot be imported (with what it imports), else None."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return (exc.name or name).partition(".")[0]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bbbsim`` console script."""
    args = _parser().parse_args(argv)
    if native.refuse_stale("bbbsim"):
        return 2
    # Checked before anything starts: a two-minute demo must not end in an ImportError.
    missing = missing_module(needs(args))
    if missing is not None:
        print(
            f"bbbsim {args.command}: needs {missing}, from the simulator's optional "
            f"dependencies: pip install '{SIM_EXTRA}'",
            file=sys.stderr,
        )
        return 2
    logs.configure("warning")
    if args.command == "demo":
        from bbbsim import fleet_demo  # imported here: keeps --help fast

        return fleet_demo.main(
            args.duration, args.summary_json, args.plot, warm_pool=args.warm_pool
        )
    if args.command == "node-demo":
        from bbbsim import demo

        return demo.main(args.duration, args.summary_json)
    if args.command in backtest_cli.COMMANDS:
        return backtest_cli.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
