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

from bbbcore import __version__, logs, secrets
from bbbcore.config import EXIT_CONFIG, split_listen
from bbbscaler.actuate import Actuator
from bbbscaler.certificate import open_job
from bbbscaler.controller import Controller
from bbbscaler.explain import render
from bbbscaler.exposition import ScalerMetrics
from bbbscaler.observe import build_observer
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
    metrics = ScalerMetrics(settings.policy.preset, settings.dry_run)

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
        controller = Controller(kit.observer, actuator, config, metrics, dry_run=settings.dry_run)
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


def _secret_error(exc: secrets.SecretError) -> int:
    key = "scalelite.secret (BBBSCALER_SCALELITE__SECRET)"
    log.error("config_invalid", key=key, problem=str(exc))
    return EXIT_CONFIG
