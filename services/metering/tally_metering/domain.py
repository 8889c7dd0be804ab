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
    LEDGER_CLASSES as LEDGER_CLASSES,
)
from tally_billing.ledger import (
    LEDGER_DUPLICATE as LEDGER_DUPLICATE,
)
from tally_billing.ledger import (
    UsageDay as UsageDay,
)
from tally_billing.ledger import (
    add_classified as add_classified,
)
from tally_billing.ledger import (
    category as category,
)
from tally_billing.ledger import (
    classify as classify,
)
from tally_billing.ledger import (
    derive as derive,
)
from tally_billing.ledger import (
    plan_ivt_credit as plan_ivt_credit,
)
from tally_billing.periods import Period
from tally_billing.routing import Contract
from tally_billing.totals import (
    BILLABLE as BILLABLE,
)
from tally_billing.totals import (
    CONVERSIONS_ATTRIBUTED as CONVERSIONS_ATTRIBUTED,
)
from tally_billing.totals import (
    CONVERSIONS_REVERSED as CONVERSIONS_REVERSED,
)
from tally_billing.totals import (
    DUPLICATE as DUPLICATE,
)
from tally_billing.totals import (
    DUPLICATE_CONVERSIONS as DUPLICATE_CONVERSIONS,
)
from tally_billing.totals import (
    IN_SCOPE as IN_SCOPE,
)
from tally_billing.totals import (
    IVT_GIVT as IVT_GIVT,
)
from tally_billing.totals import (
    IVT_SIVT as IVT_SIVT,
)
from tally_billing.totals import (
    OTHER_MEASUREMENT as OTHER_MEASUREMENT,
)
from tally_billing.totals import (
    OUTSIDE_FLIGHT as OUTSIDE_FLIGHT,
)
from tally_billing.totals import (
    OVER_DELIVERY as OVER_DELIVERY,
)
from tally_billing.totals import (
    RECEIVED as RECEIVED,
)
from tally_billing.totals import (
    REVERSAL_RECORDS as REVERSAL_RECORDS,
)
from tally_billing.totals import (
    SEP as SEP,
)
from tally_billing.totals import (
    UNCOVERED as UNCOVERED,
)
from tally_billing.totals import (
    ZERO as ZERO,
)
from tally_billing.totals import (
    Line as Line,
)
from tally_billing.totals import (
    PayoutLine as PayoutLine,
)
from tally_billing.totals import (
    PeriodTotals as PeriodTotals,
)
from tally_billing.totals import (
    Rating as Rating,
)
from tally_billing.totals import (
    alert_thresholds as alert_thresholds,
)
from tally_billing.totals import (
    diff_lines as diff_lines,
)
from tally_billing.totals import (
    display_unit_price as display_unit_price,
)
from tally_billing.totals import (
    rate_period as rate_period,
)
from tally_billing.totals import (
    terms_at_end as terms_at_end,
)
from tally_billing.totals import (
    versions_governing as versions_governing,
)
from tally_billing.usage import DAY_US as DAY_US


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
        "payouts": [
            {"partner_id": p.partner_id, "contract_version": p.contract_version, "event_type": p.event_type,
             "quantity": p.quantity, "amount_exact": p.amount_exact}
            for p in rating.payouts
        ],
        "counts": counts,
        "source_offsets": offsets,
    }
