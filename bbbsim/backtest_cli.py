"""``bbbsim backtest`` and ``bbbsim trace generate``: argument parsing and output.

Heavy imports (the simulation, matplotlib) happen inside the handlers, so
``bbbsim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bbbsim.trace_generate import KINDS

COMMANDS: Final = ("backtest", "trace")
PRESETS: Final = ("seed", "default")
DEFAULT_POLL_INTERVAL: Final = 20.0
"""Scalelite's poller interval the backtest assumes: ``poller.interval`` of this project's
helm/scalelite chart (helm/scalelite/values.yaml), i.e. Scalelite as bbbfleet deploys it;
Scalelite's own default is 60. Here, not in bbbsim.backtest, so ``--help`` stays fast."""
NO_SCHEDULES: Final = "none"
"""``--schedules none``: no planned events, not even a shipped trace's own."""


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 and finite: {text!r}")
    return value


def add_commands(sub: Any, positive: Callable[[str], float]) -> None:
    """Register ``backtest`` and ``trace`` on the bbbsim parser's subparsers.

    ``positive`` is the CLI's own "number > 0" argument type, so both agree.
    """
    bt = sub.add_parser(
        "backtest",
        help="replay a load trace through the simulated fleet under each policy",
        description="A discrete-event fleet (Scalelite's placement, the host CPU model, boot, "
        "drain) driven by bbbscaler's real decide(), scored against a clairvoyant oracle and "
        "the fluid lower bound. A shipped trace can be named instead of a file: "
        + ", ".join(KINDS) + ".",
    )  # fmt: skip
    bt.add_argument(
        "--trace",
        required=True,
        metavar="FILE",
        help="CSV trace: start_s,duration_s,participants[,cameras]",
    )
    bt.add_argument(
        "--policy",
        action="append",
        choices=PRESETS,
        metavar="PRESET",
        help="seed or default; repeat to compare (default: both)",
    )
    bt.add_argument(
        "--policy-config",
        type=Path,
        action="append",
        default=[],
        metavar="TOML",
        help="also run the [policy] table of this bbbscaler config file, named "
        "after the file (schedules see the trace's clock: second 0 is Monday "
        "00:00 UTC)",
    )
    bt.add_argument(
        "--schedules",
        metavar="TOML",
        help="planned events: the [[policy.schedules]] windows of this file are added to "
        "every run (same keys as bbbscaler's config; second 0 of the trace is Monday 00:00 "
        "UTC). Default: a shipped trace's own (bbbsim/traces/NAME.toml), if any; "
        f"'{NO_SCHEDULES}' for none",
    )
    bt.add_argument("--json", type=Path, metavar="OUT", help="also write the scores as JSON")
    bt.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="also draw load, capacity and decisions"
    )
    bt.add_argument(
        "--boot-time",
        type=positive,
        default=180.0,
        metavar="S",
        help="a cold launch to serving, seconds (default 180)",
    )
    bt.add_argument(
        "--warm-pool",
        type=count,
        default=0,
        metavar="N",
        help="stopped, ready hosts in a warm pool beside the group (cfn WarmPoolSize; default "
        "0: none); a launch starts one first, the pool refills through a warm-up as long as "
        "--boot-time; stopped_instance_hours counts their stopped time",
    )
    bt.add_argument(
        "--warm-start-time",
        type=_seconds,
        default=45.0,
        metavar="S",
        help="a warm pool host's start to serving, seconds (default 45)",
    )
    bt.add_argument(
        "--poll-interval",
        type=positive,
        default=DEFAULT_POLL_INTERVAL,
        metavar="S",
        help=f"Scalelite's poller interval, seconds (default {DEFAULT_POLL_INTERVAL:g}: "
        "this project's Scalelite chart; Scalelite's own is 60)",
    )
    bt.add_argument(
        "--min-nodes",
        type=count,
        default=1,
        metavar="N",
        help="the group's MinSize, serving from the start (default 1)",
    )
    bt.add_argument("--max-nodes", type=count, default=500, metavar="N",
                    help="the group's MaxSize (default 500)")  # fmt: skip
    bt.add_argument(
        "--rollout-at",
        type=_seconds,
        metavar="SECONDS",
        help="replay a rollout: the group's launch template changes at this trace second, "
        "and each policy's rollout_s says how long until no older instance was left",
    )
    tr = sub.add_parser("trace", help="make load traces", description="Make load traces.")
    tr_sub = tr.add_subparsers(dest="trace_command", required=True, metavar="ACTION")
    gen = tr_sub.add_parser(
        "generate",
        help="write a synthetic trace",
        description="Write a seeded synthetic trace (university-week: 7 days of lectures, about "
        "225 meetings at peak; exam-flash: 1,500 users joining within 5 minutes).",
    )
    gen.add_argument("--kind", required=True, choices=KINDS)
    gen.add_argument("--seed", type=int, default=1, metavar="N", help="random seed (default 1)")
    gen.add_argument(
        "--scale",
        type=positive,
        default=1.0,
        metavar="X",
        help="meetings (exam users) times X (default 1)",
    )
    gen.add_argument("--out", required=True, type=Path, metavar="FILE")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the ``backtest`` or ``trace`` command parsed into ``args``."""
    if args.command == "trace":
        return _generate(args)
    return _backtest(args)


def _generate(args: argparse.Namespace) -> int:
    from bbbsim.trace import render_trace
    from bbbsim.trace_generate import generate

    meetings = generate(args.kind, args.seed, args.scale)
    args.out.write_text(render_trace(meetings), encoding="utf-8")
    users = sum(m.participants for m in meetings)
    print(f"{args.out}: {len(meetings):,} meetings, {users:,} users")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from bbbcore.config import ConfigError
    from bbbscaler.policy import PolicyConfig
    from bbbscaler.schedule import Window
    from bbbsim.backtest import (
        backtest,
        load_policy,
        load_schedules,
        render_table,
        report_json,
        shipped_schedules,
    )
    from bbbsim.fleet_model import FleetSettings
    from bbbsim.trace import SHIPPED, TraceError, load_trace, shipped_trace

    path = Path(args.trace)
    shipped = not path.exists() and args.trace in SHIPPED
    try:
        trace = shipped_trace(args.trace) if shipped else load_trace(path)
    except TraceError as exc:
        print(f"bbbsim backtest: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bbbsim backtest: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.min_nodes > args.max_nodes:
        print("bbbsim backtest: --min-nodes is above --max-nodes", file=sys.stderr)
        return 2
    settings = FleetSettings(
        boot_time=args.boot_time,
        poll_interval=args.poll_interval,
        min_nodes=args.min_nodes,
        max_nodes=args.max_nodes,
        rollout_at=args.rollout_at,
        warm_pool=args.warm_pool,
        warm_start_time=args.warm_start_time,
    )
    planned: tuple[Window, ...] = ()
    try:
        if args.schedules is not None and args.schedules != NO_SCHEDULES:
            planned = load_schedules(Path(args.schedules))
        elif args.schedules is None and shipped:
            planned = shipped_schedules(args.trace)
    except ConfigError as exc:
        print(f"bbbsim backtest: {exc}", file=sys.stderr)
        return 2
    presets = list(dict.fromkeys(args.policy or PRESETS))
    configs: list[tuple[str, PolicyConfig]] = []
    for path in args.policy_config:
        try:
            config = load_policy(path, settings)
        except ConfigError as exc:
            print(f"bbbsim backtest: {exc}", file=sys.stderr)
            return 2
        taken = {*presets, *(name for name, _ in configs)}
        name = path.stem
        while name in taken:
            name += "'"
        configs.append((name, config))
    result = backtest(trace, presets, settings, configs, planned)
    print(render_table(result))
    if args.json:
        args.json.write_text(json.dumps(report_json(result), indent=2) + "\n", encoding="utf-8")
    if args.plot:
        from bbbsim.backtest_plot import plot

        plot(result, args.plot)
    ended = sum(s.run.meetings_ended_by_platform for s in result.policies)
    # A meeting ended by the platform breaks the scaler's first promise: fail loudly.
    return 1 if ended else 0
