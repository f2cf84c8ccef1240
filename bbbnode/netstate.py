"""The kernel state media needs behind EC2's 1:1 NAT: the public address on lo, coturn's DNAT rule.

An EC2 instance never holds its public address on an interface. bbb-install
(bigbluebutton/bbb-install, branch v3.0.x-release, ``bbb-install.sh``) makes
up for it in two ways, both keyed to the builder's addresses:

- ``check_nat()`` (lines 680-708) puts the public address on ``lo`` (``ip addr
  add $IP dev lo``, kept across boots by ``dummy-nic.service``), so FreeSWITCH
  can bind the address it announces;
- ``main()`` (lines 366-373) adds ``iptables -t nat -A OUTPUT -p udp -s
  $INTERNAL_IP -d $IP -j DNAT --to-destination $INTERNAL_IP`` and saves it with
  ``netfilter-persistent save``, because coturn relays to the public address,
  which is not routable from inside the instance.

Pure core: parsing ``ip -o addr`` and ``iptables -S`` output, the commands that
bring the kernel to the wanted state, and the persisted rules file
(``/etc/iptables/rules.v4``, which netfilter-persistent restores at boot).
Imperative shell: ``converge`` runs those commands through the injected runner.
Every rule of bbb-install's shape that is not the wanted one is removed, so a
new address (a warm-pool instance that starts again) replaces the old rule
instead of adding a second one.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from bbbcore import logs
from bbbnode.runner import Runner, check

log = logs.get(__name__)

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
IPTABLES = ("iptables", "-w", "-t", "nat")
"""-w: wait for the xtables lock instead of failing while docker or ufw hold it."""
CHAIN = "OUTPUT"

_INET = re.compile(r"\binet\s+(\S+)")


class NetStateError(ValueError):
    """An address or a rules file bbbfleet cannot work with."""


@dataclass(frozen=True, slots=True)
class NatRule:
    """coturn's hairpin rule: UDP from the private to the public address goes to the private one."""

    private_ip: str
    public_ip: str

    def __post_init__(self) -> None:
        for name in ("private_ip", "public_ip"):
            value = getattr(self, name)
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise NetStateError(f"{name} {value!r} is not an IPv4 address") from None

    def spec(self) -> tuple[str, ...]:
        """The rule as ``iptables -S`` prints it (and iptables-save writes it)."""
        return (
            "-s", f"{self.private_ip}/32", "-d", f"{self.public_ip}/32", "-p", "udp",
            "-j", "DNAT", "--to-destination", self.private_ip,
        )  # fmt: skip


def _host(value: str) -> str | None:
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return None
    return str(network.network_address) if network.prefixlen == 32 else None


def parse_rule(tokens: Sequence[str]) -> NatRule | None:
    """The hairpin rule ``tokens`` (after ``-A OUTPUT``) spell, or None for any other rule."""
    options: dict[str, str] = {}
    rest = list(tokens)
    while rest:
        name = rest.pop(0)
        if not rest or name in options:
            return None
        options[name] = rest.pop(0)
    # iptables -S adds "-m udp" only when a port match is present; tolerate it alone.
    if options.pop("-m", "udp") != "udp":
        return None
    if set(options) != {"-s", "-d", "-p", "-j", "--to-destination"}:
        return None
    if options["-p"] != "udp" or options["-j"] != "DNAT":
        return None
    source, destination = _host(options["-s"]), _host(options["-d"])
    if source is None or destination is None or options["--to-destination"] != source:
        return None
    return NatRule(source, destination)


def _appended(line: str) -> tuple[str, ...] | None:
    """The rule tokens of an ``-A OUTPUT ...`` line, or None."""
    try:
        tokens = shlex.split(line)
    except ValueError:
        return None
    if len(tokens) < 2 or tokens[0] != "-A" or tokens[1] != CHAIN:
        return None
    return tuple(tokens[2:])


def nat_commands(listing: str, wanted: NatRule) -> tuple[tuple[str, ...], ...]:
    """Commands that leave exactly ``wanted`` among the hairpin rules ``iptables -S`` listed."""
    present: list[tuple[str, ...]] = []
    for line in listing.splitlines():
        tokens = _appended(line)
        if tokens is not None and parse_rule(tokens) is not None:
            present.append(tokens)
    commands: list[tuple[str, ...]] = []
    if not any(parse_rule(tokens) == wanted for tokens in present):
        # Add before deleting, so relayed media never goes without a rule.
        commands.append((*IPTABLES, "-A", CHAIN, *wanted.spec()))
    seen_wanted = False
    for tokens in present:
        if parse_rule(tokens) == wanted and not seen_wanted:
            seen_wanted = True
            continue
        commands.append((*IPTABLES, "-D", CHAIN, *tokens))
    return tuple(commands)


def lo_commands(listing: str, public_ip: str) -> tuple[tuple[str, ...], ...]:
    """Commands that leave lo with its loopback addresses and ``public_ip`` only.

    ``listing`` is ``ip -4 -o addr show dev lo``. On a BBB host nothing else
    belongs there; an address left by an earlier public address would make
    FreeSWITCH answer for an address the instance no longer has.
    """
    wanted = ipaddress.IPv4Address(public_ip)
    present = []
    for match in _INET.finditer(listing):
        try:
            present.append(ipaddress.IPv4Interface(match.group(1)))
        except ValueError:
            continue
    commands: list[tuple[str, ...]] = []
    if all(iface.ip != wanted for iface in present):
        commands.append(("ip", "addr", "add", f"{public_ip}/32", "dev", "lo"))
    for iface in present:
        if iface.ip == wanted or iface.ip in LOOPBACK:
            continue
        commands.append(("ip", "addr", "del", str(iface.with_prefixlen), "dev", "lo"))
    return tuple(commands)


NAT_TABLE_TEMPLATE = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
{rule}
COMMIT
"""


def render_rules_v4(current: str | None, wanted: NatRule) -> str:
    """iptables-save text with exactly ``wanted`` among the hairpin rules; all else kept."""
    rule = " ".join(("-A", CHAIN, *wanted.spec()))
    if not current:
        return "# Written by bbbfleet: coturn's DNAT rule behind EC2's NAT.\n" + (
            NAT_TABLE_TEMPLATE.format(rule=rule)
        )
    lines = current.splitlines()
    out: list[str] = []
    table: str | None = None
    nat_seen = placed = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("*"):
            table = stripped[1:]
            nat_seen = nat_seen or table == "nat"
        elif table == "nat" and stripped == "COMMIT":
            if not placed:
                out.append(rule)
                placed = True
            table = None
        elif table == "nat":
            tokens = _appended(stripped)
            if tokens is not None and (found := parse_rule(tokens)) is not None:
                # The wanted rule takes the place of the first one of its shape.
                if not placed:
                    out.append(line if found == wanted else rule)
                    placed = True
                continue
        out.append(line)
    if nat_seen and not placed:
        raise NetStateError("rules.v4: the *nat table has no COMMIT")
    if not nat_seen:
        out.append(NAT_TABLE_TEMPLATE.format(rule=rule).rstrip("\n"))
    text = "\n".join(out) + "\n"
    return current if text == current else text


async def converge(runner: Runner, wanted: NatRule) -> tuple[tuple[str, ...], ...]:
    """Bring lo and the nat table to the wanted state; returns the commands that changed it."""
    done: list[tuple[str, ...]] = []
    listing = check(await runner(("ip", "-4", "-o", "addr", "show", "dev", "lo"))).stdout
    for command in lo_commands(listing, wanted.public_ip):
        check(await runner(command))
        done.append(command)
    rules = check(await runner((*IPTABLES, "-S", CHAIN))).stdout
    for command in nat_commands(rules, wanted):
        check(await runner(command))
        done.append(command)
    if done:
        log.info("host_network_converged", commands=len(done), public_ip=wanted.public_ip)
    return tuple(done)
