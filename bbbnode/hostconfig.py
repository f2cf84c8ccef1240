"""Host configuration for this instance once its DNS name and certificate exist.

An image is a copy of the instance that built it: every file bbb-install
(bigbluebutton/bbb-install, branch v3.0.x-release, ``bbb-install.sh``) wrote
with an address or a name holds the builder's, and each must follow the
instance's own. The list, each rule citing its bbb-install lines beside it:

- ``bbb-conf --setip`` (bbb-install.sh lines 385-389): bbb-web's serverURL,
  bbb-apps-akka's bbbWebAPI, the recording scripts' playback host (and
  playback_protocol https, line 1650), the HTML5 client's URLs, nginx's
  server_name and server-name hash bucket;
- ``check_nat()`` (lines 672-709): FreeSWITCH's external SIP/RTP address
  (vars.xml, external.xml), sip.nginx, the public address on lo and its
  ``dummy-nic.service`` (the kernel side is bbbnode.netstate);
- ``install_ssl()`` (lines 1421-1697): FreeSWITCH's ws/wss bindings,
  sip.nginx's proxy_pass, sipjsHackViaWs, bbb-webrtc-sfu's production.yml
  (FreeSWITCH and mediasoup addresses), nginx's TLS server and certificate;
- ``install_coturn()`` and ``configure_coturn()`` (lines 1699-1841):
  turnserver.conf and BBB's TURN list;
- ``main()`` (lines 366-373): coturn's DNAT rule, persisted in rules.v4.

``install_haproxy()`` (lines 729-830) also names the private address; the image
removes haproxy, because nginx terminates TLS here (packer/scripts/bbb.sh).

Pure core: each target file's wanted content from its current content. In
files that others edit too, only the keys bbbfleet owns change and every other
line stays as it is; files bbbfleet owns entirely are rendered from a template.
The plan lists only files whose content differs. Imperative shell: ``apply_host_config``
writes those files atomically and restarts each affected service once.

BBB 3.0 facts used here: /etc/bigbluebutton/bbb-html5.yml is the override of
the client settings and is read by bbb-apps-akka (it serves them to the
client), so a change there restarts bbb-apps-akka; bbb-web reads
/etc/bigbluebutton/bbb-web.properties and turn-stun-servers.xml.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from xml.sax.saxutils import quoteattr

from bbbcore import logs
from bbbnode import netstate
from bbbnode.files import write_atomic
from bbbnode.netstate import NatRule
from bbbnode.runner import CommandFailed, Runner, check

log = logs.get(__name__)

TURN_CREDENTIAL_TTL = 86400
"""Seconds a TURN credential bbb-web hands out stays valid (BBB's own default)."""

_FQDN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)
_SECRET = re.compile(r"^[A-Za-z0-9+/=._~-]{8,256}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]+$")


class HostConfigError(ValueError):
    """Facts or a target file that bbbfleet cannot turn into a correct configuration."""


class HostConfigFailed(RuntimeError):
    """Applying the configuration failed; the files of that service were rolled back."""


@dataclass(frozen=True, slots=True)
class HostFacts:
    """Everything about this instance the configuration depends on."""

    fqdn: str
    public_ip: str
    local_ip: str
    cert_file: Path
    """Full chain, as installed for nginx and coturn (bbbnode/certificate.py)."""
    key_file: Path
    """Private key nginx reads (root only)."""
    turn_secret: str = field(repr=False)
    """coturn's static-auth-secret, shared with bbb-web's TURN list."""
    turn_port: int = 3478
    turns_port: int = 5349
    turn_key_file: Path | None = None
    """The copy of the key coturn (user turnserver) can read; None: key_file."""

    def __post_init__(self) -> None:
        if not _FQDN.match(self.fqdn):
            raise HostConfigError(f"fqdn {self.fqdn!r} is not a lower-case DNS name")
        for name in ("public_ip", "local_ip"):
            value = getattr(self, name)
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise HostConfigError(f"{name} {value!r} is not an IPv4 address") from None
        for name in ("cert_file", "key_file", "turn_key_file"):
            if getattr(self, name) is None:
                continue
            if not _SAFE_PATH.match(str(getattr(self, name))):
                raise HostConfigError(f"{name} must be an absolute path without spaces or quotes")
        if not _SECRET.match(self.turn_secret):
            # Never echo the value: it is a credential.
            raise HostConfigError("turn_secret must be 8-256 characters of [A-Za-z0-9+/=._~-]")
        for name in ("turn_port", "turns_port"):
            if not 0 < getattr(self, name) < 65536:
                raise HostConfigError(f"{name} must be a port number")

    @property
    def server_url(self) -> str:
        return f"https://{self.fqdn}"

    @property
    def coturn_key_file(self) -> Path:
        return self.turn_key_file or self.key_file

    @property
    def nat_rule(self) -> NatRule:
        return NatRule(self.local_ip, self.public_ip)


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Every file this step touches; None leaves that file alone."""

    bbb_web_properties: Path | None = Path("/etc/bigbluebutton/bbb-web.properties")
    html5_settings: Path | None = Path("/etc/bigbluebutton/bbb-html5.yml")
    akka_apps_conf: Path | None = Path("/etc/bigbluebutton/bbb-apps-akka.conf")
    recording_config: Path | None = Path("/usr/local/bigbluebutton/core/scripts/bigbluebutton.yml")
    turn_stun_servers: Path | None = Path("/etc/bigbluebutton/turn-stun-servers.xml")
    nginx_site: Path | None = Path("/etc/nginx/sites-available/bigbluebutton")
    nginx_conf: Path | None = Path("/etc/nginx/nginx.conf")
    freeswitch_vars: Path | None = Path("/opt/freeswitch/etc/freeswitch/vars.xml")
    freeswitch_external: Path | None = Path(
        "/opt/freeswitch/etc/freeswitch/sip_profiles/external.xml"
    )
    coturn_conf: Path | None = Path("/etc/turnserver.conf")
    webrtc_sfu: Path | None = Path("/etc/bigbluebutton/bbb-webrtc-sfu/production.yml")
    sip_nginx: Path | None = Path("/usr/share/bigbluebutton/nginx/sip.nginx")
    dummy_nic: Path | None = Path("/lib/systemd/system/dummy-nic.service")
    """Where bbb-install's check_nat() writes it (bbb-install.sh line 689)."""
    iptables_rules: Path | None = Path("/etc/iptables/rules.v4")
    """What netfilter-persistent restores at boot (bbb-install.sh lines 371-373)."""

    def targets(self) -> tuple[Path, ...]:
        """The managed paths."""
        return tuple(p for f in fields(self) if (p := getattr(self, f.name)) is not None)

    @classmethod
    def under(cls, root: Path) -> HostPaths:
        """The default layout re-rooted at ``root`` (tests, images being built)."""
        defaults = cls()
        return cls(
            **{
                f.name: root / str(getattr(defaults, f.name)).lstrip("/")
                for f in fields(cls)
                if getattr(defaults, f.name) is not None
            }
        )


@dataclass(frozen=True, slots=True)
class Services:
    """systemd units behind the files, and how each takes a change."""

    bbb_web: str = "bbb-web"
    akka_apps: str = "bbb-apps-akka"
    html5_settings: str = "bbb-apps-akka"
    """Reader of bbb-html5.yml (bbb-apps-akka in BBB 3.0; bbb-html5 before)."""
    nginx: str = "nginx"
    freeswitch: str = "freeswitch"
    coturn: str = "coturn"
    webrtc_sfu: str = "bbb-webrtc-sfu"
    dummy_nic: str = "dummy-nic"
    units: tuple[str, ...] = ("dummy-nic",)
    """Units whose own unit file is written: daemon-reload and enable, no restart (the
    address it sets is put on lo at once by bbbnode.netstate)."""
    reload: tuple[str, ...] = ("nginx",)
    """Units that take a reload rather than a restart."""
    checks: tuple[tuple[str, tuple[str, ...]], ...] = (("nginx", ("nginx", "-t", "-q")),)
    """Commands that must pass before a unit is reloaded or restarted."""


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file whose content must change, and the unit that must then restart."""

    path: Path
    new_content: str = field(repr=False)
    restart: str | None
    old_content: str | None = field(default=None, repr=False)
    """None: the file does not exist yet."""
    mode_if_new: int = 0o644
    group_if_new: str | None = None


@dataclass(frozen=True, slots=True)
class HostConfigResult:
    """What one apply_host_config run did."""

    changed: tuple[Path, ...]
    restarted: tuple[str, ...]


# --- line editors ---------------------------------------------------------

Entry = tuple[str, str | None]
Wanted = Sequence[tuple[str, tuple[str | None, ...]]]


def _set_entries(
    text: str,
    wanted: Wanted,
    parse: Callable[[str], Entry | None],
    render: Callable[[str, str | None], str],
) -> str:
    """Set each wanted key to its values: first occurrence replaced, others dropped.

    Keys already holding exactly the wanted values keep their lines as written.
    """
    keys = {key for key, _ in wanted}
    lines = text.splitlines()
    found: dict[str, list[str | None]] = {}
    for line in lines:
        entry = parse(line)
        if entry is not None and entry[0] in keys:
            found.setdefault(entry[0], []).append(entry[1])
    todo = {key: values for key, values in wanted if tuple(found.get(key, ())) != values}
    if not todo:
        return text
    out: list[str] = []
    emitted: set[str] = set()
    for line in lines:
        entry = parse(line)
        if entry is not None and entry[0] in todo:
            if entry[0] not in emitted:
                out.extend(render(entry[0], value) for value in todo[entry[0]])
                emitted.add(entry[0])
            continue
        out.append(line)
    for key, values in wanted:
        if key in todo and key not in emitted:
            out.extend(render(key, value) for value in values)
    return "\n".join(out) + "\n"


_PROPERTY = re.compile(r"^\s*([^\s#!=:][^\s=:]*)\s*[=:]\s*(.*?)\s*$")
_CONF_ENTRY = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_-]*)\s*(?:=\s*(.*?))?\s*$")


def _parse_property(line: str) -> Entry | None:
    match = _PROPERTY.match(line)
    return (match.group(1), match.group(2)) if match else None


def _parse_conf(line: str) -> Entry | None:
    match = _CONF_ENTRY.match(line)
    return (match.group(1), match.group(2)) if match else None


def _render_assignment(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


# A small editor for the block-style YAML admins write in bbb-html5.yml and
# bigbluebutton.yml: it sets one scalar at a mapping path and leaves every
# other line, comment and list alone (no YAML library in the pinned set).

_YAML_KEY = re.compile(
    r"""^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*|"[^"]*"|'[^']*')[ \t]*:(?:[ \t]+(?P<rest>.*))?$"""
)
_YAML_PLAIN = re.compile(r"^[A-Za-z0-9_./@+-][A-Za-z0-9_./@+:-]*$")


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#") and stripped not in ("---", "...")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _yaml_unquote_key(key: str) -> str:
    return key[1:-1] if key[:1] in ("'", '"') else key


def _yaml_value(rest: str) -> str:
    """The scalar a value text denotes (comments dropped, quotes resolved)."""
    rest = rest.strip()
    if rest.startswith('"'):
        match = re.match(r'^"((?:[^"\\]|\\.)*)"', rest)
        if match:
            try:
                decoded: str = json.loads(f'"{match.group(1)}"')
                return decoded
            except ValueError:
                return match.group(1)
    if rest.startswith("'"):
        match = re.match(r"^'((?:[^']|'')*)'", rest)
        if match:
            return match.group(1).replace("''", "'")
    return re.split(r"\s#", rest, maxsplit=1)[0].strip()


def _yaml_scalar(value: str) -> str:
    if _YAML_PLAIN.match(value) and not value.endswith(":"):
        return value
    return json.dumps(value)


def _block_end(lines: Sequence[str], start: int, end: int, indent: int) -> int:
    for i in range(start, end):
        line = lines[i]
        if not _is_content(line):
            continue
        this = _indent(line)
        if this < indent or (this == indent and not line.lstrip().startswith("-")):
            return i
    return end


def _last_content(lines: Sequence[str], start: int, end: int) -> int | None:
    for i in range(end - 1, start - 1, -1):
        if _is_content(lines[i]):
            return i
    return None


PathItem = str | int
"""A mapping key, or the index of an item in a block sequence."""


def _yaml_set(
    lines: list[str], start: int, end: int, parent: int, path: Sequence[PathItem], value: str
) -> list[str]:
    if isinstance(path[0], int):
        return _yaml_set_item(lines, start, end, parent, path, value)
    child: int | None = None
    first = next((i for i in range(start, end) if _is_content(lines[i])), None)
    if first is not None:
        if _indent(lines[first]) <= parent or lines[first].lstrip().startswith("-"):
            raise HostConfigError(f"YAML: {path[0]!r} would go into a list")
        child = _indent(lines[first])
    if child is not None:
        for i in range(start, end):
            line = lines[i]
            if not _is_content(line) or _indent(line) != child:
                continue
            match = _YAML_KEY.match(line)
            if not match or _yaml_unquote_key(match.group("key")) != path[0]:
                continue
            stop = _block_end(lines, i + 1, end, child)
            rest = match.group("rest") or ""
            inline = rest.strip() and not rest.strip().startswith("#")
            if len(path) > 1:
                if inline:
                    raise HostConfigError(f"YAML: {path[0]!r} has an inline value, not a mapping")
                return _yaml_set(lines, i + 1, stop, child, path[1:], value)
            nested = _last_content(lines, i + 1, stop)
            if inline and nested is None and _yaml_value(rest) == value:
                return lines
            new_line = f"{' ' * child}{match.group('key')}: {_yaml_scalar(value)}"
            after = (nested + 1) if nested is not None else i + 1
            return [*lines[:i], new_line, *lines[after:]]
    indent = child if child is not None else (0 if parent < 0 else parent + 2)
    last = _last_content(lines, start, end)
    at = last + 1 if last is not None else start
    return [*lines[:at], *_yaml_chain(indent, path, value), *lines[at:]]


def _yaml_chain(indent: int, path: Sequence[PathItem], value: str) -> list[str]:
    """New block YAML lines holding ``value`` at ``path`` (sequence indexes must be 0)."""
    out: list[str] = []
    dash = False
    for n, item in enumerate(path):
        last = n == len(path) - 1
        if isinstance(item, int):
            if item != 0:
                raise HostConfigError(f"YAML: cannot create item {item} of a missing list")
            if last:
                out.append(f"{' ' * indent}- {_yaml_scalar(value)}")
            dash = True
            continue
        prefix = " " * indent + ("- " if dash else "")
        indent += 2 if dash else 0
        dash = False
        out.append(f"{prefix}{item}: {_yaml_scalar(value)}" if last else f"{prefix}{item}:")
        indent += 2
    return out


def _yaml_set_item(
    lines: list[str], start: int, end: int, parent: int, path: Sequence[PathItem], value: str
) -> list[str]:
    """Set ``path[1:]`` inside item ``path[0]`` of the block sequence in ``lines[start:end]``."""
    index = path[0]
    assert isinstance(index, int)
    items: list[int] = []
    dash_indent: int | None = None
    for i in range(start, end):
        line = lines[i]
        if not _is_content(line):
            continue
        if dash_indent is None:
            if _indent(line) < parent or not line.lstrip().startswith("-"):
                raise HostConfigError("YAML: expected a list")
            dash_indent = _indent(line)
        if _indent(line) == dash_indent and line.lstrip().startswith("-"):
            items.append(i)
    if index < len(items):
        dash = dash_indent or 0
        at = items[index]
        stop = items[index + 1] if index + 1 < len(items) else end
        body = lines[at][dash:]
        rest = body[1:].lstrip(" ")
        if len(path) == 1:
            if rest and _yaml_value(rest) == value:
                return lines
            return [*lines[:at], f"{' ' * dash}- {_yaml_scalar(value)}", *lines[at + 1 :]]
        if not rest or rest.startswith("#"):
            return _yaml_set(lines, at + 1, stop, dash, path[1:], value)
        # The item's first key shares the dash's line: edit it as a mapping
        # indented past the dash, then put the dash back on its first line.
        inner = dash + len(body) - len(rest)
        spaced = [*lines[:at], " " * inner + rest, *lines[at + 1 :]]
        new = _yaml_set(spaced, at, stop, dash, path[1:], value)
        new[at] = " " * dash + body[: inner - dash] + new[at][inner:]
        return new
    if index != len(items):
        raise HostConfigError(f"YAML: the list has {len(items)} items, not {index}")
    indent = dash_indent if dash_indent is not None else parent + 2
    last = _last_content(lines, start, end)
    at = last + 1 if last is not None else start
    return [*lines[:at], *_yaml_chain(indent, (0, *path[1:]), value), *lines[at:]]


def set_yaml_value(text: str, path: Sequence[PathItem], value: str) -> str:
    """``text`` with the scalar at ``path`` set to ``value``; the rest as it was.

    A path item is a mapping key or the index of an item in a block sequence.
    """
    lines = text.splitlines()
    new = _yaml_set(lines, 0, len(lines), -1, path, value)
    if new == lines:
        return text
    return "\n".join(new) + "\n"


def _active(text: str) -> Callable[[int], bool]:
    """Whether an offset of an XML text lies outside every comment."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"<!--.*?-->", text, re.DOTALL)]
    return lambda offset: not any(start <= offset < end for start, end in spans)


def _set_xml_value(
    text: str, pattern: re.Pattern[str], value: str, insert: str | None, before: str, what: str
) -> str:
    active = _active(text)
    matches = [m for m in pattern.finditer(text) if active(m.start())]
    if not matches:
        if insert is None:
            return text
        closes = [m for m in re.finditer(re.escape(before), text) if active(m.start())]
        if not closes:
            raise HostConfigError(f"{what}: no {before} to add the setting to")
        at = closes[-1].start()
        line_start = text.rfind("\n", 0, at) + 1
        return text[:line_start] + insert + "\n" + text[line_start:]
    out: list[str] = []
    pos = 0
    for match in matches:
        out.append(text[pos : match.start(2)])
        out.append(value)
        pos = match.end(2)
    out.append(text[pos:])
    return "".join(out)


# --- renderers (pure) -------------------------------------------------------


def render_bbb_web_properties(current: str | None, facts: HostFacts) -> str:
    """bbb-web's override with serverURL for this host.

    bbb-install runs ``bbb-conf --setip`` with the host name, or with the
    builder's public address when it has none (bbb-install.sh lines 385-389);
    --setip writes serverURL here.
    """
    return _set_entries(
        current or "",
        [("bigbluebutton.web.serverURL", (facts.server_url,))],
        _parse_property,
        _render_assignment,
    )


def render_html5_settings(current: str | None, facts: HostFacts) -> str:
    """The client-settings override with this host's media and pad URLs.

    ``sipjsHackViaWs``: the client reaches FreeSWITCH's plain WebSocket through
    nginx (sip.nginx), as bbb-install sets it (bbb-install.sh line 1640).
    """
    text = current or ""
    text = set_yaml_value(
        text, ("public", "kurento", "wsUrl"), f"wss://{facts.fqdn}/bbb-webrtc-sfu"
    )
    text = set_yaml_value(text, ("public", "media", "sipjsHackViaWs"), "true")
    return set_yaml_value(text, ("public", "pads", "url"), f"https://{facts.fqdn}/pad")


def render_webrtc_sfu(current: str | None, facts: HostFacts) -> str:
    """bbb-webrtc-sfu's override with the addresses it gives FreeSWITCH and announces to clients.

    Exactly bbb-install's block (bbb-install.sh lines 1669-1694): FreeSWITCH's
    ``ip`` and ``sip_ip`` are the public address (on lo, see netstate), and
    mediasoup listens on every address while announcing the public one, for
    WebRTC (browsers) and plain RTP (FreeSWITCH).
    """
    text = current or ""
    for path, value in (
        (("freeswitch", "ip"), facts.public_ip),
        (("freeswitch", "sip_ip"), facts.public_ip),
        (("mediasoup", "webrtc", "listenIps", 0, "ip"), "0.0.0.0"),  # noqa: S104
        (("mediasoup", "webrtc", "listenIps", 0, "announcedIp"), facts.public_ip),
        (("mediasoup", "plainRtp", "listenIp", "ip"), "0.0.0.0"),  # noqa: S104
        (("mediasoup", "plainRtp", "listenIp", "announcedIp"), facts.public_ip),
    ):
        text = set_yaml_value(text, path, value)
    return text


_PROXY_PASS = re.compile(
    r"^(?P<head>\s*proxy_pass\s+https?://)(?P<host>[^:/;\s]+)(?P<tail>:\d+[^;]*;.*)$"
)


def render_sip_nginx(current: str, facts: HostFacts) -> str:
    """sip.nginx proxying the client's SIP WebSocket to FreeSWITCH on the public address.

    bbb-install writes ``proxy_pass http://$IP:5066;`` (bbb-install.sh line 1641,
    after check_nat() swapped the private for the public address, line 680);
    FreeSWITCH's ws-binding is that address (``render_freeswitch_external``).
    """
    lines = current.splitlines()
    out = []
    for line in lines:
        match = _PROXY_PASS.match(line)
        if match is None or line.lstrip().startswith("#"):
            out.append(line)
            continue
        out.append(f"{match.group('head')}{facts.public_ip}{match.group('tail')}")
    if out == lines:
        return current
    return "\n".join(out) + "\n"


DUMMY_NIC_TEMPLATE = """\
# Written by bbbfleet for this instance's public address: EC2 never puts it on
# an interface, so it goes on lo for FreeSWITCH (bbb-install's check_nat()).
[Unit]
Description=Configure dummy NIC for FreeSWITCH
Before=freeswitch.service
After=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip addr replace {public_ip}/32 dev lo

[Install]
WantedBy=multi-user.target
"""


def render_dummy_nic(facts: HostFacts) -> str:
    """The unit that puts the public address on lo at boot, owned entirely.

    bbb-install writes it with ``ExecStart=/sbin/ip addr add $IP dev lo``
    (bbb-install.sh lines 689-701); ``replace`` is the same, but idempotent.
    """
    return DUMMY_NIC_TEMPLATE.format(public_ip=facts.public_ip)


def render_iptables_rules(current: str | None, facts: HostFacts) -> str:
    """The persisted rules with coturn's DNAT rule for this host's addresses (netstate)."""
    return netstate.render_rules_v4(current, facts.nat_rule)


_AKKA_API = re.compile(r'(?m)^([ \t]*(?:services\.)?bbbWebAPI[ \t]*[=:][ \t]*")([^"\n]*)(")')


def render_akka_apps_conf(current: str, facts: HostFacts) -> str:
    """bbb-apps-akka's override with bbbWebAPI for this host."""
    url = f"{facts.server_url}/bigbluebutton/api"
    if _AKKA_API.search(current):
        return _AKKA_API.sub(lambda m: m.group(1) + url + m.group(3), current)
    # HOCON merges a dotted key into the services object defined elsewhere.
    separator = "" if not current or current.endswith("\n") else "\n"
    return f'{current}{separator}services.bbbWebAPI = "{url}"\n'


def render_recording_config(current: str, facts: HostFacts) -> str:
    """The recording scripts' playback host (what --setip sets)."""
    text = set_yaml_value(current, ("playback_host",), facts.fqdn)
    return set_yaml_value(text, ("playback_protocol",), "https")


TURN_STUN_TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by bbbfleet for {fqdn}: this host's coturn. Changes are overwritten. -->
<beans xmlns="http://www.springframework.org/schema/beans"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        xsi:schemaLocation="http://www.springframework.org/schema/beans
        http://www.springframework.org/schema/beans/spring-beans-2.5.xsd">

    <bean id="turn0" class="org.bigbluebutton.web.services.turn.TurnServer">
        <constructor-arg index="0" value={secret}/>
        <constructor-arg index="1" value={turn_url}/>
        <constructor-arg index="2" value="{ttl}"/>
    </bean>
    <bean id="turn1" class="org.bigbluebutton.web.services.turn.TurnServer">
        <constructor-arg index="0" value={secret}/>
        <constructor-arg index="1" value={turns_url}/>
        <constructor-arg index="2" value="{ttl}"/>
    </bean>

    <bean id="stunTurnService" class="org.bigbluebutton.web.services.turn.StunTurnService">
        <property name="stunServers">
            <set>
            </set>
        </property>
        <property name="turnServers">
            <set>
                <ref bean="turn0"/>
                <ref bean="turn1"/>
            </set>
        </property>
    </bean>
</beans>
"""


def render_turn_stun_servers(facts: HostFacts) -> str:
    """BBB's TURN list, owned entirely: this host's coturn over UDP/TCP and TLS.

    bbb-install's configure_coturn() writes the whole file too (bbb-install.sh
    lines 1699-1753), naming the host; TLS goes to coturn's own port here, not
    through haproxy on 443 (the image removes haproxy: packer/scripts/bbb.sh).
    """
    return TURN_STUN_TEMPLATE.format(
        fqdn=facts.fqdn,
        secret=quoteattr(facts.turn_secret),
        turn_url=quoteattr(f"turn:{facts.fqdn}:{facts.turn_port}"),
        turns_url=quoteattr(f"turns:{facts.fqdn}:{facts.turns_port}?transport=tcp"),
        ttl=TURN_CREDENTIAL_TTL,
    )


_NGINX_DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)(?P<name>server_name|ssl_certificate|ssl_certificate_key)\s+"
    r"(?P<value>[^;#]*?)\s*;(?P<tail>.*)$"
)
_NGINX_SSL_LISTEN = re.compile(r"^(?P<indent>\s*)listen\s+[^;#]*\bssl\b[^;#]*;")


def _commented(line: str) -> bool:
    return line.lstrip().startswith("#")


_BBB_INCLUDE = re.compile(r"^\s*include\s+/etc/bigbluebutton/nginx/")
_NGINX_LISTEN = re.compile(r"^(?P<indent>\s*)listen\s")


def _with_tls_listener(lines: list[str]) -> list[str]:
    """``lines`` with TLS on 443 added to the server that serves BigBlueButton.

    Without a host name bbb-install never writes a TLS server (install_ssl()
    runs only with -s, bbb-install.sh lines 350-354), and with its built-in TURN
    server it leaves TLS to haproxy (lines 1505-1520); on this image nginx
    terminates TLS itself, in the server block that includes BBB's locations.
    """
    include = next(
        (i for i, line in enumerate(lines) if _BBB_INCLUDE.match(line) and not _commented(line)),
        None,
    )
    listen = None
    for i in range(include or 0):
        if _NGINX_LISTEN.match(lines[i]) and not _commented(lines[i]):
            listen = i
        elif lines[i].strip().startswith("server") and "{" in lines[i]:
            listen = None
    if include is None or listen is None:
        raise HostConfigError(
            "nginx site has no TLS listener (listen ... ssl) and no server with BBB's locations"
        )
    match = _NGINX_LISTEN.match(lines[listen])
    assert match is not None
    indent = match.group("indent")
    added = [f"{indent}listen 443 ssl;", f"{indent}listen [::]:443 ssl;"]
    return [*lines[: listen + 1], *added, *lines[listen + 1 :]]


def render_nginx_site(current: str, facts: HostFacts) -> str:
    """BBB's nginx site with this host's name, a TLS listener and the certificate paths."""
    wanted = {
        "server_name": facts.fqdn,
        "ssl_certificate": str(facts.cert_file),
        "ssl_certificate_key": str(facts.key_file),
    }
    seen: set[str] = set()
    lines = current.splitlines()
    out: list[str] = []
    for line in lines:
        match = _NGINX_DIRECTIVE.match(line)
        if match is None or line.lstrip().startswith("#"):
            out.append(line)
            continue
        name = match.group("name")
        seen.add(name)
        if match.group("value") == wanted[name]:
            out.append(line)
        else:
            out.append(f"{match.group('indent')}{name} {wanted[name]};{match.group('tail')}")
    if "server_name" not in seen:
        raise HostConfigError("nginx site has no server_name directive")
    if not any(_NGINX_SSL_LISTEN.match(line) and not _commented(line) for line in out):
        out = _with_tls_listener(out)
    missing = [name for name in ("ssl_certificate", "ssl_certificate_key") if name not in seen]
    if missing:
        for i, line in enumerate(out):
            listen = _NGINX_SSL_LISTEN.match(line)
            if listen is not None and not line.lstrip().startswith("#"):
                indent = listen.group("indent")
                while i + 1 < len(out) and _NGINX_LISTEN.match(out[i + 1]):
                    i += 1
                out[i + 1 : i + 1] = [f"{indent}{name} {wanted[name]};" for name in missing]
                break
        else:
            raise HostConfigError("nginx site has no TLS listener (listen ... ssl) for the cert")
    if out == lines:
        return current
    return "\n".join(out) + "\n"


_NGINX_BUCKET = re.compile(
    r"^(?P<indent>\s*)server_names_hash_bucket_size\s+(?P<value>\d+)\s*;(?P<tail>.*)$"
)
_NGINX_HTTP = re.compile(r"^(?P<indent>\s*)http\s*\{")


def bucket_size_for(name: str) -> int:
    """The smallest server_names_hash_bucket_size that holds ``name`` (64-bit nginx)."""
    # A bucket holds one element (pointer + name + 2, pointer-aligned) and an end pointer.
    needed = 8 + ((len(name) + 2 + 7) // 8) * 8 + 8
    size = 64
    while size < needed:
        size *= 2
    return size


def render_nginx_conf(current: str, facts: HostFacts) -> str:
    """nginx.conf with a server-name hash bucket large enough for the FQDN."""
    needed = bucket_size_for(facts.fqdn)
    lines = current.splitlines()
    for i, line in enumerate(lines):
        match = _NGINX_BUCKET.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        if int(match.group("value")) >= needed:
            return current
        lines[i] = f"{match.group('indent')}server_names_hash_bucket_size {needed};"
        return "\n".join(lines) + "\n"
    for i, line in enumerate(lines):
        http = _NGINX_HTTP.match(line)
        if http is not None and not line.lstrip().startswith("#"):
            lines.insert(
                i + 1, f"{http.group('indent')}    server_names_hash_bucket_size {needed};"
            )
            return "\n".join(lines) + "\n"
    raise HostConfigError("nginx.conf has no http block")


def _fs_var(name: str) -> re.Pattern[str]:
    return re.compile(
        r'(<X-PRE-PROCESS\s+cmd="set"\s+data="' + re.escape(name) + r'=)([^"]*)("\s*/>)'
    )


def render_freeswitch_vars(current: str, facts: HostFacts) -> str:
    """vars.xml with the public address FreeSWITCH advertises in SIP and SDP.

    bbb-install's check_nat() sets external_rtp_ip and external_sip_ip to the
    public address (bbb-install.sh lines 673-674).

    ``local_ip_v4`` is only kept in step when the image pinned it: unset,
    FreeSWITCH detects it, which is right on every instance.
    """
    text = _set_xml_value(
        current, _fs_var("local_ip_v4"), facts.local_ip, None, "</include>", "vars.xml"
    )
    for name in ("external_rtp_ip", "external_sip_ip"):
        text = _set_xml_value(
            text,
            _fs_var(name),
            facts.public_ip,
            f'  <X-PRE-PROCESS cmd="set" data="{name}={facts.public_ip}"/>',
            "</include>",
            "vars.xml",
        )
    return text


def _fs_param(name: str) -> re.Pattern[str]:
    return re.compile(r'(<param\s+name="' + re.escape(name) + r'"\s+value=")([^"]*)("\s*/>)')


_BINDING = re.compile(r'(<param\s+name="(?:ws|wss)-binding"\s+value=")([^"]*?)(:\d+"\s*/>)')


def render_freeswitch_external(current: str, facts: HostFacts) -> str:
    """The external SIP profile advertising the addresses set in vars.xml.

    ext-rtp-ip and ext-sip-ip refer to vars.xml (bbb-install.sh lines 677-678);
    a ws-binding or wss-binding that names an address gets the public one
    (lines 1632 and 1642), one that names none (``:5066``) binds every address
    and stays.
    """
    active = _active(current)

    def bind(match: re.Match[str]) -> str:
        if not active(match.start()) or not match.group(2):
            return match.group(0)
        return f"{match.group(1)}{facts.public_ip}{match.group(3)}"

    text = _BINDING.sub(bind, current)
    for param, var in (("ext-rtp-ip", "external_rtp_ip"), ("ext-sip-ip", "external_sip_ip")):
        reference = f"$${{{var}}}"
        text = _set_xml_value(
            text,
            _fs_param(param),
            reference,
            f'    <param name="{param}" value="{reference}"/>',
            "</settings>",
            "sip_profiles/external.xml",
        )
    return text


COTURN_TEMPLATE = """\
# coturn for this BigBlueButton host, written by bbbfleet. bbbfleet keeps the
# ports, addresses, realm, certificate and secret in step; the rest is yours.
min-port=32769
max-port=65535
fingerprint
lt-cred-mech
keep-address-family
no-cli
no-tlsv1
no-tlsv1_1
no-loopback-peers
no-multicast-peers
# Relay only to this host (FreeSWITCH, bbb-webrtc-sfu): allowed-peer-ip below.
denied-peer-ip=0.0.0.0-255.255.255.255
denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
"""


def render_coturn_conf(current: str | None, facts: HostFacts) -> str:
    """turnserver.conf with this host's addresses, realm, certificate and secret.

    bbb-install's install_coturn() (bbb-install.sh lines 1766-1805) listens and
    relays on the private address, allows peers on both addresses and names the
    realm after the host; external-ip adds the public address coturn must tell
    clients about behind the NAT, and TLS on turns_port uses the key copy coturn
    can read (bbbnode/certificate.py).
    """
    external = (
        facts.public_ip
        if facts.public_ip == facts.local_ip
        else f"{facts.public_ip}/{facts.local_ip}"
    )
    wanted: Wanted = [
        ("listening-port", (str(facts.turn_port),)),
        ("tls-listening-port", (str(facts.turns_port),)),
        ("listening-ip", (facts.local_ip,)),
        ("relay-ip", (facts.local_ip,)),
        ("external-ip", (external,)),
        ("realm", (facts.fqdn,)),
        ("use-auth-secret", (None,)),
        ("static-auth-secret", (facts.turn_secret,)),
        ("cert", (str(facts.cert_file),)),
        ("pkey", (str(facts.coturn_key_file),)),
        ("allowed-peer-ip", tuple(dict.fromkeys((facts.local_ip, facts.public_ip)))),
    ]
    return _set_entries(
        COTURN_TEMPLATE if current is None else current, wanted, _parse_conf, _render_assignment
    )


def existing_turn_secret(turnserver_conf: str | None) -> str | None:
    """The static-auth-secret coturn already uses, so a restart keeps credentials valid."""
    for line in (turnserver_conf or "").splitlines():
        entry = _parse_conf(line)
        if entry is not None and entry[0] == "static-auth-secret" and entry[1]:
            return entry[1]
    return None


def resolve_turn_secret(configured: str | None, coturn_conf: Path | None) -> str:
    """The configured secret, else the one coturn already has, else a new random one."""
    if configured:
        return configured
    if coturn_conf is not None:
        with suppress(FileNotFoundError):
            existing = existing_turn_secret(coturn_conf.read_text(encoding="utf-8"))
            if existing and _SECRET.match(existing):
                return existing
    return secrets.token_urlsafe(32)


# --- plan (pure) ------------------------------------------------------------


def plan_host_config(
    facts: HostFacts,
    current: Mapping[Path, str | None],
    *,
    paths: HostPaths = HostPaths(),
    services: Services = Services(),
) -> tuple[FileChange, ...]:
    """The files whose content must change for ``facts``; empty when all are right.

    ``current`` maps each of ``paths.targets()`` to its content (None: missing).
    """
    changes: list[FileChange] = []

    def want(
        path: Path | None,
        render: Callable[[str | None], str | None],
        restart: str | None,
        *,
        mode_if_new: int = 0o644,
        group_if_new: str | None = None,
    ) -> None:
        if path is None:
            return
        old = current.get(path)
        new = render(old)
        if new is not None and new != old:
            changes.append(FileChange(path, new, restart, old, mode_if_new, group_if_new))

    def required(what: str, render: Callable[[str], str]) -> Callable[[str | None], str]:
        def inner(old: str | None) -> str:
            if old is None:
                raise HostConfigError(f"{what} is missing; the image must provide it")
            return render(old)

        return inner

    def optional(render: Callable[[str], str]) -> Callable[[str | None], str | None]:
        # bbb-conf --setip skips these when the component is not installed.
        return lambda old: None if old is None else render(old)

    want(
        paths.bbb_web_properties,
        lambda old: render_bbb_web_properties(old, facts),
        services.bbb_web,
    )
    want(
        paths.turn_stun_servers,
        lambda _old: render_turn_stun_servers(facts),
        services.bbb_web,
        mode_if_new=0o640,
        group_if_new="bigbluebutton",
    )
    want(
        paths.html5_settings, lambda old: render_html5_settings(old, facts), services.html5_settings
    )
    want(
        paths.akka_apps_conf,
        optional(lambda old: render_akka_apps_conf(old, facts)),
        services.akka_apps,
    )
    want(paths.recording_config, optional(lambda old: render_recording_config(old, facts)), None)
    want(
        paths.nginx_site,
        required("nginx site", lambda old: render_nginx_site(old, facts)),
        services.nginx,
    )
    want(
        paths.nginx_conf,
        required("nginx.conf", lambda old: render_nginx_conf(old, facts)),
        services.nginx,
    )
    want(
        paths.freeswitch_vars,
        required("FreeSWITCH vars.xml", lambda old: render_freeswitch_vars(old, facts)),
        services.freeswitch,
    )
    want(
        paths.freeswitch_external,
        required("FreeSWITCH external profile", lambda old: render_freeswitch_external(old, facts)),
        services.freeswitch,
    )
    want(
        paths.webrtc_sfu,
        lambda old: render_webrtc_sfu(old, facts),
        services.webrtc_sfu,
        # bbb-conf --setip keeps FreeSWITCH's ESL password in this file.
        mode_if_new=0o640,
        group_if_new="bigbluebutton",
    )
    want(paths.sip_nginx, optional(lambda old: render_sip_nginx(old, facts)), services.nginx)
    want(paths.dummy_nic, lambda _old: render_dummy_nic(facts), services.dummy_nic)
    want(
        paths.iptables_rules,
        lambda old: render_iptables_rules(old, facts),
        None,
        mode_if_new=0o640,
    )
    want(
        paths.coturn_conf,
        lambda old: render_coturn_conf(old, facts),
        services.coturn,
        mode_if_new=0o640,
        group_if_new="turnserver",
    )
    return tuple(changes)


def service_commands(service: str, services: Services = Services()) -> tuple[tuple[str, ...], ...]:
    """Checks, then the reload or restart, that make ``service`` take its new files."""
    if service in services.units:
        return (("systemctl", "daemon-reload"), ("systemctl", "enable", f"{service}.service"))
    checks = tuple(command for name, command in services.checks if name == service)
    action = "reload" if service in services.reload else "restart"
    return (*checks, ("systemctl", action, service))


def _groups(changes: Sequence[FileChange]) -> Iterator[tuple[str | None, list[FileChange]]]:
    order: list[str | None] = []
    by_service: dict[str | None, list[FileChange]] = {}
    for change in changes:
        if change.restart not in by_service:
            order.append(change.restart)
        by_service.setdefault(change.restart, []).append(change)
    for service in order:
        yield service, by_service[service]


# --- shell --------------------------------------------------------------------


def read_current(paths: HostPaths = HostPaths()) -> dict[Path, str | None]:
    """Each managed file's content (None when missing)."""
    current: dict[Path, str | None] = {}
    for path in paths.targets():
        try:
            current[path] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current[path] = None
    return current


def _write(change: FileChange) -> None:
    if change.old_content is None:
        # bbb-install makes these directories too (mkdir -p, e.g. line 1668).
        change.path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        change.path,
        change.new_content,
        mode_if_new=change.mode_if_new,
        group_if_new=change.group_if_new,
    )


def _rollback(written: Sequence[FileChange]) -> None:
    for change in reversed(written):
        if change.old_content is None:
            with suppress(FileNotFoundError):
                os.unlink(change.path)
        else:
            write_atomic(change.path, change.old_content)
        log.warning("host_file_rolled_back", path=str(change.path))


async def apply_host_config(
    facts: HostFacts,
    runner: Runner,
    *,
    paths: HostPaths = HostPaths(),
    services: Services = Services(),
    network: bool = False,
    commands: bool = True,
) -> HostConfigResult:
    """Bring the files in line with ``facts``; restart each affected service once.

    Nothing is written and no command runs when every file is already right.
    When a service's check or restart fails, its files get their old content
    back (so the next run tries again) and HostConfigFailed is raised.

    ``network``: also bring lo's address and coturn's DNAT rule to ``facts``
    (bbbnode.netstate), before any service restarts, so FreeSWITCH comes up
    with its new address already on lo. It reads the kernel's state on every
    run, and changes it only where it differs.

    ``commands`` False writes the files and runs nothing: no restart, no
    kernel state (a tree prepared for another machine, ``host-config --root``).
    """
    changes = plan_host_config(facts, read_current(paths), paths=paths, services=services)
    if not commands:
        for change in changes:
            _write(change)
        return HostConfigResult(tuple(c.path for c in changes), ())
    if network:
        try:
            await netstate.converge(runner, facts.nat_rule)
        except CommandFailed as exc:
            raise HostConfigFailed(f"network: {exc}") from exc
    if not changes:
        log.info("host_config_unchanged", fqdn=facts.fqdn)
        return HostConfigResult((), ())
    restarted: list[str] = []
    for service, group in _groups(changes):
        written: list[FileChange] = []
        try:
            for change in group:
                _write(change)
                written.append(change)
                log.info("host_file_written", path=str(change.path), service=service)
            if service is not None:
                for command in service_commands(service, services):
                    check(await runner(command))
        except (CommandFailed, OSError) as exc:
            _rollback(written)
            raise HostConfigFailed(f"{service or 'files'}: {exc}") from exc
        if service is not None:
            restarted.append(service)
            log.info("service_restarted", service=service)
    log.info("host_configured", fqdn=facts.fqdn, files=len(changes), services=restarted)
    return HostConfigResult(tuple(c.path for c in changes), tuple(restarted))
