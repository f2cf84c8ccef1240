"""The backtest's fleet model on its own: Scalelite's placement and poller, the CPU model,
boot delay, drain, and the count of meetings a termination ends."""

from __future__ import annotations

import pytest

from bbbscaler.model import Action, Decision, FleetSnapshot, Node
from bbbsim.demand import HostSpec, meeting_units
from bbbsim.fleet_model import FleetSettings, FleetSim, policy_config, prepare
from bbbsim.host_model import cpu_utilization, meeting_load, total_load
from bbbsim.trace import Trace, TraceMeeting

SETTINGS = FleetSettings(verify=True)


def sim(*meetings: TraceMeeting, settings: FleetSettings = SETTINGS) -> FleetSim:
    trace = Trace("t", meetings)
    return FleetSim(prepare(trace, settings), policy_config("default", settings), settings)


def nodes(snap: FleetSnapshot) -> dict[str, Node]:
    return {n.instance_id: n for n in snap.nodes}


def meetings_on(snap: FleetSnapshot) -> list[int | None]:
    return [n.metrics.meetings if n.metrics else None for n in snap.nodes]


def test_placement_follows_scalelite_between_and_at_polls() -> None:
    two = FleetSettings(min_nodes=2, verify=True)
    # Three creates before the next poll: each adds 1 to its server's load.
    s = sim(*(TraceMeeting(1 + k, 3600, 10) for k in range(3)), settings=two)
    s.advance(10)
    snap = s.snapshot(10)
    a, b = snap.nodes
    # Equal loads go to the smaller id, then to the other (load 1 > 0), then back.
    assert meetings_on(snap) == [2, 1]
    assert (a.server and a.server.load, b.server and b.server.load) == (2.0, 1.0)
    # The poll at 60 s recomputes: participants + 1 moderator, at least 15 while young.
    s.advance(60)
    a, b = s.snapshot(60).nodes
    assert (a.server and a.server.load, b.server and b.server.load) == (30.0, 15.0)
    # After the 15-minute join buffer the real count: 11 per meeting.
    s.advance(1020)
    a, b = s.snapshot(1020).nodes
    assert (a.server and a.server.load, b.server and b.server.load) == (22.0, 11.0)


def test_node_cpu_is_the_host_model_of_its_meetings() -> None:
    meetings = [TraceMeeting(0, 600, 20, 2), TraceMeeting(0, 600, 8, 1), TraceMeeting(0, 600, 3)]
    s = sim(*meetings)
    s.advance(0)
    (node,) = s.snapshot(0).nodes
    # A quarter on the microphone, every camera seen by every other participant.
    load = total_load(
        [meeting_load(m.participants, m.participants // 4, m.cameras) for m in meetings]
    )
    assert node.metrics is not None
    assert node.metrics.cpu == pytest.approx(cpu_utilization(load), abs=1e-6)
    assert (node.metrics.meetings, node.metrics.participants) == (3, 31)
    # Every meeting over: exactly idle again (integer micro-cores, no drift).
    s.advance(600)
    (node,) = s.snapshot(600).nodes
    assert node.metrics is not None
    assert node.metrics.cpu == cpu_utilization(total_load([]))


def test_big_meeting_and_overload_accounting() -> None:
    host = HostSpec()
    big = TraceMeeting(0, 3600, 280, 1)
    assert host.overloaded(meeting_units(big, host))
    s = sim(big, TraceMeeting(60, 600, 8, 1))
    s.advance(3600)
    run = s.result("x")
    assert run.overload_node_minutes == pytest.approx(60.0)
    # The second meeting had nowhere else to go: placed on an overloaded node.
    assert run.meetings_on_overloaded_node == 1


def test_new_instances_serve_after_boot_and_the_next_poll() -> None:
    s = sim(TraceMeeting(200, 600, 5), TraceMeeting(245, 600, 5))
    s.advance(10)
    s.apply(Decision(Action.SCALE_OUT, "test", desired=2), 10)
    pending = s.snapshot(10).nodes[1]
    assert (pending.lifecycle, pending.metrics, pending.server and pending.server.state) == (
        "Pending",
        None,
        "absent",
    )
    s.advance(189)
    assert s.snapshot(189).nodes[1].lifecycle == "Pending"
    s.advance(190)
    booted = s.snapshot(190).nodes[1]
    assert booted.lifecycle == "InService"
    assert booted.server is not None
    assert (booted.server.state, booted.server.online, booted.server.load) == (
        "enabled",
        False,
        None,
    )
    # Not yet polled: the meeting at 200 goes to the old node; after the poll at 240, the new one.
    s.advance(250)
    assert meetings_on(s.snapshot(250)) == [1, 1]
    run = s.result("x")
    assert run.instance_hours == pytest.approx((250 + 240) / 3600)
    assert run.capacity == ((0.0, 1), (190.0, 2))


def test_a_drained_node_keeps_its_meetings_until_they_end() -> None:
    two = FleetSettings(start_nodes=2, verify=True)
    trace = (TraceMeeting(0, 900, 5), TraceMeeting(1, 900, 5), TraceMeeting(100, 60, 5))
    s = sim(*trace, settings=two)
    s.advance(10)
    first, second = (n.instance_id for n in s.snapshot(10).nodes)
    s.apply(Decision(Action.DRAIN, "test", drain=(first,)), 10)
    s.advance(100)
    snap = s.snapshot(100)
    drained = nodes(snap)[first]
    assert drained.draining
    assert drained.server is not None
    assert drained.server.state == "cordoned"
    assert meetings_on(snap) == [1, 2]  # the new meeting went to the other node
    # Its meeting ends at 900; the poll at 960 sees load 0: Scalelite disables it.
    s.advance(960)
    drained = nodes(s.snapshot(960))[first]
    assert drained.metrics is not None
    assert drained.metrics.meetings == 0
    assert drained.server is not None
    assert (drained.server.state, drained.server.load) == ("disabled", None)
    # The policy itself now finds it drained and terminates it: nothing ended.
    decision = s.round(960)
    assert decision.terminate == (first,)
    assert [n.instance_id for n in s.snapshot(960).nodes] == [second]
    assert s.result("x").meetings_ended_by_platform == 0


def test_undrain_puts_a_node_back_into_placement() -> None:
    two = FleetSettings(min_nodes=2, verify=True)
    s = sim(TraceMeeting(70, 600, 5), TraceMeeting(71, 600, 5), settings=two)
    first = s.snapshot(0).nodes[0].instance_id
    s.apply(Decision(Action.DRAIN, "test", drain=(first,)), 0)
    s.advance(60)  # polled at load 0: disabled
    s.apply(Decision(Action.UNDRAIN, "test", undrain=(first,)), 60)
    back = nodes(s.snapshot(60))[first]
    assert not back.draining
    assert back.server is not None
    assert (back.server.state, back.server.load) == ("enabled", None)
    s.advance(75)
    # Enabled but without a load until the next poll: both new meetings go to the other node.
    assert meetings_on(s.snapshot(75)) == [0, 2]


def test_terminating_a_busy_node_counts_its_meetings_as_ended_by_the_platform() -> None:
    two = FleetSettings(min_nodes=2, verify=True)
    s = sim(TraceMeeting(0, 900, 5), TraceMeeting(1, 900, 5), TraceMeeting(2, 900, 5), settings=two)
    s.advance(10)
    busiest = s.snapshot(10).nodes[0].instance_id
    s.apply(Decision(Action.TERMINATE, "test", terminate=(busiest,)), 10)
    s.advance(2000)  # the ended meetings' own ends are no-ops now
    run = s.result("x")
    assert run.meetings_ended_by_platform == 2
    assert run.capacity[-1] == (10.0, 1)
    # A lowered desired lets the ASG pick a victim, with the same count.
    s = sim(TraceMeeting(0, 900, 5), TraceMeeting(1, 900, 5), settings=two)
    s.advance(10)
    s.apply(Decision(Action.SCALE_OUT, "test", desired=1), 10)
    assert s.result("x").meetings_ended_by_platform == 1


def test_no_server_to_take_a_meeting_refuses_it() -> None:
    s = sim(TraceMeeting(5, 60, 5), settings=FleetSettings(min_nodes=0, verify=True))
    s.advance(10)
    assert s.result("x").meetings_refused == 1
