"""The whole node lifecycle, end to end, with a real bbbnode and a real host helper.

As on a real host, bbbnode runs unprivileged (as ``nobody`` here) and every
host step goes through the privileged ``bbbnode host-helper`` (root) over its
socket; the helper treats an image tree (bbbsim/image_tree.py, the builder's
name and addresses in every file bbb-install wrote) as /, and writes its host
commands (systemctl, ip, iptables) to a log instead of running them: this
machine has no nginx, FreeSWITCH or coturn. AWS is moto_server behind the
lifecycle layer (Terminating:Wait, heartbeats, CompleteLifecycleAction), the
host's metadata an IMDSv2 emulator, the certificate comes from pebble over
DNS-01 (the zone's TXT records mirrored into pebble's DNS server as each
Route53 change is made), Scalelite and BBB are emulators.

boot → A record + certificate installed by the helper + host configured (no
builder address left anywhere in the tree) + registered + READY; the
instance comes back with a new public address (a stopped instance started
again) → the same request converges everything to it; a meeting →
protected; terminate while it runs → cordoned, heartbeats, nothing ended;
bbbnode killed and restarted mid-drain → it resumes, still cordoned; the
meeting ends → removed from Scalelite, record deleted, lifecycle completed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import json
import os
import pwd
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from bbbsim.host import EmulatedHost, start_host
from bbbsim.image_tree import (
    BUILDER_NAME,
    BUILDER_PRIVATE_IP,
    BUILDER_PUBLIC_IP,
    make_host,
    traces,
)
from bbbsim.imds import ImdsEmulator, identity_from
from bbbsim.imds import serve as serve_imds
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import FleetIds, FleetSpec
from bbbsim.node_process import (
    NodeProcess,
    RunAs,
    fleet_node_env,
    free_port,
    helper_env,
    start_helper,
    start_node,
)
from bbbsim.scalelite_emulator import ScaleliteEmulator
from bbbsim.scalelite_emulator import serve as serve_scalelite
from tests.aws_fixtures import FakeClock
from tests.pebble_fixtures import Challtestsrv, Pebble, ZoneMirror
from tests.processes import http_text, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the host helper runs as root, bbbnode as nobody"),
]

BBB_SECRET = "fleet-e2e-bbb-secret-0123456789"
LB_SECRET = "fleet-e2e-scalelite-secret-0123456789"
PUBLIC_IP = "203.0.113.10"
NEW_PUBLIC_IP = "198.51.100.77"
NOBODY = pwd.getpwnam("nobody")


@dataclass
class Fleet:
    ids: FleetIds
    instance_id: str
    host: EmulatedHost
    scalelite: ScaleliteEmulator
    scalelite_port: int
    env: dict[str, str]
    tmp: Path
    autoscaling: Any
    route53: Any
    notify: socket.socket
    imds: ImdsEmulator
    hostroot: Path
    helper_commands: Path
    run_as: RunAs

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.host.port}/bigbluebutton/api/"

    @property
    def fqdn(self) -> str:
        return f"{self.instance_id}.{self.ids.domain}".lower()

    async def start_node(self, name: str) -> NodeProcess:
        port = int(self.env["BBBNODE_METRICS__LISTEN"].rsplit(":", 1)[1])
        return await start_node(self.env, port, self.tmp / f"{name}.log", run_as=self.run_as)

    def helper_ran(self) -> list[list[str]]:
        lines = self.helper_commands.read_text().splitlines()
        return [json.loads(line)["argv"] for line in lines]

    async def a_record(self) -> str | None:
        answer = await self.route53.list_resource_record_sets(
            HostedZoneId=self.ids.hosted_zone_id, StartRecordName=self.fqdn, StartRecordType="A"
        )
        for record in answer["ResourceRecordSets"]:
            if record["Type"] == "A" and record["Name"].rstrip(".") == self.fqdn:
                return str(record["ResourceRecords"][0]["Value"])
        return None

    async def protected(self) -> bool:
        answer = await self.autoscaling.describe_auto_scaling_instances(
            InstanceIds=[self.instance_id]
        )
        return bool(answer["AutoScalingInstances"][0]["ProtectedFromScaleIn"])

    def scalelite_state(self) -> str | None:
        for server in self.scalelite.servers():
            if server.url.rstrip("/") == self.server_url.rstrip("/"):
                return str(server.state)
        return None


async def _ready(notify: socket.socket, node: NodeProcess) -> None:
    loop = asyncio.get_running_loop()

    async def got_ready() -> bool:
        if node.process.returncode is not None:
            raise RuntimeError(f"bbbnode exited {node.process.returncode}:\n{_tail(node)}")
        try:
            data = await asyncio.wait_for(loop.sock_recv(notify, 4096), 0.2)
        except TimeoutError:
            return False
        return b"READY=1" in data

    await wait_for(got_ready, within=90, what="READY=1 from bbbnode")


def _tail(node: NodeProcess) -> str:
    return "\n".join(node.log_path.read_text(errors="replace").splitlines()[-40:])


async def _until(check: Callable[[], Awaitable[bool] | bool], node: NodeProcess, what: str) -> None:
    async def probe() -> bool:
        if node.process.returncode is not None:
            raise RuntimeError(f"bbbnode exited {node.process.returncode}:\n{_tail(node)}")
        result = check()
        return bool(await result) if asyncio.iscoroutine(result) else bool(result)

    try:
        await wait_for(probe, within=60, what=what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- bbbnode log ---\n{_tail(node)}") from None


@pytest.fixture
async def fleet(
    make_fleet: Callable[[FleetSpec | None], Awaitable[FleetIds]],
    lifecycle_layer: LifecycleLayer,
    aws_endpoint: str,
    aws_session: Any,
    moto_endpoint: str,
    pebble: Pebble,
    challtestsrv: Challtestsrv,
    tmp_path: Path,
) -> AsyncIterator[Fleet]:
    ids = await make_fleet(FleetSpec(min_size=0, desired=1, max_size=2))
    (info,) = lifecycle_layer.instances()
    instance_id = info.instance_id
    # What the unprivileged daemon must reach lives here: pytest's own tmp_path
    # is root's alone. The daemon may pass through, not list; its state
    # directory (the certificate) is its own, as systemd's StateDirectory= is.
    shared = Path(tempfile.mkdtemp(prefix="bbbfleet-node-"))
    os.chmod(shared, 0o711)  # noqa: S103 (traverse only, nothing listed or written)
    (shared / "tls").mkdir(mode=0o700)
    os.chown(shared / "tls", NOBODY.pw_uid, NOBODY.pw_gid)
    ca_bundle = shared / "pebble-ca.pem"
    shutil.copyfile(pebble.ca_bundle, ca_bundle)
    ca_bundle.chmod(0o644)
    host = await start_host(instance_id, shared, BBB_SECRET)
    # moto's instances have no public address; a BBB host needs one for media.
    # 203.0.113.0/24 is a documentation range: nothing ever connects to it.
    identity = dataclasses.replace(identity_from(info), public_ipv4=PUBLIC_IP)
    imds = ImdsEmulator(
        identity, target_state=lambda: lifecycle_layer.target_lifecycle_state(instance_id)
    )
    imds_runner, imds_port = await serve_imds(imds)
    scalelite = ScaleliteEmulator(LB_SECRET)
    sl_runner, sl_port = await serve_scalelite(scalelite)
    make_host(tmp_path / "hostroot")
    helper = await start_helper(
        helper_env(
            tmp_path / "hostroot", shared / "helper.sock", grp.getgrgid(NOBODY.pw_gid).gr_name,
            tmp_path / "helper-commands.jsonl",
        ),
        tmp_path / "helper.log",
    )  # fmt: skip
    notify_path = shared / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify_path.chmod(0o666)
    notify.setblocking(False)

    async with aws_session.client("route53", endpoint_url=moto_endpoint) as direct, \
            aws_session.client("route53") as route53, \
            aws_session.client("autoscaling") as autoscaling:  # fmt: skip
        mirror = ZoneMirror(direct, ids.hosted_zone_id, challtestsrv)

        async def mirror_txt(service: str, action: str) -> None:
            # Before bbbnode hears its change went through, pebble's DNS has it.
            if service == "route53":
                await mirror.sync()

        remove = lifecycle_layer.add_observer(mirror_txt)
        port = free_port()
        env = fleet_node_env(
            host, BBB_SECRET, port, 0.2,
            aws_endpoint=aws_endpoint, imds_port=imds_port, ids=ids, root=tmp_path,
            scalelite_url=f"http://127.0.0.1:{sl_port}", scalelite_secret=LB_SECRET,
            server_url=f"http://127.0.0.1:{host.port}/bigbluebutton/api/",
        )  # fmt: skip
        env.update(
            {
                "NOTIFY_SOCKET": str(notify_path),
                # This host orders its own certificate (the small-fleet setting).
                "BBBNODE_TLS__MODE": "host",
                "BBBNODE_HELPER__SOCKET": str(helper.socket_path),
                "BBBNODE_TLS__ACME_DIRECTORY": pebble.directory_url,
                "BBBNODE_TLS__CA_BUNDLE": str(ca_bundle),
                "BBBNODE_TLS__CERT_DIR": str(shared / "tls"),
                "BBBNODE_LIFECYCLE__POLL_INTERVAL": "0.2",
                "BBBNODE_LIFECYCLE__HEARTBEAT_INTERVAL": "0.5",
                "BBBNODE_PROTECTION__IDLE_GRACE": "1",
                "BBBNODE_PROTECTION__RECHECK_INTERVAL": "2",
            }
        )
        try:
            yield Fleet(ids, instance_id, host, scalelite, sl_port, env, tmp_path,
                        autoscaling, route53, notify, imds, tmp_path / "hostroot",
                        tmp_path / "helper-commands.jsonl", RunAs.user("nobody"))  # fmt: skip
        finally:
            remove()
            notify.close()
            assert await helper.stop() == 0, (tmp_path / "helper.log").read_text()
            await scalelite.close()
            await sl_runner.cleanup()
            await imds_runner.cleanup()
            await host.stop()
            shutil.rmtree(shared, ignore_errors=True)


def _hairpin_rules(root: Path) -> list[str]:
    return [
        line
        for line in (root / "etc/iptables/rules.v4").read_text().splitlines()
        if line.startswith("-A OUTPUT") and "-j DNAT" in line
    ]


def _check_host_configured(fleet: Fleet, public_ip: str, *gone: str) -> None:
    """The tree follows ``public_ip`` and the instance's private address; ``gone`` is nowhere."""
    private_ip = fleet.imds.identity.local_ipv4
    assert traces(fleet.hostroot, *gone) == []
    dummy_nic = (fleet.hostroot / "lib/systemd/system/dummy-nic.service").read_text()
    assert f"ExecStart=/sbin/ip addr replace {public_ip}/32 dev lo\n" in dummy_nic
    rule = f"-s {private_ip}/32 -d {public_ip}/32 -p udp -j DNAT --to-destination {private_ip}"
    assert _hairpin_rules(fleet.hostroot) == [f"-A OUTPUT {rule}"]
    sfu = (fleet.hostroot / "etc/bigbluebutton/bbb-webrtc-sfu/production.yml").read_text()
    assert sfu.count(public_ip) == 4
    ran = fleet.helper_ran()
    assert ["ip", "addr", "add", f"{public_ip}/32", "dev", "lo"] in ran
    assert [
        "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-s", f"{private_ip}/32",
        "-d", f"{public_ip}/32", "-p", "udp", "-j", "DNAT", "--to-destination", private_ip,
    ] in ran  # fmt: skip


async def test_boot_protect_drain_restart_complete(
    fleet: Fleet, lifecycle_layer: LifecycleLayer, fake_clock: FakeClock
) -> None:
    node = await fleet.start_node("node-1")
    try:
        # --- boot ---------------------------------------------------------------
        await _ready(fleet.notify, node)
        assert await fleet.a_record() == PUBLIC_IP
        # bbbnode runs unprivileged: as nobody, with no capability.
        proc = await asyncio.to_thread(Path(f"/proc/{node.process.pid}/status").read_text)
        assert re.search(rf"^Uid:\s+{NOBODY.pw_uid}\s", proc, re.M), proc
        assert re.search(r"^CapEff:\s+0+$", proc, re.M), proc
        own = Path(fleet.env["BBBNODE_TLS__CERT_DIR"])
        chain = x509.load_pem_x509_certificates((own / "fullchain.pem").read_bytes())
        names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [fleet.fqdn]
        # The helper installed it for nginx and coturn: coturn's copy is not world-readable.
        served = fleet.hostroot / "etc/bbbfleet/tls"
        assert (served / "fullchain.pem").read_bytes() == (own / "fullchain.pem").read_bytes()
        assert (served / "privkey.pem").read_bytes() == (own / "privkey.pem").read_bytes()
        assert (served / "privkey.pem").stat().st_mode & 0o777 == 0o600
        assert (served / "turnserver-privkey.pem").stat().st_mode & 0o777 == 0o640
        site = (fleet.hostroot / "etc/nginx/sites-available/bigbluebutton").read_text()
        assert f"server_name {fleet.fqdn};" in site
        assert "ssl_certificate /etc/bbbfleet/tls/fullchain.pem;" in site
        coturn = (fleet.hostroot / "etc/turnserver.conf").read_text()
        assert "pkey=/etc/bbbfleet/tls/turnserver-privkey.pem\n" in coturn
        _check_host_configured(
            fleet, PUBLIC_IP, BUILDER_NAME, BUILDER_PUBLIC_IP, BUILDER_PRIVATE_IP
        )
        ran = fleet.helper_ran()
        assert ["systemctl", "restart", "freeswitch"] in ran
        assert ["systemctl", "restart", "bbb-webrtc-sfu"] in ran
        assert ["systemctl", "reload", "nginx"] in ran
        assert fleet.scalelite_state() == "enabled"
        # Scalelite signs its calls to the host with the secret the host registered:
        # it must be BBB's own, or the poller never sees the server online.
        await fleet.scalelite.poll()
        assert [s.online for s in fleet.scalelite.servers()] == [True]
        status, text = await http_text(node.metrics_url.replace("/metrics", "/status"))
        assert status == 200
        doc = json.loads(text)
        assert doc["fqdn"] == fleet.fqdn
        assert doc["drain_phase"] == "serving"
        assert LB_SECRET not in text
        assert BBB_SECRET not in text

        # --- the instance comes back with a new public address ----------------------
        # A stopped instance (a warm pool's) starts again: bbbnode boots anew and
        # one host_config request with the new address converges everything.
        assert await node.stop() == 0
        fleet.imds.identity = dataclasses.replace(fleet.imds.identity, public_ipv4=NEW_PUBLIC_IP)
        node = await fleet.start_node("node-1-new-address")
        await _ready(fleet.notify, node)
        assert await fleet.a_record() == NEW_PUBLIC_IP
        _check_host_configured(
            fleet, NEW_PUBLIC_IP, PUBLIC_IP, BUILDER_NAME, BUILDER_PUBLIC_IP, BUILDER_PRIVATE_IP
        )
        assert fleet.scalelite_state() == "enabled"

        # --- a meeting → protected ----------------------------------------------
        fleet.host.bbb.add_meeting("lecture", 25, voice=5, listeners=20)
        await _until(fleet.protected, node, "scale-in protection on while a meeting runs")

        # --- the ASG terminates the instance while the meeting runs ---------------
        await fleet.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=fleet.instance_id, ShouldDecrementDesiredCapacity=True
        )
        await _until(lambda: fleet.scalelite_state() == "cordoned", node, "cordoned in Scalelite")
        first_deadline = _deadline(lifecycle_layer, fleet.instance_id)
        assert first_deadline is not None
        # The hook's deadline runs on the layer's clock: move it, and only a
        # heartbeat sent after that can push the deadline further out.
        fake_clock.advance(30)
        await _until(
            lambda: (_deadline(lifecycle_layer, fleet.instance_id) or 0) > first_deadline,
            node, "a lifecycle heartbeat",
        )  # fmt: skip
        assert fleet.host.bbb.meeting("lecture") is not None, "the meeting was ended"
        assert _in_wait(lifecycle_layer, fleet.instance_id)

        # --- bbbnode dies mid-drain and comes back: it resumes, still cordoned ------
        node.process.kill()
        await node.process.wait()
        node = await fleet.start_node("node-2")
        await _ready(fleet.notify, node)

        async def resumed_cordoned() -> bool:
            _, body = await http_text(node.metrics_url.replace("/metrics", "/status"))
            return bool(json.loads(body).get("drain_phase") == "cordoned")

        await _until(resumed_cordoned, node, "the restarted node to resume in phase cordoned")
        assert fleet.scalelite_state() == "cordoned", "a restart must not re-enable"
        assert _in_wait(lifecycle_layer, fleet.instance_id)
        assert fleet.host.bbb.meeting("lecture") is not None

        # --- the meeting ends → deregistered, record deleted, lifecycle completed -----
        fleet.host.bbb.end_meeting("lecture", keep=False)
        await _until(lambda: fleet.scalelite_state() is None, node, "removed from Scalelite")
        await _until(lambda: _gone(lifecycle_layer, fleet.instance_id), node, "lifecycle done")
        assert await fleet.a_record() is None
    finally:
        code = await node.stop()
    assert code == 0
    log = node.log_path.read_text()
    assert "panic" not in log.lower()
    assert LB_SECRET not in log
    assert BBB_SECRET not in log


def _deadline(layer: LifecycleLayer, instance_id: str) -> float | None:
    for action in layer.lifecycle_actions():
        if action.instance_id == instance_id:
            return float(action.deadline)
    return None


def _in_wait(layer: LifecycleLayer, instance_id: str) -> bool:
    return any(
        i.instance_id == instance_id and i.lifecycle_state == "Terminating:Wait"
        for i in layer.instances()
    )


def _gone(layer: LifecycleLayer, instance_id: str) -> bool:
    return all(i.instance_id != instance_id for i in layer.instances())
