"""The simulated world: advertisers, partners, campaigns and a mix of CPM and CPA contracts.

Everything derives from ``(seed, period_month, run_id)``: two runs with the same inputs create
the same contracts (terms) and the same traffic. ``run_id`` prefixes every id and name, so
separate runs stay apart in shared databases without changing any amount; the demo uses an
empty ``run_id`` so its advertisers and partners (``adv-acme``, ``adv-globex``,
``ptn-streamly``, ...) are the console's demo users' tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any


def previous_month(today: date) -> date:
    """The first day of the month before ``today``'s (January's is the previous year's December)."""
    return date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)


def next_month(month: date) -> date:
    """The first day of the month after ``month``'s."""
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


@dataclass(frozen=True)
class SimContract:
    key: str  # stable name inside the scenario, e.g. "cpm-flat-usd"
    name: str
    advertiser_id: str
    terms: dict[str, Any]  # tally_billing terms JSON
    partner_ids: tuple[str, ...] = ()

    @property
    def campaign_ids(self) -> tuple[str, ...]:
        return tuple(self.terms["common"]["campaign_ids"])

    @property
    def contract_type(self) -> str:
        return str(self.terms["contract_type"])


@dataclass(frozen=True)
class Scenario:
    seed: int
    month: date  # first day of the simulated billing month (its contracts' flights, unless the demo's)
    run_id: str
    contracts: tuple[SimContract, ...]
    partners: tuple[str, ...]
    uncovered_campaigns: tuple[str, ...]

    @property
    def campaigns(self) -> dict[str, SimContract]:
        return {c: k for k in self.contracts for c in k.campaign_ids}


def _common(currency: str, tz: str, advertiser: str, campaigns: list[str], flight: tuple[date, date],
            **extra: Any) -> dict[str, Any]:
    common: dict[str, Any] = {
        "currency": currency,
        "time_zone": tz,
        "billing_period": "month",
        "payment_terms_days": 30,
        "flight_start": flight[0].isoformat(),
        "flight_end": flight[1].isoformat(),
        "campaign_ids": campaigns,
        "po_reference": f"PO-{advertiser.upper()}",
        "measurement": "first_party",
        "advertiser_id": advertiser,
        "auto_renew": False,
        "renewal_term_months": 1,
        "notice_period_days": 0,
        "escalator_pct": None,
        "attribution_tail": True,
        "committed_value": None,
    }
    common.update(extra)
    return common


def _month_end(month: date) -> date:
    return date.fromordinal(next_month(month).toordinal() - 1)


def build(seed: int, month: date, run_id: str = "sim", *, flight: tuple[date, date] | None = None) -> Scenario:
    """The standard mix: three CPM contracts (flat USD, graduated EUR with a period cap, volume
    JPY with a minimum commitment) and one CPA contract (USD, two partners), their flights
    ``month`` unless ``flight`` (first and last day) says otherwise."""
    r = run_id
    flights = flight or (month, _month_end(month))

    def ident(name: str) -> str:
        return f"{r}-{name}" if r else name

    adv = {k: ident(f"adv-{k}") for k in ("acme", "bier", "kaze", "globex")}
    partners = (ident("ptn-streamly"), ident("ptn-castly"))
    contracts = (
        SimContract(
            "cpm-flat-usd", _name(r, "Acme CTV flat"), adv["acme"],
            {"contract_type": "cpm",
             "common": _common("USD", "America/New_York", adv["acme"], [ident("cmp-acme-1"), ident("cmp-acme-2")], flights),
             "cpm": {"rate_card": {"kind": "flat", "tier_basis": "period", "bands": [{"from_impressions": 0, "rate_cpm": "12.50"}]},
                     "budget_caps": {"total": None, "per_period": None}, "minimum_commitment_per_period": None},
             "cpa": None},
        ),
        SimContract(
            "cpm-graduated-eur", _name(r, "Bier graduated capped"), adv["bier"],
            {"contract_type": "cpm",
             "common": _common("EUR", "Europe/Berlin", adv["bier"], [ident("cmp-bier-1")], flights),
             "cpm": {"rate_card": {"kind": "graduated", "tier_basis": "period",
                                   "bands": [{"from_impressions": 0, "rate_cpm": "9.00"},
                                             {"from_impressions": 1500, "rate_cpm": "7.125"}]},
                     "budget_caps": {"total": None, "per_period": "25.00"}, "minimum_commitment_per_period": None},
             "cpa": None},
        ),
        SimContract(
            "cpm-volume-jpy", _name(r, "Kaze volume JPY"), adv["kaze"],
            {"contract_type": "cpm",
             "common": _common("JPY", "Asia/Tokyo", adv["kaze"], [ident("cmp-kaze-1")], flights),
             "cpm": {"rate_card": {"kind": "volume", "tier_basis": "period",
                                   "bands": [{"from_impressions": 0, "rate_cpm": "1450"},
                                             {"from_impressions": 1000, "rate_cpm": "1333"}]},
                     "budget_caps": {"total": None, "per_period": None}, "minimum_commitment_per_period": "9000"},
             "cpa": None},
        ),
        SimContract(
            "cpa-usd", _name(r, "Globex affiliate CPA"), adv["globex"],
            {"contract_type": "cpa",
             "common": _common("USD", "America/Los_Angeles", adv["globex"], [ident("cmp-globex-1"), ident("cmp-globex-2")], flights),
             "cpm": None,
             "cpa": {"payouts": [
                         {"event_type": "purchase", "advertiser_price": {"kind": "percent", "percent": "10"},
                          "partner_payout": {"kind": "percent", "percent": "6.5"}, "tiers": []},
                         {"event_type": "signup", "advertiser_price": {"kind": "flat", "amount": "2.00"},
                          "partner_payout": {"kind": "flat", "amount": "1.25"}, "tiers": []}],
                     "partner_overrides": [],
                     "attribution": {"lookback_days": 7, "lookback_days_by_event_type": {}, "model": "last_touch",
                                     "min_delay_seconds": 0},
                     "dedupe": {"household_window_days_by_event_type": {}},
                     "caps": {"contract": {"max_conversions_per_period": None, "max_amount_per_period": None},
                              "per_partner": {"max_conversions_per_period": None, "max_amount_per_period": None}},
                     "reversal_lock_days": 60}},
            partners,
        ),
    )
    return Scenario(seed, month, run_id, contracts, partners, (ident("cmp-unknown"),))


def live_scenario(seed: int, now: datetime, run_id: str) -> Scenario:
    """The demo's contracts for traffic at ``now``: flights from the day before ``now``'s UTC day
    to the end of the next month, so every contract's local day is inside its flight whatever
    its time zone (New York is still in last month for the first hours of a UTC month; Tokyo is
    already in the next one for the last hours), and no earlier month is billed for nothing."""
    today = now.astimezone(UTC).date()
    first = date(today.year, today.month, 1)
    return build(seed, first, run_id, flight=(today - timedelta(days=1), _month_end(next_month(first))))


def _name(run_id: str, name: str) -> str:
    return f"{run_id} {name}" if run_id else name
