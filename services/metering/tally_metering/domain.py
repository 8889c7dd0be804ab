"""Metering's wire formats over the billing library's one model.

The model lives in the billing library: period totals, lines, ratings and line differences in
:mod:`tally_billing.totals`, the usage ledger and its derivation in :mod:`tally_billing.ledger`,
contracts as routing tables in :mod:`tally_billing.routing`. They are re-exported here so
metering's code reads ``d.<name>``; what is metering's own is the ``period_closed`` record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tally_billing.ledger import (
    LEDGER_CLASSES,
    LEDGER_DUPLICATE,
    UsageDay,
    classify,
    derive,
    plan_ivt_credit,
)
from tally_billing.periods import Period
from tally_billing.routing import Contract
from tally_billing.totals import (
    BILLABLE,
    CONVERSIONS_ATTRIBUTED,
    CONVERSIONS_REVERSED,
    DUPLICATE,
    DUPLICATE_CONVERSIONS,
    IN_SCOPE,
    IVT_GIVT,
    IVT_SIVT,
    OTHER_MEASUREMENT,
    OUTSIDE_FLIGHT,
    OVER_DELIVERY,
    RECEIVED,
    REVERSAL_RECORDS,
    SEP,
    UNCOVERED,
    ZERO,
    Line,
    PayoutLine,
    PeriodTotals,
    Rating,
    alert_thresholds,
    diff_lines,
    display_unit_price,
    rate_period,
    terms_at_end,
    versions_governing,
)
from tally_billing.usage import DAY_US

__all__ = [
    "BILLABLE",
    "CONVERSIONS_ATTRIBUTED",
    "CONVERSIONS_REVERSED",
    "DAY_US",
    "DUPLICATE",
    "DUPLICATE_CONVERSIONS",
    "IN_SCOPE",
    "IVT_GIVT",
    "IVT_SIVT",
    "LEDGER_CLASSES",
    "LEDGER_DUPLICATE",
    "OTHER_MEASUREMENT",
    "OUTSIDE_FLIGHT",
    "OVER_DELIVERY",
    "RECEIVED",
    "REVERSAL_RECORDS",
    "SEP",
    "UNCOVERED",
    "ZERO",
    "Line",
    "PayoutLine",
    "PeriodTotals",
    "Rating",
    "UsageDay",
    "alert_thresholds",
    "classify",
    "close_id",
    "derive",
    "diff_lines",
    "display_unit_price",
    "period_closed_record",
    "plan_ivt_credit",
    "rate_period",
    "terms_at_end",
    "versions_governing",
]


def close_id(contract_id: str, period_key: str) -> str:
    return f"{contract_id}/{period_key}"


def period_closed_record(
    contract: Contract, period: Period, totals: PeriodTotals, rating: Rating, closed_at: datetime
) -> dict[str, Any]:
    """The ``period_closed`` v1 record of a period (a pure function of its inputs)."""
    end_terms = terms_at_end(contract, period).terms
    counts = {k: v for k, v in sorted(totals.counts.items()) if k != IN_SCOPE}
    if contract.contract_type == "cpm":
        counts[BILLABLE] = rating.quantity("cpm_impressions")
        counts[OVER_DELIVERY] = rating.quantity("cpm_over_delivery")
    offsets = []
    for k, o in sorted(totals.offsets.items()):
        topic, partition = k.split(SEP)
        offsets.append({"topic": topic, "partition": int(partition), "offset": o})
    return {
        "close_id": close_id(contract.contract_id, period.key),
        "contract_id": contract.contract_id,
        "advertiser_id": contract.advertiser_id,
        "contract_type": contract.contract_type,
        "currency": contract.currency,
        "time_zone": contract.time_zone,
        "period_kind": str(period.kind),
        "period_key": period.key,
        "period_start": period.start,
        "period_end": period.end,
        "closed_at": closed_at,
        "payment_terms_days": end_terms.common.payment_terms_days,
        "po_reference": end_terms.common.po_reference,
        "minimum_commitment": rating.minimum_commitment,
        "lines": [
            {"line_type": ln.line_type, "contract_version": ln.contract_version, "price_point": ln.price_point,
             "event_type": ln.event_type, "quantity": ln.quantity, "unit": ln.unit, "unit_price": ln.unit_price,
             "amount_exact": ln.amount_exact}
            for ln in rating.lines
        ],
        "payouts": payout_records(rating),
        "counts": counts,
        "source_offsets": offsets,
    }


def payout_records(rating: Rating) -> list[dict[str, Any]]:
    """The partners' payout lines of a rated period (``PartnerPayoutLine``), exact and unrounded:
    the close and every running total carry them from this one function, so the last running
    total of a period and its close agree on every payout (invoicing rounds once, per line)."""
    return [
        {"partner_id": p.partner_id, "contract_version": p.contract_version, "event_type": p.event_type,
         "quantity": p.quantity, "amount_exact": p.amount_exact}
        for p in rating.payouts
    ]
