"""What the host image and the hosts' security group must hold for the host configuration to work.

Static checks of packer/ and cfn/: the image installs and enables the host
helper beside bbbnode, removes haproxy (nginx terminates TLS, coturn serves
TURN over TLS itself) and keeps netfilter-persistent; the security group opens
every port coturn listens on with bbbnode's host configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bbbctl.iam_check import load_template
from bbbnode.settings import HostconfigSettings

ROOT = Path(__file__).resolve().parent.parent


def _ingress() -> set[tuple[str, int, int]]:
    template = load_template(ROOT / "cfn" / "security.yaml")
    rules: list[dict[str, Any]] = template["Resources"]["BbbHostSecurityGroup"]["Properties"][
        "SecurityGroupIngress"
    ]
    return {
        (str(r["IpProtocol"]), int(r["FromPort"]), int(r["ToPort"]))
        for r in rules
        if r.get("CidrIp") == "0.0.0.0/0"
    }


def test_security_group_opens_coturns_ports_to_everyone() -> None:
    ports = HostconfigSettings()
    opened = _ingress()
    assert ("udp", ports.turn_port, ports.turn_port) in opened
    assert ("tcp", ports.turn_port, ports.turn_port) in opened
    assert ("tcp", ports.turns_port, ports.turns_port) in opened


def test_image_installs_and_enables_the_helper_beside_bbbnode() -> None:
    script = (ROOT / "packer" / "scripts" / "bbbnode.sh").read_text()
    template = (ROOT / "packer" / "bbb-host.pkr.hcl").read_text()
    for unit in ("bbbnode-host.service", "bbbnode-host.socket"):
        assert f'"${{path.root}}/../systemd/{unit}"' in template
        assert f"/tmp/bbbfleet/{unit} /etc/systemd/system/{unit}" in script
    enable = next(line for line in script.splitlines() if line.startswith("systemctl enable"))
    assert "bbbnode-host.socket" in enable.split()
    assert "bbbnode.service" in enable.split()


def test_image_leaves_443_to_nginx_and_keeps_the_nat_rule_across_boots() -> None:
    script = (ROOT / "packer" / "scripts" / "bbb.sh").read_text()
    assert "apt-get -y -q purge haproxy" in script
    assert "apt-get -y -q install iptables-persistent" in script
    assert "systemctl enable netfilter-persistent" in script
