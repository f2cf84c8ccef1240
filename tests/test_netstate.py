"""bbbnode.netstate: lo's public address and coturn's DNAT rule, in the kernel and in rules.v4.

The kernel is emulated: a runner that answers ``ip -4 -o addr show dev lo`` and
``iptables -t nat -S OUTPUT`` from sets it keeps, and changes them on ``ip addr
add/del`` and ``iptables -A/-D`` as the kernel would (``-D`` of a rule that is
not there fails). Property: whatever the kernel held before and however many
times the addresses change, one converge leaves exactly the wanted address on
lo (beside loopback) and exactly one hairpin rule, the wanted one, and never
touches another rule.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbbnode import netstate
from bbbnode.netstate import IPTABLES, NatRule, NetStateError
from bbbnode.runner import CommandFailed, Completed, ScriptedRunner

RULE = NatRule("10.0.3.21", "198.51.100.7")
DOCKER = ("!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER")


@dataclass
class Kernel:
    """lo's addresses and the nat table's OUTPUT chain, changed only by the commands it is given."""

    lo: list[str] = field(default_factory=lambda: ["127.0.0.1/8"])
    output: list[tuple[str, ...]] = field(default_factory=list)

    def runner(self) -> ScriptedRunner:
        return ScriptedRunner(
            script={
                ("ip", "-4", "-o", "addr", "show"): self._show,
                ("ip", "addr", "add"): self._add,
                ("ip", "addr", "del"): self._del,
                (*IPTABLES, "-S"): self._list,
                (*IPTABLES, "-A"): self._append,
                (*IPTABLES, "-D"): self._delete,
            }
        )

    def _show(self, argv: tuple[str, ...]) -> Completed:
        lines = [f"1: lo    inet {a} scope host lo\\       valid_lft forever" for a in self.lo]
        return Completed(argv, 0, "\n".join(lines) + "\n")

    def _add(self, argv: tuple[str, ...]) -> Completed:
        if argv[3] in self.lo:
            return Completed(argv, 2, "", "RTNETLINK answers: File exists")
        self.lo.append(argv[3])
        return Completed(argv, 0)

    def _del(self, argv: tuple[str, ...]) -> Completed:
        if argv[3] not in self.lo:
            return Completed(argv, 2, "", "RTNETLINK answers: Cannot assign requested address")
        self.lo.remove(argv[3])
        return Completed(argv, 0)

    def _list(self, argv: tuple[str, ...]) -> Completed:
        lines = ["-P OUTPUT ACCEPT", *(" ".join(("-A", "OUTPUT", *r)) for r in self.output)]
        return Completed(argv, 0, "\n".join(lines) + "\n")

    def _append(self, argv: tuple[str, ...]) -> Completed:
        self.output.append(argv[len(IPTABLES) + 2 :])
        return Completed(argv, 0)

    def _delete(self, argv: tuple[str, ...]) -> Completed:
        rule = argv[len(IPTABLES) + 2 :]
        if rule not in self.output:
            return Completed(argv, 1, "", "iptables: Bad rule (does a matching rule exist?)")
        self.output.remove(rule)
        return Completed(argv, 0)

    def hairpins(self) -> list[NatRule]:
        return [r for rule in self.output if (r := netstate.parse_rule(rule)) is not None]


def test_parse_rule_knows_bbb_installs_shape_in_any_order() -> None:
    spec = RULE.spec()
    assert netstate.parse_rule(spec) == RULE
    # bbb-install's own argument order (bbb-install.sh line 372), /32 implied.
    bbb_install = ("-p", "udp", "-s", "10.0.3.21", "-d", "198.51.100.7", "-j", "DNAT",
                   "--to-destination", "10.0.3.21")  # fmt: skip
    assert netstate.parse_rule(bbb_install) == RULE
    assert netstate.parse_rule((*spec[:-1], "10.0.3.22")) is None  # not a hairpin
    assert netstate.parse_rule(("-p", "tcp", *spec[2:])) is None
    assert netstate.parse_rule((*spec, "--dport", "3478")) is None
    assert netstate.parse_rule(DOCKER) is None
    assert netstate.parse_rule(("-s", "10.0.0.0/8", *spec[2:])) is None


def test_nat_rule_refuses_what_is_not_an_ipv4_address() -> None:
    with pytest.raises(NetStateError, match="public_ip"):
        NatRule("10.0.0.1", "2001:db8::1")


def test_nat_commands_add_first_then_remove_the_stale_and_duplicates() -> None:
    old = NatRule("10.0.9.9", "203.0.113.9")
    listing = "\n".join(
        ["-P OUTPUT ACCEPT", "-A OUTPUT " + " ".join(DOCKER), "-A OUTPUT " + " ".join(old.spec())]
    )
    assert netstate.nat_commands(listing, RULE) == (
        (*IPTABLES, "-A", "OUTPUT", *RULE.spec()),
        (*IPTABLES, "-D", "OUTPUT", *old.spec()),
    )
    twice = (
        listing + "\n-A OUTPUT " + " ".join(RULE.spec()) + "\n-A OUTPUT " + " ".join(RULE.spec())
    )
    assert netstate.nat_commands(twice, RULE) == (
        (*IPTABLES, "-D", "OUTPUT", *old.spec()),
        (*IPTABLES, "-D", "OUTPUT", *RULE.spec()),
    )


def test_lo_commands_keep_loopback_and_replace_a_stale_public_address() -> None:
    listing = (
        "1: lo    inet 127.0.0.1/8 scope host lo\n1: lo    inet 203.0.113.9/32 scope global lo\n"
    )
    assert netstate.lo_commands(listing, "198.51.100.7") == (
        ("ip", "addr", "add", "198.51.100.7/32", "dev", "lo"),
        ("ip", "addr", "del", "203.0.113.9/32", "dev", "lo"),
    )
    assert (
        netstate.lo_commands("1: lo inet 198.51.100.7/32 scope global lo\n", "198.51.100.7") == ()
    )


RULES_V4 = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -s 10.0.9.9/32 -d 203.0.113.9/32 -p udp -j DNAT --to-destination 10.0.9.9
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -s 10.0.9.9/32 -j ACCEPT
COMMIT
"""


def test_rules_v4_replaces_the_rule_in_place_and_keeps_everything_else() -> None:
    text = netstate.render_rules_v4(RULES_V4, RULE)
    assert text == RULES_V4.replace(
        "-A OUTPUT -s 10.0.9.9/32 -d 203.0.113.9/32 -p udp -j DNAT --to-destination 10.0.9.9",
        "-A OUTPUT -s 10.0.3.21/32 -d 198.51.100.7/32 -p udp -j DNAT --to-destination 10.0.3.21",
    )
    assert netstate.render_rules_v4(text, RULE) == text


def test_rules_v4_without_a_file_or_a_nat_table() -> None:
    rule = "-A OUTPUT " + " ".join(RULE.spec())
    fresh = netstate.render_rules_v4(None, RULE)
    assert "*nat\n" in fresh
    assert f"\n{rule}\nCOMMIT\n" in fresh
    only_filter = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
    text = netstate.render_rules_v4(only_filter, RULE)
    assert text.startswith(only_filter)
    assert text.endswith(f"{rule}\nCOMMIT\n")
    with pytest.raises(NetStateError, match="COMMIT"):
        netstate.render_rules_v4("*nat\n:OUTPUT ACCEPT [0:0]\n", RULE)


async def test_converge_changes_only_what_differs() -> None:
    kernel = Kernel(output=[DOCKER, NatRule("10.0.9.9", "203.0.113.9").spec()])
    kernel.lo.append("203.0.113.9/32")

    done = await netstate.converge(kernel.runner(), RULE)

    assert len(done) == 4
    assert kernel.lo == ["127.0.0.1/8", "198.51.100.7/32"]
    assert kernel.output == [DOCKER, RULE.spec()]
    runner = kernel.runner()
    assert await netstate.converge(runner, RULE) == ()
    # Only the two reads.
    assert runner.calls == [
        ("ip", "-4", "-o", "addr", "show", "dev", "lo"),
        (*IPTABLES, "-S", "OUTPUT"),
    ]


async def test_converge_raises_when_the_kernel_refuses() -> None:
    runner = ScriptedRunner(
        script={(*IPTABLES, "-A"): lambda argv: Completed(argv, 4, "", "Permission denied")}
    )
    with pytest.raises(CommandFailed, match="Permission denied"):
        await netstate.converge(runner, RULE)


_private = st.builds(
    lambda n: str(ipaddress.IPv4Address("10.0.0.0") + n), st.integers(1, 2**24 - 2)
)
_public = st.builds(
    lambda n: str(ipaddress.IPv4Address("198.18.0.0") + n), st.integers(1, 2**17 - 2)
)
_rules = st.builds(NatRule, _private, _public)


@settings(max_examples=60, deadline=None)
@given(
    before=st.lists(_rules, max_size=3),
    stale_lo=st.lists(_public, max_size=3, unique=True),
    changes=st.lists(_rules, min_size=1, max_size=4),
)
async def test_any_history_converges_to_exactly_the_wanted_state(
    before: list[NatRule], stale_lo: list[str], changes: list[NatRule]
) -> None:
    kernel = Kernel(output=[DOCKER, *(r.spec() for r in before)])
    kernel.lo += [f"{a}/32" for a in stale_lo]
    for wanted in changes:
        await netstate.converge(kernel.runner(), wanted)
        assert kernel.hairpins() == [wanted]
        assert kernel.lo == ["127.0.0.1/8", f"{wanted.public_ip}/32"]
        assert kernel.output[0] == DOCKER
