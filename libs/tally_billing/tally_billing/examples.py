"""The example terms documented in the README, as fresh dicts (handy for tests everywhere)."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["cpa_terms_json", "cpm_terms_json"]

_CPM: dict[str, Any] = {
    "contract_type": "cpm",
    "common": {
        "currency": "USD",
        "time_zone": "America/New_York",
        "billing_period": "month",
        "payment_terms_days": 30,
        "flight_start": "2026-01-01",
        "flight_end": "2026-12-31",
        "campaign_ids": ["cmp-100", "cmp-101"],
        "po_reference": "PO-2026-0042",
        "measurement": "first_party",
        "advertiser_id": "adv-acme",
        "auto_renew": True,
        "renewal_term_months": 12,
        "notice_period_days": 30,
        "escalator_pct": "3",
        "attribution_tail": True,
        "committed_value": None,
    },
    "cpm": {
        "rate_card": {
            "kind": "graduated",
            "tier_basis": "period",
            "bands": [
                {"from_impressions": 0, "rate_cpm": "12.50"},
                {"from_impressions": 1000000, "rate_cpm": "10.00"},
                {"from_impressions": 5000000, "rate_cpm": "8.125"},
            ],
        },
        "budget_caps": {"total": "250000.00", "per_period": "30000.00"},
        "minimum_commitment_per_period": "5000.00",
    },
    "cpa": None,
}

_CPA: dict[str, Any] = {
    "contract_type": "cpa",
    "common": {
        "currency": "EUR",
        "time_zone": "Europe/Berlin",
        "billing_period": "month",
        "payment_terms_days": 45,
        "flight_start": "2026-02-01",
        "flight_end": None,
        "campaign_ids": ["cmp-200"],
        "po_reference": None,
        "measurement": "first_party",
        "advertiser_id": "adv-shop",
        "auto_renew": False,
        "renewal_term_months": None,
        "notice_period_days": 0,
        "escalator_pct": None,
        "attribution_tail": True,
        "committed_value": "120000.00",
    },
    "cpm": None,
    "cpa": {
        "payouts": [
            {
                "event_type": "purchase",
                "advertiser_price": {"kind": "percent", "percent": "12.5"},
                "partner_payout": {"kind": "percent", "percent": "8"},
                "tiers": [],
            },
            {
                "event_type": "signup",
                "advertiser_price": {"kind": "flat", "amount": "4.00"},
                "partner_payout": {"kind": "flat", "amount": "2.50"},
                "tiers": [
                    {
                        "from_conversions": 1000,
                        "advertiser_price": {"kind": "flat", "amount": "3.50"},
                        "partner_payout": {"kind": "flat", "amount": "2.00"},
                    }
                ],
            },
        ],
        "partner_overrides": [
            {
                "partner_id": "partner-tv1",
                "event_type": None,
                "effective_from": "2026-02-01",
                "partner_payout": None,
                "lookback_days": 14,
                "caps": None,
            },
            {
                "partner_id": "partner-tv1",
                "event_type": "signup",
                "effective_from": "2026-03-01",
                "partner_payout": {"kind": "flat", "amount": "3.00"},
                "lookback_days": None,
                "caps": {"max_conversions_per_period": 500, "max_amount_per_period": None},
            },
        ],
        "attribution": {
            "lookback_days": 7,
            "lookback_days_by_event_type": {"purchase": 3},
            "model": "last_touch",
            "min_delay_seconds": 10,
        },
        "dedupe": {"household_window_days_by_event_type": {"signup": 30}},
        "caps": {
            "contract": {"max_conversions_per_period": 10000, "max_amount_per_period": "10000.00"},
            "per_partner": {"max_conversions_per_period": 2000, "max_amount_per_period": None},
        },
        "reversal_lock_days": 90,
    },
}


def cpm_terms_json() -> dict[str, Any]:
    """The README's CPM example (a fresh deep copy)."""
    return copy.deepcopy(_CPM)


def cpa_terms_json() -> dict[str, Any]:
    """The README's CPA example (a fresh deep copy)."""
    return copy.deepcopy(_CPA)
