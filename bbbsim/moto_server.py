"""moto_server on loopback for tests and the simulator, and the fleet fixture inside it.

The server runs in a thread of this process (``moto.server.ThreadedMotoServer``) on
127.0.0.1 and a port the kernel picks, so parallel runs never collide. Every client
made here carries explicit fake credentials: with none, botocore would walk its
credential chain and could try the real instance metadata address.
"""

from __future__ import annotations

import http.client
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.session import AioSession, get_session
from moto.server import ThreadedMotoServer

from bbbcore import logs

if TYPE_CHECKING:
    from types_aiobotocore_ec2.literals import InstanceTypeType

log = logs.get(__name__)

DEFAULT_REGION = "eu-central-1"
# moto maps any access key it does not know to its default account; the values only
# have to look like credentials to botocore.
TEST_ACCESS_KEY_ID = "testing"
TEST_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - a fake for moto, never a real secret
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


class MotoServer:
    """A moto_server bound to 127.0.0.1 on a free port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._server: ThreadedMotoServer | None = None
        self._port = 0

    def start(self) -> str:
        """Start the server thread and return its endpoint URL."""
        if self._server is not None:
            return self.endpoint
        # werkzeug logs every request line; keep its errors, drop the access log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self._host, port=0, verbose=False)
        server.start()
        _, self._port = server.get_host_and_port()
        self._server = server
        log.info("moto_started", endpoint=self.endpoint)
        return self.endpoint

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("moto server not started")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://{self._host}:{self.port}"

    def stop(self) -> None:
        """Stop the server thread; idempotent."""
        if self._server is None:
            return
        self._server.stop()
        self._server = None
        log.info("moto_stopped")

    def reset(self) -> None:
        """Drop every resource in every backend (``POST /moto-api/reset``), blocking."""
        conn = http.client.HTTPConnection(self._host, self.port, timeout=30)
        try:
            conn.request("POST", "/moto-api/reset")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"moto reset answered HTTP {response.status}")
        finally:
            conn.close()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


async def reset_moto(endpoint: str) -> None:
    """Async form of :meth:`MotoServer.reset` for code already inside an event loop."""
    async with (
        aiohttp.ClientSession() as http_session,
        http_session.post(f"{endpoint.rstrip('/')}/moto-api/reset") as response,
    ):
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"moto reset answered HTTP {response.status}")


@dataclass(frozen=True, slots=True)
class HookSpec:
    """A termination lifecycle hook to put on the fleet's Auto Scaling group."""

    name: str = "bbbnode-drain"
    heartbeat_timeout: int = 300
    default_result: str = "CONTINUE"


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What :func:`create_fleet` builds; defaults fit a small BBB fleet."""

    name: str = "bbb-fleet"
    min_size: int = 1
    max_size: int = 4
    desired: int = 2
    domain: str = "bbb.example.test"
    availability_zones: tuple[str, ...] = ("eu-central-1a", "eu-central-1b")
    image_id: str = "ami-0bbb0000000000001"
    instance_type: InstanceTypeType = "c5.2xlarge"
    termination_hook: HookSpec | None = field(default_factory=HookSpec)
    new_instances_protected: bool = False
    vpc_cidr: str = "10.20.0.0/16"
    suspended_processes: tuple[str, ...] = ("AZRebalance",)
    """As the product requires: AZRebalance would terminate hosts with meetings."""
    launch_first: bool = False
    """An instance maintenance policy of 100-200 %, as cfn/fleet.yaml sets: AWS's own
    replacements (a failed health check) launch before the old instance goes."""
    warm_pool: int = 0
    """Stopped instances kept in a warm pool, as cfn/fleet.yaml's ``WarmPoolSize`` makes it
    (PoolState Stopped, MinSize = MaxGroupPreparedCapacity, ReuseOnScaleIn false); with
    one, ``launch_hook`` is put on the group first, as the stack declares it."""
    launch_hook: HookSpec = field(
        default_factory=lambda: HookSpec("bbbnode-launch", heartbeat_timeout=900,
                                         default_result="ABANDON")
    )  # fmt: skip
    """The launch hook a warm pool needs (only put on the group with ``warm_pool``)."""


@dataclass(frozen=True, slots=True)
class FleetIds:
    """Identifiers of the fleet fixture created in moto."""

    region: str
    vpc_id: str
    subnet_ids: tuple[str, ...]
    launch_template_id: str
    launch_template_name: str
    asg_name: str
    hook_name: str | None
    hosted_zone_id: str
    domain: str
    launch_hook_name: str | None = None
    """The warm pool's launch hook (BBBNODE_LIFECYCLE__LAUNCH_HOOK_NAME); None without one."""


def aws_session() -> AioSession:
    """A botocore session that never reads the developer's AWS config or credentials."""
    session = get_session()
    session.set_credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY)
    return session


async def create_fleet(
    endpoint_url: str,
    spec: FleetSpec | None = None,
    *,
    region: str = DEFAULT_REGION,
) -> FleetIds:
    """Create VPC, subnets, launch template, ASG (+ hook) and hosted zone; return the ids.

    ``endpoint_url`` may be moto itself or the lifecycle layer in front of it.
    """
    spec = spec if spec is not None else FleetSpec()
    session = aws_session()
    async with (
        session.create_client("ec2", region_name=region, endpoint_url=endpoint_url) as ec2,
        session.create_client(
            "autoscaling", region_name=region, endpoint_url=endpoint_url
        ) as autoscaling,
        session.create_client("route53", region_name=region, endpoint_url=endpoint_url) as route53,
    ):
        vpc = await ec2.create_vpc(CidrBlock=spec.vpc_cidr)
        vpc_id = vpc["Vpc"]["VpcId"]
        prefix = spec.vpc_cidr.split(".")[:2]
        subnet_ids: list[str] = []
        for index, zone in enumerate(spec.availability_zones):
            subnet = await ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=f"{prefix[0]}.{prefix[1]}.{index}.0/24",
                AvailabilityZone=zone,
            )
            subnet_ids.append(subnet["Subnet"]["SubnetId"])

        template_name = f"{spec.name}-host"
        template = await ec2.create_launch_template(
            LaunchTemplateName=template_name,
            LaunchTemplateData={
                "ImageId": spec.image_id,
                "InstanceType": spec.instance_type,
                # What the product requires on real hosts: IMDSv2 only, tags in IMDS.
                "MetadataOptions": {
                    "HttpTokens": "required",
                    "HttpEndpoint": "enabled",
                    "InstanceMetadataTags": "enabled",
                },
            },
        )
        template_id = template["LaunchTemplate"]["LaunchTemplateId"]

        maintenance: dict[str, Any] = {}
        if spec.launch_first:
            maintenance["InstanceMaintenancePolicy"] = {
                "MinHealthyPercentage": 100,
                "MaxHealthyPercentage": 200,
            }
        await autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=spec.name,
            MinSize=spec.min_size,
            MaxSize=spec.max_size,
            DesiredCapacity=spec.desired,
            LaunchTemplate={"LaunchTemplateId": template_id, "Version": "$Latest"},
            VPCZoneIdentifier=",".join(subnet_ids),
            NewInstancesProtectedFromScaleIn=spec.new_instances_protected,
            **maintenance,
            Tags=[
                {
                    "Key": "bbbfleet",
                    "Value": spec.name,
                    "PropagateAtLaunch": True,
                    "ResourceId": spec.name,
                    "ResourceType": "auto-scaling-group",
                }
            ],
        )
        if spec.suspended_processes:
            await autoscaling.suspend_processes(
                AutoScalingGroupName=spec.name, ScalingProcesses=list(spec.suspended_processes)
            )
        hook_name: str | None = None
        if spec.termination_hook is not None:
            hook = spec.termination_hook
            await autoscaling.put_lifecycle_hook(
                AutoScalingGroupName=spec.name,
                LifecycleHookName=hook.name,
                LifecycleTransition=TERMINATING,
                HeartbeatTimeout=hook.heartbeat_timeout,
                DefaultResult=hook.default_result,
            )
            hook_name = hook.name
        launch_hook_name: str | None = None
        if spec.warm_pool > 0:
            launch = spec.launch_hook
            await autoscaling.put_lifecycle_hook(
                AutoScalingGroupName=spec.name,
                LifecycleHookName=launch.name,
                LifecycleTransition=LAUNCHING,
                HeartbeatTimeout=launch.heartbeat_timeout,
                DefaultResult=launch.default_result,
            )
            launch_hook_name = launch.name
            await autoscaling.put_warm_pool(
                AutoScalingGroupName=spec.name,
                MinSize=spec.warm_pool,
                MaxGroupPreparedCapacity=spec.warm_pool,
                PoolState="Stopped",
                InstanceReusePolicy={"ReuseOnScaleIn": False},
            )

        hosted_zone = await route53.create_hosted_zone(
            Name=spec.domain, CallerReference=str(uuid.uuid4())
        )
        hosted_zone_id = hosted_zone["HostedZone"]["Id"].removeprefix("/hostedzone/")

    ids = FleetIds(
        region=region,
        vpc_id=vpc_id,
        subnet_ids=tuple(subnet_ids),
        launch_template_id=template_id,
        launch_template_name=template_name,
        asg_name=spec.name,
        hook_name=hook_name,
        hosted_zone_id=hosted_zone_id,
        domain=spec.domain,
        launch_hook_name=launch_hook_name,
    )
    log.info("fleet_created", asg=ids.asg_name, desired=spec.desired, zone=hosted_zone_id)
    return ids
