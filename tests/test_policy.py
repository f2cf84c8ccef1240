"""decide() by example, for both presets: sizing, undrain, drains, terminations, holds, bounds."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bbbcore.config import load_settings
from bbbscaler.model import (
    Action,
    Decision,
    FleetSnapshot,
    Node,
    NodeMetrics,
    ServerState,
    ServerView,
    WindowMiss,
)
from bbbscaler.policy import IN, OUT, History, PolicyConfig, Sample, decide, drained
from bbbscaler.schedule import Window
from bbbscaler.settings import ScalerSettings
from tests.scaler_fleets import (
    T0,
    booting,
    draining,
    held,
    required_settings,
    serving,
    snapshot,
)

PRESET = PolicyConfig.preset_values("default")
# The examples' arithmetic is written for round numbers (70 % target, steer from 50 %);
# the preset's own values are checked on their own.
DEFAULT = dataclasses.replace(PRESET, target_cpu=0.70, steer_cpu=0.50)
SEED = PolicyConfig.preset_values("seed")


def run(
    snap: FleetSnapshot, history: History | None = None, config: PolicyConfig = DEFAULT
) -> Decision:
    return decide(snap, history or History(), None, config, snap.at)


def busy(count: int, cpu: float, prefix: str = "i") -> list[Node]:
    return [serving(f"{prefix}-{k}", cpu=cpu) for k in range(count)]


# --- default: scale-out sizing ------------------------------------------------------------


def rising(then: float, ago: float = 300.0) -> History:
    """A history whose only demand sample is ``then`` nodes, ``ago`` seconds back."""
    return History((Sample(T0 - ago, frozenset(), then),))


def test_default_grows_by_room_not_by_mean() -> None:
    # Four nodes at 0.9: no room below the 70 % target, 0.15 headroom short: ceil(0.15 / 0.7)
    # = 1 node more. The mean would have wanted ceil((3.6 + 0.15) / 0.7) = 6.
    d = run(snapshot(*busy(4, 0.9)))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 5)
    assert (d.numbers["room"], d.numbers["need"], d.numbers["keep"]) == (0.0, 5, 6)
    assert OUT in d.signals
    # Room below the target on any node covers the headroom: no growth, whatever the mean.
    d = run(snapshot(*busy(3, 0.9), serving("cool", cpu=0.5)))
    assert d.numbers["room"] == pytest.approx(0.2)
    assert (d.action, d.desired) == (Action.NONE, None)
    assert OUT not in d.signals
    # 0.1 room: 0.05 short, still one whole node more.
    d = run(snapshot(*busy(3, 0.9), serving("warm", cpu=0.6)))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 5)


def test_default_steps_several_nodes_at_once() -> None:
    # Four nodes at 0.9 (demand 3.6), 1.6 five minutes ago: 2.0 nodes of growth over the
    # 300 s lookahead. No room: 0.15 + 2.0 short, ceil(2.15 / 0.7) = 4 more, 8 in all.
    d = run(snapshot(*busy(4, 0.9)), rising(1.6))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 8)
    assert d.numbers["need"] == 8
    assert d.numbers["projected"] == pytest.approx(5.6)


def test_default_counts_booting_nodes_and_pending_launches_as_room() -> None:
    # A booting node, or a launch the ASG has not made yet, is 0.7 of room: the one more.
    for nodes, desired in (([booting("b-1", "Pending")], None), ([booting("b-1")], None), ([], 5)):
        d = run(snapshot(*busy(4, 0.9), *nodes, desired=desired))
        assert (d.action, d.desired) == (Action.NONE, None), nodes
        assert d.numbers["capacity"] == 5
        assert d.numbers["room"] == pytest.approx(0.7)
    # With 2.0 nodes of growth 8 are wanted (above): each booting or pending node is one of
    # them. 4 + 1 booting + 1 pending: 2.15 - 1.4 = 0.75 short, 2 more, 8 again.
    nodes = [*busy(4, 0.9), booting("b-1")]
    d = run(snapshot(*nodes, desired=6), rising(1.6))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 8)
    # 4 + 2 booting + 2 pending: 2.8 room, nothing short.
    nodes = [*busy(4, 0.9), booting("b-1"), booting("b-2", "Pending")]
    d = run(snapshot(*nodes, desired=8), rising(1.6))
    assert (d.action, d.desired, d.numbers["need"]) == (Action.NONE, None, 8)


def test_default_full_nodes_grow_once() -> None:
    # Three nodes at the target: no room, the headroom short, one node more.
    d = run(snapshot(*busy(3, 0.7)))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 4)
    # That node is booting, or pending: it is the one more, no second launch.
    assert run(snapshot(*busy(3, 0.7), booting("b-1"))).action is Action.NONE
    assert run(snapshot(*busy(3, 0.7), desired=4)).action is Action.NONE
    # Without headroom, nodes at the target need nothing more.
    config = dataclasses.replace(DEFAULT, headroom=0.0)
    assert run(snapshot(*busy(3, 0.7)), config=config).action is Action.NONE


def test_default_projects_the_trend_over_the_lookahead() -> None:
    snap = snapshot(*busy(6, 0.5))  # 6 x 0.2 = 1.2 room covers the 0.15 headroom: steady
    assert run(snap).action is Action.NONE
    # Demand 3.0, 1.0 300 s ago: 2.0 nodes over the 300 s lookahead. 2.15 - 1.2 = 0.95
    # short: ceil(0.95 / 0.7) = 2 more.
    d = run(snap, rising(1.0))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 8)
    assert d.numbers["trend_per_s"] == pytest.approx(2 / 300, abs=1e-6)
    # The lookahead, not the boot time: 150 s ahead is 1.0 of growth, covered by the room.
    short_sight = dataclasses.replace(DEFAULT, lookahead=150.0)
    assert run(snap, rising(1.0), short_sight).action is Action.NONE
    # Falling demand is no reason to project anything.
    falling = History((Sample(T0 - 300, frozenset(), 4.0),))
    assert run(snap, falling).numbers["trend_per_s"] == 0.0


def test_default_takes_no_trend_from_a_base_shorter_than_half_the_window() -> None:
    # Just after a start: one sample a minute old. A jump of one node over 60 s would
    # project 5 nodes of growth over the lookahead; the policy waits for half a window of
    # history instead.
    young = rising(2.0, ago=60)
    d = run(snapshot(*busy(6, 0.5)), young)
    assert d.numbers["trend_per_s"] == 0.0
    assert d.action is Action.NONE
    old_enough = rising(2.0, ago=150)
    assert run(snapshot(*busy(6, 0.5)), old_enough).numbers["trend_per_s"] > 0


def exam(start_min: int, end_min: int, min_nodes: int = 2) -> PolicyConfig:
    """DEFAULT with a daily window (T0 is 00:00 UTC)."""
    window = Window("exam", frozenset(range(7)), start_min, end_min, "UTC", min_nodes)
    return dataclasses.replace(DEFAULT, windows=(window,))


def test_default_takes_no_trend_inside_a_planned_window() -> None:
    snap = snapshot(*busy(6, 0.5))
    # Outside any window the steep rise (2.0 nodes in 300 s) grows the fleet by two.
    later = run(snap, rising(1.0), exam(60, 120))
    assert (later.action, later.desired) == (Action.SCALE_OUT, 8)
    # Inside the window the rise is the planned crowd: no trend, the room covers the headroom.
    for config in (exam(0, 60), exam(2, 60)):  # open now; opening within boot_time (180 s)
        d = run(snap, rising(1.0), config)
        assert d.numbers["trend_per_s"] == 0.0
        assert d.numbers["projected"] == pytest.approx(3.0)
        assert (d.action, d.desired) == (Action.NONE, None)
        assert "schedule 'exam' holds 2" in d.reason
    # The window's own lower bound still grows the fleet.
    d = run(snap, rising(1.0), exam(0, 60, min_nodes=9))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 9)
    assert d.numbers["trend_per_s"] == 0.0


def test_unseen_serving_nodes_count_at_the_mean_of_the_seen() -> None:
    blind = Node(
        "x-1", "InService", launched_at=T0 - 3600, server=ServerView("x-1", "enabled", 1.0, True)
    )
    # Room: the unseen node at the seen nodes' mean, none here (not 0.7 as if empty):
    # 0.15 short, one more. Scale-out runs although the blind node blocks any scale-in.
    d = run(snapshot(*busy(4, 0.9), blind))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 6)
    assert d.numbers["demand"] == pytest.approx(4.5)
    assert d.demand is None  # an imputed demand is no base for a later trend
    # Two nodes at 0.64: 0.12 room, one more. The unseen one adds the mean room 0.06 (not
    # none, as if full): 0.18 covers the headroom.
    assert run(snapshot(*busy(2, 0.64))).desired == 3
    d = run(snapshot(*busy(2, 0.64), blind))
    assert d.numbers["room"] == pytest.approx(0.18)
    assert (d.action, d.desired) == (Action.NONE, None)


def test_a_metrics_outage_does_not_grow_the_fleet() -> None:
    # Every serving node enabled in Scalelite and unseen: nothing to size on.
    nodes = [
        Node(
            f"x-{k}",
            "InService",
            launched_at=T0 - 3600,
            server=ServerView(f"x-{k}", "enabled", 1, True),
        )
        for k in range(5)
    ]
    d = run(snapshot(*nodes))
    assert d.desired is None
    assert not d.signals
    # The bounds still hold.
    assert run(snapshot(*nodes, min_size=7)).desired == 7


# --- undrain before launch ----------------------------------------------------------------


# Four nodes at 0.9 with 1.5 nodes of headroom: ceil(1.5 / 0.7) = 3 more, 7 wanted.
HUNGRY = dataclasses.replace(DEFAULT, headroom=1.5)


def test_draining_nodes_are_re_enabled_before_launching() -> None:
    nodes = [*busy(4, 0.9), draining("d-1", meetings=2, load=2.0), draining("d-2")]
    d = run(snapshot(*nodes), config=HUNGRY)
    # 7 wanted, 4 serving: both draining nodes (emptiest first) and one new instance.
    assert d.action is Action.SCALE_OUT
    assert d.undrain == ("d-2", "d-1")
    assert d.desired == 7  # 6 members + 1
    assert d.terminate == ()


def test_undrain_alone_when_that_is_enough() -> None:
    # No room on four nodes at 0.9: 5 wanted, 4 serving: one node, the emptiest draining.
    nodes = [*busy(4, 0.9), draining("d-1", meetings=2, load=2.0), draining("d-2")]
    d = run(snapshot(*nodes))
    assert (d.action, d.undrain, d.desired) == (Action.UNDRAIN, ("d-2",), None)


def test_undrain_at_the_upper_bound() -> None:
    nodes = [*busy(4, 0.9), draining("d-1")]
    d = run(snapshot(*nodes, max_size=5))
    assert (d.action, d.undrain, d.desired) == (Action.UNDRAIN, ("d-1",), None)


# --- drain selection ----------------------------------------------------------------------


def quiet_fleet() -> list[Node]:
    """Six nodes, 0.85 nodes of demand: ceil((0.85 + 0.15) / 0.7) = 2 carry it; "b" is idle."""
    return [
        serving("a", cpu=0.10, meetings=2),
        serving("b", cpu=0.05, meetings=0),
        serving("c", cpu=0.20, meetings=1),
        serving("d", cpu=0.10, meetings=1, participants=2),
        serving("e", cpu=0.10, meetings=1, participants=8),
        serving("f", cpu=0.30, meetings=3),
    ]


def test_default_drains_the_least_loaded_within_the_budget() -> None:
    d = run(snapshot(*quiet_fleet()), held(IN, 600))
    assert d.numbers["keep"] == 2
    # Fewest meetings, then participants, then CPU: the idle "b" outside the budget, then
    # max_draining 2 busy ones (4 surplus nodes would allow 3).
    assert (d.action, d.drain) == (Action.DRAIN, ("b", "d", "c"))
    assert d.desired is None


def test_default_waits_for_the_stabilisation_window() -> None:
    d = run(snapshot(*quiet_fleet()), held(IN, 590))
    assert IN in d.signals
    assert (d.action, d.drain) == (Action.NONE, ())


def test_drains_already_running_use_up_the_budget() -> None:
    nodes = [*quiet_fleet(), draining("x", meetings=1, load=1.0)]
    assert run(snapshot(*nodes), held(IN, 600)).drain == ("b", "d")
    nodes.append(draining("y", meetings=1, load=1.0))
    # The budget is spent: the idle node still goes, no busy one.
    d = run(snapshot(*nodes), held(IN, 600))
    assert (d.action, d.drain) == (Action.DRAIN, ("b",))
    # Without an idle node nothing goes.
    nodes[1] = serving("b", cpu=0.05, meetings=1)
    d = run(snapshot(*nodes), held(IN, 600))
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert "2 node(s) already draining" in d.reason
    # An idle draining node (empty, Scalelite not caught up yet) uses none of the budget.
    nodes[-1] = draining("y", load=1.0)
    assert run(snapshot(*nodes), held(IN, 600)).drain == ("d",)


def test_default_idle_nodes_drain_beyond_the_budget() -> None:
    # Eight nodes, two busy at 0.3 and six idle: keep ceil((0.6 + 6 x 0.02 + 0.15) / 0.7) = 2.
    nodes = [
        serving("busy-1", cpu=0.3, meetings=2),
        serving("busy-2", cpu=0.3, meetings=3),
        *(serving(f"idle-{k}", cpu=0.02, meetings=0) for k in range(6)),
    ]
    d = run(snapshot(*nodes), held(IN, 600))
    assert d.numbers["keep"] == 2
    # All six idle nodes in one round, far beyond max_draining 2: nothing to wait for.
    assert d.drain == tuple(f"idle-{k}" for k in range(6))
    # Busy drains already spend the budget: the idle nodes still go.
    spent = [*nodes, draining("x", meetings=1, load=1.0), draining("y", meetings=1, load=1.0)]
    assert run(snapshot(*spent), held(IN, 600)).drain == tuple(f"idle-{k}" for k in range(6))
    # The surplus bounds the idle drains too, the lowest-CPU idle nodes first; no busy one.
    nodes[2] = serving("idle-0", cpu=0.04, meetings=0)
    config = dataclasses.replace(DEFAULT, min_nodes=5)
    assert run(snapshot(*nodes), held(IN, 600), config).drain == ("idle-1", "idle-2", "idle-3")
    # seed: the budget counts every drain, idle or not: one at a time.
    assert run(snapshot(*nodes), held(IN, 900), SEED).drain == ("idle-1",)
    idle_draining = draining("z", load=1.0)
    assert run(snapshot(*nodes, idle_draining), held(IN, 900), SEED).drain == ()
    default = run(snapshot(*nodes, idle_draining), held(IN, 600)).drain
    assert default == (*(f"idle-{k}" for k in range(1, 6)), "idle-0")


def test_default_shrinks_by_the_mean() -> None:
    # Room on every node is no reason to shrink: 3 x 0.45 still needs all three at 70 %.
    d = run(steady())
    assert d.numbers["room"] == pytest.approx(0.75)
    assert (d.numbers["need"], d.numbers["keep"]) == (3, 3)
    assert d.signals == frozenset()
    # Four nodes at 0.3: ceil((1.2 + 0.15) / 0.7) = 2 keep, the in-signal holds.
    d = run(snapshot(*busy(4, 0.3)))
    assert (d.numbers["need"], d.numbers["keep"]) == (4, 2)
    assert d.signals == frozenset({IN})
    # The same four with 1.0 node of growth ahead: ceil(2.35 / 0.7) = 4, no in-signal.
    d = run(snapshot(*busy(4, 0.3)), rising(0.2))
    assert d.numbers["keep"] == 4
    assert d.signals == frozenset()
    # A node without metrics: no in-signal, whatever the rest says.
    blind = dataclasses.replace(serving("x", cpu=0.3), metrics=None)
    assert run(snapshot(*busy(4, 0.3), blind)).signals == frozenset()


def test_default_drains_take_capacity_down_to_keep() -> None:
    # Four busy nodes at 0.3 keep 2: the two least-loaded are drained, within the budget.
    nodes = [serving(f"n-{k}", cpu=0.3, meetings=k + 1) for k in range(4)]
    d = run(snapshot(*nodes), held(IN, 600))
    assert (d.action, d.drain) == (Action.DRAIN, ("n-0", "n-1"))
    # A booting node counts as capacity for keep: three serving and one booting keep 2
    # (ceil((0.9 + 0.15) / 0.7)), two serving nodes go.
    d = run(snapshot(*nodes[:3], booting("b-1")), held(IN, 600))
    assert d.drain == ("n-0", "n-1")
    # Not for the lower bound: with min_nodes 2, two must stay serving.
    config = dataclasses.replace(DEFAULT, min_nodes=2)
    assert run(snapshot(*nodes[:3], booting("b-1")), held(IN, 600), config).drain == ("n-0",)


def test_drains_keep_the_lower_bound() -> None:
    config = dataclasses.replace(DEFAULT, min_nodes=5)
    assert run(snapshot(*quiet_fleet()), held(IN, 600), config).drain == ("b",)
    config = dataclasses.replace(DEFAULT, min_nodes=6)
    d = run(snapshot(*quiet_fleet()), held(IN, 600), config)
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert "lower bound" in d.reason
    # The ASG's MinSize is a lower bound too.
    assert run(snapshot(*quiet_fleet(), min_size=6), held(IN, 600)).drain == ()


def test_booting_nodes_do_not_count_towards_the_lower_bound_of_a_drain() -> None:
    config = dataclasses.replace(DEFAULT, min_nodes=6)
    d = run(snapshot(*quiet_fleet(), booting("n-1")), held(IN, 600), config)
    assert d.drain == ()


def test_drains_only_nodes_scalelite_has_enabled() -> None:
    nodes = quiet_fleet()
    nodes[1] = serving("b", cpu=0.05, meetings=0, state="cordoned")  # an operator's cordon
    nodes[3] = serving("d", cpu=0.10, meetings=1, participants=2, state="absent")
    assert run(snapshot(*nodes), held(IN, 600)).drain == ("c", "e")


def test_scale_in_cooldown_after_growth() -> None:
    history = held(IN, 600, last_change_at=T0 - 100, last_growth_at=T0 - 100)
    d = run(snapshot(*quiet_fleet()), history)
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert "cooldown" in d.reason
    history = held(IN, 600, last_change_at=T0 - 300, last_growth_at=T0 - 300)
    assert run(snapshot(*quiet_fleet()), history).drain == ("b", "d", "c")


def test_default_a_drain_does_not_restart_the_scale_in_cooldown() -> None:
    # The last change was a drain 100 s ago, the last growth long before: the scale-in goes on.
    history = held(IN, 600, last_change_at=T0 - 100, last_growth_at=T0 - 1000)
    assert run(snapshot(*quiet_fleet()), history).drain == ("b", "d", "c")
    just_drained = held(IN, 600, last_change_at=T0 - 10)
    assert run(snapshot(*quiet_fleet()), just_drained).drain == ("b", "d", "c")
    # Recording a drain keeps the last growth: ten seconds later "e" has emptied, and it is
    # drained at once (the two busy drains spent the budget; an idle node needs none).
    first = run(snapshot(*quiet_fleet()), history)
    after = history.record(first, T0, DEFAULT)
    assert (after.last_change_at, after.last_growth_at) == (T0, T0 - 1000)
    nodes = [
        *(n for n in quiet_fleet() if n.instance_id not in ("b", "c", "d", "e")),
        serving("e", cpu=0.02, meetings=0),
        draining("b", load=1.0),
        draining("c", meetings=1, load=1.0),
        draining("d", meetings=1, load=1.0),
    ]
    again = decide(snapshot(*nodes, at=T0 + 10), after, None, DEFAULT, T0 + 10)
    assert (again.action, again.drain) == (Action.DRAIN, ("e",))
    # seed's cooldown counts from that drain.
    seed = dataclasses.replace(SEED, scale_in_after=0.0)
    assert "cooldown" in decide(snapshot(*nodes, at=T0 + 10), after, None, seed, T0 + 10).reason


def test_seed_a_drain_restarts_the_scale_in_cooldown() -> None:
    nodes = [serving(k, cpu=0.02, meetings=0) for k in "abcd"]
    history = held(IN, 900, last_change_at=T0 - 100, last_growth_at=T0 - 1000)
    d = run(snapshot(*nodes), history, SEED)
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert "cooldown" in d.reason
    history = held(IN, 900, last_change_at=T0 - 300, last_growth_at=T0 - 1000)
    assert run(snapshot(*nodes), history, SEED).drain == ("a",)


# --- terminations -------------------------------------------------------------------------


def steady(*extra: Node, desired: int | None = None, min_size: int = 0) -> FleetSnapshot:
    # 3 x 0.45 = 1.35: ceil((1.35 + 0.15) / 0.7) = 3 keep, 0.75 room: exactly the three
    # serving nodes, no signal.
    return snapshot(
        *(serving(f"s-{k}", cpu=0.45) for k in range(3)),
        *extra,
        desired=desired,
        min_size=min_size,
    )


@pytest.mark.parametrize(
    "node",
    [
        draining("d", state="cordoned", load=0.0),
        draining("d", state="disabled", load=None),
        draining("d", state="absent", load=None),
    ],
    ids=["cordoned-load-0", "disabled", "absent"],
)
def test_terminates_a_drained_node(node: Node) -> None:
    d = run(steady(node))
    assert (d.action, d.terminate) == (Action.TERMINATE, ("d",))
    assert d.desired is None


def with_metrics(node: Node, **changes: Any) -> Node:
    assert node.metrics is not None
    return dataclasses.replace(node, metrics=dataclasses.replace(node.metrics, **changes))


@pytest.mark.parametrize(
    "node",
    [
        draining("d", state="cordoned", load=1.0),
        draining("d", state="cordoned", load=None),
        draining("d", state="disabled", load=2.0),
        draining("d", state="enabled", load=0.0),
        draining("d", meetings=1, load=0.0),
        with_metrics(draining("d"), participants=1),
        dataclasses.replace(draining("d"), draining_since=None),
    ],
    ids=[
        "cordoned-with-load",
        "cordoned-load-unknown",
        "disabled-with-load",
        "enabled-again",
        "meeting",
        "participant",
        "operator-cordon-no-tag",
    ],
)
def test_does_not_terminate_a_node_that_is_not_drained(node: Node) -> None:
    d = run(steady(node))
    assert d.terminate == ()
    assert d.action in (Action.NONE, Action.HOLD)


BLIND = [
    with_metrics(serving("x", cpu=0.4), age=61.0),
    with_metrics(serving("x", cpu=0.4), participants=None),
    with_metrics(serving("x", cpu=0.4), meetings=None),
    dataclasses.replace(serving("x", cpu=0.4), metrics=None),
    dataclasses.replace(serving("x", cpu=0.4), server=None),
]
BLIND_IDS = ["stale", "participants-unknown", "meetings-unknown", "no-metrics", "no-server"]


@pytest.mark.parametrize("node", BLIND, ids=BLIND_IDS)
def test_a_node_without_fresh_data_is_never_drained_to_termination(node: Node) -> None:
    draining_blind = dataclasses.replace(node, draining_since=T0 - 600)
    d = run(steady(draining_blind))
    assert d.terminate == ()


@pytest.mark.parametrize("node", BLIND, ids=BLIND_IDS)
def test_a_node_without_fresh_data_holds_every_termination(node: Node) -> None:
    d = run(steady(node, draining("d")))
    assert (d.action, d.terminate) == (Action.HOLD, ())
    assert "no fresh data from 1 node(s) (x)" in d.reason


def test_drained_needs_the_scalers_tag() -> None:
    # The actuator's re-check asks drained() of a node on its own.
    assert drained(draining("d"), DEFAULT)
    assert not drained(dataclasses.replace(draining("d"), draining_since=None), DEFAULT)
    leaving = dataclasses.replace(draining("d"), lifecycle="Terminating:Wait")
    assert not drained(leaving, DEFAULT)


def test_terminations_never_take_desired_below_min_size() -> None:
    # Protection kept one instance more than desired: 5 members, desired 4, MinSize 3.
    snap = steady(draining("d-1"), draining("d-2"), desired=4, min_size=3)
    assert run(snap).terminate == ("d-1",)
    d = run(steady(draining("d-1"), draining("d-2"), desired=3, min_size=3))
    assert d.terminate == ()
    # The drained nodes are unprotected: AWS's own scale-in takes them through the hook.
    assert (d.action, d.desired) == (Action.NONE, None)
    assert "5 instances but desired 3: 2 unprotected; left to AWS" in d.reason
    held = [dataclasses.replace(draining(f"d-{k}"), protected=True) for k in (1, 2)]
    d = run(steady(*held, desired=3, min_size=3))
    assert (d.action, d.desired, d.terminate) == (Action.RECONCILE, 5, ())


def test_terminate_and_drain_in_one_round() -> None:
    d = run(snapshot(*quiet_fleet(), draining("z")), held(IN, 600))
    assert d.action is Action.TERMINATE
    assert d.terminate == ("z",)
    # The drained node is idle: it uses none of the budget (it would under seed's rule).
    assert d.drain == ("b", "d", "c")


# --- missing data and Scalelite -----------------------------------------------------------


def test_stale_data_blocks_scale_in_but_not_scale_out() -> None:
    # Its CPU (the exporter's own) still counts for sizing; its meeting data is too old.
    stale = serving("old", cpu=0.9, meetings=0, age=120.0)
    d = run(snapshot(*quiet_fleet(), stale, draining("z")), held(IN, 600))
    assert (d.action, d.drain, d.terminate) == (Action.HOLD, (), ())
    assert "no fresh data from 1 node(s) (old)" in d.reason
    d = run(snapshot(*busy(4, 0.9), stale, draining("z")), config=HUNGRY)
    assert (d.action, d.desired) == (Action.SCALE_OUT, 8)
    assert d.undrain == ("z",)


def test_booting_nodes_are_not_missing_data() -> None:
    d = run(steady(draining("d"), booting("n-1"), booting("n-2", "Pending")))
    assert d.terminate == ("d",)
    # Past boot_grace without metrics, a node counts as missing.
    late = booting("n-3", since=DEFAULT.boot_grace + 1)
    assert run(steady(draining("d"), late)).action is Action.HOLD
    # So does one Scalelite already sends meetings to.
    enabled = dataclasses.replace(
        late, launched_at=T0 - 60, server=ServerView("n-3", "enabled", 0, True)
    )
    assert run(steady(draining("d"), enabled)).action is Action.HOLD


def test_unreadable_scalelite_blocks_scale_in() -> None:
    def unknown(n: Node) -> Node:
        return dataclasses.replace(n, server=None)

    nodes = [unknown(n) for n in (*quiet_fleet(), draining("z"))]
    d = run(snapshot(*nodes, scalelite_ok=False), held(IN, 600))
    assert (d.action, d.drain, d.terminate) == (Action.HOLD, (), ())
    assert "Scalelite could not be read" in d.reason
    # Even with every server still known from somewhere: the flag alone blocks.
    d = run(snapshot(*quiet_fleet(), draining("z"), scalelite_ok=False), held(IN, 600))
    assert (d.drain, d.terminate) == ((), ())


# --- cooldown, bounds, reconcile ----------------------------------------------------------


def test_default_scales_out_right_after_a_change() -> None:
    d = run(snapshot(*busy(4, 0.9)), History((), last_change_at=T0 - 10))
    assert d.action is Action.SCALE_OUT


def test_upper_bound_and_asg_max() -> None:
    # 7 wanted (HUNGRY).
    assert run(snapshot(*busy(4, 0.9)), config=HUNGRY).desired == 7
    assert run(snapshot(*busy(4, 0.9), max_size=6), config=HUNGRY).desired == 6
    d = run(snapshot(*busy(4, 0.9), max_size=4), config=HUNGRY)
    assert (d.action, d.desired) == (Action.HOLD, None)
    assert "upper bound 4" in d.reason
    capped = dataclasses.replace(HUNGRY, max_nodes=5)
    assert run(snapshot(*busy(4, 0.9)), config=capped).desired == 5
    # Already above the upper bound: never lowered, never raised.
    d = run(snapshot(*busy(6, 0.9), max_size=6), config=capped)
    assert (d.action, d.desired) == (Action.HOLD, None)


def test_lower_bound_grows_the_fleet() -> None:
    d = run(steady(min_size=5))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 5)
    assert "below lower bound 5" in d.reason
    config = dataclasses.replace(DEFAULT, min_nodes=6)
    assert run(steady(), config=config).desired == 6


def test_reconcile_adopts_instances_protection_kept() -> None:
    # 1.0 room covers the headroom, keep ceil((2.5 + 0.15) / 0.7) = 4 is no scale-in held
    # 600 s: steady at five.
    nodes = busy(5, 0.5)
    d = run(snapshot(*nodes, desired=3))
    assert (d.action, d.desired) == (Action.RECONCILE, 5)
    assert run(snapshot(*nodes, desired=3, max_size=4)).desired == 4


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"lifecycle": "Pending"}, "1 launching"),
        ({"healthy": False}, "1 unhealthy"),
        ({"protected": False}, "1 unprotected"),
    ],
)
def test_aws_s_own_replacement_is_not_adopted(change: dict[str, Any], said: str) -> None:
    # A failed health check or AZ rebalancing launches first (or an unprotected member is
    # there for AWS to pick): more members than desired for a while, which AWS ends itself
    # through the termination hook. Raising desired would keep both.
    nodes = busy(5, 0.5)
    nodes[-1] = dataclasses.replace(nodes[-1], **change)
    d = run(snapshot(*nodes, desired=4))
    assert (d.action, d.desired) == (Action.NONE, None)
    assert f"5 instances but desired 4: {said}; left to AWS" in d.reason


def test_no_reconcile_that_would_not_raise_desired() -> None:
    # Desired already at the upper bound: a SetDesiredCapacity to the same value would
    # change nothing and restart the cooldown every round.
    d = run(snapshot(*busy(5, 0.5), desired=4, max_size=4))
    assert (d.action, d.desired) == (Action.NONE, None)


def operator_drained(iid: str, meetings: int = 2, state: ServerState = "cordoned") -> Node:
    """``bbbnode drain`` on a busy node: cordoned in Scalelite, no drain tag."""
    return serving(iid, cpu=0.6, meetings=meetings, state=state)


def test_an_operators_drain_is_no_capacity() -> None:
    # Three steady nodes carry the load; the fourth, cordoned by an operator, takes no
    # meetings: MinSize 4 needs one more node, and the cordoned one is never re-enabled.
    d = run(steady(operator_drained("o"), min_size=4))
    assert (d.action, d.desired, d.undrain) == (Action.SCALE_OUT, 5, ())
    numbers = d.numbers
    assert (numbers["serving"], numbers["operator_drained"], numbers["capacity"]) == (3, 1, 3)
    assert numbers["members"] == 4
    # Its CPU is no room and no demand of the serving nodes: the same decision as without
    # its load, and no steer for it.
    busy_fleet = [*busy(3, 0.9), operator_drained("o")]
    d = run(snapshot(*busy_fleet), config=HUNGRY)
    assert d.numbers["room"] == 0.0
    assert "o" not in dict(d.steer)


def test_an_emptied_operators_drain_is_still_the_operators() -> None:
    # Scalelite disabled it once it emptied: still no capacity, never drained, terminated,
    # re-enabled or steered by the scaler, whatever the load.
    emptied = operator_drained("o", meetings=0, state="disabled")
    d = run(snapshot(*quiet_fleet(), emptied), held(IN, 600))
    assert d.numbers["operator_drained"] == 1
    assert "o" not in d.drain + d.terminate + d.undrain
    assert "o" not in dict(d.steer)
    d = run(snapshot(*busy(3, 0.95), emptied), config=HUNGRY)
    assert d.action is Action.SCALE_OUT
    assert d.undrain == ()


def test_a_server_just_added_to_scalelite_is_not_an_operators_drain() -> None:
    # addServer answers disabled and offline until bbbnode enables it a moment later.
    base = serving("new", cpu=0.1, meetings=0, state="disabled")
    assert base.server is not None
    adding = dataclasses.replace(
        base, launched_at=T0 - 120, server=dataclasses.replace(base.server, online=False)
    )
    assert run(steady(adding)).numbers["operator_drained"] == 0
    # Polled online, or long since launched: that is someone's drain.
    online = dataclasses.replace(adding, server=dataclasses.replace(base.server, online=True))
    old = dataclasses.replace(adding, launched_at=T0 - 3600)
    assert run(steady(online)).numbers["operator_drained"] == 1
    assert run(steady(old)).numbers["operator_drained"] == 1


def test_an_unseen_operators_drain_holds_scale_in() -> None:
    # Out of capacity, not out of sight: its meetings are still ours to protect.
    stale = dataclasses.replace(
        operator_drained("o"), metrics=NodeMetrics(0.6, 2, 8, DEFAULT.stale_after + 1)
    )
    d = run(snapshot(*quiet_fleet(), stale), held(IN, 600))
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert "no fresh data from 1 node(s) (o)" in d.reason


def test_leaving_nodes_are_not_members() -> None:
    gone = dataclasses.replace(serving("t", cpu=0.0, meetings=0), lifecycle="Terminating:Wait")
    tagged = dataclasses.replace(draining("u"), lifecycle="Terminating")
    d = run(steady(gone, tagged))
    assert d.numbers["members"] == 3
    assert d.terminate == ()


# --- seed preset --------------------------------------------------------------------------


def test_seed_scales_out_by_one_after_three_minutes() -> None:
    nodes = [serving("a", cpu=0.85), serving("b", cpu=0.9), serving("c", cpu=0.99)]
    d = run(snapshot(*nodes), held(OUT, 180), SEED)
    assert (d.action, d.desired) == (Action.SCALE_OUT, 4)
    assert "lowest CPU 0.85 above 0.80" in d.reason
    d = run(snapshot(*nodes), held(OUT, 170), SEED)
    assert (d.action, d.desired) == (Action.NONE, None)
    assert OUT in d.signals
    nodes[0] = serving("a", cpu=0.79)
    assert run(snapshot(*nodes), held(OUT, 180), SEED).signals == frozenset()


def test_seed_cooldown_holds_a_scale_out() -> None:
    nodes = [serving("a", cpu=0.85), serving("b", cpu=0.9)]
    history = dataclasses.replace(held(OUT, 180), last_change_at=T0 - 299)
    d = run(snapshot(*nodes), history, SEED)
    assert (d.action, d.desired) == (Action.HOLD, None)
    assert "cooldown" in d.reason
    history = dataclasses.replace(history, last_change_at=T0 - 300)
    assert run(snapshot(*nodes), history, SEED).desired == 3


def test_seed_scales_in_one_idle_node_after_fifteen_minutes() -> None:
    nodes = [
        serving("a", cpu=0.02, meetings=0),
        serving("b", cpu=0.01, meetings=1),
        serving("c", cpu=0.05, meetings=0),
    ]
    d = run(snapshot(*nodes), held(IN, 900), SEED)
    assert (d.action, d.drain) == (Action.DRAIN, ("a",))
    assert "below 0.06" in d.reason
    assert run(snapshot(*nodes), held(IN, 890), SEED).action is Action.NONE


def test_seed_needs_an_idle_node_and_room_above_the_minimum() -> None:
    nodes = [serving("a", cpu=0.02, meetings=1), serving("b", cpu=0.01, meetings=1)]
    d = run(snapshot(*nodes), held(IN, 900), SEED)
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert "no idle node" in d.reason
    nodes = [serving("a", cpu=0.02, meetings=0), serving("b", cpu=0.01, meetings=0)]
    d = run(snapshot(*nodes, min_size=2), held(IN, 900), SEED)
    assert (d.action, d.drain) == (Action.HOLD, ())


def test_seed_drains_one_at_a_time() -> None:
    nodes = [serving(k, cpu=0.02, meetings=0) for k in "abcd"]
    assert run(snapshot(*nodes), held(IN, 900), SEED).drain == ("a",)
    d = run(snapshot(*nodes, draining("x", meetings=1, load=1.0)), held(IN, 900), SEED)
    assert d.drain == ()


# --- History ------------------------------------------------------------------------------


def test_held_for_counts_an_unbroken_run() -> None:
    history = held(OUT, 100)
    assert history.held_for(OUT, T0, 30.0) == 100
    assert history.held_for(IN, T0, 30.0) == 0
    # "now" counts as holding: a fresh history has held for 0 s.
    assert History().held_for(OUT, T0, 30.0) == 0


def test_held_for_breaks_at_gaps_and_at_a_missing_signal() -> None:
    older = tuple(Sample(T0 - 200 + 10 * k, frozenset({OUT}), None) for k in range(6))  # -200..-150
    newer = tuple(Sample(T0 - 100 + 10 * k, frozenset({OUT}), None) for k in range(10))  # -100..-10
    # 50 s between -150 and -100: the run starts again at -100.
    assert History(older + newer).held_for(OUT, T0, 30.0) == 100
    assert History(older + newer).held_for(OUT, T0, 60.0) == 200
    # A round without the signal breaks it too.
    broken = (*newer[:4], Sample(newer[4].at, frozenset(), None), *newer[5:])
    assert History(broken).held_for(OUT, T0, 30.0) == 50
    # The last round long ago: nothing holds now.
    assert History(newer).held_for(OUT, T0 + 40, 30.0) == 0
    assert History(newer).held_for(OUT, T0 + 20, 30.0) == 120


def test_record_keeps_the_horizon_and_the_last_change() -> None:
    config = DEFAULT
    history = History()
    for k in range(200):
        history = history.record(Decision(Action.NONE, "steady"), T0 + 10 * k, config)
    now = T0 + 10 * 199
    assert history.samples[0].at >= now - config.horizon
    assert history.samples[-1].at == now
    assert (history.last_change_at, history.last_growth_at) == (None, None)
    # Every capacity change restarts seed's cooldown; only growth restarts default's scale-in
    # cooldown.
    for change, counts, grows in (
        (Decision(Action.SCALE_OUT, "x", desired=5), True, True),
        (Decision(Action.RECONCILE, "x", desired=5), True, True),
        (Decision(Action.DRAIN, "x", drain=("a",)), True, False),
        (Decision(Action.UNDRAIN, "x", undrain=("a",)), True, True),
        (Decision(Action.TERMINATE, "x", terminate=("a",)), False, False),
        (Decision(Action.HOLD, "x"), False, False),
        (Decision(Action.NONE, "x", steer=(("a", 100.0),)), False, False),
    ):
        after = history.record(change, now + 10, config)
        assert (after.last_change_at == now + 10) is counts, change.action
        assert (after.last_growth_at == now + 10) is grows, change.action
    # Each keeps the other's earlier time.
    grown = history.record(Decision(Action.SCALE_OUT, "x", desired=5), now + 10, config)
    drained_after = grown.record(Decision(Action.DRAIN, "x", drain=("a",)), now + 20, config)
    assert (drained_after.last_change_at, drained_after.last_growth_at) == (now + 20, now + 10)


# --- PolicyConfig.from_settings -----------------------------------------------------------


@pytest.fixture
def scaler_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    required_settings(monkeypatch)
    return monkeypatch


def config_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> PolicyConfig:
    for key, value in env.items():
        monkeypatch.setenv(f"BBBSCALER_{key}", value)
    return PolicyConfig.from_settings(load_settings(ScalerSettings))


def timings(c: PolicyConfig) -> tuple[float, float, float, float, int]:
    return (c.scale_out_after, c.scale_in_after, c.cooldown_out, c.cooldown_in, c.max_draining)


def test_preset_timings(scaler_env: pytest.MonkeyPatch) -> None:
    default = config_from_env(scaler_env)
    assert default.preset == "default"
    assert timings(default) == (0.0, 600.0, 0.0, 300.0, 2)
    seed = config_from_env(scaler_env, POLICY__PRESET="seed", POLICY__MAX_DRAINING="5")
    assert seed.preset == "seed"
    assert timings(seed) == (180.0, 900.0, 300.0, 300.0, 1)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("seed", (60.0, 1200.0, 120.0, 120.0, 1)), ("default", (60.0, 1200.0, 0.0, 120.0, 2))],
)
def test_timing_overrides_apply_to_either_preset(
    scaler_env: pytest.MonkeyPatch, preset: str, expected: tuple[float, ...]
) -> None:
    c = config_from_env(
        scaler_env,
        POLICY__PRESET=preset,
        POLICY__SCALE_OUT_AFTER="60",
        POLICY__SCALE_IN_AFTER="1200",
        POLICY__COOLDOWN="120",
    )
    assert timings(c) == expected


def test_each_override_alone(scaler_env: pytest.MonkeyPatch) -> None:
    c = config_from_env(scaler_env, POLICY__PRESET="seed", POLICY__SCALE_OUT_AFTER="0")
    assert timings(c) == (0.0, 900.0, 300.0, 300.0, 1)
    scaler_env.delenv("BBBSCALER_POLICY__PRESET")
    scaler_env.delenv("BBBSCALER_POLICY__SCALE_OUT_AFTER")
    c = config_from_env(scaler_env, POLICY__SCALE_IN_AFTER="30")
    assert timings(c) == (0.0, 30.0, 0.0, 300.0, 2)


def test_settings_reach_the_config(scaler_env: pytest.MonkeyPatch) -> None:
    c = config_from_env(
        scaler_env,
        METRICS__STALE_AFTER="45",
        LOOP__INTERVAL="5",
        POLICY__MIN_NODES="2",
        POLICY__MAX_NODES="9",
        POLICY__SCHEDULES='[{"name": "exam", "start": "07:00", "end": "12:00", "min_nodes": 4}]',
        POLICY__LOOKAHEAD="240",
        POLICY__STEER_CPU="0.6",
        POLICY__STEER_WARM_CPU="0.5",
        POLICY__STEER_WARM_SHARE="0",
        POLICY__STEER_MULTIPLIER="1",
    )
    assert (c.stale_after, c.gap_limit, c.min_nodes, c.max_nodes) == (45.0, 15.0, 2, 9)
    assert [w.name for w in c.windows] == ["exam"]
    assert (c.lookahead, c.steer_cpu, c.steer_multiplier) == (240.0, 0.6, 1.0)
    assert (c.steer_warm_cpu, c.steer_warm_share) == (0.5, 0.0)


def test_default_policy_values(scaler_env: pytest.MonkeyPatch) -> None:
    c = config_from_env(scaler_env)
    assert (c.target_cpu, c.headroom, c.lookahead) == (0.72, 0.15, 300.0)
    assert (c.steer_cpu, c.steer_multiplier) == (0.70, 100.0)
    assert (c.steer_warm_cpu, c.steer_warm_share) == (0.60, 0.34)
    assert c == dataclasses.replace(PRESET, gap_limit=c.gap_limit)


def test_node_metrics_missing_one_gauge_is_not_fresh() -> None:
    node = serving("a", meetings=0)
    assert node.fresh(60)
    assert node.idle(60)
    assert not with_metrics(node, participants=None).fresh(60)
    assert not with_metrics(node, meetings=None).idle(60)
    assert not dataclasses.replace(node, metrics=NodeMetrics(0.0, 0, 0, 60.5)).fresh(60)


def test_an_incomplete_observation_blocks_scale_in() -> None:
    # EC2 failed: the addresses and drain tags were last round's, not this one's.
    snap = dataclasses.replace(steady(draining("d")), errors=("ec2",))
    d = run(snap)
    assert (d.action, d.terminate) == (Action.HOLD, ())
    assert "observation incomplete (ec2)" in d.reason


def test_no_node_in_scalelite_reads_as_a_wrong_template_not_as_drained() -> None:
    def absent(node: Node) -> Node:
        server = node.server
        assert server is not None
        return dataclasses.replace(node, server=ServerView("", "absent", None, False))

    snap = steady(draining("d"))
    snap = dataclasses.replace(snap, nodes=tuple(absent(n) for n in snap.nodes))
    d = run(snap)
    assert (d.action, d.terminate, d.drain) == (Action.HOLD, (), ())
    assert "server_url_template" in d.reason


def test_a_completed_decision_keeps_every_field_it_does_not_set() -> None:
    # decide's last step copies the plan by hand (Decision.completed): a field added to
    # Decision and not to it would come back as its default. Values of each field's own type
    # (the compiled model checks them), none a default, the completed ones all new.
    def miss(name: str) -> WindowMiss:
        return WindowMiss(name, 1.0, 2, 3.0, 4)

    values: dict[str, Any] = {
        "action": Action.DRAIN,
        "reason": "planned",
        "desired": 7,
        "drain": ("i-d",),
        "undrain": ("i-u",),
        "terminate": ("i-t",),
        "steer": (("i-s", 0.5),),
        "drifted": ("i-x",),
        "replacing": ("i-r",),
        "numbers": {"planned": 1.0},
        "signals": frozenset({"sig"}),
        "demand": 2.5,
        "schedule_misses": (miss("planned"),),
        "forecast_status": "short",
        "forecast_reason": "planned",
    }
    assert set(values) == {f.name for f in dataclasses.fields(Decision)}, "a new field: add it"
    planned = Decision(**values)
    fresh: dict[str, Any] = {
        "steer": (("i-s", 2.0),),
        "numbers": {"completed": 2.0},
        "schedule_misses": (miss("completed"),),
        "forecast_status": "ok",
        "forecast_reason": "completed",
    }
    done = planned.completed(**fresh)
    for name, value in values.items():
        assert getattr(done, name) == fresh.get(name, value), name
