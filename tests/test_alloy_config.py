"""The BBB hosts' Grafana Alloy configuration (helm/monitoring/alloy/bbb-host.alloy).

Alloy's own checker (`alloy fmt`, `alloy validate`) is a binary from Grafana's release
page, which nothing here can download; so this reads the file the way Alloy's syntax
defines it (blocks `name "label" { ... }`, attributes, `//` comments, strings) and
checks what would break on a host: unbalanced blocks, a component that forwards to
one never declared, the push address, the tenant, and every log source Promtail had.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import yaml

from bbbctl.iam_check import load_template
from bbbdeploy.paths import CFN_DIR, MONITORING_DIR, ROOT

ALLOY = MONITORING_DIR / "alloy" / "bbb-host.alloy"
_COMPONENT = re.compile(r'^([a-z_]+(?:\.[a-z_]+)+)\s+"([A-Za-z0-9_]+)"\s*\{', re.M)
# An export of another component: <component name>.<label>.<export>.
_REFERENCE = re.compile(
    r"\b((?:loki|local)(?:\.[a-z_]+)+)\.([A-Za-z0-9_]+)\.(receiver|rules|targets)\b"
)


@dataclass(frozen=True)
class Config:
    text: str  # comments removed, strings kept

    @property
    def components(self) -> set[tuple[str, str]]:
        return set(_COMPONENT.findall(self.text))

    def block(self, name: str, label: str) -> str:
        """The body of one component block."""
        start = self.text.index(f'{name} "{label}"')
        opened = self.text.index("{", start)
        depth = 0
        for i in range(opened, len(self.text)):
            if self.text[i] == "{":
                depth += 1
            elif self.text[i] == "}":
                depth -= 1
                if depth == 0:
                    return self.text[opened + 1 : i]
        raise AssertionError(f"{name} {label}: block not closed")


def _strip_comments(text: str) -> str:
    out, i, in_string = [], 0, False
    while i < len(text):
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    assert not in_string, "a string is not closed"
    return "".join(out)


@pytest.fixture(scope="module")
def config() -> Config:
    return Config(_strip_comments(ALLOY.read_text()))


def _unquoted(text: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)


def test_brackets_balance(config: Config) -> None:
    code = _unquoted(config.text)
    stack: list[str] = []
    pairs = {"}": "{", "]": "[", ")": "("}
    for c in code:
        if c in "{[(":
            stack.append(c)
        elif c in pairs:
            assert stack, "a closing bracket without an opening one"
            assert stack.pop() == pairs[c], "unbalanced brackets"
    assert not stack


def test_every_reference_names_a_declared_component(config: Config) -> None:
    declared = config.components
    references = {(name, label) for name, label, _ in _REFERENCE.findall(config.text)}
    assert references, "no component forwards anything"
    assert references <= declared, references - declared
    # Every source ends in the one writer.
    assert ("loki.write", "fleet") in declared
    for name, label in declared:
        if name.startswith("loki.source."):
            assert "forward_to" in config.block(name, label), (name, label)


def test_pushes_to_the_vpc_loki_as_the_fleet_tenant(config: Config) -> None:
    writer = config.block("loki.write", "fleet")
    assert 'url = sys.env("LOKI_URL") + "/loki/api/v1/push"' in writer
    # A multi-tenant Loki refuses a push without X-Scope-OrgID.
    assert 'tenant_id = sys.env("LOKI_TENANT")' in writer
    assert 'instance_id = sys.env("INSTANCE_ID")' in writer


def test_the_launch_template_provides_every_variable_the_config_reads(config: Config) -> None:
    wanted = set(re.findall(r'sys\.env\("([A-Z_]+)"\)', config.text))
    user_data = load_template(CFN_DIR / "fleet.yaml")["Resources"]["LaunchTemplate"]
    text = str(user_data)
    block = text[text.index("/etc/default/alloy") :]
    provided = set(re.findall(r"\b([A-Z_]+)=", block[: block.index("path:")]))
    assert wanted <= provided, wanted - provided


def test_journal_and_the_bbb_logs_are_shipped(config: Config) -> None:
    assert ("loki.source.journal", "journal") in config.components
    files = config.block("local.file_match", "bbb")
    paths = re.findall(r'__path__ = "([^"]+)"', files)
    assert len(paths) == len(set(paths)), "a log file shipped twice"
    for source in (
        "/var/log/bigbluebutton/bbb-web.log",
        "/opt/freeswitch/var/log/freeswitch/freeswitch.log",
        "/var/log/nginx/*.log",
    ):
        assert source in paths, source
    assert any("bbb-rap-worker" in p for p in paths), "recording processing logs"
    # bbbnode's JSON lines get their level lifted into a label.
    process = config.block("loki.process", "journal")
    assert 'selector = "{unit=\\"bbbnode.service\\"}"' in process


def test_the_tenant_is_the_same_everywhere() -> None:
    root = load_template(CFN_DIR / "root.yaml")["Parameters"]["LokiTenant"]["Default"]
    fleet = load_template(CFN_DIR / "fleet.yaml")["Parameters"]["LokiTenant"]["Default"]
    grafana = yaml.safe_load((ROOT / "helm/platform/kube-prometheus-stack.yaml").read_text())
    (loki,) = [d for d in grafana["grafana"]["additionalDataSources"] if d["type"] == "loki"]
    assert root == fleet == loki["secureJsonData"]["httpHeaderValue1"]
    assert loki["jsonData"]["httpHeaderName1"] == "X-Scope-OrgID"


def test_the_image_installs_this_file_and_unit() -> None:
    template = (ROOT / "packer/bbb-host.pkr.hcl").read_text()
    assert "helm/monitoring/alloy/bbb-host.alloy" in template
    agents = (ROOT / "packer/scripts/agents.sh").read_text()
    assert "/etc/alloy/config.alloy" in agents
    # Pinned twice, like every download of the image build.
    assert (
        'fetch-pinned \\\n    "https://github.com/grafana/alloy/releases/download/v${ALLOY_VERSION}'
        in agents
    )
    assert '"$ALLOY_SHA256"' in agents
    unit = (ROOT / "packer/files/alloy.service").read_text()
    assert "/etc/alloy/config.alloy" in unit
    assert "--disable-reporting" in unit
    assert "listen-addr=127.0.0.1:" in unit
