"""Route53 records bbbfleet keeps: a host's A record, and the TXT records of ACME DNS-01.

Decisions are pure (``plan_*``: what to change, given the record as Route53 has
it now, or nothing); :class:`Route53Records` reads the record, plans, submits and
waits for INSYNC. Every operation reads before it writes, so calling it again, or
after a restart half-way, converges instead of repeating work.

Deletes are conditional: Route53 refuses a DELETE whose TTL and values differ from
the record's current ones. A record another host has taken over in the meantime is
therefore never deleted; the refusal makes us re-read and re-plan.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from botocore.exceptions import ClientError

from bbbcore import aws, logs

if TYPE_CHECKING:
    from botocore.config import Config
    from types_aiobotocore_route53.client import Route53Client
    from types_aiobotocore_route53.type_defs import (
        ChangeBatchTypeDef,
        ChangeTypeDef,
        ResourceRecordSetOutputTypeDef,
        ResourceRecordSetTypeDef,
    )

log = logs.get(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
RecordType = Literal["A", "TXT"]
Action = Literal["CREATE", "UPSERT", "DELETE"]
DeleteOutcome = Literal["deleted", "absent", "not_ours"]

# Route53 refuses a DELETE that no longer matches with InvalidChangeBatch; moto says
# InvalidInput. Either means "the record changed under us": re-read and re-plan.
_CONFLICT_CODES = frozenset({"InvalidChangeBatch", "InvalidInput"})
_MAX_REPLANS = 3
_TXT_CHUNK = 255
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class DnsError(RuntimeError):
    """A Route53 change did not converge (kept conflicting, or never became INSYNC)."""


@dataclass(frozen=True, slots=True)
class RecordSet:
    """One resource record set, names normalised (lower case, no trailing dot)."""

    name: str
    type: RecordType
    ttl: int | None
    values: tuple[str, ...]
    """As Route53 stores them: TXT values quoted."""
    simple: bool = True
    """False for alias, weighted/latency/... and health-checked records: never ours."""


@dataclass(frozen=True, slots=True)
class Edit:
    """One entry of a change batch."""

    action: Action
    record: RecordSet


@dataclass(frozen=True, slots=True)
class Change:
    """An atomic change batch for one hosted zone."""

    zone_id: str
    edits: tuple[Edit, ...]
    comment: str = "bbbfleet"

    @property
    def deletes(self) -> bool:
        return any(edit.action == "DELETE" for edit in self.edits)


# ------------------------------------------------------------------ names and values


def normalise_name(name: str) -> str:
    """Lower case, no trailing dot, Route53's ``\\ddd`` escapes decoded."""
    decoded = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), name)
    return decoded.rstrip(".").lower()


def normalise_zone_id(zone_id: str) -> str:
    """``/hostedzone/Z123`` and ``Z123`` are the same zone."""
    return zone_id.removeprefix("/hostedzone/")


def txt_value(text: str) -> str:
    """A TXT record value as Route53 wants it: quoted, escaped, split in 255-char strings."""
    if not text:
        return '""'
    chunks = [text[i : i + _TXT_CHUNK] for i in range(0, len(text), _TXT_CHUNK)]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def txt_text(value: str) -> str:
    """The text of a TXT value Route53 returned: quoted strings joined, escapes decoded."""
    if not value.startswith('"'):
        return value
    out: list[str] = []
    i, inside = 0, False
    while i < len(value):
        char = value[i]
        if char == '"':
            inside = not inside
        elif inside and char == "\\" and i + 1 < len(value):
            octal = value[i + 1 : i + 4]
            if len(octal) == 3 and all(c in "01234567" for c in octal):
                out.append(chr(int(octal, 8)))
                i += 4
                continue
            out.append(value[i + 1])
            i += 2
            continue
        elif inside:
            out.append(char)
        i += 1
    return "".join(out)


def record_from_api(raw: ResourceRecordSetOutputTypeDef) -> RecordSet | None:
    """Our view of a record set from ListResourceRecordSets; None for types we never manage."""
    kind = raw["Type"]
    if kind not in ("A", "TXT"):
        return None
    simple = not any(
        key in raw
        for key in ("SetIdentifier", "AliasTarget", "TrafficPolicyInstanceId", "HealthCheckId")
    )
    return RecordSet(
        name=normalise_name(raw["Name"]),
        type=kind,
        ttl=raw.get("TTL"),
        values=tuple(r["Value"] for r in raw.get("ResourceRecords", [])),
        simple=simple,
    )


def change_batch(change: Change) -> ChangeBatchTypeDef:
    """The ChangeBatch parameter of ChangeResourceRecordSets."""
    changes: list[ChangeTypeDef] = []
    for edit in change.edits:
        record: ResourceRecordSetTypeDef = {
            "Name": edit.record.name,
            "Type": edit.record.type,
            "ResourceRecords": [{"Value": v} for v in edit.record.values],
        }
        if edit.record.ttl is not None:
            record["TTL"] = edit.record.ttl
        changes.append({"Action": edit.action, "ResourceRecordSet": record})
    return {"Comment": change.comment, "Changes": changes}


# ------------------------------------------------------------------------ plans (pure)


def plan_upsert(
    zone_id: str, fqdn: str, ip: str, ttl: int, current: RecordSet | None
) -> Change | None:
    """UPSERT the A record ``fqdn -> ip``; None when Route53 already has exactly that."""
    name = normalise_name(fqdn)
    if (
        current is not None
        and current.simple
        and current.name == name
        and current.values == (ip,)
        and current.ttl == ttl
    ):
        return None
    wanted = RecordSet(name, "A", ttl, (ip,))
    return Change(normalise_zone_id(zone_id), (Edit("UPSERT", wanted),), f"bbbfleet: {name} A")


def plan_delete_if_ours(
    zone_id: str, fqdn: str, our_ip: str, current: RecordSet | None
) -> Change | None:
    """DELETE the A record only while it is a plain record pointing at ``our_ip`` alone."""
    if current is None or not owned_by(current, fqdn, our_ip):
        return None
    return Change(
        normalise_zone_id(zone_id), (Edit("DELETE", current),), f"bbbfleet: {current.name} gone"
    )


def owned_by(current: RecordSet, fqdn: str, our_ip: str) -> bool:
    """True when ``current`` is the plain A record of ``fqdn`` with ``our_ip`` as its only value."""
    return (
        current.type == "A"
        and current.simple
        and current.name == normalise_name(fqdn)
        and current.values == (our_ip,)
    )


def plan_txt_upsert(
    zone_id: str, name: str, values: Sequence[str], ttl: int, current: RecordSet | None
) -> Change | None:
    """Make the TXT record hold exactly ``values``; None when it already does."""
    if isinstance(values, str):
        raise TypeError("values must be a sequence of strings, not one string")
    texts = tuple(dict.fromkeys(values))
    if not texts:
        raise ValueError("a TXT record needs at least one value")
    wanted_name = normalise_name(name)
    if (
        current is not None
        and current.simple
        and current.name == wanted_name
        and current.ttl == ttl
        and sorted(txt_text(v) for v in current.values) == sorted(texts)
    ):
        return None
    wanted = RecordSet(wanted_name, "TXT", ttl, tuple(txt_value(t) for t in texts))
    return Change(
        normalise_zone_id(zone_id), (Edit("UPSERT", wanted),), f"bbbfleet: {wanted_name} TXT"
    )


def plan_txt_delete(
    zone_id: str, name: str, values: Iterable[str], current: RecordSet | None
) -> Change | None:
    """Remove ``values`` from the TXT record, keeping any other value; None if none is there.

    Both forms are conditional on the record as read (DELETE, or DELETE + CREATE of the
    rest), so a value someone added meanwhile is never lost.
    """
    if isinstance(values, str):
        raise TypeError("values must be an iterable of strings, not one string")
    if current is None or not current.simple or current.name != normalise_name(name):
        return None
    gone = set(values)
    keep = tuple(v for v in current.values if txt_text(v) not in gone)
    if len(keep) == len(current.values):
        return None
    zone = normalise_zone_id(zone_id)
    comment = f"bbbfleet: {current.name} TXT"
    if not keep:
        return Change(zone, (Edit("DELETE", current),), comment)
    rest = RecordSet(current.name, "TXT", current.ttl, keep)
    return Change(zone, (Edit("DELETE", current), Edit("CREATE", rest)), comment)


# -------------------------------------------------------------------------- adapter


class Route53Records:
    """Reads, plans and applies the host's records with one Route53 client."""

    def __init__(
        self,
        client: Route53Client,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        poll_interval: float = 3.0,
        insync_timeout: float = 300.0,
        give_up_after: float = 300.0,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._clock = clock
        self._poll_interval = poll_interval
        self._insync_timeout = insync_timeout
        self._give_up_after = give_up_after

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        def on_retry(exc: BaseException) -> None:
            log.info("route53_retry", error_code=aws.error_code(exc), error=type(exc).__name__)

        retrying = aws.retrying(give_up_after=self._give_up_after, on_retry=on_retry)
        # Attempts iterated, not tenacity's call form: that would not await aiobotocore's
        # methods (plain functions returning coroutines).
        async for attempt in retrying.copy(sleep=self._sleep):
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def current(self, zone_id: str, name: str, kind: RecordType) -> RecordSet | None:
        """The record set ``name``/``kind`` as Route53 has it now; None if absent."""
        wanted = normalise_name(name)
        answer = await self._retry(
            lambda: self._client.list_resource_record_sets(
                HostedZoneId=normalise_zone_id(zone_id),
                StartRecordName=wanted,
                StartRecordType=kind,
                MaxItems="1",
            )
        )
        for raw in answer.get("ResourceRecordSets", []):
            record = record_from_api(raw)
            if record is not None and record.name == wanted and record.type == kind:
                return record
        return None

    async def current_a_record(self, zone_id: str, fqdn: str) -> RecordSet | None:
        """The A record of ``fqdn``, or None."""
        return await self.current(zone_id, fqdn, "A")

    async def wait_insync(self, change_id: str, insync_timeout: float | None = None) -> None:
        """Poll GetChange until INSYNC; DnsError after ``insync_timeout`` seconds."""
        limit = self._insync_timeout if insync_timeout is None else insync_timeout
        deadline = self._clock() + limit
        while True:
            answer = await self._retry(lambda: self._client.get_change(Id=change_id))
            if answer["ChangeInfo"]["Status"] == "INSYNC":
                return
            if self._clock() >= deadline:
                raise DnsError(f"Route53 change {change_id} not INSYNC after {limit:g} s")
            await self._sleep(self._poll_interval)

    async def _submit(self, change: Change) -> str:
        answer = await self._retry(
            lambda: self._client.change_resource_record_sets(
                HostedZoneId=change.zone_id, ChangeBatch=change_batch(change)
            )
        )
        return answer["ChangeInfo"]["Id"]

    async def _converge(
        self,
        zone_id: str,
        name: str,
        kind: RecordType,
        plan: Callable[[RecordSet | None], Change | None],
    ) -> tuple[RecordSet | None, str | None]:
        """Read, plan, submit; re-read when a conditional change lost a race.

        Returns the record as read before the change and the change id (None: no change).
        """
        for attempt in range(1, _MAX_REPLANS + 1):
            current = await self.current(zone_id, name, kind)
            change = plan(current)
            if change is None:
                return current, None
            try:
                return current, await self._submit(change)
            except ClientError as exc:
                code = aws.error_code(exc)
                if not change.deletes or code not in _CONFLICT_CODES:
                    raise
                log.info("route53_record_changed_meanwhile", name=name, type=kind, attempt=attempt)
        raise DnsError(f"{kind} record {name} kept changing under us; gave up")

    async def ensure_a_record(
        self,
        zone_id: str,
        fqdn: str,
        ip: str,
        ttl: int = 60,
        *,
        insync_timeout: float | None = None,
    ) -> bool:
        """Make ``fqdn`` resolve to ``ip`` and wait for INSYNC; True if a change was made."""
        before, change_id = await self._converge(
            zone_id, fqdn, "A", lambda cur: plan_upsert(zone_id, fqdn, ip, ttl, cur)
        )
        if change_id is None:
            log.debug("dns_a_record_unchanged", name=fqdn, ip=ip)
            return False
        log.info(
            "dns_a_record_upserted",
            name=fqdn,
            ip=ip,
            ttl=ttl,
            previous=list(before.values) if before is not None else None,
            change_id=change_id,
        )
        await self.wait_insync(change_id, insync_timeout)
        log.info("dns_change_insync", name=fqdn, change_id=change_id)
        return True

    async def delete_a_record_if_ours(self, zone_id: str, fqdn: str, our_ip: str) -> DeleteOutcome:
        """Delete ``fqdn`` only while it points at ``our_ip``; an absent record is success."""
        before, change_id = await self._converge(
            zone_id, fqdn, "A", lambda cur: plan_delete_if_ours(zone_id, fqdn, our_ip, cur)
        )
        if change_id is not None:
            log.info("dns_a_record_deleted", name=fqdn, ip=our_ip, change_id=change_id)
            return "deleted"
        if before is None:
            log.info("dns_a_record_absent", name=fqdn)
            return "absent"
        log.warning("dns_a_record_not_ours", name=fqdn, ours=our_ip, values=list(before.values))
        return "not_ours"

    async def upsert_txt(
        self,
        zone_id: str,
        name: str,
        values: Sequence[str],
        ttl: int = 60,
        *,
        insync_timeout: float | None = None,
    ) -> bool:
        """Make the TXT record ``name`` hold exactly ``values``, wait INSYNC; True if changed."""
        _, change_id = await self._converge(
            zone_id, name, "TXT", lambda cur: plan_txt_upsert(zone_id, name, values, ttl, cur)
        )
        if change_id is None:
            return False
        log.info("dns_txt_upserted", name=name, count=len(values), change_id=change_id)
        await self.wait_insync(change_id, insync_timeout)
        log.info("dns_change_insync", name=name, change_id=change_id)
        return True

    async def delete_txt(self, zone_id: str, name: str, values: Iterable[str]) -> bool:
        """Remove ``values`` from TXT record ``name`` (others stay); True if something changed."""
        if isinstance(values, str):
            raise TypeError("values must be an iterable of strings, not one string")
        gone = tuple(values)
        _, change_id = await self._converge(
            zone_id, name, "TXT", lambda cur: plan_txt_delete(zone_id, name, gone, cur)
        )
        if change_id is None:
            return False
        log.info("dns_txt_deleted", name=name, count=len(gone), change_id=change_id)
        return True


@asynccontextmanager
async def open_route53(
    session: Any,
    *,
    config: Config | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    poll_interval: float = 3.0,
    insync_timeout: float = 300.0,
    give_up_after: float = 300.0,
) -> AsyncIterator[Route53Records]:
    """A :class:`Route53Records` on a client of the aioboto3 ``session``."""
    client: Route53Client
    async with session.client("route53", config=config or aws.client_config()) as client:
        yield Route53Records(
            client,
            sleep=sleep,
            clock=clock,
            poll_interval=poll_interval,
            insync_timeout=insync_timeout,
            give_up_after=give_up_after,
        )
