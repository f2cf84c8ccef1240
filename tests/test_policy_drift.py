"""decide()'s rollouts by example: drifted nodes replaced through the drain, growing first."""

from __future__ import annotations

import dataclasses

import pytest

from bbbscaler.model import Action, Decision, FleetSnapshot, Launch, Node, ServerView
from bbbscaler.policy import History, PolicyConfig, decide
from tests.scaler_fleets import T0, booting, draining, serving, snapshot

OLD = Launch("lt-0123456789abcdef0", "3")
NEW = Launch("lt-0123456789abcdef0", "4")
DEFAULT = PolicyConfig.preset_values("default")
SEED = PolicyConfig.preset_values("seed")


def old(node: Node) -> Node:
    return dataclasses.replace(node, launch=OLD)


def new(node: Node) -> Node:
    return dataclasses.replace(node, launch=NEW)


def rolled(*nodes: Node, launch: Launch | None = NEW, **kw: int) -> FleetSnapshot:
    """The group launches from ``launch`` now; each node as given."""
    snap = snapshot(*nodes, **kw)  # type: ignore[arg-type]
    return dataclasses.replace(snap, group=dataclasses.replace(snap.group, launch=launch))


def run(snap: FleetSnapshot, config: PolicyConfig = DEFAULT) -> Decision:
    return decide(snap, History(), None, config, snap.at)


def warm(prefix: str = "o", count: int = 3) -> list[Node]:
    """Nodes at 0.65: 0.05 of room each, 0.15 in all, exactly the headroom; none to spare."""
    return [old(serving(f"{prefix}-{k}", cpu=0.65, meetings=3 - k)) for k in range(count)]


def test_replacement_capacity_first_then_the_drain() -> None:
    nodes = warm()
    # Without the emptiest (o-2) the room is 0.10: one node short. Budget max(1, 10 % of 3).
    d = run(rolled(*nodes))
    assert (d.action, d.desired, d.drain) == (Action.SCALE_OUT, 4, ())
    assert d.replacing == ("o-2",)
    assert d.drifted == ("o-0", "o-1", "o-2")
    assert (d.numbers["drifted"], d.numbers["drift_budget"]) == (3, 1)
    assert d.reason == (
        "drift: 1 node(s) launched from lt-0123456789abcdef0:3, not lt-0123456789abcdef0:4: "
        "+1 node(s) to replace them first"
    )
    # The replacement boots: counted, so no second growth; not serving yet, so no cordon.
    d = run(rolled(*nodes, new(booting("n-1"))))
    assert (d.action, d.desired, d.drain) == (Action.HOLD, None, ())
    assert d.reason.endswith("waiting for the replacement capacity to serve")
    # The desired capacity the ASG has not launched yet counts the same.
    d = run(rolled(*nodes, desired=4))
    assert (d.action, d.desired, d.drain) == (Action.HOLD, None, ())
    # It serves: the emptiest drifted node is cordoned, meetings and all.
    fresh = new(serving("n-1", cpu=0.02, meetings=0))
    d = run(rolled(*nodes, fresh))
    assert (d.action, d.drain, d.replacing) == (Action.DRAIN, ("o-2",), ("o-2",))
    assert d.reason.endswith("drain 1 node(s)")


def test_a_drifted_drain_in_progress_uses_the_budget() -> None:
    tagged = old(draining("o-2", meetings=1))
    d = run(rolled(*warm(count=2), tagged, new(serving("n-1", cpu=0.3))))
    assert (d.action, d.drain, d.desired) == (Action.NONE, (), None)
    assert d.drifted == ("o-0", "o-1", "o-2")
    # Its meetings end: terminated by the usual step, after which the next one follows.
    done = old(draining("o-2"))
    d = run(rolled(*warm(count=2), done, new(serving("n-1", cpu=0.3))))
    assert d.terminate == ("o-2",)
    assert d.drain == ()


def test_the_budget_is_a_share_of_the_fleet() -> None:
    # Eight idle-ish nodes with lots of room: no replacement needed, the budget decides.
    nodes = [old(serving(f"o-{k}", cpu=0.1, meetings=1)) for k in range(8)]
    assert len(run(rolled(*nodes)).drain) == 1
    config = dataclasses.replace(DEFAULT, drift_budget=0.25)
    d = run(rolled(*nodes), config)
    assert len(d.drain) == 2
    assert d.numbers["drift_budget"] == 2
    off = dataclasses.replace(DEFAULT, drift_budget=0.0)
    d = run(rolled(*nodes), off)
    assert (d.action, d.drain) == (Action.NONE, ())
    assert d.drifted == tuple(f"o-{k}" for k in range(8))


def test_the_lower_bound_holds_a_single_node_until_its_replacement_serves() -> None:
    only = old(serving("o-0", cpu=0.1, meetings=1))
    d = run(rolled(only, min_size=1))
    assert (d.action, d.desired) == (Action.SCALE_OUT, 2)
    d = run(rolled(only, new(booting("n-1")), min_size=1))
    assert (d.action, d.drain) == (Action.HOLD, ())
    d = run(rolled(only, new(serving("n-1", cpu=0.02, meetings=0)), min_size=1))
    assert d.drain == ("o-0",)


def test_at_the_upper_bound_the_rollout_waits() -> None:
    d = run(rolled(*warm(), max_size=3))
    assert (d.action, d.desired, d.drain) == (Action.HOLD, None, ())
    assert d.reason.endswith("held, the group is at its upper bound 3")


def test_missing_data_holds_the_rollout_as_any_scale_in() -> None:
    stale = old(serving("o-9", cpu=0.1, meetings=1, age=120.0))
    d = run(rolled(*warm(), stale))
    assert (d.desired, d.drain) == (None, ())
    assert "no fresh data" in d.reason


def test_a_scale_out_comes_first() -> None:
    hot = [old(serving(f"o-{k}", cpu=0.9)) for k in range(3)]
    d = run(rolled(*hot))
    assert (d.action, d.replacing) == (Action.SCALE_OUT, ())
    assert not d.reason.startswith("drift")


@pytest.mark.parametrize(
    "snap",
    [
        rolled(*warm(), launch=None),
        rolled(*(dataclasses.replace(n, launch=None) for n in warm())),
        rolled(*(new(n) for n in warm())),
    ],
    ids=["group-unknown", "nodes-unknown", "current"],
)
def test_nothing_drifts_unless_both_launches_are_known_and_differ(snap: FleetSnapshot) -> None:
    d = run(snap)
    assert (d.action, d.drifted, d.replacing) == (Action.NONE, (), ())
    assert "drifted" not in d.numbers


def test_an_operators_cordon_is_left_alone() -> None:
    cordoned = old(serving("o-0", cpu=0.0, meetings=0, state="cordoned"))
    d = run(rolled(cordoned, *(new(serving(f"n-{k}", cpu=0.2)) for k in range(2))))
    assert d.drifted == ("o-0",)
    assert (d.drain, d.desired) == ((), None)


def test_the_presets_own_drains_and_undrains_prefer_what_drifted() -> None:
    # quiet: six nodes, two carry the load; the drifted ones go first among equals.
    nodes = [serving(k, cpu=0.05, meetings=1, participants=2) for k in "abcdef"]
    nodes = [old(n) if n.instance_id in "ef" else new(n) for n in nodes]
    history = History()
    config = dataclasses.replace(DEFAULT, scale_in_after=0.0)
    d = decide(rolled(*nodes), history, None, config, T0)
    assert d.drain[:2] == ("e", "f")
    # A scale-out re-enables a current draining node before a drifted one.
    hot = [new(serving(f"h-{k}", cpu=0.95)) for k in range(3)]
    tagged = [old(draining("d-old")), new(draining("d-new"))]
    d = run(rolled(*hot, *tagged, max_size=5))
    assert d.undrain[0] == "d-new"


def test_seed_replaces_drifted_nodes_too() -> None:
    nodes = [old(serving(f"o-{k}", cpu=0.5)) for k in range(2)]
    d = run(rolled(*nodes, min_size=2), SEED)
    assert (d.action, d.desired) == (Action.SCALE_OUT, 3)
    d = run(rolled(*nodes, new(serving("n-1", cpu=0.02, meetings=0)), min_size=2), SEED)
    assert d.drain == ("o-0",) or d.drain == ("o-1",)
    assert d.replacing == d.drain


def test_a_booting_drifted_node_waits_to_serve() -> None:
    late = dataclasses.replace(old(booting("o-b")), server=ServerView("o-b", "absent", None, False))
    d = run(rolled(late, *(new(serving(f"n-{k}", cpu=0.1)) for k in range(3))))
    assert d.drifted == ("o-b",)
    assert (d.drain, d.desired) == ((), None)


def test_the_presets_cooldowns_hold_a_rollout_step() -> None:
    nodes = warm()
    fresh = new(serving("n-1", cpu=0.02, meetings=0))
    # default: no drain within cooldown_in of the last growth (its own replacement, too).
    grown = History((), last_change_at=T0 - 100, last_growth_at=T0 - 100)
    d = decide(rolled(*nodes, fresh), grown, None, DEFAULT, T0)
    assert (d.action, d.drain) == (Action.HOLD, ())
    assert d.reason.endswith("drain held: cooldown")
    later = History((), last_change_at=T0 - 300, last_growth_at=T0 - 300)
    assert decide(rolled(*nodes, fresh), later, None, DEFAULT, T0).drain == ("o-2",)
    # seed: no growth within cooldown_out of any change.
    seed = dataclasses.replace(SEED, min_nodes=3)
    d = decide(rolled(*nodes), History((), last_change_at=T0 - 100), None, seed, T0)
    assert (d.action, d.desired) == (Action.HOLD, None)
    assert d.reason.endswith("replacement held: cooldown")


def test_the_replacement_is_not_the_presets_surplus_while_drifted_nodes_serve() -> None:
    # seed: the lowest CPU is under 6 % (the idle replacement), so one node may go; the only
    # idle one is the replacement. Taking it would make the rollout launch another.
    busy_old = old(serving("o-0", cpu=0.1, meetings=1))
    fresh = new(serving("n-1", cpu=0.02, meetings=0))
    config = dataclasses.replace(SEED, scale_in_after=0.0, cooldown_in=0.0, min_nodes=1)
    d = decide(rolled(busy_old, fresh), History(), None, config, T0)
    assert "n-1" not in d.drain
    assert d.drain == ("o-0",)  # the rollout's own drain: the replacement serves
    # With rollouts off the replacement is just an idle node.
    off = dataclasses.replace(config, drift_budget=0.0)
    assert decide(rolled(busy_old, fresh), History(), None, off, T0).drain == ("n-1",)
