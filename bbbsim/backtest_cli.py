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

from bbbsim.recording_processing import RecordingSpec
from bbbsim.scalelite_poller import PollerSpec
from bbbsim.trace_generate import KINDS

COMMANDS: Final = ("backtest", "trace")
PRESETS: Final = ("seed", "default", "forecast")
POLLER: Final = PollerSpec()
"""Scalelite's poller as helm/scalelite/values.yaml sets it (tests keep the two equal)."""
RECORDINGS: Final = RecordingSpec()
DEFAULT_POLL_INTERVAL: Final = POLLER.interval
"""Scalelite's POLL_INTERVAL the backtest assumes: ``poller.interval`` of this project's
helm/scalelite chart, i.e. Scalelite as bbbfleet deploys it; Scalelite's own default is 60."""
NO_SCHEDULES: Final = "none"
"""``--schedules none``: no planned events, not even a shipped trace's own."""


def _at_least_one(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


count = _count
"""The whole number >= 0 argument type (``bbbsim demo --warm-pool`` uses it too)."""


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
        help="CSV trace: start_s,duration_s,participants[,cameras][,recorded]",
    )
    bt.add_argument(
        "--policy",
        action="append",
        choices=PRESETS,
        metavar="PRESET",
        help="seed, default or forecast; repeat to compare (default: all three). A trace "
        "longer than a week is scored on its last week; the weeks before are the forecast's "
        "history",
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
        type=_count,
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
    sl = bt.add_argument_group(
        "Scalelite's poller (its own variable names; defaults: helm/scalelite's values)"
    )
    sl.add_argument(
        "--poll-interval",
        type=positive,
        default=DEFAULT_POLL_INTERVAL,
        metavar="S",
        help=f"POLL_INTERVAL, seconds between rounds (default {DEFAULT_POLL_INTERVAL:g}; "
        "Scalelite's own is 60)",
    )
    for flag, kind, default, text in (
        ("--poller-threads", _count, POLLER.threads, "POLLER_THREADS, >= 2"),
        ("--poller-wait-timeout", positive, POLLER.wait_timeout, "POLLER_WAIT_TIMEOUT"),
        ("--response-timeout", positive, POLLER.response_timeout, "RESPONSE_TIMEOUT"),
    ):
        sl.add_argument(flag, type=kind, default=default, metavar="N" if kind is _count else "S",
                        help=f"{text} (default {default:g})")  # fmt: skip
    sl.add_argument(
        "--server-unhealthy-threshold",
        type=_at_least_one,
        default=POLLER.unhealthy_threshold,
        metavar="N",
        help="SERVER_UNHEALTHY_THRESHOLD: failed polls in a row before Scalelite takes a server "
        f"offline and ends its meetings (default {POLLER.unhealthy_threshold})",
    )
    sl.add_argument(
        "--server-healthy-threshold",
        type=_at_least_one,
        default=POLLER.healthy_threshold,
        metavar="N",
        help=f"SERVER_HEALTHY_THRESHOLD (default {POLLER.healthy_threshold})",
    )
    sl.add_argument(
        "--api-call-time",
        type=positive,
        default=POLLER.call_time,
        metavar="S",
        help=f"one BBB API call to a quiet host, for the round's length (default "
        f"{POLLER.call_time:g})",
    )
    sl.add_argument(
        "--answer-time-at-full",
        type=positive,
        default=POLLER.answer_time_at_full,
        metavar="S",
        help="mean answer time of a host at 100 %% CPU; above 80 %% it grows with the square "
        "of the CPU, and a poll fails when the (exponential) answer takes longer than "
        f"RESPONSE_TIMEOUT (default {POLLER.answer_time_at_full:g})",
    )
    bt.add_argument(
        "--join-spread",
        type=_share,
        default=120.0,
        metavar="S",
        help="seconds over which a meeting's participants join after its create; each join "
        "adds to Scalelite's load until the next poll (default 120)",
    )
    rec = bt.add_argument_group("recordings (the trace's recorded column)")
    rec.add_argument(
        "--recording-ratio",
        type=_share,
        default=RECORDINGS.ratio,
        metavar="X",
        help="seconds of processing on the host per second of recorded meeting "
        f"(default {RECORDINGS.ratio:g}: BBB's 'a few minutes' for an hour)",
    )
    rec.add_argument(
        "--recording-cores",
        type=_share,
        default=RECORDINGS.cores,
        metavar="N",
        help=f"busy cores while a host processes (default {RECORDINGS.cores:g})",
    )
    rec.add_argument(
        "--no-recordings",
        action="store_true",
        help="ignore the recorded column: nothing is processed",
    )
    bt.add_argument("--seed", type=int, default=1, metavar="N",
                    help="seed of Scalelite's failed polls (default 1)")  # fmt: skip
    bt.add_argument(
        "--min-nodes",
        type=_count,
        default=1,
        metavar="N",
        help="the group's MinSize, serving from the start (default 1)",
    )
    bt.add_argument("--max-nodes", type=_count, default=500, metavar="N",
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
        "225 meetings at peak; exam-flash: 1,500 users joining within 5 minutes; company-week: "
        "two offices' meetings on the hour and half hour). With --weeks N, N weeks with "
        "week-to-week noise, public holidays and a term growing in its last weeks.",
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
    gen.add_argument("--weeks", type=_at_least_one, default=1, metavar="N",
                     help="weeks of it (default 1; the shipped traces have 5)")  # fmt: skip
    gen.add_argument("--out", required=True, type=Path, metavar="FILE")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the ``backtest`` or ``trace`` command parsed into ``args``."""
    if args.command == "trace":
        return _generate(args)
    return _backtest(args)


def _generate(args: argparse.Namespace) -> int:
    from bbbsim.trace import render_trace
    from bbbsim.trace_generate import generate

    meetings = generate(args.kind, args.seed, args.scale, args.weeks)
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
    if args.poller_threads < 2:
        print("bbbsim backtest: --poller-threads must be at least 2", file=sys.stderr)
        return 2
    settings = FleetSettings(
        boot_time=args.boot_time,
        poller=PollerSpec(
            interval=args.poll_interval,
            threads=args.poller_threads,
            wait_timeout=args.poller_wait_timeout,
            response_timeout=args.response_timeout,
            unhealthy_threshold=args.server_unhealthy_threshold,
            healthy_threshold=args.server_healthy_threshold,
            call_time=args.api_call_time,
            answer_time_at_full=args.answer_time_at_full,
        ),
        join_spread=args.join_spread,
        recordings=RecordingSpec(
            ratio=args.recording_ratio, cores=args.recording_cores, enabled=not args.no_recordings
        ),
        seed=args.seed,
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
    # A meeting ended by the platform breaks the scaler's first promise: fail loudly. One
    # Scalelite ended is overload's price, reported beside it, not a safety bug of ours.
    return 1 if ended else 0
