"""The way in (bbbnode/launch.py): every warm pool transition, a restart in each, and the
property that a host headed for the warm pool never publishes itself.

``World`` plays IMDS and Auto Scaling as AWS documents them ("Use lifecycle hooks with a
warm pool", "Retrieve the target lifecycle state through instance metadata", EC2 Auto
Scaling User Guide): the target lifecycle state, the instance's LifecycleState, a launch
action that exists only in ``Pending:Wait`` / ``Warmed:Pending:Wait`` and answers "No
active Lifecycle Action" before it as after it. A restart is a new :class:`Launch` over
the same world, from nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bbbnode.launch import (
    PUBLISHING,
    SETTLED,
    Act,
    Launch,
    LaunchActionGone,
    LaunchState,
    Observation,
    Phase,
    joins,
    record,
    step,
    warmed,
)

WAIT_INTO_POOL = "Warmed:Pending:Wait"
WAIT_INTO_SERVICE = "Pending:Wait"


@dataclass
class World:
    target: str | None = "Warmed:Stopped"
    asg: str | None = "Warmed:Pending"
    fail: set[str] = field(default_factory=set)
    calls: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    """(call, target then, ASG state then)."""

    def _call(self, name: str) -> None:
        self.calls.append((name, self.target, self.asg))
        if name in self.fail:
            raise RuntimeError(f"{name} failed")

    async def target_state(self) -> str | None:
        if "target" in self.fail:
            raise RuntimeError("IMDS unreachable")
        return self.target

    async def asg_state(self) -> str | None:
        if "asg" in self.fail:
            raise RuntimeError("throttled")
        return self.asg

    async def warm_up(self) -> None:
        self._call("warm_up")

    async def clean_up(self) -> None:
        self._call("clean_up")

    async def join(self) -> None:
        self._call("join")

    async def register(self) -> None:
        self._call("register")

    async def complete(self) -> None:
        self._call("complete")
        if self.asg == WAIT_INTO_POOL:
            self.asg = "Warmed:Pending:Proceed"
        elif self.asg == WAIT_INTO_SERVICE:
            self.asg = "Pending:Proceed"
        else:
            raise LaunchActionGone("No active Lifecycle Action found")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


async def _no_sleep(_: float) -> None:
    return None


def launch(world: World, hooked: bool = True) -> Launch:
    return Launch(world, hooked=hooked, poll_interval=1.0, sleep=_no_sleep)


def rounds(runner: Launch, count: int) -> LaunchState:
    state = runner.state
    for _ in range(count):
        state = asyncio.run(runner.round())
    return state


# ------------------------------------------------------------------ into the pool


def test_warm_up_then_the_hook_then_settle_in_the_pool() -> None:
    world = World()
    runner = launch(world)
    # Warmed:Pending: the warm-up runs, but there is no action to complete yet.
    assert rounds(runner, 2).phase is Phase.WARMED
    assert world.names() == ["warm_up"]
    world.asg = WAIT_INTO_POOL
    assert rounds(runner, 1).phase is Phase.WARMED
    assert world.names() == ["warm_up", "complete"]
    # Completed: AWS goes on to stop it; the next describe shows the wait over.
    assert rounds(runner, 1).phase is Phase.IN_POOL
    world.asg = "Warmed:Stopped"
    assert rounds(runner, 3).phase is Phase.IN_POOL
    assert world.names() == ["warm_up", "complete"]


@pytest.mark.parametrize("asg", ["Warmed:Pending", WAIT_INTO_POOL, "Warmed:Stopped"])
def test_a_restart_in_the_pool_resumes(asg: str) -> None:
    world = World(asg=asg)
    first = launch(world)
    rounds(first, 1)
    # Restarted: the warm-up again (idempotent), the hook only if it still waits.
    world.calls.clear()
    again = launch(world)
    state = rounds(again, 3)
    if asg == "Warmed:Pending":
        assert state.phase is Phase.WARMED
        assert world.names() == ["warm_up"]
    elif asg == WAIT_INTO_POOL:
        assert state.phase is Phase.IN_POOL
        assert world.names() == ["warm_up", "complete"]
    else:
        assert state.phase is Phase.IN_POOL
        assert world.names() == ["warm_up"]


def test_the_hook_is_never_taken_for_done_before_the_wait() -> None:
    world = World(asg="Warmed:Pending")
    runner = launch(world)
    rounds(runner, 5)
    assert "complete" not in world.names()
    world.asg = None  # a describe that does not list it yet
    assert rounds(runner, 2).phase is Phase.WARMED


def test_a_failed_warm_up_raises_and_a_restart_does_it_again() -> None:
    world = World(fail={"warm_up"})
    with pytest.raises(RuntimeError, match="warm_up failed"):
        rounds(launch(world), 1)
    world.fail.clear()
    assert rounds(launch(world), 1).phase is Phase.WARMED


def test_an_unreadable_target_changes_nothing() -> None:
    world = World(fail={"target"})
    runner = launch(world)
    assert rounds(runner, 3).phase is Phase.STARTING
    assert world.calls == []


def test_hibernated_or_running_pool_states_warm_up_the_same() -> None:
    for target in ("Warmed:Hibernated", "Warmed:Running"):
        world = World(target=target, asg=WAIT_INTO_POOL)
        assert rounds(launch(world), 3).phase is Phase.IN_POOL
        assert world.names() == ["warm_up", "complete"]


# ------------------------------------------------------------------ out of the pool


def test_started_from_the_pool_joins_with_the_hook_then_registers() -> None:
    # A stopped host boots anew: bbbnode starts with target InService, in Pending.
    world = World(target="InService", asg="Pending")
    runner = launch(world)
    assert rounds(runner, 3).phase is Phase.JOINED
    assert world.names() == ["join"]
    world.asg = WAIT_INTO_SERVICE
    assert rounds(runner, 1).phase is Phase.JOINED
    assert world.names() == ["join", "complete"]
    state = rounds(runner, 1)
    assert state.phase is Phase.SERVING
    assert world.names() == ["join", "complete", "register"]


@pytest.mark.parametrize("asg", ["Pending", WAIT_INTO_SERVICE, "Pending:Proceed", "InService"])
def test_a_restart_on_the_way_into_service_resumes(asg: str) -> None:
    world = World(target="InService", asg=asg)
    state = rounds(launch(world), 4)
    if asg == "Pending":
        assert state.phase is Phase.JOINED
        assert world.names() == ["join"]
    elif asg == WAIT_INTO_SERVICE:
        assert state.phase is Phase.SERVING
        assert world.names() == ["join", "complete", "register"]
    else:
        assert state.phase is Phase.SERVING
        assert world.names() == ["join", "register"]


def test_a_pool_kept_running_joins_in_the_same_process() -> None:
    world = World(target="Warmed:Running", asg=WAIT_INTO_POOL)
    runner = launch(world)
    assert rounds(runner, 3).phase is Phase.IN_POOL
    world.target, world.asg = "InService", WAIT_INTO_SERVICE
    assert asyncio.run(runner.until(frozenset({Phase.SERVING}))).phase is Phase.SERVING
    assert world.names() == ["warm_up", "complete", "join", "complete", "register"]


def test_without_a_launch_hook_nothing_waits() -> None:
    world = World(target="InService", asg=None, fail={"asg"})
    state = asyncio.run(launch(world, hooked=False).until(SETTLED))
    assert state.phase is Phase.SERVING
    assert world.names() == ["join", "register"]
    # Older instances have no target in IMDS at all: they serve.
    world = World(target=None, asg=None)
    assert asyncio.run(launch(world, hooked=False).until(SETTLED)).phase is Phase.SERVING


def test_a_launching_instance_the_group_ends_still_joins_to_drain() -> None:
    # Scaled in while Pending:Wait: the drain (not the launch) takes it from here.
    world = World(target="Terminated", asg="Terminating:Wait")
    state = rounds(launch(world), 3)
    assert state.phase is Phase.SERVING
    assert world.names() == ["join", "register"]


# ------------------------------------------------------------------ leaving the pool


@pytest.mark.parametrize("before", [0, 1, 3])
def test_terminated_from_the_pool_cleans_up_without_a_drain(before: int) -> None:
    world = World(asg=WAIT_INTO_POOL)
    runner = launch(world)
    rounds(runner, before)
    world.target, world.asg = "Warmed:Terminated", "Warmed:Terminating:Wait"
    assert rounds(runner, 2).phase is Phase.LEFT_POOL
    assert world.names().count("clean_up") == 1
    assert "join" not in world.names()
    # Restarted while leaving: the clean-up again, nothing else.
    world.calls.clear()
    assert rounds(launch(world), 2).phase is Phase.LEFT_POOL
    assert world.names() == ["clean_up"]


# ------------------------------------------------------------------ the pure core


def test_step_table() -> None:
    def acts(phase: Phase, target: str | None, asg: str | None = None) -> tuple[Act, ...]:
        return step(LaunchState(phase), Observation(target, asg))[1]

    assert acts(Phase.STARTING, "Warmed:Stopped") == (Act.WARM_UP,)
    assert acts(Phase.WARMED, "Warmed:Stopped", WAIT_INTO_POOL) == (Act.COMPLETE,)
    assert acts(Phase.IN_POOL, "Warmed:Stopped") == ()
    assert acts(Phase.IN_POOL, "InService") == (Act.JOIN,)
    assert acts(Phase.JOINED, "InService", WAIT_INTO_SERVICE) == (Act.COMPLETE,)
    assert acts(Phase.JOINED, "InService", "InService") == (Act.REGISTER,)
    assert acts(Phase.IN_POOL, "Warmed:Terminated") == (Act.CLEAN_UP,)
    assert acts(Phase.SERVING, "Warmed:Stopped") == ()
    assert record(LaunchState(Phase.WARMING), Act.WARM_UP, ok=False).phase is Phase.WARMING
    assert record(LaunchState(Phase.JOINED), Act.COMPLETE, ok=True).phase is Phase.JOINED
    assert warmed("Warmed:Pending")
    assert not warmed("Warmed:Terminated")
    assert joins(None)
    assert joins("Terminated")
    assert not joins("Warmed:Terminated")


# ------------------------------------------------------------------ the property

TARGETS = (
    None,
    "InService",
    "Terminated",
    "Warmed:Stopped",
    "Warmed:Running",
    "Warmed:Hibernated",
    "Warmed:Terminated",
)
ASG_STATES = (
    None,
    "Pending",
    WAIT_INTO_SERVICE,
    "Pending:Proceed",
    "InService",
    "Warmed:Pending",
    WAIT_INTO_POOL,
    "Warmed:Pending:Proceed",
    "Warmed:Stopped",
    "Warmed:Terminating",
    "Warmed:Terminating:Wait",
    "Terminating:Wait",
)
FAILABLE = ("target", "asg", "warm_up", "clean_up", "join", "complete", "register")


class WayIn(RuleBasedStateMachine):
    """Any order of target states, ASG states, failures and restarts: whatever AWS does."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.runner = launch(self.world)

    @rule(value=st.sampled_from(TARGETS))
    def target_moves(self, value: str | None) -> None:
        self.world.target = value

    @rule(asg=st.sampled_from(ASG_STATES))
    def asg_moves(self, asg: str | None) -> None:
        self.world.asg = asg

    @rule(what=st.sampled_from(FAILABLE), on=st.booleans())
    def failures(self, what: str, on: bool) -> None:
        if on:
            self.world.fail.add(what)
        else:
            self.world.fail.discard(what)

    @rule()
    def a_round(self) -> None:
        try:
            asyncio.run(self.runner.round())
        except RuntimeError:
            # A failed start-up step ends the process; systemd starts it again.
            self.runner = launch(self.world)

    @rule()
    def restart(self) -> None:
        self.runner = launch(self.world)

    @invariant()
    def never_published_while_headed_for_the_pool(self) -> None:
        for name, target, _ in self.world.calls:
            if name in PUBLISHING:
                assert not warmed(target), f"{name} while the target was {target}"
                assert target != "Warmed:Terminated", f"{name} while leaving the pool"

    @invariant()
    def the_launch_action_only_while_it_waits(self) -> None:
        for name, _, asg in self.world.calls:
            if name == Act.COMPLETE:
                assert asg in (WAIT_INTO_POOL, WAIT_INTO_SERVICE), f"completed in {asg}"

    @invariant()
    def clean_up_only_when_leaving_the_pool(self) -> None:
        for name, target, _ in self.world.calls:
            if name == Act.CLEAN_UP:
                assert target == "Warmed:Terminated"


TestWayIn = WayIn.TestCase
TestWayIn.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


@given(st.lists(st.sampled_from(TARGETS), min_size=1, max_size=12))
def test_no_target_sequence_publishes_a_warming_host(targets: list[str | None]) -> None:
    world = World()
    runner = launch(world)
    for target in targets:
        world.target = target
        world.asg = WAIT_INTO_POOL if warmed(target) else WAIT_INTO_SERVICE
        asyncio.run(runner.round())
    published = [c for c in world.calls if c[0] in PUBLISHING]
    assert all(joins(target) for _, target, _ in published)
