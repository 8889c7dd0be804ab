"""What the simulated traffic should bill, recomputed independently from the simulator's record
with the billing library alone — no service code, no Kafka, no database.

The rules are docs/DOMAIN.md's: an impression is billable once (first id wins), when valid (no
IVT), for a covered campaign of the version in force at its event time, inside the flight;
CPM periods are rated with ``tally_billing.cpm.rate_cpm_period`` (tiers, caps, over-delivery)
and a minimum-commitment shortfall tops a period up to its minimum; conversions are decided by
``tally_billing.attribution.decide`` against every valid exposure of their household, and
reversals give back exactly what was billed (``tally_billing.cpa.reverse``). Every invoice or
statement line is rounded once (``round_to_minor``), and a total is the sum of its lines.

Two kinds of record line change nothing or something about CPM without being impressions:

- ``contract_approved`` (a late IO: a contract approved after some of its traffic was sent)
  changes nothing — usage is billed whichever reached Tally first (docs/DOMAIN.md: the order of arrival
  never changes what is billed); the record keeps it so a reader sees when the approval came.
- ``ivt_report`` (a verification vendor's report) moves impressions from valid to IVT as
  metering's README says: each entry takes ``count`` valid impressions of its advertiser,
  campaign, measurement source and window, the latest 15-minute buckets first (after what the
  report's earlier entries took); a report claiming more than a window holds is refused whole,
  and a report id applies once. The moved impressions leave their contract's in-scope count of
  their version and period before rating, so tiers and caps are re-rated by the same rating call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tally_billing.attribution import Attributed, Conversion, CpaContract, DedupeFacts, Exposure, decide
from tally_billing.cpa import Reversal, ReversalOutcome, reverse
from tally_billing.cpm import VersionCount, rate_cpm_period
from tally_billing.money import currency, exact, round_to_minor
from tally_billing.periods import PeriodKind, flight_start_instant, local_midnight, period_containing
from tally_billing.terms import ContractTerms, parse_terms
from tally_billing.usage import bucket_of, to_micros
from tally_billing.versions import ContractVersion, version_in_force


@dataclass(frozen=True)
class LiveContract:
    """A simulated contract as the contracts service knows it (its real id, one approved version).
    ``late_io``: approved only after part of its traffic was sent (what it owes is the same)."""

    contract_id: str
    terms_json: Mapping[str, Any]
    late_io: bool = False

    @property
    def terms(self) -> ContractTerms:
        return parse_terms(self.terms_json)

    def versions(self) -> tuple[ContractVersion, ...]:
        t = self.terms
        start = flight_start_instant(t.common.flight_start, t.common.time_zone)
        return (ContractVersion(contract_id=self.contract_id, version=1, effective_from=start, effective_to=None, terms=t),)


@dataclass
class Expected:
    #: (advertiser_id, currency, period_key) -> invoice total (sum of rounded lines)
    invoices: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    #: (partner_id, currency, period_key) -> payout statement total for the period's lines
    payouts: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    #: (contract_id, period_key) -> line label -> rounded amount, for diagnosing a difference
    lines: dict[tuple[str, str], dict[str, Decimal]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # conversion_id -> attributed | rejected:<reason>
    #: report_id -> (applied | refused, impressions credited): the first decision of each report id
    ivt_reports: dict[str, tuple[str, int]] = field(default_factory=dict)


def _at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _dec(s: str | None) -> Decimal | None:
    return None if s is None else Decimal(s)


def recompute(contracts: Iterable[LiveContract], record: Iterable[Mapping[str, Any]]) -> Expected:
    contracts = list(contracts)
    events = list(record)
    out = Expected()
    impressions: list[dict[str, Any]] = []
    seen_imp: set[str] = set()
    for e in events:
        if e["kind"] == "impression" and e["event"]["impression_id"] not in seen_imp:
            seen_imp.add(e["event"]["impression_id"])
            impressions.append(dict(e["event"]))
    invalid = _ivt_credits(impressions, [e["event"] for e in events if e["kind"] == "ivt_report"], out)
    for c in contracts:
        if c.terms.contract_type.value == "cpm":
            _cpm(c, [imp for imp in impressions if imp["impression_id"] not in invalid], out)
    cpa = [c for c in contracts if c.terms.contract_type.value == "cpa"]
    if cpa:
        _cpa(cpa, impressions, [e["event"] for e in events if e["kind"] == "conversion"], out)
    return out


def ivt_window(entry: Mapping[str, Any]) -> tuple[datetime, datetime]:
    """An IVT report entry's window in UTC: ``window_start``..``window_end``, or the local day
    ``date`` in ``time_zone`` (from its local midnight to the next)."""
    if "date" in entry:
        day = date.fromisoformat(entry["date"])
        return local_midnight(day, entry["time_zone"]), local_midnight(day + timedelta(days=1), entry["time_zone"])
    return _at(entry["window_start"]), _at(entry["window_end"])


def _ivt_credits(impressions: list[dict[str, Any]], reports: list[Mapping[str, Any]], out: Expected) -> set[str]:
    """The ids of the impressions vendors' IVT reports found invalid; each report's decision in
    ``out.ivt_reports``. (CPA exposures stay as they are: attribution does not read IVT reports.)"""
    # (advertiser, campaign, measurement source) -> [(15-minute bucket, impression id, µs)] of valid impressions
    valid: dict[tuple[str, str, str], list[tuple[int, str, int]]] = defaultdict(list)
    for imp in impressions:
        if imp["ivt"] == "none":
            t = to_micros(_at(imp["event_time"]))
            valid[(imp["advertiser_id"], imp["campaign_id"], imp.get("measurement_source", "first_party"))].append(
                (bucket_of(t), imp["impression_id"], t))
    for rows in valid.values():
        rows.sort(reverse=True)  # latest bucket first
    invalid: set[str] = set()
    for report in reports:
        rid = report["report_id"]
        if rid in out.ivt_reports:
            continue  # a report id applies once; its first decision stands
        taken: set[str] = set()  # by this report's earlier entries
        refused = False
        for entry in report["entries"]:
            start, end = (to_micros(t) for t in ivt_window(entry))
            key = (report["advertiser_id"], entry["campaign_id"], entry.get("measurement_source", "first_party"))
            held = [iid for _, iid, t in valid.get(key, []) if start <= t < end and iid not in invalid and iid not in taken]
            if len(held) < entry["count"]:
                refused = True
                break
            taken.update(held[:entry["count"]])
        if refused:
            out.ivt_reports[rid] = ("refused", 0)
            continue
        invalid.update(taken)
        out.ivt_reports[rid] = ("applied", len(taken))
    return invalid


def _add(out: Expected, key: tuple[str, str, str], amount: Decimal, target: str = "invoices") -> None:
    book = out.invoices if target == "invoices" else out.payouts
    with exact():
        book[key] = book.get(key, Decimal(0)) + amount


def _cpm(c: LiveContract, impressions: list[dict[str, Any]], out: Expected) -> None:
    terms = c.terms
    versions = c.versions()
    cur = currency(terms.common.currency)
    tz = terms.common.time_zone
    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for imp in impressions:
        if imp["ivt"] != "none" or imp["advertiser_id"] != terms.common.advertiser_id:
            continue
        at = _at(imp["event_time"])
        v = version_in_force(versions, at)
        if v is None or imp["campaign_id"] not in v.terms.common.campaign_ids:
            continue
        counts[period_containing(at, tz, PeriodKind(terms.common.billing_period.value)).key][v.version] += 1
    by_no = {v.version: v for v in versions}
    for key, per_version in sorted(counts.items()):
        rating = rate_cpm_period([VersionCount(version=by_no[n], impressions=k) for n, k in sorted(per_version.items())])
        lines = {f"v{p.version}/band:{p.band_index}": round_to_minor(p.amount, cur) for p in rating.price_points}
        with exact():
            subtotal = sum(lines.values(), Decimal(0))
        if rating.minimum_commitment is not None and subtotal < rating.minimum_commitment:
            with exact():
                lines["minimum_commitment_shortfall"] = round_to_minor(rating.minimum_commitment - subtotal, cur)
        out.lines[(c.contract_id, key)] = lines
        with exact():
            total = sum(lines.values(), Decimal(0))
        _add(out, (terms.common.advertiser_id, cur.code, key), total)


def _cpa(contracts: list[LiveContract], impressions: list[dict[str, Any]], conversions: list[dict[str, Any]], out: Expected) -> None:
    cpa_contracts = [CpaContract(contract_id=c.contract_id, versions=c.versions()) for c in contracts]
    terms_of = {c.contract_id: c.terms for c in contracts}
    exposures: dict[str, list[Exposure]] = defaultdict(list)
    for imp in impressions:
        if imp["ivt"] == "none" and imp.get("partner_id"):
            exposures[imp["household_id"]].append(Exposure(
                exposure_id=imp["impression_id"], household_id=imp["household_id"], campaign_id=imp["campaign_id"],
                partner_id=imp["partner_id"], occurred_at=_at(imp["event_time"])))
    seen_conv: set[str] = set()
    seen_orders: set[tuple[str, str]] = set()
    attributed: dict[str, tuple[Attributed, Conversion]] = {}
    reversals: dict[str, list[ReversalOutcome]] = defaultdict(list)
    # (contract, period, event_type) -> exact advertiser amount; (contract, period, partner, event_type) -> payout
    adv: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    pay: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
    for ev in conversions:
        cid = ev["conversion_id"]
        if ev["kind"] == "reversal":
            if cid in seen_conv:
                continue
            seen_conv.add(cid)
            orig = attributed.get(ev["reverses_conversion_id"])
            if orig is None:
                out.outcomes[cid] = "rejected:no_original"
                continue
            a, conv = orig
            outcome = reverse(
                a.priced, conversion_id=conv.conversion_id, conversion_at=conv.occurred_at, order_value=conv.order_value,
                earlier=tuple(reversals[conv.conversion_id]),
                reversal=Reversal(reversal_id=cid, conversion_id=conv.conversion_id, occurred_at=_at(ev["event_time"]),
                                  refund_order_value=_dec(ev.get("reversal_amount"))),
                lock_days=cpa.reversal_lock_days if (cpa := terms_of[a.contract_id].cpa) else None,
            )
            reversals[conv.conversion_id].append(outcome)
            if outcome.refused is not None:
                out.outcomes[cid] = f"rejected:{outcome.refused.value}"
                continue
            out.outcomes[cid] = "reversed"
            with exact():
                adv[(a.contract_id, a.period_key, conv.event_type)] -= outcome.advertiser_amount
                pay[(a.contract_id, a.period_key, a.partner_id, conv.event_type)] -= outcome.partner_amount
            continue
        conv = Conversion(conversion_id=cid, advertiser_id=ev["advertiser_id"], household_id=ev["household_id"],
                          event_type=ev["event_type"], occurred_at=_at(ev["event_time"]), order_id=ev.get("order_id"),
                          order_value=_dec(ev.get("value")), currency=ev.get("currency"))
        facts = DedupeFacts(conversion_id_seen=cid in seen_conv,
                            order_id_seen=ev.get("order_id") is not None and (ev["advertiser_id"], ev["order_id"]) in seen_orders)
        decision = decide(conv, exposures.get(ev["household_id"], []), cpa_contracts, dedupe=facts)
        if cid in seen_conv:
            continue  # a re-sent conversion: counted once, its first outcome stands
        seen_conv.add(cid)
        if not isinstance(decision, Attributed):
            out.outcomes[cid] = f"rejected:{decision.reason.value}"
            continue
        if ev.get("order_id") is not None:
            seen_orders.add((ev["advertiser_id"], ev["order_id"]))
        out.outcomes[cid] = "attributed"
        attributed[cid] = (decision, conv)
        with exact():
            adv[(decision.contract_id, decision.period_key, conv.event_type)] += decision.priced.advertiser_amount
            pay[(decision.contract_id, decision.period_key, decision.partner_id, conv.event_type)] += decision.priced.partner_amount
    for (contract_id, period_key, event_type), amount in sorted(adv.items()):
        t = terms_of[contract_id]
        cur = currency(t.common.currency)
        line = round_to_minor(amount, cur)
        out.lines.setdefault((contract_id, period_key), {})[f"v1/event:{event_type}"] = line
        _add(out, (t.common.advertiser_id, cur.code, period_key), line)
    for (contract_id, period_key, partner_id, _event_type), amount in sorted(pay.items()):
        cur = currency(terms_of[contract_id].common.currency)
        _add(out, (partner_id, cur.code, period_key), round_to_minor(amount, cur), "payouts")
