"""The imperative shell: wire observer, policy, actuator, metrics and HTTP from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from bbbcore import __version__, aws, logs, secrets
from bbbcore.config import EXIT_CONFIG, split_listen
from bbbscaler.actuate import Actuator
from bbbscaler.asg import AsgAdapter, GroupNotFound
from bbbscaler.certificate import open_job
from bbbscaler.controller import Controller
from bbbscaler.explain import render
from bbbscaler.exposition import ScalerMetrics
from bbbscaler.history_source import HistoryReader, PrometheusHistory, history_query
from bbbscaler.observe import SessionFactory, build_observer
from bbbscaler.policy import PolicyConfig
from bbbscaler.server import build_app
from bbbscaler.settings import ScalerSettings

log = logs.get(__name__)

EXIT_ROUND_FAILED = 1
CERTIFICATE_GRACE = 30.0
"""Seconds SIGTERM lets a certificate order in flight finish (it publishes what it got)."""


@dataclass(frozen=True, slots=True)
class Wired:
    controller: Controller
    metrics: ScalerMetrics
    config: PolicyConfig


@contextlib.asynccontextmanager
async def wire(settings: ScalerSettings) -> AsyncIterator[Wired]:
    """Open every client and build the controller on them; closes everything on exit."""
    config = PolicyConfig.from_settings(settings)
    metrics = ScalerMetrics(
        settings.policy.preset, settings.dry_run, [w.name for w in settings.policy.schedules]
    )

    def failed(source: str) -> None:
        metrics.observe_errors.labels(source).inc()

    async with build_observer(settings, on_error=failed) as kit:
        actuator = Actuator(
            kit.asg,
            kit.scalelite,
            kit.observer.recheck,
            config,
            dry_run=settings.dry_run,
            on_outcome=metrics.record_outcome,
        )
        reader = None
        if config.preset == "forecast":
            source = PrometheusHistory(
                kit.http,
                settings.forecast_url,
                history_query(settings),
                weeks=settings.forecast.weeks,
                timeout=settings.forecast.timeout,
            )
            reader = HistoryReader(
                source,
                config,
                settings.forecast.refresh_interval,
                on_read=metrics.record_history_read,
            )
        controller = Controller(
            kit.observer,
            actuator,
            config,
            metrics,
            dry_run=settings.dry_run,
            forecaster=reader,
        )
        yield Wired(controller, metrics, config)


async def once(settings: ScalerSettings) -> int:
    """One round; its decision as one JSON line, the last line on stdout."""
    try:
        async with wire(settings) as w:
            result = await w.controller.round()
    except secrets.SecretError as exc:
        return _secret_error(exc)
    if result is None:
        print(json.dumps({"action": "error", "reason": "the group could not be observed"}))
        return EXIT_ROUND_FAILED
    print(json.dumps(result.as_json(), sort_keys=True))
    return 0


async def explain(settings: ScalerSettings) -> int:
    """Observe and decide once, change nothing; print the fleet table and the decision."""
    try:
        async with wire(settings) as w:
            snapshot, decision = await w.controller.preview()
    except secrets.SecretError as exc:
        return _secret_error(exc)
    sys.stdout.write(render(snapshot, decision, w.config))
    return 0


async def run(settings: ScalerSettings) -> int:
    """The loop until SIGTERM; the round in flight finishes first. Exit 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    interval = settings.loop.interval
    try:
        async with wire(settings) as w:
            limit = 3 * interval + settings.aws.timeout + settings.metrics.timeout

            def status() -> dict[str, object] | None:
                last = w.controller.last
                return None if last is None else last.as_json()

            app = build_app(w.metrics, lambda: w.controller.alive(interval, limit), status)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            host, port = split_listen(settings.http.listen)
            await web.TCPSite(runner, host, port).start()
            log.info(
                "started",
                version=__version__,
                asg=settings.aws.asg_name,
                preset=settings.policy.preset,
                dry_run=settings.dry_run,
                listen=settings.http.listen,
                interval=interval,
            )
            started = time.monotonic()
            try:
                async with open_job(settings, w.metrics.registry) as job:
                    certificate = None if job is None else asyncio.create_task(job.run(stop))
                    await w.controller.run(interval, stop)
                    if certificate is not None:
                        await _finish(certificate, CERTIFICATE_GRACE)
            finally:
                await runner.cleanup()
            log.info("stopped", uptime_s=round(time.monotonic() - started, 1))
    except secrets.SecretError as exc:
        return _secret_error(exc)
    return 0


async def _finish(task: asyncio.Task[None], grace: float) -> None:
    """Let ``task`` end by itself within ``grace`` seconds, else cancel it."""
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        log.warning("certificate_job_cancelled", grace_s=grace)
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def check_schedules(
    settings: ScalerSettings, *, session_factory: SessionFactory = aws.session
) -> int:
    """Warn about schedule windows that ask for more nodes than the upper bound allows.

    The bound is ``policy.max_nodes`` when set, and the group's MaxSize, read with one
    DescribeAutoScalingGroups (only when there are windows). A group that cannot be read
    is said so, and the check goes on with what the configuration alone says. Warnings
    only: the configuration is valid, so the exit code is 0.
    """
    windows = [w for w in settings.policy.schedules if w.min_nodes > 0]
    if not windows:
        return 0
    limits: list[tuple[int, str]] = []
    if settings.policy.max_nodes:
        limits.append((settings.policy.max_nodes, "policy.max_nodes"))
    try:
        max_size = await _group_max_size(settings, session_factory)
    except (GroupNotFound, ClientError, BotoCoreError, TimeoutError) as exc:
        log.warning(
            "schedule_check_incomplete",
            asg=settings.aws.asg_name,
            reason=f"the group's MaxSize could not be read: {type(exc).__name__}: {exc}"[:300],
            checked_against=[name for _, name in limits],
        )
    else:
        limits.append((max_size, f"MaxSize of {settings.aws.asg_name}"))
    if not limits:
        return 0
    upper, bound = min(limits)
    for w in windows:
        if w.min_nodes > upper:
            log.warning(
                "schedule_exceeds_upper_bound",
                window=w.name,
                min_nodes=w.min_nodes,
                upper=upper,
                bound=bound,
                short_nodes=w.min_nodes - upper,
                fix="raise the group's MaxSize (FleetMaxSize) or policy.max_nodes, "
                "or lower the window's min_nodes",
            )
    return 0


async def _group_max_size(settings: ScalerSettings, session_factory: SessionFactory) -> int:
    session = session_factory(settings.aws.region)
    config = aws.client_config(max_attempts=2, timeout=settings.aws.timeout)
    async with (
        session.client("autoscaling", config=config) as autoscaling,
        session.client("ec2", config=config) as ec2,
    ):
        adapter = AsgAdapter(
            autoscaling, ec2, settings.aws.asg_name, give_up_after=settings.aws.timeout
        )
        group, _members = await adapter.describe_group()
    return group.max_size


def _secret_error(exc: secrets.SecretError) -> int:
    key = "scalelite.secret (BBBSCALER_SCALELITE__SECRET)"
    log.error("config_invalid", key=key, problem=str(exc))
    return EXIT_CONFIG
