"""bbbscaler and the warm pool: its hosts are no capacity, its ready hosts shorten the lag of
the next launches, and explain, the metrics and the decision JSON show it.

The reads run against moto behind the lifecycle layer, whose warm pool follows AWS's
documentation (tests/test_warm_pool_layer.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from bbbscaler.actuate import Outcome
from bbbscaler.asg import AsgAdapter, warm_pool
from bbbscaler.controller import Round
from bbbscaler.explain import render
from bbbscaler.exposition import ScalerMetrics
from bbbscaler.model import Action, Decision, FleetSnapshot, Node, WarmPool, WindowMiss
from bbbscaler.policy import History, PolicyConfig, decide, sort_fleet
from bbbscaler.policy.warm import launch_lags
from bbbscaler.policy.windows import ready_times
from bbbscaler.schedule import Window
from bbbsim.moto_server import FleetIds, FleetSpec
from tests.scaler_fleets import T0, booting, serving, snapshot
from tests.scaler_nodes import asg_clients

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_ec2.client import EC2Client

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]
CONFIG = PolicyConfig()
POOL = WarmPool(min_size=2, max_prepared=2, ready=("i-w1", "i-w2"))


def pooled(*nodes: Node, pool: WarmPool | None = POOL) -> FleetSnapshot:
    return dataclasses.replace(snapshot(*nodes), pool=pool)


# ------------------------------------------------------------------ the policy


def test_warm_hosts_are_neither_serving_nor_booting_capacity() -> None:
    warm = Node("i-w1", "Warmed:Stopped", launched_at=T0 - 600)
    warming = Node("i-w2", "Warmed:Pending:Wait", launched_at=T0 - 30)
    snap = dataclasses.replace(snapshot(serving("i-a"), warm, warming, desired=1), pool=POOL)
    fleet = sort_fleet(snap, CONFIG)
    assert [n.instance_id for n in fleet.members] == ["i-a"]
    assert fleet.capacity == 1
    assert fleet.booting == ()
    assert not warming.pending


def test_the_lag_is_the_warm_start_while_ready_hosts_are_left() -> None:
    assert launch_lags(POOL, 3, CONFIG) == [45.0, 45.0, 180.0]
    assert launch_lags(None, 2, CONFIG) == [180.0, 180.0]
    assert launch_lags(WarmPool(warming=("i-w",)), 1, CONFIG) == [180.0]


def test_a_busy_fleet_grows_the_same_with_a_pool_and_says_how_soon() -> None:
    busy = snapshot(serving("i-a", cpu=0.9, meetings=9), serving("i-b", cpu=0.9, meetings=9))
    without = decide(busy, History(), None, CONFIG, T0)
    with_pool = decide(dataclasses.replace(busy, pool=POOL), History(), None, CONFIG, T0)
    assert with_pool.action is Action.SCALE_OUT
    assert with_pool.desired == without.desired
    grown = (with_pool.desired or 0) - 2
    assert with_pool.numbers["launch_lag_s"] == (45.0 if grown <= 2 else 180.0)
    assert without.numbers["launch_lag_s"] == 180.0
    assert with_pool.numbers["warm_ready"] == 2
    assert "warm_ready" not in without.numbers


def test_a_node_from_the_pool_serves_after_the_warm_start_time() -> None:
    cold = booting("i-c", since=20)
    warm = dataclasses.replace(booting("i-w", since=20), warm_start=True)
    snap = snapshot(cold, warm)
    fleet = sort_fleet(snap, CONFIG)
    times = ready_times(snap, fleet, Decision(Action.NONE, "t"), CONFIG, T0)
    assert times == [T0 - 20 + 45, T0 - 20 + 180]


def test_a_window_is_late_only_for_the_launches_the_pool_cannot_serve() -> None:
    # The exam opens now and wants 4 nodes: 2 serve, 2 from the pool serve in 45 s (within
    # no round here: late), a third launch would be cold.
    window = Window("exam", frozenset({3}), 0, 60, "UTC", 5)
    config = dataclasses.replace(CONFIG, windows=(window,), interval=10.0)
    snap = snapshot(serving("i-a", cpu=0.3), serving("i-b", cpu=0.3), max_size=20)
    cold = decide(snap, History(), None, config, T0)
    warm = decide(dataclasses.replace(snap, pool=POOL), History(), None, config, T0)
    assert cold.desired == warm.desired == 5
    (late_cold,) = cold.schedule_misses
    (late_warm,) = warm.schedule_misses
    assert late_cold.late_s == 180.0
    assert late_warm.late_s == 180.0  # the third launch is cold either way
    small = dataclasses.replace(window, min_nodes=4)
    config = dataclasses.replace(config, windows=(small,))
    (partly,) = decide(
        dataclasses.replace(snap, pool=POOL), History(), None, config, T0
    ).schedule_misses
    assert partly == WindowMiss("exam", partly.start, 4, 45.0, 0)


# ------------------------------------------------------------------ what operators see


def test_explain_shows_the_pool() -> None:
    snap = pooled(serving("i-a"), pool=dataclasses.replace(POOL, warming=("i-w3",)))
    d = decide(snap, History(), None, CONFIG, T0)
    text = render(snap, d, CONFIG)
    assert (
        "warm pool (Stopped, min 2): 2 ready, 1 warming, 0 leaving; no capacity until a "
        "scale-out starts them (warm start 45 s, cold 180 s); next launch serves in ~45 s"
    ) in text
    assert "  ready: i-w1, i-w2" in text
    assert "i-w1" not in text.split("\n\n")[0], "pool hosts are not in the member table"


def test_metrics_and_the_decision_json_show_the_pool() -> None:
    snap = pooled(serving("i-a"))
    d = decide(snap, History(), None, CONFIG, T0)
    metrics = ScalerMetrics("default", dry_run=False)
    metrics.record_round(snap, d, {}, T0)
    text = metrics.render().decode()
    assert 'bbbscaler_warm_pool_instances{state="ready"} 2.0' in text
    assert 'bbbscaler_warm_pool_instances{state="warming"} 0.0' in text
    assert "bbbscaler_launch_lag_seconds 45.0" in text
    doc = Round(snap, d, (Outcome("set_desired", "g", "ok"),), dry_run=False).as_json()
    assert doc["warm_pool"] == {
        "ready": ["i-w1", "i-w2"],
        "warming": [],
        "leaving": [],
        "min_size": 2,
        "max_prepared": 2,
        "pool_state": "Stopped",
    }
    plain = snapshot(serving("i-a"))
    none = Round(plain, decide(plain, History(), None, CONFIG, T0), (), dry_run=False).as_json()
    assert none["warm_pool"] is None
    metrics.record_round(plain, decide(plain, History(), None, CONFIG, T0), {}, T0)
    assert 'bbbscaler_warm_pool_instances{state="ready"} 0.0' in metrics.render().decode()


def test_warm_pool_answer_parsing() -> None:
    pool = warm_pool(
        {
            "WarmPoolConfiguration": {"MinSize": 2, "MaxGroupPreparedCapacity": -1},
            "Instances": [
                {"InstanceId": "i-2", "LifecycleState": "Warmed:Stopped"},
                {"InstanceId": "i-1", "LifecycleState": "Warmed:Pending:Wait"},
                {"InstanceId": "i-3", "LifecycleState": "Warmed:Terminating:Wait"},
                {"InstanceId": "i-4", "LifecycleState": "Warmed:Hibernated"},
            ],
        }
    )
    assert pool == WarmPool(2, None, "Stopped", ("i-2", "i-4"), ("i-1",), ("i-3",))
    assert pool.size == 4


# ------------------------------------------------------------------ against the layer


@pytest_asyncio.fixture
async def clients(aws_endpoint: str) -> AsyncIterator[tuple[AutoScalingClient, EC2Client]]:
    async with asg_clients() as pair:
        yield pair


@pytest.mark.integration
async def test_the_adapter_reads_the_pool_and_knows_who_came_from_it(
    make_fleet: MakeFleet, clients: tuple[AutoScalingClient, EC2Client]
) -> None:
    autoscaling, ec2 = clients
    adapter = AsgAdapter(autoscaling, ec2, "bbb-fleet")
    await make_fleet(FleetSpec(desired=1, max_size=4))
    await adapter.describe_group()
    assert await adapter.describe_warm_pool() is None  # no pool: no call
    await autoscaling.put_warm_pool(
        AutoScalingGroupName="bbb-fleet", MinSize=2, MaxGroupPreparedCapacity=2
    )
    await adapter.describe_group()
    pool = await adapter.describe_warm_pool()
    assert pool is not None
    assert len(pool.ready) == 2  # no launch hook: stopped at once
    assert pool.min_size == 2
    _group, members = await adapter.describe_group()
    assert len(members) == 1
    await adapter.set_desired(2)
    _, members = await adapter.describe_group()
    started = [m.instance_id for m in members if m.instance_id in pool.ready]
    assert len(started) == 1
    assert adapter.came_from_pool(started[0])
    assert not any(
        adapter.came_from_pool(m.instance_id) for m in members if m.instance_id != started[0]
    )
