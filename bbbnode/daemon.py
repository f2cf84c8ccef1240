"""Wires bbbnode's parts together and runs them until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from bbbcore import __version__, bbb_secret, logs, secrets
from bbbcore.bbb_api import BbbClient
from bbbcore.config import EXIT_CONFIG, split_listen
from bbbnode.collector import Collector
from bbbnode.cpu import CpuSampler
from bbbnode.exposition import NodeMetrics
from bbbnode.runner import Runner, runner_for
from bbbnode.sdnotify import Notifier, feed_watchdog
from bbbnode.server import build_app
from bbbnode.settings import NodeSettings
from bbbnode.snapshot import Snapshot
from bbbnode.supervisor import supervise

if TYPE_CHECKING:
    # Imported where it is used: the fleet side (the boto stack, acme) is not
    # loaded at all in exporter-only mode (aws.enabled = false).
    from bbbnode.fleet import FleetNode

log = logs.get(__name__)


def stale_after(settings: NodeSettings) -> float:
    """Seconds after which the last BBB read no longer counts as fresh."""
    if settings.metrics.stale_after > 0:
        return settings.metrics.stale_after
    return 3 * settings.bbb.poll_interval + settings.bbb.timeout


def make_runner(settings: NodeSettings) -> Runner:
    """Host commands run for real, or are only written down (bbbsim's hosts)."""
    return runner_for(settings.host.commands, settings.host.command_log)


async def run(settings: NodeSettings, environ: Mapping[str, str] = os.environ) -> int:
    """Run the daemon; returns the process exit code."""
    explicit = settings.bbb.secret.get_secret_value() if settings.bbb.secret else None
    if explicit:
        try:
            explicit = await secrets.resolve(explicit, setting="bbb.secret")
        except secrets.SecretError as exc:
            log.error("config_invalid", key="bbb.secret (BBBNODE_BBB__SECRET)", problem=str(exc))
            return EXIT_CONFIG
    secret = bbb_secret.discover(explicit, settings.bbb.properties_files)
    if not secret:
        log.error(
            "config_invalid",
            key="bbb.secret (BBBNODE_BBB__SECRET)",
            problem="not set and no securitySalt found",
            searched=[str(p) for p in settings.bbb.properties_files],
        )
        return EXIT_CONFIG
    host_algorithms = bbb_secret.discover_algorithms(settings.bbb.properties_files)
    try:
        algorithm = bbb_secret.signing_algorithm(settings.bbb.checksum, host_algorithms)
    except bbb_secret.UnusableAlgorithm as exc:
        log.error("config_invalid", key="bbb.checksum (BBBNODE_BBB__CHECKSUM)", problem=str(exc))
        return EXIT_CONFIG
    log.info(
        "bbb_api_signing",
        algorithm=algorithm,
        allowed=None if host_algorithms is None else list(host_algorithms.allowed),
        source=None if host_algorithms is None else str(host_algorithms.source),
    )
    if (
        settings.aws.enabled
        and settings.tls.enabled
        and settings.tls.mode == "fleet"
        and not settings.tls.fleet_secret
    ):
        log.error(
            "config_invalid",
            key="tls.fleet_secret (BBBNODE_TLS__FLEET_SECRET)",
            problem="required with tls.mode fleet (or set tls.mode host, or tls.enabled false)",
        )
        return EXIT_CONFIG
    advice = bbb_secret.scalelite_advice(host_algorithms)
    if advice and settings.aws.enabled and settings.scalelite.enabled:
        # bbbnode cannot see Scalelite's environment; it can say what the host demands.
        log.warning("scalelite_poll_refused_unless", advice=advice)

    notifier = Notifier(environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    collector: Collector | None = None

    def latest() -> Snapshot | None:
        # The metrics registry exists before the collector it renders.
        return collector.latest if collector else None

    metrics = NodeMetrics(latest, time.time)
    metrics.set_identity(settings.host.instance_id or socket.gethostname())

    async with aiohttp.ClientSession() as session:
        client = BbbClient(
            session,
            settings.bbb.url,
            secret,
            algorithm,
            timeout=settings.bbb.timeout,
            max_bytes=settings.bbb.max_response_bytes,
        )
        collector = Collector(
            client,
            metrics,
            CpuSampler(settings.host.procfs, settings.host.cpu_window),
            settings.recordings.root if settings.recordings.enabled else None,
            settings.bbb.release_file,
        )
        poll = settings.bbb.poll_interval

        def alive() -> bool:
            # The loop is alive if a cycle finished recently, whatever BBB said.
            last = collector.last_cycle_at if collector else None
            return last is not None and time.monotonic() - last < 3 * poll + settings.bbb.timeout

        stale = stale_after(settings)
        fleet: FleetNode | None = None
        if settings.aws.enabled:
            from bbbnode.fleet import FleetNode

            fleet = FleetNode(
                settings, environ, latest, metrics, make_runner(settings), stale, secret,
                notifier=notifier,
            )  # fmt: skip

        def operation(kind: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            async def run() -> dict[str, Any]:
                if fleet is None:
                    return {"accepted": False, "reason": "aws.enabled is false: no fleet to leave"}
                return await fleet.request(kind)

            return run

        app = build_app(
            metrics,
            latest,
            time.time,
            alive,
            stale,
            status_extra=lambda: {} if fleet is None else fleet.status(),
            operations={kind: operation(kind) for kind in ("drain", "undrain")},
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = split_listen(settings.metrics.listen)
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info(
            "started", version=__version__, listen=settings.metrics.listen, bbb=settings.bbb.url
        )

        def crashed(task: str) -> None:
            metrics.task_restarts.labels(task).inc()

        tasks = [
            asyncio.create_task(supervise("collector", lambda: collector.run(poll), crashed)),
        ]
        exit_code = 0
        stopped = asyncio.create_task(stop.wait())
        ready = asyncio.create_task(_start(collector, fleet, notifier))
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and ready.exception() is not None:
            log.error("startup_failed", error=str(ready.exception()))
            exit_code = 1
            stop.set()
        elif ready.done():
            log.info("ready", api_up=ready.result())
            # What start-up made (modules, classes, settings, clients) lives as long
            # as the process: keep it out of the garbage collector's full passes.
            # A busy host's getMeetings leaves enough survivors to start one every
            # few polls, and a pass over every object held the loop for tens of
            # milliseconds (under one with start-up frozen; benchmarks/exporter.py).
            gc.freeze()
            in_pool = fleet is not None and not fleet.serving
            notifier.ready(status="warm pool: not serving" if in_pool else "serving")
            tasks.append(asyncio.create_task(feed_watchdog(notifier, alive)))
            if fleet is not None:
                tasks.append(asyncio.create_task(_fleet_tasks(fleet, crashed)))
        else:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ready

        await stop.wait()
        log.info("stopping")
        notifier.stopping()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if fleet is not None:
            await fleet.close()
        await runner.cleanup()
    stopped.cancel()
    log.info("stopped", exit_code=exit_code)
    return exit_code


async def _fleet_tasks(fleet: FleetNode, crashed: Callable[[str], None]) -> None:
    """The fleet's supervised tasks; a host that settled in a warm pool first waits to
    enter service (a stopped one never does here: it boots again and starts anew)."""
    if not fleet.serving:
        await supervise("launch", fleet.until_serving, crashed)
    await asyncio.gather(*(supervise(n, f, crashed) for n, f in fleet.tasks().items()))


async def _start(collector: Collector, fleet: FleetNode | None, notifier: Notifier) -> bool:
    """First collection, then (with AWS) joining the fleet; returns whether BBB answered."""
    first = await collector.wait_first()
    if fleet is not None:
        notifier.status("joining the fleet")
        await fleet.start()
    return first.api_up
