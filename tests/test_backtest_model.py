"""The backtest's fleet model on its own: Scalelite's placement and poller, the CPU model,
boot delay, drain, and the count of meetings a termination ends."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bbbscaler.model import Action, Decision, FleetSnapshot, Node
from bbbsim.demand import HostSpec, meeting_units
from bbbsim.fleet_model import FleetSettings, FleetSim, join_groups, policy_config, prepare
from bbbsim.host_model import cpu_utilization, meeting_load, total_load
from bbbsim.recording_processing import RecordingSpec
from bbbsim.scalelite_poller import PollerSpec, failure_probability, healthy_round
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
    # Three creates of 10 before the next poll. Each adds 1 for the create and 1 for each of
    # the 2 participants joining with it (10 join in 5 groups, 30 s apart).
    assert join_groups(10, 120) == (2, 2, 2, 2, 2)
    s = sim(*(TraceMeeting(1 + k, 3600, 10) for k in range(3)), settings=two)
    s.advance(10)
    snap = s.snapshot(10)
    a, b = snap.nodes
    # Equal loads go to the smaller id, then to the other (load 3 > 0), then back (3 = 3).
    assert meetings_on(snap) == [2, 1]
    assert (a.server and a.server.load, b.server and b.server.load) == (6.0, 3.0)
    # A round every POLL_INTERVAL after the last one ended (0.1 s each, one call): the one at
    # 60.3 s recomputes: joined participants + 1 moderator, at least 15 while young.
    s.advance(60.5)
    a, b = s.snapshot(60.5).nodes
    assert (a.server and a.server.load, b.server and b.server.load) == (30.0, 15.0)
    # After the 15-minute join buffer the real count: 11 per meeting.
    s.advance(1020)
    a, b = s.snapshot(1020).nodes
    assert (a.server and a.server.load, b.server and b.server.load) == (22.0, 11.0)


def test_joins_add_to_scalelites_load_between_polls() -> None:
    # bigbluebutton_api_controller.rb:328: every join counts, times the multiplier.
    s = sim(TraceMeeting(1, 3600, 10))
    s.advance(10)
    (node,) = s.snapshot(10).nodes
    assert node.server is not None
    assert node.server.load == 1 + 2
    s.advance(25)  # polled at 20.1: max(2 joined + 1 moderator, 15)
    assert s.snapshot(25).nodes[0].server.load == 15.0  # type: ignore[union-attr]
    s.apply(Decision(Action.NONE, "test", steer=((node.instance_id, 4.0),)), 25)
    s.advance(35)  # 2 more joined at 31: 2 x 4 on top of the polled 15
    assert s.snapshot(35).nodes[0].server.load == 15.0 + 2 * 4.0  # type: ignore[union-attr]


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
    s.advance(61)  # polled at load 0 (at 20.1 s): disabled
    s.apply(Decision(Action.UNDRAIN, "test", undrain=(first,)), 61)
    back = nodes(s.snapshot(61))[first]
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


def test_a_lowered_desired_terminates_only_unprotected_instances() -> None:
    # bbbnode protects a node while it hosts a meeting: the ASG picks the idle one.
    two = FleetSettings(min_nodes=2, verify=True)
    s = sim(TraceMeeting(0, 900, 5), settings=two)
    s.advance(10)
    busy, idle = (n.instance_id for n in s.snapshot(10).nodes)
    assert nodes(s.snapshot(10))[busy].protected
    assert not nodes(s.snapshot(10))[idle].protected
    s.apply(Decision(Action.NONE, "an operator lowers desired", desired=1), 10)
    assert [n.instance_id for n in s.snapshot(10).nodes] == [busy]
    assert s.result("x").meetings_ended_by_platform == 0
    # Every node protected: desired is lowered, and the group waits for one to lose its
    # protection; then it terminates that one, and no meeting ends.
    s = sim(TraceMeeting(0, 900, 5), TraceMeeting(1, 300, 5), settings=two)
    s.advance(10)
    first, second = (n.instance_id for n in s.snapshot(10).nodes)
    s.apply(Decision(Action.NONE, "an operator lowers desired", desired=1), 10)
    assert len(s.snapshot(10).nodes) == 2
    s.advance(400)  # the meeting on the second node ended at 301
    s.round(400)  # the group's reconciliation; the policy may launch a node after it
    left = [n.instance_id for n in s.snapshot(400).nodes]
    assert first in left
    assert second not in left
    assert s.result("x").meetings_ended_by_platform == 0


def test_among_unprotected_instances_the_closest_to_the_billing_hour_goes() -> None:
    # The default termination policy: oldest launch template, then the closest to the next
    # billing hour. At 1,000 s the node launched at 0 is 1,000 s into its hour, the one
    # launched at 10 s 990 s: the first goes.
    s = sim(TraceMeeting(5000, 60, 5))
    s.advance(10)
    s.apply(Decision(Action.SCALE_OUT, "test", desired=2), 10)
    s.advance(1000)
    _first, second = (n.instance_id for n in s.snapshot(1000).nodes)
    s.apply(Decision(Action.NONE, "an operator lowers desired", desired=1), 1000)
    assert [n.instance_id for n in s.snapshot(1000).nodes] == [second]


def test_no_server_to_take_a_meeting_refuses_it() -> None:
    s = sim(TraceMeeting(5, 60, 5), settings=FleetSettings(min_nodes=0, verify=True))
    s.advance(10)
    assert s.result("x").meetings_refused == 1


# --- Scalelite's own hand (lib/tasks/poll.rake at v1.8.5) -----------------------------------

MASS = TraceMeeting(0, 3600, 280, 1)
"""Alone 91 % of a host: above 80 % (polls may fail), below 100 %."""
CRUSH = TraceMeeting(0, 3600, 400, 1)
"""Alone more than the host: 100 % CPU."""


def test_poll_failure_curve() -> None:
    chart = PollerSpec()
    stock = PollerSpec(threads=5, wait_timeout=10, response_timeout=10, unhealthy_threshold=2)
    # At or under 80 % never (issue 13); above, exp(-T / mean answer), the mean growing with
    # the square of the CPU over 80 %: 10 s at 100 %, and no further beyond.
    for cpu in (0.0, 0.5, 0.8):
        assert failure_probability(cpu, chart) == 0.0
    assert failure_probability(1.0, stock) == pytest.approx(math.exp(-1))
    assert failure_probability(1.0, chart) == pytest.approx(math.exp(-2))
    assert failure_probability(1.7, chart) == failure_probability(1.0, chart)
    assert failure_probability(0.9, chart) == pytest.approx(math.exp(-20 / 2.5))
    cpus = [0.81 + k / 100 for k in range(20)]
    probabilities = [failure_probability(c, chart) for c in cpus]
    assert probabilities == sorted(probabilities)


def test_a_host_at_100_percent_loses_its_meetings_to_scalelite() -> None:
    # poll.rake:93-118: SERVER_UNHEALTHY_THRESHOLD failures in a row: offline, meetings ended.
    stock = FleetSettings(
        poller=PollerSpec(response_timeout=10, unhealthy_threshold=2, answer_time_at_full=1e6),
        verify=True,
    )
    s = sim(CRUSH, TraceMeeting(5, 3600, 5), settings=stock)
    # Polled at 0 (answered, before the meetings), failed at 20.1; a failed poll holds its
    # worker for RESPONSE_TIMEOUT, so that round lasts 10 s: failed again at 50.1.
    s.advance(45)
    assert s.snapshot(45).nodes[0].server.online  # type: ignore[union-attr]
    s.advance(55)
    (node,) = s.snapshot(55).nodes
    assert node.server is not None
    assert (node.server.online, node.server.load) == (False, None)
    assert node.metrics is not None
    assert node.metrics.meetings == 0
    run = s.result("x")
    assert (run.meetings_ended_by_scalelite, run.servers_taken_offline) == (2, 1)
    assert run.meetings_ended_by_platform == 0
    # Empty again, it answers at 80.1: SERVER_HEALTHY_THRESHOLD (1) good poll puts it back.
    s.advance(85)
    (node,) = s.snapshot(85).nodes
    assert node.server is not None
    assert (node.server.online, node.server.load) == (True, 0.0)


def test_a_host_at_or_under_80_percent_never_fails_a_poll() -> None:
    harsh = FleetSettings(
        poller=PollerSpec(response_timeout=0.001, unhealthy_threshold=1), verify=True
    )
    # 27 meetings of 8 with a camera: just under 80 % of the host, for a day.
    load = [TraceMeeting(k, 86_400, 8, 1) for k in range(27)]
    s = sim(*load, settings=harsh)
    s.advance(86_400)
    (node,) = s.snapshot(86_400).nodes
    assert node.metrics is not None
    assert 0.75 < node.metrics.cpu <= 0.80
    assert s.result("x").meetings_ended_by_scalelite == 0


def test_failed_polls_are_seeded() -> None:
    def lost(seed: int) -> int:
        # At 91 % a poll fails about 1 time in 800; one failure is enough here.
        settings = FleetSettings(poller=PollerSpec(unhealthy_threshold=1), seed=seed)
        s = sim(MASS, settings=settings)
        s.advance(3600)
        return s.result("x").meetings_ended_by_scalelite

    assert [lost(7) for _ in range(3)] == [lost(7)] * 3
    assert {lost(seed) for seed in range(16)} == {0, 1}


def test_the_round_lasts_and_a_long_one_is_cut_off() -> None:
    # poll.rake:12-23: rounds start POLL_INTERVAL after the last one ended; 131-137: a round
    # past POLLER_WAIT_TIMEOUT + 5 s leaves the servers after the cut-off unpolled.
    assert healthy_round(200, 2_000, PollerSpec()) == pytest.approx(8.0)
    assert healthy_round(200, 2_000, PollerSpec(threads=5, wait_timeout=10)) == 15.0
    tiny = PollerSpec(threads=2, wait_timeout=0.05, call_time=0.05)
    s = sim(TraceMeeting(300, 600, 5), settings=FleetSettings(min_nodes=3, poller=tiny))
    s.apply(Decision(Action.SCALE_OUT, "test", desired=4), 0)
    s.advance(400)
    # Three calls fit the 5.05 s cut-off at 0.05 s each on one worker... so a fourth does too.
    assert s.result("x").poll_rounds_cut == 0
    slow = PollerSpec(threads=2, wait_timeout=0.01, call_time=2.0)
    s = sim(TraceMeeting(300, 600, 5), settings=FleetSettings(min_nodes=3, poller=slow))
    s.apply(Decision(Action.SCALE_OUT, "test", desired=4), 0)
    s.advance(400)
    run = s.result("x")
    assert run.poll_rounds_cut > 0
    assert run.longest_poll_round_s == pytest.approx(slow.cutoff)
    # The fourth server (booted at 180 s) is never reached: it stays offline, out of placement.
    fourth = s.snapshot(400).nodes[3]
    assert fourth.server is not None
    assert (fourth.server.state, fourth.server.online) == ("enabled", False)


# --- recordings (bbbsim.recording_processing) ----------------------------------------------


def test_a_recorded_meeting_is_processed_on_its_host_after_it_ends() -> None:
    spec = RecordingSpec(ratio=0.5, cores=2.0)
    settings = FleetSettings(recordings=spec, verify=True)
    s = sim(
        TraceMeeting(0, 600, 8, 1, recorded=True),
        TraceMeeting(0, 1200, 8, 1, recorded=True),
        TraceMeeting(0, 600, 8, 1),
        settings=settings,
    )
    s.advance(601)
    (node,) = s.snapshot(601).nodes
    quiet = cpu_utilization(total_load([meeting_load(8, 2, 1)]))
    # One recording in the queue: 300 s on one worker, two cores busy, protection on.
    assert node.metrics is not None
    assert node.metrics.cpu == pytest.approx(quiet + 2 / 8, abs=1e-6)
    assert node.protected
    # Done at 900; idle (but the meeting) until the second ends at 1200: 600 s more, to 1800.
    s.advance(901)
    (node,) = s.snapshot(901).nodes
    assert node.metrics is not None
    assert node.metrics.cpu == pytest.approx(quiet, abs=1e-6)
    s.advance(1799)
    (node,) = s.snapshot(1799).nodes
    assert node.metrics is not None
    assert (node.metrics.meetings, node.protected) == (0, True)
    assert node.metrics.cpu == pytest.approx(cpu_utilization(total_load([])) + 2 / 8, abs=1e-6)
    s.advance(1801)
    (node,) = s.snapshot(1801).nodes
    assert node.metrics is not None
    assert (node.metrics.cpu, node.protected) == (cpu_utilization(total_load([])), False)


def test_a_terminated_host_runs_until_its_recordings_are_done() -> None:
    # bbbnode's lifecycle hook holds the instance while a recording is pending.
    settings = FleetSettings(min_nodes=0, start_nodes=1, recordings=RecordingSpec(ratio=1.0))
    s = sim(TraceMeeting(0, 600, 8, 1, recorded=True), settings=settings)
    s.advance(700)
    (node,) = s.snapshot(700).nodes
    assert node.metrics is not None
    assert node.metrics.meetings == 0
    s.apply(Decision(Action.TERMINATE, "test", terminate=(node.instance_id,)), 700)
    (held,) = s.snapshot(700).nodes
    assert (held.lifecycle, held.leaving) == ("Terminating:Wait", True)
    assert s.result("x").capacity[-1] == (700.0, 0)
    s.advance(1300)
    assert s.snapshot(1300).nodes == ()
    run = s.result("x")
    assert run.recording_waits == (500.0,)
    assert run.instance_hours == pytest.approx(1200 / 3600)
    assert run.meetings_ended_by_platform == 0
    # Without processing (--no-recordings) the same run ends at once.
    off = replace(settings, recordings=RecordingSpec(enabled=False))
    s = sim(TraceMeeting(0, 600, 8, 1, recorded=True), settings=off)
    s.advance(700)
    s.apply(
        Decision(Action.TERMINATE, "test", terminate=(s.snapshot(700).nodes[0].instance_id,)), 700
    )
    assert s.result("x").recording_waits == (0.0,)


def test_a_warm_pool_serves_launches_in_its_start_time_and_refills() -> None:
    pool = FleetSettings(warm_pool=2, verify=True)
    s = sim(TraceMeeting(0, 7200, 5), settings=pool)
    snap = s.snapshot(0)
    assert snap.pool is not None
    assert (len(snap.pool.ready), len(snap.pool.warming)) == (2, 0)
    # Three launches: two from the pool (45 s), one cold (180 s).
    s.apply(Decision(Action.SCALE_OUT, "test", desired=4), 0)
    booting = [n for n in s.snapshot(0).nodes if n.lifecycle == "Pending"]
    assert sorted(n.warm_start for n in booting) == [False, True, True]
    pooled = s.snapshot(0).pool
    assert pooled is not None
    assert (len(pooled.ready), len(pooled.warming)) == (0, 2)
    s.advance(45)
    assert sum(n.lifecycle == "InService" for n in s.snapshot(45).nodes) == 3
    s.advance(180)
    snap = s.snapshot(180)
    assert all(n.lifecycle == "InService" for n in snap.nodes)
    # The pool refilled through a warm-up as long as a cold boot: ready again at 180 s.
    assert snap.pool is not None
    assert (len(snap.pool.ready), len(snap.pool.warming)) == (2, 0)
    s.advance(3600)
    run = s.result("warm")
    assert (run.warm_starts, run.cold_starts) == (2, 1)
    # Stopped: 2 hosts from 0 to 0 (taken at once), then 2 from 180 s to 3600 s.
    assert run.stopped_instance_hours == pytest.approx(2 * (3600 - 180) / 3600)
    # Running: 4 members for an hour, and the 2 refills while they warmed up.
    assert run.instance_hours == pytest.approx((4 * 3600 + 2 * 180) / 3600)


def test_without_a_pool_nothing_changes() -> None:
    trace = Trace("t", tuple(TraceMeeting(60 * k, 1800, 30 + k) for k in range(20)))
    plain = FleetSettings()
    none = FleetSettings(warm_pool=0, warm_start_time=10.0)
    runs = [
        FleetSim(prepare(trace, s), policy_config("default", s), s).run("r") for s in (plain, none)
    ]
    assert runs[0] == runs[1]
    assert runs[0].stopped_instance_hours == 0.0


def test_the_oldest_launch_template_goes_before_the_billing_hour_counts() -> None:
    # At 3,605 s the node launched at 10 s (after the rollout) is 3,595 s into its hour and
    # the first one only 5 s, yet the first goes: it runs the older launch template.
    s = sim(TraceMeeting(9000, 60, 5), settings=replace(SETTINGS, rollout_at=5.0))
    s.snapshot(10)  # the group launches from the new version from here on
    s.apply(Decision(Action.SCALE_OUT, "test", desired=2), 10)
    s.advance(3605)
    _old, new = (n.instance_id for n in s.snapshot(3605).nodes)
    s.apply(Decision(Action.NONE, "an operator lowers desired", desired=1), 3605)
    assert [n.instance_id for n in s.snapshot(3605).nodes] == [new]
