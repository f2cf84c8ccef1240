"""One round's observation: the FleetSnapshot decide() works on.

The group comes first (ASG, then EC2), because every other source is asked
about its members; then node metrics and Scalelite are read concurrently. A
source that fails leaves its fields unknown (None) and its name in
``snapshot.errors``; unknown data blocks scale-in in the policy, so a failed
source can only delay shrinking, never cause it. Without the group there is no
snapshot: the ASG's failure is raised.

Sources, as named in ``errors`` and in ``on_error``: ``asg``, ``ec2``,
``metrics``, ``scalelite``. ``launch_templates`` (resolving the group's
``$Latest``/``$Default``) is reported to ``on_error`` only: without it no node
counts as drifted, which pauses a rollout and holds nothing else; so is
``warm_pool``: without it the round only estimates the next launch's lag as cold
(the pool's hosts are never members, so sizing does not change).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from bbbcore import aws, logs, secrets
from bbbcore.scalelite import RetryPolicy, ScaleliteClient, ScaleliteError
from bbbscaler.asg import AsgAdapter, Ec2Facts, GroupNotFound, InstanceFacts, merge
from bbbscaler.model import FleetSnapshot, Group, Node, ServerView, WarmPool
from bbbscaler.promapi import PrometheusError, PrometheusSource
from bbbscaler.readings import MetricsSource, Reading
from bbbscaler.scrape import Scraper
from bbbscaler.servers import ScaleliteServers
from bbbscaler.settings import ScalerSettings

log = logs.get(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
OnError = Callable[[str], None]
SessionFactory = Callable[[str | None], Any]

# What the sources raise when the outside world misbehaves (as opposed to a bug here).
_OPERATIONAL = (
    BotoCoreError,
    ClientError,
    GroupNotFound,
    ScaleliteError,
    PrometheusError,
    aiohttp.ClientError,
    TimeoutError,
)

SOURCES: Final = ("asg", "ec2", "metrics", "scalelite")
"""Every source name a snapshot's ``errors`` may hold."""
REPORTED: Final = (*SOURCES, "launch_templates", "warm_pool")
"""Every source name observe() may report to ``on_error``, for pre-creating metric labels."""


class GroupSource(Protocol):
    """The group's reads (AsgAdapter); a benchmark or the backtest may pass its own."""

    async def describe_group(self) -> tuple[Group, tuple[InstanceFacts, ...]]: ...

    async def with_ec2(self, members: Sequence[InstanceFacts]) -> tuple[InstanceFacts, ...]: ...

    def last_known(self, instance_ids: Iterable[str]) -> Mapping[str, Ec2Facts]: ...

    async def resolve_launches(
        self, group: Group, members: Sequence[InstanceFacts]
    ) -> tuple[Group, tuple[InstanceFacts, ...]]: ...

    async def describe_warm_pool(self) -> WarmPool | None: ...

    def came_from_pool(self, instance_id: str) -> bool: ...


class ServerSource(Protocol):
    """Where each node's Scalelite server comes from (ScaleliteServers)."""

    async def read(self, nodes: Sequence[Node]) -> Mapping[str, ServerView | None]: ...

    async def read_one(self, node: Node) -> ServerView | None: ...


def _node(facts: InstanceFacts, warm_start: bool = False) -> Node:
    return Node(
        instance_id=facts.instance_id,
        lifecycle=facts.lifecycle,
        private_ip=facts.private_ip,
        healthy=facts.healthy,
        protected=facts.protected,
        launched_at=facts.launched_at,
        draining_since=facts.draining_since,
        launch=facts.launch,
        warm_start=warm_start,
    )


class Observer:
    """Builds one FleetSnapshot per ``observe()``.

    ``clock`` stamps ``snapshot.at`` and ages the metrics to it; ``on_error``
    is called once per failed source and round (e.g. to count
    ``bbbscaler_observe_errors_total{source}``).
    """

    def __init__(
        self,
        asg: GroupSource,
        metrics: MetricsSource,
        servers: ServerSource,
        *,
        clock: Clock = time.time,
        on_error: OnError | None = None,
    ) -> None:
        self._asg = asg
        self._metrics = metrics
        self._servers = servers
        self._clock = clock
        self._on_error = on_error

    def _failed(self, source: str, exc: BaseException) -> None:
        log.warning(
            "observe_source_failed",
            source=source,
            error=type(exc).__name__,
            detail=str(exc)[:300],
            error_code=aws.error_code(exc),
            # A failure no source is known to raise is a bug: keep its traceback.
            exc_info=None if isinstance(exc, _OPERATIONAL) else exc,
        )
        if self._on_error is not None:
            self._on_error(source)

    async def observe(self) -> FleetSnapshot:
        """The fleet now. Raises what the ASG read raised (e.g. asg.GroupNotFound)."""
        try:
            group, members = await self._asg.describe_group()
        except Exception as exc:
            self._failed("asg", exc)
            raise
        errors: list[str] = []
        try:
            members = await self._asg.with_ec2(members)
        except Exception as exc:
            self._failed("ec2", exc)
            errors.append("ec2")
            # Addresses and launch times never change, and only this scaler writes the
            # drain tag: the last read still holds for the instances it saw.
            members = merge(members, self._asg.last_known(m.instance_id for m in members))
        try:
            group, members = await self._asg.resolve_launches(group, members)
        except Exception as exc:
            # Not in errors: an unknown launch only pauses rollouts (no node counts as drifted).
            self._failed("launch_templates", exc)
        pool: WarmPool | None = None
        try:
            pool = await self._asg.describe_warm_pool()
        except Exception as exc:
            # Not in errors: without the pool only the lag estimate is cold this round.
            self._failed("warm_pool", exc)
        nodes = tuple(_node(m, self._asg.came_from_pool(m.instance_id)) for m in members)
        # EC2 never described these, so whether the scaler drains them is unknown: no
        # metrics either, which makes them missing data and holds scale-in.
        known = [n for n, m in zip(nodes, members, strict=True) if m.ec2_known]
        no_readings: Mapping[str, Reading] = {}
        no_views: Mapping[str, ServerView | None] | None = None
        readings, views = await asyncio.gather(
            self._guarded("metrics", self._metrics.read(known), no_readings, errors),
            self._guarded("scalelite", self._servers.read(nodes), no_views, errors),
        )
        at = self._clock()
        return FleetSnapshot(
            at=at,
            group=group,
            nodes=tuple(
                replace(
                    n,
                    metrics=None if (r := readings.get(n.instance_id)) is None else r.metrics(at),
                    server=None if views is None else views.get(n.instance_id),
                )
                for n in nodes
            ),
            scalelite_ok=views is not None,
            errors=tuple(s for s in SOURCES if s in errors),
            pool=pool,
        )

    async def _guarded(
        self, source: str, read: Awaitable[T], failed: T, errors: list[str] | None = None
    ) -> T:
        """``read``'s result, or ``failed`` when the source raised (reported, and noted
        in ``errors``)."""
        try:
            return await read
        except Exception as exc:
            self._failed(source, exc)
            if errors is not None:
                errors.append(source)
            return failed

    async def recheck(self, node: Node) -> Node:
        """``node`` with its metrics and Scalelite server read again, right now.

        For the last check before a termination: a source that fails leaves the
        field None (unknown), which never passes as drained.
        """
        reading, view = await asyncio.gather(
            self._guarded("metrics", self._metrics.read_one(node), None),
            self._guarded("scalelite", self._servers.read_one(node), None),
        )
        at = self._clock()
        return replace(node, metrics=None if reading is None else reading.metrics(at), server=view)


# --------------------------------------------------------------------------- wiring


@dataclass(frozen=True, slots=True)
class ObserveKit:
    """What build_observer opened: the observer and the clients actuation shares."""

    observer: Observer
    asg: AsgAdapter
    """Also the actuator's way to SetDesiredCapacity, terminate and tag."""
    scalelite: ScaleliteClient
    """Also the actuator's way to cordon and enable servers (ids from ServerView.id)."""
    servers: ScaleliteServers
    http: aiohttp.ClientSession


def metrics_source(
    settings: ScalerSettings, http: aiohttp.ClientSession, clock: Clock = time.time
) -> MetricsSource:
    """The configured metrics source over ``http``."""
    m = settings.metrics
    if m.source == "prometheus":
        return PrometheusSource(
            http, m.prometheus_url, instance_label=m.instance_label, timeout=m.timeout, clock=clock
        )
    return Scraper(http, m.url_template, timeout=m.timeout, concurrency=m.concurrency, clock=clock)


@contextlib.asynccontextmanager
async def build_observer(
    settings: ScalerSettings,
    *,
    session_factory: SessionFactory = aws.session,
    scalelite_secret: str | None = None,
    clock: Clock = time.time,
    on_error: OnError | None = None,
) -> AsyncIterator[ObserveKit]:
    """Open the AWS clients and the HTTP session, and build the Observer on them.

    ``session_factory(region)`` gives the aioboto3 session (default
    ``bbbcore.aws.session``); ``scalelite_secret`` skips resolving
    ``scalelite.secret`` (file: or a Secrets Manager ARN). Everything is closed
    on exit.
    """
    session = session_factory(settings.aws.region)
    config = aws.client_config(max_attempts=3, timeout=settings.aws.timeout)
    async with contextlib.AsyncExitStack() as stack:
        autoscaling = await stack.enter_async_context(session.client("autoscaling", config=config))
        ec2 = await stack.enter_async_context(session.client("ec2", config=config))
        # Room for every scrape at once plus Scalelite's and Prometheus' own calls.
        connector = aiohttp.TCPConnector(limit=settings.metrics.concurrency + 8)
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        secret = scalelite_secret
        if secret is None:
            configured = settings.scalelite.secret
            secret = await secrets.resolve(
                "" if configured is None else configured.get_secret_value(),
                setting="scalelite.secret",
                session_factory=lambda _region: session,
            )
        s = settings.scalelite
        # A round waits for Scalelite: retry briefly, the next round asks again anyway.
        client = ScaleliteClient(
            http,
            s.url,
            secret,
            algorithm=s.checksum,
            timeout=s.timeout,
            retry=RetryPolicy(attempts=3, initial_s=0.2, max_s=2.0),
        )
        asg = AsgAdapter(
            autoscaling,
            ec2,
            settings.aws.asg_name,
            give_up_after=max(settings.loop.interval, settings.aws.timeout),
        )
        servers = ScaleliteServers(client, s.server_url_template, s.domain)
        observer = Observer(
            asg, metrics_source(settings, http, clock), servers, clock=clock, on_error=on_error
        )
        yield ObserveKit(observer, asg, client, servers, http)
