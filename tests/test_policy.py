"""decide() by example, for both presets: sizing, undrain, drains, terminations, holds, bounds."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bbbcore.config import load_settings
from bbbscaler.model import Action, Decision, FleetSnapshot, Node, NodeMetrics, ServerView
from bbbscaler.policy import IN, OUT, History, PolicyConfig, Sample, decide, drained
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

DEFAULT = PolicyConfig.preset_values("default")
SEED = PolicyConfig.preset_values("seed")


def run(
    snap: FleetSnapshot, history: History | None = None, config: PolicyConfig = DEFAULT
) -> Decision:
    return decide(snap, history or History(), config, snap.at)


def busy(count: int, cpu: float, prefix: str = "i") -> list[Node]:
    return [serving(f"{prefix}-{k}", cpu=cpu) for k in range(count)]


# --- default: scale-out sizing ------------------------------------------------------------


def test_default_steps_several_nodes_at_once() -> None:
    # Demand 3.6 nodes + 0.5 headroom at 65 %: ceil(6.31) = 7 serving wanted.
    d = run(snapshot(*busy(4, 0.9)))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 7)
    assert d.numbers["need"] == 7
    assert OUT in d.signals


def test_default_counts_booting_nodes_and_pending_launches() -> None:
    nodes = [*busy(4, 0.9), booting("b-1", "Pending"), booting("b-2")]
    # 4 serving + 2 booting + 1 the ASG has not launched yet = the 7 wanted.
    d = run(snapshot(*nodes, desired=7))
    assert d.action is Action.NONE
    assert d.desired is None
    assert d.numbers["capacity"] == 7
    # Without the pending launch, one more.
    assert run(snapshot(*nodes)).desired == 7


def test_default_lowest_cpu_rule_is_not_met_twice() -> None:
    config = dataclasses.replace(DEFAULT, headroom=0.0)
    # Three nodes exactly at the target: the sum is met, but the next meeting would land
    # on a node at the target, so one more node.
    d = run(snapshot(*busy(3, 0.65)), config=config)
    assert (d.action, d.desired) == (Action.SCALE_OUT, 4)
    # That node is booting: it is the one more, no second launch.
    d = run(snapshot(*busy(3, 0.65), booting("b-1")), config=config)
    assert d.action is Action.NONE
    d = run(snapshot(*busy(3, 0.65), desired=4), config=config)
    assert d.action is Action.NONE


def test_default_projects_the_trend_over_boot_time() -> None:
    snap = snapshot(*busy(6, 0.5))  # demand 3.0: ceil(3.5 / 0.65) = 6, steady
    assert run(snap).action is Action.NONE
    # +1.0 node of demand over 300 s, projected 180 s ahead: 3.6, ceil(4.1 / 0.65) = 7.
    rising = History((Sample(T0 - 300, frozenset(), 2.0), Sample(T0 - 10, frozenset(), 2.9)))
    d = run(snap, rising)
    assert (d.action, d.desired) == (Action.SCALE_OUT, 7)
    assert d.numbers["trend_per_s"] == pytest.approx(1 / 300, abs=1e-6)
    # Falling demand is no reason to project anything.
    falling = History((Sample(T0 - 300, frozenset(), 4.0),))
    assert run(snap, falling).numbers["trend_per_s"] == 0.0


def test_default_takes_no_trend_from_a_base_shorter_than_half_the_window() -> None:
    # Just after a start: one sample a minute old. A jump of one node over 60 s would
    # project 3 nodes more; the policy waits for half a window of history instead.
    young = History((Sample(T0 - 60, frozenset(), 2.0),))
    d = run(snapshot(*busy(6, 0.5)), young)
    assert d.numbers["trend_per_s"] == 0.0
    assert d.action is Action.NONE
    old_enough = History((Sample(T0 - 150, frozenset(), 2.0),))
    assert run(snapshot(*busy(6, 0.5)), old_enough).numbers["trend_per_s"] > 0


def test_unseen_serving_nodes_count_at_the_mean_of_the_seen() -> None:
    blind = Node(
        "x-1", "InService", launched_at=T0 - 3600, server=ServerView("x-1", "enabled", 1.0, True)
    )
    # 4.5 nodes of demand (the unseen one at 0.9): ceil(5.0 / 0.65) = 8. Scale-out runs
    # although the blind node blocks any scale-in.
    d = run(snapshot(*busy(4, 0.9), blind))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 8)
    assert d.demand is None  # an imputed demand is no base for a later trend


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


def test_draining_nodes_are_re_enabled_before_launching() -> None:
    nodes = [*busy(4, 0.9), draining("d-1", meetings=2, load=2.0), draining("d-2")]
    d = run(snapshot(*nodes))
    # 7 wanted, 4 serving: both draining nodes (emptiest first) and one new instance.
    assert d.action is Action.SCALE_OUT
    assert d.undrain == ("d-2", "d-1")
    assert d.desired == 7  # 6 members + 1
    assert d.terminate == ()


def test_undrain_alone_when_that_is_enough() -> None:
    # Demand 2.4: ceil(2.9 / 0.65) = 5 wanted, 4 serving: one node, the emptiest draining.
    nodes = [*busy(4, 0.6), draining("d-1", meetings=2, load=2.0), draining("d-2")]
    d = run(snapshot(*nodes))
    assert (d.action, d.undrain, d.desired) == (Action.UNDRAIN, ("d-2",), None)


def test_undrain_at_the_upper_bound() -> None:
    nodes = [*busy(4, 0.9), draining("d-1")]
    d = run(snapshot(*nodes, max_size=5))
    assert (d.action, d.undrain, d.desired) == (Action.UNDRAIN, ("d-1",), None)


# --- drain selection ----------------------------------------------------------------------


def quiet_fleet() -> list[Node]:
    """Six nodes, 0.85 nodes of demand: ceil(1.35 / 0.65) = 3 carry it."""
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
    # Fewest meetings, then participants, then CPU; max_draining 2.
    assert (d.action, d.drain) == (Action.DRAIN, ("b", "d"))
    assert d.desired is None


def test_default_waits_for_the_stabilisation_window() -> None:
    d = run(snapshot(*quiet_fleet()), held(IN, 590))
    assert IN in d.signals
    assert (d.action, d.drain) == (Action.NONE, ())


def test_drains_already_running_use_up_the_budget() -> None:
    nodes = [*quiet_fleet(), draining("x", meetings=1, load=1.0)]
    assert run(snapshot(*nodes), held(IN, 600)).drain == ("b",)
    nodes.append(draining("y", meetings=1, load=1.0))
    d = run(snapshot(*nodes), held(IN, 600))
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert "already draining" in d.reason


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


def test_scale_in_cooldown_after_a_change() -> None:
    history = dataclasses.replace(held(IN, 600), last_change_at=T0 - 100)
    d = run(snapshot(*quiet_fleet()), history)
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert "cooldown" in d.reason
    history = dataclasses.replace(history, last_change_at=T0 - 300)
    assert run(snapshot(*quiet_fleet()), history).drain == ("b", "d")


# --- terminations -------------------------------------------------------------------------


def steady(*extra: Node, desired: int | None = None, min_size: int = 0) -> FleetSnapshot:
    # 3 x 0.4 = 1.2: ceil(1.7 / 0.65) = 3, exactly the three serving nodes.
    return snapshot(
        *(serving(f"s-{k}", cpu=0.4) for k in range(3)), *extra, desired=desired, min_size=min_size
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
    assert (d.action, d.desired) == (Action.RECONCILE, 5)


def test_terminate_and_drain_in_one_round() -> None:
    d = run(snapshot(*quiet_fleet(), draining("z")), held(IN, 600))
    assert d.action is Action.TERMINATE
    assert d.terminate == ("z",)
    assert d.drain == ("b",)  # the drained node still counts against the budget


# --- missing data and Scalelite -----------------------------------------------------------


def test_stale_data_blocks_scale_in_but_not_scale_out() -> None:
    stale = serving("old", cpu=0.05, meetings=0, age=120.0)
    d = run(snapshot(*quiet_fleet(), stale, draining("z")), held(IN, 600))
    assert (d.action, d.drain, d.terminate) == (Action.HOLD, (), ())
    assert "no fresh data from 1 node(s) (old)" in d.reason
    d = run(snapshot(*busy(4, 0.9), stale, draining("z")))
    assert d.action is Action.SCALE_OUT
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
    assert run(snapshot(*busy(4, 0.9), max_size=6)).desired == 6
    d = run(snapshot(*busy(4, 0.9), max_size=4))
    assert (d.action, d.desired) == (Action.HOLD, None)
    assert "upper bound 4" in d.reason
    capped = dataclasses.replace(DEFAULT, max_nodes=5)
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
    nodes = busy(5, 0.5)  # demand 2.5: ceil(3.0 / 0.65) = 5, steady at five
    d = run(snapshot(*nodes, desired=3))
    assert (d.action, d.desired) == (Action.RECONCILE, 5)
    assert run(snapshot(*nodes, desired=3, max_size=4)).desired == 4


def test_no_reconcile_that_would_not_raise_desired() -> None:
    # Desired already at the upper bound: a SetDesiredCapacity to the same value would
    # change nothing and restart the cooldown every round.
    d = run(snapshot(*busy(5, 0.5), desired=4, max_size=4))
    assert (d.action, d.desired) == (Action.NONE, None)


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
    assert history.last_change_at is None
    for change, counts in (
        (Decision(Action.SCALE_OUT, "x", desired=5), True),
        (Decision(Action.DRAIN, "x", drain=("a",)), True),
        (Decision(Action.UNDRAIN, "x", undrain=("a",)), True),
        (Decision(Action.TERMINATE, "x", terminate=("a",)), False),
        (Decision(Action.HOLD, "x"), False),
    ):
        after = history.record(change, now + 10, config)
        assert (after.last_change_at == now + 10) is counts, change.action


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
    )
    assert (c.stale_after, c.gap_limit, c.min_nodes, c.max_nodes) == (45.0, 15.0, 2, 9)
    assert [w.name for w in c.windows] == ["exam"]


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
