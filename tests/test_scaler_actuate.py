"""The actuator and the control loop around it, with recording fakes for AWS and Scalelite."""

from __future__ import annotations

import dataclasses

import pytest

from bbbscaler.actuate import Actuator, Outcome
from bbbscaler.controller import Controller
from bbbscaler.exposition import ScalerMetrics
from bbbscaler.model import Action, Decision, FleetSnapshot, Node, NodeMetrics, ServerView
from bbbscaler.policy import PolicyConfig
from tests.scaler_fleets import T0, draining, serving, snapshot

CONFIG = PolicyConfig()


class Calls:
    """Both ports, writing down every call in order; ``fail`` names calls that raise."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.log: list[tuple[str, ...]] = []
        self.fail = fail

    def _note(self, *call: str) -> None:
        self.log.append(call)
        if call[0] in self.fail:
            raise RuntimeError(f"{call[0]} refused")

    async def set_desired(self, desired: int) -> None:
        self._note("set_desired", str(desired))

    async def terminate(self, instance_id: str) -> None:
        self._note("terminate", instance_id)

    async def mark_draining(self, instance_id: str, since: float) -> None:
        self._note("mark_draining", instance_id)

    async def unmark_draining(self, instance_id: str) -> None:
        self._note("unmark_draining", instance_id)

    async def set_state(self, server_id: str, state: str) -> None:
        self._note("set_state", server_id, state)


def actuator(
    calls: Calls, recheck: dict[str, Node] | None = None, dry_run: bool = False
) -> Actuator:
    async def look_again(node: Node) -> Node:
        return (recheck or {}).get(node.instance_id, node)

    return Actuator(calls, calls, look_again, CONFIG, dry_run=dry_run, clock=lambda: T0)


def with_server(node: Node, state: str, load: float | None = 0.0) -> Node:
    return dataclasses.replace(node, server=ServerView(node.instance_id, state, load, True))  # type: ignore[arg-type]


async def test_order_undrain_grow_drain_terminate() -> None:
    calls = Calls()
    back = with_server(draining("back"), "cordoned", 3.0)
    gone = with_server(draining("gone"), "disabled", None)
    snap = snapshot(serving("a"), serving("b"), back, gone)
    decision = Decision(
        Action.SCALE_OUT, "test", desired=6, undrain=("back",), drain=("a",), terminate=("gone",)
    )
    out = await actuator(calls).apply(decision, snap)
    assert calls.log == [
        ("set_state", "back", "enabled"),
        ("unmark_draining", "back"),
        ("set_desired", "6"),
        ("mark_draining", "a"),
        ("set_state", "a", "cordoned"),
        ("terminate", "gone"),
    ]
    assert all(o.result == "ok" for o in out)


async def test_terminate_waits_when_the_recheck_sees_a_meeting() -> None:
    calls = Calls()
    node = with_server(draining("d"), "disabled", None)
    busy = dataclasses.replace(node, metrics=NodeMetrics(0.2, 1, 3, 1.0))
    out = await actuator(calls, {"d": busy}).apply(
        Decision(Action.TERMINATE, "t", terminate=("d",)), snapshot(node)
    )
    assert calls.log == []
    assert out == (
        Outcome("terminate", "d", "skipped", "1 meeting(s), 3 participant(s) on re-check"),
    )


async def test_terminate_waits_when_the_recheck_fails() -> None:
    calls = Calls()
    node = with_server(draining("d"), "disabled", None)

    async def broken(_: Node) -> Node:
        raise TimeoutError("scrape timed out")

    act = Actuator(calls, calls, broken, CONFIG, clock=lambda: T0)
    out = await act.apply(Decision(Action.TERMINATE, "t", terminate=("d",)), snapshot(node))
    assert calls.log == []
    assert out[0].result == "skipped"
    assert "re-check failed" in out[0].detail


async def test_a_failed_call_does_not_stop_the_others_and_a_failed_tag_stops_its_cordon() -> None:
    calls = Calls(fail=frozenset({"mark_draining"}))
    snap = snapshot(serving("a"), serving("b"))
    decision = Decision(Action.DRAIN, "t", desired=4, drain=("a", "b"))
    out = await actuator(calls).apply(decision, snap)
    assert ("set_desired", "4") in calls.log
    assert not any(c[0] == "set_state" for c in calls.log), "cordoned without its tag"
    assert [o.result for o in out] == ["ok", "failed", "failed"]


async def test_a_drain_whose_server_was_re_enabled_is_cordoned_again() -> None:
    calls = Calls()
    snap = snapshot(serving("a"), with_server(draining("d"), "enabled", 2.0))
    await actuator(calls).apply(Decision(Action.NONE, "steady"), snap)
    assert calls.log == [("set_state", "d", "cordoned")]


async def test_dry_run_calls_nothing_and_says_what_it_would_do() -> None:
    calls = Calls()
    snap = snapshot(serving("a"), with_server(draining("gone"), "disabled", None))
    decision = Decision(Action.DRAIN, "t", desired=3, drain=("a",), terminate=("gone",))
    out = await actuator(calls, dry_run=True).apply(decision, snap)
    assert calls.log == []
    assert {o.result for o in out} == {"dry_run"}
    assert {o.action for o in out} == {"set_desired", "mark_draining", "cordon", "terminate"}


class Observer:
    def __init__(self, snaps: list[FleetSnapshot | Exception]) -> None:
        self.snaps = snaps

    async def observe(self) -> FleetSnapshot:
        item = self.snaps.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def recheck(self, node: Node) -> Node:
        return node


async def test_the_loop_survives_a_failed_observation_and_keeps_its_history() -> None:
    metrics = ScalerMetrics("default", dry_run=False)
    busy = snapshot(*(serving(f"i-{k}", cpu=0.9, meetings=4) for k in range(3)), max_size=10)
    observer = Observer([RuntimeError("DescribeAutoScalingGroups throttled"), busy])
    calls = Calls()
    controller = Controller(observer, actuator(calls), CONFIG, metrics, clock=lambda: T0)
    assert await controller.round() is None
    assert controller.alive(10.0, 30.0)
    done = await controller.round()
    assert done is not None
    assert done.decision.action is Action.SCALE_OUT
    assert calls.log[0][0] == "set_desired"
    assert controller.history.last_change_at == T0
    text = metrics.render().decode()
    assert "bbbscaler_round_errors_total 1.0" in text
    assert 'bbbscaler_decisions_total{action="scale_out"} 1.0' in text
    assert done.as_json()["desired"] == {"current": 3, "target": done.decision.desired}


@pytest.mark.parametrize("suspended", [frozenset(), frozenset({"AZRebalance"})])
async def test_az_rebalance_is_reported(suspended: frozenset[str]) -> None:
    metrics = ScalerMetrics("seed", dry_run=True)
    snap = snapshot(serving("a"))
    snap = dataclasses.replace(snap, group=dataclasses.replace(snap.group, suspended=suspended))
    controller = Controller(Observer([snap]), actuator(Calls()), CONFIG, metrics, clock=lambda: T0)
    await controller.round()
    expected = "1.0" if suspended else "0.0"
    assert f"bbbscaler_az_rebalance_suspended {expected}" in metrics.render().decode()
