"""Scalelite's poll round for large fleets, under the backtest's poller model.

Not a timing: ``bbbsim.scalelite_poller``'s model of lib/tasks/poll.rake (v1.8.5) computes
how long one round takes when every host answers (one call 0.1 s, TLS set-up included),
with helm/scalelite's settings and with Scalelite's stock ones, and whether the round is
cut off (POLLER_WAIT_TIMEOUT + 5 s) before every server and meeting is polled. A host
that fails its poll holds a worker for RESPONSE_TIMEOUT; the last column adds ten such
hosts to the round.

    .venv/bin/python benchmarks/scalelite_poller.py
"""

from __future__ import annotations

from bbbsim.scalelite_poller import PollerSpec, healthy_round, round_duration

FLEETS = ((10, 100), (50, 500), (100, 1_000), (200, 2_000), (400, 4_000))
SETTINGS = (
    ("helm/scalelite", PollerSpec()),
    ("Scalelite's defaults", PollerSpec(threads=5, wait_timeout=10.0, response_timeout=10.0)),
)


def with_slow_hosts(servers: int, meetings: int, slow: int, spec: PollerSpec) -> float:
    s = spec.call_time
    server_work = (servers - slow) * s + slow * spec.response_timeout
    longest = spec.response_timeout if slow else s
    return round_duration(server_work, meetings * s, servers * s, longest, spec)


def main() -> None:
    for name, spec in SETTINGS:
        print(
            f"{name}: POLLER_THREADS {spec.threads}, POLLER_WAIT_TIMEOUT {spec.wait_timeout:g} s, "
            f"RESPONSE_TIMEOUT {spec.response_timeout:g} s; cut off after {spec.cutoff:g} s"
        )
        print("| servers | meetings | round (s) | fully polled | round with 10 slow hosts (s) |")
        print("|---:|---:|---:|---|---:|")
        for servers, meetings in FLEETS:
            took = healthy_round(servers, meetings, spec)
            # Queued calls still run for 5 s after POLLER_WAIT_TIMEOUT (poll.rake:136-137).
            full = "yes" if took < spec.cutoff else "no: cut off"
            slow = with_slow_hosts(servers, meetings, 10, spec)
            print(f"| {servers:,} | {meetings:,} | {took:.1f} | {full} | {slow:.1f} |")
        print()


if __name__ == "__main__":
    main()
