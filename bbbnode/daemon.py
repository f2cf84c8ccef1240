"""Wires bbbnode's parts together and runs them until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time

import aiohttp
from aiohttp import web

from bbbcore import __version__, bbb_secret, logs
from bbbcore.bbb_api import BbbClient
from bbbcore.config import EXIT_CONFIG
from bbbnode.collector import Collector
from bbbnode.cpu import CpuSampler
from bbbnode.exposition import NodeMetrics
from bbbnode.sdnotify import Notifier, feed_watchdog
from bbbnode.server import build_app, split_listen
from bbbnode.settings import NodeSettings
from bbbnode.supervisor import supervise

log = logs.get(__name__)


def stale_after(settings: NodeSettings) -> float:
    """Seconds after which the last BBB read no longer counts as fresh."""
    if settings.metrics.stale_after > 0:
        return settings.metrics.stale_after
    return 3 * settings.bbb.poll_interval + settings.bbb.timeout


async def run(settings: NodeSettings) -> int:
    """Run the daemon; returns the process exit code."""
    secret = bbb_secret.discover(
        settings.bbb.secret.get_secret_value() if settings.bbb.secret else None,
        settings.bbb.properties_files,
    )
    if not secret:
        log.error(
            "config_invalid",
            key="bbb.secret (BBBNODE_BBB__SECRET)",
            problem="not set and no securitySalt found",
            searched=[str(p) for p in settings.bbb.properties_files],
        )
        return EXIT_CONFIG

    notifier = Notifier(os.environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    collector: Collector | None = None
    metrics = NodeMetrics(lambda: collector.latest if collector else None, time.time)
    metrics.set_identity(settings.host.instance_id or socket.gethostname())

    async with aiohttp.ClientSession() as session:
        client = BbbClient(
            session,
            settings.bbb.url,
            secret,
            settings.bbb.checksum,
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

        app = build_app(
            metrics,
            lambda: collector.latest if collector else None,
            time.time,
            alive,
            stale_after(settings),
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
        first = asyncio.create_task(collector.wait_first())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if first.done():
            notifier.ready(status="collecting")
            log.info("ready", api_up=first.result().api_up)
            tasks.append(asyncio.create_task(feed_watchdog(notifier, alive)))
        else:
            first.cancel()

        await stop.wait()
        log.info("stopping")
        notifier.stopping()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
    log.info("stopped")
    return 0
