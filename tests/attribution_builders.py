"""Builders for contract terms records and events (attribution's inputs), shared by the tests."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tally_billing.examples import cpa_terms_json

EPOCH_2026 = datetime(2026, 1, 1, tzinfo=UTC)


def cpa_terms(
    advertiser_id: str,
    campaign_ids: list[str],
    *,
    currency: str = "USD",
    price: str = "10.00",
    payout: str = "4.00",
    lookback_days: int = 7,
    model: str = "last_touch",
    min_delay_seconds: int = 0,
    overrides: list[dict[str, Any]] | None = None,
    household_window_days: dict[str, int] | None = None,
    caps: dict[str, Any] | None = None,
    reversal_lock_days: int | None = None,
    percent: bool = False,
) -> dict[str, Any]:
    """CPA terms (UTC zone, monthly) paying a flat (or percentage) price for ``purchase``."""
    t = cpa_terms_json()
    t["common"].update({
        "currency": currency, "time_zone": "UTC", "advertiser_id": advertiser_id, "campaign_ids": list(campaign_ids),
        "flight_start": "2026-01-01", "flight_end": None, "committed_value": None,
    })
    if percent:
        adv_price = {"kind": "percent", "percent": price}
        partner = {"kind": "percent", "percent": payout}
    else:
        adv_price = {"kind": "flat", "amount": price}
        partner = {"kind": "flat", "amount": payout}
    t["cpa"] = {
        "payouts": [{"event_type": "purchase", "advertiser_price": adv_price, "partner_payout": partner, "tiers": []}],
        "partner_overrides": copy.deepcopy(overrides or []),
        "attribution": {"lookback_days": lookback_days, "lookback_days_by_event_type": {}, "model": model,
                        "min_delay_seconds": min_delay_seconds},
        "dedupe": {"household_window_days_by_event_type": dict(household_window_days or {})},
        "caps": caps or {"contract": {}, "per_partner": {}},
        "reversal_lock_days": reversal_lock_days,
    }
    return t


def cpm_terms(advertiser_id: str, campaign_ids: list[str]) -> dict[str, Any]:
    from tally_billing.examples import cpm_terms_json

    t = cpm_terms_json()
    t["common"].update({"advertiser_id": advertiser_id, "campaign_ids": list(campaign_ids), "time_zone": "UTC"})
    return t


def terms_record(
    contract_id: str,
    advertiser_id: str,
    versions: list[tuple[int, datetime, datetime | None, dict[str, Any]]],
    *,
    revision: int = 1,
    contract_type: str = "cpa",
    terminated_at: datetime | None = None,
) -> dict[str, Any]:
    """A ``contracts.terms`` record (as decoded): ``versions`` = [(version, from, to, terms_json)]."""
    return {
        "contract_id": contract_id,
        "advertiser_id": advertiser_id,
        "contract_type": contract_type,
        "status": "active",
        "terminated_at": terminated_at,
        "revision": revision,
        "event_id": f"{contract_id}-r{revision}",
        "versions": [
            {"version": v, "effective_from": f, "effective_to": to, "approved_at": f, "terms_json": json.dumps(t)}
            for v, f, to, t in versions
        ],
    }


def impression(
    impression_id: str, household_id: str, event_time: datetime, advertiser_id: str, campaign_id: str,
    partner_id: str | None = None, ivt: str = "none",
) -> dict[str, Any]:
    return {
        "impression_id": impression_id, "event_time": event_time, "advertiser_id": advertiser_id,
        "campaign_id": campaign_id, "partner_id": partner_id, "household_id": household_id, "device_type": "ctv",
        "ivt": ivt, "measurement_source": "first_party",
    }


def conversion(
    conversion_id: str, household_id: str, event_time: datetime, advertiser_id: str, *,
    event_type: str = "purchase", order_id: str | None = None, value: Decimal | None = None, currency: str | None = None,
    kind: str = "conversion", reverses: str | None = None, reversal_amount: Decimal | None = None,
) -> dict[str, Any]:
    return {
        "conversion_id": conversion_id, "kind": kind, "order_id": order_id, "event_time": event_time,
        "advertiser_id": advertiser_id, "household_id": household_id, "event_type": event_type, "value": value,
        "currency": currency, "source": "api", "partner_id": None, "reverses_conversion_id": reverses,
        "reversal_amount": reversal_amount,
    }
