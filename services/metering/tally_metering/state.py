"""Metering's two kinds of state, and how they are written to and rebuilt from changelogs.

* ``DedupeStore`` — per impressions partition: the impression ids already seen, bucketed by
  event day so ids older than the dedupe horizon can be forgotten. Changelog: one record per
  (batch, event day) with the new ids, in the dedupe topic's partition of the same number.
* ``TotalsStore`` — per deltas partition: the totals of every (contract, period) whose
  contract hashes to that partition, each contract's once-only alert marks, and every CPA
  conversion seen (dedupe by conversion_id, and what a later reversal must give back).
  Changelog: a compacted topic, one key per entry, in the partition of the same number.

Both are written in the same Kafka transaction as the outputs and the consumed offsets, so a
store rebuilt from its changelog always matches the committed input position exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .domain import SEP, PeriodTotals

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

    @property
    def key(self) -> str:
        return f"cp{SEP}{self.contract_id}{SEP}{self.period_key}"

    def to_json(self) -> dict[str, Any]:
        return {"c": self.contract_id, "p": self.period_key, "t": self.totals.to_json(), "closed": self.closed,
                "closed_at_us": self.closed_at_us, "alerts": sorted(self.alerts)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PeriodState:
        return cls(d["c"], d["p"], PeriodTotals.from_json(d["t"]), bool(d["closed"]), d.get("closed_at_us"),
                   set(d.get("alerts", [])))


@dataclass
class ContractState:
    contract_id: str
    #: thresholds of the total budget cap already alerted (contract-wide, once each)
    total_alerts: set[int] = field(default_factory=set)

    @property
    def key(self) -> str:
        return f"ct{SEP}{self.contract_id}"

    def to_json(self) -> dict[str, Any]:
        return {"c": self.contract_id, "total_alerts": sorted(self.total_alerts)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContractState:
        return cls(d["c"], {int(x) for x in d.get("total_alerts", [])})


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


class TotalsStore:
    """Stage-two state of one deltas partition."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.periods: dict[tuple[str, str], PeriodState] = {}
        self.contracts: dict[str, ContractState] = {}
        self.conversions: dict[tuple[str, str], ConversionState] = {}
        #: changelog keys written in the open transaction
        self.dirty: dict[str, bytes] = {}

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

    def mark(self, entry: PeriodState | ContractState | ConversionState) -> None:
        self.dirty[entry.key] = json.dumps(entry.to_json(), separators=(",", ":")).encode()

    def take_dirty(self) -> dict[str, bytes]:
        d, self.dirty = self.dirty, {}
        return d

    def apply_changelog(self, key: str, value: bytes) -> None:
        d = json.loads(value)
        kind = key.split(SEP, 1)[0]
        if kind == "cp":
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
