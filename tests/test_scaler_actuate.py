"""The actuator and the control loop around it, with recording fakes for AWS and Scalelite."""

from __future__ import annotations

import dataclasses

import pytest
from structlog.testing import capture_logs

from bbbscaler.actuate import Actuator, Outcome
from bbbscaler.controller import Controller, Round
from bbbscaler.exposition import ScalerMetrics
from bbbscaler.model import Action, Decision, FleetSnapshot, Node, NodeMetrics, ServerView
from bbbscaler.policy import PolicyConfig
from bbbscaler.schedule import Window
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

    async def set_load_multiplier(self, server_id: str, multiplier: float) -> None:
        self._note("set_load_multiplier", server_id, f"{multiplier:g}")


def actuator(
    calls: Calls, recheck: dict[str, Node] | None = None, dry_run: bool = False
) -> Actuator:
    async def look_again(node: Node) -> Node:
        return (recheck or {}).get(node.instance_id, node)

    return Actuator(calls, calls, look_again, CONFIG, dry_run=dry_run, clock=lambda: T0)


def with_server(node: Node, state: str, load: float | None = 0.0, multiplier: float = 1.0) -> Node:
    server = ServerView(node.instance_id, state, load, True, multiplier)  # type: ignore[arg-type]
    return dataclasses.replace(node, server=server)


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


async def test_steer_comes_after_the_cordons_and_before_terminate() -> None:
    calls = Calls()
    gone = with_server(draining("gone"), "disabled", None)
    snap = snapshot(serving("a"), serving("b"), serving("c"), gone)
    decision = Decision(
        Action.DRAIN,
        "t",
        drain=("a",),
        terminate=("gone",),
        steer=(("b", 100.0), ("c", 1.0)),
    )
    out = await actuator(calls).apply(decision, snap)
    assert calls.log == [
        ("mark_draining", "a"),
        ("set_state", "a", "cordoned"),
        ("set_load_multiplier", "b", "100"),
        ("set_load_multiplier", "c", "1"),
        ("terminate", "gone"),
    ]
    assert [o for o in out if o.action == "steer"] == [
        Outcome("steer", "b", "ok", "load_multiplier=100"),
        Outcome("steer", "c", "ok", "load_multiplier=1"),
    ]


async def test_steer_calls_the_server_by_its_scalelite_id() -> None:
    calls = Calls()
    node = dataclasses.replace(serving("i-a"), server=ServerView("sl-7", "enabled", 2.0, True))
    await actuator(calls).apply(Decision(Action.NONE, "t", steer=(("i-a", 2.5),)), snapshot(node))
    assert calls.log == [("set_load_multiplier", "sl-7", "2.5")]


async def test_steer_in_dry_run_calls_nothing() -> None:
    calls = Calls()
    decision = Decision(Action.NONE, "t", steer=(("a", 100.0),))
    out = await actuator(calls, dry_run=True).apply(decision, snapshot(serving("a")))
    assert calls.log == []
    assert out == (Outcome("steer", "a", "dry_run", "load_multiplier=100"),)


async def test_steer_skips_a_node_it_cannot_address() -> None:
    calls = Calls()
    unknown = dataclasses.replace(serving("unknown"), server=None)
    absent = with_server(serving("absent"), "absent", None)
    decision = Decision(
        Action.NONE, "t", steer=(("gone", 100.0), ("unknown", 100.0), ("absent", 100.0))
    )
    out = await actuator(calls).apply(decision, snapshot(unknown, absent))
    assert calls.log == []
    assert [(o.action, o.target, o.result) for o in out] == [
        ("steer", "gone", "skipped"),
        ("steer", "unknown", "skipped"),
        ("steer", "absent", "skipped"),
    ]
    assert all(o.detail for o in out), "a skip says why"


async def test_a_failed_steer_does_not_stop_the_next_steer_or_terminate() -> None:
    calls = Calls(fail=frozenset({"set_load_multiplier"}))
    gone = with_server(draining("gone"), "disabled", None)
    decision = Decision(
        Action.TERMINATE, "t", terminate=("gone",), steer=(("a", 100.0), ("b", 100.0))
    )
    out = await actuator(calls).apply(decision, snapshot(serving("a"), serving("b"), gone))
    assert calls.log == [
        ("set_load_multiplier", "a", "100"),
        ("set_load_multiplier", "b", "100"),
        ("terminate", "gone"),
    ]
    assert [o.result for o in out] == ["failed", "failed", "ok"]
    assert out[0].detail == "load_multiplier=100: RuntimeError: set_load_multiplier refused"


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


async def test_a_round_reports_its_steer_in_json_and_metrics() -> None:
    metrics = ScalerMetrics("default", dry_run=False)
    snap = snapshot(
        with_server(serving("a"), "enabled", 1.0, multiplier=100.0),
        with_server(serving("b"), "enabled", 1.0, multiplier=2.0),
        with_server(serving("c"), "enabled", 1.0, multiplier=1.0),
    )
    decision = Decision(Action.NONE, "t", steer=(("c", 100.0),))
    calls = Calls()
    out = await actuator(calls).apply(decision, snap)
    for outcome in out:
        metrics.record_outcome(outcome)
    metrics.record_round(snap, decision, {"serving": 3}, T0)
    text = metrics.render().decode()
    # Observed before this round's steer: c counts from the next round on.
    assert "bbbscaler_steered_nodes 2.0" in text
    assert 'bbbscaler_actions_total{action="steer",result="ok"} 1.0' in text
    assert 'bbbscaler_actions_total{action="steer",result="failed"} 0.0' in text
    done = Round(snap, decision, out, dry_run=False).as_json()
    assert done["steer"] == {"c": 100.0}
    assert done["outcomes"] == [
        {"action": "steer", "target": "c", "result": "ok", "detail": "load_multiplier=100"}
    ]
    assert Round(snap, Decision(Action.NONE, "t"), (), dry_run=False).as_json()["steer"] == {}


def test_steered_nodes_is_zero_without_steering() -> None:
    metrics = ScalerMetrics("default", dry_run=False)
    snap = snapshot(serving("a"), with_server(serving("gone"), "absent", None))
    metrics.record_round(snap, Decision(Action.NONE, "t"), {"serving": 1}, T0)
    assert "bbbscaler_steered_nodes 0.0" in metrics.render().decode()


@pytest.mark.parametrize("suspended", [frozenset(), frozenset({"AZRebalance"})])
async def test_az_rebalance_is_reported(suspended: frozenset[str]) -> None:
    metrics = ScalerMetrics("seed", dry_run=True)
    snap = snapshot(serving("a"))
    snap = dataclasses.replace(snap, group=dataclasses.replace(snap.group, suspended=suspended))
    controller = Controller(Observer([snap]), actuator(Calls()), CONFIG, metrics, clock=lambda: T0)
    await controller.round()
    expected = "1.0" if suspended else "0.0"
    assert f"bbbscaler_az_rebalance_suspended {expected}" in metrics.render().decode()


async def test_a_missed_schedule_window_is_a_warning_a_metric_and_json() -> None:
    # 2026-01-01 (T0) is a Thursday; "exam" opens at 00:02, two minutes after the first
    # round: three new nodes serve at 00:03, 60 s late. "huge" asks for more than MaxSize.
    exam = Window("exam", frozenset({3}), 2, 120, "UTC", 5)
    huge = Window("huge", frozenset({0}), 600, 660, "UTC", 30)
    config = dataclasses.replace(CONFIG, windows=(exam, huge))
    metrics = ScalerMetrics("default", dry_run=False, windows=["exam", "huge"])
    fleet = snapshot(*(serving(f"i-{k}", cpu=0.4) for k in range(2)), max_size=10)
    observer = Observer([fleet, dataclasses.replace(fleet, at=T0 + 10)])
    controller = Controller(observer, actuator(Calls()), config, metrics, clock=lambda: T0)
    with capture_logs() as logs:
        first = await controller.round()
        await controller.round()
    assert first is not None
    assert first.as_json()["schedule_misses"] == [
        {"window": "exam", "start": T0 + 120, "min_nodes": 5, "late_s": 60.0, "short_nodes": 0}
    ]
    missed = [e for e in logs if e["event"] == "schedule_window_missed"]
    # Once, not every round while it lasts.
    assert len(missed) == 1
    assert missed[0]["log_level"] == "warning"
    assert (missed[0]["window"], missed[0]["late_s"], missed[0]["short_nodes"]) == ("exam", 60, 0)
    assert missed[0]["starts_at"] == "2026-01-01T00:02:00+00:00"
    too_big = [e for e in logs if e["event"] == "schedule_exceeds_upper_bound"]
    assert [(e["window"], e["min_nodes"], e["upper"]) for e in too_big] == [("huge", 30, 10)]
    text = metrics.render().decode()
    assert 'bbbscaler_schedule_late_seconds{window="exam"} 60.0' in text
    assert 'bbbscaler_schedule_late_seconds{window="huge"} 0.0' in text
    assert 'bbbscaler_schedule_short_nodes{window="exam"} 0.0' in text
