"""JSON views of pacing and series: decimal strings for money, ISO 8601 instants, never floats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from tally_billing.money import format_decimal
from tally_billing.pacing import Pacing, SeriesPoint

from .state import Flight, PeriodState, caps_of


def _d(v: Decimal | None) -> str | None:
    return None if v is None else format_decimal(v, trailing_zeros=False)


def _t(v: datetime | None) -> str | None:
    return None if v is None else v.isoformat()


def _pace(pacing: Pacing) -> dict[str, Any]:
    return {
        "status": str(pacing.status), "as_of": _t(pacing.as_of), "window_start": _t(pacing.window.start),
        "window_end": _t(pacing.window.end), "curve": pacing.curve, "elapsed_share": _d(pacing.elapsed_share),
        "expected_spend": _d(pacing.expected_spend), "pace_pct": _d(pacing.pace_pct),
        "projected_spend": _d(pacing.projected_spend), "projected_cap_at": _t(pacing.projected_cap_at),
        "cap_reached": pacing.cap_reached,
    }


def pacing_view(p: PeriodState, pacing: Pacing | None, flight: Flight | None, budget: Mapping[str, Any] | None,
                lifetime: Pacing | None = None) -> dict[str, Any]:
    """``lifetime``: the total cap paced over the flight (``tally_billing.pacing.pace_total_cap``);
    null without a total cap or a flight with an end."""
    out: dict[str, Any] = {
        "contract_id": p.contract_id, "advertiser_id": p.advertiser_id, "contract_type": p.contract_type,
        "currency": p.currency, "time_zone": p.time_zone, "period_key": p.period_key,
        "period_start": _t(p.period_start), "period_end": _t(p.period_end), "period_status": p.status,
        "flight_start": _t(flight.start if flight else None), "flight_end": _t(flight.end if flight else None),
        "spend": _d(p.amount), "billable": p.billable, "over_delivery": p.over_delivery,
        "budget": _d(caps_of(p, flight)[0]), "budget_cap_per_period": _d(p.cap_per_period),
        "cpa_amount_cap_per_period": _d(flight.cpa_amount_cap if flight else None), "budget_cap_total": _d(p.cap_total),
        "minimum_commitment": _d(p.minimum_commitment),
        "latest_event_time": _t(p.latest_event_time), "updated_at": _t(p.updated_at),
        "alert_state": str(p.alert_state),
        "budget_alerts": dict((budget or {}).get("reached", {})),
        "lifetime": None if lifetime is None else {"cap_total": _d(lifetime.cap), "spend": _d(lifetime.spend),
                                                    **_pace(lifetime)},
    }
    if pacing is None:  # the flight does not reach this period
        out.update({"status": "outside_flight", "as_of": None, "window_start": None, "window_end": None,
                    "curve": None, "elapsed_share": None, "expected_spend": None, "pace_pct": None,
                    "projected_spend": None, "projected_cap_at": None, "cap_reached": False})
        return out
    out.update(_pace(pacing))
    return out


def series_view(p: PeriodState, granularity: str, points: Sequence[SeriesPoint]) -> dict[str, Any]:
    return {
        "contract_id": p.contract_id, "period_key": p.period_key, "currency": p.currency, "time_zone": p.time_zone,
        "granularity": granularity, "period_start": _t(p.period_start), "period_end": _t(p.period_end),
        "points": [{"start": _t(x.start), "end": _t(x.end), "spend": _d(x.spend),
                    "cumulative_spend": _d(x.cumulative_spend), "billable": x.billable,
                    "cumulative_billable": x.cumulative_billable} for x in points],
    }
