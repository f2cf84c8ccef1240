"""Route53 records: pure plans, and the adapter against moto through the lifecycle layer."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import pytest
import pytest_asyncio

from bbbcore import aws
from bbbcore import route53 as dns
from bbbcore.route53 import Change, Edit, RecordSet, Route53Records
from bbbsim.lifecycle_layer import LifecycleLayer
from bbbsim.moto_server import FleetIds, FleetSpec
from tests.aws_fixtures import FakeClock

if TYPE_CHECKING:
    from types_aiobotocore_route53.client import Route53Client

MakeFleet = Callable[[FleetSpec | None], Awaitable[FleetIds]]

ZONE = "Z0123456789"
FQDN = "i-0abc.bbb.example.test"
OURS = "203.0.113.10"
THEIRS = "198.51.100.20"


class Sleeps:
    """Injected sleep: records the delays, moves an optional fake clock, returns at once."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self._clock = clock

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._clock is not None:
            self._clock.advance(seconds)


def a_record(ip: str = OURS, ttl: int = 60, **kw: Any) -> RecordSet:
    return RecordSet(FQDN, "A", ttl, (ip,), **kw)


# ---------------------------------------------------------------------- pure


def test_names_and_zone_ids_are_normalised() -> None:
    assert dns.normalise_name("I-0ABC.Bbb.Example.Test.") == FQDN
    assert dns.normalise_name("\\052.bbb.example.test.") == "*.bbb.example.test"
    assert dns.normalise_zone_id("/hostedzone/Z1") == "Z1"
    assert dns.normalise_zone_id("Z1") == "Z1"


def test_plan_upsert() -> None:
    wanted = Change(ZONE, (Edit("UPSERT", a_record()),), f"bbbfleet: {FQDN} A")
    assert dns.plan_upsert(ZONE, FQDN, OURS, 60, None) == wanted
    assert dns.plan_upsert(f"/hostedzone/{ZONE}", FQDN + ".", OURS, 60, None) == wanted
    # Already right: no call at all.
    assert dns.plan_upsert(ZONE, FQDN.upper() + ".", OURS, 60, a_record()) is None
    # A different address, a different TTL, several values: re-assert.
    assert dns.plan_upsert(ZONE, FQDN, OURS, 60, a_record(THEIRS)) == wanted
    assert dns.plan_upsert(ZONE, FQDN, OURS, 60, a_record(ttl=300)) == wanted
    several = RecordSet(FQDN, "A", 60, (OURS, THEIRS))
    assert dns.plan_upsert(ZONE, FQDN, OURS, 60, several) == wanted


def test_plan_delete_only_if_ours() -> None:
    mine = a_record(ttl=120)
    assert dns.plan_delete_if_ours(ZONE, FQDN, OURS, mine) == Change(
        ZONE, (Edit("DELETE", mine),), f"bbbfleet: {FQDN} gone"
    )
    assert dns.plan_delete_if_ours(ZONE, FQDN, OURS, None) is None
    assert dns.plan_delete_if_ours(ZONE, FQDN, OURS, a_record(THEIRS)) is None
    assert (
        dns.plan_delete_if_ours(ZONE, FQDN, OURS, RecordSet(FQDN, "A", 60, (OURS, THEIRS))) is None
    )
    assert dns.plan_delete_if_ours(ZONE, FQDN, OURS, a_record(simple=False)) is None


def test_txt_values_round_trip() -> None:
    for text in ("abc-DEF_123", 'with "quotes" and \\ backslash', "x" * 600, ""):
        assert dns.txt_text(dns.txt_value(text)) == text
    assert dns.txt_value("token") == '"token"'
    long = dns.txt_value("y" * 300)
    assert long == '"' + "y" * 255 + '" "' + "y" * 45 + '"'
    # Route53 answers non-printable characters as octal escapes.
    assert dns.txt_text('"a\\011b"') == "a\tb"
    assert dns.txt_text("unquoted") == "unquoted"


def test_plan_txt() -> None:
    name = f"_acme-challenge.{FQDN}"
    current = RecordSet(name, "TXT", 60, ('"one"', '"two"'))
    assert dns.plan_txt_upsert(ZONE, name, ["two", "one"], 60, current) is None
    assert dns.plan_txt_upsert(ZONE, name, ["one", "one", "two"], 60, current) is None
    upsert = dns.plan_txt_upsert(ZONE, name, ["three"], 60, current)
    assert upsert == Change(
        ZONE, (Edit("UPSERT", RecordSet(name, "TXT", 60, ('"three"',))),), f"bbbfleet: {name} TXT"
    )
    with pytest.raises(ValueError, match="at least one"):
        dns.plan_txt_upsert(ZONE, name, [], 60, None)
    with pytest.raises(TypeError):
        dns.plan_txt_upsert(ZONE, name, "one", 60, None)

    assert dns.plan_txt_delete(ZONE, name, ["one"], None) is None
    assert dns.plan_txt_delete(ZONE, name, ["other"], current) is None
    everything = dns.plan_txt_delete(ZONE, name, ["one", "two"], current)
    assert everything is not None
    assert everything.edits == (Edit("DELETE", current),)
    # Part of it: delete exactly what was read and create the rest, in one atomic batch.
    part = dns.plan_txt_delete(ZONE, name, ["one"], current)
    assert part is not None
    assert part.edits == (
        Edit("DELETE", current),
        Edit("CREATE", RecordSet(name, "TXT", 60, ('"two"',))),
    )


def test_record_from_api_and_change_batch() -> None:
    plain = dns.record_from_api(
        {
            "Name": "I-0ABC.bbb.example.test.",
            "Type": "A",
            "TTL": 60,
            "ResourceRecords": [{"Value": OURS}],
        }
    )
    assert plain == a_record()
    weighted = dns.record_from_api(
        {
            "Name": FQDN + ".",
            "Type": "A",
            "TTL": 60,
            "SetIdentifier": "blue",
            "Weight": 10,
            "ResourceRecords": [{"Value": OURS}],
        }
    )
    assert weighted is not None
    assert not weighted.simple
    assert dns.record_from_api({"Name": FQDN, "Type": "CNAME"}) is None

    change = dns.plan_upsert(ZONE, FQDN, OURS, 60, None)
    assert change is not None
    assert dns.change_batch(change) == {
        "Comment": f"bbbfleet: {FQDN} A",
        "Changes": [
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": FQDN,
                    "Type": "A",
                    "TTL": 60,
                    "ResourceRecords": [{"Value": OURS}],
                },
            }
        ],
    }


class PendingRoute53:
    """Just GetChange: PENDING ``pending`` times, then INSYNC."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.calls = 0

    async def get_change(self, Id: str) -> dict[str, Any]:
        self.calls += 1
        status = "PENDING" if self.calls <= self.pending else "INSYNC"
        return {"ChangeInfo": {"Id": Id, "Status": status}}


async def test_wait_insync_polls_then_gives_up(fake_clock: FakeClock) -> None:
    fake = PendingRoute53(pending=3)
    sleeps = Sleeps(fake_clock)
    records = Route53Records(
        cast("Route53Client", fake), sleep=sleeps, clock=fake_clock, poll_interval=2.0
    )
    await records.wait_insync("/change/C1", insync_timeout=60)
    assert fake.calls == 4
    assert sleeps.delays == [2.0, 2.0, 2.0]

    stuck = PendingRoute53(pending=1_000)
    records = Route53Records(
        cast("Route53Client", stuck), sleep=sleeps, clock=fake_clock, poll_interval=5.0
    )
    with pytest.raises(dns.DnsError, match="not INSYNC after 20 s"):
        await records.wait_insync("/change/C2", insync_timeout=20)
    assert stuck.calls == 5


# --------------------------------------------------------------- against moto


class Route53World:
    """The adapter on a one-attempt client, plus what it called."""

    def __init__(self, records: Route53Records, client: Route53Client, zone_id: str) -> None:
        self.records = records
        self.client = client
        self.zone_id = zone_id
        self.calls: Counter[str] = Counter()

    async def listed(self) -> dict[tuple[str, str], dict[str, Any]]:
        answer = await self.client.list_resource_record_sets(HostedZoneId=self.zone_id)
        return {
            (r["Name"], r["Type"]): {
                "ttl": r.get("TTL"),
                "values": [v["Value"] for v in r.get("ResourceRecords", [])],
            }
            for r in answer["ResourceRecordSets"]
            if r["Type"] in ("A", "TXT")
        }


@pytest_asyncio.fixture
async def route53(
    make_fleet: MakeFleet, aws_session: Any, fake_clock: FakeClock
) -> AsyncIterator[Route53World]:
    fleet = await make_fleet(FleetSpec(desired=0, min_size=0))
    sleeps = Sleeps(fake_clock)
    client: Route53Client
    # One attempt per botocore call, so our own retry (with the injected sleep) is tested.
    async with aws_session.client("route53", config=aws.client_config(max_attempts=1)) as client:
        records = Route53Records(client, sleep=sleeps, clock=fake_clock, poll_interval=1.0)
        world = Route53World(records, client, fleet.hosted_zone_id)

        def count(model: Any, **_: Any) -> None:
            world.calls[model.name] += 1

        client.meta.events.register("before-call.route53", count)
        yield world


@pytest.mark.integration
async def test_a_record_upsert_is_idempotent(route53: Route53World) -> None:
    records, zone = route53.records, route53.zone_id
    assert await records.current_a_record(zone, FQDN) is None
    assert await records.ensure_a_record(zone, FQDN, OURS, 60) is True
    assert route53.calls["ChangeResourceRecordSets"] == 1
    assert route53.calls["GetChange"] == 1
    assert await route53.listed() == {(FQDN + ".", "A"): {"ttl": 60, "values": [OURS]}}
    assert await records.current_a_record(zone, FQDN.upper() + ".") == a_record()

    # A second run (a restart, a periodic re-assert) reads and changes nothing.
    assert await records.ensure_a_record(zone, FQDN, OURS, 60) is False
    assert route53.calls["ChangeResourceRecordSets"] == 1
    assert route53.calls["GetChange"] == 1


@pytest.mark.integration
async def test_new_ip_or_ttl_is_reasserted(route53: Route53World) -> None:
    records, zone = route53.records, route53.zone_id
    await records.ensure_a_record(zone, FQDN, OURS, 60)
    assert await records.ensure_a_record(zone, FQDN, THEIRS, 60) is True
    assert await records.current_a_record(zone, FQDN) == a_record(THEIRS)
    assert await records.ensure_a_record(zone, FQDN, THEIRS, 300) is True
    assert await records.current_a_record(zone, FQDN) == a_record(THEIRS, ttl=300)
    assert route53.calls["ChangeResourceRecordSets"] == 3


@pytest.mark.integration
async def test_delete_only_if_ours(route53: Route53World) -> None:
    records, zone = route53.records, route53.zone_id
    # Absent from the start (a restart after the delete): success, no change.
    assert await records.delete_a_record_if_ours(zone, FQDN, OURS) == "absent"

    await records.ensure_a_record(zone, FQDN, THEIRS, 60)
    # Another host has the name now: leave it alone.
    assert await records.delete_a_record_if_ours(zone, FQDN, OURS) == "not_ours"
    assert await records.current_a_record(zone, FQDN) == a_record(THEIRS)

    await records.ensure_a_record(zone, FQDN, OURS, 60)
    before = route53.calls["ChangeResourceRecordSets"]
    assert await records.delete_a_record_if_ours(zone, FQDN, OURS) == "deleted"
    assert route53.calls["ChangeResourceRecordSets"] == before + 1
    assert await records.current_a_record(zone, FQDN) is None
    assert await records.delete_a_record_if_ours(zone, FQDN, OURS) == "absent"
    assert route53.calls["ChangeResourceRecordSets"] == before + 1


@pytest.mark.integration
async def test_txt_upsert_and_delete(route53: Route53World) -> None:
    records, zone = route53.records, route53.zone_id
    name = f"_acme-challenge.{FQDN}"
    key = (name + ".", "TXT")
    assert await records.upsert_txt(zone, name, ["token-one", "token-two"], 60) is True
    assert (await route53.listed())[key] == {"ttl": 60, "values": ['"token-one"', '"token-two"']}
    assert route53.calls["GetChange"] == 1
    assert await records.upsert_txt(zone, name, ["token-two", "token-one"], 60) is False
    assert route53.calls["ChangeResourceRecordSets"] == 1

    assert await records.delete_txt(zone, name, ["token-one"]) is True
    assert (await route53.listed())[key] == {"ttl": 60, "values": ['"token-two"']}
    assert await records.delete_txt(zone, name, ["token-one"]) is False
    assert await records.delete_txt(zone, name, ["token-two"]) is True
    assert key not in await route53.listed()
    assert await records.delete_txt(zone, name, ["token-two"]) is False

    # Replacing the whole value set in one go (a new ACME order after a restart).
    await records.upsert_txt(zone, name, ["old"], 60)
    assert await records.upsert_txt(zone, name, ["new"], 60) is True
    assert (await route53.listed())[key]["values"] == ['"new"']


@pytest.mark.integration
async def test_throttling_and_server_errors_are_retried(
    route53: Route53World, lifecycle_layer: LifecycleLayer
) -> None:
    records, zone = route53.records, route53.zone_id
    # Route53 speaks rest-xml: the layer matches it by service, not by action name.
    lifecycle_layer.inject_fault("throttling", service="route53", count=3)
    lifecycle_layer.inject_fault("http503", service="route53", count=1)
    assert await records.ensure_a_record(zone, FQDN, OURS, 60) is True
    assert await records.current_a_record(zone, FQDN) == a_record()
    # Four failed calls, each retried once more.
    failed = sum(route53.calls.values()) - 4  # list, change, get-change, list
    assert failed == 4

    lifecycle_layer.inject_fault("throttling", service="route53", count=2)
    assert await records.delete_a_record_if_ours(zone, FQDN, OURS) == "deleted"
    assert await records.current_a_record(zone, FQDN) is None


@pytest.mark.integration
async def test_open_route53_uses_the_session(make_fleet: MakeFleet, aws_session: Any) -> None:
    fleet = await make_fleet(FleetSpec(desired=0, min_size=0))
    async with dns.open_route53(aws_session) as records:
        assert await records.ensure_a_record(fleet.hosted_zone_id, FQDN, OURS) is True
        assert await records.current_a_record(fleet.hosted_zone_id, FQDN) == a_record()


@pytest.mark.integration
async def test_refused_delete_is_replanned_from_a_fresh_read(
    route53: Route53World, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, zone = route53.records, route53.zone_id
    await records.ensure_a_record(zone, FQDN, THEIRS, 60)
    real_current = records.current
    stale = [a_record(OURS, ttl=999)]

    async def first_read_is_stale(zone_id: str, name: str, kind: dns.RecordType) -> Any:
        # What we read a moment ago; another host has re-pointed the name since.
        return stale.pop() if stale else await real_current(zone_id, name, kind)

    monkeypatch.setattr(records, "current", first_read_is_stale)
    # Route53 refuses the DELETE (values no longer match); the fresh read says not ours.
    assert await records.delete_a_record_if_ours(zone, FQDN, OURS) == "not_ours"
    assert route53.calls["ChangeResourceRecordSets"] == 2
    assert await real_current(zone, FQDN, "A") == a_record(THEIRS)
