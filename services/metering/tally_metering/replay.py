"""``replay --contract C --period P``: recompute one (contract, period) from the raw topics and
the terms, and compare it with what metering published — the closed totals plus every
adjustment that corrects the period — per price point. Exit 0 when they agree.

The recomputation rebuilds what the worker keeps, from scratch and in one pass: the usage
ledger from ``ads.impressions`` (every impression id once), the IVT reports metering applied
(``billing.ivt_report_outcomes`` says which; a report's refusal depended on the ledger at the
time, so the decision is taken as recorded), the contract picture from the last
``contracts.terms`` record of every contract of the advertiser (their routing competes for a
campaign), and the CPA amounts from ``billing.attributed_conversions``. The period's lines come
from the same pure functions the worker uses (``domain.derive``, ``domain.rate_period``), so a
difference means the stream lost, doubled or misplaced something — not a second reading of
the billing rules.

Limits (honest): the raw topics must still hold the period (impressions are kept 30 days by
default); a lifetime tier or total cap takes the earlier periods from the same raw data.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

from tally_billing.attribution import DecidedConversion, reprice, reprice_reversal
from tally_billing.money import exact, format_decimal
from tally_billing.periods import period_by_key
from tally_billing.routing import ContractBook, contract_from_record, to_micros
from tally_billing.usage import BUCKET_US, BUCKETS_PER_DAY
from tally_streams.avro import AvroCodec, DecodeError, SchemaCatalog
from tally_streams.kafka import read_to_end
from tally_streams.records import (
    AdjustmentRecord,
    AttributedConversionRecord,
    ContractTermsRecord,
    IvtReportOutcomeRecord,
    IvtReportRecord,
    PeriodClosedRecord,
)

from . import domain as d
from .codec import ImpressionDecoder
from .settings import MeteringSettings
from .state import DAY_US

PricePoint = tuple[str, int, str, str]  # line_type, version, price_point, partner ("" for advertiser lines)
R = TypeVar("R", bound=Mapping[str, Any])


def _decoded(bootstrap: str, topic: str, codec: AvroCodec[R]) -> Iterable[R]:
    for m in read_to_end(bootstrap, topic):
        try:
            yield codec.decode(m.value())
        except DecodeError:
            continue  # dead-lettered by the live pipeline too


def book_for(bootstrap: str, topic: str, catalog: SchemaCatalog) -> ContractBook:
    latest: dict[str, ContractTermsRecord] = {}
    for rec in _decoded(bootstrap, topic, catalog.codec("contract_terms", record=ContractTermsRecord)):
        held = latest.get(rec["contract_id"])
        if held is None or rec["revision"] >= held["revision"]:
            latest[rec["contract_id"]] = rec
    book = ContractBook()
    book.load(contract_from_record(r) for r in latest.values())
    return book


def ledger_for(bootstrap: str, settings: MeteringSettings, catalog: SchemaCatalog, advertiser_id: str
               ) -> dict[tuple[str, str], dict[int, d.UsageDay]]:
    """The advertiser's usage ledger, rebuilt from the raw impressions and the applied IVT reports."""
    usage: dict[tuple[str, str], dict[int, d.UsageDay]] = {}
    seen: set[str] = set()
    decoder = ImpressionDecoder(catalog)
    for m in read_to_end(bootstrap, settings.metering_topic_impressions):
        [rec] = decoder.decode_fields([m.value()])
        if not isinstance(rec, tuple):
            continue
        iid, t, advertiser, campaign, ivt, source = rec
        if advertiser != advertiser_id:
            continue
        cls = d.LEDGER_DUPLICATE if iid in seen else d.LEDGER_CLASSES[(ivt, source)]
        seen.add(iid)
        day = t // DAY_US
        u = usage.setdefault((advertiser, campaign), {}).setdefault(day, d.UsageDay(advertiser, campaign, day))
        u.add((t // BUCKET_US) % BUCKETS_PER_DAY, cls, 1)
        u.max_event_us = max(u.max_event_us, t)
    applied = {o["report_id"] for o in _decoded(bootstrap, settings.metering_topic_ivt_outcomes,
                                                catalog.codec("ivt_report_outcome", record=IvtReportOutcomeRecord))
               if o["status"] == "applied"}
    reports: dict[str, IvtReportRecord] = {}
    for r in _decoded(bootstrap, settings.metering_topic_ivt_reports, catalog.codec("ivt_report", record=IvtReportRecord)):
        if r["advertiser_id"] == advertiser_id and r["report_id"] in applied:
            reports.setdefault(r["report_id"], r)  # a repeat of a report id was not applied again
    for r in reports.values():
        entries = [(e["campaign_id"], to_micros(e["window_start"]), to_micros(e["window_end"]), e["ivt_class"],
                    e["measurement_source"], e["count"]) for e in r["entries"]]
        plan, refusal = d.plan_ivt_credit(usage, advertiser_id, entries, not_before_us=0)
        if refusal is not None:
            raise RuntimeError(f"IVT report {r['report_id']} was applied but no longer fits the ledger: {refusal[1]}")
        for campaign, bucket, valid_cls, ivt_cls, n in plan:
            u = usage[(advertiser_id, campaign)][bucket // BUCKETS_PER_DAY]
            u.add(bucket % BUCKETS_PER_DAY, valid_cls, -n)
            u.add(bucket % BUCKETS_PER_DAY, ivt_cls, n)
    return usage


def cpa_totals(bootstrap: str, topic: str, catalog: SchemaCatalog, contract_id: str, contract: Any
               ) -> dict[str, d.PeriodTotals]:
    """Per period: the contract's conversions, each conversion id once, priced under the final
    terms (``tally_billing.attribution.reprice`` from the facts attribution recorded, so a
    backdated amendment's re-pricing is included); a reversal belongs to its original's period,
    follows its original's price, and ends it (quantity −1) when it completes it."""
    out: dict[str, d.PeriodTotals] = {}
    originals: dict[str, list[Any]] = {}  # id -> [period, version, event type, partner, amount, given back, full, priced]
    seen: set[str] = set()
    for rec in _decoded(bootstrap, topic, catalog.codec("attributed_conversion", record=AttributedConversionRecord)):
        if rec["contract_id"] != contract_id or rec["conversion_id"] in seen:
            continue
        seen.add(rec["conversion_id"])
        amount, payout = rec["advertiser_amount"], rec["partner_payout"]
        if rec["kind"] == "conversion":
            pkey = contract.period_at(to_micros(rec["event_time"])).key
            version, event_type, partner = rec["contract_version"], rec["event_type"], rec.get("partner_id")
            tier = rec["tier_position"]
            priced = None if tier is None else reprice(contract.versions, DecidedConversion(
                decided_version=version, event_type=event_type, partner_id=partner, order_value=rec["order_value"],
                occurred_at=rec["event_time"], tier_position=tier))
            originals[rec["conversion_id"]] = [pkey, version, event_type, partner, amount, Decimal(0), False, priced]
            if priced is not None:
                version, amount, payout = priced.version, priced.advertiser_amount, priced.partner_amount
            quantity = 1
        else:
            orig = originals.get(rec.get("original_conversion_id") or "")
            quantity = 0
            if orig is None:
                at = rec.get("original_event_time") or rec["event_time"]
                pkey = contract.period_at(to_micros(at)).key
                version, event_type, partner = rec["contract_version"], rec["event_type"], rec.get("partner_id")
            else:
                pkey, version, event_type, partner = orig[:4]
                with exact():
                    orig[5] += amount
                completes = rec.get("reversal_completes")
                if completes is None:  # a v1 record: the amounts tell
                    completes = orig[4] + orig[5] == 0 and orig[4] != 0
                if completes and not orig[6]:
                    orig[6] = True
                    quantity = -1
                priced = orig[7]
                amounts = None if priced is None or rec.get("reversal_completes") is None else reprice_reversal(
                    priced.priced, refunded_order_value=rec.get("order_value"), completes=bool(rec["reversal_completes"]))
                if priced is not None:
                    version = priced.version
                if amounts is not None:
                    amount, payout = amounts
        out.setdefault(pkey, d.PeriodTotals()).add_cpa(int(version), event_type, quantity, amount, partner, payout)
    return out


def _points(lines: Iterable[Any], payouts: Iterable[Any]) -> dict[PricePoint, tuple[int, Decimal]]:
    out: dict[PricePoint, tuple[int, Decimal]] = {}

    def add(key: PricePoint, q: int, a: Decimal) -> None:
        q0, a0 = out.get(key, (0, Decimal(0)))
        with exact():
            out[key] = (q0 + q, a0 + a)

    for ln in lines:
        add((ln["line_type"], int(ln["contract_version"]), ln["price_point"], ""), int(ln["quantity"]),
            Decimal(ln["amount_exact"]))
    for p in payouts:
        add(("payout", int(p["contract_version"]), f"event:{p['event_type']}", p["partner_id"]), int(p["quantity"]),
            Decimal(p["amount_exact"]))
    return {k: v for k, v in out.items() if v != (0, Decimal(0))}


def recompute(settings: MeteringSettings, catalog: SchemaCatalog, contract_id: str, period_key: str
              ) -> dict[PricePoint, tuple[int, Decimal]]:
    bootstrap = settings.kafka_bootstrap
    book = book_for(bootstrap, settings.metering_topic_terms, catalog)
    contract = book.get(contract_id)
    if contract is None:
        raise LookupError(f"contract {contract_id} is not on {settings.metering_topic_terms}")
    usage = ledger_for(bootstrap, settings, catalog, contract.advertiser_id)
    derived = d.derive(book, (u for days in usage.values() for u in days.values()))
    cpa = cpa_totals(bootstrap, settings.metering_topic_attributed, catalog, contract_id, contract)
    totals: dict[str, d.PeriodTotals] = {}
    for (cid, key), t in derived.items():
        if cid == contract_id:
            totals.setdefault(key, d.PeriodTotals()).merge(t)
    for key, t in cpa.items():
        totals.setdefault(key, d.PeriodTotals()).merge(t)
    ordered = sorted(((period_by_key(k, contract.time_zone, contract.period_kind), t) for k, t in totals.items()),
                     key=lambda x: x[0].start)
    prior_n, prior_amount = 0, Decimal(0)
    for period, t in ordered:
        rating = d.rate_period(contract, period, t, prior_lifetime_impressions=prior_n, prior_billed_total=prior_amount)
        if period.key == period_key:
            return _points([vars(ln) for ln in rating.lines], [vars(p) for p in rating.payouts])
        prior_n += rating.quantity("cpm_impressions")
        with exact():
            prior_amount += rating.amount
    return {}


def published(settings: MeteringSettings, catalog: SchemaCatalog, contract_id: str, period_key: str
              ) -> tuple[dict[PricePoint, tuple[int, Decimal]], int] | None:
    """The period's closed lines plus every adjustment correcting it (None: not closed yet), and
    how many adjustments there are."""
    bootstrap = settings.kafka_bootstrap
    close = None
    for r in _decoded(bootstrap, settings.metering_topic_periods_closed, catalog.codec("period_closed", record=PeriodClosedRecord)):
        if r["contract_id"] == contract_id and r["period_key"] == period_key:
            close = r
    if close is None:
        return None
    adjustments = [a for a in _decoded(bootstrap, settings.metering_topic_adjustments,
                                       catalog.codec("adjustment", record=AdjustmentRecord))
                   if a["contract_id"] == contract_id and a["corrects_period_key"] == period_key]
    lines = list(close["lines"]) + adjustments
    payouts = list(close["payouts"]) + [
        {"partner_id": a["partner_id"], "contract_version": a["contract_version"], "event_type": a["event_type"],
         "quantity": a["quantity"], "amount_exact": a["partner_payout_exact"]}
        for a in adjustments if a["partner_id"] is not None and a["partner_payout_exact"] is not None]
    return _points(lines, payouts), len(adjustments)


def run_replay(settings: MeteringSettings, contract_id: str, period_key: str, out: Any = sys.stdout) -> int:
    """Print the comparison; 0 when equal, 1 when they differ, 2 when the period is not closed."""
    catalog = SchemaCatalog.load()
    got = published(settings, catalog, contract_id, period_key)
    if got is None:
        print(f"{contract_id}/{period_key}: not closed (no period_closed record)", file=out)
        return 2
    have, n_adjustments = got
    want = recompute(settings, catalog, contract_id, period_key)
    print(f"{contract_id}/{period_key}: closed lines + {n_adjustments} adjustment(s) vs the raw topics", file=out)
    differ = 0
    for key in sorted(set(have) | set(want)):
        h, w = have.get(key, (0, Decimal(0))), want.get(key, (0, Decimal(0)))
        mark = "ok  " if h == w else "DIFF"
        differ += h != w
        line_type, version, point, partner = key
        what = f"{line_type} v{version} {point}" + (f" partner {partner}" if partner else "")
        h_amount, w_amount = (format_decimal(x[1], trailing_zeros=False) for x in (h, w))
        print(f"  {mark} {what}: published {h[0]} / {h_amount}  recomputed {w[0]} / {w_amount}", file=out)
    print("equal" if not differ else f"{differ} price point(s) differ", file=out)
    return 0 if not differ else 1
