"""Metering's two kinds of state, and how they are written to and rebuilt from changelogs.

* the dedupe set — per impressions partition: the impression ids already seen, by event day so
  ids older than the dedupe horizon can be forgotten; on disk in the worker
  (``tally_metering.store.DiskDedupeStore``), in memory here (``DedupeStore``, for tests and
  benches), and the changelog codec. Changelog: one record per (batch, event day) with the new
  ids, in the dedupe topic's partition of the same number.
* ``TotalsStore`` — per deltas partition (one owner per advertiser): the usage ledger of every
  (advertiser, campaign) hashed to that partition, the totals of every (contract, period) of
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeAlias, TypeVar, cast

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
        # the billing library builds the record (it imports nothing of tally_streams)
        return _codec("metering_ledger_day", LedgerDayRecord).encode(cast(LedgerDayRecord, entry.to_record()))
    if isinstance(entry, PeriodState):
        return _codec("metering_period_state", PeriodStateRecord).encode(entry.to_record())
    if isinstance(entry, ContractState):
        return _codec("metering_contract_state", ContractStateRecord).encode(entry.to_record())
    return _codec("metering_conversion_state", ConversionStateRecord).encode(entry.to_record())


class TotalsStore:
    """Stage-two state of one deltas partition."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.periods: dict[tuple[str, str], PeriodState] = {}
        self.contracts: dict[str, ContractState] = {}
        self.conversions: dict[tuple[str, str], ConversionState] = {}
        #: the usage ledger: (advertiser, campaign) -> UTC day -> usage
        self.usage: dict[tuple[str, str], dict[int, UsageDay]] = {}
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

    def usage_day(self, advertiser_id: str, campaign_id: str, day: int) -> UsageDay:
        days = self.usage.setdefault((advertiser_id, campaign_id), {})
        u = days.get(day)
        if u is None:
            u = days[day] = UsageDay(advertiser_id, campaign_id, day)
        return u

    def usage_of(self, advertiser_id: str) -> list[UsageDay]:
        """Every ledger day of one advertiser, by campaign and day."""
        return [u for (a, _), days in sorted(self.usage.items()) if a == advertiser_id
                for _, u in sorted(days.items())]

    def forget_usage_before(self, day: int) -> int:
        """Drop ledger days older than ``day`` (past the re-rating horizon); tombstones their keys."""
        n = 0
        for days in self.usage.values():
            for old in [d for d in days if d < day]:
                self.dirty[days.pop(old).key] = None
                n += 1
        return n

    def ledger_cells(self) -> int:
        return sum(len(u.counts) for days in self.usage.values() for u in days.values())

    def mark(self, entry: _Entry) -> None:
        self.dirty[entry.key] = entry

    def decide_ivt_report(self, report_id: str, status: IvtDecisionStatus) -> None:
        self.ivt_reports[report_id] = status
        self.dirty[f"ir{SEP}{report_id}"] = _codec("metering_ivt_decision", IvtDecisionRecord).encode(
            {"report_id": report_id, "status": status})

    def take_dirty(self) -> dict[str, bytes | None]:
        """The changelog records of everything changed since the last call, each encoded once."""
        d, self.dirty = self.dirty, {}
        return {k: _encode(v) for k, v in d.items()}

    def apply_changelog(self, key: str, value: bytes | None) -> None:
        kind = key.split(SEP, 1)[0]
        if value is None:  # a tombstone: only ledger days are ever forgotten
            if kind == "ug":
                _, adv, campaign, day = key.split(SEP)
                self.usage.get((adv, campaign), {}).pop(int(day), None)
            return
        # Avro (schemas/metering_*); a JSON object from a worker before the state had its schemas
        legacy = value[:1] == b"{"
        if kind == "ug":
            u = UsageDay.from_json(json.loads(value)) if legacy else UsageDay.from_record(
                _codec("metering_ledger_day", LedgerDayRecord).decode(value))
            self.usage.setdefault((u.advertiser_id, u.campaign_id), {})[u.day] = u
        elif kind == "ir":
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
