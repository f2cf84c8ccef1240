"""The fleet as one round of observation sees it, and what a round decides.

Everything here is an immutable value. The observers build a FleetSnapshot, the
policy turns it (with its History) into a Decision, the actuator carries the
Decision out. The backtest builds the same snapshots from its model, so the
policy cannot tell a simulated fleet from a real one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

ServerState = Literal["enabled", "cordoned", "disabled", "absent"]
"""A node's server in Scalelite; ``absent`` means not registered (yet)."""

DRAIN_TAG = "bbbfleet:draining-since"
"""EC2 instance tag the scaler sets when it starts a drain (epoch seconds).

A tag, not memory: a restarted scaler finishes the drains it started, and an
operator's own cordon (``bbbnode drain``, no tag) is never turned into a
termination.
"""

PENDING_STATES = frozenset({"Pending", "Pending:Wait", "Pending:Proceed"})
WARMED_PREFIX = "Warmed:"
"""Lifecycle states of a warm pool instance: not a member of the group, no capacity."""
LEAVING_STATES = frozenset(
    {
        "Terminating",
        "Terminating:Wait",
        "Terminating:Proceed",
        "Terminated",
        "Detaching",
        "Detached",
        "EnteringStandby",
        "Standby",
    }
)


@dataclass(frozen=True, slots=True)
class Launch:
    """What an instance is launched from, or what the group launches from now.

    A launch template by id and a concrete version number (``$Latest`` and
    ``$Default`` resolved), or a launch configuration by name (``version`` "").
    Two are the same launch exactly when both fields are equal.
    """

    template: str
    """Launch template id (lt-...), or ``launch-configuration:<name>``."""
    version: str = ""

    def __str__(self) -> str:
        return f"{self.template}:{self.version}" if self.version else self.template


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """What one node's exporter said, and how old that is."""

    cpu: float
    """bbbnode_cpu_utilization_ratio, 0..1 of the whole host."""
    meetings: int | None
    """bbb_meetings; None when the node could not read BBB (the gauge is absent)."""
    participants: int | None
    """bbb_meetings_participants; None like ``meetings``."""
    age: float
    """Seconds since the node read BBB: its snapshot age plus the scrape's own age."""


@dataclass(frozen=True, slots=True)
class ServerView:
    """The node's server as Scalelite lists it."""

    id: str
    state: ServerState
    load: float | None
    """None when Scalelite has no load for it ("unavailable", offline)."""
    online: bool
    load_multiplier: float = 1.0
    """Scalelite multiplies the server's load by this; the scaler steers placement with it."""
    tag: str | None = None
    """The server's Scalelite tag (None: untagged)."""


@dataclass(frozen=True, slots=True)
class Node:
    """One instance of the Auto Scaling Group."""

    instance_id: str
    lifecycle: str
    """The ASG's LifecycleState, e.g. InService, Pending, Terminating:Wait."""
    private_ip: str | None = None
    healthy: bool = True
    protected: bool = False
    """ProtectedFromScaleIn: bbbnode keeps it on while meetings run."""
    launched_at: float | None = None
    draining_since: float | None = None
    """When the scaler started draining it (the DRAIN_TAG); None when it is not."""
    metrics: NodeMetrics | None = None
    """None when the scrape failed or the metrics source has no data for it."""
    server: ServerView | None = None
    """None when Scalelite could not be read; state ``absent`` when not registered."""
    launch: Launch | None = None
    """What it was launched from; None when unknown."""
    warm_start: bool = False
    """It came out of the group's warm pool (seen there by this scaler): it boots in
    ``warm_start_time``, not ``boot_time``."""

    @property
    def pending(self) -> bool:
        return self.lifecycle in PENDING_STATES

    @property
    def warmed(self) -> bool:
        """In the warm pool (any ``Warmed:*`` state): neither serving nor booting capacity."""
        return self.lifecycle.startswith(WARMED_PREFIX)

    @property
    def leaving(self) -> bool:
        """On its way out of the group (no longer part of desired capacity)."""
        return self.lifecycle in LEAVING_STATES

    @property
    def draining(self) -> bool:
        return self.draining_since is not None and not self.leaving

    @property
    def offline(self) -> bool:
        """Scalelite lists its server offline: its poller could not read the host.

        Scalelite places nothing on it (server.rb:289, only servers with a load are in
        ``server_load``), and after SERVER_UNHEALTHY_THRESHOLD failed polls it has ended the
        server's meetings itself (poll.rake:93-118). A server is also offline from
        ``addServer`` until its first good poll.
        """
        s = self.server
        return s is not None and s.state != "absent" and not s.online

    def fresh(self, stale_after: float) -> bool:
        """Its meeting data is known and recent enough to act on."""
        m = self.metrics
        # Each gauge can be missing on its own: an unknown participant count is missing data.
        return (
            m is not None
            and m.meetings is not None
            and m.participants is not None
            and m.age <= stale_after
        )

    def idle(self, stale_after: float) -> bool:
        """Fresh data says no meeting and no participant."""
        m = self.metrics
        return self.fresh(stale_after) and m is not None and m.meetings == 0 and m.participants == 0

    def booting(self, young: bool) -> bool:
        """Still coming up: nothing can have been placed on it, so no data is expected.
        ``young``: launched less than ``boot_grace`` before this round (sort_fleet tells;
        the only way the time enters).

        A node Scalelite already has enabled is serving, whatever its age: if we
        cannot see it, that is missing data, not boot.
        """
        if self.pending:
            return True
        if self.lifecycle != "InService":
            return False
        s = self.server
        if s is not None and s.state == "enabled":
            if s.online:
                return False
            # Until Scalelite's poller has read it (a new server is offline until its first
            # good poll, poll.rake:72-79) nothing can be placed on it: capacity coming, unless
            # it hosts meetings (then it went offline while serving).
            m = self.metrics
            if m is not None and m.meetings:
                return False
        elif self.metrics is not None:
            return False
        return young


@dataclass(frozen=True, slots=True)
class Group:
    """The Auto Scaling Group's own numbers."""

    name: str
    desired: int
    min_size: int
    max_size: int
    suspended: frozenset[str] = frozenset()
    """Suspended scaling processes, e.g. AZRebalance."""
    launch: Launch | None = None
    """What the group launches new instances from now; None when unknown."""

    def drifted(self, node: Node) -> bool:
        """``node`` was launched from something else than the group launches from now.

        Unknown on either side is not drift: a rollout never starts on a guess.
        """
        launch, mine = self.launch, node.launch
        return launch is not None and mine is not None and mine is not launch and mine != launch


@dataclass(frozen=True, slots=True)
class WarmPool:
    """The group's warm pool: hosts launched, initialised and stopped beside the group.

    A scale-out starts ready ones first (a *warm start*) and launches the rest (a *cold
    start*); the pool then refills by itself ("Warm pools for Amazon EC2 Auto Scaling",
    EC2 Auto Scaling User Guide). Its hosts take no meetings and are not booting capacity:
    only a scale-out brings them into the group.
    """

    min_size: int = 0
    max_prepared: int | None = None
    """MaxGroupPreparedCapacity; None when unset."""
    pool_state: str = "Stopped"
    ready: tuple[str, ...] = ()
    """Instance ids in ``Warmed:Stopped`` (or ``:Running``, ``:Hibernated``): a launch
    starts one of these."""
    warming: tuple[str, ...] = ()
    """``Warmed:Pending(:Wait, :Proceed)``: launched into the pool, not ready yet."""
    leaving: tuple[str, ...] = ()
    """``Warmed:Terminating(...)``: the pool shrinks or replaces them."""

    @property
    def size(self) -> int:
        return len(self.ready) + len(self.warming) + len(self.leaving)


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """One round's observation of the whole fleet."""

    at: float
    """Epoch seconds when the observation finished."""
    group: Group
    nodes: tuple[Node, ...]
    scalelite_ok: bool = True
    """False when Scalelite's server list could not be read this round."""
    errors: tuple[str, ...] = ()
    """Observation sources that failed this round (asg, ec2, metrics, scalelite)."""
    pool: WarmPool | None = None
    """The group's warm pool; None without one (or when it could not be read)."""

    def node(self, instance_id: str) -> Node | None:
        for n in self.nodes:
            if n.instance_id == instance_id:
                return n
        return None


class Action(enum.StrEnum):
    """The headline of a decision; also the ``action`` label of bbbscaler_decisions_total."""

    NONE = "none"
    SCALE_OUT = "scale_out"
    UNDRAIN = "undrain"
    DRAIN = "drain"
    TERMINATE = "terminate"
    RECONCILE = "reconcile"
    HOLD = "hold"
    """A change was wanted but something (stale data, cooldown, bounds) held it back."""


@dataclass(frozen=True, slots=True)
class WindowMiss:
    """A schedule window in effect that the fleet will not meet: late, short, or both."""

    window: str
    start: float
    """Epoch seconds the window opens (or opened)."""
    min_nodes: int
    late_s: float
    """Seconds after ``start`` until as many of its nodes serve as the fleet will have
    (0: on time)."""
    short: int
    """Nodes of ``min_nodes`` the fleet will not have at all: the upper bound (MaxSize,
    policy.max_nodes) holds fewer (0: none)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What one round decided, why, and the numbers it used."""

    action: Action
    reason: str
    desired: int | None = None
    """SetDesiredCapacity to this; None leaves it."""
    drain: tuple[str, ...] = ()
    """Start draining these: tag, then cordon in Scalelite."""
    undrain: tuple[str, ...] = ()
    """Stop draining these: enable in Scalelite, then untag."""
    terminate: tuple[str, ...] = ()
    """Drained: re-check, then TerminateInstanceInAutoScalingGroup with decrement."""
    steer: tuple[tuple[str, float], ...] = ()
    """(instance id, load_multiplier) to set in Scalelite: steers where new meetings go."""
    drifted: tuple[str, ...] = ()
    """Members launched from something else than the group launches from now."""
    replacing: tuple[str, ...] = ()
    """Drifted nodes this round's growth or drains are for (a rollout step)."""
    numbers: dict[str, float] = field(default_factory=dict)
    signals: frozenset[str] = frozenset()
    """Conditions that held this round; History keeps them to time "held for N s"."""
    demand: float | None = None
    """Fleet CPU demand in nodes (sum of node CPU), for the trend; None if unknown."""
    schedule_misses: tuple[WindowMiss, ...] = ()
    """Schedule windows in effect this round that the fleet will be late for or short of."""
    forecast_status: str = ""
    """The forecast preset's forecast: ``ok`` (in use), or why the round fell back to the
    reactive rules (``short``, ``stale``, ``unreadable``, ``off``); "" for other presets."""
    forecast_reason: str = ""
    """Why, in words."""

    def completed(
        self,
        steer: tuple[tuple[str, float], ...],
        numbers: dict[str, float],
        schedule_misses: tuple[WindowMiss, ...],
        forecast_status: str,
        forecast_reason: str,
    ) -> Decision:
        """This decision with what decide adds once capacity is planned. ``replace`` would do
        the same at twice the cost, and it runs every round (a new field goes here too: a test
        holds every field kept)."""
        return Decision(
            self.action,
            self.reason,
            self.desired,
            self.drain,
            self.undrain,
            self.terminate,
            steer,
            self.drifted,
            self.replacing,
            numbers,
            self.signals,
            self.demand,
            schedule_misses,
            forecast_status,
            forecast_reason,
        )
