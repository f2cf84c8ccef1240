"""The emulated fleet: an emulated BBB host and a real bbbnode for every instance the ASG launches.

It listens to the lifecycle layer: ``launched`` starts a host (BBB emulator,
synthetic /proc/stat), an IMDSv2 emulator and a real ``bbbnode`` process with
AWS on (protection, lifecycle drain, Route53, Scalelite registration; the fleet
certificate from Secrets Manager when ``tls_secret`` is set, else TLS off; EFS
off, host commands only logged); ``terminated`` stops them. A warm pool's
instance stops (``stopped``: host, IMDS and bbbnode go, SIGTERM as at a
shutdown; its host tree and bbbnode's state stay, as on its volume) and boots
again (``started``), with the public address the layer gave the new start.
Every host is reached through one loopback Router, so bbbnode and bbbscaler
both derive a host's URLs from ``{instance_id}`` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bbbcore import logs
from bbbsim.host import EmulatedHost, start_host
from bbbsim.image_tree import make_host
from bbbsim.imds import ImdsEmulator, identity_from
from bbbsim.imds import serve as serve_imds
from bbbsim.lifecycle_layer import FleetEvent, LifecycleLayer
from bbbsim.moto_server import FleetIds
from bbbsim.node_process import NodeProcess, fleet_node_env, free_port, start_node
from bbbsim.router import Router

log = logs.get(__name__)

# moto's instances have no public address; a BBB host needs one for media.
# 203.0.113.0/24 is a documentation range: nothing ever connects to it. Warm pool
# instances get theirs from the lifecycle layer, a new one at each start.
PUBLIC_IP = "203.0.113.10"
RUNNING = frozenset(
    {"InService", "Pending", "Pending:Wait", "Warmed:Pending", "Warmed:Pending:Wait"}
)
"""Lifecycle states of an instance whose host runs (a warm pool's ready ones are stopped)."""


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What every emulated host's bbbnode is told."""

    ids: FleetIds
    aws_endpoint: str
    """The lifecycle layer's endpoint (AWS_ENDPOINT_URL for bbbnode)."""
    scalelite_url: str
    scalelite_secret: str
    bbb_secret: str
    root: Path
    poll: float = 0.5
    """bbbnode's BBB poll interval (and, times a few, its CPU window)."""
    lifecycle_poll: float = 0.5
    idle_grace: float = 2.0
    tls_secret: str = ""
    """The fleet certificate's secret: each bbbnode installs it into its own cert_dir."""
    tls_poll: float = 5.0
    """bbbnode's look at the secret's version (tls.fleet_poll_interval)."""
    boot_delay: float = 0.0
    """Seconds a launched instance boots before bbbnode starts (the image's services)."""
    warm_boot_delay: float = 0.0
    """The same for a warm pool instance started again (its services start, nothing more)."""
    extra_env: tuple[tuple[str, str], ...] = ()


def tls_env(config: FleetConfig, root: Path) -> dict[str, str]:
    """bbbnode's TLS settings on an emulated host: the fleet certificate, or none."""
    if not config.tls_secret:
        return {"BBBNODE_TLS__ENABLED": "false"}
    return {
        "BBBNODE_TLS__ENABLED": "true",
        "BBBNODE_TLS__MODE": "fleet",
        "BBBNODE_TLS__FLEET_SECRET": config.tls_secret,
        "BBBNODE_TLS__FLEET_POLL_INTERVAL": str(config.tls_poll),
        "BBBNODE_TLS__FLEET_WAIT": "120",
        "BBBNODE_TLS__CERT_DIR": str(root / "tls"),
    }


@dataclass
class Instance:
    """One running emulated instance."""

    instance_id: str
    host: EmulatedHost
    imds: web.AppRunner
    node: NodeProcess
    env: dict[str, str]
    root: Path


class EmulatedFleet:
    """Starts and stops a host with a real bbbnode as the ASG launches and ends instances."""

    def __init__(self, layer: LifecycleLayer, config: FleetConfig, router: Router) -> None:
        self._layer = layer
        self._config = config
        self._router = router
        self._instances: dict[str, Instance] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._events: asyncio.Queue[FleetEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._remove: Callable[[], None] | None = None
        self.started: list[str] = []
        self.stopped: list[str] = []

    @property
    def instances(self) -> dict[str, Instance]:
        return dict(self._instances)

    def bbb_url(self) -> str:
        """bbbnode's (and bbbscaler's) Scalelite server URL template."""
        return self._router.url() + "/bbb/bigbluebutton/api/"

    def metrics_url(self) -> str:
        """bbbscaler's node metrics URL template."""
        return self._router.url() + "/node/metrics"

    def scaler_env(self, **settings: str) -> dict[str, str]:
        """The environment for a real ``bbbscaler`` sizing this fleet, plus ``settings``.

        The process environment without any BBBSCALER_ key of its own, so only
        what is given here configures it.
        """
        c = self._config
        env = {k: v for k, v in os.environ.items() if not k.startswith("BBBSCALER_")}
        env.update(
            {
                "AWS_ENDPOINT_URL": c.aws_endpoint,
                "BBBSCALER_AWS__ASG_NAME": c.ids.asg_name,
                "BBBSCALER_METRICS__URL_TEMPLATE": self.metrics_url(),
                "BBBSCALER_METRICS__TIMEOUT": "2",
                "BBBSCALER_SCALELITE__URL": c.scalelite_url,
                "BBBSCALER_SCALELITE__SECRET": c.scalelite_secret,
                "BBBSCALER_SCALELITE__SERVER_URL_TEMPLATE": self.bbb_url(),
                **settings,
            }
        )
        return env

    async def start(self, tick: float = 0.5) -> None:
        """Follow the layer's events; start hosts for instances already there."""
        self._remove = self._layer.add_listener(self._events.put_nowait)
        for info in self._layer.instances():
            if info.lifecycle_state in RUNNING:
                self._launch(info.instance_id)
        self._task = asyncio.create_task(self._follow())
        self._ticker = asyncio.create_task(self._tick(tick))

    async def close(self) -> None:
        if self._remove is not None:
            self._remove()
        for task in (self._task, self._ticker, *self._starting.values()):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for iid in list(self._instances):
            await self._stop(iid)

    async def _follow(self) -> None:
        while True:
            event = await self._events.get()
            if event.group != self._config.ids.asg_name:
                continue
            if event.kind == "launched":
                self._launch(event.instance_id, self._config.boot_delay)
            elif event.kind == "started":
                self._launch(event.instance_id, self._config.warm_boot_delay)
            elif event.kind in ("terminated", "detached", "stopped"):
                await self._stop(event.instance_id)

    async def _tick(self, every: float) -> None:
        while True:
            for inst in list(self._instances.values()):
                inst.host.tick()
            await asyncio.sleep(every)

    def _launch(self, instance_id: str, boot: float = 0.0) -> None:
        if instance_id in self._instances or instance_id in self._starting:
            return
        task = asyncio.create_task(self._start_instance(instance_id, boot))
        self._starting[instance_id] = task
        task.add_done_callback(lambda _: self._starting.pop(instance_id, None))

    async def _start_instance(self, instance_id: str, boot: float = 0.0) -> None:
        c = self._config
        if boot > 0:
            await asyncio.sleep(boot)
        info = next((i for i in self._layer.instances() if i.instance_id == instance_id), None)
        if info is None:
            return
        root = c.root / instance_id
        root.mkdir(parents=True, exist_ok=True)
        host = await start_host(instance_id, root, c.bbb_secret)
        if not (root / "hostroot").exists():
            # The image's files, once: a stopped instance keeps its volume.
            make_host(root / "hostroot")
        layer = self._layer
        identity = dataclasses.replace(identity_from(info), public_ipv4=info.public_ip or PUBLIC_IP)
        imds = ImdsEmulator(
            identity, target_state=lambda: layer.target_lifecycle_state(instance_id)
        )
        imds_runner, imds_port = await serve_imds(imds)
        port = free_port()
        env = fleet_node_env(
            host, c.bbb_secret, port, c.poll,
            aws_endpoint=c.aws_endpoint, imds_port=imds_port, ids=c.ids, root=root,
            scalelite_url=c.scalelite_url, scalelite_secret=c.scalelite_secret,
            server_url=self.bbb_url(),
        )  # fmt: skip
        env.update(tls_env(c, root))
        env.update(
            {
                "BBBNODE_LIFECYCLE__POLL_INTERVAL": str(c.lifecycle_poll),
                "BBBNODE_LIFECYCLE__HEARTBEAT_INTERVAL": "5",
                "BBBNODE_PROTECTION__IDLE_GRACE": str(c.idle_grace),
                "BBBNODE_PROTECTION__RECHECK_INTERVAL": "5",
                **dict(c.extra_env),
            }
        )
        self._router.add(instance_id, "bbb", host.port)
        self._router.add(instance_id, "node", port)
        node = await start_node(env, port, root / "bbbnode.log")
        self._instances[instance_id] = Instance(instance_id, host, imds_runner, node, env, root)
        self.started.append(instance_id)
        log.info("emulated_instance_started", instance_id=instance_id, node_port=port)

    async def restart_node(self, instance_id: str) -> NodeProcess:
        """Kill the instance's bbbnode (a crash) and start it again, as systemd would."""
        inst = self._instances[instance_id]
        inst.node.process.kill()
        await inst.node.process.wait()
        runs = len(list(inst.root.glob("bbbnode*.log")))
        inst.node = await start_node(inst.env, inst.node.port, inst.root / f"bbbnode-{runs}.log")
        log.info("emulated_node_restarted", instance_id=instance_id)
        return inst.node

    async def _stop(self, instance_id: str) -> None:
        starting = self._starting.pop(instance_id, None)
        if starting is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        inst = self._instances.pop(instance_id, None)
        if inst is None:
            return
        self._router.remove(instance_id)
        await inst.node.stop()
        await inst.host.stop()
        await inst.imds.cleanup()
        self.stopped.append(instance_id)
        log.info("emulated_instance_stopped", instance_id=instance_id)
