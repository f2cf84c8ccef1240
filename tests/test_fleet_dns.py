"""The A record follows the host's public IP after start-up."""

import pytest

from bbbnode.fleet import reassert_dns_forever


class Records:
    def __init__(self) -> None:
        self.ensured: list[tuple[str, str, str, int]] = []
        self.current = "203.0.113.10"

    async def ensure_a_record(self, zone_id: str, name: str, ip: str, ttl: int) -> bool:
        self.ensured.append((zone_id, name, ip, ttl))
        changed = ip != self.current
        self.current = ip
        return changed


class Stop(Exception):
    pass


async def test_reasserts_on_each_round_and_follows_a_new_ip() -> None:
    ips = iter(["203.0.113.10", None, "203.0.113.99"])
    rounds = 0

    async def metadata(path: str) -> str | None:
        if path == "local-ipv4":
            return "10.0.0.7"
        return next(ips)

    async def sleep(_: float) -> None:
        nonlocal rounds
        rounds += 1
        if rounds > 3:
            raise Stop

    records = Records()
    with pytest.raises(Stop):
        await reassert_dns_forever(
            metadata, records.ensure_a_record, "Z1", "i-1.bbb.example.org", 60, sleep=sleep
        )
    assert [ip for _, _, ip, _ in records.ensured] == ["203.0.113.10", "10.0.0.7", "203.0.113.99"]
    assert all(entry[:2] == ("Z1", "i-1.bbb.example.org") for entry in records.ensured)
