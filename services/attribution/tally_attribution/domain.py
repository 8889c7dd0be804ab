"""The attribution decider: state bookkeeping around ``tally_billing.attribution.decide`` and
``tally_billing.cpa.reverse``. Pure: no Kafka, no clock of its own (``now`` is passed in).

The billing library owns the rules (window, touch model, minimum delay, dedupe, caps, tiers,
reversal amounts). This module owns what the library leaves to its caller: the contract book
built from ``contracts.terms``, the exposure index, the dedupe memory and the per-period cap
and tier counters, and the mapping of each decision to the output records.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tally_billing.attribution import (
    Attributed,
    Conversion,
    CpaContract,
    DedupeFacts,
    Exposure,
    PriorConversion,
    Rejected,
    RejectReason,
    UsageSnapshot,
    decide,
)
from tally_billing.cpa import (
    CpaUsage,
    LegAmount,
    PricedConversion,
    Reversal,
    ReversalOutcome,
    ReversalRefused,
    reverse,
)
from tally_billing.money import exact
from tally_billing.periods import period_containing
from tally_billing.terms import ContractType, Price, PriceKind
from tally_billing.usage import DAY_US, from_micros, to_micros
from tally_billing.versions import ContractVersion, InvalidVersions, versions_from_record

from .state import EXPOSURE_WIDTH, SEP, AttributionState, exposure_rows

log = logging.getLogger("tally.attribution.domain")

MICROS = 1_000_000
DEFAULT_LOOKBACK_DAYS = 7


#: scale of the Avro decimals on billing.attributed_conversions / conversion_outcomes
AMOUNT_SCALE = 12
AMOUNT_PRECISION = 38


def fits_amount_scale(amount: Decimal) -> bool:
    """True when ``amount`` is exactly representable as decimal(38, 12): an amount that is not
    is refused rather than rounded (rounding belongs to the invoice line only)."""
    t = amount.as_tuple()
    exponent = int(t.exponent)
    integer_digits = len(t.digits) + exponent
    return exponent >= -AMOUNT_SCALE and integer_digits <= AMOUNT_PRECISION - AMOUNT_SCALE




def _time_then_id(e: tuple[Any, ...]) -> tuple[int, str]:
    return e[1], e[0]


# --------------------------------------------------------------------------- contract book


@dataclass
class BookEntry:
    contract_id: str
    advertiser_id: str
    contract_type: str
    revision: int
    versions: tuple[ContractVersion, ...]
    campaigns: frozenset[str]


class ContractBook:
    """The latest picture of every contract from the compacted ``contracts.terms`` topic."""

    def __init__(self) -> None:
        self.entries: dict[str, BookEntry] = {}
        self._campaigns_any: dict[str, set[str]] = {}
        self._cpa_campaigns: set[str] = set()
        self._by_advertiser: dict[str, list[CpaContract]] = {}
        self.max_lookback_days = DEFAULT_LOOKBACK_DAYS
        self.max_household_window_days = 0

    def apply(self, record: Mapping[str, Any]) -> str | None:
        """Take one terms record; returns why it was ignored, or None when applied."""
        cid = str(record["contract_id"])
        held = self.entries.get(cid)
        if held is not None and int(record["revision"]) < held.revision:
            return f"revision {record['revision']} is older than the held {held.revision}"
        try:
            versions = versions_from_record(record)
        except InvalidVersions as exc:
            return str(exc)
        campaigns = frozenset(c for v in versions for c in v.terms.common.campaign_ids)
        self.entries[cid] = BookEntry(cid, str(record["advertiser_id"]), str(record["contract_type"]),
                                      int(record["revision"]), versions, campaigns)
        self._reindex()
        return None

    def _reindex(self) -> None:
        self._campaigns_any = {}
        self._cpa_campaigns = set()
        self._by_advertiser = {}
        lookback = DEFAULT_LOOKBACK_DAYS
        household = 0
        for e in self.entries.values():
            for c in e.campaigns:
                self._campaigns_any.setdefault(c, set()).add(e.contract_id)
            cpa_versions = tuple(v for v in e.versions if v.terms.contract_type is ContractType.CPA)
            if not cpa_versions:
                continue
            self._cpa_campaigns |= {c for v in cpa_versions for c in v.terms.common.campaign_ids}
            self._by_advertiser.setdefault(e.advertiser_id, []).append(CpaContract(e.contract_id, cpa_versions))
            for v in cpa_versions:
                cpa = v.terms.cpa
                assert cpa is not None
                days = [cpa.attribution.lookback_days, *(d for _, d in cpa.attribution.lookback_days_by_event_type),
                        *(o.lookback_days for o in cpa.partner_overrides if o.lookback_days is not None)]
                lookback = max(lookback, *days)
                household = max([household, *(d for _, d in cpa.dedupe.household_window_days_by_event_type)])
        self.max_lookback_days = lookback
        self.max_household_window_days = household

    def knows_campaign(self, campaign_id: str) -> bool:
        return campaign_id in self._campaigns_any

    def cpa_campaign(self, campaign_id: str) -> bool:
        return campaign_id in self._cpa_campaigns

    def cpa_contracts_of(self, advertiser_id: str) -> list[CpaContract]:
        return self._by_advertiser.get(advertiser_id, [])

    def version(self, contract_id: str, version: int) -> ContractVersion | None:
        e = self.entries.get(contract_id)
        if e is None:
            return None
        return next((v for v in e.versions if v.version == version), None)


# --------------------------------------------------------------------------- decisions


@dataclass
class DeadLetter:
    error_kind: str
    reason: str
    field: str | None = None


#: what became of one impression (the ``outcome`` label of ``tally_attribution_impressions_total``)
IMPRESSION_EXPOSURE = "exposure"  # indexed: valid traffic on a campaign some CPA contract covers
IMPRESSION_UNCOVERED = "uncovered"  # valid, but no CPA contract covers its campaign (yet): pre-contract window
IMPRESSION_DUPLICATE = "duplicate"  # an impression id already indexed: one exposure
IMPRESSION_INVALID_TRAFFIC = "invalid_traffic"  # ivt flagged: never drives a payout
IMPRESSION_DEAD_LETTER = "dead_letter"  # undecodable or unusable (future event time)


@dataclass(frozen=True)
class Indexed:
    outcome: str
    dead_letter: DeadLetter | None = None


#: the dead letter of an impression whose event time is beyond the clock skew allowance
FUTURE_IMPRESSION = DeadLetter("invalid", "event_time is in the future", "event_time")


@dataclass
class Decision:
    outcome: dict[str, Any]
    attributed: dict[str, Any] | None = None
    dead_letter: DeadLetter | None = None

    @property
    def reason(self) -> str | None:
        r = self.outcome.get("reason")
        return None if r is None else str(r)


@dataclass(frozen=True)
class Source:
    topic: str
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass
class Decider:
    book: ContractBook
    state: AttributionState
    max_exposures_per_household: int = 64
    max_future: timedelta = timedelta(minutes=5)
    dedupe_retention: timedelta = timedelta(days=400)
    late_allowance: timedelta = timedelta(days=1)
    precontract_window: timedelta = timedelta(days=7)
    stats: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------ exposure index

    def index_impression(self, imp: Mapping[str, Any], arrival: datetime) -> Indexed:
        """Add one impression to its household's exposures (or say why it is not one).

        A valid impression of a campaign no CPA contract covers yet is indexed too, for the
        pre-contract window: a contract published later (whose version was in force at the
        impression) attributes to it. Which campaigns are covered is read from the book at
        every trim, so such an exposure becomes an ordinary one the moment its contract arrives.
        """
        outcome = self.index_exposure(imp["impression_id"], to_micros(imp["event_time"]), imp["advertiser_id"],
                                      imp["campaign_id"], imp["partner_id"], imp["household_id"], imp["ivt"],
                                      to_micros(arrival))
        return Indexed(outcome, FUTURE_IMPRESSION if outcome == IMPRESSION_DEAD_LETTER else None)

    def index_exposure(self, impression_id: str, event_us: int, advertiser_id: str, campaign_id: str,
                       partner_id: str | None, household_id: str, ivt: str, arrival_us: int) -> str:
        """``index_impression`` on the fields the index keeps (the processor's compiled reader
        yields exactly these); returns the outcome (``IMPRESSION_DEAD_LETTER``: a future event
        time, dead-lettered as ``FUTURE_IMPRESSION``)."""
        if event_us > arrival_us + self._max_future_us:
            return IMPRESSION_DEAD_LETTER
        if ivt != "none":
            return IMPRESSION_INVALID_TRAFFIC  # invalid traffic never drives a payout
        covered = self.book.cpa_campaign(campaign_id)
        outcome = IMPRESSION_EXPOSURE if covered else IMPRESSION_UNCOVERED
        key = "x:" + household_id
        state = self.state
        before = state.exposures(key)
        if not before:
            # the common case, a household's first exposure: kept unless already beyond its horizon
            horizon_us = self.exposure_horizon_us() if covered else self._precontract_us
            if event_us >= arrival_us - horizon_us:
                state.put_exposures(key, (impression_id, event_us, sys.intern(advertiser_id), sys.intern(campaign_id),
                                          None if partner_id is None else sys.intern(partner_id)))
            return outcome
        if impression_id in before[0::EXPOSURE_WIDTH]:
            return IMPRESSION_DUPLICATE  # a retried or repeated beacon: one exposure
        held = exposure_rows(before)
        held.append((impression_id, event_us, sys.intern(advertiser_id), sys.intern(campaign_id),
                     None if partner_id is None else sys.intern(partner_id)))
        held.sort(key=_time_then_id)
        kept = self._kept(held, arrival_us)
        flat = tuple(x for e in kept for x in e)
        if flat == before:
            return outcome  # already beyond its horizon, nothing else to drop: no state change
        if flat:
            state.put_exposures(key, flat)
        else:
            state.delete(key)
        return outcome

    def _kept(self, held: list[tuple[Any, ...]], now_us: int) -> list[tuple[Any, ...]]:
        """The exposures of one household (sorted by time) still worth keeping at ``now_us``.

        Horizon: the longest lookback in force plus the late allowance for a campaign some CPA
        contract covers, the pre-contract window for one none covers yet. Bound: at most
        ``max_exposures_per_household``, newest kept; when over it, exposures of uncovered
        campaigns go before covered ones, so speculative exposures never push out payable ones.
        """
        covered = self.book.cpa_campaign
        covered_from = now_us - self.exposure_horizon_us()
        uncovered_from = now_us - self._precontract_us
        kept = [e for e in held if e[1] >= (covered_from if covered(e[3]) else uncovered_from)]
        excess = len(kept) - self.max_exposures_per_household
        if excess > 0:
            # stable sort: uncovered first, each oldest first
            gone = set(sorted(range(len(kept)), key=lambda i: covered(kept[i][3]))[:excess])
            kept = [e for i, e in enumerate(kept) if i not in gone]
        return kept

    def __post_init__(self) -> None:
        self._max_future_us = self.max_future // timedelta(microseconds=1)
        self._precontract_us = self.precontract_window // timedelta(microseconds=1)
        self._late_us = self.late_allowance // timedelta(microseconds=1)

    def exposure_horizon_us(self) -> int:
        return self.book.max_lookback_days * DAY_US + self._late_us

    def prune(self, now: datetime) -> int:
        """Drop exposures beyond their horizon (the longest lookback in force plus the late
        allowance; the pre-contract window for campaigns no CPA contract covers yet) and dedupe
        memory older than its retention. Returns the number of keys removed or shrunk."""
        now_us = to_micros(now)
        forget = now_us - self.dedupe_retention // timedelta(microseconds=1)
        household_horizon = now_us - timedelta(days=self.book.max_household_window_days) // timedelta(microseconds=1)
        changed = 0
        for key, value in list(self.state.kv.items()):
            prefix = key[:2]
            if prefix == "x:":
                kept = self._kept(exposure_rows(value), now_us)
                if len(kept) * EXPOSURE_WIDTH != len(value):
                    changed += 1
                    if kept:
                        self.state.put_exposures(key, tuple(x for e in kept for x in e))
                    else:
                        self.state.delete(key)
            elif prefix == "h:":
                kept = [p for p in value if p[2] >= household_horizon]
                if len(kept) != len(value):
                    changed += 1
                    self.state.put(key, kept) if kept else self.state.delete(key)
            elif prefix == "c:" and value["t"] < forget:
                changed += 1
                self.state.delete(key)
            elif prefix == "o:" and value[1] < forget:
                changed += 1
                self.state.delete(key)
        return changed

    # ------------------------------------------------------------ conversions

    def decide(self, conv: Mapping[str, Any], src: Source, arrival: datetime, now: datetime) -> Decision:
        """The one outcome of one conversion record (and the state changes it implies)."""
        problem = self._invalid(conv, arrival)
        if problem is not None:
            field_name, reason = problem
            self._remember_rejected(conv)
            return Decision(
                self._outcome(conv, src, now, reason=RejectReason.INVALID, detail=f"{field_name}: {reason}"),
                dead_letter=DeadLetter("invalid", reason, field_name),
            )
        if conv["kind"] == "reversal":
            return self._reverse(conv, src, now)
        return self._attribute(conv, src, now)

    def _invalid(self, conv: Mapping[str, Any], arrival: datetime) -> tuple[str, str] | None:
        if conv["event_time"] > arrival + self.max_future:
            return "event_time", "is in the future"
        for name in ("conversion_id", "advertiser_id", "household_id", "event_type"):
            if not str(conv[name]).strip():
                return name, "must not be empty"
        if conv["value"] is not None and conv["value"] < 0:
            return "value", "must be ≥ 0"
        if conv["value"] is not None and conv["currency"] is None:
            return "currency", "is required when value is given"
        if conv["kind"] == "reversal" and not conv.get("reverses_conversion_id"):
            return "reverses_conversion_id", "is required for a reversal"
        if conv["kind"] == "conversion" and conv.get("reverses_conversion_id"):
            return "reverses_conversion_id", "only a reversal references an original conversion"
        if conv.get("reversal_amount") is not None and conv["reversal_amount"] <= 0:
            return "reversal_amount", "must be > 0"
        return None

    def decided_elsewhere(self, conv: Mapping[str, Any]) -> None:
        """Another shard decides this conversion (its advertiser's): only its id is remembered,
        in its place in the decision order, since a conversion id is counted once across
        advertisers (each decided one leaves its ``c:`` key, whatever its outcome)."""
        key = "c:" + conv["conversion_id"]
        if self.state.get(key) is None:
            self.state.put(key, {"s": "elsewhere", "t": to_micros(conv["event_time"]), "advertiser_id": conv["advertiser_id"]})

    def _remember_rejected(self, conv: Mapping[str, Any]) -> None:
        key = "c:" + conv["conversion_id"]
        if self.state.get(key) is None:
            self.state.put(key, {"s": "rejected", "t": to_micros(conv["event_time"]), "advertiser_id": conv["advertiser_id"]})

    def _usage(self, contracts: list[CpaContract], at: datetime) -> tuple[UsageSnapshot, dict[str, str]]:
        """Usage of every candidate contract in the period of ``at`` (in that contract's zone)."""
        contract_usage: dict[str, CpaUsage] = {}
        partner_usage: dict[tuple[str, str], CpaUsage] = {}
        event_counts: dict[tuple[str, str], int] = {}
        periods: dict[str, str] = {}
        for k in contracts:
            v = k.rating(at)[0]
            if v is None:
                continue
            period = period_containing(at, v.terms.common.time_zone, v.terms.common.billing_period).key
            periods[k.contract_id] = period
            u = self.state.get(f"u:{k.contract_id}{SEP}{period}")
            if u is not None:
                contract_usage[k.contract_id] = CpaUsage(int(u[0]), Decimal(u[1]))
        return UsageSnapshot(contract_usage, _PartnerUsage(self.state, periods, partner_usage),
                             _EventCounts(self.state, periods, event_counts)), periods

    def _attribute(self, conv: Mapping[str, Any], src: Source, now: datetime) -> Decision:
        cid = conv["conversion_id"]
        adv = conv["advertiser_id"]
        household = conv["household_id"]
        at: datetime = conv["event_time"]
        order_key = None if conv["order_id"] is None else f"o:{adv}{SEP}{conv['order_id']}"
        dedupe = DedupeFacts(
            conversion_id_seen=self.state.get("c:" + cid) is not None,
            order_id_seen=order_key is not None and self.state.get(order_key) is not None,
            household_conversions=tuple(
                PriorConversion(p[0], p[1], from_micros(p[2])) for p in self.state.get("h:" + household) or ()
            ),
        )
        held = self.state.exposures("x:" + household)
        exposures = [
            Exposure(held[i], household, held[i + 3], held[i + 4] or "", from_micros(held[i + 1]))
            for i in range(0, len(held), EXPOSURE_WIDTH) if held[i + 2] == adv
        ]
        contracts = self.book.cpa_contracts_of(adv)
        usage, periods = self._usage(contracts, at)
        result = decide(
            Conversion(conversion_id=cid, advertiser_id=adv, household_id=household, event_type=conv["event_type"],
                       occurred_at=at, order_id=conv["order_id"], order_value=conv["value"], currency=conv["currency"]),
            exposures, contracts, dedupe=dedupe, usage=usage,
        )
        if isinstance(result, Rejected):
            if not dedupe.conversion_id_seen:
                self._remember_rejected(conv)
            a = result.would_have_been
            return Decision(self._outcome(conv, src, now, reason=result.reason, detail=result.detail, attributed=a))
        # each of these is computed anew on every access: once per decision
        adv_amount, partner_amount, rule = result.advertiser_amount, result.partner_amount, rule_text(result)
        unfit = next((x for x in (adv_amount, partner_amount) if not fits_amount_scale(x)), None)
        if unfit is not None:
            self._remember_rejected(conv)
            return Decision(self._outcome(conv, src, now, reason=RejectReason.INVALID,
                                          detail=f"amount {unfit} needs more than {AMOUNT_SCALE} decimals; fix the contract's price"))
        self._count(conv, result, periods[result.contract_id], order_key, adv_amount, rule)
        version = self.book.version(result.contract_id, result.version)
        assert version is not None
        cur = version.terms.common.currency
        outcome = self._outcome(conv, src, now, attributed=result, currency=cur,
                                priced=(adv_amount, partner_amount, rule))
        attributed = {
            "conversion_id": cid,
            "kind": "conversion",
            "original_conversion_id": None,
            "contract_id": result.contract_id,
            "contract_version": result.version,
            "advertiser_id": adv,
            "partner_id": result.partner_id or None,
            "event_type": conv["event_type"],
            "event_time": at,
            "original_event_time": None,
            "exposure_id": result.exposure_id,
            "exposure_time": result.exposure_at,
            "rule": rule,
            "currency": cur,
            "advertiser_amount": adv_amount,
            "partner_payout": partner_amount,
            "decided_at": now,
            "order_value": conv["value"],
            "tier_position": result.tier_position,
            "reversal_completes": None,
        }
        return Decision(outcome, attributed)

    def _count(self, conv: Mapping[str, Any], a: Attributed, period: str, order_key: str | None, amount: Decimal,
               rule: str) -> None:
        """Record an attributed conversion (advertiser amount ``amount``, rule ``rule``): dedupe
        memory, caps and tier counters."""
        t = to_micros(conv["event_time"])
        k = a.contract_id
        with exact():
            for key in (f"u:{k}{SEP}{period}", f"p:{k}{SEP}{a.partner_id}{SEP}{period}"):
                n, total = self.state.get(key) or (0, "0")
                self.state.put(key, [int(n) + 1, str(Decimal(total) + amount)])
        tier_key = f"e:{k}{SEP}{period}{SEP}{conv['event_type']}"
        self.state.put(tier_key, int(self.state.get(tier_key) or 0) + 1)
        if order_key is not None:
            self.state.put(order_key, [conv["conversion_id"], t])
        hk = "h:" + conv["household_id"]
        self.state.put(hk, [*(self.state.get(hk) or ()), [k, conv["event_type"], t]])
        p = a.priced
        self.state.put("c:" + conv["conversion_id"], {
            "s": "attributed", "t": t, "contract_id": k, "version": a.version, "advertiser_id": conv["advertiser_id"],
            "partner_id": a.partner_id, "event_type": conv["event_type"], "exposure_id": a.exposure_id,
            "exposure_us": to_micros(a.exposure_at), "rule": rule, "period_key": a.period_key,
            "order_value": None if conv["value"] is None else str(conv["value"]),
            "tier": p.tier_index, "adv_price": _price_json(p.advertiser_price), "par_price": _price_json(p.partner_payout),
            "adv": _leg_json(p.advertiser), "par": _leg_json(p.partner), "reversals": [],
        })

    def _reverse(self, conv: Mapping[str, Any], src: Source, now: datetime) -> Decision:
        rid = conv["conversion_id"]
        if self.state.get("c:" + rid) is not None:
            return Decision(self._outcome(conv, src, now, reason=RejectReason.DUPLICATE, detail="conversion id already counted"))
        orig_id = conv["reverses_conversion_id"]
        orig = self.state.get("c:" + orig_id)

        def reject(reason: RejectReason, detail: str) -> Decision:
            self._remember_rejected(conv)
            return Decision(self._outcome(conv, src, now, reason=reason, detail=detail, original=orig_id))

        # The advertiser first: another shard's conversion (``decided_elsewhere``) is known here
        # only by its id and advertiser, so the answer must not depend on how it was decided.
        if orig is not None and orig.get("advertiser_id", conv["advertiser_id"]) != conv["advertiser_id"]:
            return reject(RejectReason.INVALID, "advertiser_id differs from the original conversion's")
        if orig is None or orig["s"] != "attributed":
            what = "is unknown" if orig is None else "was not attributed"
            return reject(RejectReason.INVALID, f"original conversion {orig_id!r} {what}; nothing to reverse")
        version = self.book.version(orig["contract_id"], orig["version"])
        cur = None if version is None else version.terms.common.currency
        if conv["currency"] is not None and cur is not None and conv["currency"] != cur:
            return reject(RejectReason.INVALID, "currency differs from the original conversion's")
        priced = PricedConversion(
            event_type=orig["event_type"], tier_index=orig["tier"], advertiser_price=_price_of(orig["adv_price"]),
            partner_payout=_price_of(orig["par_price"]), advertiser=_leg_of(orig["adv"]), partner=_leg_of(orig["par"]),
            payout_override=None,
        )
        earlier = tuple(_reversal_of(r, orig_id) for r in orig["reversals"])
        lock = None if version is None or version.terms.cpa is None else version.terms.cpa.reversal_lock_days
        out = reverse(
            priced, conversion_id=orig_id, conversion_at=from_micros(orig["t"]),
            order_value=None if orig["order_value"] is None else Decimal(orig["order_value"]),
            earlier=earlier, reversal=Reversal(rid, orig_id, conv["event_time"], conv.get("reversal_amount")),
            lock_days=lock,
        )
        if out.refused is ReversalRefused.ALREADY_REVERSED:
            return reject(RejectReason.DUPLICATE, f"conversion {orig_id!r} is already fully reversed")
        if out.refused is ReversalRefused.LOCKED:
            return reject(RejectReason.OUTSIDE_WINDOW, f"the reversal lock period ({lock} days after the conversion) has passed")
        if out.refused is not None:
            return reject(RejectReason.INVALID, f"reversal refused: {out.refused.value}")
        if not (fits_amount_scale(out.advertiser_amount) and fits_amount_scale(out.partner_amount)):
            return reject(RejectReason.INVALID, f"reversed amount needs more than {AMOUNT_SCALE} decimals")
        orig = dict(orig)
        orig["reversals"] = [*orig["reversals"], {
            "id": rid, "adv": None if out.advertiser is None else _leg_json(out.advertiser),
            "par": None if out.partner is None else _leg_json(out.partner), "completes": out.completes,
            "refunded": None if out.refunded_order_value is None else str(out.refunded_order_value),
        }]
        self.state.put("c:" + orig_id, orig)
        self.state.put("c:" + rid, {"s": "reversal", "t": to_micros(conv["event_time"]), "of": orig_id})
        with exact():
            adv_amount = -out.advertiser_amount
            partner_amount = -out.partner_amount
        exposure_time = from_micros(orig["exposure_us"])
        attributed = {
            "conversion_id": rid, "kind": "reversal", "original_conversion_id": orig_id,
            "contract_id": orig["contract_id"], "contract_version": orig["version"], "advertiser_id": orig["advertiser_id"],
            "partner_id": orig["partner_id"] or None, "event_type": orig["event_type"], "event_time": conv["event_time"],
            "original_event_time": from_micros(orig["t"]), "exposure_id": orig["exposure_id"], "exposure_time": exposure_time,
            "rule": orig["rule"], "currency": cur or "", "advertiser_amount": adv_amount, "partner_payout": partner_amount,
            "decided_at": now, "order_value": out.refunded_order_value, "tier_position": None,
            "reversal_completes": out.completes,
        }
        outcome = self._outcome(conv, src, now, original=orig_id)
        outcome.update({
            "contract_id": orig["contract_id"], "contract_version": orig["version"], "partner_id": orig["partner_id"] or None,
            "exposure_id": orig["exposure_id"], "exposure_time": exposure_time, "rule": orig["rule"],
            "period_key": orig["period_key"], "currency": cur, "advertiser_amount": adv_amount,
            "partner_payout": partner_amount, "reversal_completes": out.completes,
            "detail": "full reversal" if out.completes else "partial reversal",
        })
        return Decision(outcome, attributed)

    # ------------------------------------------------------------ outputs

    def _outcome(
        self,
        conv: Mapping[str, Any],
        src: Source,
        now: datetime,
        *,
        reason: RejectReason | None = None,
        detail: str | None = None,
        attributed: Attributed | None = None,
        currency: str | None = None,
        original: str | None = None,
        priced: tuple[Decimal, Decimal, str] | None = None,
    ) -> dict[str, Any]:
        """``priced``: the attribution's (advertiser amount, partner payout, rule text), when the
        caller has them already."""
        a = attributed
        if a is not None and priced is None:
            priced = (a.advertiser_amount, a.partner_amount, rule_text(a))
        if a is not None and currency is None:
            v = self.book.version(a.contract_id, a.version)
            currency = None if v is None else v.terms.common.currency
        return {
            "outcome_id": src.id,
            "conversion_id": conv["conversion_id"],
            "kind": conv["kind"],
            "outcome": "attributed" if reason is None else "rejected",
            "reason": None if reason is None else reason.value,
            "detail": detail,
            "advertiser_id": conv["advertiser_id"],
            "household_id": conv["household_id"],
            "event_type": conv["event_type"],
            "event_time": conv["event_time"],
            "order_id": conv["order_id"],
            "contract_id": None if a is None else a.contract_id,
            "contract_version": None if a is None else a.version,
            "partner_id": None if a is None else (a.partner_id or None),
            "exposure_id": None if a is None else a.exposure_id,
            "exposure_time": None if a is None else a.exposure_at,
            "rule": None if priced is None else priced[2],
            "period_key": None if a is None else a.period_key,
            "currency": currency,
            "advertiser_amount": None if priced is None else priced[0],
            "partner_payout": None if priced is None else priced[1],
            "original_conversion_id": original,
            "reversal_completes": None,
            "source_topic": src.topic,
            "source_partition": src.partition,
            "source_offset": src.offset,
            "decided_at": now,
        }


class _PartnerUsage(dict[tuple[str, str], CpaUsage]):
    """Lazy per-partner usage in each contract's period, read from the state on demand."""

    def __init__(self, state: AttributionState, periods: dict[str, str], data: dict[tuple[str, str], CpaUsage]) -> None:
        super().__init__(data)
        self._state = state
        self._periods = periods

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        contract, partner = key
        period = self._periods.get(contract)
        u = None if period is None else self._state.get(f"p:{contract}{SEP}{partner}{SEP}{period}")
        return default if u is None else CpaUsage(int(u[0]), Decimal(u[1]))


class _EventCounts(dict[tuple[str, str], int]):
    """Lazy conversions-per-event-type counts in each contract's period (tier position)."""

    def __init__(self, state: AttributionState, periods: dict[str, str], data: dict[tuple[str, str], int]) -> None:
        super().__init__(data)
        self._state = state
        self._periods = periods

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        contract, event_type = key
        period = self._periods.get(contract)
        n = None if period is None else self._state.get(f"e:{contract}{SEP}{period}{SEP}{event_type}")
        return default if n is None else int(n)


def rule_text(a: Attributed) -> str:
    r = a.rule
    parts = [f"{r.model.value}/{r.lookback_days}d"]
    if r.min_delay_seconds:
        parts.append(f"min_delay={r.min_delay_seconds}s")
    if r.tier_index is not None:
        parts.append(f"tier={r.tier_index}")
    if r.payout_override_from is not None:
        parts.append(f"payout_override={a.partner_id}@{r.payout_override_from}")
    if r.attribution_tail:
        parts.append("tail")
    return ",".join(parts)


def _price_json(p: Price) -> dict[str, Any]:
    return {"kind": p.kind.value, "amount": None if p.amount is None else str(p.amount),
            "percent": None if p.percent is None else str(p.percent)}


def _price_of(j: Mapping[str, Any]) -> Price:
    if j["kind"] == PriceKind.FLAT.value:
        return Price.flat(Decimal(j["amount"]))
    return Price.pct(Decimal(j["percent"]))


def _leg_json(leg: LegAmount) -> list[str]:
    return [leg.basis, str(leg.quantity), str(leg.unit_price)]


def _leg_of(j: list[str]) -> LegAmount:
    return LegAmount(j[0], Decimal(j[1]), Decimal(j[2]))


def _reversal_of(j: Mapping[str, Any], orig_id: str) -> ReversalOutcome:
    return ReversalOutcome(
        reversal_id=j["id"], conversion_id=orig_id, refused=None,
        advertiser=None if j["adv"] is None else _leg_of(j["adv"]),
        partner=None if j["par"] is None else _leg_of(j["par"]),
        completes=bool(j["completes"]),
        refunded_order_value=None if j["refunded"] is None else Decimal(j["refunded"]),
    )
