"""Carry a Decision out: re-enable, grow, cordon, steer, and terminate after a re-check.

Steering sets a node's Scalelite ``load_multiplier`` (updateServer), which
Scalelite's placement multiplies the node's load by: a high multiplier sends
new meetings elsewhere without cordoning, and never touches running ones.

Each step is idempotent and reads the truth it needs from the round's snapshot;
a step that fails is logged and counted, and the next round (which observes
again) picks the work up. The one step that can end meetings, terminate, looks
again right before the call: a fresh scrape of that node and a fresh read of
Scalelite must still show it drained.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from bbbcore import logs
from bbbcore.scalelite import ServerState
from bbbscaler.model import Decision, FleetSnapshot, Node
from bbbscaler.policy import PolicyConfig, drained

log = logs.get(__name__)


class GroupPort(Protocol):
    """The ASG and EC2 calls the actuator makes."""

    async def set_desired(self, desired: int) -> None: ...

    async def terminate(self, instance_id: str) -> None: ...

    async def mark_draining(self, instance_id: str, since: float) -> None: ...

    async def unmark_draining(self, instance_id: str) -> None: ...


class ServerPort(Protocol):
    """Scalelite's updateServer, as bbbcore.scalelite.ScaleliteClient offers it."""

    async def set_state(self, server_id: str, state: ServerState) -> Any: ...

    async def set_load_multiplier(self, server_id: str, multiplier: float) -> Any: ...


Recheck = Callable[[Node], Awaitable[Node]]
"""A fresh look at one node (its metrics and its Scalelite server)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call the actuator made (or, in dry-run, would have made)."""

    action: str
    """set_desired, terminate, cordon, enable, mark_draining, unmark_draining, steer."""
    target: str
    result: str
    """ok, skipped, failed, dry_run."""
    detail: str = ""


class Actuator:
    """Applies decisions to the group and Scalelite; in dry-run, only says what it would do."""

    def __init__(
        self,
        group: GroupPort,
        servers: ServerPort,
        recheck: Recheck,
        config: PolicyConfig,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        on_outcome: Callable[[Outcome], None] = lambda _: None,
    ) -> None:
        self._group = group
        self._servers = servers
        self._recheck = recheck
        self._config = config
        self._dry_run = dry_run
        self._clock = clock
        self._on_outcome = on_outcome

    async def apply(self, decision: Decision, snapshot: FleetSnapshot) -> tuple[Outcome, ...]:
        """Carry ``decision`` out against the fleet ``snapshot`` saw; never raises for a call."""
        done: list[Outcome] = []

        async def call(
            action: str, target: str, run: Callable[[], Awaitable[object]], detail: str = ""
        ) -> bool:
            if self._dry_run:
                out = Outcome(action, target, "dry_run", detail)
            else:
                try:
                    await run()
                    out = Outcome(action, target, "ok", detail)
                except Exception as exc:  # one failed call must not stop the others
                    error = f"{type(exc).__name__}: {exc}"
                    said = f"{detail}: {error}" if detail else error
                    out = Outcome(action, target, "failed", said)
            done.append(out)
            self._on_outcome(out)
            event = "would_act" if out.result == "dry_run" else f"act_{out.result}"
            (log.warning if out.result == "failed" else log.info)(
                event, action=action, target=target, detail=out.detail or None
            )
            return out.result != "failed"

        def skip(action: str, target: str, why: str) -> None:
            out = Outcome(action, target, "skipped", why)
            done.append(out)
            self._on_outcome(out)
            log.warning("act_skipped", action=action, target=target, reason=why)

        # 1. Re-enable before launching: an enabled node serves at once.
        for iid in decision.undrain:
            node = snapshot.node(iid)
            server = node.server if node else None
            if server is not None and server.state in ("cordoned", "disabled"):
                sid = server.id
                if not await call("enable", iid, partial(self._servers.set_state, sid, "enabled")):
                    continue
            await call("unmark_draining", iid, partial(self._group.unmark_draining, iid))

        # 2. Grow (or own the instances protection kept).
        if decision.desired is not None and decision.desired != snapshot.group.desired:
            want = decision.desired
            await call("set_desired", str(want), partial(self._group.set_desired, want))

        # 3. Start drains: the tag first, so a cordon is never without its owner.
        now = self._clock()
        for iid in decision.drain:
            if await call("mark_draining", iid, partial(self._group.mark_draining, iid, now)):
                await self._cordon(snapshot.node(iid), call)

        # A drain whose cordon failed (or was undone by hand) is cordoned again.
        for node in snapshot.nodes:
            if node.draining and node.instance_id not in decision.undrain:
                await self._cordon(node, call)

        # 4. Steer: set the load multipliers the policy asked for. It only biases where new
        # meetings go, so it comes after the steps that change who serves, and before
        # terminate, whose re-checks are the slow part of a round.
        for iid, multiplier in decision.steer:
            node = snapshot.node(iid)
            server = node.server if node else None
            if node is None:
                skip("steer", iid, "not in the group any more")
            elif server is None:
                skip("steer", iid, "its Scalelite server is unknown this round")
            elif server.state == "absent":
                skip("steer", iid, "not registered in Scalelite")
            else:
                sid = server.id
                set_multiplier = partial(self._servers.set_load_multiplier, sid, multiplier)
                await call("steer", iid, set_multiplier, f"load_multiplier={multiplier:g}")

        # 5. Terminate drained nodes, after one more look.
        for iid in decision.terminate:
            node = snapshot.node(iid)
            if node is None:
                skip("terminate", iid, "not in the group any more")
                continue
            try:
                fresh = await self._recheck(node)
            except Exception as exc:
                skip("terminate", iid, f"re-check failed: {type(exc).__name__}: {exc}")
                continue
            if not drained(fresh, self._config):
                skip("terminate", iid, _not_drained_reason(fresh, self._config))
                continue
            await call("terminate", iid, partial(self._group.terminate, iid))
        return tuple(done)

    async def _cordon(
        self,
        node: Node | None,
        call: Callable[[str, str, Callable[[], Awaitable[object]]], Awaitable[bool]],
    ) -> None:
        if node is None or node.server is None or node.server.state != "enabled":
            return
        sid = node.server.id
        await call("cordon", node.instance_id, partial(self._servers.set_state, sid, "cordoned"))


def _not_drained_reason(node: Node, config: PolicyConfig) -> str:
    m = node.metrics
    if m is None or m.meetings is None:
        return "no meeting data on re-check"
    if m.age > config.stale_after:
        return f"meeting data {m.age:.0f}s old on re-check"
    if m.participants is None:
        return "no participant count on re-check"
    if m.meetings or m.participants:
        return f"{m.meetings} meeting(s), {m.participants} participant(s) on re-check"
    if node.server is None:
        return "Scalelite unreadable on re-check"
    return f"Scalelite shows it {node.server.state} with load {node.server.load}"
