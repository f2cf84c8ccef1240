"""The fleet as a discrete-event simulation, driven by bbbscaler's real ``decide``.

What it models, and how (Scalelite's facts: blindsidenetworks/scalelite at v1.8.5):

- **Meetings** start and end as the trace says. Each ``create`` goes where
  Scalelite would put it: the least load among enabled, online servers with a
  known load, equal loads to the smaller id (``bbbcore.scalelite``'s rule).
- **Participants join** after the create: the moderator with it, the others
  in equal groups every 30 s over ``join_spread`` (120 s). Host CPU counts the
  whole meeting from its create; joins change what Scalelite counts.
- **Scalelite's load** is its poller's: every round (``bbbsim.scalelite_poller``:
  POLL_INTERVAL after the last round ended) each server Scalelite can read gets
  the load of its meetings' joined participants + one moderator (at least 15
  while younger than 15 minutes) times its ``load_multiplier``
  (lib/tasks/poll.rake:48-71). Between rounds every ``create`` of a new meeting
  and every ``join`` add one multiplier to an enabled server's stored load
  (app/controllers/bigbluebutton_api_controller.rb:203 and 328,
  app/models/server.rb:204-211). A changed multiplier leaves the stored load
  alone until the next poll, as ``updateServer`` does. A cordoned server
  polled at load 0 becomes disabled (poll.rake:82).
- **Scalelite's own hand**: a poll of a host fails with a probability that
  rises with its CPU demand (never at or under 80 %; ``scalelite_poller``);
  after SERVER_UNHEALTHY_THRESHOLD failures in a row Scalelite takes the
  server offline and ends its meetings (poll.rake:93-118): those are
  ``meetings_ended_by_scalelite``. SERVER_HEALTHY_THRESHOLD good polls in a row
  bring it (and a newly registered server, added offline) online. A round
  that outlasts POLLER_WAIT_TIMEOUT + 5 s leaves the servers after the cut-off
  unpolled. The draws are seeded: a run is deterministic.
- **Host CPU** is ``bbbsim.host_model`` over the node's meetings (see
  ``bbbsim.demand``), plus recording processing (``bbbsim.recording_processing``):
  a recorded meeting that ends queues work on its host's single worker, which
  adds its cores until the queue is empty. Reported to the scaler as it is at
  the decision.
- **Instances** launch when the scaler raises desired capacity and serve
  ``boot_time`` (180 s) later: Pending until then (no metrics, not in
  Scalelite), then InService, registered and enabled (offline until polled).
- **A warm pool** (``warm_pool``, cfn/fleet.yaml's ``WarmPoolSize``: an
  absolute size) holds stopped hosts, all ready at the start. A launch takes a
  ready one first, which serves ``warm_start_time`` (45 s) later; the pool
  refills at once with a new host that runs through its warm-up for
  ``boot_time`` before it is stopped and ready; with none ready a launch is
  cold. Stopped hosts cost only their volumes: their time is
  ``stopped_instance_hours``; a host warming up runs, and its time counts in
  ``instance_hours`` with the group's.
- **The scaler** runs every ``tick`` (10 s): a FleetSnapshot built from the
  model, the real ``decide`` with the real ``History.record``, and the Decision
  carried out as bbbscaler's actuator does (re-enable, set desired, tag and
  cordon, terminate with decrement). A draining node keeps its meetings until
  they end. A terminated node ends whatever it still hosts: those meetings are
  counted as ended by the platform (the safety rules say never). A lowered desired
  capacity takes victims as the ASG does: by its default termination policy, never
  an instance bbbnode protects (one with meetings or recordings), so a fully
  protected group waits above desired until one loses its protection. A terminated
  node with recordings still to process stays (Terminating:Wait, bbbnode's
  lifecycle hook) until they are done, costing instance-hours:
  ``recording_wait_instance_hours``.
- **A rollout** (``rollout_at``): from then on the group launches from a new
  launch template version, so every instance launched before is drifted and the
  policy replaces it; ``rollout_s`` is how long until the last of them left the
  group (None while one is still there).

Snapshots are cheap because each node's ``Node`` value is rebuilt only when the
node changed since the last round. ``verify`` also checks every placement
against ``place_meeting`` and every poll against ``server_load`` (slow; tests).
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from bbbcore.scalelite import (
    LoadRule,
    MeetingCount,
    PlacementCandidate,
    PlacementSnapshot,
    ServerState,
    place_meeting,
    server_load,
)
from bbbscaler.model import (
    Action,
    Decision,
    FleetSnapshot,
    Group,
    Launch,
    Node,
    NodeMetrics,
    ServerView,
    WarmPool,
)
from bbbscaler.policy import (
    DemandHistory,
    FleetMemo,
    Forecast,
    History,
    PolicyConfig,
    Preset,
    decide,
    forecast_from,
)
from bbbsim.demand import MICRO, HostSpec, Steps, meeting_units, utilisation
from bbbsim.recording_processing import RecordingSpec
from bbbsim.scalelite_poller import PollerSpec, failure_probability, round_duration
from bbbsim.termination_policy import Candidate, choose_victims
from bbbsim.trace import Trace

MONDAY = 1_767_571_200.0
"""2026-01-05 00:00:00 UTC, a Monday: the trace's second 0 (schedule windows see this clock)."""

_INF = math.inf
# Decisions drawn on the timeline; "none" and "hold" change nothing.
_CHANGES = frozenset({Action.SCALE_OUT, Action.UNDRAIN, Action.DRAIN, Action.TERMINATE})
JOIN_STEP = 30.0
"""Seconds between two groups of joins of one meeting."""


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """The simulated platform around the policy."""

    boot_time: float = 180.0
    """Launch to registered in Scalelite."""
    tick: float = 10.0
    """The scaler's loop interval."""
    poller: PollerSpec = field(default_factory=PollerSpec)
    """Scalelite's poller as helm/scalelite sets it."""
    min_nodes: int = 1
    """The group's MinSize."""
    start_nodes: int | None = None
    """Nodes serving from the start; None: ``min_nodes``."""
    max_nodes: int = 500
    """The group's MaxSize."""
    moderators: int = 1
    """Per meeting, as Scalelite's load counts them (again) on top of participants."""
    join_spread: float = 120.0
    """Seconds after its create by which a meeting's participants have all joined."""
    metrics_age: float = 5.0
    """How old every node's data is when the scaler reads it."""
    recordings: RecordingSpec = field(default_factory=RecordingSpec)
    seed: int = 1
    """Seed of Scalelite's failed polls."""
    host: HostSpec = field(default_factory=HostSpec)
    rule: LoadRule = field(default_factory=LoadRule)
    epoch: float = MONDAY
    rollout_at: float | None = None
    """Trace second the group's launch template changes (a new image); None: never."""
    warm_pool: int = 0
    """Stopped hosts kept ready in a warm pool (its absolute size); 0: none."""
    warm_start_time: float = 45.0
    """Start of a warm pool host to registered in Scalelite."""
    verify: bool = False

    @property
    def poll_interval(self) -> float:
        """Scalelite's POLL_INTERVAL."""
        return self.poller.interval


def join_groups(participants: int, spread: float) -> tuple[int, ...]:
    """How many participants join at the create and at each JOIN_STEP after it."""
    groups = max(1, min(participants, math.floor(spread / JOIN_STEP) + 1))
    base, extra = divmod(participants, groups)
    return tuple(base + (1 if k < extra else 0) for k in range(groups))


@dataclass(frozen=True, slots=True)
class PreparedTrace:
    """A trace in start order with what every run needs per meeting, computed once."""

    trace: Trace
    start: tuple[float, ...]
    end: tuple[float, ...]
    units: tuple[int, ...]
    participants: tuple[int, ...]
    joins: tuple[tuple[int, ...], ...]
    """Participants joining at the create and at each JOIN_STEP after it."""
    ages_at: tuple[float, ...]
    """When Scalelite stops counting the meeting as young (trace seconds)."""
    recorded: tuple[bool, ...]

    @property
    def horizon(self) -> float:
        return max(self.end, default=0.0)


def prepare(trace: Trace, settings: FleetSettings) -> PreparedTrace:
    """Sort ``trace`` by start and work out every meeting's costs."""
    ordered = sorted(trace.meetings, key=lambda m: m.start_s)
    ages: list[float] = []
    for m in ordered:
        # Scalelite compares whole seconds of createTime: young while now < floor(created) + buffer.
        aged = math.floor(settings.epoch + m.start_s) + settings.rule.join_buffer_s
        ages.append(aged - settings.epoch)
    return PreparedTrace(
        trace=trace,
        start=tuple(m.start_s for m in ordered),
        end=tuple(m.end_s for m in ordered),
        units=tuple(meeting_units(m, settings.host) for m in ordered),
        participants=tuple(m.participants for m in ordered),
        joins=tuple(join_groups(m.participants, settings.join_spread) for m in ordered),
        ages_at=tuple(ages),
        recorded=tuple(m.recorded for m in ordered),
    )


@dataclass(frozen=True, slots=True)
class FleetRun:
    """What one policy (or the oracle) did with a trace."""

    name: str
    instance_hours: float
    overload_node_minutes: float
    overload_core_minutes: float
    """Demand above the overload line, in core-minutes: how deep, where node-minutes count how
    many (two nodes at 100 % count less than five at 81 %)."""
    meetings_on_overloaded_node: int
    meetings_ended_by_platform: int
    meetings_refused: int
    """Creates no server could take (no enabled, online server)."""
    peak_nodes: int
    instances: Steps
    """Instances in the group (booting, serving, draining) over time."""
    capacity: Steps
    """Nodes up (booted, not terminated) over time."""
    overloaded: Steps
    decisions: tuple[tuple[float, str], ...] = ()
    """(time, action) of every round that changed something."""
    rollout_at: float | None = None
    """When the group's launch template changed; None: no rollout in this run."""
    rollout_s: float | None = None
    """Seconds from ``rollout_at`` until no instance launched before it was left in the group;
    None without a rollout, or while one still is."""
    meetings_ended_by_scalelite: int = 0
    """Meetings Scalelite ended itself: their server failed SERVER_UNHEALTHY_THRESHOLD polls."""
    servers_taken_offline: int = 0
    recording_waits: tuple[float, ...] = ()
    """Seconds each terminated instance waited for its recordings to be processed."""
    poll_rounds_cut: int = 0
    """Poll rounds that ran into POLLER_WAIT_TIMEOUT + 5 s and left servers unpolled."""
    longest_poll_round_s: float = 0.0
    stopped_instance_hours: float = 0.0
    """Warm pool hosts stopped and ready, over time (they cost only their volumes)."""
    warm_starts: int = 0
    """Launches a ready warm pool host served."""
    cold_starts: int = 0
    """Launches that booted cold (no warm pool host was ready)."""
    warm_pool: int = 0
    """The run's warm pool size."""

    @property
    def recording_wait_instance_hours(self) -> float:
        return sum(self.recording_waits) / 3600


def _protected(node: _SimNode) -> bool:
    """Scale-in protection as bbbnode keeps it, with SetInstanceProtection: on while a
    meeting runs or a recording is pending (bbbnode/protector.py, SnapshotView.idle). A
    booting instance has none: bbbnode is not running yet, and "instance scale-in protection
    starts when the instance state is InService" (EC2 Auto Scaling User Guide, "Use instance
    scale-in protection to control instance termination")."""
    return bool(node.meetings) or node.processing > 0


class _SimNode:
    """One instance's mutable state inside a run (never leaves the simulation)."""

    __slots__ = (
        "draining_since",
        "excess",
        "healthy",
        "id",
        "launched",
        "load",
        "meetings",
        "multiplier",
        "online",
        "over",
        "participants",
        "processed_at",
        "processing",
        "ready",
        "shown",
        "state",
        "template",
        "true_load",
        "unhealthy",
        "units",
        "up",
        "view",
        "warm",
    )

    def __init__(self, iid: str, launched: float, ready: float, template: int) -> None:
        self.id = iid
        self.launched = launched
        self.template = template
        """The launch template version it was launched from (1, or 2 after a rollout)."""
        self.ready = ready
        self.up = False
        self.state: ServerState = "disabled"
        self.online = False
        self.healthy = 0
        self.unhealthy = 0
        self.load: float | None = None
        """What Scalelite stores: set by a poll, raised by each new create and each join."""
        self.multiplier = 1.0
        self.true_load = 0
        """Scalelite's load if it polled now (sum of meeting weights)."""
        self.draining_since: float | None = None
        self.meetings: set[int] = set()
        self.units = 0
        self.participants = 0
        self.processing = 0
        """Busy micro-cores of recording processing (0 when the queue is empty)."""
        self.processed_at = 0.0
        """When the recording queue is empty (trace seconds)."""
        self.over = False
        self.excess = 0
        """Busy micro-cores above the overload line (0 when not overloaded)."""
        self.view: Node | None = None
        """Its Node as the scaler sees it now; None once it changed."""
        self.shown: Node | None = None
        """The last Node built for it while in service."""
        self.warm = False
        """Started from the warm pool (it serves ``warm_start_time`` after its start)."""


@functools.cache
def _launch_of(template: int) -> Launch:
    """The launch template version ``template``: one object each, so the policy's drift
    check compares identities first."""
    return Launch("lt-backtest", str(template))


_Event = tuple[float, int, Any, int]
"""(time, kind, meeting or node id, join group): one heap orders every event by time, then
by kind in the order below (as when each kind had its own queue, the first kind's soonest
event went first), then by meeting (a node's id for a boot: its launch order)."""
_END, _AGE, _JOIN, _PROCESSED, _BOOT, _WARMED, _POLL, _START = range(8)


class FleetSim:
    """One run: the event loop, the scaler's rounds and the bookkeeping of the results.

    ``run`` does it all; tests step it by hand with ``advance``, ``snapshot`` and ``apply``.
    """

    def __init__(
        self,
        prepared: PreparedTrace,
        config: PolicyConfig,
        settings: FleetSettings,
        demand: DemandHistory | None = None,
    ):
        self.p = prepared
        self.config = config
        self.s = settings
        self.demand = demand
        """The forecast's history (the trace's earlier weeks, and this one up to now)."""
        self._forecast: tuple[int, Forecast] | None = None
        self.nodes: dict[str, _SimNode] = {}
        self.waiting: dict[str, _SimNode] = {}
        """Terminated instances the lifecycle hook holds while recordings are processed."""
        self.available: dict[str, tuple[float, str]] = {}
        """(load, id) of every server Scalelite may place on."""
        n = len(prepared.start)
        self.where: list[_SimNode | None] = [None] * n
        self.aged = [False] * n
        self.joined = [0] * n
        self.events: list[_Event] = []
        """Every event still to come, one heap: (time, kind, then what orders and names it)."""
        self.booting: dict[str, _SimNode] = {}
        """Launches not serving yet, by id (a terminated one's boot event finds none)."""
        self.launched = 0
        self.desired = 0
        self.history = History()
        self.memo = FleetMemo()
        """The policy's facts of the nodes of the round before: views repeat here."""
        self.group: Group | None = None
        self.views: tuple[Node, ...] | None = None
        """The last snapshot's nodes; None once one changed."""
        self.shown: list[Node] = []
        """The nodes of the last snapshot, place by place."""
        self.places: dict[str, int] | None = None
        """Each instance's place in ``shown``; None once one came or left (all rebuilt)."""
        self.unseen: list[_SimNode] = []
        """Instances whose Node changed since the last snapshot (the others' repeat)."""
        self.rng = random.Random(settings.seed)
        self.victim_rng = random.Random(settings.seed)
        """The termination policy's last tie-break; apart from the polls' draws."""
        host = settings.host
        # HostSpec's figures are properties: computed once here, read on every event.
        self.idle_units, self.full_units = host.idle_units, host.full_units
        self.over_units = host.limit_units - host.idle_units
        """Busy micro-cores (the idle base not included) at which a host is overloaded."""
        self.moderators, self.min_users = settings.moderators, settings.rule.min_user_count
        self.proc_units = round(settings.recordings.cores * MICRO)
        # Results.
        self.now = 0.0
        self.node_seconds = 0.0
        self.over_seconds = 0.0
        self.over_count = 0
        self.excess_unit_seconds = 0.0
        self.excess_units = 0
        self.on_overloaded = 0
        self.ended = 0
        self.ended_by_scalelite = 0
        self.taken_offline = 0
        self.refused = 0
        self.peak = 0
        self.capacity = 0
        self.rounds_cut = 0
        self.longest_round = 0.0
        self.waits: list[float] = []
        self.instances_steps: list[tuple[float, int]] = []
        self.capacity_steps: list[tuple[float, int]] = []
        self.over_steps: list[tuple[float, int]] = [(0.0, 0)]
        self.decisions: list[tuple[float, str]] = []
        self.template = 1
        """The launch template version the group launches from now."""
        self.rollout_done: float | None = None
        self.pool_ready = settings.warm_pool
        """Warm pool hosts stopped and ready (the pool starts full)."""
        self.pool_warming: deque[float] = deque()
        """When each warm pool host warming up is ready (its warm-up lasts ``boot_time``)."""
        self.pool_view: WarmPool | None = None
        self.stopped_seconds = 0.0
        self.warm_starts = 0
        self.cold_starts = 0
        self.events.append((0.0, _POLL, 0, 0))
        if n:
            heapq.heappush(self.events, (prepared.start[0], _START, 0, 0))
        # The first nodes serve from the start, registered and polled.
        first = settings.min_nodes if settings.start_nodes is None else settings.start_nodes
        self._set_capacity(0.0, 0)
        self._count_instances(0.0)
        for _ in range(first):
            self._launch(0.0, up=True)
        self.desired = first

    # ------------------------------------------------------------------ bookkeeping

    def _clock(self, t: float) -> None:
        dt = t - self.now
        if dt > 0:
            # A warm pool host warming up runs (and costs) like a member; a ready one is stopped.
            self.node_seconds += (len(self.nodes) + len(self.waiting) + len(self.pool_warming)) * dt
            self.stopped_seconds += self.pool_ready * dt
            self.over_seconds += self.over_count * dt
            self.excess_unit_seconds += self.excess_units * dt
            self.now = t

    @staticmethod
    def _step(steps: list[tuple[float, int]], t: float, value: int) -> None:
        if steps and steps[-1][0] == t:
            steps[-1] = (t, value)
        else:
            steps.append((t, value))

    def _count_instances(self, t: float) -> None:
        count = len(self.nodes) + len(self.waiting)
        self.peak = max(self.peak, count)
        self._step(self.instances_steps, t, count)
        self.views = self.places = None

    def _set_capacity(self, t: float, delta: int) -> None:
        self.capacity += delta
        self._step(self.capacity_steps, t, self.capacity)

    def _changed(self, node: _SimNode) -> None:
        """Refresh what depends on the node's state: overload, placement set, its view."""
        excess = max(0, node.units + node.processing - self.over_units)
        self.excess_units += excess - node.excess
        node.excess = excess
        over = excess > 0
        if over != node.over:
            node.over = over
            self.over_count += 1 if over else -1
            self._step(self.over_steps, self.now, self.over_count)
        if node.up and node.state == "enabled" and node.online and node.load is not None:
            self.available[node.id] = (node.load, node.id)
        else:
            self.available.pop(node.id, None)
        if node.view is not None:
            node.view = None
            self.unseen.append(node)
        self.views = None

    # ------------------------------------------------------------------ instances

    def _launch(self, t: float, up: bool = False) -> _SimNode:
        self.launched += 1
        warm = not up and self.pool_ready > 0
        ready = t + (0.0 if up else self.s.warm_start_time if warm else self.s.boot_time)
        node = _SimNode(f"i-{self.launched:017x}", t, ready, self.template)
        node.warm = warm
        self.nodes[node.id] = node
        if warm:
            # Its place in the pool is refilled at once, by a host that warms up first.
            self.pool_ready -= 1
            self.pool_warming.append(t + self.s.boot_time)
            heapq.heappush(self.events, (t + self.s.boot_time, _WARMED, 0, 0))
            self.pool_view = None
            self.warm_starts += 1
        elif not up:
            self.cold_starts += 1
        if up:
            self._boot(node)
            node.online, node.load = True, 0.0
            self._changed(node)
        else:
            self.booting[node.id] = node
            heapq.heappush(self.events, (ready, _BOOT, node.id, 0))
        self._count_instances(t)
        return node

    def _boot(self, node: _SimNode) -> None:
        # bbbnode registers and enables it; Scalelite adds it offline until a good poll.
        node.up = True
        node.state = "enabled"
        self._set_capacity(self.now, 1)
        self._changed(node)

    def _terminate(self, node: _SimNode, t: float) -> None:
        # Whatever still runs there ends now: the count that must stay 0.
        self.ended += len(node.meetings)
        for idx in list(node.meetings):
            # Lost with the instance, recording and all.
            self._remove(idx, node, record=False)
        self._drop_overload(node)
        self.available.pop(node.id, None)
        del self.nodes[node.id]
        if node.up:
            self._set_capacity(t, -1)
        else:
            del self.booting[node.id]
        if node.processed_at > t:
            # bbbnode's lifecycle hook holds the instance until its recordings are done.
            node.state, node.online, node.load = "disabled", False, None
            self.waiting[node.id] = node
            self.waits.append(node.processed_at - t)
        else:
            self.waits.append(0.0)
        node.view = None
        self._count_instances(t)
        self._check_rollout(t)

    def _scale_in(self, t: float) -> None:
        """Terminate instances while the group holds more than its desired capacity, as the
        ASG does after desired is lowered: by its default termination policy (one zone
        here), never a protected instance (bbbsim/termination_policy.py). With every
        instance protected, desired stays lowered until one loses its protection; ``round``
        calls this again each tick."""
        excess = len(self.nodes) - self.desired
        if excess <= 0:
            return
        candidates = [
            Candidate(n.id, "a", _protected(n), n.launched, n.template) for n in self.nodes.values()
        ]
        for iid in choose_victims(candidates, excess, t, self.victim_rng):
            self._terminate(self.nodes[iid], t)

    def _check_rollout(self, t: float) -> None:
        """Note when the last instance launched before the rollout has left the group."""
        if self.template < 2 or self.rollout_done is not None:
            return
        if all(n.template == self.template for n in self.nodes.values()):
            self.rollout_done = t

    # ------------------------------------------------------------------ meetings

    def _weight(self, idx: int) -> int:
        """The meeting's share of Scalelite's load now (poll.rake:48-64)."""
        attendees = self.joined[idx] + self.moderators
        return attendees if self.aged[idx] else max(attendees, self.min_users)

    def _count_join(self, node: _SimNode, joins: int) -> None:
        """``increment_load(1)`` per create or join: ZADD XX INCR, only in ``server_load``."""
        if node.id in self.available:
            node.load = (node.load or 0.0) + joins * node.multiplier
            self.available[node.id] = (node.load, node.id)

    def _start(self, idx: int) -> None:
        best = min(self.available.values(), default=None)
        chosen = None if best is None else self.nodes[best[1]]
        if self.s.verify:
            self._verify_placement(chosen)
        if chosen is None:
            self.refused += 1
            return
        if chosen.over:
            self.on_overloaded += 1
        p = self.p
        chosen.meetings.add(idx)
        chosen.units += p.units[idx]
        chosen.participants += p.participants[idx]
        self.where[idx] = chosen
        groups = p.joins[idx]
        self.joined[idx] = groups[0]
        chosen.true_load += self._weight(idx)
        # The create counts once, and so does every join that comes with it.
        self._count_join(chosen, 1 + groups[0])
        events = self.events
        for g in range(1, len(groups)):
            heapq.heappush(events, (p.start[idx] + g * JOIN_STEP, _JOIN, idx, g))
        heapq.heappush(events, (p.end[idx], _END, idx, 0))
        heapq.heappush(events, (p.ages_at[idx], _AGE, idx, 0))
        self._changed(chosen)

    def _join(self, idx: int, group: int) -> None:
        node = self.where[idx]
        if node is None:
            return  # refused, or already ended
        count = self.p.joins[idx][group]
        before = self.joined[idx] + self.moderators
        self.joined[idx] += count
        # _weight after less _weight before, written out: joins are half the simulator's
        # events (poll.rake:48-64: a meeting younger than LOAD_JOIN_BUFFER_TIME counts at
        # least LOAD_MIN_USER_COUNT, an aged one its attendees).
        if self.aged[idx]:
            node.true_load += count
        else:
            node.true_load += max(before + count, self.min_users) - max(before, self.min_users)
        self._count_join(node, count)

    def _drop_overload(self, node: _SimNode) -> None:
        """A leaving node no longer counts towards overload."""
        self.excess_units -= node.excess
        node.excess = 0
        if node.over:
            node.over = False
            self.over_count -= 1
            self._step(self.over_steps, self.now, self.over_count)

    def _remove(self, idx: int, node: _SimNode, record: bool = True) -> None:
        """The meeting is over on ``node``: its costs go, its recording is queued."""
        self.where[idx] = None
        p = self.p
        node.meetings.discard(idx)
        node.units -= p.units[idx]
        node.participants -= p.participants[idx]
        node.true_load -= self._weight(idx)
        if record and p.recorded[idx]:
            work = self.s.recordings.seconds(self.now - p.start[idx])
            if work > 0:
                node.processed_at = max(node.processed_at, self.now) + work
                node.processing = self.proc_units
                heapq.heappush(self.events, (node.processed_at, _PROCESSED, node.id, 0))

    def _end(self, idx: int) -> None:
        node = self.where[idx]
        if node is None:
            return  # refused, or already ended with its node
        self._remove(idx, node)
        self._changed(node)

    def _age(self, idx: int) -> None:
        node = self.where[idx]
        if node is not None:
            before = self._weight(idx)
            self.aged[idx] = True
            node.true_load += self._weight(idx) - before
        else:
            self.aged[idx] = True

    def _processing_done(self, t: float, iid: str) -> None:
        node = self.nodes.get(iid) or self.waiting.get(iid)
        if node is None or node.processed_at > t:
            return  # gone, or more was queued since
        node.processing = 0
        if iid in self.waiting:
            del self.waiting[iid]
            self._count_instances(t)
            return
        self._changed(node)

    # ------------------------------------------------------------------ Scalelite's poller

    def _poll(self) -> float:
        """One round of Scalelite's poller; returns how long it took."""
        spec = self.s.poller
        host = self.s.host
        verify = self.s.verify
        quiet = spec.quiet_cpu * host.full_units - host.idle_units
        call, timeout, budget = spec.call_time, spec.response_timeout, spec.cutoff * spec.workers
        server_work = version_work = 0.0
        meetings = 0
        longest = call
        cut = False
        for node in list(self.nodes.values()):
            if not node.up:
                continue
            busy = node.units + node.processing
            failed = False
            if busy > quiet:
                # Only a host above 80 % can fail a poll (bbbsim.scalelite_poller); a draw
                # only for a chance above 0.
                demand = (self.idle_units + busy) / self.full_units
                chance = failure_probability(demand, spec)
                failed = chance > 0.0 and self.rng.random() < chance
            if failed:
                server_work += timeout
                longest = max(longest, timeout)
            else:
                server_work += call  # longest starts at call: max(longest, call) is longest
            meetings += len(node.meetings)
            version_work += call
            if server_work > budget:
                cut = True  # killed with the pool: neither an answer nor a failure
                continue
            if verify:
                self._verify_load(node)
            if failed:
                self._poll_failed(node)
            elif (
                node.online
                and node.state == "enabled"
                and node.load == node.true_load * node.multiplier
            ):
                # poll.rake:67-86 for an online enabled server whose polled load is the one
                # stored: the failure count resets and nothing else changes (_poll_answered's
                # most common case, without the call).
                node.unhealthy = 0
            else:
                self._poll_answered(node)
        meeting_work = meetings * call
        longest = longest if version_work else 0.0
        duration = round_duration(server_work, meeting_work, version_work, longest, spec)
        if cut or duration >= spec.cutoff:
            self.rounds_cut += 1
        self.longest_round = max(self.longest_round, duration)
        return duration

    def _poll_answered(self, node: _SimNode) -> None:
        # poll.rake:67-86: SERVER_HEALTHY_THRESHOLD good polls in a row bring an offline
        # server online; a disabled server's load is nil, a cordoned one with no load is
        # disabled, any other takes the polled load. Every poll visits every host (half the
        # simulator's time), so an unchanged host is left without a tuple or a refresh.
        node.unhealthy = 0
        came_online = not node.online
        if came_online:
            node.healthy += 1
            if node.healthy < self.s.poller.healthy_threshold:
                return
            node.healthy = 0
            node.online = True
        state = node.state
        load = node.true_load * node.multiplier
        if state == "disabled" or (state == "cordoned" and load == 0):
            if came_online or node.load is not None or state != "disabled":
                node.state, node.load = "disabled", None
                self._changed(node)
        elif came_online or load != node.load:
            node.load = load
            self._changed(node)

    def _poll_failed(self, node: _SimNode) -> None:
        # poll.rake:87-118: only an online server's failures in a row count.
        node.healthy = 0
        if not node.online:
            return
        node.unhealthy += 1
        if node.unhealthy < self.s.poller.unhealthy_threshold:
            return
        # Offline: its meeting records destroyed and BBB told to end each meeting.
        self.ended_by_scalelite += len(node.meetings)
        self.taken_offline += 1
        for idx in list(node.meetings):
            self._remove(idx, node)
        node.online, node.load, node.unhealthy = False, None, 0
        self._changed(node)

    # ------------------------------------------------------------------ events

    def advance(self, until: float) -> None:
        """Process every event at or before ``until``: ends, aging, joins, recordings done,
        boots, warm-ups, polls, starts."""
        events = self.events
        pop = heapq.heappop
        while events and events[0][0] <= until:
            t, kind, which, group = pop(events)
            if kind == _BOOT:
                node = self.booting.pop(which, None)
                if node is None:
                    continue  # terminated while booting: no event any more
                self._clock(t)
                self._boot(node)
                continue
            self._clock(t)
            if kind == _END:
                self._end(which)
            elif kind == _AGE:
                self._age(which)
            elif kind == _JOIN:
                self._join(which, group)
            elif kind == _PROCESSED:
                self._processing_done(t, which)
            elif kind == _WARMED:
                self.pool_warming.popleft()
                self.pool_ready += 1
                self.pool_view = None
            elif kind == _POLL:
                took = self._poll() + self.s.poller.interval
                heapq.heappush(events, (t + took, _POLL, 0, 0))
            else:
                self._start(which)
                after = which + 1
                if after < len(self.p.start):
                    heapq.heappush(events, (self.p.start[after], _START, after, 0))
        self._clock(until)

    # ------------------------------------------------------------------ the scaler

    def _view(self, node: _SimNode) -> Node:
        e = self.s.epoch
        launch = _launch_of(node.template)
        if node.id in self.waiting:
            return Node(node.id, "Terminating:Wait", launched_at=e + node.launched, launch=launch)
        if not node.up:
            return Node(
                node.id,
                "Pending",
                launched_at=e + node.launched,
                server=ServerView(node.id, "absent", None, False),
                launch=launch,
                warm_start=node.warm,
            )
        since = None if node.draining_since is None else e + node.draining_since
        # A change is mostly to one of the two: the other's value is kept (a view is
        # rebuilt a few times a round, and the values are equal either way).
        last = node.shown
        metrics = None if last is None else last.metrics
        # HostSpec.cpu, with its figures read once.
        cpu = utilisation(self.idle_units + node.units + node.processing, self.full_units)
        meetings = len(node.meetings)
        if metrics is None or (metrics.cpu, metrics.meetings, metrics.participants) != (
            cpu,
            meetings,
            node.participants,
        ):
            metrics = NodeMetrics(cpu, meetings, node.participants, self.s.metrics_age)
        server = None if last is None else last.server
        if server is None or (
            server.state,
            server.load,
            server.online,
            server.load_multiplier,
        ) != (node.state, node.load, node.online, node.multiplier):
            server = ServerView(node.id, node.state, node.load, node.online, node.multiplier)
        # The scaler reads it as ProtectedFromScaleIn.
        protected = _protected(node)
        if (
            last is not None
            and last.metrics is metrics
            and last.server is server
            and last.protected == protected
            and last.draining_since == since
            and last.launch is launch
        ):
            # Nothing the scaler sees changed (a node's launch time and warm start never
            # do): the same object, which the FleetMemo skips.
            return last
        # Positional, in field order (no private address, healthy): a third cheaper than by
        # keyword, and a few nodes a round are shown anew.
        node.shown = Node(
            node.id,
            "InService",
            None,
            True,
            protected,
            e + node.launched,
            since,
            metrics,
            server,
            launch,
            node.warm,
        )
        return node.shown

    def snapshot(self, t: float) -> FleetSnapshot:
        """The fleet at ``t`` as the scaler's observer would report it."""
        if self.views is None:
            shown, places = self.shown, self.places
            if places is None:
                shown.clear()
                places = self.places = {}
                for node in (*self.nodes.values(), *self.waiting.values()):
                    if node.view is None:
                        node.view = self._view(node)
                    places[node.id] = len(shown)
                    shown.append(node.view)
            else:
                for node in self.unseen:
                    if node.view is None:
                        node.view = self._view(node)
                        shown[places[node.id]] = node.view
            self.unseen.clear()
            self.views = tuple(shown)
        rollout = self.s.rollout_at
        if rollout is not None and t >= rollout and self.template == 1:
            # A new image: the group launches from version 2 from now on.
            self.template = 2
            self._check_rollout(rollout)
        launch = _launch_of(self.template)
        if self.group is None or (self.group.desired, self.group.launch) != (self.desired, launch):
            s = self.s
            self.group = Group(
                "backtest",
                self.desired,
                s.min_nodes,
                s.max_nodes,
                frozenset({"AZRebalance"}),
                launch,
            )
        return FleetSnapshot(self.s.epoch + t, self.group, self.views, pool=self._pool())

    def _pool(self) -> WarmPool | None:
        """The warm pool as DescribeWarmPool would list it (ids stand for its hosts)."""
        size = self.s.warm_pool
        if not size:
            return None
        if self.pool_view is None:
            ready = self.pool_ready
            self.pool_view = WarmPool(
                min_size=size,
                max_prepared=size,
                ready=tuple(f"w-{k}" for k in range(ready)),
                warming=tuple(f"w-{k}" for k in range(ready, ready + len(self.pool_warming))),
            )
        return self.pool_view

    def forecast(self, now: float) -> Forecast | None:
        """The forecast preset's forecast at ``now``; made again when a new step of history
        is complete, as the live scaler re-reads it."""
        if self.config.preset != "forecast":
            return None
        if self.demand is None:
            return Forecast.unavailable(now, "short", "the trace has no earlier week")
        step = self.demand.index(now)
        if self._forecast is None or self._forecast[0] != step:
            self._forecast = (step, forecast_from(self.demand, now, self.config))
        return self._forecast[1]

    def round(self, t: float) -> Decision:
        """One scaler round at ``t``: observe, the real decide and History.record, act."""
        if len(self.nodes) > self.desired:
            self._scale_in(t)  # a lowered desired still waiting for an unprotected instance
        now = self.s.epoch + t
        snapshot, forecast = self.snapshot(t), self.forecast(now)
        decision = decide(snapshot, self.history, forecast, self.config, now, self.memo)
        self.history = self.history.record(decision, now, self.config)
        self.apply(decision, t)
        return decision

    def apply(self, d: Decision, t: float) -> None:
        """Carry ``d`` out in the actuator's order: re-enable, desired, drain, terminate."""
        if d.action in _CHANGES or d.desired is not None:
            self.decisions.append((t, d.action.value))
        for iid in d.undrain:
            node = self.nodes[iid]
            node.draining_since = None
            node.state = "enabled"
            self._changed(node)
        if d.desired is not None and d.desired != self.desired:
            self.desired = d.desired
            while len(self.nodes) < self.desired:
                self._launch(t)
            self._scale_in(t)
        for iid in d.drain:
            node = self.nodes[iid]
            node.draining_since = t
            if node.state == "enabled":
                node.state = "cordoned"
            self._changed(node)
        for iid, multiplier in d.steer:
            # Scalelite keeps the stored load until its next poll; only later creates see it.
            node = self.nodes[iid]
            node.multiplier = multiplier
            self._changed(node)
        for iid in d.terminate:
            leaving = self.nodes.get(iid)
            if leaving is not None:
                self._terminate(leaving, t)
                self.desired -= 1

    # ------------------------------------------------------------------ verification

    def _verify_placement(self, chosen: _SimNode | None) -> None:
        candidates = tuple(
            PlacementCandidate(n.id, n.state, n.online, n.load) for n in self.nodes.values() if n.up
        )
        expected = place_meeting(PlacementSnapshot(candidates))
        got = None if chosen is None else chosen.id
        if expected != got:
            raise AssertionError(f"placement {got} differs from Scalelite's rule: {expected}")

    def _verify_load(self, node: _SimNode) -> None:
        p = self.p
        counts = [
            MeetingCount(
                self.joined[i],
                self.s.moderators,
                math.floor((self.s.epoch + p.start[i]) * 1000),
            )
            for i in node.meetings
        ]
        expected = server_load(counts, 1.0, self.s.epoch + self.now, self.s.rule)
        if expected != node.true_load:
            raise AssertionError(f"{node.id}: load {node.true_load}, Scalelite's rule {expected}")

    # ------------------------------------------------------------------ the run

    def run(self, name: str) -> FleetRun:
        """Every tick to the trace's end: events, then a round; then the recordings' tail."""
        ticks = math.ceil(self.p.horizon / self.s.tick)
        for k in range(ticks + 1):
            t = k * self.s.tick
            self.advance(t)
            self.round(t)
        # Terminated instances still processing recordings run until they are done.
        self.node_seconds += sum(n.processed_at - self.now for n in self.waiting.values())
        return self.result(name)

    def result(self, name: str) -> FleetRun:
        """The scores and timelines so far."""
        return FleetRun(
            name=name,
            instance_hours=self.node_seconds / 3600,
            overload_node_minutes=self.over_seconds / 60,
            overload_core_minutes=self.excess_unit_seconds / MICRO / 60,
            meetings_on_overloaded_node=self.on_overloaded,
            meetings_ended_by_platform=self.ended,
            meetings_refused=self.refused,
            peak_nodes=self.peak,
            instances=tuple(self.instances_steps),
            capacity=tuple(self.capacity_steps),
            overloaded=tuple(self.over_steps),
            decisions=tuple(self.decisions),
            meetings_ended_by_scalelite=self.ended_by_scalelite,
            servers_taken_offline=self.taken_offline,
            recording_waits=tuple(self.waits),
            poll_rounds_cut=self.rounds_cut,
            longest_poll_round_s=self.longest_round,
            rollout_at=self.s.rollout_at,
            rollout_s=None
            if self.rollout_done is None or self.s.rollout_at is None
            else self.rollout_done - self.s.rollout_at,
            stopped_instance_hours=self.stopped_seconds / 3600,
            warm_starts=self.warm_starts,
            cold_starts=self.cold_starts,
            warm_pool=self.s.warm_pool,
        )


def policy_config(preset: Preset, settings: FleetSettings) -> PolicyConfig:
    """The preset's own values, with the simulated platform's boot time and loop."""
    return replace(
        PolicyConfig.preset_values(preset),
        boot_time=settings.boot_time,
        warm_start_time=settings.warm_start_time,
        registration=settings.poll_interval,
        gap_limit=3 * settings.tick,
    )


def simulate(
    prepared: PreparedTrace,
    config: PolicyConfig,
    settings: FleetSettings,
    name: str = "",
    demand: DemandHistory | None = None,
) -> FleetRun:
    """Run the trace through the simulated fleet under ``config`` (``demand``: the forecast's
    history, on the clock of ``settings.epoch``)."""
    return FleetSim(prepared, config, settings, demand).run(name or config.preset)
