"""Metering's two kinds of state, and how they are written to and rebuilt from changelogs.

* ``DedupeStore`` — per impressions partition: the impression ids already seen, bucketed by
  event day so ids older than the dedupe horizon can be forgotten. Changelog: one record per
  (batch, event day) with the new ids, in the dedupe topic's partition of the same number.
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
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeAlias

from tally_streams.avro import AvroCodec, SchemaCatalog

from .domain import SEP, Line, PeriodTotals, UsageDay

DAY_US = 86_400_000_000


class DedupeStore:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.by_day: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return len(self.seen)

    def add(self, day: int, ids: list[str]) -> None:
        self.seen.update(ids)
        self.by_day.setdefault(day, []).extend(ids)

    def forget_before(self, day: int) -> None:
        for d in [d for d in self.by_day if d < day]:
            self.seen.difference_update(self.by_day.pop(d))

    @staticmethod
    def encode(ids: list[str]) -> bytes:
        return "\n".join(ids).encode()

    @staticmethod
    def decode(value: bytes) -> list[str]:
        return value.decode().split("\n") if value else []


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
        billed = None
        if d.get("billed") is not None:
            billed = [Line(t, int(v), pp, None, int(q), "per_thousand", Decimal(up), Decimal(a))
                      for t, v, pp, q, up, a in d["billed"]]
        return cls(d["c"], d["p"], PeriodTotals.from_json(d["t"]), bool(d["closed"]), d.get("closed_at_us"),
                   set(d.get("alerts", [])), billed)


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
        rev = d.get("rev")
        return cls(d["c"], {int(x) for x in d.get("total_alerts", [])}, int(rev) if rev is not None else None)


@dataclass
class ConversionState:
    """A CPA conversion (or reversal) already counted."""

    contract_id: str
    conversion_id: str
    kind: str
    period_key: str
    version: int
    event_type: str
    partner_id: str | None
    advertiser_amount: Decimal
    partner_payout: Decimal
    #: for an original conversion: exact amounts given back so far by reversals
    reversed_amount: Decimal = Decimal(0)
    reversed_payout: Decimal = Decimal(0)
    fully_reversed: bool = False

    @property
    def key(self) -> str:
        return f"cv{SEP}{self.contract_id}{SEP}{self.conversion_id}"

    def to_json(self) -> dict[str, Any]:
        return {"c": self.contract_id, "id": self.conversion_id, "kind": self.kind, "p": self.period_key,
                "v": self.version, "et": self.event_type, "partner": self.partner_id,
                "adv": str(self.advertiser_amount), "pay": str(self.partner_payout),
                "radv": str(self.reversed_amount), "rpay": str(self.reversed_payout), "full": self.fully_reversed}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConversionState:
        return cls(d["c"], d["id"], d["kind"], d["p"], int(d["v"]), d["et"], d.get("partner"), Decimal(d["adv"]),
                   Decimal(d["pay"]), Decimal(d["radv"]), Decimal(d["rpay"]), bool(d["full"]))


_Entry: TypeAlias = "PeriodState | ContractState | ConversionState | UsageDay"


@functools.cache
def _ledger_codec() -> AvroCodec:
    return SchemaCatalog.load().codec("metering_ledger_day")


def _encode(entry: _Entry | bytes | None) -> bytes | None:
    """A changelog value: ledger days in Avro (``schemas/metering_ledger_day``, the hot path: 96
    counts per class as packed bytes), the other entries as compact JSON."""
    if entry is None or isinstance(entry, bytes):
        return entry
    if isinstance(entry, UsageDay):
        return _ledger_codec().encode(entry.to_record())
    return json.dumps(entry.to_json(), separators=(",", ":")).encode()


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

    def decide_ivt_report(self, report_id: str, status: str) -> None:
        self.ivt_reports[report_id] = status
        self.dirty[f"ir{SEP}{report_id}"] = json.dumps({"id": report_id, "status": status}).encode()

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
        if kind == "ug":
            # Avro metering_ledger_day; a JSON object from a worker before the ledger had its schema
            u = UsageDay.from_json(json.loads(value)) if value[:1] == b"{" else UsageDay.from_record(_ledger_codec().decode(value))
            self.usage.setdefault((u.advertiser_id, u.campaign_id), {})[u.day] = u
            return
        d = json.loads(value)
        if kind == "ir":
            self.ivt_reports[d["id"]] = d["status"]
        elif kind == "cp":
            ps = PeriodState.from_json(d)
            self.periods[(ps.contract_id, ps.period_key)] = ps
        elif kind == "ct":
            cs = ContractState.from_json(d)
            self.contracts[cs.contract_id] = cs
        elif kind == "cv":
            cv = ConversionState.from_json(d)
            self.conversions[(cv.contract_id, cv.conversion_id)] = cv
        else:
            raise ValueError(f"unknown changelog key {key!r}")
