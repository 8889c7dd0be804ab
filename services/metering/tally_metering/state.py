"""Metering's two kinds of state, and how they are written to and rebuilt from changelogs.

* the dedupe set — per impressions partition: the impression ids already seen, by event day so
  ids older than the dedupe horizon can be forgotten; on disk in the worker
  (``tally_metering.store.DiskDedupeStore``), in memory here (``DedupeStore``, for tests and
  benches), and the changelog codec. Changelog: one record per (batch, event day) with the new
  ids, in the dedupe topic's partition of the same number.
* ``TotalsStore`` — per deltas partition (one owner per advertiser): the usage ledger of every
  (advertiser, campaign) hashed to that partition (a ``Ledger``: on disk in the worker,
  ``tally_metering.store.DiskLedgerStore``; in memory here, ``MemoryLedger``, for tests and
  benches), the totals of every (contract, period) of
  those advertisers with what a closed period has billed so far, each contract's once-only
  alert marks and the terms revision its totals were derived under, and every CPA conversion
  seen (dedupe by conversion_id, and what a later reversal must give back). Changelog: a
  compacted topic, one key per entry, in the partition of the same number; a forgotten ledger
  day is a tombstone.

Both are written in the same Kafka transaction as the outputs and the consumed offsets, so a
store rebuilt from its changelog always matches the committed input position exactly.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeAlias, TypeVar, cast

from tally_streams.avro import MAGIC, AvroCodec, SchemaCatalog
from tally_streams.records import (
    ContractStateRecord,
    ConversionStateKind,
    ConversionStateRecord,
    DedupeIdsRecord,
    IvtDecisionRecord,
    IvtDecisionStatus,
    LedgerDayRecord,
    PeriodStateRecord,
)

from .domain import SEP, Line, PeriodTotals, UsageDay

DAY_US = 86_400_000_000


class DedupeStore:
    """The dedupe set in memory, with the interface of the worker's on-disk store
    (``tally_metering.store.DiskDedupeStore``): for tests and benches of stage one without a disk."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.by_day: dict[int, list[str]] = {}
        self.checkpoint: int | None = None

    def __len__(self) -> int:
        return len(self.seen)

    def seen_among(self, ids: list[str]) -> set[str]:
        return self.seen.intersection(ids)

    def add(self, day: int, ids: list[str]) -> None:
        self.seen.update(ids)
        self.by_day.setdefault(day, []).extend(ids)

    def add_committed(self, days: dict[int, list[str]], checkpoint: int) -> None:
        for day, ids in days.items():
            self.add(day, ids)
        self.checkpoint = checkpoint

    def add_restored(self, day: int, ids: list[str], changelog_offset: int) -> None:
        self.add(day, ids)

    def set_checkpoint(self, checkpoint: int) -> None:
        self.checkpoint = checkpoint

    def wipe(self) -> None:
        self.seen, self.by_day, self.checkpoint = set(), {}, None

    def memory(self) -> tuple[int, int]:
        """Not bounded: (0, 0), as no cache is configured."""
        return 0, 0

    def close(self) -> None:
        """Nothing to release (the on-disk store closes its database)."""

    def forget_before(self, day: int) -> None:
        for d in [d for d in self.by_day if d < day]:
            self.seen.difference_update(self.by_day.pop(d))

    @staticmethod
    def encode(ids: list[str]) -> bytes:
        """A dedupe changelog value: ``schemas/metering_dedupe_ids`` (the key is the event day)."""
        return _codec("metering_dedupe_ids", DedupeIdsRecord).encode({"impression_ids": ids})

    @staticmethod
    def decode(value: bytes | None) -> list[str]:
        if not value:
            return []
        if value[:2] != MAGIC:  # newline-joined ids, from a worker before the changelog had its schema
            return value.decode().split("\n")
        return list(_codec("metering_dedupe_ids", DedupeIdsRecord).decode(value)["impression_ids"])


@dataclass
class PeriodState:
    contract_id: str
    period_key: str
    totals: PeriodTotals = field(default_factory=PeriodTotals)
    closed: bool = False
    closed_at_us: int | None = None
    #: "per_period:50", ... already emitted for this period
    alerts: set[str] = field(default_factory=set)
    #: closed periods: the CPM lines billed so far (the close's lines plus every adjustment since),
    #: which the next re-rating is diffed against
    billed: list[Line] | None = None

    @property
    def key(self) -> str:
        return f"cp{SEP}{self.contract_id}{SEP}{self.period_key}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"c": self.contract_id, "p": self.period_key, "t": self.totals.to_json(),
                               "closed": self.closed, "closed_at_us": self.closed_at_us, "alerts": sorted(self.alerts)}
        if self.billed is not None:
            out["billed"] = [[ln.line_type, ln.contract_version, ln.price_point, ln.quantity, str(ln.unit_price),
                              str(ln.amount_exact)] for ln in self.billed]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PeriodState:
        """A changelog value of a worker before the state had its schema."""
        billed = None
        if d.get("billed") is not None:
            billed = [Line(t, int(v), pp, None, int(q), "per_thousand", Decimal(up), Decimal(a))
                      for t, v, pp, q, up, a in d["billed"]]
        return cls(d["c"], d["p"], PeriodTotals.from_json(d["t"]), bool(d["closed"]), d.get("closed_at_us"),
                   set(d.get("alerts", [])), billed)

    def to_record(self) -> PeriodStateRecord:
        """The ``metering_period_state`` record (schemas/)."""
        t = self.totals
        return {
            "contract_id": self.contract_id, "period_key": self.period_key,
            "totals": {
                "counts": t.counts,
                "in_scope_by_version": [{"version": v, "impressions": n} for v, n in sorted(t.in_scope_by_version.items())],
                "cpa": {k: {"quantity": q, "amount_exact": str(a)} for k, (q, a) in t.cpa.items()},
                "payouts": {k: {"quantity": q, "amount_exact": str(a)} for k, (q, a) in t.payouts.items()},
                "offsets": t.offsets, "max_event_us": t.max_event_us,
            },
            "closed": self.closed, "closed_at_us": self.closed_at_us, "alerts": sorted(self.alerts),
            "billed": None if self.billed is None else [
                {"line_type": ln.line_type, "contract_version": ln.contract_version, "price_point": ln.price_point,
                 "quantity": ln.quantity, "unit_price": str(ln.unit_price), "amount_exact": str(ln.amount_exact)}
                for ln in self.billed],
        }

    @classmethod
    def from_record(cls, r: PeriodStateRecord) -> PeriodState:
        t = r["totals"]
        totals = PeriodTotals(
            counts=dict(t["counts"]),
            in_scope_by_version={e["version"]: e["impressions"] for e in t["in_scope_by_version"]},
            cpa={k: (c["quantity"], Decimal(c["amount_exact"])) for k, c in t["cpa"].items()},
            payouts={k: (c["quantity"], Decimal(c["amount_exact"])) for k, c in t["payouts"].items()},
            offsets=dict(t["offsets"]), max_event_us=t["max_event_us"],
        )
        billed = None if r["billed"] is None else [
            Line(b["line_type"], b["contract_version"], b["price_point"], None, b["quantity"], "per_thousand",
                 Decimal(b["unit_price"]), Decimal(b["amount_exact"])) for b in r["billed"]]
        return cls(r["contract_id"], r["period_key"], totals, r["closed"], r["closed_at_us"], set(r["alerts"]), billed)


@dataclass
class ContractState:
    contract_id: str
    #: thresholds of the total budget cap already alerted (contract-wide, once each)
    total_alerts: set[int] = field(default_factory=set)
    #: the contracts.terms revision the contract's period totals were last derived under
    revision: int | None = None

    @property
    def key(self) -> str:
        return f"ct{SEP}{self.contract_id}"

    def to_json(self) -> dict[str, Any]:
        return {"c": self.contract_id, "total_alerts": sorted(self.total_alerts), "rev": self.revision}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContractState:
        """A changelog value of a worker before the state had its schema."""
        rev = d.get("rev")
        return cls(d["c"], {int(x) for x in d.get("total_alerts", [])}, int(rev) if rev is not None else None)

    def to_record(self) -> ContractStateRecord:
        """The ``metering_contract_state`` record (schemas/)."""
        return {"contract_id": self.contract_id, "total_alerts": sorted(self.total_alerts), "revision": self.revision}

    @classmethod
    def from_record(cls, r: ContractStateRecord) -> ContractState:
        return cls(r["contract_id"], set(r["total_alerts"]), r["revision"])


@dataclass
class ConversionState:
    """A CPA conversion (or reversal) already counted: what attribution decided, and what it
    contributes to its period now (``version``/amounts: re-priced when the contract's terms change).

    The decided facts (``tier``, ``order_value``, ``completes``) come from attributed_conversion
    v2; a v1 record has none, so it keeps the price it was decided at."""

    contract_id: str
    conversion_id: str
    kind: ConversionStateKind  # conversion or reversal
    period_key: str
    #: what it contributes now: the version whose terms price it, and its exact amounts
    version: int
    event_type: str
    partner_id: str | None
    advertiser_amount: Decimal
    partner_payout: Decimal
    #: for an original conversion: exact amounts given back so far by reversals (v1 inference)
    reversed_amount: Decimal = Decimal(0)
    reversed_payout: Decimal = Decimal(0)
    fully_reversed: bool = False
    #: net conversions it contributes: 1 for a conversion, -1 for the reversal that completes one
    quantity: int = 1
    #: as decided by attribution (what it keeps when the terms can no longer price it)
    decided_version: int = 0
    decided_amount: Decimal = Decimal(0)
    decided_payout: Decimal = Decimal(0)
    #: its own event time (µs)
    event_us: int = 0
    #: conversion: its order value; reversal: the order value it refunded
    order_value: Decimal | None = None
    #: conversion: tier position (None: a v1 record, not re-priceable)
    tier: int | None = None
    #: reversal: the conversion it reverses, and whether it completes it (None: v1)
    original_id: str | None = None
    completes: bool | None = None

    @property
    def key(self) -> str:
        return f"cv{SEP}{self.contract_id}{SEP}{self.conversion_id}"

    def to_json(self) -> dict[str, Any]:
        return {"c": self.contract_id, "id": self.conversion_id, "kind": self.kind, "p": self.period_key,
                "v": self.version, "et": self.event_type, "partner": self.partner_id,
                "adv": str(self.advertiser_amount), "pay": str(self.partner_payout),
                "radv": str(self.reversed_amount), "rpay": str(self.reversed_payout), "full": self.fully_reversed,
                "q": self.quantity, "dv": self.decided_version, "dadv": str(self.decided_amount),
                "dpay": str(self.decided_payout), "t": self.event_us,
                "ov": None if self.order_value is None else str(self.order_value), "tier": self.tier,
                "of": self.original_id, "done": self.completes}

    def to_record(self) -> ConversionStateRecord:
        """The ``metering_conversion_state`` record (schemas/)."""
        return {"contract_id": self.contract_id, "conversion_id": self.conversion_id, "kind": self.kind,
                "period_key": self.period_key, "version": self.version, "event_type": self.event_type,
                "partner_id": self.partner_id, "advertiser_amount": str(self.advertiser_amount),
                "partner_payout": str(self.partner_payout), "reversed_amount": str(self.reversed_amount),
                "reversed_payout": str(self.reversed_payout), "fully_reversed": self.fully_reversed,
                "quantity": self.quantity, "decided_version": self.decided_version,
                "decided_amount": str(self.decided_amount), "decided_payout": str(self.decided_payout),
                "event_us": self.event_us, "order_value": None if self.order_value is None else str(self.order_value),
                "tier_position": self.tier, "original_conversion_id": self.original_id, "completes": self.completes}

    @classmethod
    def from_record(cls, r: ConversionStateRecord) -> ConversionState:
        ov = r["order_value"]
        return cls(r["contract_id"], r["conversion_id"], r["kind"], r["period_key"], int(r["version"]), r["event_type"],
                   r["partner_id"], Decimal(r["advertiser_amount"]), Decimal(r["partner_payout"]),
                   Decimal(r["reversed_amount"]), Decimal(r["reversed_payout"]), bool(r["fully_reversed"]),
                   quantity=int(r["quantity"]), decided_version=int(r["decided_version"]),
                   decided_amount=Decimal(r["decided_amount"]), decided_payout=Decimal(r["decided_payout"]),
                   event_us=int(r["event_us"]), order_value=None if ov is None else Decimal(ov),
                   tier=r["tier_position"], original_id=r["original_conversion_id"], completes=r["completes"])

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConversionState:
        """A changelog value of a worker before the state had its schema."""
        ov = d.get("ov")
        return cls(d["c"], d["id"], d["kind"], d["p"], int(d["v"]), d["et"], d.get("partner"), Decimal(d["adv"]),
                   Decimal(d["pay"]), Decimal(d["radv"]), Decimal(d["rpay"]), bool(d["full"]),
                   quantity=int(d.get("q", 1 if d["kind"] == "conversion" else 0)),
                   decided_version=int(d.get("dv", d["v"])), decided_amount=Decimal(d.get("dadv", d["adv"])),
                   decided_payout=Decimal(d.get("dpay", d["pay"])), event_us=int(d.get("t", 0)),
                   order_value=None if ov is None else Decimal(ov), tier=d.get("tier"), original_id=d.get("of"),
                   completes=d.get("done"))


_Entry: TypeAlias = "PeriodState | ContractState | ConversionState | UsageDay"


R = TypeVar("R", bound=Mapping[str, Any])


@functools.cache
def _cached_codec(name: str, record: type[Any]) -> AvroCodec[Any]:
    return SchemaCatalog.load().codec(name, record=record)


def _codec(name: str, record: type[R]) -> AvroCodec[R]:
    """The catalog's codec of ``name``, typed with its record (``tally_streams.records``), loaded once."""
    return _cached_codec(name, record)


def _encode(entry: _Entry | bytes | None) -> bytes | None:
    """A changelog value in Avro: ledger days (``schemas/metering_ledger_day``, the hot path: 96
    counts per class as packed bytes), period, contract and conversion state
    (``metering_period_state``, ``metering_contract_state``, ``metering_conversion_state``)."""
    if entry is None or isinstance(entry, bytes):
        return entry
    if isinstance(entry, UsageDay):
        return encode_usage_day(entry)
    if isinstance(entry, PeriodState):
        return _codec("metering_period_state", PeriodStateRecord).encode(entry.to_record())
    if isinstance(entry, ContractState):
        return _codec("metering_contract_state", ContractStateRecord).encode(entry.to_record())
    return _codec("metering_conversion_state", ConversionStateRecord).encode(entry.to_record())

#: the changelog key prefix of a ledger day (``UsageDay.key``)
LEDGER_PREFIX = f"ug{SEP}"


def encode_usage_day(u: UsageDay) -> bytes:
    """A ledger day's changelog value (``schemas/metering_ledger_day``), also its value on disk."""
    # the billing library builds the record (it imports nothing of tally_streams)
    return _codec("metering_ledger_day", LedgerDayRecord).encode(cast(LedgerDayRecord, u.to_record()))


def decode_usage_day(value: bytes) -> UsageDay:
    """A ledger day from its changelog value: Avro, or JSON from a worker before the state had its schemas."""
    if value[:1] == b"{":
        return UsageDay.from_json(json.loads(value))
    return UsageDay.from_record(_codec("metering_ledger_day", LedgerDayRecord).decode(value))


def ledger_key(key: str) -> tuple[str, str, int]:
    """(advertiser, campaign, day) of a ledger day's changelog key ``ug<SEP>adv<SEP>campaign<SEP>day``."""
    _, adv, campaign, day = key.split(SEP)
    return adv, campaign, int(day)


class Ledger(Protocol):
    """The usage ledger of one deltas partition: (advertiser, campaign, UTC day) -> ``UsageDay``.

    Written only by stage two inside a transaction (``day`` hands out the entry to change, and
    ``TotalsStore.take_dirty`` ``stage``s its encoded changelog value); an on-disk ledger makes
    the staged changes durable only after the transaction committed (``write_committed``)."""

    #: the next deltas offset the ledger reflects (on disk: the store's checkpoint)
    checkpoint: int | None

    def day(self, advertiser_id: str, campaign_id: str, day: int) -> UsageDay:
        """The entry to change (created empty when absent)."""
        ...

    def get(self, advertiser_id: str, campaign_id: str, day: int) -> UsageDay | None:
        """The entry to read, if any."""
        ...

    def of_advertiser(self, advertiser_id: str) -> Iterable[UsageDay]:
        """Every day of one advertiser, by campaign and day."""
        ...

    def of_campaign(self, advertiser_id: str, campaign_id: str) -> Iterable[UsageDay]:
        """Every day of one (advertiser, campaign), by day."""
        ...

    def forget_before(self, day: int) -> list[str]:
        """Drop the days older than ``day``; the changelog keys of those dropped."""
        ...

    def cells(self) -> int:
        """(day, ledger class) rows held."""
        ...

    def stage(self, u: UsageDay, value: bytes) -> None:
        """``u`` changed in the open transaction; ``value`` is its changelog value."""
        ...

    def restored(self, key: str, value: bytes | None) -> None:
        """One ledger record of the changelog, while rebuilding (None: a tombstone)."""
        ...

    def set_checkpoint(self, checkpoint: int) -> None:
        """The end of a rebuild: everything restored is kept, reflecting ``checkpoint``."""
        ...

    def write_committed(self, checkpoint: int | None) -> None:
        """After the transaction committed: its staged changes, with the committed offset
        (None: a change the offsets cannot vouch for, so the ledger is not trusted again)."""
        ...

    def pending(self) -> bool:
        """Whether changes wait for ``write_committed``."""
        ...

    def memory(self) -> tuple[int, int]:
        """(bytes in use, bound) of its caches."""
        ...

    def close(self) -> None:
        ...


class MemoryLedger:
    """The whole ledger in a dict (tests and benches; the worker keeps it on disk)."""

    def __init__(self) -> None:
        #: (advertiser, campaign) -> UTC day -> usage
        self.usage: dict[tuple[str, str], dict[int, UsageDay]] = {}
        self.checkpoint: int | None = None
        self._forgot_before: int | None = None

    def day(self, advertiser_id: str, campaign_id: str, day: int) -> UsageDay:
        days = self.usage.setdefault((advertiser_id, campaign_id), {})
        u = days.get(day)
        if u is None:
            u = days[day] = UsageDay(advertiser_id, campaign_id, day)
        return u

    def get(self, advertiser_id: str, campaign_id: str, day: int) -> UsageDay | None:
        return self.usage.get((advertiser_id, campaign_id), {}).get(day)

    def of_advertiser(self, advertiser_id: str) -> list[UsageDay]:
        return [u for (a, _), days in sorted(self.usage.items()) if a == advertiser_id
                for _, u in sorted(days.items())]

    def of_campaign(self, advertiser_id: str, campaign_id: str) -> list[UsageDay]:
        return [u for _, u in sorted(self.usage.get((advertiser_id, campaign_id), {}).items())]

    def forget_before(self, day: int) -> list[str]:
        if self._forgot_before is not None and day <= self._forgot_before:
            return []  # nothing older than the last cutoff is ever added (the dedupe horizon is shorter)
        self._forgot_before = day
        keys = []
        for days in self.usage.values():
            for old in [d for d in days if d < day]:
                keys.append(days.pop(old).key)
        return keys

    def cells(self) -> int:
        return sum(len(u.counts) for days in self.usage.values() for u in days.values())

    def stage(self, u: UsageDay, value: bytes) -> None:
        """Nothing to write: the dict is the ledger."""

    def restored(self, key: str, value: bytes | None) -> None:
        if value is None:
            adv, campaign, day = ledger_key(key)
            self.usage.get((adv, campaign), {}).pop(day, None)
            return
        u = decode_usage_day(value)
        self.usage.setdefault((u.advertiser_id, u.campaign_id), {})[u.day] = u

    def set_checkpoint(self, checkpoint: int) -> None:
        self.checkpoint = checkpoint

    def write_committed(self, checkpoint: int | None) -> None:
        self.checkpoint = checkpoint

    def pending(self) -> bool:
        return False

    def memory(self) -> tuple[int, int]:
        """Not bounded: (0, 0)."""
        return 0, 0

    def close(self) -> None:
        """Nothing to release."""


class _CampaignDays(Mapping[int, UsageDay]):
    """The days of one (advertiser, campaign), read through the ledger on demand."""

    def __init__(self, ledger: Ledger, advertiser_id: str, campaign_id: str) -> None:
        self._ledger, self._adv, self._campaign = ledger, advertiser_id, campaign_id

    def __getitem__(self, day: int) -> UsageDay:
        u = self._ledger.get(self._adv, self._campaign, day)
        if u is None:
            raise KeyError(day)
        return u

    def __iter__(self) -> Iterator[int]:
        return (u.day for u in self._ledger.of_campaign(self._adv, self._campaign))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class LedgerView(Mapping[tuple[str, str], Mapping[int, UsageDay]]):
    """A ledger as (advertiser, campaign) -> day -> usage, read on demand (what
    ``tally_billing.ledger.plan_ivt_credit`` takes); only lookups by key are cheap."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __getitem__(self, key: tuple[str, str]) -> Mapping[int, UsageDay]:
        return _CampaignDays(self._ledger, *key)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        raise TypeError("a ledger on disk is not iterated whole")

    def __len__(self) -> int:
        raise TypeError("a ledger on disk is not counted whole")


class TotalsStore:
    """Stage-two state of one deltas partition. The usage ledger is ``ledger`` (in memory unless
    one is given: the worker gives each partition its ``DiskLedgerStore``); the rest is in memory."""

    def __init__(self, partition: int, ledger: Ledger | None = None) -> None:
        self.partition = partition
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.periods: dict[tuple[str, str], PeriodState] = {}
        self.contracts: dict[str, ContractState] = {}
        self.conversions: dict[tuple[str, str], ConversionState] = {}
        #: IVT reports decided: report id -> "applied" | "refused" (a report id is decided once)
        self.ivt_reports: dict[str, str] = {}
        #: entries changed in the open transaction, by changelog key (None: a tombstone); encoded
        #: once, when the transaction's changelog records are taken, however often they changed
        self.dirty: dict[str, _Entry | bytes | None] = {}

    def period(self, contract_id: str, period_key: str) -> PeriodState:
        ps = self.periods.get((contract_id, period_key))
        if ps is None:
            ps = PeriodState(contract_id, period_key)
            self.periods[(contract_id, period_key)] = ps
        return ps

    def contract(self, contract_id: str) -> ContractState:
        cs = self.contracts.get(contract_id)
        if cs is None:
            cs = ContractState(contract_id)
            self.contracts[contract_id] = cs
        return cs

    def periods_of(self, contract_id: str) -> list[PeriodState]:
        return [ps for (c, _), ps in self.periods.items() if c == contract_id]

    @property
    def usage(self) -> Mapping[tuple[str, str], Mapping[int, UsageDay]]:
        """The ledger as (advertiser, campaign) -> UTC day -> usage (in memory: the dict itself)."""
        if isinstance(self.ledger, MemoryLedger):
            return self.ledger.usage
        return LedgerView(self.ledger)

    def usage_day(self, advertiser_id: str, campaign_id: str, day: int) -> UsageDay:
        """The ledger day to add to (``mark`` it once changed)."""
        return self.ledger.day(advertiser_id, campaign_id, day)

    def usage_of(self, advertiser_id: str) -> Iterable[UsageDay]:
        """Every ledger day of one advertiser, by campaign and day."""
        return self.ledger.of_advertiser(advertiser_id)

    def forget_usage_before(self, day: int) -> int:
        """Drop ledger days older than ``day`` (past the re-rating horizon); tombstones their keys."""
        keys = self.ledger.forget_before(day)
        for key in keys:
            self.dirty[key] = None
        return len(keys)

    def ledger_cells(self) -> int:
        return self.ledger.cells()

    def close(self) -> None:
        """Release the ledger (an on-disk one is closed and kept: trusted again if still current)."""
        self.ledger.close()

    def mark(self, entry: _Entry) -> None:
        self.dirty[entry.key] = entry

    def decide_ivt_report(self, report_id: str, status: IvtDecisionStatus) -> None:
        self.ivt_reports[report_id] = status
        self.dirty[f"ir{SEP}{report_id}"] = _codec("metering_ivt_decision", IvtDecisionRecord).encode(
            {"report_id": report_id, "status": status})

    def take_dirty(self) -> dict[str, bytes | None]:
        """The changelog records of everything changed since the last call, each encoded once."""
        d, self.dirty = self.dirty, {}
        out: dict[str, bytes | None] = {}
        for k, v in d.items():
            if isinstance(v, UsageDay):
                out[k] = value = encode_usage_day(v)
                self.ledger.stage(v, value)  # the same bytes go to the store after the commit
            else:
                out[k] = _encode(v)
        return out

    def apply_changelog(self, key: str, value: bytes | None) -> None:
        kind = key.split(SEP, 1)[0]
        if kind == "ug":
            self.ledger.restored(key, value)
            return
        if value is None:  # a tombstone: only ledger days are ever forgotten
            return
        # Avro (schemas/metering_*); a JSON object from a worker before the state had its schemas
        legacy = value[:1] == b"{"
        if kind == "ir":
            if legacy:
                d = json.loads(value)
                self.ivt_reports[d["id"]] = d["status"]
            else:
                r = _codec("metering_ivt_decision", IvtDecisionRecord).decode(value)
                self.ivt_reports[r["report_id"]] = r["status"]
        elif kind == "cp":
            ps = PeriodState.from_json(json.loads(value)) if legacy else PeriodState.from_record(
                _codec("metering_period_state", PeriodStateRecord).decode(value))
            self.periods[(ps.contract_id, ps.period_key)] = ps
        elif kind == "ct":
            cs = ContractState.from_json(json.loads(value)) if legacy else ContractState.from_record(
                _codec("metering_contract_state", ContractStateRecord).decode(value))
            self.contracts[cs.contract_id] = cs
        elif kind == "cv":
            cv = ConversionState.from_json(json.loads(value)) if legacy else ConversionState.from_record(
                _codec("metering_conversion_state", ConversionStateRecord).decode(value))
            self.conversions[(cv.contract_id, cv.conversion_id)] = cv
        else:
            raise ValueError(f"unknown changelog key {key!r}")
