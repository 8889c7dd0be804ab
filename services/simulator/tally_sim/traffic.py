"""Seeded traffic for a scenario: impressions (duplicates, IVT, uncovered campaigns), conversions
following exposures, reversals, and the order they are sent in (out of order within a window).

The result is plain JSON-able dicts in the ingest API's shape, in sending order; the same
``(scenario, TrafficMix)`` always gives the same list. Amounts are decimal strings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .scenario import Scenario


@dataclass(frozen=True)
class TrafficMix:
    impressions: int = 20_000
    households: int = 600
    duplicate_share: Decimal = Decimal("0.03")  # impressions re-sent with the same id (retries, extra beacons)
    ivt_share: Decimal = Decimal("0.02")
    uncovered_share: Decimal = Decimal("0.01")  # impressions of a campaign no contract covers
    cpa_share: Decimal = Decimal("0.25")  # of impressions, on the CPA advertiser's campaigns
    conversion_rate: Decimal = Decimal("0.04")  # conversions per valid CPA exposure
    orphan_conversions: int = 10  # conversions of households never exposed (rejected: no_exposure)
    duplicate_conversion_share: Decimal = Decimal("0.05")
    reversal_share: Decimal = Decimal("0.10")  # of purchases; half full, half partial
    postback_share: Decimal = Decimal("0.3")  # conversions sent through the partner postback endpoint
    shuffle_window: int = 200  # events are sent out of order within windows of this size


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _chance(rng: random.Random, share: Decimal) -> bool:
    # Compare integers: the share has at most 4 decimals here, so this is exact.
    return rng.randrange(10_000) < int(share * 10_000)


def window(scenario: Scenario) -> tuple[datetime, datetime]:
    """Event times stay one day inside the UTC month, so every contract's local month (any
    zone from UTC-12 to UTC+14) contains them all."""
    m = scenario.month
    start = datetime(m.year, m.month, 1, tzinfo=UTC) + timedelta(days=1)
    nxt = datetime(m.year + (m.month == 12), m.month % 12 + 1, 1, tzinfo=UTC)
    return start, nxt - timedelta(days=1)


def generate(scenario: Scenario, mix: TrafficMix) -> list[dict[str, Any]]:
    """Every event to send, in sending order: ``{"kind": "impression"|"conversion", "via":
    "batch"|"postback", "event": {...}}``."""
    rng = random.Random(f"{scenario.seed}:{scenario.run_id}:{scenario.month.isoformat()}")
    start, end = window(scenario)
    span_us = int((end - start).total_seconds() * 1_000_000)
    r = scenario.run_id or "run"
    cpm = [c for c in scenario.contracts if c.contract_type == "cpm"]
    cpa = [c for c in scenario.contracts if c.contract_type == "cpa"]
    households = [f"{r}-hh-{i:05d}" for i in range(mix.households)]

    out: list[dict[str, Any]] = []
    cpa_exposures: list[dict[str, Any]] = []
    for i in range(mix.impressions):
        at = start + timedelta(microseconds=rng.randrange(span_us))
        if _chance(rng, mix.uncovered_share):
            campaign, advertiser, partner = scenario.uncovered_campaigns[0], cpm[0].advertiser_id, None
        elif cpa and _chance(rng, mix.cpa_share):
            k = rng.choice(cpa)
            campaign, advertiser, partner = rng.choice(k.campaign_ids), k.advertiser_id, rng.choice(k.partner_ids)
        else:
            k = rng.choice(cpm)
            campaign, advertiser, partner = rng.choice(k.campaign_ids), k.advertiser_id, rng.choice(scenario.partners)
        roll = rng.randrange(100)
        ivt = "givt" if roll < int(mix.ivt_share * 50) else "sivt" if roll < int(mix.ivt_share * 100) else "none"
        imp: dict[str, Any] = {
            "impression_id": f"{r}-imp-{i:07d}",
            "event_time": _ts(at),
            "advertiser_id": advertiser,
            "campaign_id": campaign,
            "partner_id": partner,
            "household_id": rng.choice(households),
            "device_type": rng.choice(["ctv", "ctv", "ctv", "mobile", "tablet"]),
            "ivt": ivt,
            "measurement_source": "first_party",
        }
        out.append({"kind": "impression", "via": "batch", "event": imp})
        if _chance(rng, mix.duplicate_share):
            out.append({"kind": "impression", "via": "batch", "event": dict(imp)})
        if cpa and advertiser == cpa[0].advertiser_id and ivt == "none":
            cpa_exposures.append(imp)

    conversions: list[dict[str, str | None]] = []
    n = 0
    for imp in cpa_exposures:
        if not _chance(rng, mix.conversion_rate):
            continue
        exposure_at = datetime.fromisoformat(imp["event_time"].replace("Z", "+00:00"))
        at = min(exposure_at + timedelta(seconds=rng.randrange(60, 2 * 86_400)), end)
        n += 1
        purchase = rng.randrange(3) > 0
        conv = {
            "conversion_id": f"{r}-conv-{n:06d}",
            "kind": "conversion",
            "order_id": f"{r}-order-{n:06d}",
            "event_time": _ts(at),
            "advertiser_id": imp["advertiser_id"],
            "household_id": imp["household_id"],
            "event_type": "purchase" if purchase else "signup",
            "value": str(Decimal(rng.randrange(1_000, 40_000)).scaleb(-2)) if purchase else None,
            "currency": "USD" if purchase else None,
            "source": "api",
            "partner_id": imp["partner_id"],
        }
        conversions.append(conv)
    for j in range(mix.orphan_conversions):
        at = start + timedelta(microseconds=rng.randrange(span_us))
        conversions.append({
            "conversion_id": f"{r}-orphan-{j:04d}", "kind": "conversion", "order_id": f"{r}-orphan-order-{j:04d}",
            "event_time": _ts(at), "advertiser_id": cpa[0].advertiser_id if cpa else cpm[0].advertiser_id,
            "household_id": f"{r}-never-exposed-{j}", "event_type": "signup", "value": None, "currency": None,
            "source": "api", "partner_id": None,
        })

    for conv in conversions:
        via = "postback" if conv["partner_id"] and _chance(rng, mix.postback_share) else "batch"
        sent = dict(conv, source="postback" if via == "postback" else "api")
        out.append({"kind": "conversion", "via": via, "event": sent})
        if _chance(rng, mix.duplicate_conversion_share):
            out.append({"kind": "conversion", "via": via, "event": dict(sent)})
        if conv["event_type"] == "purchase" and _chance(rng, mix.reversal_share):
            at = datetime.fromisoformat(str(conv["event_time"]).replace("Z", "+00:00")) + timedelta(hours=6)
            partial = rng.randrange(2) == 0
            value = Decimal(str(conv["value"]))
            out.append({"kind": "conversion", "via": "batch", "event": {
                "conversion_id": f"{conv['conversion_id']}-rev", "kind": "reversal", "order_id": conv["order_id"],
                "event_time": _ts(min(at, end)), "advertiser_id": conv["advertiser_id"],
                "household_id": conv["household_id"], "event_type": conv["event_type"], "value": None, "currency": None,
                "source": "api", "partner_id": conv["partner_id"], "reverses_conversion_id": conv["conversion_id"],
                "reversal_amount": str((value / 2).quantize(Decimal("0.01"))) if partial else None,
            }})

    # Impressions first, roughly in time order, then conversions; both shuffled within windows
    # so the streams arrive out of order (a conversion may still precede its exposure's arrival
    # within a window because windows straddle the boundary).
    # Reversals follow every conversion (a refund comes after the purchase reached Tally).
    imps = sorted((e for e in out if e["kind"] == "impression"), key=lambda e: e["event"]["event_time"])
    convs = [e for e in out if e["kind"] == "conversion" and e["event"]["kind"] == "conversion"]
    revs = [e for e in out if e["kind"] == "conversion" and e["event"]["kind"] == "reversal"]
    ordered = _shuffled_windows(rng, imps + convs, mix.shuffle_window) + _shuffled_windows(rng, revs, mix.shuffle_window)
    return ordered


def _shuffled_windows(rng: random.Random, events: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    out = list(events)
    for w in range(0, len(out), size):
        chunk = out[w:w + size]
        rng.shuffle(chunk)
        out[w:w + size] = chunk
    return out


class LiveTraffic:
    """Endless traffic at the current time, for the demo: impressions on every contract's
    campaigns (some duplicates and IVT), and conversions of recently exposed households."""

    def __init__(self, scenario: Scenario, mix: TrafficMix, session: str = "") -> None:
        """``session`` tells one process's events from another's: a restarted simulator must
        not reuse event ids (they would be dropped as duplicates)."""
        self.scenario = scenario
        self.mix = mix
        self.rng = random.Random(f"live:{scenario.seed}:{scenario.run_id}:{session}")
        run = f"{scenario.run_id}-" if scenario.run_id else ""
        self.ids = f"{run}live{session}"
        self.households = f"{run}hh"
        self.n = 0
        self.recent_cpa: list[dict[str, Any]] = []

    def tick(self, impressions: int, now: datetime) -> list[dict[str, Any]]:
        s, mix, rng = self.scenario, self.mix, self.rng
        cpm = [c for c in s.contracts if c.contract_type == "cpm"]
        cpa = [c for c in s.contracts if c.contract_type == "cpa"]
        out: list[dict[str, Any]] = []
        for _ in range(impressions):
            self.n += 1
            k = rng.choice(cpa) if cpa and _chance(rng, mix.cpa_share) else rng.choice(cpm)
            partner = rng.choice(k.partner_ids or s.partners)
            imp: dict[str, Any] = {
                "impression_id": f"{self.ids}-imp-{self.n:09d}",
                "event_time": _ts(now - timedelta(milliseconds=rng.randrange(5_000))),
                "advertiser_id": k.advertiser_id, "campaign_id": rng.choice(k.campaign_ids), "partner_id": partner,
                "household_id": f"{self.households}-{rng.randrange(mix.households):05d}",
                "device_type": "ctv", "ivt": "givt" if _chance(rng, mix.ivt_share) else "none", "measurement_source": "first_party",
            }
            out.append({"kind": "impression", "via": "batch", "event": imp})
            if _chance(rng, mix.duplicate_share):
                out.append({"kind": "impression", "via": "batch", "event": dict(imp)})
            if k.contract_type == "cpa" and imp["ivt"] == "none":
                self.recent_cpa = [*self.recent_cpa[-2000:], imp]
        for imp in list(self.recent_cpa):
            if _chance(rng, mix.conversion_rate / 20):
                self.recent_cpa.remove(imp)
                self.n += 1
                purchase = rng.randrange(2) == 0
                out.append({"kind": "conversion", "via": "batch", "event": {
                    "conversion_id": f"{self.ids}-conv-{self.n:09d}", "kind": "conversion",
                    "order_id": f"{self.ids}-order-{self.n:09d}", "event_time": _ts(now),
                    "advertiser_id": imp["advertiser_id"], "household_id": imp["household_id"],
                    "event_type": "purchase" if purchase else "signup",
                    "value": str(Decimal(rng.randrange(1_000, 40_000)).scaleb(-2)) if purchase else None,
                    "currency": "USD" if purchase else None, "source": "api", "partner_id": imp["partner_id"]}})
        return out
