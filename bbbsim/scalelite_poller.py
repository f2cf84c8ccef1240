"""Scalelite's poller as the backtest models it: when a poll fails, how long a round takes.

What Scalelite does (blindsidenetworks/scalelite at v1.8.5):

- ``lib/tasks/poll.rake``:12-23: a round, then ``sleep(POLL_INTERVAL)``; so rounds start
  every POLL_INTERVAL plus the round's own duration.
- poll.rake:207-208: a round runs ``poll:servers``, ``poll:meetings`` and ``poll:versions``
  side by side, each on a pool of ``POLLER_THREADS - 1`` threads (poll.rake:34, 145, 182):
  one getMeetings per server (line 38), one getMeetingInfo per meeting Scalelite knows
  (line 150), one call to the API root per server (line 186).
- poll.rake:131-137: each task waits POLLER_WAIT_TIMEOUT for its calls, shuts its pool
  down (queued calls still run) and kills it 5 s later; concurrent-ruby's
  ``RubyThreadPoolExecutor#ns_kill_execution`` kills the worker threads, so a call cut off
  counts neither as an answer nor as a failure.
- ``app/controllers/concerns/api_helper.rb``:205-221: every call opens its own connection
  (CONNECT_TIMEOUT, 5 s) and waits RESPONSE_TIMEOUT for the answer (``config/
  application.rb``:68-72); any error or a missing answer is a failed poll (poll.rake:87).

The model:

- **A poll's failure.** A host's answer time grows with its CPU (its demand, capped at
  100 %) above 80 % (``quiet_cpu``): exponentially distributed with a mean of
  ``answer_time_at_full * ((cpu - 0.8) / 0.2) ** 2``, 10 s at 100 %, 2.5 s at 90 %. A
  poll fails when no answer comes within RESPONSE_TIMEOUT T: with probability
  ``exp(-T / mean)``; never at or under 80 % CPU. A saturated host so fails 37 % of the
  polls of Scalelite's stock T (10 s) and 14 % of the chart's (20 s); at 95 % CPU 17 % and
  3 %; at 90 % 2 % and 0.03 %. The mean at 100 % is a backtest option
  (``--answer-time-at-full``): no measurement of BBB under overload backs it, it states
  the issue's premise that an overloaded host answers slowly.
- **A round's duration.** Each task's calls are shared by its workers as a fluid: the task
  takes ``max(sum of its calls / workers, its longest call)``; an answered call takes S, a
  failed poll holds its worker for T. The round is its longest task, at most
  ``POLLER_WAIT_TIMEOUT + 5`` s; a server whose place in ``poll:servers`` (the servers in
  the order Scalelite lists them) would end after that is not polled in that round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

KILL_GRACE_S: Final = 5.0
"""poll.rake:137: ``pool.wait_for_termination(5) || pool.kill``."""


@dataclass(frozen=True, slots=True)
class PollerSpec:
    """Scalelite's poller settings, by their environment names, and one call's time.

    The defaults are what helm/scalelite sets (values.yaml, ``env`` and ``poller``);
    Scalelite's own defaults are in each field's note.
    """

    interval: float = 20.0
    """POLL_INTERVAL (Scalelite: 60)."""
    threads: int = 26
    """POLLER_THREADS (Scalelite: 5); each task runs on threads - 1 workers."""
    wait_timeout: float = 20.0
    """POLLER_WAIT_TIMEOUT (Scalelite: 10)."""
    response_timeout: float = 20.0
    """RESPONSE_TIMEOUT (Scalelite: 10)."""
    unhealthy_threshold: int = 5
    """SERVER_UNHEALTHY_THRESHOLD (Scalelite: 2): failed polls in a row before offline."""
    healthy_threshold: int = 1
    """SERVER_HEALTHY_THRESHOLD (Scalelite: 1): good polls in a row before online again."""
    call_time: float = 0.1
    """One BBB API call to an idle host, connection and TLS set-up included."""
    quiet_cpu: float = 0.80
    """At or under this CPU a poll never fails."""
    answer_time_at_full: float = 10.0
    """Mean seconds a host at 100 % CPU takes to answer a poll (an exponential tail)."""

    def __post_init__(self) -> None:
        if self.threads < 2:
            raise ValueError("POLLER_THREADS must be at least 2 (the pool has threads - 1)")
        if min(self.interval, self.wait_timeout, self.response_timeout, self.call_time) <= 0:
            raise ValueError("poller times must be > 0")
        if self.unhealthy_threshold < 1 or self.healthy_threshold < 1:
            raise ValueError("thresholds must be >= 1")

    @property
    def workers(self) -> int:
        return self.threads - 1

    @property
    def cutoff(self) -> float:
        """Seconds after which a round's unfinished calls are killed."""
        return self.wait_timeout + KILL_GRACE_S


def answer_time(cpu: float, spec: PollerSpec) -> float:
    """Mean seconds a host at CPU ``cpu`` takes to answer a poll beyond a quiet host's."""
    load = (min(1.0, cpu) - spec.quiet_cpu) / (1.0 - spec.quiet_cpu)
    return spec.answer_time_at_full * load * load if load > 0 else 0.0


def failure_probability(cpu: float, spec: PollerSpec) -> float:
    """The chance that a poll of a host at CPU ``cpu`` (its demand, capped at 1) gets no
    answer within RESPONSE_TIMEOUT."""
    mean = answer_time(cpu, spec)
    return math.exp(-spec.response_timeout / mean) if mean > 0 else 0.0


def round_duration(
    server_work: float, meeting_work: float, version_work: float, longest: float, spec: PollerSpec
) -> float:
    """A round's seconds from its tasks' summed call times and its longest call."""
    busiest = max(server_work, meeting_work, version_work) / spec.workers
    return min(spec.cutoff, max(busiest, longest))


def healthy_round(servers: int, meetings: int, spec: PollerSpec) -> float:
    """A round over ``servers`` hosts that all answer, holding ``meetings`` meetings."""
    s = spec.call_time
    return round_duration(servers * s, meetings * s, servers * s, s if servers else 0.0, spec)
