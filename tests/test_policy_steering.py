"""steering() by example: which serving nodes Scalelite is steered away from (default preset).

A node at or above steer_cpu gets steer_multiplier; so do the emptiest busy nodes beyond
what the load needs (capacity - this round's drains - max(keep, lower)); every other
steerable node gets 1.0. Decision.steer names only the changes from Scalelite's current
load_multiplier.
"""

from __future__ import annotations

import dataclasses

from bbbscaler.model import Action, Decision, FleetSnapshot, Node, NodeMetrics, ServerView
from bbbscaler.policy import IN, History, PolicyConfig, decide
from tests.scaler_fleets import T0, booting, draining, held, serving, snapshot

PRESET = PolicyConfig.preset_values("default")
# The examples' arithmetic is written for round numbers (70 % target, steer from 50 %);
# the preset's own values are checked on their own.
DEFAULT = dataclasses.replace(PRESET, target_cpu=0.70, steer_cpu=0.50)
SEED = PolicyConfig.preset_values("seed")
HIGH = DEFAULT.steer_multiplier


def run(
    snap: FleetSnapshot, history: History | None = None, config: PolicyConfig = DEFAULT
) -> Decision:
    return decide(snap, history or History(), None, config, snap.at)


def steered(d: Decision) -> dict[str, float]:
    steer = dict(d.steer)
    assert len(steer) == len(d.steer), d.steer
    return steer


def full() -> list[Node]:
    """Three nodes the load needs: 1.4 of demand, ceil((1.4 + 0.15) / 0.7) = 3 keep; "hot"
    is past steer_cpu (0.5)."""
    return [
        serving("hot", cpu=0.6, meetings=4),
        serving("m-1", cpu=0.4, meetings=2),
        serving("m-2", cpu=0.4, meetings=3),
    ]


def test_defaults() -> None:
    assert (PRESET.steer_cpu, PRESET.steer_multiplier) == (0.7, 100.0)


def test_a_hot_node_is_steered() -> None:
    d = run(snapshot(*full()))
    assert (d.numbers["keep"], d.numbers["capacity"]) == (3, 3)
    assert d.steer == (("hot", HIGH),)
    # Steering alone changes no capacity.
    assert (d.action, d.desired, d.drain, d.undrain, d.terminate) == (Action.NONE, None, (), (), ())
    # At steer_cpu exactly, too; just below, not.
    nodes = full()
    nodes[0] = serving("hot", cpu=0.5, meetings=4)
    assert steered(run(snapshot(*nodes))) == {"hot": HIGH}
    nodes[0] = serving("hot", cpu=0.49, meetings=4)
    assert run(snapshot(*nodes)).steer == ()


# Every node kept (nothing spare), so only CPU steers: ceil((5.49 + 0.6) / 0.72) = 9.
WARM = dataclasses.replace(PRESET, headroom=0.6)


def nine(hot: int = 1) -> list[Node]:
    """Nine nodes in a flash crowd: ``hot`` past steer_cpu (0.70), four in the warm band
    (0.60-0.70), the rest cooler."""
    warm = [serving(f"w-{k}", cpu=0.65 - k / 100, meetings=3) for k in range(4)]
    cool = [serving(f"c-{k}", cpu=0.55, meetings=3) for k in range(4 - hot + 1)]
    return [*(serving(f"h-{k}", cpu=0.75, meetings=4) for k in range(hot)), *warm, *cool]


def test_the_warmest_nodes_are_steered_until_a_third_are() -> None:
    # From 60 % two or three rooms created within one round carry a node past 80 %: the
    # warmest are steered too, until 0.34 of the nine (three) are, hot ones counted first.
    assert (PRESET.steer_warm_cpu, PRESET.steer_warm_share) == (0.60, 0.34)
    d = run(snapshot(*nine()), config=WARM)
    assert d.numbers["keep"] == 9
    assert steered(d) == {"h-0": HIGH, "w-0": HIGH, "w-1": HIGH}
    assert steered(run(snapshot(*nine(hot=2)), config=WARM)) == {
        "h-0": HIGH, "h-1": HIGH, "w-0": HIGH,
    }  # fmt: skip
    # Hot ones are steered whatever their number; then no warm one is.
    assert set(steered(run(snapshot(*nine(hot=4)), config=WARM))) == {f"h-{k}" for k in range(4)}
    # A share of 0 leaves steer_cpu alone; a share of 1 steers the whole band.
    off = dataclasses.replace(WARM, steer_warm_share=0.0)
    assert steered(run(snapshot(*nine()), config=off)) == {"h-0": HIGH}
    every = dataclasses.replace(WARM, steer_warm_share=1.0)
    assert set(steered(run(snapshot(*nine()), config=every))) == {
        "h-0",
        *(f"w-{k}" for k in range(4)),
    }
    # A warm node steered before and now outside the share is opened again.
    nodes = nine()
    nodes[4] = serving("w-3", cpu=0.62, meetings=3, multiplier=HIGH)
    assert steered(run(snapshot(*nodes), config=WARM))["w-3"] == 1.0


def test_at_least_one_warm_node_is_steered_in_a_small_fleet() -> None:
    # 0.34 of two nodes is none: at least one is, and the other stays open.
    nodes = [serving("warm", cpu=0.65, meetings=3), serving("cool", cpu=0.3, meetings=2)]
    assert steered(run(snapshot(*nodes), config=WARM)) == {"warm": HIGH}


def test_a_steered_node_is_not_sent_again() -> None:
    nodes = full()
    nodes[0] = serving("hot", cpu=0.6, meetings=4, multiplier=HIGH)
    assert run(snapshot(*nodes)).steer == ()


def test_a_node_back_under_steer_cpu_and_not_spare_gets_one() -> None:
    nodes = full()
    nodes[0] = serving("hot", cpu=0.45, meetings=4, multiplier=HIGH)
    nodes[1] = serving("m-1", cpu=0.45, meetings=2, multiplier=HIGH)
    d = run(snapshot(*nodes))
    # 1.3 of demand still keeps 3: none spare.
    assert d.numbers["keep"] == 3
    assert steered(d) == {"hot": 1.0, "m-1": 1.0}
    # Only changes: the node already at 1.0 is not named.
    assert "m-2" not in steered(d)


def spare_fleet() -> list[Node]:
    """Five nodes, 0.57 of demand: ceil(0.72 / 0.7) = 2 keep, 3 spare."""
    return [
        serving("n-1", cpu=0.2, meetings=3),
        serving("n-2", cpu=0.1, meetings=1),
        serving("n-3", cpu=0.15, meetings=2),
        serving("n-4", cpu=0.02, meetings=0),
        serving("n-5", cpu=0.1, meetings=1, participants=2),
    ]


def test_spare_busy_nodes_are_steered_emptiest_first() -> None:
    d = run(snapshot(*spare_fleet()))
    assert (d.numbers["keep"], d.numbers["capacity"]) == (2, 5)
    # Fewest meetings, then participants: n-5, n-2, n-3. The idle n-4 is the emptiest but
    # left open (it drains when due); n-1, the busiest, keeps taking meetings with it.
    assert steered(d) == {"n-5": HIGH, "n-2": HIGH, "n-3": HIGH}
    assert d.action is Action.NONE  # the in-signal has not held 600 s yet
    # The lower bound keeps nodes open as keep does: min_nodes 4, one spare.
    config = dataclasses.replace(DEFAULT, min_nodes=4)
    assert steered(run(snapshot(*spare_fleet()), config=config)) == {"n-5": HIGH}


def test_hot_nodes_do_not_use_up_the_spare() -> None:
    nodes = [*spare_fleet(), serving("hot", cpu=0.55, meetings=5)]
    d = run(snapshot(*nodes))
    # 1.12 of demand: ceil(1.27 / 0.7) = 2 keep, 6 nodes: 4 spare besides the hot one.
    assert d.numbers["keep"] == 2
    assert steered(d) == {"hot": HIGH, "n-5": HIGH, "n-2": HIGH, "n-3": HIGH, "n-1": HIGH}


def test_idle_nodes_are_never_steered_as_spare() -> None:
    # Every node idle but one: plenty spare, yet only the busy one is steered.
    nodes = [serving(f"e-{k}", cpu=0.02, meetings=0) for k in range(4)]
    nodes.append(serving("b", cpu=0.1, meetings=1))
    assert steered(run(snapshot(*nodes))) == {"b": HIGH}
    # An idle node steered before (it was busy then) is opened again.
    nodes[0] = serving("e-0", cpu=0.02, meetings=0, multiplier=HIGH)
    assert steered(run(snapshot(*nodes))) == {"e-0": 1.0, "b": HIGH}


def test_a_spare_node_that_is_needed_again_is_opened() -> None:
    # Two nodes, one steered as spare before; the load now keeps both.
    nodes = [
        serving("a", cpu=0.45, meetings=3),
        serving("b", cpu=0.4, meetings=2, multiplier=HIGH),
    ]
    d = run(snapshot(*nodes))
    assert d.numbers["keep"] == 2
    assert d.steer == (("b", 1.0),)


def test_nodes_drained_this_round_are_not_steered() -> None:
    nodes = spare_fleet()
    # n-5 was steered as spare before; now it is drained: it keeps its multiplier (a reset
    # to 1 would invite meetings to a node on its way out).
    nodes[4] = serving("n-5", cpu=0.1, meetings=1, participants=2, multiplier=HIGH)
    d = run(snapshot(*nodes), held(IN, 600))
    # The idle n-4 and, within the budget, n-5 and n-2: 3 drains, 5 - 3 - 2 = 0 spare.
    assert (d.action, d.drain) == (Action.DRAIN, ("n-4", "n-5", "n-2"))
    assert d.steer == ()


def test_only_serving_enabled_nodes_with_fresh_data_are_steered() -> None:
    nodes = [
        serving("hot", cpu=0.9, meetings=5),
        serving("cool", cpu=0.02, meetings=0),
        # A draining node, hot or carrying a multiplier from before.
        draining("d-1", meetings=5, load=5.0, cpu=0.9),
        draining("d-2", meetings=1, load=1.0, cpu=0.2, multiplier=HIGH),
        booting("b-1"),
        booting("b-2", "Pending"),
        serving("cordoned", state="cordoned", cpu=0.9, meetings=5),
        serving("absent", state="absent", cpu=0.9, meetings=5),
        serving("disabled", state="disabled", cpu=0.2, meetings=1, multiplier=HIGH),
        serving("stale", age=61.0, cpu=0.9, meetings=5),
        dataclasses.replace(
            serving("no-participants", cpu=0.9), metrics=NodeMetrics(0.9, 2, None, 5.0)
        ),
        dataclasses.replace(serving("no-server", cpu=0.9), server=None),
        Node(
            "no-metrics",
            "InService",
            launched_at=T0 - 3600,
            server=ServerView("no-metrics", "enabled", 1.0, True, HIGH),
        ),
    ]
    d = run(snapshot(*nodes))
    assert d.steer == (("hot", HIGH),)


def test_a_steer_multiplier_of_one_turns_steering_off() -> None:
    off = dataclasses.replace(DEFAULT, steer_multiplier=1.0)
    # On: "hot", the spare m-1 (keep 3 of 4), and the idle "was" opened again.
    nodes = [*full(), serving("was", cpu=0.02, meetings=0, multiplier=HIGH)]
    assert steered(run(snapshot(*nodes))) == {"hot": HIGH, "m-1": HIGH, "was": 1.0}
    # Off: not even the old multipliers are reset; the rest of the decision is the same.
    d = run(snapshot(*nodes), config=off)
    assert d.steer == ()
    assert d == dataclasses.replace(run(snapshot(*nodes)), steer=())
    assert run(snapshot(*spare_fleet()), config=off).steer == ()


def test_steer_multiplier_and_steer_cpu_are_the_config_s() -> None:
    config = dataclasses.replace(DEFAULT, steer_multiplier=10.0, steer_cpu=0.35)
    nodes = [*full(), serving("cool", cpu=0.02, meetings=0)]
    # A node at 100 from an earlier setting is set to the new 10.
    nodes[2] = serving("m-2", cpu=0.4, meetings=3, multiplier=HIGH)
    assert steered(run(snapshot(*nodes), config=config)) == {
        "hot": 10.0,
        "m-1": 10.0,
        "m-2": 10.0,
    }


def test_seed_never_steers() -> None:
    nodes = [*full(), serving("was", cpu=0.02, meetings=0, multiplier=HIGH)]
    assert run(snapshot(*nodes), config=SEED).steer == ()
    assert run(snapshot(*spare_fleet()), held(IN, 900), SEED).steer == ()


def test_steering_runs_beside_a_scale_out() -> None:
    # Four nodes at 0.9 and one at 0.45 grow by one (0.25 of room, 0.5 wanted); four are
    # past steer_cpu, none is spare.
    nodes = [*(serving(f"i-{k}", cpu=0.9) for k in range(4)), serving("cool", cpu=0.45)]
    d = run(snapshot(*nodes), config=dataclasses.replace(DEFAULT, headroom=0.5))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 6)
    assert steered(d) == {f"i-{k}": HIGH for k in range(4)}


def test_never_every_node_is_steered() -> None:
    # Scalelite multiplies a stored load only at its next poll (updateServer leaves it; only
    # creates and joins move it, app/models/server.rb:204-211): a node steered last would look
    # the least loaded of all and take every meeting until then. All hot: none is steered,
    # and those steered before are opened again; Scalelite's least-load rule spreads the wave.
    hot = [serving(f"i-{k}", cpu=0.9) for k in range(3)]
    assert run(snapshot(*hot)).steer == ()
    hot[0] = serving("i-0", cpu=0.9, multiplier=HIGH)
    hot[1] = serving("i-1", cpu=0.9, multiplier=HIGH)
    assert steered(run(snapshot(*hot))) == {"i-0": 1.0, "i-1": 1.0}
    # One cooler node left: the hot ones are steered towards it.
    d = run(snapshot(*hot, serving("cool", cpu=0.3)))
    assert steered(d) == {"i-2": HIGH}


def test_steering_with_unseen_serving_nodes() -> None:
    # No demand to size on: keep is the capacity, nothing spare; a hot seen node is steered.
    blind = dataclasses.replace(serving("x", cpu=0.1), metrics=None)
    d = run(snapshot(serving("hot", cpu=0.8), serving("cool", cpu=0.1), blind))
    assert steered(d) == {"hot": HIGH}
