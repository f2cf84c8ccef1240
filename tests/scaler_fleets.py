"""Fleet snapshots and histories for the tests of bbbscaler's pure core (policy, schedule)."""

from __future__ import annotations

import os

import pytest

from bbbscaler.model import FleetSnapshot, Group, Node, NodeMetrics, ServerState, ServerView
from bbbscaler.policy import History, Sample

T0 = 1_767_225_600.0
"""2026-01-01 00:00:00 UTC, a Thursday."""


def serving(
    iid: str,
    cpu: float = 0.3,
    meetings: int | None = 1,
    participants: int | None = None,
    age: float = 5.0,
    state: ServerState = "enabled",
    multiplier: float = 1.0,
) -> Node:
    """An InService node with metrics; Scalelite's load is its meeting count (``multiplier``:
    the load_multiplier Scalelite has for it). Protected from scale-in unless it is known
    to be empty, as bbbnode keeps it."""
    if participants is None and meetings is not None:
        participants = 4 * meetings
    return Node(
        iid,
        "InService",
        protected=meetings != 0,
        launched_at=T0 - 3600,
        metrics=NodeMetrics(cpu, meetings, participants, age),
        server=ServerView(iid, state, float(meetings or 0), True, multiplier),
    )


def draining(
    iid: str,
    meetings: int = 0,
    state: ServerState = "cordoned",
    load: float | None = 0.0,
    age: float = 5.0,
    cpu: float = 0.02,
    multiplier: float = 1.0,
) -> Node:
    """A node the scaler has been draining for ten minutes."""
    return Node(
        iid,
        "InService",
        protected=meetings > 0,
        launched_at=T0 - 3600,
        draining_since=T0 - 600,
        metrics=NodeMetrics(cpu, meetings, 3 * meetings, age),
        server=ServerView(iid, state, load, True, multiplier),
    )


def booting(iid: str, lifecycle: str = "InService", since: float = 60.0) -> Node:
    """Launched ``since`` seconds ago, no metrics yet, not in Scalelite yet."""
    return Node(
        iid, lifecycle, launched_at=T0 - since, server=ServerView(iid, "absent", None, False)
    )


def snapshot(
    *nodes: Node,
    desired: int | None = None,
    min_size: int = 0,
    max_size: int = 20,
    scalelite_ok: bool = True,
    at: float = T0,
) -> FleetSnapshot:
    """The group in step with its nodes unless ``desired`` says otherwise."""
    want = sum(not n.leaving for n in nodes) if desired is None else desired
    group = Group("bbb", want, min_size, max_size, frozenset({"AZRebalance"}))
    return FleetSnapshot(at, group, nodes, scalelite_ok=scalelite_ok)


def held(
    signal: str,
    seconds: float,
    now: float = T0,
    step: float = 10.0,
    demand: float | None = None,
    last_change_at: float | None = None,
    last_growth_at: float | None = None,
) -> History:
    """A history in which ``signal`` held in every round of the last ``seconds``."""
    count = int(seconds // step)
    samples = tuple(
        Sample(now - k * step, frozenset({signal}), demand) for k in range(count, 0, -1)
    )
    return History(samples, last_change_at, last_growth_at)


def required_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment with only bbbscaler's required keys set."""
    for key in list(os.environ):
        if key.startswith("BBBSCALER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BBBSCALER_AWS__ASG_NAME", "bbb")
    monkeypatch.setenv("BBBSCALER_SCALELITE__URL", "https://sl.example.org")
    monkeypatch.setenv("BBBSCALER_SCALELITE__DOMAIN", "bbb.example.org")
    monkeypatch.setenv("BBBSCALER_SCALELITE__SECRET", "lb-secret")
